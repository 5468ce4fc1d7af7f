"""Annotating a batch of recordings into a results file that survives interruption.

:class:`ResultsFile` keeps the whole table in memory and rewrites it atomically
(temporary file + rename) at checkpoints, so the file on disk is always a
complete, valid table holding whole recordings only: a run killed at any point
loses at most the work since the last checkpoint, and a resumed run skips every
recording already in the table. :class:`CsvStream` writes CSV to a stream
(stdout) as recordings finish. :func:`annotate_batch` is the whole job, "annotate
these inputs into this output", as ``sercli annotate`` and
``sercli.annotate(..., output=...)`` run it.
"""

from __future__ import annotations

import fcntl
import json
import math
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, Self, TextIO

from sercli import EMOTIONS, __version__
from sercli.files import find_audio_files, path_text, recording_key
from sercli.groups import SpeakerOf, plan_groups
from sercli.model import Classifier, card_path, file_sha256
from sercli.pipeline import FileOutcome, annotate_files
from sercli.vad import VadConfig
from sercli.writers import (
    TABLE_SUFFIXES,
    concat_columns,
    frame_columns,
    metadata_path,
    read_metadata,
    read_results,
    segment_columns,
    table_format,
    table_labels,
    write_csv,
    write_csv_file,
    write_results,
)

if TYPE_CHECKING:
    from sercli.annotator import Annotator


class ResultSink(Protocol):
    """Where a batch's rows go."""

    done: set[str]
    """Recordings already annotated, as :func:`recording_key` gives them."""

    def add(self, outcome: FileOutcome) -> None:
        """Take a recording's rows (an outcome without error)."""

    def save(self) -> None:
        """Make every row added so far durable."""

    def close(self) -> None:
        """Save, and let go of the output."""


class OutputError(Exception):
    """An output that cannot be written or resumed; the message is a one-line cause."""


RESUME_KEYS = {"model": "model", "vad": "VAD settings", "features": "features", "normalization": "normalization"}
"""Metadata that must match for ``--resume`` to add rows to a results file, with their names in messages."""


class OutputLock:
    """An exclusive advisory lock (``flock``) on ``.<name>.lock`` beside an output, removed on release.

    The lock file sits beside the output's real file (symbolic links followed), so two
    names of one file share it. Removing it is safe: a run that opened the file just
    before it was removed sees that its inode is no longer the one on disk and takes
    the new file's lock instead.

    Raises
    ------
    OutputError
        If another run holds the lock, or the folder cannot be written.
    """

    def __init__(self, output: Path):
        real = Path(os.path.realpath(output))
        self.path = real.with_name(f".{real.name}.lock")
        while True:
            try:
                handle = open(self.path, "a")  # noqa: SIM115 - held until release()
            except OSError as error:
                raise OutputError(f"cannot write {output}: {error.strerror}") from None
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.close()
                raise OutputError(f"another sercli run is writing {output}") from None
            try:
                if os.stat(self.path).st_ino == os.fstat(handle.fileno()).st_ino:
                    break
            except FileNotFoundError:
                pass
            handle.close()  # removed by the run that held it: lock the new one
        self.handle = handle

    def release(self) -> None:
        """Remove the lock file, then let go of the lock."""
        if not self.handle.closed:
            self.path.unlink(missing_ok=True)
            self.handle.close()


