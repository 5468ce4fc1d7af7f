"""Compare training options by leave-speakers-out cross-validation on RAVDESS (and other corpora).

Each option is trained with the same folds, seed and data; the fold models are
kept in ``RUNS/<option>.cv/`` for ``benchmarks/robustness.py``. Interrupted runs
resume from their fold checkpoints. With several corpora, each fold tests some
speakers of every corpus (:func:`sercli.datasets.corpus_folds`), and the figures
are given per corpus too.

    python benchmarks/training_options.py ../shared/ravdess --folds 2 --runs runs \\
        --option speaker-multi --option speaker-clean --option global-clean
    python benchmarks/training_options.py ../shared/ravdess ../shared/nemo --folds 2 --option speaker-multi-ema
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace
from pathlib import Path

from sercli.cross_validation import cross_validate
from sercli.datasets import corpus_folds, find_clips
from sercli.evaluation import cached_features
from sercli.features import FeatureConfig
from sercli.training import TrainConfig, degraded_variants
from sercli.vad import VadConfig

HOP10 = TrainConfig(prior_frames=1000, window_hop_frames=50, epochs=30, min_epochs=10, patience=6)
"""The recipe before the 25 ms hop: 10 ms frames, a 10 s prior and training windows every 0.5 s in those frames,
and four times fewer epochs (a 3 s clip gave about four training windows where it now gives one)."""

OPTIONS = {
    "speaker-multi": replace(HOP10, ema_momentum=None),
    "speaker-multi-noprior": replace(HOP10, prior_frames=0, ema_momentum=None),
    "speaker-clean": replace(HOP10, variants=0, ema_momentum=None),
    "global-multi": replace(HOP10, normalization="none", ema_momentum=None),
    "global-clean": replace(HOP10, normalization="none", variants=0, ema_momentum=None),
    "speaker-multi-ema": HOP10,
    "speaker-multi-ema-hop25": TrainConfig(),
}
"""Named training configurations: normalisation over groups of clips or none (global), with or without degraded
copies; ``-noprior`` without the training statistics' pseudo-frames in each group. ``speaker-multi-ema-hop25`` is
today's :class:`TrainConfig` and :class:`FeatureConfig` (MFCC frames every 25 ms, so a window of 100 frames covers
2.5 s); the others are the 10 ms recipes measured before it (:data:`HOP10`, :data:`FEATURES`), all but
``speaker-multi-ema`` keeping the weights as trained rather than their moving average."""

FEATURES = {name: FeatureConfig(hop_length=160) for name in OPTIONS if name != "speaker-multi-ema-hop25"}
"""The options whose features are not :class:`FeatureConfig`'s defaults: the 10 ms hop."""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("corpora", type=Path, nargs="+", help="RAVDESS first, then any other corpus folders")
    parser.add_argument("--folds", type=int, default=2)
    parser.add_argument("--runs", type=Path, default=Path("runs"))
    parser.add_argument("--option", action="append", choices=sorted(OPTIONS), required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, help="default: the option's own")
    args = parser.parse_args()
    vad = VadConfig()
    clips = [clip for corpus in args.corpora for clip in find_clips(corpus)]
    cache = args.runs / "cache"
    folds = corpus_folds(clips, args.folds)
    corpora = "".join(f"-{layout}" for layout in dict.fromkeys(c.corpus for c in clips) if layout != "ravdess")
    results = {}
    for name in args.option:
        config = replace(OPTIONS[name], seed=args.seed, epochs=args.epochs or OPTIONS[name].epochs)
        features = FEATURES.get(name, FeatureConfig())
        started = time.monotonic()
        clean = cached_features(cache, {"variant": 0}, clips, features, vad)
        data = clean.windows(features.window_frames, features.window_hop_frames)
        copies = degraded_variants(clips, features, vad, config, cache, folds, log=print)
        training = [f.windows(features.window_frames, config.window_hop_frames) for f in [clean, *copies]]
        epochs = "" if args.epochs is None else f"-{args.epochs}epochs"
        checkpoint = args.runs / f"{name}-seed{args.seed}{epochs}{corpora}-{args.folds}fold.cv.json"
        results[name] = cross_validate(
            training, data, folds, config, features, checkpoint, log=lambda m, name=name: print(name, m, flush=True)
        )
        print(f"{name}: {time.monotonic() - started:.0f} s", flush=True)
    print(f"\n{args.folds}-fold leave-speakers-out, clean clips, clip-level UA (seed {args.seed})")
    for name, result in results.items():
        folds_ua = ", ".join(f"{f['metrics']['unweighted_accuracy']:.3f}" for f in result["folds"])
        print(f"{name:15s} pooled {result['pooled']['unweighted_accuracy']:.3f}  folds {folds_ua}")
        for corpus, metrics in result["pooled"].get("by_corpus", {}).items():
            print(f"{'':15s} {corpus}: {metrics['unweighted_accuracy']:.3f}")


if __name__ == "__main__":
    main()
