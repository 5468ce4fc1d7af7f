"""Evaluating a classifier on labelled RAVDESS-layout clips, at clip level.

Clips go through the same code as annotation (:func:`sercli.pipeline.segment_frames`:
resample to 16 kHz, VAD, MFCCs, then :func:`sercli.features.mfcc_windows`), so
evaluation, training and inference cannot drift. A clip's prediction is the mean of its windows' probabilities.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from sercli import EMOTIONS
from sercli.audio import read_audio
from sercli.datasets import RavdessClip
from sercli.features import FeatureConfig, mfcc, mfcc_windows
from sercli.normalization import FrameStats
from sercli.pipeline import segment_frames
from sercli.vad import VadConfig
from sercli.writers import atomic_output

Log = Callable[[str], None]


@dataclass
class ClipFeatures:
    """MFCC frames of the speech in each of a list of clips.

    Attributes
    ----------
    frames : list of list of np.ndarray
        Per clip, per speech segment, MFCCs of shape ``(n_frames, n_mfcc)``. A clip
        where VAD finds no speech is analysed whole, as one segment: its label says
        it holds speech.
    clips : list of RavdessClip
    """

    frames: list[list[np.ndarray]]
    clips: list[RavdessClip]

    @property
    def stats(self) -> np.ndarray:
        """Each clip's frame statistics (:meth:`FrameStats.to_array`), shape ``(n_clips, 3, n_mfcc)``."""
        return np.stack([FrameStats.of(np.concatenate(segments)).to_array() for segments in self.frames])

    def windows(self, window_frames: int, hop_frames: int) -> WindowSet:
        """Model input windows of every segment, cut as :func:`sercli.features.mfcc_windows` cuts them."""
        cut = [[mfcc_windows(f, window_frames, hop_frames) for f in segments] for segments in self.frames]
        counts = [sum(len(w) for w in clip) for clip in cut]
        return WindowSet(
            np.concatenate([w for clip in cut for w in clip]),
            np.repeat(np.arange(len(self.clips)), counts),
            self.clips,
            self.stats,
        )


@dataclass
class WindowSet:
    """MFCC windows of a list of clips, with each clip's frame statistics.

    Attributes
    ----------
    windows : np.ndarray, shape (n_windows, window_frames, n_mfcc), float32
        Not normalised.
    clip_index : np.ndarray, shape (n_windows,), int
        Which clip (index into ``clips``) each window comes from.
    clips : list of RavdessClip
    clip_stats : np.ndarray, shape (n_clips, 3, n_mfcc)
        Each clip's :class:`FrameStats` as an array, for normalising over groups of clips.
    """

    windows: np.ndarray
    clip_index: np.ndarray
    clips: list[RavdessClip]
    clip_stats: np.ndarray

    @property
    def labels(self) -> np.ndarray:
        """Emotion index of each window, shape ``(n_windows,)``."""
        return self.clip_labels[self.clip_index]

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
        return WindowSet(
            self.windows[mask],
            renumber[self.clip_index[mask]],
            [self.clips[i] for i in keep_clips],
            self.clip_stats[keep_clips],
        )

    def normalized(self, normalization: str) -> np.ndarray:
        """The windows standardised over each actor's clips (``speaker``), each clip (``recording``) or not (``none``)."""
        if normalization == "none":
            return self.windows
        if normalization == "speaker":
            groups = np.array([clip.actor for clip in self.clips])
        elif normalization == "recording":
            groups = np.arange(len(self.clips))
        else:
            raise ValueError(f"normalization must be speaker, recording or none, not {normalization!r}")
        return standardize_groups(self.windows, self.clip_index, self.clip_stats, groups)


