"""Training the emotion model on labelled clips (:mod:`sercli.datasets`): from scratch or fine-tuned.

Features come from :mod:`sercli.evaluation`, which uses the annotation code
itself. Every split is by speaker (by recording where speakers are unknown):
validation and test speakers are never heard in training. Training is
multi-condition (clean clips and randomly degraded copies, :mod:`sercli.augment`)
and, by default, on MFCCs standardised over groups of a speaker's clips
(:mod:`sercli.normalization`), as ``annotate`` standardises a recording or a folder.
"""

from __future__ import annotations

import math
import platform
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from sercli import __version__
from sercli.architecture import build_cnn_bilstm, fine_tuning_model
from sercli.audio import AudioError
from sercli.augment import AugmentConfig, random_degradation
from sercli.datasets import (
    DatasetError,
    LabelledClip,
    balanced_weights,
    clip_groups,
    corpus_folds,
    fold_split,
    label_counts,
    label_order,
    load_clips,
    natural_key,
)
from sercli.evaluation import (
    ClipFeatures,
    Log,
    WindowSet,
    cached_features,
    classification_metrics,
    evaluate_clips,
    evaluate_windows,
    group_moments,
    iter_clips,
    metrics_with_interval,
    normalization_groups,
    predict_clips,
)
from sercli.export import save_model
from sercli.features import FeatureConfig
from sercli.fusion import FunctionalHead, calibration_error, fit_head, fit_temperature, fuse, head_log_probabilities
from sercli.model import ModelCard, ModelError, bundled_model_path, file_sha256
from sercli.normalization import PRIOR_FRAMES, FrameStats
from sercli.vad import VadConfig
from sercli.writers import atomic_output


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


def cross_validate(
    training: list[WindowSet],
    data: WindowSet,
    folds: list[list[str]],
    config: TrainConfig,
    features: FeatureConfig,
    checkpoint: Path,
    log: Log = lambda _: None,
    base: BaseModel | None = None,
) -> dict:
    """Leave-speakers-out cross-validation.

    For each fold, its speakers are the test set; of the remaining speakers of
    each corpus, :func:`sercli.datasets.validation_speakers` are the early-stopping
    validation set and the rest are trained on. With several corpora the pooled
    metrics have each corpus's too (``by_corpus``). Finished folds are stored in the
    JSON file ``checkpoint``, and each fold's model beside it
    (``<checkpoint stem>/fold-<k>.keras``, kept for the robustness benchmark), so
    a restarted run does not redo them. The folder's ``features.json`` records the
    features the fold models take (:meth:`FeatureConfig.to_dict`); a restarted run
    whose features differ stops rather than mix fold models.

    Parameters
    ----------
    training : list of WindowSet
        Windows of all clips cut for training (see ``TrainConfig.window_hop_frames``):
        clean, then each degraded variant.
    data : WindowSet
        Clean windows of all clips as annotation cuts them: validation and test.
    folds : list of list of str
        Test speakers (:attr:`LabelledClip.group`) of each fold.
    features : FeatureConfig
        The features ``training`` and ``data`` were made with.
    base : BaseModel, optional
        Each fold fine-tunes this model (see :func:`fit`).

    Returns
    -------
    dict
        :func:`fold_summary` of the folds: ``folds`` (per-fold metrics, test speakers, best epoch),
        ``pooled`` (over all folds' test clips together), ``mean_ua``, ``std_ua`` and ``calibration``.
    """
    import json

    done = json.loads(checkpoint.read_text()) if checkpoint.exists() else {}
    folder = fold_folder(checkpoint)
    if not (folder / FOLD_FEATURES).exists():
        folder.mkdir(parents=True, exist_ok=True)
        with atomic_output(folder / FOLD_FEATURES) as partial:
            partial.write_text(json.dumps(features.to_dict()))
    elif fold_features(folder) != features:
        raise ModelError(f"{folder / FOLD_FEATURES}: the fold models there take other features than {features}")
    for k, test_speakers in enumerate(folds):
        train_speakers, val_speakers = fold_split(data.clips, test_speakers)
        if str(k) not in done:
            log(f"fold {k + 1}/{len(folds)}: test speakers {test_speakers}, validation {val_speakers}")
            train = [variant.for_speakers(train_speakers) for variant in training]
            validation = data.for_speakers(val_speakers) if val_speakers else None
            model, history = fit(train, validation, config, log, base)
            fold_model = fold_model_path(folder, k)
            model.save(fold_model)
            prior = training_prior(train[0], config, base)
            write_prior(prior, fold_model.with_suffix(".prior.json"))
            test = data.for_speakers(test_speakers)
            done[str(k)] = held_out_record(
                model, prior, train, test, config, test_speakers, val_speakers, history["best_epoch"]
            )
            with atomic_output(checkpoint) as partial:
                partial.write_text(json.dumps(done))
        fold = done[str(k)]
        metrics = classification_metrics(np.array(fold["true"]), np.array(fold["predicted"]), data.labels)
        log(f"fold {k + 1}: UA {metrics['unweighted_accuracy']:.3f}, accuracy {metrics['accuracy']:.3f}")
    records = [done[str(k)] for k in range(len(folds))]
    test_clips = [data.for_speakers(test_speakers).clips for test_speakers in folds]
    return fold_summary(records, test_clips, data.labels, _eval_normalization(config))


