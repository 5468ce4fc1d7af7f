"""Annotating a batch of recordings into a results file that survives interruption.

:class:`ResultsFile` keeps the whole table in memory and rewrites it atomically
(temporary file + rename) at checkpoints, so the file on disk is always a
complete, valid table holding whole recordings only: a run killed at any point
loses at most the work since the last checkpoint, and a resumed run skips every
recording already in the table. :class:`CsvStream` writes CSV to a stream
(stdout) as recordings finish.
"""

from __future__ import annotations

import fcntl
import json
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Protocol, TextIO

import pandas as pd

from sercli import EMOTIONS
from sercli.files import path_text, recording_key
from sercli.groups import SpeakerOf
from sercli.model import Classifier
from sercli.pipeline import FileOutcome, annotate_files
from sercli.vad import VadConfig
from sercli.writers import (
    atomic_output,
    read_metadata,
    read_results,
    results_frame,
    sort_results,
    table_labels,
    write_csv,
    write_results,
)


class ResultSink(Protocol):
    """Where a batch's rows go."""

    done: set[str]
    """Recordings already annotated, as :func:`recording_key` gives them."""

    def add(self, outcome: FileOutcome) -> None:
        """Take a recording's rows (an outcome without error)."""

    def save(self) -> None: ...



class OutputError(Exception):
    """An output that cannot be written or resumed; the message is a one-line cause."""


RESUME_KEYS = {"model": "model", "vad": "VAD settings", "features": "features", "normalization": "normalization"}
"""Metadata that must match for ``--resume`` to add rows to a results file, with their names in messages."""


class ResultsFile:
    """A CSV or Parquet results file, rewritten atomically at most every ``checkpoint_s`` seconds.

    Parameters
    ----------
    path : Path
    metadata : dict
        Stored with the table (model identity, run options).
    labels : sequence of str
        The model's labels: one ``prob_<label>`` column each.
    resume : bool
        Start from the rows already in ``path`` (whose recordings are then skipped).
        The file's metadata must agree with ``metadata`` on :data:`RESUME_KEYS`.
    checkpoint_s : float
        Minimum seconds between rewrites; the interval also grows to ten times
        the last rewrite's duration so that rewriting never costs over 10 %.
    force : bool
        Resume even when the settings differ.

    The file is locked (``<path>.lock``, an advisory ``flock``) for as long as
    this object lives, so a second run on the same output is refused. The table
    is written once at the start, so an output that cannot be written is found
    before any work. Temporary files left beside ``path`` by a killed run are removed.

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
        self.path, self.checkpoint_s, self.labels = path, checkpoint_s, list(labels)
        if path.is_dir():
            raise OutputError(f"{path} is a directory")
        try:
            self.lock = open(path.with_name(path.name + ".lock"), "a")  # noqa: SIM115 - held until the run ends
        except OSError as error:
            raise OutputError(f"cannot write {path}: {error.strerror}") from None
        try:
            fcntl.flock(self.lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise OutputError(f"another sercli run is writing {path}") from None
        for stale in path.parent.glob(f".{path.name}.*.partial"):
            stale.unlink(missing_ok=True)
        self.table, stored = results_frame([], self.labels), {}
        if resume and path.exists():
            try:
                self.table = read_results(path)
            except ValueError as error:
                raise OutputError(f"cannot resume: {error}") from None
            if table_labels(self.table) != self.labels:
                raise OutputError(
                    f"cannot resume: {path} has the columns of other labels ({', '.join(table_labels(self.table))})"
                )
            stored = read_metadata(path)
            if not force:
                _check_same_settings(stored, metadata, path)
        self.done = {recording_key(p) for p in self.table["path"]}
        # which group each recording was standardised over, those of the resumed table's runs included
        self.metadata = {**metadata, "groups": stored.get("groups", {})}
        self.pending: list = []  # rows added since the last rewrite
        self.save_cost = 0.0
        self.save()

    def add(self, outcome: FileOutcome) -> None:
        self.pending.extend(outcome.rows)
        self.done.add(recording_key(outcome.path))
        if outcome.group is not None:
            self.metadata["groups"][path_text(outcome.path)] = outcome.group
        if time.monotonic() - self.last_save >= max(self.checkpoint_s, 10 * self.save_cost):
            self.save()

    def save(self) -> None:
        started = time.monotonic()
        if self.pending:  # one table for all new rows: a small one per recording costs 1 ms each
            new = results_frame(self.pending, self.labels)
            self.table = sort_results(pd.concat([self.table, new], ignore_index=True))
            self.pending = []
        try:
            write_results(self.table, self.path, self.metadata)
        except OSError as error:
            raise OutputError(f"cannot write {self.path}: {error.strerror or error}") from None
        self.last_save = time.monotonic()
        self.save_cost = self.last_save - started


def _check_same_settings(stored: dict, metadata: dict, path: Path) -> None:
    """Refuse to resume ``path`` when it was made with another model or other settings."""
    for key, name in RESUME_KEYS.items():
        if key in stored and stored[key] != metadata.get(key):
            raise OutputError(
                f"cannot resume: {path} was made with other {name} ({json.dumps(stored[key])} vs "
                f"{json.dumps(metadata.get(key))}); pass --force to add to it anyway"
            )


class CsvStream:
    """CSV on a text stream, each recording's rows written and flushed as it finishes."""

    def __init__(self, handle: TextIO = sys.stdout, labels: Sequence[str] = EMOTIONS):
        self.handle, self.done, self.labels = handle, set(), list(labels)
        write_csv(results_frame([], self.labels), handle)
        handle.flush()

    def add(self, outcome: FileOutcome) -> None:
        write_csv(results_frame(outcome.rows, self.labels), self.handle, header=False)
        self.handle.flush()

    def save(self) -> None:
        self.handle.flush()


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
    frame = pd.DataFrame({"path": [path_text(f.path) for f in failures], "error": [f.error for f in failures]})
    with atomic_output(path) as partial:
        frame.to_csv(partial, index=False, lineterminator="\n")


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

    ``on_outcome`` hears of every recording, failed ones included, after its rows are added.
    ``workers``, ``normalization`` and ``speaker_of`` are :func:`sercli.pipeline.annotate_files`'s;
    the recordings the sink holds still count in their normalisation group's statistics.
    """
    for outcome in annotate_files(list(paths), classifier, vad, workers, normalization, speaker_of, sink.done):
        if outcome.error is None:
            sink.add(outcome)
        on_outcome(outcome)
