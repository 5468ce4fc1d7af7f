"""A model and its card from labelled clips: the training recipe end to end (``sercli train``).

:func:`train_sources` finds the clips (corpus layouts or a labels table), :func:`train_model` checks the
labels and splits, cross-validates (:mod:`sercli.cross_validation`), trains the final network
(:mod:`sercli.training`), fits its functional head and temperature, and saves the model with its card
(:func:`training_card`).
"""

from __future__ import annotations

import platform
from collections.abc import Sequence
from dataclasses import asdict, replace
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from sercli import __version__
from sercli.audio import AudioError
from sercli.cross_validation import cross_validate, fused_calibration
from sercli.datasets import DatasetError, LabelledClip, corpus_folds, label_counts, label_order, load_clips, natural_key
from sercli.evaluation import Log, WindowSet, cached_features, evaluate_clips, predict_clips
from sercli.export import save_model
from sercli.features import FeatureConfig
from sercli.model import ModelCard, ModelError, bundled_model_path, file_sha256
from sercli.normalization import FrameStats
from sercli.training import (
    BaseModel,
    TrainConfig,
    degraded_variants,
    fit,
    head_provenance,
    held_out_normalization,
    learning_rate,
    predict_windows,
    prior_fields,
    training_head,
    training_prior,
)
from sercli.vad import VadConfig


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
    normalization, prior = held_out_normalization(config), training_prior(train[0], config, base)
    head = training_head(train)
    predict = lambda w: predict_windows(model, w)
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