def fold_summary(
    records: list[dict],
    test_clips: list[list[LabelledClip]],
    labels: list[str],
    normalization: str,
    source: str = "",
) -> dict:
    """A cross-validation's figures from its folds' held-out outputs, as :func:`cross_validate` returns them.

    Parameters
    ----------
    records : list of dict
        One per fold: ``test_speakers``, ``validation_speakers``, ``best_epoch``, ``true`` and ``predicted``
        (label indices of its test clips: fused), optionally ``predicted_network`` (the network alone) and
        ``probabilities`` (fused, at temperature 1, shape ``(n_test_clips, n_labels)``).
    test_clips : list of list of LabelledClip
        Each fold's test clips, in the order of its ``true``.
    normalization : str
        How the test clips were standardised, for the protocol.
    source : str
        Where the folds come from, for the calibration; default ``"<k>-fold cross-validation"``.

    Returns
    -------
    dict
        ``protocol``, ``mean_ua`` and ``std_ua`` over folds, ``pooled`` (metrics over all folds' test clips
        together, with a 95 % bootstrap interval on UA: :func:`sercli.evaluation.metrics_with_interval`;
        ``network_only_ua`` when every fold has the network's output; ``by_corpus`` with several corpora),
        ``folds`` (speakers, best epoch and metrics of each), and ``calibration`` (:func:`fused_calibration`)
        when every fold has its probabilities.
    """
    for record in records:
        record["metrics"] = classification_metrics(np.array(record["true"]), np.array(record["predicted"]), labels)
    fold_ua = [record["metrics"]["unweighted_accuracy"] for record in records]
    true_all = np.concatenate([record["true"] for record in records]).astype(int)
    predicted_all = np.concatenate([record["predicted"] for record in records]).astype(int)
    clips_all = [clip for clips in test_clips for clip in clips]
    pooled = metrics_with_interval(true_all, predicted_all, clips_all, labels)
    network = np.concatenate([record.get("predicted_network", []) for record in records]).astype(int)
    if len(network) == len(true_all):  # folds checkpointed before the head have none
        pooled["network_only_ua"] = classification_metrics(true_all, network, labels)["unweighted_accuracy"]
    held_out = [record.get("probabilities") for record in records]
    calibration = (  # folds checkpointed before calibration have no probabilities
        None
        if any(probabilities is None for probabilities in held_out)
        else fused_calibration(np.concatenate(held_out), true_all, source or f"{len(records)}-fold cross-validation")
    )
    corpora = np.array([clip.corpus or "" for clip in clips_all])
    if len(set(corpora)) > 1:
        pooled["by_corpus"] = {
            corpus: metrics_with_interval(
                true_all[corpora == corpus],
                predicted_all[corpora == corpus],
                [c for c, of in zip(clips_all, corpora) if of == corpus],
                labels,
            )
            for corpus in dict.fromkeys(corpora)
        }
    return {
        "protocol": f"{len(records)}-fold leave-speakers-out, clip level (mean of window probabilities "
        f"fused with the functional head's), test clips normalised per {normalization}",
        "mean_ua": float(np.mean(fold_ua)),
        "std_ua": float(np.std(fold_ua)),
        "pooled": pooled,
        "folds": [
            {key: record[key] for key in ("test_speakers", "validation_speakers", "best_epoch", "metrics")}
            for record in records
        ],
    } | ({"calibration": calibration} if calibration else {})