class ResultsFile:
    """A CSV or Parquet results file, rewritten atomically at most every ``checkpoint_s`` seconds.

    Parameters
    ----------
    path : Path
    metadata : dict
        Stored with the table (model identity, run options).
    resume : bool
        Start from the rows already in ``path`` (whose recordings are then skipped).
        The file's metadata must agree with ``metadata`` on :data:`RESUME_KEYS`.
        A CSV cut off in the middle of a row loses that row and its recording's
        rows (they are annotated again).
    labels : sequence of str
        The model's labels: one ``prob_<label>`` column each.
    checkpoint_s : float
        Minimum seconds between rewrites (> 0); the interval also grows to ten times
        the last rewrite's duration so that rewriting never costs over 10 %.
    force : bool
        Resume even when the settings differ, or the file has no metadata to compare.

    The output is locked (:class:`OutputLock`) until :meth:`close`, so a second run on
    the same output is refused. A new table is written at once, so an output
    that cannot be written is found before any work; a resumed one is rewritten
    only when rows are added. Temporary files left beside ``path`` by a killed run
    are removed.

    Raises
    ------
    OutputError
        If another run holds the lock, the output cannot be written, or cannot be resumed.
    """

    def __init__(
        self,
        path: Path,
        metadata: dict,
        resume: bool,
        labels: Sequence[str] = EMOTIONS,
        checkpoint_s: float = 10.0,
        force: bool = False,
    ):
        if not (math.isfinite(checkpoint_s) and checkpoint_s > 0):
            raise OutputError(f"the checkpoint interval must be a positive number of seconds, not {checkpoint_s}")
        self.path, self.checkpoint_s, self.labels = path, checkpoint_s, list(labels)
        if path.is_dir():
            raise OutputError(f"{path} is a directory")
        self.lock = OutputLock(path)
        try:
            self._open(metadata, resume and path.exists(), force)
        except BaseException:
            self.lock.release()
            raise

    def _open(self, metadata: dict, resume: bool, force: bool) -> None:
        path = self.path
        for stale in path.parent.glob(f".{path.name}.*.partial"):
            stale.unlink(missing_ok=True)
        self.table, stored = segment_columns([], self.labels), {}
        if resume:
            try:
                table = read_results(path, cut_off="drop")
            except ValueError as error:
                raise OutputError(f"cannot resume: {error}") from None
            if table_labels(table) != self.labels:
                raise OutputError(
                    f"cannot resume: {path} has the columns of other labels ({', '.join(table_labels(table))})"
                )
            self.table = frame_columns(table)
            stored = read_metadata(path)
            if not force:
                _check_same_settings(stored, metadata, path)
        self.done = {recording_key(p) for p in self.table["path"]}
        # which group each recording was standardised over, those of the resumed table's runs included
        self.metadata = {**metadata, "groups": stored.get("groups", {})}
        earlier = {key: stored[key] for key in RESUME_KEYS if key in stored}
        if any(value != metadata.get(key) for key, value in earlier.items()):  # --force over other settings
            self.metadata["earlier_settings"] = earlier
        self.pending: list = []  # rows added since the last rewrite
        self.save_cost, self.changed = 0.0, not resume
        if resume and not os.access(path.parent, os.W_OK):
            raise OutputError(f"cannot write {path}: permission denied")
        self.save()

    def add(self, outcome: FileOutcome) -> None:
        self.pending.extend(outcome.rows)
        self.done.add(recording_key(outcome.path))
        if outcome.group is not None:
            self.metadata["groups"][path_text(outcome.path)] = outcome.group
        self.changed = True
        if time.monotonic() - self.last_save >= max(self.checkpoint_s, 10 * self.save_cost):
            self.save()

    def save(self) -> None:
        started = time.monotonic()
        if self.pending:  # one table for all new rows, not one per recording
            self.table = concat_columns(self.table, segment_columns(self.pending, self.labels))
            self.pending = []
        if self.changed:
            try:
                write_results(self.table, self.path, self.metadata)
            except OSError as error:
                raise OutputError(f"cannot write {self.path}: {error.strerror or error}") from None
            self.changed = False
        self.last_save = time.monotonic()
        self.save_cost = self.last_save - started

    def close(self) -> None:
        """Save, then release the lock."""
        try:
            self.save()
        finally:
            self.lock.release()


def _check_same_settings(stored: dict, metadata: dict, path: Path) -> None:
    """Refuse to resume ``path`` when it was made with another model or other settings, or
    nothing says how it was made."""
    if not stored:
        where = f" ({metadata_path(path).name})" if table_format(path) == "csv" else ""
        raise OutputError(
            f"cannot resume: {path} has no metadata{where} to check its model and settings; pass --force to add to it"
        )
    for key, name in RESUME_KEYS.items():
        if key in stored and stored[key] != metadata.get(key):
            raise OutputError(
                f"cannot resume: {path} was made with other {name} ({json.dumps(stored[key])} vs "
                f"{json.dumps(metadata.get(key))}); pass --force to add to it anyway"
            )


