"""Own labels end to end: train, evaluate and annotate with a 3-label table, and fine-tune the bundled model."""

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
from conftest import sercli

from sercli.datasets import find_clips
from sercli.model import ModelCard, bundled_model_path, card_path
from sercli.writers import read_results

SPEED = {"neutral": "slow", "calm": "slow", "happy": "slow", "sad": "medium", "angry": "medium"}
"""The ravdess fixture's emotions differ in espeak speaking rate: regrouped into 3 labels of our own."""


@pytest.fixture(scope="module")
def table(ravdess, tmp_path_factory):
    """A labels table over the ravdess fixture: labels slow/medium/fast, actors as speakers; actor 4's
    clips are also joined into one long recording, labelled by parts (start_s/end_s)."""
    folder = tmp_path_factory.mktemp("own")
    rows, pieces, cursor = [], [], 0.0
    for clip in find_clips(ravdess, "ravdess"):
        label = SPEED.get(clip.label, "fast")
        if clip.speaker != "04":
            rows.append({"path": os.path.relpath(clip.path, folder), "label": label, "speaker": f"actor{clip.speaker}"})
            continue
        signal, rate = sf.read(clip.path, dtype="float32")
        pieces += [signal, np.zeros(rate // 2, np.float32)]
        rows.append(
            {
                "path": "long.flac",
                "label": label,
                "speaker": "actor04",
                "start_s": cursor,
                "end_s": cursor + len(signal) / rate,
            }
        )
        cursor += len(signal) / rate + 0.5
    sf.write(folder / "long.flac", np.concatenate(pieces), rate)
    path = folder / "labels.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


@pytest.fixture(scope="module")
def own_model(table, tmp_path_factory):
    out = tmp_path_factory.mktemp("own-model") / "own.keras"
    sercli("train", table, "-o", out, "--cv-folds", "2", "--epochs", "1", "--variants", "0", "--batch-size", "16")
    return out


@pytest.mark.slow
def test_the_output_layer_and_card_follow_the_table_labels(own_model):
    card = ModelCard.read(card_path(own_model))
    assert card.labels == ["fast", "medium", "slow"]
    assert card.training["label_counts"] == {"fast": 12, "medium": 8, "slow": 12}
    assert card.training["data"] == "labels table labels.csv"
    folds = card.metrics["cross_validation"]["folds"]
    assert [fold["test_speakers"] for fold in folds] == [["actor01", "actor02"], ["actor03", "actor04"]]
    assert list(card.metrics["cross_validation"]["pooled"]["per_class_recall"]) == card.labels


@pytest.mark.slow
def test_annotate_writes_a_probability_column_per_model_label(own_model, ravdess, tmp_path):
    out = tmp_path / "rows.parquet"
    sercli("annotate", ravdess / "Actor_01", "--model", own_model.with_suffix(".tflite"), "-o", out, "-q")
    table = read_results(out)
    assert [c for c in table.columns if c.startswith("prob_")] == ["prob_fast", "prob_medium", "prob_slow"]
    speech = table[table["label"].notna()]
    assert set(speech["label"]) <= {"fast", "medium", "slow"}
    assert np.allclose(speech[["prob_fast", "prob_medium", "prob_slow"]].sum(axis=1), 1.0, atol=1e-3)
    summary = tmp_path / "summary.csv"
    sercli("export", out, summary, "--per-file")
    assert "share_medium" in summary.read_text().splitlines()[0]
    sercli("plot", out, "-o", tmp_path / "plots")
    assert (tmp_path / "plots" / "batch.png").stat().st_size > 1000


@pytest.mark.slow
def test_evaluate_gives_ua_with_a_bootstrap_interval_and_per_speaker_figures(own_model, table, tmp_path):
    plot = tmp_path / "confusion.png"
    result = sercli("evaluate", table, "--model", own_model, "--by", "speaker", "--json", "--plot", plot)
    metrics = json.loads(result.stdout)
    assert metrics["n"] == 32 and metrics["labels"] == ["fast", "medium", "slow"]
    low, high = metrics["ua_ci95"]
    assert low <= metrics["unweighted_accuracy"] <= high and metrics["ua_ci95_resampled"] == "speakers"
    assert list(metrics["by_speaker"]) == ["actor01", "actor02", "actor03", "actor04"]
    assert sum(m["n"] for m in metrics["by_speaker"].values()) == 32
    assert plot.stat().st_size > 1000
    printed = sercli("evaluate", table, "--model", own_model, "--by", "speaker").stderr
    assert "95 % CI" in printed and "by speaker" in printed and "actor04" in printed


@pytest.mark.slow
def test_a_fixed_split_is_used_and_evaluate_takes_its_test_rows(table, tmp_path):
    frame = pd.read_csv(table)
    frame["path"] = [str((table.parent / p).resolve()) for p in frame["path"]]
    frame["split"] = frame["speaker"].map({"actor01": "train", "actor02": "train", "actor03": "validation"})
    frame["split"] = frame["split"].fillna("test")
    fixed = tmp_path / "fixed.csv"
    frame.to_csv(fixed, index=False)
    out = tmp_path / "fixed.keras"
    result = sercli("train", fixed, "-o", out, "--epochs", "1", "--variants", "0")
    assert "fixes the split: no cross-validation" in result.stderr
    card = ModelCard.read(card_path(out))
    assert card.training["training_speakers"] == ["actor01", "actor02"]
    assert card.metrics["validation"]["n"] == 8 and card.metrics["test"]["n"] == 8
    assert "cross_validation" not in card.metrics
    evaluated = json.loads(sercli("evaluate", fixed, "--model", out, "--json").stdout)
    assert evaluated["n"] == 8


def test_training_errors_are_one_line(table, tmp_path):
    frame = pd.read_csv(table)
    frame.loc[0, "label"] = "fsat"  # a typo: a label with one example
    typo = table.parent / "typo.csv"
    frame.to_csv(typo, index=False)
    result = sercli("train", typo, "-o", tmp_path / "m.keras", code=1)
    assert "label 'fsat' has 1 training clips; each label needs at least 3" in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "typo.csv" in errors[0]  # (TensorFlow's oneDNN notice may precede it)
    result = sercli("evaluate", typo, "--model", bundled_model_path(), code=1)
    assert "typo.csv: label 'fast' is not one of the model's labels (neutral, calm," in result.stderr


def test_dataset_writes_the_table_train_would_use(ravdess, tmp_path):
    out = tmp_path / "ravdess.csv"
    result = sercli("dataset", "ravdess", ravdess, "-o", out)
    assert "32 clips, 4 speakers" in result.stderr
    frame = pd.read_csv(out, dtype=str)
    assert list(frame.columns) == ["path", "label", "speaker"] and len(frame) == 32
    assert frame["path"][0].startswith("../") and set(frame["speaker"]) == {"01", "02", "03", "04"}


def keras_model(path: Path):
    import keras

    return keras.models.load_model(path, compile=False)


def conv_kernels(model) -> list[np.ndarray]:
    import keras

    return [layer.get_weights()[0] for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]


@pytest.mark.slow
def test_fine_tuning_the_bundled_model_on_new_labels_gets_a_new_head(table, tmp_path):
    out = tmp_path / "tuned.keras"
    sercli(
        "train",
        table,
        "--from",
        "bundled",
        "--freeze-conv",
        "-o",
        out,
        "--cv-folds",
        "0",
        "--epochs",
        "1",
        "--variants",
        "0",
    )
    card = ModelCard.read(card_path(out))
    bundled = ModelCard.read(card_path(bundled_model_path(".keras")))
    assert card.labels == ["fast", "medium", "slow"]
    assert card.training["fine_tuned_from"]["sha256"] == bundled.sha256
    assert card.training["hyperparameters"]["learning_rate"] == 3e-4
    shown = sercli("models", "--model", out).stdout
    assert "fine-tuned from" in shown and "sercli-cnn-bilstm" in shown and "fast 12" in shown
    base, tuned = keras_model(bundled_model_path(".keras")), keras_model(out)
    assert tuned.output_shape == (None, 3)
    for before, after in zip(conv_kernels(base), conv_kernels(tuned), strict=True):
        np.testing.assert_array_equal(before, after)  # frozen
    # the BiLSTMs started from the bundled weights and moved
    lstm = next(i for i, layer in enumerate(base.layers) if "bidirectional" in layer.name)
    before, after = base.layers[lstm].get_weights()[0], tuned.layers[lstm].get_weights()[0]
    assert not np.array_equal(before, after) and np.corrcoef(before.ravel(), after.ravel())[0, 1] > 0.9


@pytest.mark.slow
def test_fine_tuning_on_the_same_labels_keeps_the_head(ravdess, tmp_path):
    out = tmp_path / "same.keras"
    sercli("train", ravdess, "--from", "bundled", "-o", out, "--cv-folds", "0", "--epochs", "1", "--variants", "0")
    base, tuned = keras_model(bundled_model_path(".keras")), keras_model(out)
    head_before, head_after = base.layers[-1].get_weights()[0], tuned.layers[-1].get_weights()[0]
    assert head_after.shape == head_before.shape == (256, 8)
    assert np.corrcoef(head_before.ravel(), head_after.ravel())[0, 1] > 0.9  # trained on, not re-initialised
    assert not any(np.array_equal(a, b) for a, b in zip(conv_kernels(base), conv_kernels(tuned), strict=True))


def test_fine_tuning_refuses_a_model_of_other_normalization(table, random_model, tmp_path):
    result = sercli("train", table, "--from", random_model, "-o", tmp_path / "m.keras", code=1)
    assert "trained with none normalisation, not speaker" in result.stderr


def test_a_new_softmax_layer_starts_from_the_base_weights_of_the_labels_the_base_has():
    from sercli import EMOTIONS
    from sercli.architecture import build_cnn_bilstm, fine_tuning_model

    base = build_cnn_bilstm(np.zeros(40), np.ones(40))
    tuned = fine_tuning_model(base, list(EMOTIONS), ["angry", "neutral", "bored"], freeze_convolutions=True)
    (base_kernel, base_bias), (kernel, bias) = base.layers[-1].get_weights(), tuned.layers[-1].get_weights()
    assert kernel.shape == (256, 3)
    np.testing.assert_array_equal(kernel[:, 0], base_kernel[:, EMOTIONS.index("angry")])
    np.testing.assert_array_equal(kernel[:, 1], base_kernel[:, EMOTIONS.index("neutral")])
    assert not any(np.array_equal(kernel[:, 2], column) for column in base_kernel.T)  # a new label starts afresh
    assert bias[0] == base_bias[EMOTIONS.index("angry")]
    assert [layer.trainable for layer in tuned.layers if "conv2d" in layer.name] == [False, False]
