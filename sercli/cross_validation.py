"""Leave-speakers-out cross-validation of the training recipe (:mod:`sercli.training`).

:func:`cross_validate` trains one model per fold on the other speakers, keeps each fold's model, prior and
held-out record (:func:`held_out_record`) so that an interrupted run resumes, and sums the folds up
(:func:`fold_summary`: pooled and per-corpus metrics, the network alone, a temperature fitted on the
held-out speakers). Benchmarks read the fold models back with :func:`fold_model_path`,
:func:`fold_features` and :func:`read_prior`.
"""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np

from sercli.datasets import LabelledClip, fold_split
from sercli.evaluation import (
    Log,
    WindowSet,
    classification_metrics,
    metrics_with_interval,
    normalization_groups,
    predict_clips,
)
from sercli.features import FeatureConfig
from sercli.fusion import calibration_error, fit_temperature, fuse, head_log_probabilities
from sercli.model import ModelError
from sercli.normalization import FrameStats
from sercli.training import (
    BaseModel,
    TrainConfig,
    fit,
    held_out_normalization,
    predict_windows,
    prior_fields,
    training_head,
    training_prior,
)
from sercli.writers import atomic_output


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
        Each fold fine-tunes this model (see :func:`sercli.training.fit`).

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
    return fold_summary(records, test_clips, data.labels, held_out_normalization(config))


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
    with a head fitted on the fold's training clips (:func:`sercli.training.training_head`, at temperature 1).

    Parameters
    ----------
    model : keras.Model
        The fold's network.
    prior : FrameStats
        The fold network's prior (:func:`sercli.training.training_prior`).
    train : list of WindowSet
        The fold's training clips, clean then each degraded copy.
    test : WindowSet
        Its test clips, standardised over their speaker (for ``speaker`` normalisation).

    Returns
    -------
    network, fused : np.ndarray, each of shape (n_test_clips, n_labels)
    """
    normalization = held_out_normalization(config)
    network = predict_clips(lambda w: predict_windows(model, w), test, normalization, prior)
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


def write_prior(prior: FrameStats, path: Path) -> None:
    """Store a fold model's prior (:func:`sercli.training.prior_fields`) as JSON, for benchmarks that evaluate fold models."""
    import json

    path.write_text(json.dumps(prior_fields(prior)))


def read_prior(path: Path) -> FrameStats | None:
    """Inverse of :func:`write_prior`; ``None`` when there is no such file (fold models trained before
    priors) or it holds no frame."""
    import json

    fields = json.loads(path.read_text()) if path.exists() else {}
    return FrameStats.of_moments(fields["mean"], fields["std"], fields["frames"]) if fields else None
