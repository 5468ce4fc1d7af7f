"""Normalisation groups: which recordings' speech is standardised together.

Annotation standardises each MFCC coefficient over a group of speech frames
(:mod:`sercli.normalization`). :func:`plan_groups` decides the groups before any
audio is decoded, from the file names, folders and lengths alone, so the plan is
the same in one process, in ``--workers`` processes (a worker takes whole groups)
and on Dask (a part holds whole groups), and a resumed run standardises a group
over all of its recordings, annotated before or not.

The groups of each mode:

- ``auto``: the recordings of one speaker, when speakers are given; else a recording of
  at least :data:`AUTO_OWN_GROUP_S` seconds is its own group and the shorter recordings
  of a folder are one group (a folder of clips); what a group lacks in speech, the
  model's prior makes up (:attr:`sercli.model.ModelCard.prior`);
- ``speaker``: the recordings of one speaker, across folders (:func:`speakers_from_table`,
  :func:`speaker_from_pattern`); a recording of no known speaker is grouped as ``auto`` groups it;
- ``folder``: the recordings of one folder;
- ``recording``, ``segment``, ``none``: each recording alone (``segment`` standardises
  each segment over itself, ``none`` not at all).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from sercli.files import path_text, recording_key

AUTO_OWN_GROUP_S = 20.0
"""Length in seconds from which ``auto`` standardises a recording over its own speech: about as much
speech as the prior's 10 s, so its own statistics weigh more than the prior's."""

SpeakerOf = Callable[[Path], "str | None"]
"""``path -> speaker``, or None when the speaker is unknown."""


@dataclass(frozen=True)
class Member:
    """A recording in a group.

    Attributes
    ----------
    source : Path or sercli.pipeline.InMemoryRecording
    stats_only : bool
        Already annotated (a resumed run): its speech counts in the group's
        statistics, but it gets no new rows.
    """

    source: object
    stats_only: bool = False


@dataclass
class RecordingGroup:
    """Recordings whose speech is standardised together.

    Attributes
    ----------
    name : str
        What the group is, as the output's metadata says: ``recording PATH``,
        ``folder PATH`` (its short recordings under ``auto``) or ``speaker NAME``.
    members : list of Member
    """

    name: str
    members: list[Member] = field(default_factory=list)

    @property
    def todo(self) -> list[Member]:
        """The members to annotate."""
        return [m for m in self.members if not m.stats_only]


def recording_duration(source) -> float:
    """A recording's length in seconds from its header (an in-memory signal's from its samples);
    0 when the header cannot be read (decoding will say why)."""
    import soundfile

    samples = getattr(source, "samples", None)
    if samples is not None:
        return len(samples) / source.sample_rate
    try:
        info = soundfile.info(str(source))
        return info.frames / info.samplerate
    except (RuntimeError, OSError, ValueError, ZeroDivisionError):
        return 0.0


def plan_groups(
    sources: Iterable,
    normalization: str,
    speaker_of: SpeakerOf | None = None,
    done: set[str] = frozenset(),
    duration_of: Callable[[object], float] = recording_duration,
) -> list[RecordingGroup]:
    """Split recordings into normalisation groups (see the module's docstring).

    Parameters
    ----------
    sources : iterable of Path or sercli.pipeline.InMemoryRecording
        Every recording of the run, those already annotated included.
    normalization : str
        One of :data:`sercli.normalization.NORMALIZATIONS`.
    speaker_of : callable, optional
        For ``auto`` and ``speaker``: each recording's speaker.
    done : set of str
        :func:`sercli.files.recording_key` of the recordings already annotated: they
        become ``stats_only`` members, and a group with nothing left to do is dropped.
    duration_of : callable
        A recording's length in seconds, for ``auto`` (and ``speaker`` without a speaker).

    Returns
    -------
    list of RecordingGroup
        In the order of their first recording in ``sources``; members in ``sources`` order.
    """
    groups: dict[str, RecordingGroup] = {}
    for source in sources:
        in_memory = hasattr(source, "samples")  # an InMemoryRecording: named, in no folder
        path = Path(source.name) if in_memory else Path(source)
        name = f"recording {path_text(path)}"
        grouped_by_speaker = speaker_of is not None and normalization in ("auto", "speaker")
        speaker = speaker_of(path) if grouped_by_speaker and not in_memory else None
        if speaker is not None:
            name = f"speaker {speaker}"
        elif not in_memory and (
            normalization == "folder"
            or (normalization in ("auto", "speaker") and duration_of(source) < AUTO_OWN_GROUP_S)
        ):
            name = f"folder {path_text(path.parent)}"
        stats_only = not in_memory and recording_key(path) in done
        groups.setdefault(name, RecordingGroup(name)).members.append(Member(source, stats_only))
    return [group for group in groups.values() if group.todo]


def speakers_from_table(table: str | Path) -> SpeakerOf:
    """Speakers from a CSV or Parquet table with ``path`` and ``speaker`` columns.

    Paths are taken relative to the table's folder (absolute ones as they are)
    and matched to recordings by :func:`sercli.files.recording_key`.

    Raises
    ------
    ValueError
        One line naming the table (and row) for an unreadable table, a missing column or an empty cell.
    """
    import pandas as pd

    table = Path(table)
    try:
        if table.suffix.lower() in (".parquet", ".pq"):
            frame = pd.read_parquet(table)
        else:
            frame = pd.read_csv(table, dtype=str, keep_default_na=False)
    except FileNotFoundError:
        raise ValueError(f"speakers table {table} not found") from None
    except (OSError, ValueError) as error:
        raise ValueError(f"cannot read speakers table {table}: {str(error).splitlines()[0]}") from None
    for column in ("path", "speaker"):
        if column not in frame.columns:
            raise ValueError(f"speakers table {table}: missing column '{column}'")
    speakers = {}
    for number, (path, speaker) in enumerate(zip(frame["path"], frame["speaker"]), start=1):
        path, speaker = str(path).strip(), str(speaker).strip()
        if not path or not speaker or speaker == "nan":
            raise ValueError(f"speakers table {table} row {number}: empty {'path' if not path else 'speaker'}")
        speakers[recording_key(table.parent / path)] = speaker
    return lambda recording: speakers.get(recording_key(recording))


def speaker_from_pattern(pattern: str) -> SpeakerOf:
    """Speakers from file names: ``pattern`` is searched in each file's name, and its group
    ``speaker`` is the speaker (no match: unknown).

    Raises
    ------
    ValueError
        If the pattern is not a regular expression with a group named ``speaker``.
    """
    try:
        compiled = re.compile(pattern)
    except re.error as error:
        raise ValueError(f"--speaker-pattern {pattern!r} is not a regular expression: {error}") from None
    if "speaker" not in compiled.groupindex:
        raise ValueError(f"--speaker-pattern {pattern!r} has no group named speaker, as in '^(?P<speaker>[^_]+)_'")

    def speaker_of(recording: Path) -> str | None:
        match = compiled.search(Path(recording).name)
        return match["speaker"] if match and match["speaker"] else None

    return speaker_of


def speaker_source(table: str | Path | None = None, pattern: str | None = None) -> SpeakerOf | None:
    """The speakers the user gave: a table (:func:`speakers_from_table`), a file-name pattern
    (:func:`speaker_from_pattern`), or neither (None).

    Raises
    ------
    ValueError
        If both are given, or the one given cannot be used.
    """
    if table is not None and pattern is not None:
        raise ValueError("give the speakers as a table or as a pattern, not both")
    if table is not None:
        return speakers_from_table(table)
    return speaker_from_pattern(pattern) if pattern is not None else None
