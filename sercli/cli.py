"""The ``sercli`` command line: parses options and calls the library.

Exit status: 0 when every recording was annotated; 1 on a fatal error (bad
option, missing model, ...); 3 when some recordings failed (each is reported
on stderr and in ``<output>.errors.csv``) and the rest were written; 130 when
interrupted by Ctrl-C, 143 by SIGTERM, 129 by SIGHUP (what was done is kept).
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from sercli import __version__
from sercli.vad import VadConfig

EXIT_FATAL, EXIT_PARTIAL, EXIT_INTERRUPTED, EXIT_BROKEN_PIPE = 1, 3, 130, 141

app = typer.Typer(
    name="sercli",
    help="Batch speech-emotion annotation: folders of recordings in, per-segment emotion labels out.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # plain click help: wraps at any width, no type tags
)
console = Console(stderr=True, highlight=False, soft_wrap=True)  # messages stay one line in logs


def fail(message: str, code: int = EXIT_FATAL) -> typer.Exit:
    """Print a one-line error on stderr; return the exit to raise."""
    console.print(f"[bold red]error:[/] {escape(message)}", soft_wrap=True)
    return typer.Exit(code)


def version_callback(value: bool) -> None:
    if value:
        print(f"sercli {__version__}")
        raise typer.Exit()


@app.callback()
def main_options(
    version: Annotated[
        bool, typer.Option("--version", callback=version_callback, is_eager=True, help="Show the version and exit.")
    ] = False,
) -> None:
    """Batch speech-emotion annotation: folders of recordings in, per-segment emotion labels out."""


ModelOption = Annotated[
    Path | None,
    typer.Option(
        "--model", "-m", help="A .tflite or .keras model with its .json card (default: the bundled LiteRT model)."
    ),
]


# annotate's options
InputsArgument = Annotated[
    list[Path], typer.Argument(help="Folders (searched recursively) and files.", show_default=False)
]

OutputOption = Annotated[
    str, typer.Option("--output", "-o", help="results.csv, results.parquet, or - for CSV on stdout.")
]

IncludeOption = Annotated[list[str], typer.Option(help="Only files matching this glob (repeatable).")]

ExcludeOption = Annotated[list[str], typer.Option(help="Skip files matching this glob (repeatable).")]

AggressivenessOption = Annotated[int, typer.Option(help="VAD mode, 0 (keeps most) to 3 (keeps least).")]

MinSpeechOption = Annotated[float, typer.Option(help="Drop speech bursts shorter than this (s).")]

MinSilenceOption = Annotated[float, typer.Option(help="Pauses shorter than this (s) do not split a segment.")]

PaddingOption = Annotated[float, typer.Option(help="Context added around each segment (s).")]

MaxSegmentOption = Annotated[float, typer.Option(help="Split longer segments into equal parts (s).")]

OverwriteOption = Annotated[bool, typer.Option("--overwrite", help="Replace an existing output file.")]

ResumeOption = Annotated[
    bool, typer.Option("--resume", help="Keep an existing output's rows and annotate only the rest.")
]

ForceOption = Annotated[
    bool,
    typer.Option("--force", help="With --resume: add to an output made with another model or other settings."),
]

CheckpointEveryOption = Annotated[
    float, typer.Option(help="Seconds between atomic rewrites of the output file (the most work a crash loses).")
]

WorkersOption = Annotated[
    int,
    typer.Option(
        help="Processes annotating whole files side by side (one process already uses every core; "
        "more help on many-core machines).",
        min=1,
    ),
]

DaskOption = Annotated[
    str | None,
    typer.Option(
        help="Run on a Dask cluster: a scheduler address (tcp://host:8786) or 'local' "
        "(--workers processes here); -o then names a Parquet dataset folder."
    ),
]

NormalizeOption = Annotated[
    str | None,
    typer.Option(
        help="Standardise MFCCs over each: auto (default: a speaker if known, a long recording, "
        "else a folder's short recordings), speaker, recording, folder, segment, or none.",
        show_default=False,
    ),
]

SpeakersOption = Annotated[
    Path | None, typer.Option(help="CSV or Parquet table of path and speaker: one group per speaker.")
]

SpeakerPatternOption = Annotated[
    str | None, typer.Option(help="Regex with a group 'speaker' found in file names, e.g. '^(?P<speaker>[^_]+)_'.")
]

QuietOption = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar or summary.")]


@app.command()
def annotate(
    inputs: InputsArgument,
    output: OutputOption = "-",
    model: ModelOption = None,
    include: IncludeOption = [],  # noqa: B006
    exclude: ExcludeOption = [],  # noqa: B006
    aggressiveness: AggressivenessOption = VadConfig.aggressiveness,
    min_speech: MinSpeechOption = VadConfig.min_speech_s,
    min_silence: MinSilenceOption = VadConfig.min_silence_s,
    padding: PaddingOption = VadConfig.padding_s,
    max_segment: MaxSegmentOption = VadConfig.max_segment_s,
    overwrite: OverwriteOption = False,
    resume: ResumeOption = False,
    force: ForceOption = False,
    checkpoint_every: CheckpointEveryOption = 10.0,
    workers: WorkersOption = 1,
    dask: DaskOption = None,
    normalize: NormalizeOption = None,
    speakers: SpeakersOption = None,
    speaker_pattern: SpeakerPatternOption = None,
    quiet: QuietOption = False,
) -> None:
    """Annotate recordings: one row per speech segment with its emotion probabilities."""
    from sercli.annotator import Annotator
    from sercli.batch import OutputError, annotate_batch
    from sercli.model import ModelError

    progress = AnnotationProgress(quiet)
    stopped_by = _stop_on_termination()
    try:
        vad = VadConfig(
            aggressiveness,
            min_speech_s=min_speech,
            min_silence_s=min_silence,
            padding_s=padding,
            max_segment_s=max_segment,
        )
        annotator = Annotator(
            model, vad=vad, normalization=normalize, speakers=speakers, speaker_pattern=speaker_pattern
        )
        with progress:
            report = annotate_batch(
                inputs,
                annotator,
                output,
                include=include,
                exclude=exclude,
                overwrite=overwrite,
                resume=resume,
                force=force,
                checkpoint_s=checkpoint_every,
                workers=workers,
                dask=dask,
                on_start=progress.start,
                on_outcome=progress.outcome,
            )
    except (ValueError, FileNotFoundError, ModelError, OutputError) as error:
        if output == "-":
            _discard_stdout()  # it cannot be written: nothing more to flush at exit
        raise fail(f"{error} (the file on disk is the last checkpoint)" if progress.started else str(error)) from None
    except BrokenPipeError:  # stdout's reader went away (`| head`): a normal end in a pipe, as SIGPIPE would make it
        _discard_stdout()
        raise typer.Exit(EXIT_BROKEN_PIPE) from None
    except KeyboardInterrupt:  # before any work began
        raise fail("interrupted", EXIT_INTERRUPTED) from None
    if not quiet:
        console.print(progress.summary(report))
    if report.interrupted:
        code = 128 + stopped_by[0] if stopped_by else EXIT_INTERRUPTED
        raise fail("interrupted; the recordings finished so far are saved (use --resume to go on)", code)
    if report.failures:
        raise typer.Exit(EXIT_PARTIAL)


def _discard_stdout() -> None:
    """Point stdout at /dev/null, so that the interpreter's last flush cannot fail."""
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


