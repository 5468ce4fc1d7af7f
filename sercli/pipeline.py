"""The annotation pipeline: recording -> speech segments -> MFCC windows -> emotions."""

from __future__ import annotations

import math
import multiprocessing
import signal
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sercli.audio import AudioError, audio_info, iter_audio
from sercli.features import FeatureConfig, signal_windows
from sercli.model import PREDICT_BATCH, Classifier, load_classifier
from sercli.vad import SpeechSegment, VadConfig, stream_speech


def segment_windows(
    path: str | Path, features: FeatureConfig, vad: VadConfig
) -> Iterator[tuple[SpeechSegment, np.ndarray]]:
    """Stream a recording's speech segments with their model input windows.

    Yields
    ------
    (SpeechSegment, np.ndarray)
        A segment (seconds) and its windows, shape ``(n_windows, window_frames, n_mfcc)``.

    Raises
    ------
    sercli.audio.AudioError
        If the file cannot be decoded.
    """
    blocks = iter_audio(path, features.sample_rate)
    for segment, samples in stream_speech(blocks, features.sample_rate, vad):
        yield segment, signal_windows(samples, features)


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
    segment : int
        1-based index of the segment within the recording (0: no speech found).
    start_s, end_s : float
        Segment bounds in seconds from the start of the recording.
    label : str or None
        Most probable emotion.
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


def annotate_file(
    path: str | Path, classifier: Classifier, vad: VadConfig, batch_windows: int = PREDICT_BATCH
) -> list[SegmentEmotion]:
    """Emotion rows of one recording, its windows classified in batches of about ``batch_windows``.

    Raises
    ------
    sercli.audio.AudioError
        If the file cannot be decoded.
    """
    labels = classifier.card.labels
    rows: list[SegmentEmotion] = []
    pending: list[tuple[SpeechSegment, np.ndarray]] = []

    def classify() -> None:
        probabilities = classifier.predict_proba(np.concatenate([w for _, w in pending]))
        bounds = np.cumsum([0] + [len(w) for _, w in pending])
        for (segment, _), first, last in zip(pending, bounds[:-1], bounds[1:]):
            pooled = pool_probabilities(probabilities[first:last])
            best = int(pooled.argmax())
            rows.append(
                SegmentEmotion(
                    str(path), len(rows) + 1, segment.start_s, segment.end_s, labels[best], float(pooled[best]), pooled
                )
            )
        pending.clear()

    for segment, windows in segment_windows(path, classifier.card.feature_config, vad):
        pending.append((segment, windows))
        if sum(len(w) for _, w in pending) >= batch_windows:
            classify()
    if pending:
        classify()
    if not rows:
        no_speech = np.full(len(labels), np.nan, dtype=np.float32)
        rows.append(SegmentEmotion(str(path), 0, 0.0, audio_info(path).duration_s, None, math.nan, no_speech))
    return rows


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
    """

    path: Path
    rows: list[SegmentEmotion]
    error: str | None = None
    audio_s: float = 0.0


def annotate_files(
    paths: list[Path], classifier: Classifier, vad: VadConfig, workers: int = 1
) -> Iterator[FileOutcome]:
    """Annotate recordings in order; a failing file yields an error, never stops the batch.

    With ``workers`` > 1, that many processes each load the model (one inference
    thread each) and annotate whole recordings, decoding and inference of
    different files overlapping; outcomes still come in the order of ``paths``.
    """
    if workers <= 1:
        yield from (annotate_or_report(path, classifier, vad) for path in paths)
        return
    context = multiprocessing.get_context("spawn")
    with context.Pool(workers, initializer=_start_worker, initargs=(classifier.path, vad)) as pool:
        yield from pool.imap(_annotate_in_worker, paths)


def annotate_or_report(path: Path, classifier: Classifier, vad: VadConfig) -> FileOutcome:
    """One recording's outcome: its rows, or the one-line cause of its failure."""
    try:
        duration_s = audio_info(path).duration_s
        return FileOutcome(path, annotate_file(path, classifier, vad), audio_s=duration_s)
    except AudioError as error:
        return FileOutcome(path, [], str(error))
    except (OSError, ValueError, MemoryError) as error:
        return FileOutcome(path, [], f"{type(error).__name__}: {error}")


_worker: dict = {}
"""The classifier and VAD settings of a worker process."""


def _start_worker(model_path: Path, vad: VadConfig) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C and stops the pool
    _worker.update(classifier=load_classifier(model_path, threads=1), vad=vad)


def _annotate_in_worker(path: Path) -> FileOutcome:
    return annotate_or_report(path, _worker["classifier"], _worker["vad"])