def held_out_record(
    model: keras.Model,
    prior: FrameStats,
    train: list[WindowSet],
    test: WindowSet,
    config: TrainConfig,
    test_speakers: list[str],
    validation_speakers: list[str],
    best_epoch: int | None,
) -> dict:
    """A cross-validation fold's record, as :func:`cross_validate` checkpoints it and :func:`fold_summary`
    reads it: its speakers and best epoch, and its test clips' labels and predictions, fused and by the network
    alone, with the fused probabilities (:func:`held_out_probabilities`), all JSON-ready. The probabilities are
    kept whole: rounded, the smallest became 0, and the temperature fitted on them moved (2.73 for 2.71)."""
    network, fused = held_out_probabilities(model, prior, train, test, config)
    return {
        "test_speakers": test_speakers,
        "validation_speakers": validation_speakers,
        "best_epoch": best_epoch,
        "true": test.clip_labels.tolist(),
        "predicted": fused.argmax(axis=1).tolist(),
        "predicted_network": network.argmax(axis=1).tolist(),
        "probabilities": fused.tolist(),
    }


def held_out_probabilities(
    model: keras.Model,
    prior: FrameStats,
    train: list[WindowSet],
    test: WindowSet,
    config: TrainConfig,
) -> tuple[np.ndarray, np.ndarray]:
    """A cross-validation fold's figures: its network's clip probabilities on the test clips, alone and fused
    with a head fitted on the fold's training clips (:func:`training_head`, at temperature 1).

    Parameters
    ----------
    model : keras.Model
        The fold's network.
    prior : FrameStats
        The fold network's prior (:func:`training_prior`).
    train : list of WindowSet
        The fold's training clips, clean then each degraded copy.
    test : WindowSet
        Its test clips, standardised over their speaker (for ``speaker`` normalisation).

    Returns
    -------
    network, fused : np.ndarray, each of shape (n_test_clips, n_labels)
    """
    normalization = _eval_normalization(config)
    network = predict_clips(lambda w: _predict(model, w), test, normalization, prior)
    head = training_head(train)
    groups = normalization_groups(test.clips, normalization)
    return network, head.fused(network, head_log_probabilities(head, test.functionals, groups))


def fused_calibration(probabilities: np.ndarray, labels: np.ndarray, source: str) -> dict:
    """The temperature of the fused output (:func:`sercli.fusion.fit_temperature`), fitted on clips that
    neither the network nor the head was trained on, as a card's ``training.calibration``.

    Parameters
    ----------
    probabilities : np.ndarray, shape (n, n_labels)
        Their fused probabilities at temperature 1.
    labels : np.ndarray of int, shape (n,)
    source : str
        Where they come from, in words.

    Returns
    -------
    dict
        ``temperature``, ``fitted_on`` (``source``), ``clips`` and ``calibration_error``: before and after
        (:func:`sercli.fusion.calibration_error`, on the same clips).
    """
    temperature = fit_temperature(probabilities, labels)
    tempered = fuse(probabilities, np.zeros_like(probabilities), 0.0, temperature)  # no head: only the temperature
    return {
        "temperature": round(temperature, 4),
        "fitted_on": source,
        "clips": len(labels),
        "calibration_error": [
            round(calibration_error(probabilities, labels), 4),
            round(calibration_error(tempered, labels), 4),
        ],
    }


FOLD_FEATURES = "features.json"
"""The file beside :func:`cross_validate`'s fold models that records the features they take."""


def fold_folder(checkpoint: Path) -> Path:
    """Where :func:`cross_validate` keeps the fold models of ``checkpoint``: ``<checkpoint stem>``."""
    return checkpoint.with_suffix("")


def fold_features(folder: Path) -> FeatureConfig:
    """The features the fold models in ``folder`` (see :func:`fold_folder`) take."""
    import json

    return FeatureConfig(**json.loads((folder / FOLD_FEATURES).read_text()))


def fold_model_path(folder: Path, fold: int) -> Path:
    """Where :func:`cross_validate` keeps fold ``fold``'s (0-based) model in its fold folder (see
    :func:`fold_folder`), its prior beside it (``fold-<k>.prior.json``: see :func:`write_prior`)."""
    return folder / f"fold-{fold}.keras"