def _stop_on_termination() -> list[int]:
    """Make Ctrl-C, SIGTERM and SIGHUP (timeout, docker stop, systemd, Slurm, a closed terminal) end a
    run by ``KeyboardInterrupt``, saving what is finished; the returned list receives the signal's number
    (until then, Ctrl-C ends sercli at once: :func:`sercli.__main__.main`)."""
    received: list[int] = []

    def stop(signum, _frame) -> None:
        received.append(signum)
        raise KeyboardInterrupt

    signal.signal(signal.SIGINT, signal.default_int_handler)
    for number in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(number, stop)
    return received


class AnnotationProgress:
    """Rich progress on stderr: files, hours of audio, speed as a multiple of real time.

    Its columns fit 80 columns: the bar shrinks first, then the ETA goes.
    """

    def __init__(self, quiet: bool):
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.progress = Progress(
            MofNCompleteColumn(),
            TextColumn("files"),
            BarColumn(bar_width=None),
            TextColumn("{task.fields[hours]:.2f} h, {task.fields[speed]:.0f}x"),
            TimeElapsedColumn(),
            console=console,
            disable=quiet or not console.is_terminal,  # a log file gets the messages and the summary only
            transient=True,
            expand=False,
        )
        self.console = self.progress.console
        self.task = None
        self.audio_s, self.started = 0.0, None

    def __enter__(self):
        self.progress.__enter__()
        return self

    def __exit__(self, *exc):
        return self.progress.__exit__(*exc)

    def start(self, total: int) -> None:
        self.task = self.progress.add_task("annotate", total=total, hours=0.0, speed=0.0)
        self.started = time.monotonic()

    def outcome(self, outcome) -> None:
        """Count a finished recording; say why it failed, or what is odd about it."""
        from sercli.files import path_text

        if outcome.error is not None:
            self.console.print(f"[yellow]skipped[/] {escape(path_text(outcome.path))}: {escape(outcome.error)}")
        elif outcome.note is not None:
            self.console.print(f"note {escape(path_text(outcome.path))}: {escape(outcome.note)}")
        self.audio_s += outcome.audio_s
        self.progress.update(self.task, advance=1, hours=self.audio_s / 3600, speed=self.speed)

    @property
    def speed(self) -> float:
        return self.audio_s / max(time.monotonic() - (self.started or time.monotonic()), 1e-9)

    def summary(self, report) -> str:
        """One line: what was annotated, how fast, where it went, what failed."""
        if not report.todo:
            return f"nothing to do: all {report.recordings} recordings are already in {report.output}"
        done = len(report.annotated) + len(report.failures)
        text = (
            f"annotated {len(report.annotated)} of {done} files, "
            f"{report.audio_s / 3600:.2f} h of audio at {self.speed:.0f}x real time"
        )
        if report.output is not None:
            text += f" -> {report.output}"
        if report.failures:
            text += f"; [yellow]{len(report.failures)} failed[/]"
            if report.errors_file is not None:
                text += f" (listed in {report.errors_file})"
        return text


