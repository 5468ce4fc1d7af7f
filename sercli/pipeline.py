"""The annotation pipeline: recording -> speech segments -> MFCC windows -> emotions."""

from __future__ import annotations

import contextlib
import math
import multiprocessing
import os
import queue
import signal
import tempfile
import threading
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

from sercli.audio import AudioError, iter_audio, iter_signal
from sercli.features import FeatureConfig, mfcc, mfcc_windows
from sercli.files import path_text
from sercli.fusion import FunctionalHead
from sercli.groups import RecordingGroup, SpeakerOf, plan_groups
from sercli.model import PREDICT_BATCH, Classifier, ModelCard, load_classifier
from sercli.normalization import NORMALIZATIONS, FrameStats, standardize
from sercli.prosody import segment_functionals
from sercli.vad import SpeechSegment, VadConfig, stream_speech


def segment_windows(
    blocks: Iterable[np.ndarray], features: FeatureConfig, vad: VadConfig, functionals: bool = False
) -> Iterator[tuple[SpeechSegment, np.ndarray, FrameStats, np.ndarray | None]]:
    """Stream a recording's speech segments with their model input windows and frame statistics.

    Parameters
    ----------
    blocks : iterable of np.ndarray, shape (n,)
        The recording as consecutive mono blocks at ``features.sample_rate`` Hz
        (see :func:`sercli.audio.iter_audio`).
    functionals : bool
        Also compute each segment's functionals (for a model with a functional head).

    Yields
    ------
    (SpeechSegment, np.ndarray, FrameStats, np.ndarray or None)
        A segment (seconds), its windows, shape ``(n_windows, window_frames, n_mfcc)``,
        not normalised, the statistics of its MFCC frames (each frame counted once,
        however many windows hold it), and its functionals
        (:func:`sercli.prosody.segment_functionals`) or None.
    """
    for segment, samples in stream_speech(blocks, features.sample_rate, vad):
        frames = mfcc(samples, features)
        values = segment_functionals(samples, features.sample_rate, frames) if functionals else None
        windows = mfcc_windows(frames, features.window_frames, features.window_hop_frames)
        yield segment, windows, FrameStats.of(frames), values


def pool_probabilities(window_probabilities: np.ndarray) -> np.ndarray:
    """A segment's emotion probabilities: the mean over its windows, shape ``(n_labels,)``."""
    return window_probabilities.mean(axis=0)


@dataclass(frozen=True)
class SegmentEmotion:
    """One output row: a speech segment and its emotion probabilities.

    A recording where no speech was found gets a single row with ``segment`` 0,
    the whole recording's span, no label and NaN probabilities.

    Attributes
    ----------
    path : str
        The recording's path as :func:`sercli.files.path_text` writes it.
    segment : int
        1-based index of the segment within the recording (0: no speech found).
    start_s, end_s : float
        Segment bounds in seconds from the start of the recording.
    label : str or None
        Most probable label.
    confidence : float
        Its probability.
    probabilities : np.ndarray, shape (n_labels,)
        Mean of the segment's window probabilities, in the model's label order.
    """

    path: str
    segment: int
    start_s: float
    end_s: float
    label: str | None
    confidence: float
    probabilities: np.ndarray


@dataclass(frozen=True)
class InMemoryRecording:
    """A signal to annotate like a file: its rows carry ``name`` as their path.

    Attributes
    ----------
    name : str
    samples : np.ndarray, shape (n,) or (n, channels)
        Full scale 1.
    sample_rate : int
        In Hz.
    """

    name: str
    samples: np.ndarray
    sample_rate: int


def _recording_path(recording: Path | InMemoryRecording) -> Path:
    """The path a recording's rows carry: its file's, or an in-memory signal's name."""
    return Path(recording.name) if isinstance(recording, InMemoryRecording) else Path(recording)


