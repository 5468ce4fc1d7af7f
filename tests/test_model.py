import json
import shutil
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from sercli import EMOTIONS
from sercli.features import signal_windows
from sercli.model import ModelCard, ModelError, card_path, file_sha256, load_classifier
from sercli.robustness import card_entry


@pytest.fixture(scope="module")
def speech_windows(utterances):
    import soxr
    from conftest import ESPEAK_RATE

    return signal_windows(soxr.resample(np.concatenate(utterances), ESPEAK_RATE, 16000))


def test_litert_export_matches_keras(random_model, speech_windows):
    keras_probabilities = load_classifier(random_model).predict_proba(speech_windows)
    litert_probabilities = load_classifier(random_model.with_suffix(".tflite")).predict_proba(speech_windows)
    assert keras_probabilities.shape == litert_probabilities.shape == (len(speech_windows), len(EMOTIONS))
    np.testing.assert_allclose(litert_probabilities, keras_probabilities, atol=2e-3)
    card = ModelCard.read(card_path(random_model))
    assert card.exports["litert"]["max_abs_difference_from_keras"] < 2e-3


@pytest.mark.parametrize("return_sequences", [True, False])
def test_unrolled_bidirectional_lstm_equals_the_layer(return_sequences):
    import keras

    from sercli.export import unrolled_bidirectional_lstm

    keras.utils.set_random_seed(2)
    layer = keras.layers.Bidirectional(keras.layers.LSTM(16, return_sequences=return_sequences))
    inputs = np.random.default_rng(2).normal(size=(3, 7, 5)).astype(np.float32)
    layer(inputs)  # builds the weights; the bias is zero but for the forget gate's, so randomise it too
    layer.forward_layer.cell.bias.assign(np.random.default_rng(3).normal(size=64))
    expected = layer(inputs).numpy()
    symbolic = keras.Input((7, 5), batch_size=3)
    rebuilt = keras.Model(symbolic, unrolled_bidirectional_lstm(layer, symbolic))(inputs).numpy()
    assert rebuilt.shape == expected.shape == ((3, 7, 32) if return_sequences else (3, 32))
    np.testing.assert_allclose(rebuilt, expected, atol=1e-5)


def test_litert_pads_a_short_last_batch(random_model, speech_windows):
    classifier = load_classifier(random_model.with_suffix(".tflite"))
    some = speech_windows[:3]
    np.testing.assert_allclose(
        classifier.predict_proba(some), classifier.predict_proba(np.concatenate([some] * 30))[:3], atol=1e-6
    )
    assert classifier.predict_proba(speech_windows[:0]).shape == (0, len(EMOTIONS))


def copy_model(random_model, folder):
    for suffix in (".keras", ".tflite", ".json"):
        shutil.copy(random_model.with_suffix(suffix), folder / f"m{suffix}")
    return folder / "m.keras"


def edit_card(path, **changes):
    card = json.loads(card_path(path).read_text())
    for key, value in changes.items():
        card[key] = value
    card_path(path).write_text(json.dumps(card))


@pytest.mark.parametrize("suffix", [".keras", ".tflite"])
def test_model_whose_card_does_not_match_is_refused(random_model, tmp_path, suffix):
    path = copy_model(random_model, tmp_path)
    card = json.loads(card_path(path).read_text())
    edit_card(path, features={**card["features"], "window_frames": 50})
    with pytest.raises(ModelError, match="card describes"):
        load_classifier(path.with_suffix(suffix))


def test_card_with_other_labels_is_refused(random_model, tmp_path):
    path = copy_model(random_model, tmp_path)
    edit_card(path, labels=["happy", "sad"])
    with pytest.raises(ModelError, match="labels"):
        load_classifier(path)


@pytest.mark.parametrize("suffix", [".keras", ".tflite"])
def test_file_that_is_not_a_model_is_refused(random_model, tmp_path, suffix):
    path = copy_model(random_model, tmp_path).with_suffix(suffix)
    path.write_text("this is not a model")
    with pytest.raises(ModelError, match="is not a"):
        load_classifier(path)


def test_missing_card_is_refused(random_model, tmp_path):
    path = copy_model(random_model, tmp_path)
    card_path(path).unlink()
    with pytest.raises(ModelError, match="card .* not found"):
        load_classifier(path)


def test_backends_give_the_same_rows(random_model, tmp_path, utterances):
    import soundfile as sf
    from conftest import ESPEAK_RATE, sercli, speech_with_silences

    signal, _ = speech_with_silences(utterances)
    sf.write(tmp_path / "speech.wav", signal, ESPEAK_RATE)
    tables = []
    for suffix in (".keras", ".tflite"):
        out = tmp_path / f"out{suffix}.csv"
        sercli("annotate", tmp_path / "speech.wav", "-o", out, "-m", random_model.with_suffix(suffix))
        tables.append(pd.read_csv(out))
    keras_rows, litert_rows = tables
    pd.testing.assert_frame_equal(keras_rows.iloc[:, :4], litert_rows.iloc[:, :4])
    probabilities = [f"prob_{e}" for e in EMOTIONS]
    np.testing.assert_allclose(keras_rows[probabilities], litert_rows[probabilities], atol=2e-3)


