"""Fine-tuning a trained model vs training afresh, on a few new speakers with labels of their own.

The base model is a fold model of a cross-validation (``benchmarks/training_options.py``
keeps them, with the fold's actors in its checkpoint): it was trained on other
actors, and the fold's test actors are new speakers. Of them, the first 2, 4, ...
are the user's labelled data, on a label set of the user's own (by default 4
classes: neutral, happy, sad, angry: a 4-unit softmax layer replaces the base
model's 8, taking its weights for these 4), and the last ``--test`` are the test
set, never trained on by any system; the base model alone (its outputs for these
labels) is scored on them too. With ``--condition`` (a key of
``sercli.augment.CONDITIONS``, e.g. ``telephone``) all of the new speakers'
recordings are degraded so: a user whose recordings differ from RAVDESS; training
then uses them as they are, without further degraded copies. Each system is
trained on the same clips with the same recipe (speaker normalisation, 4 degraded
copies, SpecAugment, a fixed number of epochs: there is no one left to validate on)
and scored on the test actors at clip level.

    python benchmarks/fine_tuning.py ../shared/ravdess --cv runs/speaker-multi-seed0-2fold.cv.json --fold 0 \\
        --test 4 --sizes 2,4,6 --seeds 0,1
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

import keras
import numpy as np

from sercli import EMOTIONS
from sercli.augment import CONDITIONS
from sercli.cross_validation import fold_features, fold_folder, fold_model_path
from sercli.datasets import find_clips
from sercli.evaluation import cached_features, evaluate_clips, iter_clips
from sercli.model import ModelCard
from sercli.robustness import condition_data
from sercli.training import FINE_TUNING_LEARNING_RATE, BaseModel, TrainConfig, degraded_variants, fit, predict_windows
from sercli.vad import VadConfig

SYSTEMS = {
    "from scratch": None,
    "fine-tuned": False,
    "fine-tuned, convolutions frozen": True,
}
"""Each system: ``None`` trains afresh, else fine-tunes the base model, freezing its convolutions or not."""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("ravdess", type=Path)
    parser.add_argument("--cv", type=Path, required=True, help="a cross-validation checkpoint (.cv.json)")
    parser.add_argument("--fold", type=int, default=0, help="its fold whose model is the base (0-based)")
    parser.add_argument("--test", type=int, default=4, help="how many of the fold's last actors are scored")
    parser.add_argument("--sizes", default="2,4,6", help="how many --pool actors each run trains on")
    parser.add_argument("--labels", default="neutral,happy,sad,angry")
    parser.add_argument("--seeds", default="0,1")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--condition", default="clean", choices=sorted(CONDITIONS))
    parser.add_argument("--cache", type=Path, default=Path("runs/cache"))
    parser.add_argument("--json", type=Path, help="write every run's metrics here")
    args = parser.parse_args()

    vad, labels = VadConfig(), args.labels.split(",")
    features = fold_features(fold_folder(args.cv))
    fold = json.loads(args.cv.read_text())[str(args.fold)]
    new_speakers = [f"{int(a):02d}" for a in fold.get("test_speakers") or fold["test_actors"]]  # older: ints
    pool, test_actors = new_speakers[: -args.test], new_speakers[-args.test :]
    path = fold_model_path(fold_folder(args.cv), args.fold)
    card = ModelCard(  # cross-validation keeps fold models without cards: this is how they were made
        name=path.stem, version="fold", labels=list(EMOTIONS), features=features.to_dict(), normalization="speaker"
    )
    base = BaseModel(keras.models.load_model(path, compile=False), card, path)
    clips = [c for c in find_clips(args.ravdess, "ravdess") if c.label in labels and c.speaker in pool + test_actors]
    if args.condition == "clean":
        clean = cached_features(args.cache, {"variant": 0}, clips, features, vad)
    else:
        signals = list(iter_clips(clips, features.sample_rate))
        folds = [pool, test_actors]
        clean = condition_data(args.condition, clips, signals, folds, features, vad, cache=args.cache).features
    data = clean.windows(features.window_frames, features.window_hop_frames, labels)
    test = data.for_speakers(test_actors)
    alone = base_alone(base, test)
    results = []
    for seed in map(int, args.seeds.split(",")):
        config = TrainConfig(seed=seed, epochs=args.epochs, variants=4 if args.condition == "clean" else 0)
        copies = degraded_variants(clips, features, vad, config, args.cache, [pool, test_actors])
        variants = [f.windows(features.window_frames, config.window_hop_frames, labels) for f in [clean, *copies]]
        for size in map(int, args.sizes.split(",")):
            train = [v.for_speakers(pool[:size]) for v in variants]
            for system, freeze in SYSTEMS.items():
                started = time.monotonic()
                if freeze is None:
                    model, _ = fit(train, None, config)
                else:
                    tuned = replace(config, learning_rate=FINE_TUNING_LEARNING_RATE, freeze_convolutions=freeze)
                    model, _ = fit(train, None, tuned, base=base)
                metrics = evaluate_clips(lambda w, m=model: predict_windows(m, w), test)
                row = {
                    "system": system,
                    "actors": size,
                    "clips": len(train[0].clips),
                    "seed": seed,
                    "ua": metrics["unweighted_accuracy"],
                    "ua_ci95": metrics["ua_ci95"],
                    "seconds": round(time.monotonic() - started),
                }
                results.append(row)
                print(json.dumps(row), flush=True)
    print(
        f"\n{len(labels)} labels ({', '.join(labels)}), test actors {test_actors}, clip-level UA, "
        f"seeds {args.seeds}, condition {args.condition}"
    )
    print(f"base model {path}: fold {args.fold} of {args.cv}, never heard actors {new_speakers}\n")
    sizes = sorted({r["actors"] for r in results})
    print("| system | " + " | ".join(f"{s} actors ({_clips(results, s)} clips)" for s in sizes) + " |")
    print("|---" * (len(sizes) + 1) + "|")
    print(f"| base model alone (its {', '.join(labels)} outputs) | " + " | ".join([f"{alone:.3f}"] * len(sizes)) + " |")
    for system in SYSTEMS:
        cells = []
        for size in sizes:
            ua = [r["ua"] for r in results if r["system"] == system and r["actors"] == size]
            cells.append(f"{np.mean(ua):.3f} ({min(ua):.3f}-{max(ua):.3f})")
        print(f"| {system} | " + " | ".join(cells) + " |")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


def base_alone(base: BaseModel, test) -> float:
    """Clip-level UA of the base model without any training on the new speakers: the argmax of its
    outputs for the test set's labels (all of them RAVDESS emotions), speaker-normalised."""
    columns = [base.card.labels.index(label) for label in test.labels]

    def predict(windows):
        return predict_windows(base.model, windows)[:, columns]

    return evaluate_clips(predict, test)["unweighted_accuracy"]


def _clips(results: list[dict], size: int) -> int:
    return next(r["clips"] for r in results if r["actors"] == size)


if __name__ == "__main__":
    main()
