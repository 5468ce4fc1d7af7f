"""Give a model card the normalisation prior of its training speech (``normalization_prior``).

    python scripts/add_card_prior.py ../shared/ravdess models/sercli-cnn-bilstm.json

Models trained by today's ``sercli train`` carry it already (:func:`sercli.training.training_prior`).
This adds it to a card that lacks it (the bundled model was trained before priors existed): the pooled
MFCC statistics of the corpus's clean speech, found as ``annotate`` finds it, as
:data:`sercli.normalization.PRIOR_FRAMES` pseudo-frames. ``annotate`` then adds them to every group's
statistics, so a short recording alone is not standardised over its own few frames. The card records
where the prior came from (``training.normalization_prior``).
"""

from __future__ import annotations

import argparse
import json
from datetime import date
from pathlib import Path

from sercli.datasets import find_clips
from sercli.evaluation import cached_features
from sercli.features import FeatureConfig
from sercli.normalization import PRIOR_FRAMES, FrameStats
from sercli.vad import VadConfig


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("corpus", type=Path, help="the model's training corpus folder")
    parser.add_argument("card", type=Path, help="the model's .json card, rewritten in place")
    parser.add_argument("--cache", type=Path, default=Path("runs/cache"))
    args = parser.parse_args()
    card = json.loads(args.card.read_text())
    features = FeatureConfig(**card["features"])
    clips = find_clips(args.corpus)
    clean = cached_features(args.cache, {"variant": 0}, clips, features, VadConfig(**card["training"]["vad"]))
    pooled = FrameStats.from_array(clean.windows(features.window_frames, features.window_hop_frames).clip_stats)
    card["normalization_prior"] = {"frames": PRIOR_FRAMES, "mean": pooled.mean.tolist(), "std": pooled.std.tolist()}
    card["training"]["normalization_prior"] = (
        f"pooled clean speech of {len(clips)} clips ({int(pooled.count)} frames) of {args.corpus.name}, "
        f"added {date.today().isoformat()} by scripts/add_card_prior.py"
    )
    args.card.write_text(json.dumps(card, indent=2) + "\n")
    print(f"{args.card}: prior of {int(pooled.count)} frames from {len(clips)} clips, as {PRIOR_FRAMES} pseudo-frames")


if __name__ == "__main__":
    main()
