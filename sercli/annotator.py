"""sercli as a library: annotate files, folders or signals in memory into a results table.

>>> import sercli
>>> table = sercli.annotate("calls/")                      # one row per speech segment
>>> annotator = sercli.Annotator(normalization="folder")   # loads the model once
>>> rows = annotator.annotate_signal(samples, 44100)        # a numpy signal and its rate
>>> table = sercli.annotate("calls/", output="calls.parquet", resume=True)  # checkpointed, resumable

Tables have the columns and dtypes of ``sercli annotate``'s output
(:func:`sercli.writers.result_columns` of the model's labels); recordings that could not be read are
listed in ``table.attrs["errors"]`` (path -> one-line cause).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from sercli.files import find_audio_files, path_text
from sercli.groups import speaker_source
from sercli.model import bundled_model_path, load_classifier
from sercli.pipeline import FileOutcome, InMemoryRecording, annotate_files, model_normalization
from sercli.vad import VadConfig
from sercli.writers import results_frame, sort_results

if TYPE_CHECKING:
    import pandas as pd


class Annotator:
    """A loaded model and annotation settings, reused for any number of calls.

    Parameters
    ----------
    model : str or Path, optional
        A ``.tflite`` or ``.keras`` model with its card (default: the bundled model).
    vad : VadConfig, optional
        How speech segments are found (default: ``VadConfig()``).
    normalization : str, optional
        ``auto``, ``speaker``, ``recording``, ``folder``, ``segment`` or ``none``
        (default: ``auto``, or ``none`` for a model trained without normalisation; see
        :mod:`sercli.groups`).
    speakers : str or Path, optional
        A CSV or Parquet table of ``path`` and ``speaker``
        (:func:`sercli.groups.speakers_from_table`): ``auto`` and ``speaker``
        standardise each speaker's recordings together.
    speaker_pattern : str, optional
        Instead of a table, a regular expression whose group ``speaker`` is found in
        each file name (:func:`sercli.groups.speaker_from_pattern`).
    threads : int, optional
        Inference threads (default: one per core).

    Raises
    ------
    sercli.model.ModelError
        If the model cannot be used; ValueError if the normalisation does not fit it, or the
    speakers cannot be read.
    """

    def __init__(
        self,
        model: str | Path | None = None,
        *,
        vad: VadConfig | None = None,
        normalization: str | None = None,
        speakers: str | Path | None = None,
        speaker_pattern: str | None = None,
        threads: int | None = None,
    ):
        self.speaker_of = speaker_source(speakers, speaker_pattern)
        self.classifier = load_classifier(model or bundled_model_path(), threads)
        self.vad = vad or VadConfig()
        self.normalization = model_normalization(self.classifier.card, normalization)
        if self.normalization == "speaker" and self.speaker_of is None:
            raise ValueError("--normalize speaker needs the speakers: give --speakers TABLE or --speaker-pattern REGEX")

    def iter_outcomes(
        self, inputs: str | Path | Iterable[str | Path], include: Iterable[str] = (), exclude: Iterable[str] = ()
    ) -> Iterator[FileOutcome]:
        """Each recording's outcome (rows or error) as it finishes: for batches too big to hold.

        ``inputs`` are folders (searched recursively, filtered by the ``include`` and
        ``exclude`` globs) and files; one that does not exist is an outcome with its error.
        """
        inputs = [inputs] if isinstance(inputs, str | Path) else list(inputs)
        missing = [Path(p) for p in inputs if not Path(p).exists() and not Path(p).is_symlink()]
        yield from (FileOutcome(path, [], "file not found") for path in missing)
        paths = find_audio_files([p for p in inputs if Path(p) not in missing], include, exclude)
        yield from annotate_files(paths, self.classifier, self.vad, 1, self.normalization, self.speaker_of)

    def annotate(
        self, inputs: str | Path | Iterable[str | Path], include: Iterable[str] = (), exclude: Iterable[str] = ()
    ) -> pd.DataFrame:
        """All rows of the recordings under ``inputs``, sorted by path and start time."""
        return _table(self.iter_outcomes(inputs, include, exclude), self.classifier.card.labels)

    def annotate_signal(self, signal: np.ndarray, sample_rate: int, name: str = "signal") -> pd.DataFrame:
        """The rows of one signal in memory, shape ``(n,)`` or ``(n, channels)`` at ``sample_rate`` Hz.

        It goes through the same pipeline as a file (mix-down, resampling, VAD,
        normalisation); its rows carry ``name`` as their path.
        """
        recording = InMemoryRecording(name, np.asarray(signal), int(sample_rate))
        outcomes = annotate_files([recording], self.classifier, self.vad, normalization=self.normalization)
        return _table(outcomes, self.classifier.card.labels)


BATCH_OPTIONS = ("overwrite", "resume", "force", "checkpoint_s", "workers")
"""Options of :func:`annotate` with an ``output`` (:func:`sercli.batch.annotate_batch`'s)."""


def annotate(inputs: str | Path | Iterable[str | Path], output: str | Path | None = None, **options) -> pd.DataFrame:
    """Annotate folders and files in one call.

    Without ``output``: ``Annotator(**options).annotate(inputs)``, the table in memory.
    With ``output`` (a ``.csv`` or ``.parquet`` file), the rows go there as
    ``sercli annotate -o`` writes them (:func:`sercli.batch.annotate_batch`:
    checkpoints, ``<output>.errors.csv``, a lock against a second writer) and the
    table is read back; ``overwrite``, ``resume``, ``force``, ``checkpoint_s`` and
    ``workers`` apply. Ctrl-C saves what is finished, then raises ``KeyboardInterrupt``.

    ``include`` and ``exclude`` globs select files in folders; the other options go to
    :class:`Annotator`.
    """
    from sercli.batch import annotate_batch
    from sercli.writers import read_results

    inputs = [inputs] if isinstance(inputs, str | Path) else list(inputs)
    filters = {key: options.pop(key) for key in ("include", "exclude") if key in options}
    batch = {key: options.pop(key) for key in BATCH_OPTIONS if key in options}
    if output is None or str(output) == "-":
        if batch or output is not None:
            raise ValueError(f"{', '.join(batch) or 'output -'}: give output a .csv or .parquet file")
        return Annotator(**options).annotate(inputs, **filters)
    report = annotate_batch(inputs, Annotator(**options), output, **filters, **batch)
    if report.interrupted:
        raise KeyboardInterrupt
    table = read_results(output)
    table.attrs["errors"] = {path_text(o.path): o.error for o in report.failures}
    return table


def _table(outcomes: Iterable[FileOutcome], labels: list[str]) -> pd.DataFrame:
    rows, errors = [], {}
    for outcome in outcomes:
        if outcome.error is None:
            rows.extend(outcome.rows)
        else:
            errors[path_text(outcome.path)] = outcome.error
    table = sort_results(results_frame(rows, labels))
    table.attrs["errors"] = errors
    return table