def test_litert_interpreters_in_parallel_agree_with_one(random_model, speech_windows):
    from concurrent.futures import ThreadPoolExecutor

    windows = np.concatenate([speech_windows] * 4)
    one = load_classifier(random_model.with_suffix(".tflite"), threads=1).predict_proba(windows)
    several = load_classifier(random_model.with_suffix(".tflite"), threads=3)
    np.testing.assert_allclose(several.predict_proba(windows), one, atol=1e-6)
    with ThreadPoolExecutor(5) as callers:  # calls from several threads at once
        results = list(callers.map(several.predict_proba, [windows[i::5] for i in range(5)]))
    for i, result in enumerate(results):
        np.testing.assert_allclose(result, one[i::5], atol=1e-6)


def test_export_model_rewrites_only_the_litert_export(random_model, tmp_path, speech_windows):
    for suffix in (".keras", ".json"):
        shutil.copy(random_model.with_suffix(suffix), tmp_path / f"copy{suffix}")
    keras_path = tmp_path / "copy.keras"
    keras_bytes = keras_path.read_bytes()
    result = subprocess.run(
        [sys.executable, "-m", "sercli", "export-model", keras_path], capture_output=True, text=True, check=True
    )
    assert "copy.tflite" in result.stderr
    assert keras_path.read_bytes() == keras_bytes
    card = ModelCard.read(card_path(keras_path))
    assert card.exports["litert"]["sha256"] == file_sha256(tmp_path / "copy.tflite")
    np.testing.assert_allclose(
        load_classifier(tmp_path / "copy.tflite").predict_proba(speech_windows),
        load_classifier(keras_path).predict_proba(speech_windows),
        atol=2e-3,
    )


def test_headline_prefers_five_fold_figures_then_cross_validation_then_two_fold_tables():
    two_fold = {
        "protocol": "2-fold leave-speakers-out, clip-level UA",
        "unweighted_accuracy": {"bundled": {"per speaker": 0.6, "each clip alone": 0.5}},
    }
    cv = {"pooled": {"unweighted_accuracy": 0.55}, "folds": [{}, {}, {}]}
    robustness = {
        "protocol": "5-fold leave-actors-out, clip-level UA",
        "unweighted_accuracy": {"bundled": {"clean": 0.52, "telephone": 0.43}},
    }
    card = ModelCard(name="m", version="0", labels=["a", "b"], features={})
    assert card.headline() is None
    card.metrics = {"robustness_2fold": two_fold}
    assert card.headline() == "0.600, per speaker (2-fold leave-speakers-out)"
    card.metrics["cross_validation"] = cv
    assert card.headline() == "0.550 (3-fold cross-validation)"
    card.metrics["robustness_5fold"] = robustness
    assert card.headline() == "0.520, clean (5-fold leave-actors-out)"
    # the model's own cross-validation of 5 folds comes first, each corpus's figure when it has several
    by_corpus = {"ravdess": {"unweighted_accuracy": 0.6}, "nemo": {"unweighted_accuracy": 0.5}}
    card.metrics["cross_validation"] = {
        "pooled": {"unweighted_accuracy": 0.55, "by_corpus": by_corpus},
        "folds": [{}] * 5,
    }
    assert card.headline() == "ravdess 0.600, nemo 0.500 (5-fold cross-validation)"


def test_a_robustness_table_enters_the_card_with_its_clean_recall():
    def metrics(ua, recall):
        return {"unweighted_accuracy": ua, "per_class_recall": recall, "n": 8}

    table = {
        "bundled": {"clean": metrics(0.612345, {"sad": 0.25, "calm": None}), "telephone": metrics(0.5, {})},
        "network only": {"clean": metrics(0.4, {"sad": 0.123456, "calm": 1.0}), "telephone": metrics(0.3, {})},
    }
    entry = card_entry(table, "2-fold leave-actors-out", "python benchmarks/robustness.py x")
    assert entry["unweighted_accuracy"] == {
        "bundled": {"clean": 0.6123, "telephone": 0.5},
        "network only": {"clean": 0.4, "telephone": 0.3},
    }
    assert entry["clean_recall"] == {
        "bundled": {"sad": 0.25, "calm": None},
        "network only": {"sad": 0.1235, "calm": 1.0},
    }
    assert entry["protocol"] == "2-fold leave-actors-out" and entry["command"].endswith("robustness.py x")
    del table["bundled"]["clean"]
    assert "clean_recall" not in card_entry(table, "", "")  # recall only where every system has clean clips