def training_head(train: list[WindowSet]) -> FunctionalHead:
    """The functional head (:func:`sercli.fusion.fit_head`) of the training clips, clean and each degraded
    copy (``train``: the same clips, as :func:`fit` takes them), standardised over each speaker's clips
    (each recording's when speakers are unknown)."""
    clean = train[0]
    return fit_head(
        [copy.functionals for copy in train],
        clean.clip_labels,
        clip_groups(clean.clips),
        len(clean.labels),
        balanced_weights(clean.clips),
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


def write_prior(prior: FrameStats, path: Path) -> None:
    """Store a fold model's prior (:func:`prior_fields`) as JSON, for benchmarks that evaluate fold models."""
    import json

    path.write_text(json.dumps(prior_fields(prior)))


def read_prior(path: Path) -> FrameStats | None:
    """Inverse of :func:`write_prior`; ``None`` when there is no such file (fold models trained before
    priors) or it holds no frame."""
    import json

    fields = json.loads(path.read_text()) if path.exists() else {}
    return FrameStats.of_moments(fields["mean"], fields["std"], fields["frames"]) if fields else None


def _eval_normalization(config: TrainConfig) -> str:
    """How held-out clips are normalised for a model trained with ``config``: over their speaker, or not."""
    return "speaker" if config.normalization == "speaker" else "none"


def training_card(
    name: str,
    features: FeatureConfig,
    vad: VadConfig,
    config: TrainConfig,
    train: WindowSet,
    validation: list[str],
    data: str,
    data_sha256: str,
    prior: FrameStats,
    base: BaseModel | None = None,
) -> ModelCard:
    """A model card describing a training run (metrics are added by the caller).

    ``data`` says what was trained on (a corpus with its credit, or a labels table).
    """
    training = {
        "data": data,
        "data_sha256": data_sha256,
        "training_speakers": (
            sorted({clip.group for clip in train.clips}, key=natural_key)
            if all(clip.speaker is not None for clip in train.clips)
            else f"unknown ({len({clip.path for clip in train.clips})} recordings)"
        ),
        "validation_speakers": validation,
        "clips": len(train.clips),
        "label_counts": label_counts(train.clips),
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
    }
    if base is not None:
        training["fine_tuned_from"] = {"name": base.card.name, "sha256": base.card.sha256, "labels": base.card.labels}
    return ModelCard(
        name=name,
        version=__version__,
        labels=list(train.labels),
        features=features.to_dict(),
        normalization=config.normalization,
        normalization_prior=prior_fields(prior),
        training=training,
    )


def data_digest(clips: list[LabelledClip]) -> str:
    """SHA-256 over the clips' names, contents, labels, speakers and parts: which data a model saw."""
    import hashlib
    import json

    digest = hashlib.sha256()
    for clip in sorted(clips, key=lambda c: (c.path.name, c.start_s or 0.0)):
        fields = [clip.path.name, file_sha256(clip.path), clip.label, clip.speaker, clip.start_s, clip.end_s]
        digest.update(json.dumps(fields).encode())
    return digest.hexdigest()


def _predict(model, windows: np.ndarray) -> np.ndarray:
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
                lambda w: _predict(self.model, w), self.validation, _eval_normalization(self.config), self.prior
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


MIN_LABEL_CLIPS = 3
"""Fewest training clips of a label that training accepts: fewer is a typo in a label or a label
no model can learn from."""


def training_labels(clips: list[LabelledClip], base: BaseModel | None = None) -> list[str]:
    """The output labels of a model trained on ``clips``: :func:`sercli.datasets.label_order`,
    or the base model's order when fine-tuning on exactly its labels."""
    found = {clip.label for clip in clips}
    if base is not None and found == set(base.card.labels):
        return list(base.card.labels)
    return label_order(found)


def train_model(
    clips: list[LabelledClip],
    output: Path,
    features: FeatureConfig,
    vad: VadConfig,
    config: TrainConfig,
    validation: list[str] = (),
    cv_folds: int = 0,
    cache: Path | None = None,
    log: Log = lambda _: None,
    base: BaseModel | None = None,
    data: str = "",
) -> ModelCard:
    """Train a model on labelled clips and save it (``.keras`` and LiteRT) with its card.

    Parameters
    ----------
    clips : list of LabelledClip
        From :func:`sercli.datasets.load_clips`. When some have a ``split``,
        that split is used (unmarked clips train) and no cross-validation runs.
    output : Path
        Where the ``.keras`` weights go; the card goes beside them (``.json``).
    validation : list of str
        Speakers held out for early stopping and the card's validation metrics. Empty:
        every speaker is trained on, for the median best epoch count of the
        cross-validation (or ``config.epochs`` without one).
    cv_folds : int
        0 for none, else leave-speakers-out cross-validation with this many folds
        first; its figures go into the card. Finished folds are checkpointed in
        ``output`` + ``.cv.json`` until the model is saved; the fold models stay in
        ``output`` + ``.cv/`` for the robustness benchmark.
    cache : Path, optional
        Folder keeping the clips' features (clean and degraded) between runs.
    base : BaseModel, optional
        Fine-tune this model instead of training a fresh one; its features and
        normalisation are used.
    data : str
        What the clips are, for the card (a corpus and its credit, or a table's name).

    Returns
    -------
    ModelCard
        The card written beside the model.

    Raises
    ------
    DatasetError
        If a label has fewer than :data:`MIN_LABEL_CLIPS` training clips, there is
        only one label, or the validation speakers are not in the data.
    ModelError
        If ``base`` was trained on other features or another normalisation.
    """
    config = replace(config, learning_rate=learning_rate(config, base))  # as the card records it
    if base is not None:
        if base.card.feature_config != features:
            raise ModelError(f"{base.path} was trained on other features ({base.card.features})")
        if base.card.normalization != config.normalization:
            raise ModelError(
                f"{base.path} was trained with {base.card.normalization} normalisation, not {config.normalization}"
            )
    labels = training_labels(clips, base)
    speakers = sorted({clip.group for clip in clips}, key=natural_key)
    split = _fixed_split(clips, validation, cv_folds, log)
    if split is not None:
        train_speakers, validation, cv_folds = split["train"], split["validation"], 0
    else:
        validation = _known_speakers(validation, speakers)
        train_speakers = [s for s in speakers if s not in validation]
    # before the folds: a missing label's error is the one to see
    _check_label_counts([c for c in clips if c.group in set(train_speakers)], labels)
    if split is not None:
        folds = [fold for fold in split.values() if fold]  # babble stays within a split
    else:
        folds = corpus_folds(clips, cv_folds) if cv_folds else [speakers]
    output.parent.mkdir(parents=True, exist_ok=True)
    clean = cached_features(cache, {"variant": 0}, clips, features, vad, log=log)
    copies = degraded_variants(clips, features, vad, config, cache, folds, log=log)
    everything = clean.windows(features.window_frames, features.window_hop_frames, labels)
    training = [f.windows(features.window_frames, config.window_hop_frames, labels) for f in [clean, *copies]]
    log(f"{len(clips)} clips, {len(training[0].windows)} training windows x {len(training)} variants, labels {labels}")
    metrics = {}
    if cv_folds:
        checkpoint = output.with_name(output.name + ".cv.json")
        metrics["cross_validation"] = cross_validate(
            training, everything, folds, config, features, checkpoint, log, base
        )
        if not validation:
            best = [fold["best_epoch"] for fold in metrics["cross_validation"]["folds"]]
            config = replace(config, epochs=int(np.median(best)))
    train = [variant.for_speakers(train_speakers) for variant in training]
    held_out = everything.for_speakers(validation) if validation else None
    log(f"final model: training on {len(train_speakers)} speakers for up to {config.epochs} epochs")
    model, history = fit(train, held_out, config, log, base)
    normalization, prior = _eval_normalization(config), training_prior(train[0], config, base)
    head = training_head(train)
    predict = lambda w: _predict(model, w)
    calibration = metrics.get("cross_validation", {}).get("calibration")
    if calibration is None and held_out is not None:
        fused = predict_clips(predict, held_out, normalization, prior, head=head)
        calibration = fused_calibration(fused, held_out.clip_labels, "the validation speakers")
    if calibration is not None:
        head = replace(head, temperature=calibration["temperature"])
    if held_out is not None:
        metrics["validation"] = evaluate_clips(predict, held_out, normalization, prior=prior, head=head)
    if split is not None and split["test"]:
        test = everything.for_speakers(split["test"])
        metrics["test"] = evaluate_clips(predict, test, normalization, prior=prior, head=head)
    card = training_card(
        output.stem, features, vad, config, train[0], validation, data, data_digest(clips), prior, base
    )
    card.functional_head = head.to_dict()
    card.training["functional_head"] = head_provenance(train, head)
    if calibration is not None:
        card.training["calibration"] = calibration
    card.training["epochs_run"] = history["epochs_run"]
    card.training["best_epoch"] = history["best_epoch"]
    card.metrics = metrics
    check = everything.normalized(normalization, prior)
    save_model(model, output, card, check[:: max(1, len(check) // 512)])
    if cv_folds:
        checkpoint.unlink(missing_ok=True)
    return card


def head_provenance(train: list[WindowSet], head: FunctionalHead) -> str:
    """What a card says of ``head``, fitted by :func:`training_head` on ``train`` (clean, then copies)."""
    return (
        f"{head.architecture}, fitted on {len(train[0].clips)} training clips, clean and as {len(train) - 1} degraded copies, "
        "every corpus and every class within it weighing alike"
    )


def train_sources(
    sources: Sequence[str | Path],
    output: str | Path,
    config: TrainConfig | None = None,
    *,
    layout: str | None = None,
    base: str | Path | None = None,
    validation: Sequence[str] = (),
    cv_folds: int = 5,
    cache: Path | None = None,
    log: Log = lambda _: None,
) -> ModelCard:
    """Train on labels tables and corpus folders, as ``sercli train`` does (:func:`train_model`).

    Parameters
    ----------
    sources : sequence of str or Path
        Labels tables (``.csv``/``.parquet``) and corpus folders (:func:`sercli.datasets.load_clips`,
        ``layout`` for the folders); several corpora are balanced and every fold tests each.
    base : str or Path, optional
        Fine-tune this ``.keras`` model, or ``"bundled"``; its features are used.

    Raises
    ------
    ValueError
        One line: a source or label that cannot be used (a training error names the sources);
        ``ModelError`` for a base model that cannot be.
    """
    config = config or TrainConfig()
    starting_point = None
    if base is not None:
        starting_point = BaseModel.load(bundled_model_path(".keras") if str(base) == "bundled" else Path(base))
    loaded = [load_clips(source, layout) for source in sources]
    clips = [clip for found, _ in loaded for clip in found]
    features = FeatureConfig() if starting_point is None else starting_point.card.feature_config
    try:
        return train_model(
            clips,
            Path(output),
            features,
            VadConfig(),
            config,
            list(validation),
            cv_folds,
            cache,
            log,
            starting_point,
            " + ".join(description for _, description in loaded),
        )
    except (ValueError, AudioError) as error:
        raise ValueError(f"{' + '.join(map(str, sources))}: {error}") from None


def _fixed_split(clips: list[LabelledClip], validation: list[str], cv_folds: int, log: Log) -> dict | None:
    """The speakers of each split when the clips fix one (``train``, ``validation``, ``test``), else ``None``."""
    if not any(clip.split for clip in clips):
        return None
    if validation:
        raise DatasetError("the labels table fixes the split: leave out the validation speakers")
    if cv_folds:
        log("the labels table fixes the split: no cross-validation")
    return {
        name: sorted({c.group for c in clips if (c.split or "train") == name}, key=natural_key)
        for name in ("train", "validation", "test")
    }


def _known_speakers(requested: list[str], speakers: list[str]) -> list[str]:
    """The requested speakers as the data names them; ``"5"`` finds ``"05"``.

    Raises
    ------
    DatasetError
        If one is not in the data.
    """
    found = []
    for name in requested:
        matches = [s for s in speakers if s == name or (s.isdigit() and name.isdigit() and int(s) == int(name))]
        if not matches:
            raise DatasetError(f"validation speaker '{name}' has no clips")
        found.append(matches[0])
    return found


def _check_label_counts(train: list[LabelledClip], labels: list[str]) -> None:
    counts = label_counts(train)
    if len(labels) < 2:
        raise DatasetError(f"training needs two or more labels, found only {labels}")
    for label in labels:
        if counts.get(label, 0) < MIN_LABEL_CLIPS:
            raise DatasetError(
                f"label '{label}' has {counts.get(label, 0)} training clips; each label needs at least {MIN_LABEL_CLIPS}"
            )
