"""Refit a model card's functional head on its training corpora, as today's ``sercli train`` fits it.

    python scripts/refit_card_head.py models/sercli-cnn-bilstm.json ../shared/ravdess ../shared/nemo --cache runs/cache

For a model whose network is still right but whose head was fitted by an earlier recipe: the head
(:func:`sercli.training.training_head`) is fitted anew on every speaker's clips, clean and as the degraded
copies the card's training settings make (found in the cache when the training run left them there), with today's functionals
(:func:`sercli.prosody.functional_names`), and where it came from is recorded (``training.functional_head``). The network's weights are not touched.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from datetime import date
from pathlib import Path

from sercli.datasets import find_clips, natural_key
from sercli.evaluation import cached_features
from sercli.model import ModelCard
from sercli.training import TrainConfig, degraded_variants, head_provenance, training_head
from sercli.vad import VadConfig


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("card", type=Path, help="the model's .json card, rewritten in place")
    parser.add_argument("corpora", type=Path, nargs="+", help="the model's training corpus folders")
    parser.add_argument("--cache", type=Path, default=Path("runs/cache"))
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
    card.functional_head = head.to_dict()
    card.training["functional_head"] = (
        f"{head_provenance(training, head)} ({', '.join(c.name for c in args.corpora)}), segmented with the VAD settings "
        f"{json.dumps(asdict(vad))}, {date.today().isoformat()}, by scripts/refit_card_head.py"
    )
    card.write(args.card)
    print(f"{args.card}: functional head of {head.shape[0]} functionals fitted on {len(clips)} clips")


if __name__ == "__main__":
    main()
