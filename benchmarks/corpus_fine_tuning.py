"""Fine-tune the fold models of a several-corpus cross-validation on the first corpus alone: does it win back
what training on several corpora costs on the first one, and what does it cost on the others?

    python benchmarks/corpus_fine_tuning.py ../shared/ravdess ../shared/nemo \\
        --cv runs/speaker-multi-ema-hop25-seed0-nemo-5fold.cv --folds 5 --epochs 40 --fixed

Each fold model of ``--cv`` (``benchmarks/training_options.py`` on the same corpora and folds) is fine-tuned
(:func:`sercli.training.fit` with a base model: the fine-tuning learning rate, weight averaging, degraded copies
and SpecAugment of :class:`sercli.training.TrainConfig`) on its fold's training speakers of the first corpus,
keeping its prior; with ``--fixed`` for exactly ``--epochs`` epochs, else stopping early on the fold's validation
speakers of that corpus. The fine-tuned fold models go to ``--out`` (default ``<cv>-finetuned-<epochs>``, resumed
fold by fold), laid out as ``cross_validate`` lays them out, so ``benchmarks/head_options.py --cnn NAME=FOLDER``
fuses them with heads fitted every way. Printed: each fold's network UA per corpus (test clips standardised per
speaker), then pooled over the folds.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path

import keras
import numpy as np

from sercli.cross_validation import FOLD_FEATURES, fold_features, fold_model_path, read_prior, write_prior
from sercli.datasets import corpus_folds, find_clips, fold_split
from sercli.evaluation import cached_features, classification_metrics, predict_clips
from sercli.model import ModelCard
from sercli.training import (
    FINE_TUNING_LEARNING_RATE,
    BaseModel,
    TrainConfig,
    degraded_variants,
    fit,
    predict_windows,
    prior_fields,
)
from sercli.vad import VadConfig


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("corpora", type=Path, nargs="+", help="the first corpus is fine-tuned on, then the others")
    parser.add_argument("--cv", type=Path, required=True, help="fold folder of a cross-validation on these corpora")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--fixed", action="store_true", help="train exactly --epochs epochs, no early stopping")
    parser.add_argument("--cache", type=Path, default=Path("runs/cache"))
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    out = args.out or args.cv.with_name(f"{args.cv.name.removesuffix('.cv')}-finetuned-{args.epochs}.cv")
    out.mkdir(parents=True, exist_ok=True)
    features, vad = fold_features(args.cv), VadConfig()
    (out / FOLD_FEATURES).write_text((args.cv / FOLD_FEATURES).read_text())
    recipe = TrainConfig()
    config = replace(
        recipe,
        epochs=args.epochs,
        min_epochs=args.epochs if args.fixed else min(5, args.epochs),
        patience=8,
        learning_rate=FINE_TUNING_LEARNING_RATE,
    )
    clips = [clip for corpus in args.corpora for clip in find_clips(corpus)]
    first_speakers = {clip.group for clip in clips if clip.corpus == clips[0].corpus}
    folds = corpus_folds(clips, args.folds)
    clean = cached_features(args.cache, {"variant": 0}, clips, features, vad)
    data = clean.windows(features.window_frames, features.window_hop_frames)
    copies = degraded_variants(clips, features, vad, recipe, args.cache, folds, log=print)
    training = [f.windows(features.window_frames, config.window_hop_frames) for f in [clean, *copies]]
    scores = out / "network.json"  # each finished fold's test labels and network predictions
    done = json.loads(scores.read_text()) if scores.exists() else {}
    for k, test_speakers in enumerate(folds):
        path = fold_model_path(out, k)
        if str(k) not in done:
            train_speakers, validation_speakers = fold_split(data.clips, test_speakers)
            of_first = [s for s in train_speakers if s in first_speakers]
            validation = [s for s in validation_speakers if s in first_speakers]
            base_path = fold_model_path(args.cv, k)
            prior = read_prior(base_path.with_suffix(".prior.json"))
            card = ModelCard(  # fold models have no card: this is how they were made
                name=base_path.stem,
                version="fold",
                labels=list(data.labels),
                features=features.to_dict(),
                normalization="speaker",
                normalization_prior=prior_fields(prior),
            )
            base = BaseModel(keras.models.load_model(base_path), card, base_path)
            model, history = fit(
                [v.for_speakers(of_first) for v in training],
                data.for_speakers(validation) if validation else None,
                config,
                lambda m, k=k: print(f"fold {k + 1}: {m}", flush=True),
                base,
            )
            model.save(path)
            write_prior(prior, path.with_suffix(".prior.json"))
            test = data.for_speakers(test_speakers)
            network = predict_clips(lambda w, m=model: predict_windows(m, w), test, "speaker", prior)
            done[str(k)] = {
                "true": test.clip_labels.tolist(),
                "predicted": network.argmax(axis=1).tolist(),
                "corpus": [clip.corpus for clip in test.clips],
                "best_epoch": history["best_epoch"],
            }
            scores.write_text(json.dumps(done))
        print(f"fold {k + 1}: network UA {per_corpus([done[str(k)]], data.labels)}", flush=True)
    print(f"pooled, {args.folds} folds: network UA {per_corpus(list(done.values()), data.labels)}")


def per_corpus(folds: list[dict], labels: list[str]) -> str:
    """Clip-level UA on each corpus's test clips of ``folds``, as text."""
    true, predicted, corpus = (np.concatenate([fold[key] for fold in folds]) for key in ("true", "predicted", "corpus"))
    return ", ".join(
        f"{name} {classification_metrics(true[corpus == name], predicted[corpus == name], labels)['unweighted_accuracy']:.3f}"
        for name in dict.fromkeys(corpus)
    )


if __name__ == "__main__":
    main()
