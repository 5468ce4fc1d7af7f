import os

from conftest import sercli

from sercli import EMOTIONS
from sercli.model import ModelCard, bundled_model_path, card_path, file_sha256, load_classifier


def test_bundled_model_is_shipped_with_a_complete_card():
    path = bundled_model_path(".keras")
    card = ModelCard.read(card_path(path))
    assert card.sha256 == file_sha256(path)
    assert card.exports["litert"]["sha256"] == file_sha256(path.with_suffix(".tflite"))
    assert path.stat().st_size < 20e6
    cross_validation = card.metrics["cross_validation"]
    assert len(cross_validation["folds"]) >= 2
    tested = sorted(a for fold in cross_validation["folds"] for a in fold["test_actors"])
    assert tested == list(range(1, 21))
    assert set(cross_validation["pooled"]["per_class_recall"]) == set(EMOTIONS)
    assert "CC BY-NC-SA 4.0" in card.training["data"]
    assert card.normalization == "speaker"  # annotate standardises over groups of speech (auto by default)
    prior = card.prior  # the training speech's statistics, added to every group's
    assert prior.count == 1000 and prior.mean.shape == (40,) and (prior.std > 0).all()
    assert "scripts/add_card_prior.py" in card.training["normalization_prior"]
    robustness = card.metrics["robustness_2fold"]["unweighted_accuracy"]
    assert set(robustness["bundled"]) >= {"clean", "white 10 dB", "telephone", "babble 10 dB", "reverb 0.9 s"}
    assert "benchmarks/robustness.py" in card.metrics["robustness_2fold"]["command"]
    five_fold = card.metrics["robustness_5fold"]["unweighted_accuracy"]
    assert {"bundled", "openSMILE per speaker"} <= set(five_fold)
    assert set(five_fold["bundled"]) == set(robustness["bundled"])  # the same conditions as the 2-fold table
    assert load_classifier(bundled_model_path()).card.name == card.name


def test_models_shows_the_figure_the_card_is_judged_by_within_80_columns():
    shown = sercli("models", env={**os.environ, "COLUMNS": "80"}).stdout
    card = ModelCard.read(card_path(bundled_model_path()))
    clean = card.metrics["robustness_5fold"]["unweighted_accuracy"]["bundled"]["clean"]
    assert f"UA on new speakers │ {clean:.3f}, clean (5-fold" in shown
    assert "robustness_5fold: clip-level UA" in shown and "telephone" in shown
    assert "robustness_2fold" not in shown  # superseded by the 5-fold table; it stays in the card
    assert "cross_validation: UA" in shown and "2-fold, per fold" in shown
    assert "…" not in shown and max(map(len, shown.splitlines())) <= 80
