import os
import re

from conftest import sercli

from sercli import EMOTIONS
from sercli.model import ModelCard, bundled_model_path, card_path, file_sha256, load_classifier
from sercli.prosody import n_functionals


def test_bundled_model_is_shipped_with_a_complete_card():
    path = bundled_model_path(".keras")
    card = ModelCard.read(card_path(path))
    assert card.sha256 == file_sha256(path)
    assert card.exports["litert"]["sha256"] == file_sha256(path.with_suffix(".tflite"))
    assert path.stat().st_size < 20e6
    assert card.labels == list(EMOTIONS)
    assert "RAVDESS" in card.training["data"] and "nEMO" in card.training["data"]
    assert "CC BY-NC-SA 4.0" in card.training["data"]
    assert len(card.training["training_speakers"]) == 29  # RAVDESS actors 01-20 and nEMO's 9 speakers
    assert card.normalization == "speaker"  # annotate standardises over groups of speech (auto by default)
    prior = card.prior  # the training speech's statistics, added to every group's
    assert prior.count > 0 and prior.mean.shape == (40,) and (prior.std > 0).all()
    head = card.head  # fused with the network by annotate
    assert head is not None and head.shape == (n_functionals(40), len(EMOTIONS))
    assert "degraded copies" in card.training["functional_head"]
    # its confidence is calibrated on the held-out clips of its recipe's cross-validation, both corpora
    calibration = card.training["calibration"]
    assert head.temperature == calibration["temperature"] > 1 and calibration["clips"] > 3000
    assert calibration["calibration_error"][1] < calibration["calibration_error"][0]
    # the 5-fold cross-validation of its recipe, each corpus scored on its own speakers, fused and calibrated as shipped
    cv = card.metrics["cross_validation"]
    assert len(cv["folds"]) == 5 and set(cv["pooled"]["by_corpus"]) == {"ravdess", "nemo"}
    assert cv["pooled"]["by_corpus"]["ravdess"]["n"] == 1200 and cv["pooled"]["by_corpus"]["nemo"]["n"] == 2235
    assert cv["calibration"] == calibration and "nemo-5fold.cv" in cv["protocol"]
    robustness = card.metrics["robustness_5fold"]  # its recipe's fold models (both corpora) on RAVDESS actors
    systems = robustness["unweighted_accuracy"]
    assert set(systems) >= {"bundled", "bundled, mixed", "bundled, per clip", "network only"}
    assert set(systems["bundled"]) >= {"clean", "white 10 dB", "telephone", "babble 10 dB"}
    assert "benchmarks/robustness.py" in robustness["command"] and "+head" in robustness["command"]
    assert "fold models: runs/speaker-multi-ema-hop25-seed0-nemo-5fold.cv" in robustness["protocol"]
    assert "--head-corpus ../shared/nemo" in robustness["command"] and card.features["hop_length"] == 400
    assert set(robustness["clean_recall"]["bundled"]) == set(EMOTIONS)
    assert load_classifier(bundled_model_path()).card.name == card.name


def test_models_shows_the_figure_the_card_is_judged_by_within_80_columns():
    shown = sercli("models", env={**os.environ, "COLUMNS": "80"}).stdout
    card = ModelCard.read(card_path(bundled_model_path()))
    by_corpus = card.metrics["cross_validation"]["pooled"]["by_corpus"]
    ravdess, nemo = (by_corpus[name]["unweighted_accuracy"] for name in ("ravdess", "nemo"))
    assert re.search(rf"UA on new speakers +│ ravdess {ravdess:.3f}, nemo {nemo:.3f} \(5-fold", shown)
    assert f"ravdess UA {ravdess:.3f}" in shown  # the cross-validation's own table says it too
    robustness = card.metrics["robustness_5fold"]
    assert "robustness_5fold: clip-level UA" in shown and "telephone" in shown
    sad = robustness["clean_recall"]["bundled"]["sad"]
    assert "recall by class, clean" in shown and re.search(rf"│ bundled +│.*│ {sad:.2f} │", shown)
    assert "functional head" in shown and f"temperature {card.head.temperature:.2f}" in shown
    assert "…" not in shown and max(map(len, shown.splitlines())) <= 80
