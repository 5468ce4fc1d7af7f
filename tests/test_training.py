"""train and evaluate on a small synthetic RAVDESS-named corpus."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import sercli

from sercli import EMOTIONS
from sercli.datasets import LAYOUTS, find_clips, speaker_folds
from sercli.evaluation import classification_metrics
from sercli.model import ModelCard, card_path
from sercli.prosody import n_functionals


def test_ravdess_names_are_parsed():
    assert LAYOUTS["ravdess"].parse(Path("Actor_07/03-01-05-02-01-02-07.wav")) == ("angry", "07")
    for bad in ("03-02-05-02-01-02-07.wav", "03-01-09-01-01-01-01.wav", "hello.wav"):
        with pytest.raises(ValueError):
            LAYOUTS["ravdess"].parse(Path(bad))


def test_folds_hold_out_whole_actors_balanced_by_sex():
    actors = [f"{a:02d}" for a in range(1, 21)]
    folds = speaker_folds(actors, 5)
    assert sorted(a for fold in folds for a in fold) == actors
    assert all(sum(int(a) % 2 for a in fold) == 2 for fold in folds)
    assert folds[0] == ["01", "02", "11", "12"]
    # 2 folds: 5 men and 5 women each, not all men in one fold (what plain round-robin gives)
    assert speaker_folds(actors, 2)[0] == ["01", "02", "05", "06", "09", "10", "13", "14", "17", "18"]


def test_metrics_on_known_predictions():
    true = np.array([0, 0, 1, 1, 1, 1, 2, 2])
    predicted = np.array([0, 1, 1, 1, 1, 0, 2, 0])
    metrics = classification_metrics(true, predicted, list(EMOTIONS))
    assert metrics["accuracy"] == pytest.approx(5 / 8)
    assert metrics["unweighted_accuracy"] == pytest.approx((0.5 + 0.75 + 0.5) / 3)
    assert metrics["per_class_recall"]["calm"] == pytest.approx(0.75)
    assert metrics["per_class_recall"]["sad"] is None
    assert metrics["confusion"][1][:3] == [1, 3, 0]


def test_the_ua_interval_resamples_speakers_only_when_every_clip_has_one():
    from sercli.datasets import LabelledClip
    from sercli.evaluation import metrics_with_interval

    true = np.array([0, 1, 0, 1, 0, 1, 0, 1])
    predicted = np.array([0, 1, 0, 1, 1, 0, 1, 0])  # speakers a and b all right, c and d all wrong
    clips = [LabelledClip(Path(f"{i}.wav"), EMOTIONS[t], "abcd"[i // 2]) for i, t in enumerate(true)]
    by_speaker = metrics_with_interval(true, predicted, clips, list(EMOTIONS))
    assert by_speaker["ua_ci95_resampled"] == "speakers" and by_speaker["unweighted_accuracy"] == 0.5
    assert by_speaker["ua_ci95"][0] < 0.5 < by_speaker["ua_ci95"][1]
    clips[0] = LabelledClip(Path("0.wav"), EMOTIONS[0], None)
    assert metrics_with_interval(true, predicted, clips, list(EMOTIONS))["ua_ci95_resampled"] == "clips"


def test_both_wav_and_flac_clips_are_found(ravdess):
    clips = find_clips(ravdess)
    assert len(clips) == 32 and {c.speaker for c in clips} == {"01", "02", "03", "04"}
    assert {c.path.suffix for c in clips} == {".wav", ".flac"}


@pytest.mark.slow
def test_train_cross_validates_by_actor_and_writes_model_and_card(ravdess, tmp_path):
    out = tmp_path / "tiny.keras"
    result = sercli("train", ravdess, "-o", out, "--cv-folds", "2", "--epochs", "1", "--batch-size", "16")
    assert "fold 2/2" in result.stderr and "epoch 1/1" in result.stderr
    assert out.exists() and out.with_suffix(".tflite").exists()
    card = ModelCard.read(card_path(out))
    folds = card.metrics["cross_validation"]["folds"]
    assert [fold["test_speakers"] for fold in folds] == [["01", "02"], ["03", "04"]]
    for fold in folds:
        assert not set(fold["validation_speakers"]) & set(fold["test_speakers"])
        assert fold["metrics"]["n"] == 16
    pooled = card.metrics["cross_validation"]["pooled"]
    assert pooled["n"] == 32 and pooled["ua_ci95_resampled"] == "speakers"
    assert pooled["ua_ci95"][0] <= pooled["unweighted_accuracy"] <= pooled["ua_ci95"][1]
    assert card.training["training_speakers"] == ["01", "02", "03", "04"]
    assert card.training["data"].startswith("RAVDESS") and card.labels == list(EMOTIONS)
    assert card.training["clips"] == 32 and len(card.training["data_sha256"]) == 64
    assert card.training["versions"]["tensorflow"]
    # trained on windows every 0.5 s; the card tells annotate to cut them every 2.5 s, as validation did
    assert card.training["hyperparameters"]["window_hop_frames"] == 20 and card.features["window_hop_frames"] == 100
    assert not list(tmp_path.glob("*.cv.json"))  # the fold checkpoint is removed once the model is saved
    assert card.normalization == "speaker" and card.training["hyperparameters"]["variants"] == 4
    # the functional head is fitted on the training clips and fused in the cross-validation's figures
    assert card.head is not None and card.head.shape == (n_functionals(card.feature_config.n_mfcc), 8)
    assert card.training["functional_head"] == (
        "hidden layers of 128, 64 units, fitted on 32 training clips, clean and as 4 degraded copies, "
        "every corpus and every class within it weighing alike"
    )
    assert 0 <= pooled["network_only_ua"] <= 1 and card.training["hyperparameters"]["ema_momentum"] == 0.99
    # the fused output's temperature is fitted on the folds' held-out clips
    calibration = card.training["calibration"]
    assert calibration == card.metrics["cross_validation"]["calibration"]
    assert calibration["fitted_on"] == "2-fold cross-validation" and calibration["clips"] == 32
    assert card.head.temperature == calibration["temperature"] and 0.25 <= calibration["temperature"] <= 10
    shown = sercli("models", "--model", out, env={**os.environ, "COLUMNS": "200"}).stdout
    assert f"temperature {calibration['temperature']:.2f}, fitted on 32 clips of 2-fold" in shown
    # the fold models stay for the robustness benchmark, which scores them beside the openSMILE baseline
    benchmark = Path(__file__).parents[1] / "benchmarks" / "robustness.py"
    table = subprocess.run(
        [
            sys.executable,
            benchmark,
            ravdess,
            "--folds",
            "2",
            "--cnn",
            f"tiny={out}.cv",
            "--cnn",
            f"tiny fused={out}.cv:speaker+head",
            "--baseline",
            "--condition",
            "clean",
            "--condition",
            "telephone",
            "--cache",
            tmp_path / "cache",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "| condition | tiny | tiny fused | openSMILE per speaker | openSMILE global |" in table
    assert "| clean | " in table and "| telephone | " in table
    # ... with the features the fold models were trained on, which their folder records
    from sercli.cross_validation import fold_features

    assert fold_features(Path(f"{out}.cv")) == card.feature_config
    # ... and the fine-tuning benchmark fine-tunes each of them into fold models laid out the same way
    tuned = tmp_path / "tuned.cv"
    script = Path(__file__).parents[1] / "benchmarks" / "corpus_fine_tuning.py"
    run = [sys.executable, script, ravdess, "--cv", f"{out}.cv", "--folds", "2", "--epochs", "1", "--fixed"]
    printed = subprocess.run(
        [*run, "--out", tuned, "--cache", tmp_path / "cache"], capture_output=True, text=True, check=True
    ).stdout
    assert "fold 1: epoch 1/1" in printed and "fold 2: network UA ravdess " in printed
    assert "pooled, 2 folds: network UA ravdess " in printed
    assert fold_features(tuned) == card.feature_config
    for k in range(2):
        prior, base_prior = (
            json.loads((folder / f"fold-{k}.prior.json").read_text()) for folder in (tuned, Path(f"{out}.cv"))
        )
        assert prior["frames"] == base_prior["frames"] and np.allclose(prior["mean"], base_prior["mean"])
        assert len(json.loads((tuned / "network.json").read_text())[str(k)]["predicted"]) == 16
    # a head refitted on the card's corpus is calibrated anew on those fold models, as the training run was
    refitted = tmp_path / "refitted.json"
    refitted.write_text(card_path(out).read_text())
    script = Path(__file__).parents[1] / "scripts" / "refit_card_head.py"
    subprocess.run(
        [sys.executable, script, refitted, ravdess, "--cv", f"{out}.cv", "--folds", "2", "--cache", tmp_path / "cache"],
        capture_output=True,
        check=True,
    )
    again = json.loads(refitted.read_text())
    assert again["training"]["calibration"]["fitted_on"] == "the 2-fold cross-validation of its recipe (tiny.keras.cv)"
    assert again["training"]["calibration"]["temperature"] == pytest.approx(calibration["temperature"], rel=1e-3)
    assert again["functional_head"]["temperature"] == again["training"]["calibration"]["temperature"]
    # ... and the card states the figures of those folds, as the training run stated them
    refit_cv, trained_cv = again["metrics"]["cross_validation"], card.metrics["cross_validation"]
    assert refit_cv["pooled"]["unweighted_accuracy"] == pytest.approx(trained_cv["pooled"]["unweighted_accuracy"])
    assert [fold["test_speakers"] for fold in refit_cv["folds"]] == [["01", "02"], ["03", "04"]]
    assert refit_cv["calibration"] == again["training"]["calibration"] and "tiny.keras.cv" in refit_cv["protocol"]


@pytest.mark.slow
def test_train_with_validation_speakers_reports_their_metrics(ravdess, tmp_path):
    out = tmp_path / "val.keras"
    sercli("train", ravdess, "-o", out, "--cv-folds", "0", "--epochs", "1", "--val-speakers", "4")
    card = ModelCard.read(card_path(out))
    assert card.training["training_speakers"] == ["01", "02", "03"]
    assert card.training["validation_speakers"] == ["04"]
    assert card.metrics["validation"]["n"] == 8
    assert card.training["calibration"]["fitted_on"] == "the validation speakers"
    assert card.training["calibration"]["clips"] == 8
    assert card.head.temperature == card.training["calibration"]["temperature"]


def test_evaluate_reports_known_answers(ravdess, tmp_path):
    """A model that always answers 'angry': accuracy 1/8, UA 1/8, recall 1 for angry only."""
    import keras

    from sercli.export import save_model
    from sercli.features import FeatureConfig, signal_windows

    config = FeatureConfig()
    inputs = keras.Input((config.window_frames, config.n_mfcc, 1))
    bias = np.where(np.array(EMOTIONS) == "angry", 10.0, 0.0)
    dense = keras.layers.Dense(
        8, activation="softmax", kernel_initializer="zeros", bias_initializer=keras.initializers.Constant(bias)
    )
    model = keras.Model(inputs, dense(keras.layers.Flatten()(inputs)))
    card = ModelCard(name="angry", version="test", labels=list(EMOTIONS), features=config.to_dict())
    path = tmp_path / "angry.keras"
    save_model(model, path, card, signal_windows(np.random.default_rng(0).normal(0, 0.1, 32000).astype(np.float32)))
    plot = tmp_path / "cm.png"
    result = sercli("evaluate", ravdess, "--model", path, "--json", "--plot", plot)
    metrics = json.loads(result.stdout)
    assert metrics["n"] == 32
    assert metrics["accuracy"] == pytest.approx(1 / 8)
    assert metrics["unweighted_accuracy"] == pytest.approx(1 / 8)
    assert metrics["per_class_recall"]["angry"] == 1.0 and metrics["per_class_recall"]["sad"] == 0.0
    assert [row[EMOTIONS.index("angry")] for row in metrics["confusion"]] == [4] * 8
    # sure of every answer and right on one in 8: the confidence column cannot be trusted
    assert metrics["mean_confidence"] > 0.99 and metrics["calibration_error"] == pytest.approx(7 / 8, abs=0.01)
    assert plot.stat().st_size > 1000


def test_train_refuses_a_folder_without_known_names(tmp_path):
    result = sercli("train", tmp_path, "-o", tmp_path / "m.keras", code=1)
    assert "cannot tell the layout" in result.stderr and "--layout" in result.stderr


def test_training_commands_name_the_extra_when_tensorflow_is_missing(tmp_path, random_model, ravdess):
    without_tensorflow = (
        "import sys; sys.modules['tensorflow'] = None; from sercli.cli import main; "
        "sys.argv = ['sercli', *sys.argv[1:]]; main()"
    )
    for args in (
        ["train", ravdess, "-o", tmp_path / "m.keras"],
        ["export-model", random_model],
        ["annotate", ravdess, "--model", random_model],
    ):
        result = subprocess.run(
            [sys.executable, "-c", without_tensorflow, *map(str, args)], capture_output=True, text=True, check=False
        )
        assert result.returncode == 1, args
        assert "pip install 'sercli[train]'" in result.stderr and len(result.stderr.strip().splitlines()) == 1
    # the bundled LiteRT model needs no TensorFlow
    result = subprocess.run(
        [sys.executable, "-c", without_tensorflow, "annotate", ravdess / "Actor_01", "-o", "-", "-q"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0 and len(result.stdout.splitlines()) > 8


@pytest.mark.slow
def test_weight_averaging_returns_the_average_with_and_without_validation(ravdess):
    """Momentum 1 freezes the average at the weights after the first batch: one epoch or two give the same
    model, early stopping included; without averaging, the second epoch changes the weights."""
    from sercli.evaluation import extract_features
    from sercli.features import FeatureConfig
    from sercli.training import TrainConfig, fit
    from sercli.vad import VadConfig

    data = extract_features(find_clips(ravdess, "ravdess"), FeatureConfig(), VadConfig()).windows(100, 100)
    train, validation = data.for_speakers(["01", "02", "03"]), data.for_speakers(["04"])

    def trained(epochs, momentum, validation=None):
        config = TrainConfig(epochs=epochs, min_epochs=0, batch_size=16, variants=0, ema_momentum=momentum)
        model, _ = fit([train], validation, config)
        return [w.numpy() for w in model.trainable_weights]

    def same(a, b):  # Keras swaps averaged weights in by adding and subtracting: equal to rounding
        return all(np.allclose(x, y, rtol=0, atol=1e-6) for x, y in zip(a, b, strict=True))

    assert not same(trained(1, None), trained(2, None))
    assert same(trained(2, 0.0), trained(2, None))  # momentum 0: the average is the weights as trained
    assert same(trained(1, 1.0), trained(2, 1.0))
    assert same(trained(1, 1.0, validation), trained(2, 1.0, validation))


@pytest.mark.parametrize("normalization", ["speaker", "none"])
def test_a_folds_held_out_clips_are_fused_as_evaluation_fuses_them(ravdess, normalization):
    """What the cross-validation scores (and calibrates on) is what evaluate gives with the fold's head; with
    the windows as they are (``none``), the head standardises each clip with its prior alone."""
    import keras

    from sercli.architecture import build_cnn_bilstm
    from sercli.cross_validation import held_out_probabilities, held_out_record
    from sercli.evaluation import extract_features, predict_clips
    from sercli.features import FeatureConfig
    from sercli.training import TrainConfig, training_head, training_prior
    from sercli.vad import VadConfig

    keras.utils.set_random_seed(0)
    data = extract_features(find_clips(ravdess, "ravdess"), FeatureConfig(), VadConfig()).windows(100, 100)
    train, test = data.for_speakers(["01", "02", "03"]), data.for_speakers(["04"])
    model = build_cnn_bilstm(np.zeros(40), np.ones(40))
    config = TrainConfig(normalization=normalization)
    prior = training_prior(train, config)
    network, fused = held_out_probabilities(model, prior, [train], test, config)
    predict = lambda w: model.predict(w[..., None], verbose=0)
    assert np.allclose(network, predict_clips(predict, test, normalization, prior), atol=1e-6)
    expected = predict_clips(predict, test, normalization, prior, head=training_head([train]))
    assert fused.shape == (8, 8) and np.allclose(fused, expected, atol=1e-6)
    assert not np.allclose(fused, network, atol=1e-3)
    # cross_validate checkpoints, and the refit script reads, the same record: the probabilities whole
    record = held_out_record(model, prior, [train], test, config, ["04"], ["03"], 7)
    assert record["probabilities"] == fused.tolist() and record["predicted"] == fused.argmax(axis=1).tolist()
    assert (
        record["predicted_network"] == network.argmax(axis=1).tolist() and record["true"] == test.clip_labels.tolist()
    )
    assert (record["test_speakers"], record["validation_speakers"], record["best_epoch"]) == (["04"], ["03"], 7)


@pytest.mark.slow
def test_cv_spread_scores_folds_speakers_and_every_test_set(ravdess, tmp_path):
    """Actors 01 and 02 all right, 03 and 04 all wrong: known figures at every level."""
    clips = find_clips(ravdess, "ravdess")
    checkpoint = {}
    for k, (speakers, shift) in enumerate([(["01", "02"], 0), (["03", "04"], 1)]):
        true = [EMOTIONS.index(c.label) for c in clips if c.group in speakers]
        checkpoint[str(k)] = {"test_speakers": speakers, "true": true, "predicted": [(t + shift) % 8 for t in true]}
    path = tmp_path / "cv.json"
    path.write_text(json.dumps(checkpoint))
    script = Path(__file__).parents[1] / "benchmarks" / "cv_spread.py"
    run = [sys.executable, script, ravdess, path, "--men", "1", "--women", "1"]
    printed = subprocess.run(run, capture_output=True, text=True, check=True).stdout
    assert "fold 1 (test 01, 02): UA 1.000" in printed and "fold 2 (test 03, 04): UA 0.000" in printed
    assert "pooled: UA 0.500" in printed
    assert "by speaker: 01 1.00, 02 1.00, 03 0.00, 04 0.00" in printed
    assert "4 test sets of 1 men and 1 women" in printed
    assert "median 0.500, lowest 0.000, highest 1.000" in printed


def test_a_resumed_cross_validation_refuses_other_features_than_its_fold_models_take(tmp_path):
    from sercli.cross_validation import cross_validate, fold_features
    from sercli.features import FeatureConfig
    from sercli.model import ModelError
    from sercli.training import TrainConfig

    checkpoint = tmp_path / "run.cv.json"
    (tmp_path / "run.cv").mkdir()
    (tmp_path / "run.cv" / "features.json").write_text(json.dumps(FeatureConfig(hop_length=160).to_dict()))
    with pytest.raises(ModelError, match="take other features"):
        cross_validate([], None, [], TrainConfig(), FeatureConfig(), checkpoint)
    assert fold_features(tmp_path / "run.cv") == FeatureConfig(hop_length=160)  # left as it was


def test_sercli_train_defaults_are_the_training_configs():
    """cli.py repeats TrainConfig's defaults (importing it would import TensorFlow for --help)."""
    import inspect

    from sercli.cli import train
    from sercli.training import TrainConfig

    defaults = {name: p.default for name, p in inspect.signature(train).parameters.items()}
    config = TrainConfig()
    for option, field in [
        ("epochs", "epochs"),
        ("patience", "patience"),
        ("batch_size", "batch_size"),
        ("learning_rate", "learning_rate"),
        ("seed", "seed"),
        ("normalize", "normalization"),
        ("variants", "variants"),
        ("spec_augment", "spec_augment"),
        ("freeze_conv", "freeze_convolutions"),
    ]:
        assert defaults[option] == getattr(config, field), option


