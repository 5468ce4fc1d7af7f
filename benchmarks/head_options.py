"""The functional head alone, fitted on one corpus or on several weighed in different ways, linear or with
hidden layers: clip-level UA on speakers it never heard, per corpus.

    python benchmarks/head_options.py ../shared/ravdess ../shared/nemo --folds 5
    python benchmarks/head_options.py ../shared/ravdess ../shared/nemo --folds 5 \
        --cnn "RAVDESS + nEMO=runs/speaker-multi-ema-hop25-seed0-nemo-5fold.cv" \
        --cnn "RAVDESS=runs/speaker-multi-ema-hop25-seed0-5fold.cv"

The folds and training speakers are those of ``benchmarks/training_options.py`` with the same corpora
(:func:`sercli.datasets.fold_split`: each fold's validation speakers left out, as
:func:`sercli.cross_validation.cross_validate` leaves them out of the head), the clips clean and as the recipe's
degraded copies, each test speaker's clips one group. Heads (``--head NAME``, repeated; default all), each a
weighting and a shape:

- ``first corpus``: the first corpus's training speakers only, classes alike;
- ``per class``: every corpus, classes alike over all of them (larger corpora weigh more);
- ``per corpus``: every corpus, corpora alike and classes alike within each (:func:`sercli.datasets.balanced_weights`,
  what ``sercli train`` fits the head with, as it weighs the network's loss);
- ``per class, then corpus``: classes alike over all corpora, and within a class the corpora that have it alike;
- ``linear``: a logistic regression (``hidden=()``); ``hidden``: :data:`sercli.fusion.HIDDEN_UNITS`, what
  ``sercli train`` fits.

With ``--cnn NAME=FOLDER`` (cross-validation fold models of ``training_options.py`` on the same folds), each
head is also fused with each fold's network (its test clips standardised per speaker), on the folds that
every such folder has finished (from fold 1 on): a run still under way is measured on its first folds.
``NAME=FOLDER+FOLDER`` averages the clip probabilities of several runs' fold networks (each standardised with
its own prior) before fusing.
"""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

import numpy as np
from robustness import keras_predictors

from sercli.cross_validation import fold_model_path
from sercli.datasets import (
    LabelledClip,
    balanced_weights,
    clip_groups,
    corpus_folds,
    corpus_speakers,
    find_clips,
    fold_split,
)
from sercli.evaluation import cached_features, classification_metrics, clip_probabilities, standardize_groups
from sercli.features import FeatureConfig
from sercli.fusion import HIDDEN_UNITS, fit_head, head_log_probabilities
from sercli.training import TrainConfig, degraded_variants
from sercli.vad import VadConfig


def class_then_corpus_weights(clips: list[LabelledClip]) -> np.ndarray:
    """Weights of mean 1: every label alike in total, and within a label every corpus that has it alike."""
    labels = np.array([clip.label for clip in clips], dtype=object)
    corpora = np.array([clip.corpus or "" for clip in clips], dtype=object)
    weights = np.empty(len(clips))
    names = np.unique(labels)
    for label in names:
        having = labels == label
        for corpus in np.unique(corpora[having]):
            cell = having & (corpora == corpus)
            weights[cell] = len(clips) / (len(names) * len(np.unique(corpora[having])) * cell.sum())
    return weights


