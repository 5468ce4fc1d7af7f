"""Refit a model card's functional head on its training corpora, as today's ``sercli train`` fits it, and
calibrate the fused output on the recipe's cross-validation.

    python scripts/refit_card_head.py models/sercli-cnn-bilstm.json ../shared/ravdess ../shared/nemo --cache runs/cache \
        --cv runs/speaker-multi-ema-hop25-seed0-nemo-5fold.cv --folds 5

For a model whose network is still right but whose head was fitted by an earlier recipe: the head
(:func:`sercli.training.training_head`) is fitted anew on every speaker's clips, clean and as the degraded
copies the card's training settings make (found in the cache when the training run left them there), with today's functionals
(:func:`sercli.prosody.functional_names`), and where it came from is recorded (``training.functional_head``). The network's weights are not touched.

A new head needs a new temperature. With ``--cv``, the fold models of a leave-speakers-out cross-validation of
the model's recipe on the same corpora (``benchmarks/training_options.py`` or ``sercli train --cv-folds``), each
fold's network is fused with a head fitted on that fold's training clips, as :func:`sercli.training.cross_validate`
does, and the temperature is fitted on all folds' held-out clips (``training.calibration``). Without it the head is
left uncalibrated (temperature 1).
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict, replace
from datetime import date
from pathlib import Path

import numpy as np

from sercli.datasets import corpus_folds, find_clips, fold_split, natural_key
from sercli.evaluation import cached_features
from sercli.model import ModelCard
from sercli.training import (
    TrainConfig,
    degraded_variants,
    fold_features,
    fold_model_path,
    fused_calibration,
    head_provenance,
    held_out_probabilities,
    read_prior,
    training_head,
)
from sercli.vad import VadConfig


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("card", type=Path, help="the model's .json card, rewritten in place")
    parser.add_argument("corpora", type=Path, nargs="+", help="the model's training corpus folders")
    parser.add_argument("--cache", type=Path, default=Path("runs/cache"))
    parser.add_argument("--cv", type=Path, help="the fold models of the recipe's cross-validation on these corpora")
    parser.add_argument("--folds", type=int, default=5, help="how many folds --cv has")
    args = parser.parse_args()
    # not ModelCard.read: it rejects a head of another number of functionals than today's, which this replaces
    card = ModelCard(**json.loads(args.card.read_text()))
    features, vad = card.feature_config, VadConfig(**card.training["vad"])
    config = TrainConfig(**card.training["hyperparameters"])
    clips = [clip for corpus in args.corpora for clip in find_clips(corpus)]
    speakers = sorted({clip.group for clip in clips}, key=natural_key)  # one fold: a run without cross-validation
    clean = cached_features(args.cache, {"variant": 0}, clips, features, vad)
    copies = degraded_variants(clips, features, vad, config, args.cache, [speakers], log=print)
    training = [f.windows(features.window_frames, config.window_hop_frames, card.labels) for f in [clean, *copies]]
    head = training_head(training)
    card.training["functional_head"] = (
        f"{head_provenance(training, head)} ({', '.join(c.name for c in args.corpora)}), segmented with the VAD settings "
        f"{json.dumps(asdict(vad))}, {date.today().isoformat()}, by scripts/refit_card_head.py"
    )
    card.training.pop("calibration", None)
    if args.cv is not None:
        calibration = cross_validation_calibration(args.cv, args.folds, clips, clean, card, config, args.cache)
        head = replace(head, temperature=calibration["temperature"])
        card.training["calibration"] = calibration
        errors = calibration["calibration_error"]
        print(f"temperature {head.temperature:.3f}: calibration error {errors[0]:.3f} -> {errors[1]:.3f}")
    card.functional_head = head.to_dict()
    card.write(args.card)
    print(f"{args.card}: functional head of {head.shape[0]} functionals fitted on {len(clips)} clips")


def cross_validation_calibration(folder, n_folds, clips, clean, card, config, cache) -> dict:
    """:func:`sercli.training.fused_calibration` on the held-out clips of the fold models in ``folder``."""
    import keras

    features, vad = card.feature_config, VadConfig(**card.training["vad"])
    if fold_features(folder) != features:
        raise SystemExit(f"{folder}: its fold models take other features than the card's")
    folds = corpus_folds(clips, n_folds)
    copies = degraded_variants(clips, features, vad, config, cache, folds, log=print)
    training = [f.windows(features.window_frames, config.window_hop_frames, card.labels) for f in [clean, *copies]]
    data = clean.windows(features.window_frames, features.window_hop_frames, card.labels)
    fused, labels = [], []
    for k, test_speakers in enumerate(folds):
        model = keras.models.load_model(fold_model_path(folder, k), compile=False)
        prior = read_prior(fold_model_path(folder, k).with_suffix(".prior.json"))
        train_speakers, _ = fold_split(data.clips, test_speakers)
        test = data.for_speakers(test_speakers)
        train = [copy.for_speakers(train_speakers) for copy in training]
        fused.append(held_out_probabilities(model, prior, train, test, config)[1])
        labels.append(test.clip_labels)
        print(f"fold {k + 1}/{n_folds}: {len(test.clips)} held-out clips")
    return fused_calibration(
        np.concatenate(fused),
        np.concatenate(labels),
        f"the {n_folds}-fold cross-validation of its recipe ({folder.name})",
    )


if __name__ == "__main__":
    main()