@app.command()
def export(
    source: Annotated[Path, typer.Argument(help="A results table (.csv or .parquet).", show_default=False)],
    destination: Annotated[
        Path, typer.Argument(help="A .csv or .parquet file, or a folder for --labels.", show_default=False)
    ],
    per_file: Annotated[
        bool,
        typer.Option("--per-file", help="Write one summary row per recording (dominant emotion, share of speech)."),
    ] = False,
    labels: Annotated[
        str | None, typer.Option(help="Write per-recording label files instead: audacity or textgrid.")
    ] = None,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace an existing destination file or label files.")
    ] = False,
) -> None:
    """Convert a results table: CSV <-> Parquet, a per-file summary, or Audacity/TextGrid labels."""
    from sercli.writers import (
        LABEL_FORMATS,
        per_file_summary,
        read_metadata,
        read_results,
        table_format,
        write_labels,
        write_results,
    )

    try:
        frame = read_results(source)
        if labels is not None:
            labels = labels.lower()
            if labels not in LABEL_FORMATS:
                raise ValueError(f"unknown label format '{labels}': use {' or '.join(LABEL_FORMATS)}")
            written = write_labels(frame, destination, labels, overwrite)
            console.print(f"wrote {len(written)} {labels} label files under {destination}")
            return
        table_format(destination)
        if destination.exists() and not overwrite:
            raise ValueError(f"{destination} exists: pass --overwrite to replace it")
        table = per_file_summary(frame) if per_file else frame
        write_results(table, destination, read_metadata(source))
    except ValueError as error:
        raise fail(str(error)) from None
    console.print(f"wrote {len(table)} rows to {destination}")