WEIGHTINGS = {
    "first corpus": balanced_weights,
    "per class": lambda clips: balanced_weights([replace(clip, corpus=None) for clip in clips]),
    "per corpus": balanced_weights,
    "per class, then corpus": class_then_corpus_weights,
}
HEADS = {
    f"{weighting}, {shape}": (weighting, hidden)
    for shape, hidden in [("linear", ()), ("hidden", HIDDEN_UNITS)]
    for weighting in WEIGHTINGS
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("corpora", type=Path, nargs="+", help="corpus folders, the first one also fitted alone")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--cache", type=Path, default=Path("runs/cache"))
    parser.add_argument(
        "--cnn", action="append", default=[], metavar="NAME=FOLDER[+FOLDER]", help="fold models to fuse with"
    )
    parser.add_argument("--head", action="append", choices=list(HEADS), help="the heads to fit (default: all)")
    args = parser.parse_args()
    heads = {name: HEADS[name] for name in args.head or HEADS}
    networks = {name: folders.split("+") for name, folders in (spec.split("=", 1) for spec in args.cnn)}
    features, vad, config = FeatureConfig(), VadConfig(), TrainConfig()
    clips = [clip for corpus in args.corpora for clip in find_clips(corpus)]
    folds = corpus_folds(clips, args.folds)
    tested = min([finished_folds(Path(f)) for folders in networks.values() for f in folders], default=len(folds))
    loaded = {name: [keras_predictors(Path(f), tested) for f in folders] for name, folders in networks.items()}
    if any(member[2] != features for members in loaded.values() for member in members):
        raise SystemExit("the --cnn fold models take other features than today's FeatureConfig()")
    clean = cached_features(args.cache, {"variant": 0}, clips, features, vad)
    copies = degraded_variants(clips, features, vad, config, args.cache, folds, log=print)
    training = [f.windows(features.window_frames, config.window_hop_frames) for f in [clean, *copies]]
    data = clean.windows(features.window_frames, features.window_hop_frames)  # as annotate cuts them
    by_corpus = corpus_speakers(clean.clips)
    first = set(next(iter(by_corpus.values())))
    true, corpora = [], []
    predicted = {name: [] for name in heads}  # head alone; then (network, None): network alone; fused
    predicted |= {(network, name): [] for network in networks for name in [None, *heads]}
    for k, test_speakers in enumerate(folds[:tested]):
        trained, _ = fold_split(clean.clips, test_speakers)
        test = data.for_speakers(test_speakers)
        true.append(test.clip_labels)
        corpora += [clip.corpus for clip in test.clips]
        groups = np.unique(clip_groups(test.clips), return_inverse=True)[1]
        outputs = {}
        for network, members in loaded.items():
            each = []
            for predictors, priors, _ in members:
                x = standardize_groups(test.windows, test.clip_index, test.clip_stats, groups, priors[k])
                each.append(clip_probabilities(predictors[k](x), test))
            outputs[network] = np.mean(each, axis=0)
            predicted[network, None].append(outputs[network].argmax(axis=1))
        for name, (weighting, hidden) in heads.items():
            speakers = [s for s in trained if weighting != "first corpus" or s in first]
            train = [t.for_speakers(speakers) for t in training]
            head = fit_head(
                [t.functionals for t in train],
                train[0].clip_labels,
                clip_groups(train[0].clips),
                len(train[0].labels),
                WEIGHTINGS[weighting](train[0].clips),
                hidden,
            )
            scores = head_log_probabilities(head, test.functionals, groups)
            predicted[name].append(scores.argmax(axis=1))
            for network, probabilities in outputs.items():
                predicted[network, name].append(head.fused(probabilities, scores).argmax(axis=1))
    true, corpora = np.concatenate(true), np.array(corpora)
    names = list(by_corpus)
    print(f"\n{args.folds}-fold, folds 1-{tested}, clean test clips per speaker, clip-level UA\n")
    print("| network | head fitted on | " + " | ".join(f"{n} UA | {n} neutral / happy / sad" for n in names) + " |")
    print("|---|---|" + "---|---|" * len(names))
    for row, labelled in predicted.items():
        network, name = row if isinstance(row, tuple) else ("-", row)
        labelled = np.concatenate(labelled)
        cells = []
        for corpus in names:
            metrics = classification_metrics(true[corpora == corpus], labelled[corpora == corpus], data.labels)
            recall = metrics["per_class_recall"]
            cells += [
                f"{metrics['unweighted_accuracy']:.3f}",
                " / ".join(f"{recall[label]:.2f}" for label in ("neutral", "happy", "sad")),
            ]
        print(f"| {network} | {name or '- (network alone)'} | " + " | ".join(cells) + " |", flush=True)


def finished_folds(folder: Path) -> int:
    """How many fold models ``folder`` holds from fold 1 on (``fold-0.keras``, ``fold-1.keras``, ...)."""
    count = 0
    while fold_model_path(folder, count).exists():
        count += 1
    return count


if __name__ == "__main__":
    main()
