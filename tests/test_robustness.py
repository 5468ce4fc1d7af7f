"""The robustness benchmark on a tiny synthetic corpus: every system under every condition, same folds."""

from pathlib import Path

import numpy as np
import pytest

from sercli.datasets import LabelledClip, find_clips, speaker_folds
from sercli.evaluation import ClipFeatures, iter_clips
from sercli.features import FeatureConfig
from sercli.fusion import head_log_probabilities
from sercli.model import load_classifier
from sercli.robustness import (
    CnnFolds,
    OpenSmileBaseline,
    condition_data,
    fold_heads,
    format_table,
    robustness_table,
)
from sercli.vad import VadConfig

CONDITIONS = ["clean", "white 10 dB", "babble 10 dB", "telephone", "reverb 0.3 s", "gain -20 dB"]


@pytest.fixture(scope="module")
def table(ravdess, normalized_model, tmp_path_factory):
    pytest.importorskip("opensmile")
    clips = find_clips(ravdess, "ravdess")
    folds = speaker_folds([c.speaker for c in clips], 2)
    model = load_classifier(normalized_model)
    systems = [
        CnnFolds("cnn", [model.predict_proba] * len(folds), model.card.labels, FeatureConfig(), "speaker"),
        OpenSmileBaseline("openSMILE", per_speaker=True),
    ]
    cache = tmp_path_factory.mktemp("cache")
    return robustness_table(systems, clips, folds, CONDITIONS, FeatureConfig(), VadConfig(), cache=cache)


@pytest.mark.slow  # the benchmark: several models per condition
def test_every_system_is_scored_on_every_clip_under_every_condition(table):
    assert list(table) == ["cnn", "openSMILE"]
    for system in table.values():
        assert list(system) == CONDITIONS
        for metrics in system.values():
            assert metrics["n"] == 32 and 0 <= metrics["unweighted_accuracy"] <= 1
            folds = metrics["fold_unweighted_accuracy"]
            assert len(folds) == 2 and min(folds) <= metrics["unweighted_accuracy"] <= max(folds)


@pytest.mark.slow  # the benchmark: several models per condition
def test_the_baseline_learns_the_fixture_and_degradations_cost_it(table):
    """The fixture's emotions differ in speaking rate, which eGeMAPS measures: far above chance (1/8) when clean."""
    baseline = table["openSMILE"]
    assert baseline["clean"]["unweighted_accuracy"] >= 0.5
    assert baseline["white 10 dB"]["unweighted_accuracy"] < baseline["clean"]["unweighted_accuracy"]


@pytest.mark.slow  # the benchmark: several models per condition
def test_the_table_has_a_row_per_condition(table):
    text = format_table(table, per_class=True)
    assert text.splitlines()[0] == "| condition | cnn | openSMILE |"
    for condition in CONDITIONS:
        assert f"| {condition} | " in text
    assert "per-class recall, openSMILE:" in text


@pytest.mark.slow  # the benchmark: several models per condition
def test_cached_conditions_are_named_by_their_folds_and_seed(ravdess):
    """Babble mixes other test speakers of a fold: 2-fold and 4-fold babble must not share a cache file."""
    clips = [clip for clip in find_clips(ravdess, "ravdess") if clip.label in ("neutral", "angry")]
    signals = list(iter_clips(clips, 16000))

    def digest(folds, seed=0):
        return condition_data("babble 10 dB", clips, signals, folds, FeatureConfig(), VadConfig(), seed).digest

    two_folds = speaker_folds([c.speaker for c in clips], 2)
    assert digest(two_folds) == digest(two_folds)
    assert digest(two_folds) != digest(speaker_folds([c.speaker for c in clips], 4))
    assert digest(two_folds) != digest(two_folds, seed=1)


def test_each_fold_head_learns_from_every_corpus_but_never_from_its_test_speakers():
    """Surprised clips come only from nEMO speaker A0: the head of the fold that tests A0 never saw the
    class, the other fold's head learned it from the second corpus."""
    rng = np.random.default_rng(0)
    clips, rows = [], []
    for corpus, speaker, labels in [
        ("ravdess", "01", ["neutral", "angry"]),
        ("ravdess", "02", ["neutral", "angry"]),
        ("ravdess", "03", ["neutral", "angry"]),
        ("ravdess", "04", ["neutral", "angry"]),
        ("nemo", "A0", ["neutral", "angry", "surprised"]),
        ("nemo", "B0", ["neutral", "angry"]),
    ]:
        for n in range(12):
            label = labels[n % len(labels)]
            clips.append(LabelledClip(Path(f"{speaker}-{n}.wav"), label, speaker, corpus=corpus))
            rows.append(np.eye(3)[["neutral", "angry", "surprised"].index(label)] * 3 + rng.normal(0, 0.3, 3))
    clean = ClipFeatures([[np.zeros((1, 40))] for _ in clips], clips, np.array(rows, dtype=np.float32))
    noisy = ClipFeatures(clean.frames, clips, clean.functionals + rng.normal(0, 0.3, clean.functionals.shape))
    heads = fold_heads([clean, noisy], [["01", "02", "A0"], ["03", "04", "B0"]])
    assert len(heads) == 2
    surprised = np.array([clip.label == "surprised" for clip in clips])
    x, groups = clean.functionals[surprised], np.zeros(surprised.sum())
    probabilities = [np.exp(head_log_probabilities(head, x, groups)) for head in heads]
    assert probabilities[0][:, 2].max() < 0.01  # labels in EMOTIONS order: neutral, angry, surprised
    assert probabilities[1].argmax(axis=1).tolist() == [2] * surprised.sum()


def test_a_corpus_without_some_of_the_models_labels_is_scored_in_the_models_label_space(ravdess, normalized_model):
    """nEMO has 6 of the 8 labels: a fold model may still answer calm, and that answer is simply wrong."""
    clips = [clip for clip in find_clips(ravdess, "ravdess") if clip.label in ("neutral", "angry")]
    folds = speaker_folds([c.speaker for c in clips], 2)
    model = load_classifier(normalized_model)
    always_calm = [lambda w: np.eye(len(model.card.labels))[np.full(len(w), 1)]] * len(folds)
    systems = [
        CnnFolds("cnn", [model.predict_proba] * len(folds), model.card.labels, FeatureConfig(), "speaker"),
        CnnFolds("calm", always_calm, model.card.labels, FeatureConfig(), "speaker"),
    ]
    table = robustness_table(systems, clips, folds, ["clean"], FeatureConfig(), VadConfig(), labels=model.card.labels)
    assert model.card.labels[1] == "calm"
    for system in table.values():
        recall = system["clean"]["per_class_recall"]
        assert list(recall) == model.card.labels and recall["calm"] is None and recall["neutral"] is not None
    assert table["calm"]["clean"]["unweighted_accuracy"] == 0.0