class CsvStream:
    """CSV on a text stream, each recording's rows written and flushed as it finishes (no table in
    between: pandas is not imported).

    A stream that cannot be written (a full disk behind ``> file``) raises
    :class:`OutputError`; a closed pipe (``| head``) raises ``BrokenPipeError``.
    """

    def __init__(self, handle: TextIO = sys.stdout, labels: Sequence[str] = EMOTIONS):
        self.handle, self.done, self.labels = handle, set(), list(labels)
        self._write(segment_columns([], self.labels), header=True)

    def add(self, outcome: FileOutcome) -> None:
        self._write(segment_columns(outcome.rows, self.labels))

    def save(self) -> None:
        self._write(None)

    def close(self) -> None:
        self.save()

    def _write(self, columns: Mapping[str, Sequence] | None, header: bool = False) -> None:
        try:
            if columns is not None:
                write_csv(columns, self.handle, header)
            self.handle.flush()
        except BrokenPipeError:
            raise
        except OSError as error:
            raise OutputError(
                f"cannot write to {getattr(self.handle, 'name', 'the output stream')}: {error.strerror or error}"
            ) from None


def pending(paths: Iterable[Path], sink: ResultSink) -> list[Path]:
    """The recordings the sink does not hold yet (matched by :func:`recording_key`)."""
    return [p for p in paths if recording_key(p) not in sink.done]


def errors_path(output: Path) -> Path:
    """Where the failures of a run writing ``output`` are listed: ``<output>.errors.csv``."""
    return output.with_name(output.name + ".errors.csv")


def write_errors(failures: list[FileOutcome], path: Path) -> None:
    """Atomically write ``path, error`` rows, or remove a stale list when nothing failed."""
    if not failures:
        path.unlink(missing_ok=True)
        return
    columns = {"path": [path_text(f.path) for f in failures], "error": [f.error for f in failures]}
    write_csv_file(columns, path)


def annotate_into(
    paths: Iterable[Path],
    classifier: Classifier,
    vad: VadConfig,
    sink: ResultSink,
    on_outcome: Callable[[FileOutcome], None] = lambda _: None,
    workers: int = 1,
    normalization: str | None = None,
    speaker_of: SpeakerOf | None = None,
) -> None:
    """Annotate the recordings the sink does not hold yet, adding each one's rows as it finishes.

    ``on_outcome`` hears of every recording, failed ones included, after its rows are added;
    Ctrl-C, SIGTERM and SIGHUP wait until both are done, so what was saved and what was
    heard of agree. ``workers``, ``normalization`` and ``speaker_of`` are
    :func:`sercli.pipeline.annotate_files`'s; the recordings the sink holds still count in
    their normalisation group's statistics.
    """
    outcomes = annotate_files(list(paths), classifier, vad, workers, normalization, speaker_of, sink.done)
    with _BetweenSteps() as signals:
        for outcome in outcomes:
            with signals.held():
                if outcome.error is None:
                    sink.add(outcome)
                on_outcome(outcome)