def test_a_cross_validation_summary_gives_each_corpus_its_own_figures():
    from sercli.cross_validation import fold_summary
    from sercli.datasets import LabelledClip

    labels = ["neutral", "happy"]

    def fold(speakers, corpus, right):
        """Each speaker: one clip of each label, the first ``right`` of them (in order) answered right."""
        clips = [LabelledClip(Path(f"{s}-{t}.wav"), labels[t], s, corpus=corpus) for s in speakers for t in (0, 1)]
        true = [labels.index(c.label) for c in clips]
        predicted = [t if i < right else 1 - t for i, t in enumerate(true)]
        return clips, true, predicted

    a_clips, a_true, a_predicted = fold(["a1", "a2"], "ravdess", 4)  # all right
    b_clips, b_true, b_predicted = fold(["b1", "b2"], "nemo", 2)  # half right
    records = [
        {"test_speakers": ["a1", "a2"], "validation_speakers": [], "best_epoch": 3, "true": a_true},
        {"test_speakers": ["b1", "b2"], "validation_speakers": [], "best_epoch": 5, "true": b_true},
    ]
    records[0] |= {"predicted": a_predicted, "predicted_network": a_true, "probabilities": np.eye(2)[a_predicted]}
    records[1] |= {"predicted": b_predicted, "predicted_network": b_true, "probabilities": None}
    summary = fold_summary(records, [a_clips, b_clips], labels, "speaker")
    pooled = summary["pooled"]
    assert pooled["unweighted_accuracy"] == 0.75 and pooled["network_only_ua"] == 1.0
    assert pooled["by_corpus"]["ravdess"]["unweighted_accuracy"] == 1.0
    assert pooled["by_corpus"]["nemo"]["unweighted_accuracy"] == 0.5
    assert summary["mean_ua"] == 0.75 and summary["std_ua"] == 0.25
    assert [f["best_epoch"] for f in summary["folds"]] == [3, 5] and "calibration" not in summary  # fold 2 has none
    assert summary["protocol"].startswith("2-fold leave-speakers-out") and summary["protocol"].endswith("per speaker")
    records[1]["probabilities"] = np.full((4, 2), 0.5)
    assert (
        fold_summary(records, [a_clips, b_clips], labels, "speaker", "my folds")["calibration"]["fitted_on"]
        == "my folds"
    )