@dataclass(frozen=True)
class FileOutcome:
    """What happened to one recording: its rows, or the one-line reason it failed.

    Attributes
    ----------
    path : Path
    rows : list of SegmentEmotion
        Empty when the file failed.
    error : str or None
        One-line cause of the failure.
    audio_s : float
        Length of the recording in seconds (0 when unknown).
    note : str or None
        Something the user should know about rows that were written (e.g. the
        file changed while it was read).
    group : str or None
        The normalisation group its speech was standardised over
        (:attr:`sercli.groups.RecordingGroup.name`).
    """

    path: Path
    rows: list[SegmentEmotion]
    error: str | None = None
    audio_s: float = 0.0
    note: str | None = None
    group: str | None = None


def model_normalization(card: ModelCard, requested: str | None = None) -> str:
    """The normalisation to annotate with (one of :data:`NORMALIZATIONS`).

    ``requested`` None gives ``auto`` for a model trained on normalised
    MFCCs and ``none`` for one trained without.

    Raises
    ------
    ValueError
        If ``requested`` is unknown, or asks to normalise for a model trained without it.
    """
    if requested is not None and requested not in NORMALIZATIONS:
        raise ValueError(f"unknown normalization {requested!r}: use {', '.join(NORMALIZATIONS)}")
    if card.normalization == "none":
        if requested not in (None, "none"):
            raise ValueError(f"model {card.name} was trained without normalisation: use --normalize none")
        return "none"
    if requested == "none":
        raise ValueError(f"model {card.name} was trained on normalised MFCCs: --normalize none would mislead it")
    return requested or "auto"


def annotate_files(
    paths: list[Path | InMemoryRecording],
    classifier: Classifier,
    vad: VadConfig,
    workers: int = 1,
    normalization: str | None = None,
    speaker_of: SpeakerOf | None = None,
    done: set[str] = frozenset(),
) -> Iterator[FileOutcome]:
    """Annotate recordings, group by group (:func:`sercli.groups.plan_groups`); a failing file never
    stops the batch.

    ``normalization`` (see :func:`model_normalization`; default from the model's
    card) says over which speech each MFCC coefficient is standardised;
    ``speaker_of`` names speakers for ``auto`` and ``speaker``. Recordings in
    ``done`` (:func:`sercli.files.recording_key`) get no outcome, but their speech
    still counts in their group's statistics. Outcomes come group by group, in the
    order of each group's first recording in ``paths``: in ``paths`` order for
    ``recording``, ``segment`` and ``none``. See :func:`annotate_groups` for ``workers``.
    """
    normalization = model_normalization(classifier.card, normalization)
    groups = plan_groups(paths, normalization, speaker_of, done)
    yield from annotate_groups(groups, classifier, vad, normalization, workers)


def annotate_groups(
    groups: list[RecordingGroup], classifier: Classifier, vad: VadConfig, normalization: str, workers: int = 1
) -> Iterator[FileOutcome]:
    """Annotate planned normalisation groups; outcomes come in the groups' order.

    In one process, a thread decodes the recordings a few blocks ahead, this thread
    finds their speech and cuts windows, and another thread has the classifier
    (with its own threads: one LiteRT interpreter per core) classify the windows
    already cut, in batches of about ``PREDICT_BATCH`` windows that span
    consecutive recordings. With ``workers`` > 1, that many processes (each
    loading the model with one interpreter) annotate whole groups side by side.
    """
    if workers <= 1:
        yield from _annotate_in_order(groups, classifier, vad, normalization)
        return
    context = multiprocessing.get_context("spawn")
    with context.Pool(workers, initializer=_start_worker, initargs=(classifier.path, vad, normalization)) as pool:
        for outcomes in pool.imap(_annotate_in_worker, groups):
            yield from outcomes


