"""Training and evaluating the emotion model on RAVDESS-layout folders.

Features come from :mod:`sercli.evaluation`, which uses the annotation code
itself. Every split is by actor: validation and test actors are never heard in
training.
"""

from __future__ import annotations

import math
import platform
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from sercli import EMOTIONS, __version__
from sercli.datasets import RavdessClip, actor_folds, find_ravdess_clips
from sercli.evaluation import (
    Log,
    WindowSet,
    classification_metrics,
    clip_probabilities,
    evaluate_windows,
    extract_windows,
)
from sercli.features import FeatureConfig
from sercli.model import ModelCard, build_cnn_bilstm, file_sha256, save_model
from sercli.vad import VadConfig
from sercli.writers import atomic_output


@dataclass(frozen=True)
class TrainConfig:
    """Hyper-parameters of one training run.

    Attributes
    ----------
    epochs : int
        Maximum number of epochs (the exact number when there is no validation set).
    patience : int
        Epochs without a better validation UA before stopping (best weights are kept).
    batch_size : int
    learning_rate : float
        Adam's initial learning rate.
    seed : int
        Seeds weights, shuffling and augmentation.
    augment : bool
        Random gain (+/- 6 dB) and SpecAugment masks on training windows.
    window_hop_frames : int
        Frames between the starts of training windows: denser than at inference, so
        overlapping windows give more examples. Validation and test windows are cut
        with the features' own hop, as ``annotate`` cuts them.
    """

    epochs: int = 30
    patience: int = 6
    batch_size: int = 64
    learning_rate: float = 1e-3
    seed: int = 0
    augment: bool = True
    window_hop_frames: int = 50


