"""The robustness benchmark on a tiny synthetic corpus: every system under every condition, same folds."""

import pytest

from sercli.datasets import find_clips, speaker_folds
from sercli.evaluation import iter_clips
from sercli.features import FeatureConfig
from sercli.model import load_classifier
from sercli.robustness import CnnFolds, OpenSmileBaseline, condition_data, format_table, robustness_table
from sercli.vad import VadConfig

CONDITIONS = ["clean", "white 10 dB", "babble 10 dB", "telephone", "reverb 0.3 s", "gain -20 dB"]


pytestmark = pytest.mark.slow  # the benchmark: several models per condition


@pytest.fixture(scope="module")
def table(ravdess, normalized_model, tmp_path_factory):
    pytest.importorskip("opensmile")
    clips = find_clips(ravdess, "ravdess")
    folds = speaker_folds([c.speaker for c in clips], 2)
    model = load_classifier(normalized_model)
    systems = [
        CnnFolds("cnn", [model.predict_proba] * len(folds), FeatureConfig(), "speaker"),
        OpenSmileBaseline("openSMILE", per_speaker=True),
    ]
    cache = tmp_path_factory.mktemp("cache")
    return robustness_table(systems, clips, folds, CONDITIONS, FeatureConfig(), VadConfig(), cache=cache)


def test_every_system_is_scored_on_every_clip_under_every_condition(table):
    assert list(table) == ["cnn", "openSMILE"]
    for system in table.values():
        assert list(system) == CONDITIONS
        for metrics in system.values():
            assert metrics["n"] == 32 and 0 <= metrics["unweighted_accuracy"] <= 1
            folds = metrics["fold_unweighted_accuracy"]
            assert len(folds) == 2 and min(folds) <= metrics["unweighted_accuracy"] <= max(folds)


def test_the_baseline_learns_the_fixture_and_degradations_cost_it(table):
    """The fixture's emotions differ in speaking rate, which eGeMAPS measures: far above chance (1/8) when clean."""
    baseline = table["openSMILE"]
    assert baseline["clean"]["unweighted_accuracy"] >= 0.5
    assert baseline["white 10 dB"]["unweighted_accuracy"] < baseline["clean"]["unweighted_accuracy"]


def test_the_table_has_a_row_per_condition(table):
    text = format_table(table, per_class=True)
    assert text.splitlines()[0] == "| condition | cnn | openSMILE |"
    for condition in CONDITIONS:
        assert f"| {condition} | " in text
    assert "per-class recall, openSMILE:" in text


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