@dataclass
class _Recording:
    """A recording on its way through the pipeline.

    Attributes
    ----------
    path : Path
    audio_s : float
        Its length in seconds, as far as it has been decoded.
    segments : list of SpeechSegment
    probabilities : list of np.ndarray or None
        Each segment's pooled probabilities, None until its windows are classified.
    head_scores : list of np.ndarray or None
        Each segment's log-probabilities from the model's functional head, None until its
        group is complete (or for a model without a head).
    error : str or None
        One-line cause of a failure to decode it.
    note : str or None
        See :class:`FileOutcome`.
    read : bool
        Whether all its segments have been cut.
    """

    path: Path
    audio_s: float = 0.0
    segments: list[SpeechSegment] = field(default_factory=list)
    probabilities: list[np.ndarray | None] = field(default_factory=list)
    head_scores: list[np.ndarray | None] = field(default_factory=list)
    error: str | None = None
    note: str | None = None
    read: bool = False
    group: str | None = None

    def cut_windows(
        self, blocks: Iterable[np.ndarray], features: FeatureConfig, vad: VadConfig, functionals: bool
    ) -> Iterator[tuple[int, np.ndarray, FrameStats, np.ndarray | None]]:
        """Each speech segment's index, windows, frame statistics and functionals (see :func:`segment_windows`);
        a decoding failure ends it and is kept in ``error``."""

        def counted() -> Iterator[np.ndarray]:
            for block in blocks:
                self.audio_s += len(block) / features.sample_rate
                yield block

        try:
            for segment, windows, stats, values in segment_windows(counted(), features, vad, functionals):
                self.segments.append(segment)
                self.probabilities.append(None)
                self.head_scores.append(None)
                yield len(self.segments) - 1, windows, stats, values
        except AudioError as error:
            self.error = str(error)
        except (OSError, ValueError, MemoryError) as error:
            self.error = f"{type(error).__name__}: {error}"
        self.read = True

    @property
    def done(self) -> bool:
        return self.read and (self.error is not None or all(p is not None for p in self.probabilities))

    def outcome(self, labels: list[str]) -> FileOutcome:
        """Its rows (one no-speech row when no segment was found), or its failure."""
        if self.error is not None:
            return FileOutcome(self.path, [], self.error, self.audio_s, group=self.group)
        rows = []
        for number, (segment, pooled) in enumerate(zip(self.segments, self.probabilities), start=1):
            best = int(pooled.argmax())
            rows.append(
                SegmentEmotion(
                    path_text(self.path),
                    number,
                    segment.start_s,
                    segment.end_s,
                    labels[best],
                    float(pooled[best]),
                    pooled,
                )
            )
        if not rows:
            no_speech = np.full(len(labels), np.nan, dtype=np.float32)
            rows.append(SegmentEmotion(path_text(self.path), 0, 0.0, self.audio_s, None, math.nan, no_speech))
        return FileOutcome(self.path, rows, audio_s=self.audio_s, note=self.note, group=self.group)


class _DecodeAhead:
    """Decodes recordings in a background thread, a few blocks ahead of their consumer.

    Iterating gives ``(path, blocks)`` for each path in order; ``blocks`` yields the
    recording's mono blocks (see :func:`sercli.audio.iter_audio`) and raises what
    decoding it raised. Each ``blocks`` must be used up before the next pair is taken;
    ``notes`` then holds a note for a recording whose size changed while it was read.
    """

    _END = object()

    def __init__(self, paths: Iterable[Path | InMemoryRecording], sample_rate: int, blocks_ahead: int = 4):
        self.sources = [p if isinstance(p, InMemoryRecording) else Path(p) for p in paths]
        self.paths = [_recording_path(p) for p in self.sources]
        self.notes: dict[Path, str] = {}
        self.queue: queue.Queue = queue.Queue(blocks_ahead)
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._decode, args=(sample_rate,), name="decode", daemon=True)
        self.thread.start()

    def _decode(self, sample_rate: int) -> None:
        for path in self.sources:
            try:
                if isinstance(path, InMemoryRecording):
                    for block in iter_signal(path.samples, path.sample_rate, sample_rate):
                        self._put(block)
                    self._put(self._END)
                    continue
                size = _file_size(path)
                for block in iter_audio(path, sample_rate):
                    self._put(block)
                if (now := _file_size(path)) != size:
                    self._put(
                        _Note(f"its size changed while it was read ({size} -> {now} bytes): the rows cover it as read")
                    )
                self._put(self._END)
            except Exception as error:  # noqa: BLE001 - raised again in the consuming thread
                self._put(error)
            if self.stopping.is_set():
                return

    def _put(self, item: object) -> None:
        while not self.stopping.is_set():
            try:
                self.queue.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def __iter__(self) -> Iterator[tuple[Path, Iterator[np.ndarray]]]:
        for path in self.paths:
            blocks = self._blocks(path)
            yield path, blocks
            with contextlib.suppress(Exception):  # the consumer gave up on this recording: skip its rest
                for _ in blocks:
                    pass

    def _blocks(self, path: Path) -> Iterator[np.ndarray]:
        while (item := self.queue.get()) is not self._END:
            if isinstance(item, Exception):
                raise item
            if isinstance(item, _Note):
                self.notes[path] = item.text
                continue
            yield item

    def stop(self) -> None:
        """End the decoding thread early and wait for it (a thread still decoding while the
        interpreter shuts down, after Ctrl-C, can crash it)."""
        self.stopping.set()
        self.thread.join()


