"""Evaluating a classifier on labelled clips (:class:`sercli.datasets.LabelledClip`), at clip level.

Clips go through the same code as annotation (resample to 16 kHz, :func:`sercli.vad.stream_speech`,
:func:`sercli.features.mfcc`, :func:`sercli.features.mfcc_windows`, :func:`sercli.prosody.segment_functionals`),
so evaluation, training and inference cannot drift. A clip's prediction is the mean of its windows' probabilities,
fused with its functional head's (:mod:`sercli.fusion`) when the model has one; a clip's speech is one segment
for the head.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from sercli.audio import AudioError, read_audio
from sercli.datasets import LabelledClip, check_known_labels, clip_groups, label_order, load_clips, natural_key
from sercli.features import FeatureConfig, mfcc, mfcc_windows
from sercli.files import path_text, recording_key
from sercli.fusion import FunctionalHead, calibration_error, head_log_probabilities
from sercli.groups import SpeakerOf, plan_groups
from sercli.normalization import FrameStats
from sercli.prosody import functional_names, segment_functionals
from sercli.vad import VadConfig, stream_speech
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
    clips : list of LabelledClip
    functionals : np.ndarray, shape (n_clips, n_functionals), float32
        Each clip's functionals (:func:`sercli.prosody.segment_functionals`), its
        speech taken as one segment.
    """

    frames: list[list[np.ndarray]]
    clips: list[LabelledClip]
    functionals: np.ndarray

    @property
    def stats(self) -> np.ndarray:
        """Each clip's frame statistics (:meth:`FrameStats.to_array`), shape ``(n_clips, 3, n_mfcc)``."""
        return np.stack([FrameStats.of(np.concatenate(segments)).to_array() for segments in self.frames])

    def windows(self, window_frames: int, hop_frames: int, labels: list[str] | None = None) -> WindowSet:
        """Model input windows of every segment, cut as :func:`sercli.features.mfcc_windows` cuts them.

        ``labels`` is the class order (default: :func:`sercli.datasets.label_order` of the clips' labels).

        Raises
        ------
        sercli.datasets.DatasetError
            If a clip's label is not in ``labels``.
        """
        labels = label_order({c.label for c in self.clips}) if labels is None else list(labels)
        check_known_labels(self.clips, labels)
        cut = [[mfcc_windows(f, window_frames, hop_frames) for f in segments] for segments in self.frames]
        counts = [sum(len(w) for w in clip) for clip in cut]
        return WindowSet(
            np.concatenate([w for clip in cut for w in clip]),
            np.repeat(np.arange(len(self.clips)), counts),
            self.clips,
            self.stats,
            labels,
            self.functionals,
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
    clips : list of LabelledClip
    clip_stats : np.ndarray, shape (n_clips, 3, n_mfcc)
        Each clip's :class:`FrameStats` as an array, for normalising over groups of clips.
    labels : list of str
        The class order: label indices point into it.
    functionals : np.ndarray, shape (n_clips, n_functionals)
        Each clip's functionals (:attr:`ClipFeatures.functionals`).
    """

    windows: np.ndarray
    clip_index: np.ndarray
    clips: list[LabelledClip]
    clip_stats: np.ndarray
    labels: list[str]
    functionals: np.ndarray

    @property
    def clip_labels(self) -> np.ndarray:
        """Label index of each clip, shape ``(n_clips,)``."""
        index = {label: i for i, label in enumerate(self.labels)}
        return np.array([index[clip.label] for clip in self.clips], dtype=np.int64)

    def for_speakers(self, speakers: set[str] | list[str]) -> WindowSet:
        """The windows of the clips of the given speakers (:attr:`LabelledClip.group`) only."""
        speakers = set(speakers)
        keep_clips = [i for i, clip in enumerate(self.clips) if clip.group in speakers]
        renumber = np.full(len(self.clips), -1)
        renumber[keep_clips] = np.arange(len(keep_clips))
        mask = np.isin(self.clip_index, keep_clips)
        return WindowSet(
            self.windows[mask],
            renumber[self.clip_index[mask]],
            [self.clips[i] for i in keep_clips],
            self.clip_stats[keep_clips],
            self.labels,
            self.functionals[keep_clips],
        )

    def normalized(
        self, normalization: str, prior: FrameStats | None = None, speaker_of: SpeakerOf | None = None
    ) -> np.ndarray:
        """The windows standardised over the groups of clips :func:`normalization_groups` gives, with
        ``prior`` (a model's :attr:`sercli.model.ModelCard.prior`) added to every group's statistics;
        ``none``: as they are."""
        if normalization == "none":
            return self.windows
        groups = normalization_groups(self.clips, normalization, speaker_of)
        return standardize_groups(self.windows, self.clip_index, self.clip_stats, groups, prior)


def normalization_groups(
    clips: list[LabelledClip], normalization: str, speaker_of: SpeakerOf | None = None
) -> np.ndarray | None:
    """Which clips are standardised together, shape ``(n_clips,)``; ``None`` for ``none`` (no group).

    ``speaker``: each clip's :attr:`LabelledClip.group` (its speaker, else its
    recording), as training groups validation clips; ``recording``: each clip alone;
    ``auto`` and ``folder``: as ``annotate`` groups the clips' recordings
    (:func:`sercli.groups.plan_groups`; the parts of one recording fall in its group),
    the speakers being ``speaker_of``'s or else the clips' own.
    """
    if normalization == "none":
        return None
    if normalization == "speaker":
        return clip_groups(clips)
    if normalization == "recording":
        return np.arange(len(clips))
    if normalization not in ("auto", "folder"):
        raise ValueError(f"normalization must be auto, speaker, folder, recording or none, not {normalization!r}")
    if speaker_of is None:
        known = {recording_key(clip.path): clip.speaker for clip in clips if clip.speaker is not None}
        speaker_of = lambda path: known.get(recording_key(path))
    paths = list(dict.fromkeys(clip.path for clip in clips))
    group_of = {
        recording_key(member.source): group.name
        for group in plan_groups(paths, normalization, speaker_of)
        for member in group.members
    }
    return np.array([group_of[recording_key(clip.path)] for clip in clips], dtype=object)


def standardize_groups(
    windows: np.ndarray,
    clip_index: np.ndarray,
    clip_stats: np.ndarray,
    groups: np.ndarray,
    prior: FrameStats | None = None,
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
    prior : FrameStats, optional
        Pseudo-frames added to every group's statistics.
    """
    mean, std = group_moments(clip_stats, groups, prior)
    return ((windows - mean[clip_index][:, None]) / std[clip_index][:, None]).astype(np.float32)


def group_moments(
    clip_stats: np.ndarray, groups: np.ndarray, prior: FrameStats | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Each clip's group mean and standard deviation per coefficient, each shape ``(n_clips, coeffs)``.

    ``clip_stats`` (``(n_clips, 3, coeffs)``, :meth:`FrameStats.to_array`) are pooled over
    the clips sharing a label in ``groups`` (``(n_clips,)``), plus ``prior``'s pseudo-frames.
    """
    mean, std = np.zeros(clip_stats[:, 1].shape), np.ones(clip_stats[:, 1].shape)
    prior = prior if prior is not None else FrameStats.empty(clip_stats.shape[2])
    for group in np.unique(groups):
        members = groups == group
        stats = FrameStats.from_array(clip_stats[members]) + prior
        mean[members], std[members] = stats.mean, stats.std
    return mean, std


Degrade = Callable[[np.ndarray, int], np.ndarray]
"""``(signal, index of the clip) -> degraded signal``, both at the analysis rate."""


def read_clip(clip: LabelledClip, sample_rate: int, recording: np.ndarray | None = None) -> np.ndarray:
    """A clip's signal, mono at ``sample_rate`` Hz: its ``start_s``..``end_s`` part when it has one.

    ``recording``, when given, is the whole recording already decoded at that rate.

    Raises
    ------
    ValueError
        If the labelled part lies beyond the end of the recording.
    """
    signal = read_audio(clip.path, sample_rate) if recording is None else recording
    if clip.start_s is None:
        return signal
    start, end = round(clip.start_s * sample_rate), round(clip.end_s * sample_rate)
    if start >= len(signal):
        raise ValueError(f"{clip.path}: start_s {clip.start_s} is past the end ({len(signal) / sample_rate:.2f} s)")
    return signal[start:end]


def iter_clips(clips: list[LabelledClip], sample_rate: int) -> Iterator[np.ndarray]:
    """Every clip's signal in turn (:func:`read_clip`), decoding a recording once for adjacent parts of it."""
    recording: tuple[Path | None, np.ndarray | None] = (None, None)
    for clip in clips:
        if recording[0] != clip.path:
            recording = (clip.path, read_audio(clip.path, sample_rate))
        yield read_clip(clip, sample_rate, recording[1])


class ClipError(ValueError):
    """A clip that cannot be read; ``index`` is its position in the list, the message names its file
    and the cause."""

    def __init__(self, index: int, message: str):
        super().__init__(message)
        self.index = index


def extract_features(
    clips: list[LabelledClip],
    features: FeatureConfig,
    vad: VadConfig,
    degrade: Degrade | None = None,
    log: Log = lambda _: None,
) -> ClipFeatures:
    """MFCC frames of every clip's speech segments, found as ``annotate`` finds them.

    ``degrade``, when given, is applied to each whole clip (at the analysis rate)
    before VAD and features.

    Raises
    ------
    ClipError
        For the first clip that cannot be decoded.
    """
    frames, functionals = [], []
    signals = iter_clips(clips, features.sample_rate)
    for index, clip in enumerate(clips):
        try:
            signal = next(signals)
        except AudioError as error:
            raise ClipError(index, f"{path_text(clip.path)}: {error}") from None
        if degrade is not None:
            signal = degrade(signal, index)
        speech = [samples for _, samples in stream_speech([signal], features.sample_rate, vad)]
        if not speech:
            log(f"{clip.path}: no speech found, analysed whole")
            speech = [signal]
        segments = [mfcc(samples, features) for samples in speech]
        frames.append(segments)
        functionals.append(segment_functionals(np.concatenate(speech), features.sample_rate, np.concatenate(segments)))
    return ClipFeatures(frames, clips, np.array(functionals, dtype=np.float32).reshape(len(clips), -1))


def clips_digest(key: dict, clips: list[LabelledClip]) -> str:
    """A 16-hex-digit hash of ``key`` and the clips (file names, sizes, parts): a cache file's name."""
    identity = {
        **key,
        "clips": [(c.path.name, c.path.stat().st_size) for c in clips],
        "parts": [(c.start_s, c.end_s) for c in clips if c.start_s is not None],
    }
    return hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()[:16]


def cached_features(
    cache: Path | None,
    key: dict,
    clips: list[LabelledClip],
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
    functionals = functional_names(features.n_mfcc)
    digest = clips_digest(
        {**key, "features": features.to_dict(), "vad": asdict(vad), "functionals": functionals}, clips
    )
    path = Path(cache) / f"features-{digest}.npz"
    if path.exists():
        stored = np.load(path)
        segments = np.split(stored["frames"], stored["segment_ends"][:-1])
        per_clip = np.split(np.arange(len(segments)), stored["clip_ends"][:-1])
        return ClipFeatures([[segments[i] for i in ids] for ids in per_clip], clips, stored["functionals"])
    result = extract_features(clips, features, vad, degrade, log)
    flat = [f for segments in result.frames for f in segments]
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_output(path) as partial, open(partial, "wb") as handle:
        np.savez(
            handle,
            frames=np.concatenate(flat),
            segment_ends=np.cumsum([len(f) for f in flat]),
            clip_ends=np.cumsum([len(segments) for segments in result.frames]),
            functionals=result.functionals,
        )
    return result


def classification_metrics(true: np.ndarray, predicted: np.ndarray, labels: list[str]) -> dict:
    """Accuracy, unweighted accuracy (mean per-class recall), per-class recall and confusion.

    Parameters
    ----------
    true, predicted : np.ndarray of int, shape (n,)
        Class indices into ``labels``.
    labels : list of str

    Returns
    -------
    dict
        ``accuracy``, ``unweighted_accuracy``, ``per_class_recall`` (label -> recall,
        ``None`` for a class absent from ``true``), ``confusion`` (rows true, columns
        predicted, as nested lists) and ``n``.
    """
    n_classes = len(labels)
    confusion = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(confusion, (true, predicted), 1)
    support = confusion.sum(axis=1)
    recall = np.divide(np.diag(confusion), support, out=np.full(n_classes, np.nan), where=support > 0)
    return {
        "n": len(true),
        "accuracy": float(np.mean(true == predicted)) if len(true) else math.nan,
        "unweighted_accuracy": float(np.nanmean(recall)) if support.any() else math.nan,
        "labels": list(labels),
        "per_class_recall": {labels[i]: (None if np.isnan(r) else float(r)) for i, r in enumerate(recall)},
        "confusion": confusion.tolist(),
    }


def clip_probabilities(window_probabilities: np.ndarray, data: WindowSet) -> np.ndarray:
    """Mean window probability per clip, shape ``(n_clips, n_labels)``."""
    sums = np.zeros((len(data.clips), window_probabilities.shape[1]))
    np.add.at(sums, data.clip_index, window_probabilities)
    return sums / np.bincount(data.clip_index, minlength=len(data.clips))[:, None]


def predict_clips(
    predict: Callable[[np.ndarray], np.ndarray],
    data: WindowSet,
    normalization: str,
    prior: FrameStats | None = None,
    speaker_of: SpeakerOf | None = None,
    head: FunctionalHead | None = None,
) -> np.ndarray:
    """Each clip's probabilities, shape ``(n_clips, n_labels)``: the mean of its windows' (standardised
    as :meth:`WindowSet.normalized` does), fused with ``head``'s on its functionals (standardised over the
    same groups; over none for ``none``) when given (:func:`sercli.fusion.fuse`)."""
    probabilities = clip_probabilities(predict(data.normalized(normalization, prior, speaker_of)), data)
    if head is None:
        return probabilities
    groups = normalization_groups(data.clips, normalization, speaker_of)
    return head.fused(probabilities, head_log_probabilities(head, data.functionals, groups))


def evaluate_windows(
    predict: Callable[[np.ndarray], np.ndarray],
    data: WindowSet,
    normalization: str = "speaker",
    prior: FrameStats | None = None,
) -> dict:
    """Clip-level metrics of a window classifier on a labelled :class:`WindowSet`,
    its windows normalised as :meth:`WindowSet.normalized` says."""
    predicted = clip_probabilities(predict(data.normalized(normalization, prior)), data).argmax(axis=1)
    return classification_metrics(data.clip_labels, predicted, data.labels)


def bootstrap_ua_interval(
    true: np.ndarray,
    predicted: np.ndarray,
    groups: np.ndarray | None = None,
    resamples: int = 2000,
    seed: int = 0,
) -> tuple[float, float]:
    """95 % bootstrap (percentile) interval of the unweighted accuracy.

    Parameters
    ----------
    true, predicted : np.ndarray of int, shape (n,)
        Class indices.
    groups : np.ndarray, shape (n,), optional
        Speaker of each clip: whole speakers are resampled (clips of one speaker
        are not independent, so resampling clips would give too narrow an
        interval). ``None``: clips are resampled.
    resamples : int
    seed : int

    Returns
    -------
    (float, float)
        The 2.5th and 97.5th percentiles of the resampled UA.
    """
    n_classes = int(max(true.max(), predicted.max())) + 1
    units = np.arange(len(true)) if groups is None else np.unique(groups, return_inverse=True)[1]
    n_units = units.max() + 1
    # each unit's confusion counts: a resample's confusion is the sum over the units drawn
    per_unit = np.zeros((n_units, n_classes * n_classes))
    np.add.at(per_unit, (units, true * n_classes + predicted), 1)
    rng = np.random.default_rng(seed)
    confusions = np.concatenate(
        [
            np.stack([np.bincount(d, minlength=n_units) for d in rng.integers(0, n_units, (chunk, n_units))]) @ per_unit
            for chunk in np.diff(np.r_[0:resamples:250, resamples])
        ]
    ).reshape(resamples, n_classes, n_classes)
    support = confusions.sum(axis=2)
    recall = np.divide(
        np.diagonal(confusions, axis1=1, axis2=2), support, out=np.full(support.shape, np.nan), where=support > 0
    )
    ua = np.nanmean(recall, axis=1)
    low, high = np.percentile(ua, [2.5, 97.5])
    return float(low), float(high)


def metrics_with_interval(
    true: np.ndarray, predicted: np.ndarray, clips: list[LabelledClip], labels: list[str], seed: int = 0
) -> dict:
    """:func:`classification_metrics` of clips ``clips`` with a 95 % bootstrap interval on UA
    (``ua_ci95``; ``ua_ci95_resampled`` says ``speakers`` when every clip has one and whole
    speakers were resampled, else ``clips``)."""
    metrics = classification_metrics(true, predicted, labels)
    speakers = [clip.speaker for clip in clips]
    groups = np.array(speakers, dtype=object) if all(s is not None for s in speakers) else None
    metrics["ua_ci95"] = list(bootstrap_ua_interval(true, predicted, groups, seed=seed)) if len(true) else None
    metrics["ua_ci95_resampled"] = "speakers" if groups is not None else "clips"
    if groups is not None and len(set(speakers)) < 2:  # resampling one speaker says nothing about others
        metrics["ua_ci95"], metrics["ua_ci95_resampled"] = None, "one speaker: no interval"
    return metrics


def clip_key(clip: LabelledClip) -> tuple:
    """What makes two labelled rows the same input: recording, part and speaker (not the label)."""
    return (clip.path, clip.start_s, clip.end_s, clip.speaker)


def unique_clips(clips: list[LabelledClip]) -> list[LabelledClip]:
    """The clips without repeats (:func:`clip_key`), in first-seen order: features are computed and
    scored once per input, however many rows name it."""
    first: dict[tuple, LabelledClip] = {}
    for clip in clips:
        first.setdefault(clip_key(clip), clip)
    return list(first.values())


def evaluate_clips(
    predict: Callable[[np.ndarray], np.ndarray],
    data: WindowSet,
    normalization: str = "speaker",
    by_speaker: bool = False,
    seed: int = 0,
    prior: FrameStats | None = None,
    speaker_of: SpeakerOf | None = None,
    rows: list[LabelledClip] | None = None,
    head: FunctionalHead | None = None,
) -> dict:
    """:func:`classification_metrics` of a window classifier on labelled clips, with a 95 % bootstrap
    interval on UA (``ua_ci95``; speakers resampled when the clips have speakers) and, with
    ``by_speaker``, the metrics of each speaker's clips (``by_speaker``: speaker -> metrics).

    ``rows``, when given, are the labelled rows scored, ``data`` holding their :func:`unique_clips`:
    each row counts with its own label and its clip's prediction. ``mean_confidence`` and
    ``calibration_error`` (:func:`sercli.fusion.calibration_error`) say how far the confidence
    column can be trusted as a probability of being right."""
    probabilities = predict_clips(predict, data, normalization, prior, speaker_of, head)
    true = data.clip_labels
    if rows is not None:
        position = {clip_key(clip): i for i, clip in enumerate(data.clips)}
        probabilities = probabilities[[position[clip_key(row)] for row in rows]]
        true = np.array([data.labels.index(row.label) for row in rows])
    predicted = probabilities.argmax(axis=1)
    rows = data.clips if rows is None else rows
    metrics = metrics_with_interval(true, predicted, rows, data.labels, seed)
    metrics["mean_confidence"] = float(probabilities.max(axis=1).mean())
    metrics["calibration_error"] = calibration_error(probabilities, true)
    if by_speaker:
        of = clip_groups(rows)
        metrics["by_speaker"] = {
            speaker: classification_metrics(true[of == speaker], predicted[of == speaker], data.labels)
            for speaker in sorted(set(of), key=natural_key)
        }
    return metrics


def evaluate_source(
    source: str | Path,
    classifier,
    *,
    layout: str | None = None,
    normalization: str = "auto",
    speaker_of: SpeakerOf | None = None,
    by_speaker: bool = False,
    log: Log = lambda _: None,
) -> dict:
    """Score a classifier on a labels table or corpus folder, as ``sercli evaluate`` does.

    A table with a ``split`` column is scored on its ``test`` rows. Each distinct clip is
    decoded and classified once, however many rows name it (:func:`unique_clips`); each row
    counts with its own label.

    Parameters
    ----------
    classifier : sercli.model.Classifier
    normalization : str
        For a model trained on normalised MFCCs (else ignored): as :func:`evaluate_clips`.

    Returns
    -------
    dict
        :func:`evaluate_clips`'s metrics, and ``warnings``: one line each for what makes the
        figures mean less than they seem (test speakers the model was trained on).

    Raises
    ------
    ValueError
        One line: an unknown label, or a clip that cannot be decoded (naming the table's row).
    """
    source = Path(source)
    clips, _ = load_clips(source, layout)
    try:
        check_known_labels(clips, classifier.card.labels)
    except ValueError as error:
        raise ValueError(f"{source}: {error}") from None
    if any(clip.split == "test" for clip in clips):
        clips = [clip for clip in clips if clip.split == "test"]
        log(f"evaluating the {len(clips)} clips of the test split")
    config = classifier.card.feature_config
    unique = unique_clips(clips)
    try:
        data = extract_features(unique, config, VadConfig(), log=log)
    except ClipError as error:
        row = clips.index(unique[error.index]) + 1
        raise ValueError(f"{source} row {row}: {error}" if source.is_file() else str(error)) from None
    metrics = evaluate_clips(
        classifier.predict_proba,
        data.windows(config.window_frames, config.window_hop_frames, classifier.card.labels),
        "none" if classifier.card.normalization == "none" else normalization,
        by_speaker=by_speaker,
        prior=classifier.card.prior,
        speaker_of=speaker_of,
        rows=clips,
        head=classifier.card.head,
    )
    metrics["warnings"] = _evaluation_warnings(clips, classifier.card, metrics)
    return metrics


def _evaluation_warnings(clips: list[LabelledClip], card, metrics: dict) -> list[str]:
    """What makes an evaluation's figures mean less than they seem."""
    warnings = []
    trained = card.training.get("training_speakers", card.training.get("training_actors"))
    if isinstance(trained, list):
        known = {str(s).lstrip("0") for s in trained}
        tested = sorted({c.speaker for c in clips if c.speaker is not None}, key=natural_key)
        seen = [s for s in tested if s.lstrip("0") in known]
        if seen:
            warnings.append(
                f"{len(seen)} of the {len(tested)} test speakers ({', '.join(seen[:8])}"
                f"{', ...' if len(seen) > 8 else ''}) trained the model: these figures overstate it on new speakers"
            )
    if metrics["ua_ci95_resampled"].startswith("one speaker"):
        warnings.append("every clip is of one speaker: no interval, and the figures may not hold for other speakers")
    return warnings
