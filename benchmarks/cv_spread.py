"""How much a cross-validation's figure depends on which speakers are tested.

Reads a fold checkpoint of ``sercli.cross_validation.cross_validate`` (as ``sercli train`` or
``benchmarks/training_options.py`` leave it) and prints, for the clean test clips of all folds:
each fold's UA; the pooled UA with a 95 % bootstrap interval over whole speakers; each
speaker's UA; and the UA of every possible test set of ``--men`` men and ``--women`` women
(RAVDESS: odd actors are men), as percentiles.

    python benchmarks/cv_spread.py ../shared/ravdess runs/speaker-multi-seed0-5fold.cv.json
"""

from __future__ import annotations

import argparse
import itertools
import json
from pathlib import Path

import numpy as np

from sercli import EMOTIONS
from sercli.datasets import clip_groups, find_clips
from sercli.evaluation import classification_metrics, metrics_with_interval


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("ravdess", type=Path)
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("--men", type=int, default=2)
    parser.add_argument("--women", type=int, default=2)
    args = parser.parse_args()
    labels = list(EMOTIONS)
    clips = find_clips(args.ravdess, "ravdess")
    folds = json.loads(args.checkpoint.read_text())
    true, predicted, tested_clips = [], [], []
    for k in sorted(folds, key=int):
        fold = folds[k]
        tested = set(fold["test_speakers"])
        ua = classification_metrics(np.array(fold["true"]), np.array(fold["predicted"]), labels)
        print(f"fold {int(k) + 1} (test {', '.join(sorted(tested))}): UA {ua['unweighted_accuracy']:.3f}")
        true += fold["true"]
        predicted += fold["predicted"]
        tested_clips += [clip for clip in clips if clip.group in tested]  # the fold's clips in test order
    true, predicted, speakers = np.array(true), np.array(predicted), clip_groups(tested_clips)

    def ua(rows: np.ndarray) -> float:
        return classification_metrics(true[rows], predicted[rows], labels)["unweighted_accuracy"]

    pooled = metrics_with_interval(true, predicted, tested_clips, labels)
    low, high = pooled["ua_ci95"]
    print(
        f"pooled: UA {pooled['unweighted_accuracy']:.3f} (95 % CI {low:.3f}-{high:.3f}, {pooled['ua_ci95_resampled']} resampled)"
    )
    by_speaker = {s: ua(speakers == s) for s in np.unique(speakers)}
    print("by speaker: " + ", ".join(f"{s} {v:.2f}" for s, v in by_speaker.items()))
    men = [s for s in by_speaker if int(s) % 2]
    women = [s for s in by_speaker if not int(s) % 2]
    sets = [
        ua(np.isin(speakers, m + w))
        for m in itertools.combinations(men, args.men)
        for w in itertools.combinations(women, args.women)
    ]
    p5, p50, p95 = np.percentile(sets, [5, 50, 95])
    print(
        f"{len(sets)} test sets of {args.men} men and {args.women} women: UA {p5:.3f}-{p95:.3f} "
        f"(5th-95th percentile), median {p50:.3f}, lowest {min(sets):.3f}, highest {max(sets):.3f}"
    )


if __name__ == "__main__":
    main()
