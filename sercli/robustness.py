"""The robustness benchmark: how well models label speakers they never heard, under degraded conditions.

Clean labelled clips are degraded one condition at a time (:data:`sercli.augment.CONDITIONS`),
and every system is scored by leave-speakers-out cross-validation: in fold ``k`` it
was trained on other speakers (clean clips) and labels the fold's test speakers'
clips under each condition. Babble is made of the other test speakers of the same
fold. Two kinds of system are compared side by side:

- :class:`CnnFolds`: the CNN-BiLSTM fold models of :func:`sercli.cross_validation.cross_validate`,
  on MFCC windows normalised over each speaker's clips (``speaker``), each clip
  (``recording``) or not at all (``none``);
- :class:`OpenSmileBaseline`: openSMILE eGeMAPSv02 functionals with a logistic
  regression, standardised per speaker or globally (``opensmile`` and
  ``scikit-learn`` are benchmark extras, imported only here).
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Protocol

import numpy as np

from sercli.augment import CONDITIONS
from sercli.datasets import LabelledClip, clip_groups, label_order
from sercli.evaluation import (
    ClipFeatures,
    Log,
    cached_features,
    classification_metrics,
    clip_probabilities,
    clips_digest,
    iter_clips,
    normalization_groups,
    standardize_groups,
)
from sercli.features import FeatureConfig
from sercli.fusion import FunctionalHead, fit_clip_head, head_log_probabilities
from sercli.vad import VadConfig


@dataclass
class ConditionData:
    """All clips under one condition.

    Attributes
    ----------
    name : str
        The condition (a key of :data:`sercli.augment.CONDITIONS`).
    clips : list of LabelledClip
    signals : list of np.ndarray
        Each clip degraded, mono at ``sample_rate`` Hz.
    sample_rate : int
        In Hz.
    features : ClipFeatures
        Their MFCC frames, found as ``annotate`` finds them.
    digest : str
        A hash of the condition, its seed, the folds (babble depends on them) and the clips:
        names cache files of anything computed from ``signals``.
    """

    name: str
    clips: list[LabelledClip]
    signals: list[np.ndarray]
    sample_rate: int
    features: ClipFeatures
    digest: str


class System(Protocol):
    """A model family scored by the benchmark."""

    name: str

    def predict(
        self, fold: int, train: list[int], test: list[int], clean: ConditionData, data: ConditionData
    ) -> np.ndarray:
        """The emotions (label names) of the clips ``test`` (indices into ``data.clips``) under ``data``'s
        condition, by the model of fold ``fold``, which may use the clean clips ``train`` (indices) of ``clean``."""


def condition_data(
    name: str,
    clips: list[LabelledClip],
    clean_signals: list[np.ndarray],
    folds: list[list[str]],
    features: FeatureConfig,
    vad: VadConfig,
    seed: int = 0,
    cache: Path | None = None,
) -> ConditionData:
    """Degrade every clip by condition ``name``; clip ``i`` draws from a generator seeded by ``(seed, i)``.

    Babble for a clip mixes clips of the other speakers of its fold (``folds``: test speakers of each fold).
    """
    fold_of = {speaker: k for k, speakers in enumerate(folds) for speaker in speakers}
    speakers = clip_groups(clips)
    degrade = CONDITIONS[name]
    signals = []
    for i, speaker in enumerate(speakers):
        rng = np.random.default_rng([seed, i])
        others = [s for s in folds[fold_of[speaker]] if s != speaker]
        candidates = np.flatnonzero(np.isin(speakers, others))
        chosen = rng.choice(candidates, size=min(8, len(candidates)), replace=False) if len(candidates) else []
        signals.append(degrade(clean_signals[i], features.sample_rate, rng, [clean_signals[j] for j in chosen]))
    key = {"condition": name, "seed": seed, "folds": folds}
    extracted = cached_features(cache, key, clips, features, vad, degrade=lambda _, i: signals[i])
    digest = clips_digest({**key, "sample_rate": features.sample_rate}, clips)
    return ConditionData(name, clips, signals, features.sample_rate, extracted, digest)


class CnnFolds:
    """The fold models of a cross-validation (one predict function per fold) on normalised MFCC windows.

    Parameters
    ----------
    name : str
    predictors : list of callable
        Fold ``k``'s ``windows (n, frames, coeffs) -> probabilities (n, n_labels)``.
    labels : list of str
        The fold models' output order (n_labels names): all labels of the corpora they were trained on.
    features : FeatureConfig
        How windows are cut.
    grouping : str
        Which test clips are standardised together: ``speaker``, ``recording`` (each
        clip alone) or ``none`` (see :func:`sercli.evaluation.normalization_groups`), or
        ``mixed``: all of a fold's test clips as one group, as ``annotate``'s ``auto``
        groups one folder of short clips of several speakers.
    priors : list of FrameStats, optional
        Fold ``k``'s prior (:func:`sercli.training.training_prior`); none for models trained without.
    heads : list of FunctionalHead, optional
        Fold ``k``'s functional head (:func:`fold_heads`), fused with its model's output; its test
        functionals are standardised over the same groups as the MFCCs. None: the network alone.
    """

    GROUPINGS: ClassVar[dict[str, str]] = {
        "speaker": "the test clips standardised over their actor",
        "mixed": "a fold's test clips standardised as one group",
        "recording": "each clip standardised alone",
        "none": "no standardisation",
    }
    """Each grouping and how it standardises the test clips, in words."""

    def __init__(
        self,
        name: str,
        predictors: list,
        labels: list[str],
        features: FeatureConfig,
        grouping: str,
        priors=None,
        heads: Sequence[FunctionalHead] | None = None,
    ):
        if grouping not in self.GROUPINGS:
            raise ValueError(f"grouping must be one of {', '.join(self.GROUPINGS)}, not {grouping!r}")
        self.name, self.predictors, self.features, self.grouping = name, predictors, features, grouping
        self.labels = np.asarray(labels)
        self.priors, self.heads = priors or [None] * len(predictors), heads
        self._windows: dict[str, object] = {}

    @property
    def description(self) -> str:
        """How the system labels a test clip, in words (for a benchmark's protocol)."""
        return self.GROUPINGS[self.grouping] + (", fused with the head" if self.heads else "")

    def predict(self, fold, train, test, clean, data):
        if data.digest not in self._windows:
            self._windows[data.digest] = data.features.windows(
                self.features.window_frames, self.features.window_hop_frames
            )
        windows = self._windows[data.digest]
        subset = windows.for_speakers({data.clips[i].group for i in test})
        prior = self.priors[fold]
        if self.grouping == "mixed":
            groups = np.zeros(len(subset.clips), dtype=int)
            x = standardize_groups(subset.windows, subset.clip_index, subset.clip_stats, groups, prior)
        else:
            groups = normalization_groups(subset.clips, self.grouping)
            x = subset.normalized(self.grouping, prior)
        probabilities = clip_probabilities(self.predictors[fold](x), subset)
        if self.heads:
            head = self.heads[fold]
            probabilities = head.fused(probabilities, head_log_probabilities(head, subset.functionals, groups))
        return self.labels[probabilities.argmax(axis=1)]


def fold_heads(variants: Sequence[ClipFeatures], folds: list[list[str]]) -> list[FunctionalHead]:
    """Each fold's functional head, fitted as ``sercli train`` fits it (:func:`sercli.fusion.fit_clip_head`)
    on the clips of every speaker not tested in the fold, clean and degraded.

    Parameters
    ----------
    variants : sequence of ClipFeatures
        The clean clips, then their degraded training copies (:func:`sercli.training.degraded_variants`
        with the fold models' own folds): the same clips in the same order, of every corpus the fold
        models were trained on.
    folds : list of list of str
        Test speakers of each fold (:attr:`sercli.datasets.LabelledClip.group`).
    """
    clips = variants[0].clips
    speakers, labels = clip_groups(clips), label_order({clip.label for clip in clips})
    trained = [np.flatnonzero(~np.isin(speakers, test_speakers)) for test_speakers in folds]
    return [
        fit_clip_head([v.functionals[rows] for v in variants], [clips[i] for i in rows], labels) for rows in trained
    ]


class OpenSmileBaseline:
    """openSMILE eGeMAPSv02 functionals + logistic regression, trained on clean clips.

    ``per_speaker``: features are standardised over each speaker's clips (in
    training and in test, under the test's condition), else with the training
    set's global statistics.
    """

    def __init__(self, name: str, per_speaker: bool, cache: Path | None = None):
        self.name, self.per_speaker, self.cache = name, per_speaker, cache
        self._functionals: dict[str, np.ndarray] = {}

    def functionals(self, data: ConditionData) -> np.ndarray:
        """eGeMAPSv02 functionals of every clip, shape ``(n_clips, 88)``, cached under ``data.digest``."""
        if data.digest not in self._functionals:
            path = None if self.cache is None else Path(self.cache) / f"egemaps-{_slug(data.name)}-{data.digest}.npy"
            if path is not None and path.exists():
                self._functionals[data.digest] = np.load(path)
            else:
                # openSMILE's native library corrupts memory beside TensorFlow's or LiteRT's in one
                # process (malloc aborts seen here): it runs in a fresh process of its own.
                with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
                    values = pool.submit(egemaps_functionals, data.signals, data.sample_rate).result()
                self._functionals[data.digest] = values
                if path is not None:
                    path.parent.mkdir(parents=True, exist_ok=True)
                    np.save(path, values)
        return self._functionals[data.digest]

    def _standardized(self, values: np.ndarray, clips: list[LabelledClip], reference: np.ndarray) -> np.ndarray:
        if not self.per_speaker:
            return (values - reference.mean(axis=0)) / (reference.std(axis=0) + 1e-9)
        groups = clip_groups(clips)
        out = np.empty_like(values)
        for group in np.unique(groups):
            rows = groups == group
            out[rows] = (values[rows] - values[rows].mean(axis=0)) / (values[rows].std(axis=0) + 1e-9)
        return out

    def predict(self, fold, train, test, clean, data):
        from sklearn.linear_model import LogisticRegression

        train_x = self.functionals(clean)[train]
        train_clips = [clean.clips[i] for i in train]
        test_clips = [data.clips[i] for i in test]
        x_train = self._standardized(train_x, train_clips, train_x)
        x_test = self._standardized(self.functionals(data)[test], test_clips, train_x)
        model = LogisticRegression(max_iter=3000, C=0.1, class_weight="balanced")
        return model.fit(x_train, [clip.label for clip in train_clips]).predict(x_test)


def egemaps_functionals(signals: Sequence[np.ndarray], sample_rate: int) -> np.ndarray:
    """openSMILE eGeMAPSv02 functionals of each signal, shape ``(n_signals, 88)``."""
    import opensmile

    smile = opensmile.Smile(opensmile.FeatureSet.eGeMAPSv02, opensmile.FeatureLevel.Functionals)
    return np.stack([smile.process_signal(signal, sample_rate).to_numpy()[0] for signal in signals])


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in name)