class _BetweenSteps:
    """Lets SIGINT, SIGTERM and SIGHUP act only outside :meth:`held` blocks: one caught inside a
    block is handed to its handler when the block ends.

    Blocking the signals in this thread (``pthread_sigmask``) is not enough: the kernel then
    hands them to another thread (the stderr forwarder, a decoder), and Python runs the handler
    in this thread at whatever instruction it has reached. Outside the main thread, where Python
    never runs a handler, it does nothing.
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)

    def __enter__(self) -> Self:
        self.holding, self.caught = False, []
        self.previous = {}
        if threading.current_thread() is threading.main_thread():
            self.previous = {number: signal.signal(number, self._on_signal) for number in self.SIGNALS}
        return self

    def __exit__(self, *_) -> None:
        for number, handler in self.previous.items():
            signal.signal(number, signal.SIG_DFL if handler is None else handler)

    @contextmanager
    def held(self):
        self.holding = True
        try:
            yield
        finally:
            self.holding = False
            caught, self.caught = self.caught, []
            for number in caught:
                self._deliver(number)

    def _on_signal(self, number: int, _frame) -> None:
        if self.holding:
            self.caught.append(number)
        else:
            self._deliver(number)

    def _deliver(self, number: int) -> None:
        handler = self.previous[number]
        if callable(handler):
            handler(number, None)
        elif handler != signal.SIG_IGN:  # the default action (or a handler set outside Python)
            signal.signal(number, signal.SIG_DFL)
            signal.raise_signal(number)


@dataclass
class BatchReport:
    """What :func:`annotate_batch` did.

    Attributes
    ----------
    recordings : int
        Recordings found under the inputs.
    todo : int
        Of those, the ones this run had to annotate (a resumed output holds the others).
    annotated : list of FileOutcome
        Recordings whose rows were saved by this run (rows dropped), in finishing order.
    failures : list of FileOutcome
        Recordings that could not be annotated, each with its one-line error.
    interrupted : bool
        Stopped by ``KeyboardInterrupt`` (Ctrl-C, or a signal the caller turned into one);
        what was finished is saved.
    output : Path or None
        The results file or Dask dataset folder; None for CSV on stdout.
    errors_file : Path or None
        Where the failures are listed (None for stdout), removed when nothing failed.
    """

    recordings: int
    todo: int
    annotated: list[FileOutcome] = field(default_factory=list)
    failures: list[FileOutcome] = field(default_factory=list)
    interrupted: bool = False
    output: Path | None = None
    errors_file: Path | None = None

    def record(self, outcome: FileOutcome) -> None:
        """Count a recording whose rows are saved (or that failed), its rows dropped."""
        (self.annotated if outcome.error is None else self.failures).append(replace(outcome, rows=[]))

    @property
    def audio_s(self) -> float:
        """Seconds of audio this run went through, failed recordings included."""
        return sum(o.audio_s for o in (*self.annotated, *self.failures))


def run_metadata(annotator: Annotator, inputs: Sequence[str | Path]) -> dict:
    """What a results file records of the run that made it: the model (the SHA-256 of its file and of
    its card, which holds its labels and normalisation prior), the settings that must match to resume it
    (:data:`RESUME_KEYS`), sercli's version and the inputs."""
    card, path = annotator.classifier.card, annotator.classifier.path
    return {
        "model": {
            "name": card.name,
            "version": card.version,
            "sha256": file_sha256(path),
            "card_sha256": file_sha256(card_path(path)),
        },
        "sercli_version": __version__,
        "vad": annotator.vad.__dict__,
        "features": card.features,
        "normalization": annotator.normalization,
        "inputs": [str(p) for p in inputs],
    }


