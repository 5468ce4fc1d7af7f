"""Evaluating a classifier on labelled RAVDESS-layout clips, at clip level.

Clips go through the same code as annotation (:func:`sercli.pipeline.segment_windows`:
resample to 16 kHz, VAD, MFCC windows), so evaluation, training and inference
cannot drift. A clip's prediction is the mean of its windows' probabilities.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from sercli import EMOTIONS
from sercli.audio import iter_audio
from sercli.datasets import RavdessClip
from sercli.features import FeatureConfig
from sercli.pipeline import segment_windows
from sercli.vad import VadConfig

Log = Callable[[str], None]


@dataclass
class WindowSet:
    """MFCC windows of a list of clips.

    Attributes
    ----------
    windows : np.ndarray, shape (n_windows, window_frames, n_mfcc), float32
    clip_index : np.ndarray, shape (n_windows,), int
        Which clip (index into ``clips``) each window comes from.
    clips : list of RavdessClip
    """

    windows: np.ndarray
    clip_index: np.ndarray
    clips: list[RavdessClip]

    @property
    def labels(self) -> np.ndarray:
        """Emotion index of each window, shape ``(n_windows,)``."""
        return np.array([clip.emotion for clip in self.clips], dtype=np.int64)[self.clip_index]

    @property
    def clip_labels(self) -> np.ndarray:
        """Emotion index of each clip, shape ``(n_clips,)``."""
        return np.array([clip.emotion for clip in self.clips], dtype=np.int64)

    def for_actors(self, actors: set[int] | list[int]) -> WindowSet:
        """The windows of the given actors' clips only."""
        keep_clips = [i for i, clip in enumerate(self.clips) if clip.actor in set(actors)]
        renumber = np.full(len(self.clips), -1)
        renumber[keep_clips] = np.arange(len(keep_clips))
        mask = np.isin(self.clip_index, keep_clips)
        return WindowSet(self.windows[mask], renumber[self.clip_index[mask]], [self.clips[i] for i in keep_clips])


def extract_windows(
    clips: list[RavdessClip], features: FeatureConfig, vad: VadConfig, log: Log = lambda _: None
) -> WindowSet:
    """Windows of every clip's speech segments; a clip where VAD finds no speech is skipped."""
    windows, clip_index, kept = [], [], []
    for clip in clips:
        clip_windows = [w for _, w in segment_windows(iter_audio(clip.path, features.sample_rate), features, vad)]
        if not clip_windows:
            log(f"{clip.path}: no speech found, skipped")
            continue
        stacked = np.concatenate(clip_windows)
        windows.append(stacked)
        clip_index.append(np.full(len(stacked), len(kept)))
        kept.append(clip)
    return WindowSet(np.concatenate(windows), np.concatenate(clip_index), kept)


def classification_metrics(true: np.ndarray, predicted: np.ndarray, n_classes: int = len(EMOTIONS)) -> dict:
    """Accuracy, unweighted accuracy (mean per-class recall), per-class recall and confusion.

    Parameters
    ----------
    true, predicted : np.ndarray of int, shape (n,)
        Class indices.

    Returns
    -------
    dict
        ``accuracy``, ``unweighted_accuracy``, ``per_class_recall`` (label -> recall,
        ``None`` for a class absent from ``true``), ``confusion`` (rows true, columns
        predicted, as nested lists) and ``n``.
    """
    confusion = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(confusion, (true, predicted), 1)
    support = confusion.sum(axis=1)
    recall = np.divide(np.diag(confusion), support, out=np.full(n_classes, np.nan), where=support > 0)
    return {
        "n": len(true),
        "accuracy": float(np.mean(true == predicted)) if len(true) else math.nan,
        "unweighted_accuracy": float(np.nanmean(recall)) if support.any() else math.nan,
        "per_class_recall": {EMOTIONS[i]: (None if np.isnan(r) else float(r)) for i, r in enumerate(recall)},
        "confusion": confusion.tolist(),
    }


def clip_probabilities(window_probabilities: np.ndarray, data: WindowSet) -> np.ndarray:
    """Mean window probability per clip, shape ``(n_clips, n_labels)``."""
    sums = np.zeros((len(data.clips), window_probabilities.shape[1]))
    np.add.at(sums, data.clip_index, window_probabilities)
    return sums / np.bincount(data.clip_index, minlength=len(data.clips))[:, None]


def evaluate_windows(predict: Callable[[np.ndarray], np.ndarray], data: WindowSet) -> dict:
    """Clip-level metrics of a window classifier on a labelled :class:`WindowSet`."""
    predicted = clip_probabilities(predict(data.windows), data).argmax(axis=1)
    return classification_metrics(data.clip_labels, predicted)