LayoutOption = Annotated[
    str | None,
    typer.Option(
        help="Corpus layout of a folder: ravdess, crema-d, tess, savee, emodb or folders (default: from the names)."
    ),
]


# train's options
TrainSourcesArgument = Annotated[
    list[Path],
    typer.Argument(
        help="Labels tables (.csv/.parquet) or corpus folders (e.g. RAVDESS nEMO): corpora are balanced, "
        "and every fold tests each.",
        show_default=False,
    ),
]

TrainOutputOption = Annotated[
    Path, typer.Option("--output", "-o", help="Where the .keras model goes (card beside it).")
]

TrainBaseOption = Annotated[
    str | None,
    typer.Option("--from", help="Fine-tune a trained model: 'bundled' or a .keras file (default: train afresh)."),
]

TrainFreezeConvOption = Annotated[
    bool, typer.Option("--freeze-conv", help="Fine-tuning: keep the convolutions as trained.")
]

TrainValSpeakersOption = Annotated[
    str, typer.Option(help="Comma-separated speakers held out for early stopping, or 'none' to train on all.")
]

TrainCvFoldsOption = Annotated[int, typer.Option(help="Leave-speakers-out cross-validation folds first (0: none).")]

TrainEpochsOption = Annotated[int, typer.Option(help="Maximum epochs.")]

TrainPatienceOption = Annotated[int, typer.Option(help="Early-stopping patience (epochs).")]

TrainBatchSizeOption = Annotated[int, typer.Option(help="Windows per batch.")]

TrainLearningRateOption = Annotated[
    float | None, typer.Option(help="Adam's learning rate (default: 1e-3, fine-tuning 3e-4).")
]

TrainSeedOption = Annotated[int, typer.Option(help="Random seed.")]

TrainNormalizeOption = Annotated[
    str, typer.Option(help="speaker: standardise MFCCs over groups of a speaker's clips; none: raw MFCCs.")
]

TrainVariantsOption = Annotated[
    int, typer.Option(help="Randomly degraded copies of each clip (noise, rooms, phone, codecs, gain, speed).")
]

TrainSpecAugmentOption = Annotated[bool, typer.Option(help="SpecAugment time and coefficient masks.")]

TrainCacheOption = Annotated[
    Path | None, typer.Option(help="Folder keeping the clips' features between runs (clean and degraded).")
]


@app.command()
def train(
    sources: TrainSourcesArgument,
    output: TrainOutputOption,
    layout: LayoutOption = None,
    base: TrainBaseOption = None,
    freeze_conv: TrainFreezeConvOption = False,
    val_speakers: TrainValSpeakersOption = "none",
    cv_folds: TrainCvFoldsOption = 5,
    epochs: TrainEpochsOption = 120,
    patience: TrainPatienceOption = 24,
    batch_size: TrainBatchSizeOption = 64,
    learning_rate: TrainLearningRateOption = None,
    seed: TrainSeedOption = 0,
    normalize: TrainNormalizeOption = "speaker",
    variants: TrainVariantsOption = 4,
    spec_augment: TrainSpecAugmentOption = True,
    cache: TrainCacheOption = None,
) -> None:
    """Train the emotion model on labelled recordings, speaker-independently, and write it with its card."""
    from sercli.model import ModelError, require_training

    try:
        require_training("sercli train and its models")
    except ModelError as error:
        raise fail(str(error)) from None
    _quiet_tensorflow()
    from sercli.recipe import train_sources
    from sercli.training import TrainConfig

    started = time.monotonic()
    try:
        config = TrainConfig(
            epochs=epochs,
            patience=patience,
            batch_size=batch_size,
            learning_rate=learning_rate,
            seed=seed,
            normalization=normalize,
            variants=variants,
            spec_augment=spec_augment,
            freeze_convolutions=freeze_conv,
        )
        validation = [s.strip() for s in val_speakers.split(",") if s.strip().lower() not in ("", "none")]
        card = train_sources(
            sources,
            output,
            config,
            layout=layout,
            base=base,
            validation=validation,
            cv_folds=cv_folds,
            cache=cache,
            log=console.print,
        )
    except (ModelError, ValueError) as error:
        raise fail(str(error)) from None
    console.print(f"wrote {output} and its card in {time.monotonic() - started:.0f} s")
    _print_metrics(card.metrics)


