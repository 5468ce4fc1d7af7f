"""Compare training options by leave-actors-out cross-validation on RAVDESS.

Each option is trained with the same folds, seed and data; the fold models are
kept in ``RUNS/<option>.cv/`` for ``benchmarks/robustness.py``. Interrupted runs
resume from their fold checkpoints.

    python benchmarks/training_options.py ../shared/ravdess --folds 2 --runs runs \\
        --option speaker-multi --option speaker-clean --option global-clean
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace
from pathlib import Path

from sercli.datasets import find_clips, speaker_folds
from sercli.evaluation import cached_features
from sercli.features import FeatureConfig
from sercli.training import TrainConfig, cross_validate, degraded_variants
from sercli.vad import VadConfig

OPTIONS = {
    "speaker-multi": TrainConfig(),
    "speaker-clean": TrainConfig(variants=0),
    "global-multi": TrainConfig(normalization="none"),
    "global-clean": TrainConfig(normalization="none", variants=0),
    "speaker-multi-ema": TrainConfig(ema_momentum=0.99),
}
"""Named training configurations: normalisation over speakers or none (global), with or without degraded
copies; ``speaker-multi-ema`` evaluates and keeps a moving average of the weights."""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("ravdess", type=Path)
    parser.add_argument("--folds", type=int, default=2)
    parser.add_argument("--runs", type=Path, default=Path("runs"))
    parser.add_argument("--option", action="append", choices=sorted(OPTIONS), required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=TrainConfig.epochs)
    args = parser.parse_args()
    features, vad = FeatureConfig(), VadConfig()
    clips = find_clips(args.ravdess, "ravdess")
    cache = args.runs / "cache"
    clean = cached_features(cache, {"variant": 0}, clips, features, vad)
    folds = speaker_folds([c.speaker for c in clips], args.folds)
    data = clean.windows(features.window_frames, features.window_hop_frames)
    results = {}
    for name in args.option:
        config = replace(OPTIONS[name], seed=args.seed, epochs=args.epochs)
        started = time.monotonic()
        copies = degraded_variants(clips, features, vad, config, cache, folds, log=print)
        training = [f.windows(features.window_frames, config.window_hop_frames) for f in [clean, *copies]]
        epochs = "" if args.epochs == TrainConfig.epochs else f"-{args.epochs}epochs"
        checkpoint = args.runs / f"{name}-seed{args.seed}{epochs}-{args.folds}fold.cv.json"
        results[name] = cross_validate(
            training, data, folds, config, checkpoint, log=lambda m, name=name: print(name, m, flush=True)
        )
        print(f"{name}: {time.monotonic() - started:.0f} s", flush=True)
    print(f"\n{args.folds}-fold leave-actors-out, clean clips, clip-level UA (seed {args.seed})")
    for name, result in results.items():
        folds_ua = ", ".join(f"{f['metrics']['unweighted_accuracy']:.3f}" for f in result["folds"])
        print(f"{name:15s} pooled {result['pooled']['unweighted_accuracy']:.3f}  folds {folds_ua}")


if __name__ == "__main__":
    main()