def robustness_table(
    systems: Sequence[System],
    clips: list[LabelledClip],
    folds: list[list[str]],
    conditions: Sequence[str],
    features: FeatureConfig,
    vad: VadConfig,
    seed: int = 0,
    cache: Path | None = None,
    log: Log = lambda _: None,
    labels: list[str] | None = None,
) -> dict[str, dict[str, dict]]:
    """Score every system under every condition by leave-speakers-out cross-validation.

    Parameters
    ----------
    folds : list of list of str
        Test speakers of each fold; fold ``k``'s systems were trained on the other speakers.
    conditions : sequence of str
        Keys of :data:`sercli.augment.CONDITIONS`.
    labels : list of str, optional
        Every label a system may answer, in the metrics' order (default: the clips' own,
        :func:`sercli.datasets.label_order`); a label the clips lack has no recall.

    Returns
    -------
    dict
        ``{system name: {condition: metrics}}``, metrics as
        :func:`sercli.evaluation.classification_metrics` gives them over all folds' test clips,
        plus ``fold_unweighted_accuracy`` (each fold's UA, in fold order).
    """
    clean_signals = list(iter_clips(clips, features.sample_rate))
    clean = condition_data("clean", clips, clean_signals, folds, features, vad, seed, cache)
    speakers = clip_groups(clips)
    labels = labels or label_order({clip.label for clip in clips})
    index = {label: i for i, label in enumerate(labels)}
    table: dict[str, dict[str, dict]] = {system.name: {} for system in systems}
    for condition in conditions:
        data = (
            clean
            if condition == "clean"
            else condition_data(condition, clips, clean_signals, folds, features, vad, seed, cache)
        )
        for system in systems:
            true, predicted = [], []
            for k, test_speakers in enumerate(folds):
                test = np.flatnonzero(np.isin(speakers, test_speakers))
                train = np.flatnonzero(~np.isin(speakers, test_speakers))
                predicted.append(np.array([index[label] for label in system.predict(k, train, test, clean, data)]))
                true.append(np.array([index[clips[i].label] for i in test]))
            metrics = classification_metrics(np.concatenate(true), np.concatenate(predicted), labels)
            metrics["fold_unweighted_accuracy"] = [
                classification_metrics(t, p, labels)["unweighted_accuracy"] for t, p in zip(true, predicted)
            ]
            table[system.name][condition] = metrics
            log(f"{condition:14s} {system.name}: UA {table[system.name][condition]['unweighted_accuracy']:.3f}")
    return table