@app.command()
def evaluate(
    source: Annotated[
        Path, typer.Argument(help="A labels table (.csv/.parquet) or a corpus folder.", show_default=False)
    ],
    model: ModelOption = None,
    layout: LayoutOption = None,
    by: Annotated[str | None, typer.Option(help="Break the results down: speaker.")] = None,
    plot: Annotated[Path | None, typer.Option(help="Save the confusion matrix as an image (needs matplotlib).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the metrics as JSON on stdout.")] = False,
    normalize: Annotated[
        str,
        typer.Option(
            help="For a model trained on normalised MFCCs: standardise as annotate does (auto: each speaker's "
            "clips when known, else as annotate groups the recordings), or over each speaker, folder or clip "
            "(recording)."
        ),
    ] = "auto",
    speakers: Annotated[
        Path | None, typer.Option(help="CSV or Parquet table of path and speaker, for auto and speaker groups.")
    ] = None,
    speaker_pattern: Annotated[
        str | None, typer.Option(help="Regex with a group 'speaker' found in file names, for auto and speaker groups.")
    ] = None,
) -> None:
    """Clip-level UA with a bootstrap 95 % interval, accuracy, per-class recall and confusion matrix.

    A table with a split column is evaluated on its test rows.
    """
    from sercli.audio import AudioError
    from sercli.evaluation import evaluate_source
    from sercli.groups import speaker_source
    from sercli.model import ModelError, bundled_model_path, load_classifier

    if by not in (None, "speaker"):
        raise fail(f"--by takes 'speaker', not '{by}'")
    try:
        metrics = evaluate_source(
            source,
            load_classifier(model or bundled_model_path()),
            layout=layout,
            normalization=normalize,
            speaker_of=speaker_source(speakers, speaker_pattern),
            by_speaker=by == "speaker",
            log=console.print,
        )
    except (ModelError, ValueError, AudioError) as error:
        raise fail(str(error)) from None
    for warning in metrics["warnings"]:
        console.print(f"[yellow]warning:[/] {escape(warning)}")
    if as_json:
        print(json.dumps(metrics, indent=2))
    else:
        _print_metrics({"evaluation": metrics})
        if by == "speaker":
            _print_by_speaker(metrics["by_speaker"])
    if plot is not None:
        try:
            from sercli.plots import write_confusion
        except ImportError:
            raise fail("--plot needs matplotlib: pip install 'sercli[plot]'") from None
        title = f"{metrics['n']} clips, UA {metrics['unweighted_accuracy']:.3f}, accuracy {metrics['accuracy']:.3f}"
        console.print(
            f"confusion matrix saved to {write_confusion(metrics['confusion'], metrics['labels'], plot, title)}"
        )


@app.command()
def dataset(
    layout: Annotated[
        str, typer.Argument(help="ravdess, crema-d, tess, savee, emodb or folders (one folder per label).")
    ],
    folder: Annotated[Path, typer.Argument(help="The corpus folder, searched recursively.", show_default=False)],
    output: Annotated[Path, typer.Option("--output", "-o", help="The labels table to write (.csv or .parquet).")],
) -> None:
    """Write the labels table of a corpus folder: what train and evaluate would use, to check or edit."""
    from sercli.datasets import find_clips, label_counts, write_labels_table

    if output.suffix.lower() not in (".csv", ".parquet", ".pq"):
        raise fail(f"{output}: the labels table must be .csv or .parquet")
    try:
        clips = find_clips(folder, layout.lower())
        write_labels_table(clips, output)
    except (ValueError, OSError) as error:
        raise fail(str(error)) from None
    speakers = {clip.speaker for clip in clips} - {None}
    counts = ", ".join(f"{label} {count}" for label, count in label_counts(clips).items())
    console.print(f"wrote {output}: {len(clips)} clips, {len(speakers)} speakers; {counts}")