def standardize_groups(
    windows: np.ndarray, clip_index: np.ndarray, clip_stats: np.ndarray, groups: np.ndarray
) -> np.ndarray:
    """Windows standardised with the pooled frame statistics of their clip's group.

    Parameters
    ----------
    windows : np.ndarray, shape (n_windows, frames, coeffs)
    clip_index : np.ndarray, shape (n_windows,)
        Clip of each window.
    clip_stats : np.ndarray, shape (n_clips, 3, coeffs)
        Each clip's frame statistics (:meth:`FrameStats.to_array`).
    groups : np.ndarray, shape (n_clips,)
        Group label of each clip: the clips of one group are standardised together.
    """
    mean, std = group_moments(clip_stats, groups)
    return ((windows - mean[clip_index][:, None]) / std[clip_index][:, None]).astype(np.float32)


def group_moments(clip_stats: np.ndarray, groups: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each clip's group mean and standard deviation per coefficient, each shape ``(n_clips, coeffs)``.

    ``clip_stats`` (``(n_clips, 3, coeffs)``, :meth:`FrameStats.to_array`) are pooled over
    the clips sharing a label in ``groups`` (``(n_clips,)``).
    """
    mean, std = np.zeros(clip_stats[:, 1].shape), np.ones(clip_stats[:, 1].shape)
    for group in np.unique(groups):
        members = groups == group
        stats = FrameStats.from_array(clip_stats[members])
        mean[members], std[members] = stats.mean, stats.std
    return mean, std


Degrade = Callable[[np.ndarray, int], np.ndarray]
"""``(signal, index of the clip) -> degraded signal``, both at the analysis rate."""


def extract_features(
    clips: list[RavdessClip],
    features: FeatureConfig,
    vad: VadConfig,
    degrade: Degrade | None = None,
    log: Log = lambda _: None,
) -> ClipFeatures:
    """MFCC frames of every clip's speech segments, found as ``annotate`` finds them.

    ``degrade``, when given, is applied to each whole clip (at the analysis rate)
    before VAD and features.
    """
    frames = []
    for index, clip in enumerate(clips):
        signal = read_audio(clip.path, features.sample_rate)
        if degrade is not None:
            signal = degrade(signal, index)
        segments = [f for _, f in segment_frames([signal], features, vad)]
        if not segments:
            log(f"{clip.path}: no speech found, analysed whole")
            segments = [mfcc(signal, features)]
        frames.append(segments)
    return ClipFeatures(frames, clips)


def cached_features(
    cache: Path | None,
    key: dict,
    clips: list[RavdessClip],
    features: FeatureConfig,
    vad: VadConfig,
    degrade: Degrade | None = None,
    log: Log = lambda _: None,
) -> ClipFeatures:
    """:func:`extract_features`, stored in the folder ``cache`` under a hash of ``key`` and the clips.

    ``key`` must name everything that changes the frames besides the clip files
    (the degradation and its seed); the feature and VAD settings are added here.
    """
    if cache is None:
        return extract_features(clips, features, vad, degrade, log)
    identity = {
        **key,
        "features": features.to_dict(),
        "vad": asdict(vad),
        "clips": [(c.path.name, c.path.stat().st_size) for c in clips],
    }
    digest = hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()[:16]
    path = Path(cache) / f"features-{digest}.npz"
    if path.exists():
        stored = np.load(path)
        segments = np.split(stored["frames"], stored["segment_ends"][:-1])
        per_clip = np.split(np.arange(len(segments)), stored["clip_ends"][:-1])
        return ClipFeatures([[segments[i] for i in ids] for ids in per_clip], clips)
    result = extract_features(clips, features, vad, degrade, log)
    flat = [f for segments in result.frames for f in segments]
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_output(path) as partial, open(partial, "wb") as handle:
        np.savez(
            handle,
            frames=np.concatenate(flat),
            segment_ends=np.cumsum([len(f) for f in flat]),
            clip_ends=np.cumsum([len(segments) for segments in result.frames]),
        )
    return result


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


def evaluate_windows(
    predict: Callable[[np.ndarray], np.ndarray], data: WindowSet, normalization: str = "speaker"
) -> dict:
    """Clip-level metrics of a window classifier on a labelled :class:`WindowSet`,
    its windows normalised as :meth:`WindowSet.normalized` says."""
    predicted = clip_probabilities(predict(data.normalized(normalization)), data).argmax(axis=1)
    return classification_metrics(data.clip_labels, predicted)
