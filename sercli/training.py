"""Training the emotion model on labelled clips (:mod:`sercli.datasets`): from scratch or fine-tuned.

Features come from :mod:`sercli.evaluation`, which uses the annotation code
itself. Every split is by speaker (by recording where speakers are unknown):
validation and test speakers are never heard in training. Training is
multi-condition (clean clips and randomly degraded copies, :mod:`sercli.augment`)
and, by default, on MFCCs standardised over groups of a speaker's clips
(:mod:`sercli.normalization`), as ``annotate`` standardises a recording or a folder.

This module trains one network (:func:`fit`) and fits what goes beside it (:func:`training_head`,
:func:`training_prior`); :mod:`sercli.cross_validation` runs it fold by fold, and :mod:`sercli.recipe`
is a whole ``sercli train`` run.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from sercli.architecture import build_cnn_bilstm, fine_tuning_model
from sercli.augment import AugmentConfig, random_degradation
from sercli.datasets import LabelledClip, balanced_weights, clip_groups, natural_key
from sercli.evaluation import ClipFeatures, Log, WindowSet, cached_features, evaluate_windows, group_moments, iter_clips
from sercli.features import FeatureConfig
from sercli.fusion import FunctionalHead, fit_clip_head
from sercli.model import ModelCard, ModelError
from sercli.normalization import PRIOR_FRAMES, FrameStats
from sercli.vad import VadConfig


@dataclass(frozen=True)
class TrainConfig:
    """Hyper-parameters of one training run.

    Attributes
    ----------
    epochs : int
        Maximum number of epochs (the exact number when there is no validation set).
        120: with windows of 2.5 s every 0.5 s the 5-fold RAVDESS runs were best at
        epochs 59-97 (docs/training.md).
    patience : int
        Epochs without a better validation UA before stopping (best weights are kept).
    min_epochs : int
        Epochs before early stopping starts watching: with two validation speakers the
        UA of the first epochs is noise, and a chance-level first epoch once stopped
        a multi-condition run at epoch 7.
    batch_size : int
    learning_rate : float or None
        Adam's initial learning rate; None: 1e-3 training afresh,
        :data:`FINE_TUNING_LEARNING_RATE` fine-tuning.
    seed : int
        Seeds weights, shuffling, degradations and normalisation groups.
    normalization : str
        ``speaker``: windows are standardised with the MFCC statistics of a group of
        clips drawn anew each epoch (:meth:`_TrainingBatches.groups`: a whole speaker,
        one clip, a few of a speaker's clips, or clips of several speakers pooled),
        so the model sees the groups ``annotate`` will give it; validation and test
        clips are standardised over their speaker. ``none``: raw MFCCs (the model's
        input layer still applies the training set's global statistics).
    prior_frames : int
        With ``speaker`` normalisation: pseudo-frames of the training clips' pooled
        statistics added to every group's statistics (:func:`training_prior`), in
        training as in annotation; 0 for none.
    variants : int
        Degraded copies of each clip (:func:`sercli.augment.random_degradation`) for
        multi-condition training; each epoch takes half of the clips clean and the
        other half as one of their copies at random. 0: clean clips only.
    spec_augment : bool
        SpecAugment masks (two time masks of up to 10 frames, one of up to 4
        coefficients) on training windows.
    window_hop_frames : int
        Frames between the starts of training windows (20 = 0.5 s at the 25 ms hop):
        denser than at inference, so overlapping windows give more examples. Validation
        and test windows are cut with the features' own hop, as ``annotate`` cuts them.
    freeze_convolutions : bool
        When fine-tuning (:func:`fit` with a base model): keep the base model's
        convolution blocks as trained.
    ema_momentum : float or None
        Keep an exponential moving average of the weights, updated after every batch
        with this momentum (Polyak averaging): validation, early stopping and the
        returned model use the averaged weights. None: the weights as trained. Default 0.99:
        on 2-fold leave-actors-out RAVDESS it gained 3 points (docs/training.md).
    """

    epochs: int = 120
    patience: int = 24
    min_epochs: int = 40
    batch_size: int = 64
    learning_rate: float | None = None
    seed: int = 0
    normalization: str = "speaker"
    prior_frames: int = PRIOR_FRAMES
    variants: int = 4
    spec_augment: bool = True
    window_hop_frames: int = 20
    freeze_convolutions: bool = False
    ema_momentum: float | None = 0.99

    def __post_init__(self) -> None:
        if self.normalization not in TRAIN_NORMALIZATIONS:
            raise ValueError(
                f"training normalization must be one of {TRAIN_NORMALIZATIONS}, not {self.normalization!r}"
            )


TRAIN_NORMALIZATIONS = ("speaker", "none")


LEARNING_RATE = 1e-3
"""Adam's learning rate training afresh."""


FINE_TUNING_LEARNING_RATE = 3e-4
"""Adam's learning rate when fine-tuning a trained model: a third of training afresh, so
the first epochs on a few hundred clips do not undo what the model knows."""


def learning_rate(config: TrainConfig, base: BaseModel | None) -> float:
    """Adam's learning rate: ``config``'s, else the default for training afresh or fine-tuning ``base``."""
    return config.learning_rate or (LEARNING_RATE if base is None else FINE_TUNING_LEARNING_RATE)


@dataclass
class BaseModel:
    """A trained model to fine-tune, with its card."""

    model: object
    """The ``keras.Model``."""
    card: ModelCard
    path: Path

    @classmethod
    def load(cls, path: str | Path) -> BaseModel:
        """Load a ``.keras`` model and its card.

        Raises
        ------
        ModelError
            If either is missing or unusable.
        """
        from sercli.model import KerasClassifier, load_classifier

        classifier = load_classifier(path)
        if not isinstance(classifier, KerasClassifier):
            raise ModelError(f"fine-tuning starts from a .keras model, not {path}")
        return cls(classifier.model, classifier.card, Path(path))


def fit(
    train: list[WindowSet],
    validation: WindowSet | None,
    config: TrainConfig,
    log: Log = lambda _: None,
    base: BaseModel | None = None,
):
    """Train a CNN-BiLSTM: a fresh one, or a copy of ``base`` (fine-tuning).

    Parameters
    ----------
    train : list of WindowSet
        The training clips' windows, clean first, then each degraded variant; all
        hold the same clips in the same order, with the same labels (the outputs).
    validation : WindowSet or None
        Clean windows of other speakers, cut as ``annotate`` cuts them. With it,
        training stops after ``config.patience`` epochs without a better clip-level
        validation UA and the best epoch's weights are kept; without it, training
        runs ``config.epochs`` epochs.
    base : BaseModel, optional
        Start from this model's weights; the softmax layer keeps its weights for the
        labels the base model has and starts afresh for the others
        (:func:`sercli.architecture.fine_tuning_model`).

    Returns
    -------
    (keras.Model, dict)
        The model and a history: ``best_epoch`` (1-based), ``epochs_run`` and per-epoch logs.
    """
    keras.utils.set_random_seed(config.seed)
    tf.config.experimental.enable_op_determinism()
    prior = training_prior(train[0], config, base)
    batches = _TrainingBatches(train, config, prior)
    labels = train[0].labels
    if base is None:
        sample = batches.normalized_sample()
        mean, std = sample.mean(axis=(0, 1)), sample.std(axis=(0, 1)) + 1e-6
        model = build_cnn_bilstm(mean, std, sample.shape[1], sample.shape[2], n_classes=len(labels))
    else:
        model = fine_tuning_model(base.model, base.card.labels, labels, config.freeze_convolutions)
    averaged = config.ema_momentum is not None
    model.compile(
        optimizer=keras.optimizers.Adam(
            learning_rate(config, base), use_ema=averaged, ema_momentum=config.ema_momentum if averaged else 0.99
        ),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    history = _EpochLog(validation, config, log, prior)
    # With averaging, the averaged weights are swapped in at each epoch's end, before validation and early stopping.
    callbacks: list = [keras.callbacks.SwapEMAWeights(swap_on_epoch=True)] if averaged else []
    callbacks.append(history)
    if validation is not None:
        callbacks.append(
            keras.callbacks.EarlyStopping(
                monitor="val_ua",
                mode="max",
                patience=config.patience,
                restore_best_weights=True,
                start_from_epoch=config.min_epochs,
            )
        )
    model.fit(batches, epochs=config.epochs, callbacks=callbacks, verbose=0)
    return model, history.summary()


def training_head(train: list[WindowSet]) -> FunctionalHead:
    """The functional head (:func:`sercli.fusion.fit_clip_head`) of the training clips, clean and each degraded
    copy (``train``: the same clips, as :func:`fit` takes them), standardised over each speaker's clips
    (each recording's when speakers are unknown)."""
    return fit_clip_head([copy.functionals for copy in train], train[0].clips, train[0].labels)


def head_provenance(train: list[WindowSet], head: FunctionalHead) -> str:
    """What a card says of ``head``, fitted by :func:`training_head` on ``train`` (clean, then copies)."""
    return (
        f"{head.architecture}, fitted on {len(train[0].clips)} training clips, clean and as {len(train) - 1} degraded copies, "
        "every corpus and every class within it weighing alike"
    )


def training_prior(train: WindowSet, config: TrainConfig, base: BaseModel | None = None) -> FrameStats:
    """The pseudo-frames a model trained on ``train`` adds to every normalisation group's statistics:
    the pooled frame statistics of the (clean) training clips as ``config.prior_frames`` frames. A
    fine-tuned model keeps its base model's prior; no frame without ``speaker`` normalisation."""
    if base is not None:
        return base.card.prior
    if config.normalization != "speaker" or not config.prior_frames:
        return FrameStats.empty(train.windows.shape[2])
    pooled = FrameStats.from_array(train.clip_stats)
    return FrameStats.of_moments(pooled.mean, pooled.std, config.prior_frames)


def prior_fields(prior: FrameStats) -> dict:
    """A prior as a card's ``normalization_prior`` (empty for no frame): see :attr:`ModelCard.prior`."""
    if not prior.count:
        return {}
    return {"frames": prior.count, "mean": prior.mean.tolist(), "std": prior.std.tolist()}


def held_out_normalization(config: TrainConfig) -> str:
    """How held-out clips are normalised for a model trained with ``config``: over their speaker, or not."""
    return "speaker" if config.normalization == "speaker" else "none"


def predict_windows(model, windows: np.ndarray) -> np.ndarray:
    return model.predict(windows[..., None], batch_size=256, verbose=0)


class _EpochLog(keras.callbacks.Callback):
    """Puts the clip-level validation UA into the logs and writes a line per epoch to ``log``."""

    def __init__(self, validation: WindowSet | None, config: TrainConfig, log: Log, prior: FrameStats):
        super().__init__()
        self.validation, self.config, self.log, self.prior = validation, config, log, prior
        self.epochs: list[dict] = []
        self.started = time.monotonic()

    def on_epoch_begin(self, epoch, logs=None):
        self.started = time.monotonic()

    def on_epoch_end(self, epoch, logs=None):
        logs = logs if logs is not None else {}
        if self.validation is not None:
            metrics = evaluate_windows(
                lambda w: predict_windows(self.model, w),
                self.validation,
                held_out_normalization(self.config),
                self.prior,
            )
            logs["val_ua"] = metrics["unweighted_accuracy"]
            logs["val_accuracy"] = metrics["accuracy"]
        entry = {"epoch": epoch + 1, "seconds": round(time.monotonic() - self.started, 1)}
        entry.update({key: round(float(value), 4) for key, value in logs.items()})
        self.epochs.append(entry)
        self.log(
            f"epoch {epoch + 1}/{self.config.epochs}: "
            + ", ".join(f"{key} {value}" for key, value in entry.items() if key != "epoch")
        )

    def summary(self) -> dict:
        """``best_epoch`` (1-based), ``epochs_run`` and the per-epoch logs."""
        best = len(self.epochs)
        if self.validation is not None:
            watched = [e for e in self.epochs if e["epoch"] > self.config.min_epochs] or self.epochs
            best = max(watched, key=lambda e: e["val_ua"])["epoch"]
        return {"best_epoch": best, "epochs_run": len(self.epochs), "epochs": self.epochs}


class _TrainingBatches(keras.utils.PyDataset):
    """Shuffled, class-weighted training batches, redrawn each epoch.

    Each epoch, every clip is taken clean (with probability 1/2) or as one of its
    degraded variants, and (``speaker`` normalisation) the clips are split at random
    into groups that are standardised together (:meth:`groups`), their statistics
    shrunk towards ``prior``. An epoch has as many windows as the clean clips have
    (the variants' counts differ a little).
    """

    def __init__(self, variants: list[WindowSet], config: TrainConfig, prior: FrameStats):
        super().__init__()
        self.config, self.prior = config, prior
        self.clips = variants[0].clips
        self.windows = np.concatenate([v.windows for v in variants])
        self.clip_of = np.concatenate([v.clip_index for v in variants])
        self.variant_of = np.repeat(np.arange(len(variants)), [len(v.windows) for v in variants])
        self.stats = np.stack([v.clip_stats for v in variants])  # (variants, clips, 3, coeffs)
        self.labels = variants[0].clip_labels
        self.weights = balanced_weights(self.clips).astype(np.float32)
        self.rng = np.random.default_rng(config.seed)
        self.epoch_windows = len(variants[0].windows)
        self.on_epoch_end()

    def on_epoch_end(self):
        variant = np.zeros(len(self.clips), dtype=int)
        if len(self.stats) > 1:  # half of the clips as one of their degraded copies
            degraded = self.rng.random(len(self.clips)) < 0.5
            variant[degraded] = self.rng.integers(1, len(self.stats), degraded.sum())
        chosen = self.rng.permutation(np.flatnonzero(variant[self.clip_of] == self.variant_of))
        self.rows = np.resize(chosen, self.epoch_windows)
        self.mean = np.zeros((len(self.clips), self.windows.shape[2]), np.float32)
        self.std = np.ones_like(self.mean)
        if self.config.normalization == "speaker":
            stats = self.stats[variant, np.arange(len(self.clips))]
            self.mean[:], self.std[:] = group_moments(stats, self.groups(), self.prior)

    def groups(self) -> np.ndarray:
        """A random group label for each clip, covering every clip once: the groups ``annotate`` may give.

        Each speaker's clips, with probability 1/3 each, are one group (a folder or a
        long recording of one speaker), are split into groups of one clip to all of them
        (sizes log-uniform, so single clips are as common as halves), or join a pool of
        several speakers' clips split the same way (short recordings of many speakers in
        one folder).
        """
        speakers = clip_groups(self.clips)
        groups, mixed, count = np.empty(len(self.clips), dtype=int), [], 0
        for speaker in sorted(set(speakers), key=natural_key):
            members = self.rng.permutation(np.flatnonzero(speakers == speaker))
            regime = self.rng.integers(3)
            if regime == 0:
                groups[members], count = count, count + 1
            elif regime == 1:
                count = self._split(members, groups, count)
            else:
                mixed.extend(members)
        self._split(self.rng.permutation(np.array(mixed, dtype=int)), groups, count)
        return groups

    def _split(self, members: np.ndarray, groups: np.ndarray, count: int) -> int:
        """Label ``members`` in consecutive groups of log-uniform sizes from 1 to all; the next free label."""
        while len(members):
            size = round(np.exp(self.rng.uniform(0.0, np.log(len(members)))))
            groups[members[:size]], count = count, count + 1
            members = members[size:]
        return count

    def __len__(self):
        return math.ceil(len(self.rows) / self.config.batch_size)

    def __getitem__(self, index):
        rows = self.rows[index * self.config.batch_size : (index + 1) * self.config.batch_size]
        x = self._normalized(rows)
        if self.config.spec_augment:
            spec_augment(x, self.rng)
        clips = self.clip_of[rows]
        return x[..., None], self.labels[clips], self.weights[clips]

    def normalized_sample(self, size: int = 4096) -> np.ndarray:
        """Up to ``size`` normalised training windows, for the model's input statistics."""
        return self._normalized(self.rows[:size])

    def _normalized(self, rows: np.ndarray) -> np.ndarray:
        """Windows ``rows``, standardised with their clip's group statistics of this epoch."""
        clips = self.clip_of[rows]
        return (self.windows[rows] - self.mean[clips][:, None]) / self.std[clips][:, None]


def spec_augment(windows: np.ndarray, rng: np.random.Generator) -> None:
    """SpecAugment in place: two time masks of up to 10 frames and one mask of up to 4 coefficients.

    Masks are filled with each window's own mean over frames, so they carry no
    level information.

    Parameters
    ----------
    windows : np.ndarray, shape (batch, frames, coeffs)
    rng : np.random.Generator
    """
    batch, frames, coeffs = windows.shape
    for i in range(batch):
        fill = windows[i].mean(axis=0)
        for _ in range(2):
            width, start = rng.integers(0, 11), rng.integers(0, frames)
            windows[i, start : start + width] = fill
        width, start = rng.integers(0, 5), rng.integers(0, coeffs)
        windows[i, :, start : start + width] = fill[start : start + width]


def degraded_variants(
    clips: list[LabelledClip],
    features: FeatureConfig,
    vad: VadConfig,
    config: TrainConfig,
    cache: Path | None,
    folds: list[list[str]],
    augment: AugmentConfig | None = None,
    log: Log = lambda _: None,
) -> list[ClipFeatures]:
    """Features of ``config.variants`` randomly degraded copies of every clip (multi-condition training).

    Copy ``v`` of clip ``i`` is seeded by ``(config.seed, v, i)``. Babble noise for
    a clip is made of the clips of the other speakers in its fold (``folds``: the
    cross-validation's test speakers, or the speakers of each split), so a fold's
    training clips never carry a test speaker's voice, even as noise.
    """
    if not config.variants:
        return []
    augment = augment or AugmentConfig()
    signals = list(iter_clips(clips, features.sample_rate))
    speakers = clip_groups(clips)
    fold_of = {speaker: k for k, fold in enumerate(folds) for speaker in fold}
    fold_index = np.array([fold_of[s] for s in speakers])
    partners = [np.flatnonzero((fold_index == fold_of[s]) & (speakers != s)) for s in speakers]
    variants = []
    for v in range(1, config.variants + 1):

        def degrade(signal: np.ndarray, index: int, v: int = v) -> np.ndarray:
            rng = np.random.default_rng([config.seed, v, index])
            chosen = rng.choice(partners[index], size=min(8, len(partners[index])), replace=False)
            sources = [signals[j] for j in chosen]
            return random_degradation(signal, features.sample_rate, rng, sources, augment)

        log(f"degraded copy {v}/{config.variants} of {len(clips)} clips")
        key = {"variant": v, "seed": config.seed, "augment": asdict(augment), "babble_folds": folds}
        variants.append(cached_features(cache, key, clips, features, vad, degrade, log))
    return variants