@app.command()
def plot(
    results: Annotated[Path, typer.Argument(help="A results table (.csv or .parquet).", show_default=False)],
    output: Annotated[Path, typer.Option("--output", "-o", help="Folder for the PNG files.")] = Path("plots"),
) -> None:
    """Draw a results table: batch.png (share of speech per emotion, per file) and a timeline per recording."""
    from sercli.writers import read_results

    try:
        from sercli.plots import write_plots
    except ImportError:
        raise fail("plots need matplotlib: pip install 'sercli[plot]'") from None
    try:
        written = write_plots(read_results(results), output, str(results))
    except (ValueError, OSError) as error:
        raise fail(str(error)) from None
    console.print(f"wrote {len(written)} pictures into {output} (batch.png first)")


@app.command("export-model")
def export_model(
    model: Annotated[Path, typer.Argument(help="A trained .keras model with its .json card.")],
) -> None:
    """Re-create a model's LiteRT export (.tflite beside it), checked against the Keras outputs."""
    _quiet_tensorflow()
    import numpy as np

    from sercli.export import write_litert_export
    from sercli.features import signal_windows
    from sercli.model import KerasClassifier, ModelError, load_classifier, require_training

    try:
        require_training("sercli export-model and its .keras input")
        classifier = load_classifier(model)
    except ModelError as error:
        raise fail(str(error)) from None
    if not isinstance(classifier, KerasClassifier):
        raise fail(f"{model} is not a .keras model")
    config = classifier.card.feature_config
    noise = np.random.default_rng(0).normal(0.0, 0.1, 30 * config.sample_rate).astype(np.float32)
    write_litert_export(classifier.model, model, classifier.card, signal_windows(noise, config))
    litert = classifier.card.exports["litert"]
    console.print(
        f"wrote {model.with_suffix('.tflite')}: outputs within {litert['max_abs_difference_from_keras']:.1e} "
        f"of the Keras model on {litert['checked_windows']} noise windows"
    )


@app.command()
def models(model: ModelOption = None) -> None:
    """Show a model's card: what it is, how it was trained and how well it does."""
    from sercli.model import ModelCard, ModelError, bundled_model_path, card_path

    try:
        path = model or bundled_model_path()
        card = ModelCard.read(card_path(path))
    except ModelError as error:
        raise fail(str(error)) from None
    table = Table(title=f"{card.name} {card.version}", show_header=False)
    table.add_column(no_wrap=True)
    table.add_column(overflow="fold")  # long paths and digests wrap whole instead of being cut with "…"
    table.add_row("file", str(path))
    table.add_row("sha256", card.sha256)
    table.add_row("labels", ", ".join(card.labels))
    table.add_row("features", json.dumps(card.features))
    table.add_row("normalization", card.normalization)
    if card.head is not None:
        head = card.head
        table.add_row(
            "functional head", f"{head.shape[0]} functionals of each segment (sercli.prosody), {head.architecture}"
        )
        calibration = card.training.get("calibration")
        table.add_row(
            "confidence",
            f"temperature {head.temperature:.2f}, fitted on {calibration['clips']} clips of {calibration['fitted_on']}: "
            f"calibration error {calibration['calibration_error'][0]:.3f} -> {calibration['calibration_error'][1]:.3f}"
            if calibration
            else "not calibrated",
        )
    for key in ("data", "training_speakers", "training_actors", "validation_speakers", "validation_actors", "clips"):
        if key in card.training:
            table.add_row(key.replace("_", " "), str(card.training[key]))
    if "label_counts" in card.training:
        table.add_row("clips per label", ", ".join(f"{k} {v}" for k, v in card.training["label_counts"].items()))
    if "fine_tuned_from" in card.training:
        base = card.training["fine_tuned_from"]
        table.add_row("fine-tuned from", f"{base['name']} (sha256 {base['sha256'][:12]})")
    headline = card.headline()
    if headline is not None:
        table.add_row("UA on new speakers", headline)
    Console().print(table)
    # a 2-fold table beside its 5-fold successor stays in the card (and docs/robustness.md)
    shown = {
        key: block
        for key, block in card.metrics.items()
        if not (key.endswith("_2fold") and key.replace("_2fold", "_5fold") in card.metrics)
    }
    _print_metrics(shown, Console())