@dataclass(frozen=True)
class _Note:
    text: str


def _file_size(path: Path) -> int:
    """Size in bytes, -1 when it cannot be read (decoding then says why)."""
    try:
        return os.stat(path).st_size
    except OSError:
        return -1


_JOBS_AHEAD = 16
"""Inference batches that may wait while the next windows are cut: at most 16 x 256 windows (64 MB), so
a recording whose windows were held for its statistics queues them whole and the next one is cut
meanwhile (1-hour file 751x -> 854x real time against 2 batches)."""

HELD_WINDOWS_BYTES = 64 << 20
"""Windows of a normalisation group held in memory; more wait in a temporary file."""


class _HeldWindows:
    """The windows of a normalisation group, kept until the group's statistics are complete.

    Past ``memory_bytes`` they wait in an anonymous temporary file, so a 10-hour
    recording normalised as a whole still annotates in flat memory. Each part's
    functionals (a few hundred bytes) stay in memory, for the model's functional head.
    """

    def __init__(self, prior: FrameStats, head: FunctionalHead | None, memory_bytes: int):
        self.prior, self.head, self.memory_bytes = prior, head, memory_bytes
        self._empty()

    def _empty(self) -> None:
        self.stats = FrameStats.empty(len(self.prior.total))
        self.functional_stats = None if self.head is None else FrameStats.empty(self.head.shape[0])
        self.parts: list[tuple[_Recording, int, np.ndarray | None, np.ndarray | None]] = []
        self.held_bytes, self.spill = 0, None

    def add_stats(self, stats: FrameStats, functionals: np.ndarray | None) -> None:
        """Count a segment's statistics in the group without annotating it."""
        self.stats += stats
        if self.head is not None:
            self.functional_stats += FrameStats.of(functionals[None])

    def add(
        self, recording: _Recording, index: int, windows: np.ndarray, stats: FrameStats, functionals: np.ndarray | None
    ) -> None:
        self.add_stats(stats, functionals)
        if self.held_bytes + windows.nbytes <= self.memory_bytes:
            self.parts.append((recording, index, windows, functionals))
            self.held_bytes += windows.nbytes
            return
        if self.spill is None:
            self.spill = tempfile.TemporaryFile()  # noqa: SIM115 - closed by drain()
        np.save(self.spill, windows)
        self.parts.append((recording, index, None, functionals))

    def drain(self) -> Iterator[tuple[_Recording, int, np.ndarray]]:
        """Every held part, standardised with the group's statistics and the prior (its head scores set
        from the group's functionals); the group is then empty."""
        if self.spill is not None:
            self.spill.seek(0)
        for recording, index, windows, functionals in self.parts:
            if windows is None:
                windows = np.load(self.spill)
            if recording.error is None:
                if self.head is not None:
                    recording.head_scores[index] = self.head.log_probabilities(
                        functionals[None], self.functional_stats
                    )[0]
                yield recording, index, standardize(windows, self.stats + self.prior)
        if self.spill is not None:
            self.spill.close()
        self._empty()