def fit(
    train: WindowSet,
    validation: WindowSet | None,
    features: FeatureConfig,
    config: TrainConfig,
    log: Log = lambda _: None,
):
    """Train a fresh CNN-BiLSTM.

    With a validation set, training stops after ``config.patience`` epochs without
    a better clip-level validation UA and the best epoch's weights are kept;
    without one, it runs ``config.epochs`` epochs.

    Returns
    -------
    (keras.Model, dict)
        The model and a history: ``best_epoch`` (1-based), ``epochs_run`` and per-epoch logs.
    """
    keras.utils.set_random_seed(config.seed)
    tf.config.experimental.enable_op_determinism()
    mean, std = train.windows.mean(axis=(0, 1)), train.windows.std(axis=(0, 1)) + 1e-6
    model = build_cnn_bilstm(mean, std, train.windows.shape[1], train.windows.shape[2])
    model.compile(
        optimizer=keras.optimizers.Adam(config.learning_rate),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    labels = train.labels
    class_weight = len(labels) / (len(EMOTIONS) * np.maximum(np.bincount(labels, minlength=len(EMOTIONS)), 1))
    batches = _AugmentedBatches(train.windows, labels, class_weight[labels], mean, math.sqrt(features.n_mels), config)
    history = _EpochLog(validation, config, log)
    callbacks: list = [history]
    if validation is not None:
        callbacks.append(
            keras.callbacks.EarlyStopping(
                monitor="val_ua", mode="max", patience=config.patience, restore_best_weights=True
            )
        )
    model.fit(batches, epochs=config.epochs, callbacks=callbacks, verbose=0)
    return model, history.summary()


def cross_validate(
    training: WindowSet,
    data: WindowSet,
    folds: list[list[int]],
    features: FeatureConfig,
    config: TrainConfig,
    checkpoint: Path,
    log: Log = lambda _: None,
) -> dict:
    """Leave-actors-out cross-validation.

    For each fold, its actors are the test set; of the remaining actors the two
    highest-numbered (one male, one female when possible) are the early-stopping
    validation set and the rest are trained on. Finished folds are stored in the
    JSON file ``checkpoint`` and not redone when the run is restarted.

    Parameters
    ----------
    training : WindowSet
        Windows of all clips, cut for training (see ``TrainConfig.window_hop_frames``).
    data : WindowSet
        Windows of all clips as annotation cuts them: validation and test.
    folds : list of list of int
        Test actors of each fold.

    Returns
    -------
    dict
        ``folds`` (per-fold metrics, test actors, best epoch) and ``pooled``
        (metrics over all folds' test clips together), plus ``mean_ua`` and ``std_ua``.
    """
    import json

    done = json.loads(checkpoint.read_text()) if checkpoint.exists() else {}
    true_all, predicted_all = [], []
    for k, test_actors in enumerate(folds):
        rest = sorted({clip.actor for clip in data.clips} - set(test_actors))
        val_actors = _one_of_each_sex(rest)
        train_actors = [a for a in rest if a not in val_actors]
        if str(k) not in done:
            log(f"fold {k + 1}/{len(folds)}: test actors {test_actors}, validation {val_actors}")
            model, history = fit(training.for_actors(train_actors), data.for_actors(val_actors), features, config, log)
            test = data.for_actors(test_actors)
            probabilities = clip_probabilities(_predict(model, test.windows), test)
            done[str(k)] = {
                "test_actors": test_actors,
                "validation_actors": val_actors,
                "best_epoch": history["best_epoch"],
                "true": test.clip_labels.tolist(),
                "predicted": probabilities.argmax(axis=1).tolist(),
            }
            with atomic_output(checkpoint) as partial:
                partial.write_text(json.dumps(done))
        fold = done[str(k)]
        metrics = classification_metrics(np.array(fold["true"]), np.array(fold["predicted"]))
        fold["metrics"] = metrics
        log(f"fold {k + 1}: UA {metrics['unweighted_accuracy']:.3f}, accuracy {metrics['accuracy']:.3f}")
        true_all += fold["true"]
        predicted_all += fold["predicted"]
    fold_ua = [done[str(k)]["metrics"]["unweighted_accuracy"] for k in range(len(folds))]
    return {
        "protocol": f"{len(folds)}-fold leave-actors-out, clip level (mean of window probabilities)",
        "mean_ua": float(np.mean(fold_ua)),
        "std_ua": float(np.std(fold_ua)),
        "pooled": classification_metrics(np.array(true_all), np.array(predicted_all)),
        "folds": [
            {key: done[str(k)][key] for key in ("test_actors", "validation_actors", "best_epoch", "metrics")}
            for k in range(len(folds))
        ],
    }


def training_card(
    name: str,
    features: FeatureConfig,
    vad: VadConfig,
    config: TrainConfig,
    train: WindowSet,
    validation_actors: list[int],
    data_sha256: str,
) -> ModelCard:
    """A model card describing a training run (metrics are added by the caller)."""
    return ModelCard(
        name=name,
        version=__version__,
        labels=list(EMOTIONS),
        features=features.to_dict(),
        training={
            "data": "RAVDESS speech (Livingstone & Russo 2018, CC BY-NC-SA 4.0)",
            "data_sha256": data_sha256,
            "training_actors": sorted({clip.actor for clip in train.clips}),
            "validation_actors": validation_actors,
            "clips": len(train.clips),
            "windows": len(train.windows),
            "vad": asdict(vad),
            "hyperparameters": asdict(config),
            "versions": {
                "sercli": __version__,
                "tensorflow": tf.__version__,
                "keras": keras.__version__,
                "numpy": np.__version__,
                "python": platform.python_version(),
            },
        },
    )


def data_digest(clips: list[RavdessClip]) -> str:
    """SHA-256 over the clips' names and contents: which data a model saw."""
    import hashlib

    digest = hashlib.sha256()
    for clip in sorted(clips, key=lambda c: c.path.name):
        digest.update(clip.path.name.encode())
        digest.update(file_sha256(clip.path).encode())
    return digest.hexdigest()


def _one_of_each_sex(actors: list[int]) -> list[int]:
    """The highest-numbered male (odd) and female (even) actor of a list."""
    odd, even = [a for a in actors if a % 2], [a for a in actors if a % 2 == 0]
    return sorted([group[-1] for group in (odd, even) if group])


def _predict(model, windows: np.ndarray) -> np.ndarray:
    return model.predict(windows[..., None], batch_size=256, verbose=0)


class _EpochLog(keras.callbacks.Callback):
    """Puts the clip-level validation UA into the logs and writes a line per epoch to ``log``."""

    def __init__(self, validation: WindowSet | None, config: TrainConfig, log: Log):
        super().__init__()
        self.validation, self.config, self.log = validation, config, log
        self.epochs: list[dict] = []
        self.started = time.monotonic()

    def on_epoch_begin(self, epoch, logs=None):
        self.started = time.monotonic()

    def on_epoch_end(self, epoch, logs=None):
        logs = logs if logs is not None else {}
        if self.validation is not None:
            metrics = evaluate_windows(lambda w: _predict(self.model, w), self.validation)
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
            best = max(self.epochs, key=lambda e: e["val_ua"])["epoch"]
        return {"best_epoch": best, "epochs_run": len(self.epochs), "epochs": self.epochs}


class _AugmentedBatches(keras.utils.PyDataset):
    """Shuffled, class-weighted, optionally augmented training batches."""

    def __init__(self, windows, labels, weights, mean, c0_per_db: float, config: TrainConfig):
        super().__init__()
        self.windows, self.labels, self.weights, self.mean = windows, labels, weights.astype(np.float32), mean
        self.c0_per_db, self.config = c0_per_db, config
        self.rng = np.random.default_rng(config.seed)
        self.order = self.rng.permutation(len(windows))

    def __len__(self):
        return math.ceil(len(self.windows) / self.config.batch_size)

    def __getitem__(self, index):
        rows = self.order[index * self.config.batch_size : (index + 1) * self.config.batch_size]
        x = self.windows[rows].copy()
        if self.config.augment:
            augment(x, self.mean, self.c0_per_db, self.rng)
        return x[..., None], self.labels[rows], self.weights[rows]

    def on_epoch_end(self):
        self.order = self.rng.permutation(len(self.windows))


def augment(windows: np.ndarray, mean: np.ndarray, c0_per_db: float, rng: np.random.Generator) -> None:
    """Augment a batch of MFCC windows in place.

    Random gain of +/- 6 dB, which for orthonormal MFCCs is exactly a shift of
    coefficient 0 by ``gain_db * sqrt(n_mels)``, then SpecAugment: two time masks
    of up to 10 frames and one mask of up to 4 coefficients, filled with the
    training mean.

    Parameters
    ----------
    windows : np.ndarray, shape (batch, frames, coeffs)
    mean : np.ndarray, shape (coeffs,)
    c0_per_db : float
        ``sqrt(n_mels)``: how far coefficient 0 moves per dB of gain.
    rng : np.random.Generator
    """
    batch, frames, coeffs = windows.shape
    windows[:, :, 0] += rng.uniform(-6.0, 6.0, size=(batch, 1)) * c0_per_db
    for i in range(batch):
        for _ in range(2):
            width, start = rng.integers(0, 11), rng.integers(0, frames)
            windows[i, start : start + width] = mean
        width, start = rng.integers(0, 5), rng.integers(0, coeffs)
        windows[i, :, start : start + width] = mean[start : start + width]


def train_ravdess(
    root: Path,
    output: Path,
    features: FeatureConfig,
    vad: VadConfig,
    config: TrainConfig,
    validation_actors: list[int],
    cv_folds: int,
    log: Log = lambda _: None,
) -> ModelCard:
    """Train a model on a RAVDESS-layout folder and save it with its card.

    Parameters
    ----------
    root : Path
        Folder holding RAVDESS speech clips (``.wav`` or ``.flac``), searched recursively.
    output : Path
        Where the ``.keras`` weights go; the card goes beside them (``.json``).
    validation_actors : list of int
        Actors held out for early stopping and the card's validation metrics. Empty:
        every actor is trained on, for the median best epoch count of the
        cross-validation (or ``config.epochs`` without one).
    cv_folds : int
        0 for none, else leave-actors-out cross-validation with this many folds
        first; its figures go into the card. Finished folds are checkpointed in
        ``output`` + ``.cv.json`` until the model is saved.

    Returns
    -------
    ModelCard
        The card written beside the model.
    """
    clips = find_ravdess_clips(root)
    output.parent.mkdir(parents=True, exist_ok=True)
    data = extract_windows(clips, features, vad, log)
    training = extract_windows(clips, replace(features, window_hop_frames=config.window_hop_frames), vad)
    actors = sorted({clip.actor for clip in data.clips})
    unknown = sorted(set(validation_actors) - set(actors))
    if unknown:
        raise ValueError(f"validation actors {unknown} have no clips under {root}")
    log(f"{len(data.clips)} clips, {len(training.windows)} training windows, actors {actors}")
    metrics = {}
    if cv_folds:
        checkpoint = output.with_name(output.name + ".cv.json")
        metrics["cross_validation"] = cross_validate(
            training, data, actor_folds(actors, cv_folds), features, config, checkpoint, log
        )
        if not validation_actors:
            best = [fold["best_epoch"] for fold in metrics["cross_validation"]["folds"]]
            config = replace(config, epochs=int(np.median(best)))
    train = training.for_actors([a for a in actors if a not in validation_actors])
    validation = data.for_actors(validation_actors) if validation_actors else None
    log(f"final model: training on actors {sorted({c.actor for c in train.clips})} for up to {config.epochs} epochs")
    model, history = fit(train, validation, features, config, log)
    if validation is not None:
        metrics["validation"] = evaluate_windows(lambda w: _predict(model, w), validation)
    card = training_card(output.stem, features, vad, config, train, validation_actors, data_digest(data.clips))
    card.training["epochs_run"] = history["epochs_run"]
    card.training["best_epoch"] = history["best_epoch"]
    card.metrics = metrics
    save_model(model, output, card, data.windows[:: max(1, len(data.windows) // 512)])
    if cv_folds:
        checkpoint.unlink(missing_ok=True)
    return card