def _print_metrics(metrics: dict, out: Console = console) -> None:
    """Print each metrics block (cross-validation pooled, validation, test, evaluation, robustness) as tables."""
    for name, block in metrics.items():
        if isinstance(block.get("unweighted_accuracy"), dict):  # a robustness table: {system: {condition: UA}}
            _print_robustness(name, block, out)
            continue
        figures = block.get("pooled", block)
        labels = figures.get("labels") or list(figures["per_class_recall"])
        title = f"{name}: UA {figures['unweighted_accuracy']:.3f}"
        if figures.get("ua_ci95"):
            low, high = figures["ua_ci95"]
            title += f" (95 % CI {low:.3f}-{high:.3f}, {figures['ua_ci95_resampled']} resampled)"
        elif figures.get("ua_ci95_resampled"):
            title += f" ({figures['ua_ci95_resampled']})"
        title += f", accuracy {figures['accuracy']:.3f}, {figures['n']} clips"
        if "by_corpus" in figures:
            title += "; " + ", ".join(
                f"{name} UA {m['unweighted_accuracy']:.3f}" for name, m in figures["by_corpus"].items()
            )
        if "calibration_error" in figures:
            title += f", mean confidence {figures['mean_confidence']:.3f} (calibration error {figures['calibration_error']:.3f})"
        if "folds" in block:
            fold_ua = ", ".join(f"{fold['metrics']['unweighted_accuracy']:.3f}" for fold in block["folds"])
            title += f"; {len(block['folds'])}-fold, per fold {fold_ua}"
        table = Table("true \\ predicted", *[label[:4] for label in labels], "recall", title=title)
        for label, row in zip(labels, figures["confusion"]):
            recall = figures["per_class_recall"][label]
            table.add_row(label, *map(str, row), "-" if recall is None else f"{recall:.2f}")
        out.print(table)


def _print_robustness(name: str, block: dict, out: Console = console) -> None:
    """The robustness benchmark's UA table and recall by class on clean clips, as
    :func:`sercli.robustness.card_entry` stores them."""
    systems = block["unweighted_accuracy"]
    table = Table(title=f"{name}: clip-level UA", caption=block["protocol"])
    table.add_column("condition", no_wrap=True)
    for system in systems:
        table.add_column(system, justify="right", overflow="fold")  # headers wrap at 80 columns
    for condition in next(iter(systems.values())):
        table.add_row(condition, *(f"{figures[condition]:.3f}" for figures in systems.values()))
    out.print(table)
    if "clean_recall" in block:
        recall = block["clean_recall"]
        labels = list(next(iter(recall.values())))
        table = Table("system", *[label[:4] for label in labels], title=f"{name}: recall by class, clean")
        for system, figures in recall.items():
            table.add_row(system, *("-" if figures[label] is None else f"{figures[label]:.2f}" for label in labels))
        out.print(table)


def _print_by_speaker(by_speaker: dict, out: Console = console) -> None:
    table = Table("speaker", "clips", "UA", "accuracy", title="by speaker")
    for speaker, figures in by_speaker.items():
        table.add_row(speaker, str(figures["n"]), f"{figures['unweighted_accuracy']:.3f}", f"{figures['accuracy']:.3f}")
    out.print(table)


def _quiet_tensorflow() -> None:
    """Keep TensorFlow's C++ start-up logging (not oneDNN itself) off stderr."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def main() -> None:
    """Console-script entry point."""
    _quiet_tensorflow()
    app()
