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
fold's network is fused with a head fitted on that fold's training clips, as :func:`sercli.cross_validation.cross_validate`
does, and the temperature is fitted on all folds' held-out clips (``training.calibration``). The folds' figures
go into the card as ``sercli train --cv-folds`` puts them there (``metrics.cross_validation``, by corpus with
several), so the card states what its own recipe scores. Without ``--cv`` the head is left uncalibrated
(temperature 1) and the card has no cross-validation.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict, replace
from datetime import date
from pathlib import Path

from sercli.cross_validation import fold_features, fold_model_path, fold_summary, held_out_record, read_prior
from sercli.datasets import corpus_folds, find_clips, fold_split, natural_key
from sercli.evaluation import cached_features
from sercli.model import ModelCard
from sercli.training import TrainConfig, degraded_variants, head_provenance, training_head
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
    card.metrics.pop("cross_validation", None)
    if args.cv is not None:
        cross_validation = recipe_cross_validation(args.cv, args.folds, clips, clean, card, config, args.cache)
        calibration = cross_validation["calibration"]
        head = replace(head, temperature=calibration["temperature"])
        card.training["calibration"] = calibration
        card.metrics["cross_validation"] = cross_validation
        errors = calibration["calibration_error"]
        print(f"temperature {head.temperature:.3f}: calibration error {errors[0]:.3f} -> {errors[1]:.3f}")
    card.functional_head = head.to_dict()
    card.write(args.card)
    print(f"{args.card}: functional head of {head.shape[0]} functionals fitted on {len(clips)} clips")


def recipe_cross_validation(folder, n_folds, clips, clean, card, config, cache) -> dict:
    """The card's recipe's cross-validation (:func:`sercli.cross_validation.fold_summary`) from the fold models in
    ``folder``: each fused with a head fitted on its fold's training speakers, as
    :func:`sercli.cross_validation.cross_validate` scores them, and calibrated on all folds' held-out clips."""
    import keras

    features, vad = card.feature_config, VadConfig(**card.training["vad"])
    if fold_features(folder) != features:
        raise SystemExit(f"{folder}: its fold models take other features than the card's")
    checkpoint = folder.with_suffix(".cv.json")  # the best epochs, while its training run keeps it
    best_epochs = (
        {k: fold["best_epoch"] for k, fold in json.loads(checkpoint.read_text()).items()} if checkpoint.exists() else {}
    )
    folds = corpus_folds(clips, n_folds)
    copies = degraded_variants(clips, features, vad, config, cache, folds, log=print)
    training = [f.windows(features.window_frames, config.window_hop_frames, card.labels) for f in [clean, *copies]]
    data = clean.windows(features.window_frames, features.window_hop_frames, card.labels)
    records, test_clips = [], []
    for k, test_speakers in enumerate(folds):
        path = fold_model_path(folder, k)
        model = keras.models.load_model(path, compile=False)
        prior = read_prior(path.with_suffix(".prior.json"))
        train_speakers, validation_speakers = fold_split(data.clips, test_speakers)
        test = data.for_speakers(test_speakers)
        train = [copy.for_speakers(train_speakers) for copy in training]
        best_epoch = best_epochs.get(str(k))
        records.append(
            held_out_record(model, prior, train, test, config, test_speakers, validation_speakers, best_epoch)
        )
        test_clips.append(test.clips)
        print(f"fold {k + 1}/{n_folds}: {len(test.clips)} held-out clips")
    source = f"the {n_folds}-fold cross-validation of its recipe ({folder.name})"
    summary = fold_summary(records, test_clips, card.labels, card.normalization, source)
    summary["protocol"] += f"; fold models: {folder} (benchmarks/training_options.py), heads fitted by this script"
    return summary


if __name__ == "__main__":
    main()
