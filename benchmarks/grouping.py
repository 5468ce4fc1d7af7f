"""Which group of speech to standardise over: clip-level UA of cross-validation fold models on unseen actors,
their clean test clips standardised in groups of every size, alone or pooled with other speakers.

    python benchmarks/grouping.py ../shared/ravdess runs/speaker-multi-ema-seed0-2fold.cv --folds 2
    python benchmarks/grouping.py ../shared/ravdess ../shared/nemo runs/speaker-multi-ema-seed0-nemo-2fold.cv --folds 2
    python benchmarks/grouping.py ../shared/ravdess ../shared/nemo runs/speaker-multi-ema-seed0-nemo-2fold.cv --folds 2 --head

With several corpora (as ``benchmarks/training_options.py`` was given them, in the same order), the folds
are the ones it trained (:func:`sercli.datasets.corpus_folds`) and UA is also given per corpus.

Rows: one speaker's clips in random groups of N clips (N = 1 is each clip alone, ``all`` the whole
speaker), and clips of the fold's test speakers pooled at random in groups of N (``all``: the whole
test set, as ``annotate --normalize auto`` pools a folder of short clips of several speakers). The
seconds column is the mean speech per group. It is what ``sercli.groups.AUTO_OWN_GROUP_S`` is
measured by: the speech from which a recording standardised alone beats pooling it with a folder of
other speakers' clips.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from robustness import keras_predictors

from sercli.datasets import clip_groups, corpus_folds, find_clips, natural_key
from sercli.evaluation import cached_features, classification_metrics, clip_probabilities, standardize_groups
from sercli.fusion import head_log_probabilities
from sercli.training import TrainConfig, degraded_variants, training_head
from sercli.vad import VadConfig

SIZES = (1, 2, 4, 8, 16, 32, None)
"""Clips per group; None: all of them (the speaker, or the fold's whole test set)."""


def random_groups(members: np.ndarray, size: int | None, rng: np.random.Generator, first: int) -> np.ndarray:
    """Group labels from ``first`` on for ``members`` shuffled and cut in groups of ``size`` (None: one group)."""
    order = rng.permutation(len(members))
    labels = np.empty(len(members), dtype=int)
    labels[order] = first + (np.arange(len(members)) // (size or len(members)))
    return labels


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("corpora", type=Path, nargs="+", help="corpus folders, then a cross-validation's fold models")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--cache", type=Path, default=Path("runs/cache"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--head",
        action="store_true",
        help="fuse each fold model with a functional head fitted on the fold's other speakers (clean and degraded)",
    )
    args = parser.parse_args()
    *corpora, folds_folder = args.corpora
    predictors, priors, features = keras_predictors(folds_folder, args.folds)
    clips = [clip for corpus in corpora for clip in find_clips(corpus)]
    data = cached_features(args.cache, {"variant": 0}, clips, features, VadConfig()).windows(
        features.window_frames, features.window_hop_frames
    )
    folds = corpus_folds(clips, args.folds)
    names = list(dict.fromkeys(clip.corpus for clip in clips))
    heads = []
    if args.head:  # fitted on the clean clips of the fold's other speakers and their degraded copies
        copies = degraded_variants(clips, features, VadConfig(), TrainConfig(), args.cache, folds)
        training = [data] + [copy.windows(features.window_frames, features.window_hop_frames) for copy in copies]
        speakers_all = {clip.group for clip in clips}
        heads = [training_head([t.for_speakers(speakers_all - set(fold)) for t in training]) for fold in folds]
    fused = ", fused with functional heads fitted on each fold's other speakers" if args.head else ""
    print(
        f"{args.folds}-fold fold models of {folds_folder}{fused}, clean test clips, clip-level UA (seed {args.seed})\n"
    )
    by_corpus = " | ".join(f"UA {name}" for name in names) if len(names) > 1 else ""
    print(
        f"| grouping | clips per group | speech per group (s) | UA | neutral | happy | sad |{by_corpus and ' ' + by_corpus + ' |'}"
    )
    print("|---|---|---|---|---|---|---|" + "---|" * (len(names) if by_corpus else 0))
    for pooled in (False, True):
        for size in SIZES:
            rng = np.random.default_rng(args.seed)
            true, predicted, seconds, corpus = [], [], [], []
            for k, test_speakers in enumerate(folds):
                test = data.for_speakers(test_speakers)
                speakers = clip_groups(test.clips)
                groups = np.empty(len(test.clips), dtype=int)
                if pooled:
                    groups[:] = random_groups(np.arange(len(test.clips)), size, rng, 0)
                else:
                    for s, speaker in enumerate(sorted(set(speakers), key=natural_key)):
                        members = np.flatnonzero(speakers == speaker)
                        groups[members] = random_groups(members, size, rng, s * len(test.clips))
                x = standardize_groups(test.windows, test.clip_index, test.clip_stats, groups, priors[k])
                probabilities = clip_probabilities(predictors[k](x), test)
                if args.head:
                    scores = head_log_probabilities(heads[k], test.functionals, groups)
                    probabilities = heads[k].fused(probabilities, scores)
                predicted.append(probabilities.argmax(axis=1))
                true.append(test.clip_labels)
                corpus += [clip.corpus for clip in test.clips]
                clip_seconds = test.clip_stats[:, 0, 0] * features.hop_length / features.sample_rate
                seconds += [clip_seconds[groups == g].sum() for g in np.unique(groups)]
            true, predicted, corpus = np.concatenate(true), np.concatenate(predicted), np.array(corpus)
            metrics = classification_metrics(true, predicted, data.labels)
            recall = metrics["per_class_recall"]
            each = [classification_metrics(true[corpus == n], predicted[corpus == n], data.labels) for n in names]
            per_corpus = "".join(f" {m['unweighted_accuracy']:.3f} |" for m in each) if by_corpus else ""
            print(
                f"| {'several speakers' if pooled else 'one speaker'} | {size or 'all'} | {np.mean(seconds):.0f} "
                f"| {metrics['unweighted_accuracy']:.3f} | {recall['neutral']:.2f} | {recall['happy']:.2f} "
                f"| {recall['sad']:.2f} |{per_corpus}",
                flush=True,
            )


if __name__ == "__main__":
    main()
