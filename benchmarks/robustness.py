"""Robustness benchmark: clip-level UA on unseen actors under degraded conditions, models side by side.

Scores the fold models of leave-actors-out cross-validations (``<model>.cv/fold-<k>.keras``,
as ``sercli train --cv-folds N`` or ``benchmarks/training_options.py`` leave them)
and the openSMILE + logistic-regression baseline under the same folds, on every
condition of ``sercli.augment.CONDITIONS``:

    python benchmarks/robustness.py ../shared/ravdess --folds 5 \\
        --cnn bundled=models/sercli-cnn-bilstm.keras.cv --baseline --cache runs/cache

Another corpus the fold models were trained on is tested the same way, on its own speakers' folds; the heads
are fitted on every corpus of the training run, named in its order (babble needs two test speakers a fold):

    python benchmarks/robustness.py ../shared/nemo --folds 5 --head-corpus ../shared/ravdess \
        --head-corpus ../shared/nemo --cnn "bundled=runs/speaker-multi-ema-hop25-seed0-nemo-5fold.cv:speaker+head"

Prints one Markdown table (rows: conditions; columns: systems), per-class recall
with ``--per-class``, and writes every figure as JSON with ``--json``.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
from pathlib import Path

from sercli.augment import CONDITIONS
from sercli.datasets import corpus_folds, find_clips, label_order, natural_key, speaker_folds
from sercli.evaluation import cached_features
from sercli.features import FeatureConfig
from sercli.model import ModelCard
from sercli.robustness import CnnFolds, OpenSmileBaseline, card_entry, fold_heads, format_table, robustness_table
from sercli.vad import VadConfig


def keras_predictors(folder: Path, folds: int) -> tuple[list, list, FeatureConfig]:
    """One batched predict function per fold model in ``folder``, each fold's prior
    (``fold-<k>.prior.json``; none for models trained before priors) and the features the fold models
    take (``features.json``, as :func:`sercli.cross_validation.cross_validate` records them)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras

    # TensorFlow: not at the top
    from sercli.cross_validation import fold_features, fold_model_path, read_prior
    from sercli.training import predict_windows

    paths = [fold_model_path(folder, k) for k in range(folds)]
    models = [keras.models.load_model(path, compile=False) for path in paths]
    priors = [read_prior(path.with_suffix(".prior.json")) for path in paths]
    features = fold_features(folder)
    return [lambda w, m=m: predict_windows(m, w) for m in models], priors, features


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("corpus", type=Path, help="the test corpus: RAVDESS, or another layout sercli knows")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument(
        "--cnn",
        action="append",
        default=[],
        metavar="NAME=FOLDER[:GROUPING][+head]",
        help="fold models of a cross-validation; test clips standardised per speaker (default), "
        "mixed (a fold's test clips together: a folder of clips of several speakers), recording (per clip) or none; "
        "+head fuses each fold model with a functional head fitted on its training clips, clean and as the "
        "degraded copies of today's TrainConfig (cached by the training run)",
    )
    parser.add_argument(
        "--head-corpus",
        action="append",
        default=[],
        type=Path,
        metavar="FOLDER",
        help="the corpora the fold models were trained on beside the test corpus, in the order training_options.py "
        "was given them (the test corpus among them where it was not first): +head also fits each fold's head on "
        "their clips of the fold's training speakers, as the recipe does",
    )
    parser.add_argument(
        "--baseline", action="store_true", help="add openSMILE eGeMAPS + LogReg, per speaker and global"
    )
    parser.add_argument("--condition", action="append", choices=sorted(CONDITIONS), help="default: all")
    parser.add_argument("--cache", type=Path, help="folder keeping degraded features between runs")
    parser.add_argument("--per-class", action="store_true")
    parser.add_argument("--json", type=Path, help="write all metrics here")
    parser.add_argument(
        "--card", type=Path, help="also store the UA table in this model card (metrics.robustness_<N>fold)"
    )
    args = parser.parse_args()

    vad = VadConfig()
    clips = find_clips(args.corpus)
    folds = speaker_folds([c.speaker for c in clips], args.folds)

    def log(message: str) -> None:
        print(message, file=sys.stderr)

    specs = []  # (name, folder of fold models, grouping[+head])
    for spec in args.cnn:
        name, _, target = spec.partition("=")
        folder, _, grouping = target.partition(":")
        specs.append((name, folder, grouping))
    loaded = {folder: keras_predictors(Path(folder), args.folds) for _, folder, _ in specs}  # one load a folder
    taken = {config for _, _, config in loaded.values()}
    if len(taken) > 1:
        parser.error(f"the fold models take different features, which one table cannot hold: {taken}")
    features = taken.pop() if taken else FeatureConfig()
    trained = args.head_corpus if args.corpus in args.head_corpus else [args.corpus, *args.head_corpus]
    trained_clips = [clip for corpus in trained for clip in find_clips(corpus)]  # in training's order: cached
    labels = label_order({clip.label for clip in trained_clips})  # the networks' outputs
    heads = None
    if any(grouping.endswith("+head") for _, _, grouping in specs):
        # imported here: sercli.training imports TensorFlow, which openSMILE's worker process (it imports
        # this module afresh) must not have beside it
        from sercli.training import TrainConfig, degraded_variants

        head_folds = corpus_folds(trained_clips, args.folds)  # each corpus's own folds: the test corpus's are `folds`
        clean = cached_features(args.cache, {"variant": 0}, trained_clips, features, vad)
        copies = degraded_variants(trained_clips, features, vad, TrainConfig(), args.cache, head_folds, log=log)
        heads = fold_heads([clean, *copies], head_folds)
    systems = []
    for name, folder, grouping in specs:
        grouping, _, head = grouping.partition("+")
        predictors, priors, _ = loaded[folder]
        systems.append(
            CnnFolds(name, predictors, labels, features, grouping or "speaker", priors, heads if head else None)
        )
    if args.baseline:
        systems.append(OpenSmileBaseline("openSMILE per speaker", per_speaker=True, cache=args.cache))
        systems.append(OpenSmileBaseline("openSMILE global", per_speaker=False, cache=args.cache))
    conditions = args.condition or list(CONDITIONS)
    table = robustness_table(systems, clips, folds, conditions, features, vad, cache=args.cache, log=log, labels=labels)
    speakers = sorted({c.speaker for c in clips}, key=natural_key)
    tested = sorted({len(fold) for fold in folds})
    protocol = (
        f"{args.folds}-fold leave-actors-out over {clips[0].corpus} actors {speakers[0]}-{speakers[-1]} ({len(speakers)} "
        f"actors, {'-'.join(map(str, tested))} tested a fold), clip-level UA; each condition applied alone to the test clips"
    )
    protocol += "".join(f"; {s.name}: {s.description}" for s in systems if isinstance(s, CnnFolds))
    if loaded:
        protocol += f"; fold models: {', '.join(loaded)} (benchmarks/training_options.py)"
    if heads:
        corpora = ", ".join(dict.fromkeys(clip.corpus for clip in trained_clips))
        protocol += (
            f"; heads fitted on the clean and degraded clips ({corpora}) of every speaker a fold does not test, "
            "its early-stopping speakers included"
        )
    print(protocol + "\n")
    print(format_table(table, args.per_class))
    if args.json:
        args.json.write_text(json.dumps(table, indent=1))
    if args.card:
        card = ModelCard.read(args.card)
        command = "python benchmarks/robustness.py " + shlex.join(sys.argv[1:])
        card.metrics[f"robustness_{args.folds}fold"] = card_entry(table, protocol, command)
        card.write(args.card)


if __name__ == "__main__":
    main()