def annotate_batch(
    inputs: Sequence[str | Path],
    annotator: Annotator,
    output: str | Path | None = None,
    *,
    include: Iterable[str] = (),
    exclude: Iterable[str] = (),
    overwrite: bool = False,
    resume: bool = False,
    force: bool = False,
    checkpoint_s: float = 10.0,
    workers: int = 1,
    dask: str | None = None,
    on_start: Callable[[int], None] = lambda _: None,
    on_outcome: Callable[[FileOutcome], None] = lambda _: None,
) -> BatchReport:
    """Annotate the recordings under ``inputs`` into ``output``, as ``sercli annotate`` does.

    Parameters
    ----------
    inputs : sequence of str or Path
        Folders (walked recursively, filtered by the ``include``/``exclude`` globs) and files.
    annotator : sercli.Annotator
        The model and settings.
    output : str or Path, optional
        A ``.csv`` or ``.parquet`` results file (checkpointed every ``checkpoint_s`` seconds,
        with ``<output>.errors.csv`` listing failures), ``-`` or None for CSV on stdout, or with
        ``dask`` the folder of a partitioned Parquet dataset.
    overwrite, resume, force : bool
        Replace an existing output; keep its rows and annotate the rest; resume it even when it
        was made with another model or settings.
    workers : int
        Processes annotating whole normalisation groups side by side (the Dask cluster's size
        with ``dask="local"``).
    dask : str, optional
        ``"local"`` or a scheduler address: run on a Dask cluster (:mod:`sercli.distributed`).
    on_start : callable
        Called with the number of recordings to annotate, before the first one.
    on_outcome : callable
        Called with every recording's outcome (rows dropped for Dask) once its rows are saved.

    Returns
    -------
    BatchReport
        An interrupted run (``KeyboardInterrupt``) returns with ``interrupted`` set, after saving.

    Raises
    ------
    ValueError, FileNotFoundError, OutputError
        One line: a bad input or option, an output that exists (without ``overwrite`` or
        ``resume``), cannot be written, or cannot be resumed.
    """
    out_path = None if output in (None, "-") else Path(output)
    if dask is None:
        table_format(output or "-")
    elif out_path is None or out_path.suffix.lower() in TABLE_SUFFIXES:
        raise ValueError("with --dask, the output names the folder of the partitioned Parquet dataset")
    paths = find_audio_files(inputs, include, exclude)
    exists = out_path is not None and (any(out_path.glob("part-*.parquet")) if dask else out_path.exists())
    if exists and not (overwrite or resume):
        raise ValueError(f"{output} exists: pass --overwrite to replace it or --resume to complete it")
    metadata = run_metadata(annotator, inputs)
    if dask is not None:
        return _annotate_on_dask(
            paths, annotator, out_path, metadata, overwrite, resume, workers, dask, on_start, on_outcome
        )
    labels = annotator.classifier.card.labels
    sink = (
        CsvStream(sys.stdout, labels)
        if out_path is None
        else ResultsFile(out_path, metadata, resume, labels, checkpoint_s, force)
    )
    report = BatchReport(
        len(paths),
        len(pending(paths, sink)),
        output=out_path,
        errors_file=None if out_path is None else errors_path(out_path),
    )
    try:
        if report.todo:
            on_start(report.todo)

            def saved(outcome: FileOutcome) -> None:
                report.record(outcome)
                on_outcome(outcome)

            try:
                annotate_into(
                    paths,
                    annotator.classifier,
                    annotator.vad,
                    sink,
                    saved,
                    workers,
                    annotator.normalization,
                    annotator.speaker_of,
                )
            except KeyboardInterrupt:
                report.interrupted = True
    finally:
        sink.close()
    if report.errors_file is not None and report.todo:
        _write_errors(report)
    return report


def _annotate_on_dask(paths, annotator, out_path, metadata, overwrite, resume, workers, dask, on_start, on_outcome):
    """:func:`annotate_batch` on a Dask cluster: each part is saved by its worker."""
    from sercli.distributed import annotate_on_dask, dask_client

    if overwrite and not resume:
        for part in out_path.glob("part-*.parquet"):
            part.unlink()
    report = BatchReport(len(paths), len(paths), output=out_path, errors_file=out_path / "errors.csv")
    on_start(report.todo)

    def saved(outcomes: list[FileOutcome]) -> None:
        for outcome in outcomes:
            report.record(outcome)
            on_outcome(outcome)

    try:
        with dask_client(dask, workers) as client:
            annotate_on_dask(
                client,
                plan_groups(paths, annotator.normalization, annotator.speaker_of),
                annotator.classifier.path.resolve(),
                annotator.vad,
                out_path,
                metadata,
                resume,
                on_part=saved,
                normalization=annotator.normalization,
            )
    except KeyboardInterrupt:
        report.interrupted = True
    _write_errors(report)
    return report


def _write_errors(report: BatchReport) -> None:
    try:
        write_errors(report.failures, report.errors_file)
    except OSError as error:
        raise OutputError(f"cannot write {report.errors_file}: {error.strerror or error}") from None