def format_table(table: dict[str, dict[str, dict]], per_class: bool = False) -> str:
    """A Markdown table: one row per condition, one column per system, clip-level UA."""
    systems = list(table)
    conditions = list(next(iter(table.values())))
    lines = ["| condition | " + " | ".join(systems) + " |", "|---" * (len(systems) + 1) + "|"]
    for condition in conditions:
        cells = [f"{table[s][condition]['unweighted_accuracy']:.3f}" for s in systems]
        lines.append(f"| {condition} | " + " | ".join(cells) + " |")
    if per_class:
        for system in systems:
            lines += ["", f"per-class recall, {system}:", ""]
            labels = list(next(iter(table[system].values()))["per_class_recall"])
            lines += ["| condition | " + " | ".join(labels) + " |", "|---" * (len(labels) + 1) + "|"]
            for condition, metrics in table[system].items():
                recall = metrics["per_class_recall"]
                cells = ("-" if recall[label] is None else f"{recall[label]:.2f}" for label in labels)
                lines.append(f"| {condition} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def card_entry(table: dict[str, dict[str, dict]], protocol: str, command: str) -> dict:
    """The table as a model card stores it (``metrics.robustness_<N>fold``, shown by ``sercli models``).

    Parameters
    ----------
    table : dict
        :func:`robustness_table`'s result.
    protocol, command : str
        How the figures were made, in words and as the command that makes them again.

    Returns
    -------
    dict
        ``protocol``, ``command``, ``unweighted_accuracy`` (``{system: {condition: UA}}``) and, when the
        table has clean clips, ``clean_recall`` (``{system: {label: recall}}``, None for a label never
        tested); figures rounded to 4 places.
    """

    def rounded(value: float | None) -> float | None:
        return None if value is None else round(value, 4)

    entry = {
        "protocol": protocol,
        "command": command,
        "unweighted_accuracy": {
            system: {condition: rounded(m["unweighted_accuracy"]) for condition, m in rows.items()}
            for system, rows in table.items()
        },
    }
    if all("clean" in rows for rows in table.values()):
        entry["clean_recall"] = {
            system: {label: rounded(r) for label, r in rows["clean"]["per_class_recall"].items()}
            for system, rows in table.items()
        }
    return entry