def _annotate_in_order(
    groups: list[RecordingGroup], classifier: Classifier, vad: VadConfig, normalization: str
) -> Iterator[FileOutcome]:
    """Annotate groups in this process: one thread decodes, this one cuts windows, another classifies them.

    Windows wait in a :class:`_HeldWindows` until their normalisation group has
    been read whole; a ``stats_only`` member adds its statistics only.
    """
    card = classifier.card
    features, labels, prior, head = card.feature_config, card.labels, card.prior, card.head
    members = [(member, group) for group in groups for member in group.members]
    recordings: deque[_Recording] = deque()  # in input order, until their outcome is yielded
    cut: list[tuple[_Recording, int, np.ndarray]] = []  # windows not yet sent to inference
    cut_count = 0
    jobs: deque[tuple[Future, list[tuple[_Recording, int, int]]]] = deque()
    inference = ThreadPoolExecutor(1, thread_name_prefix="inference")
    held = _HeldWindows(prior, head, HELD_WINDOWS_BYTES)

    def send() -> None:
        nonlocal cut_count
        windows = np.concatenate([w for _, _, w in cut])
        parts = [(recording, index, len(w)) for recording, index, w in cut]
        jobs.append((inference.submit(classifier.predict_proba, windows), parts))
        cut.clear()
        cut_count = 0

    def queue_windows(parts: Iterable[tuple[_Recording, int, np.ndarray]]) -> None:
        nonlocal cut_count
        for part in parts:
            cut.append(part)
            cut_count += len(part[2])
            if cut_count >= PREDICT_BATCH:
                send()
                collect(_JOBS_AHEAD)

    def collect(ahead: int) -> None:
        """Store the results of finished jobs, waiting until at most ``ahead`` are left."""
        while jobs and (len(jobs) > ahead or jobs[0][0].done()):
            future, parts = jobs.popleft()
            probabilities, first = future.result(), 0
            for recording, index, count in parts:
                pooled = pool_probabilities(probabilities[first : first + count])
                if head is not None:
                    pooled = head.fused(pooled[None], recording.head_scores[index][None])[0]
                recording.probabilities[index] = pooled
                first += count

    def finished() -> Iterator[FileOutcome]:
        while recordings and recordings[0].done:
            yield recordings.popleft().outcome(labels)

    # Single-threaded BLAS for the MFCC filterbank products: OpenBLAS would start a thread per
    # core and keep them spinning between the small products, taking the inference threads' CPU.
    blas = threadpool_limits(limits=1, user_api="blas")
    decoded = _DecodeAhead([member.source for member, _ in members], features.sample_rate)
    try:
        for position, ((path, blocks), (member, group)) in enumerate(zip(decoded, members)):
            recording = _Recording(path, group=group.name)
            if not member.stats_only:
                recordings.append(recording)
            for index, windows, stats, values in recording.cut_windows(blocks, features, vad, head is not None):
                if normalization in ("none", "segment"):
                    if head is not None:  # functionals standardised over the segment alone, or over no group
                        group = (
                            FrameStats.of(values[None]) if normalization == "segment" else FrameStats.empty(len(values))
                        )
                        recording.head_scores[index] = head.log_probabilities(values[None], group)[0]
                    if normalization == "segment":
                        windows = standardize(windows, stats + prior)
                    queue_windows([(recording, index, windows)])
                elif member.stats_only:
                    held.add_stats(stats, values)
                else:
                    held.add(recording, index, windows, stats, values)
            recording.note = decoded.notes.pop(path, None)
            if position + 1 == len(members) or members[position + 1][1] is not group:
                queue_windows(held.drain())
            collect(_JOBS_AHEAD)
            yield from finished()
        if cut:
            send()
        collect(0)
        yield from finished()
    finally:
        decoded.stop()
        inference.shutdown(cancel_futures=True)
        blas.restore_original_limits()


_worker: dict = {}
"""The classifier and VAD settings of a worker process."""


def _start_worker(model_path: Path, vad: VadConfig, normalization: str) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C and stops the pool
    _worker.update(classifier=load_classifier(model_path, threads=1), vad=vad, normalization=normalization)


def _annotate_in_worker(group: RecordingGroup) -> list[FileOutcome]:
    return list(_annotate_in_order([group], _worker["classifier"], _worker["vad"], _worker["normalization"]))
