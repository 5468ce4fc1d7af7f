import itertools
from pathlib import Path

import numpy as np
import pytest

from sercli.fusion import (
    PRIOR_SEGMENTS,
    FunctionalHead,
    calibration_error,
    fit_head,
    fit_temperature,
    fuse,
    group_standardized,
    head_log_probabilities,
)
from sercli.normalization import FrameStats


def random_head(
    n_labels: int = 4, n_functionals: int = 6, seed: int = 0, weight: float = 1.0, hidden: tuple[int, ...] = ()
) -> FunctionalHead:
    rng = np.random.default_rng(seed)
    prior = FrameStats.of_moments(rng.normal(size=n_functionals), rng.uniform(1, 2, n_functionals), PRIOR_SEGMENTS)
    sizes = [n_functionals, *hidden, n_labels]
    layers = tuple((rng.normal(size=(a, b)), rng.normal(size=b)) for a, b in itertools.pairwise(sizes))
    return FunctionalHead(layers, prior, weight)


def test_a_linear_head_is_a_softmax_of_standardised_inputs():
    head = random_head()
    values = np.random.default_rng(1).normal(size=(5, 6))
    group = FrameStats.of(values)
    scores = head.log_probabilities(values, group)
    assert np.allclose(np.exp(scores).sum(axis=1), 1.0)
    stats = group + head.prior
    ((weights, bias),) = head.layers
    logits = ((values - stats.mean) / stats.std) @ weights + bias
    expected = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    assert np.allclose(np.exp(scores), expected)
    assert head.shape == (6, 4) and head.hidden == () and head.architecture == "linear"


def test_hidden_layers_are_rectified():
    head = random_head(hidden=(5, 3))
    values = np.random.default_rng(1).normal(size=(4, 6))
    group = FrameStats.of(values)
    stats = group + head.prior
    x = (values - stats.mean) / stats.std
    for weights, bias in head.layers[:-1]:
        x = np.maximum(x @ weights + bias, 0)
    logits = x @ head.layers[-1][0] + head.layers[-1][1]
    expected = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
    assert np.allclose(head.log_probabilities(values, group), expected)
    assert head.shape == (6, 4) and head.architecture == "hidden layers of 5, 3 units"


@pytest.mark.parametrize("hidden", [(), (5, 3)])
def test_head_round_trips_through_its_card_fields(hidden):
    import json

    head = random_head(weight=0.7, hidden=hidden)
    again = FunctionalHead.from_dict(json.loads(json.dumps(head.to_dict())))
    assert len(again.layers) == len(head.layers)
    assert all(np.allclose(a, b) for layer, other in zip(again.layers, head.layers) for a, b in zip(layer, other))
    assert again.prior.count == PRIOR_SEGMENTS and np.allclose(again.prior.mean, head.prior.mean)
    assert np.allclose(again.prior.std, head.prior.std) and again.weight == 0.7
    assert again.temperature == 1.0
    tempered = FunctionalHead(head.layers, head.prior, temperature=2.5)
    assert FunctionalHead.from_dict(json.loads(json.dumps(tempered.to_dict()))).temperature == 2.5


def test_a_card_written_with_a_logistic_regression_head_still_reads():
    head = random_head()
    ((weights, bias),) = head.layers
    fields = head.to_dict()
    del fields["layers"]
    fields |= {"coef": weights.T.tolist(), "intercept": bias.tolist()}  # as cards were written before hidden layers
    values = np.random.default_rng(3).normal(size=(4, 6))
    group = FrameStats.of(values)
    again = FunctionalHead.from_dict(fields)
    assert np.allclose(again.log_probabilities(values, group), head.log_probabilities(values, group))


def test_a_card_written_before_calibration_reads_at_temperature_one_and_a_bad_temperature_is_refused():
    fields = random_head().to_dict()
    del fields["temperature"]
    assert FunctionalHead.from_dict(fields).temperature == 1.0
    with pytest.raises(ValueError, match="temperature"):
        FunctionalHead.from_dict(fields | {"temperature": 0.0})


def test_a_temperature_flattens_the_fused_output_and_keeps_its_label():
    rng = np.random.default_rng(4)
    cnn = rng.dirichlet(np.ones(5), size=50)
    scores = np.log(rng.dirichlet(np.ones(5), size=50))
    plain, tempered = fuse(cnn, scores, 1.0), fuse(cnn, scores, 1.0, 3.0)
    assert np.allclose(tempered.sum(axis=1), 1.0, atol=1e-6)
    assert np.array_equal(plain.argmax(axis=1), tempered.argmax(axis=1))
    assert (
        np.all(tempered.max(axis=1) <= plain.max(axis=1) + 1e-6)
        and tempered.max(axis=1).mean() < plain.max(axis=1).mean() - 0.05
    )
    # softmax(logits / T): the tempered output is the plain one raised to 1 / T, renormalised
    expected = plain.astype(np.float64) ** (1 / 3.0)
    assert np.allclose(tempered, expected / expected.sum(axis=1, keepdims=True), atol=1e-5)
    head = FunctionalHead(random_head(n_labels=5).layers, random_head(n_labels=5).prior, 1.0, 3.0)
    assert np.allclose(head.fused(cnn, scores), tempered)


def overconfident(temperature: float, n: int = 4000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Labels drawn from softmax(logits), and the probabilities softmax(logits * temperature)."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(0, 1.5, size=(n, 6))
    truth = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    labels = np.array([rng.choice(6, p=p) for p in truth])
    sharp = np.exp(logits * temperature)
    return sharp / sharp.sum(axis=1, keepdims=True), labels


@pytest.mark.parametrize("temperature", [0.5, 1.0, 3.0])
def test_fit_temperature_finds_how_overconfident_the_probabilities_are(temperature):
    probabilities, labels = overconfident(temperature)
    assert fit_temperature(probabilities, labels) == pytest.approx(temperature, rel=0.15)


def test_calibration_error_is_near_zero_for_honest_probabilities_and_large_for_overconfident_ones():
    honest, labels = overconfident(1.0)
    sharp, _ = overconfident(3.0)
    assert calibration_error(honest, labels) < 0.03
    assert calibration_error(sharp, labels) > 0.15
    fitted = fuse(sharp, np.zeros_like(sharp), 0.0, fit_temperature(sharp, labels))
    assert calibration_error(fitted, labels) < 0.03


def test_fuse_is_a_product_of_experts():
    cnn = np.array([[0.7, 0.2, 0.1], [0.2, 0.3, 0.5]])
    head = np.log(np.array([[0.1, 0.8, 0.1], [1 / 3, 1 / 3, 1 / 3]]))
    fused = fuse(cnn, head, 1.0)
    assert np.allclose(fused.sum(axis=1), 1.0)
    assert np.allclose(fused[0], cnn[0] * [0.1, 0.8, 0.1] / np.sum(cnn[0] * [0.1, 0.8, 0.1]), atol=1e-6)
    assert fused[0].argmax() == 1  # the head overrules a confident network when it is more confident
    assert np.allclose(fused[1], cnn[1], atol=1e-6)  # a uniform head changes nothing
    assert np.allclose(fuse(cnn, head, 0.0), cnn, atol=1e-6)  # nor does a head of weight 0


def test_a_large_group_is_standardised_with_its_own_statistics_a_single_row_with_the_prior():
    rng = np.random.default_rng(2)
    prior = FrameStats.of_moments(np.zeros(3), np.ones(3), PRIOR_SEGMENTS)
    speaker = rng.normal(10.0, 3.0, size=(2000, 3))
    standardized = group_standardized(speaker, np.zeros(len(speaker)), prior)
    assert np.allclose(standardized.mean(axis=0), 0, atol=0.05) and np.allclose(standardized.std(axis=0), 1, atol=0.05)
    alone = group_standardized(speaker[:1], np.zeros(1), prior)
    # one row's own mean weighs 1 / (1 + PRIOR_SEGMENTS): it stays far from 0
    assert np.all(np.abs(alone) > 1.0)


def test_head_log_probabilities_standardise_each_group_apart():
    head = random_head()
    rng = np.random.default_rng(3)
    a, b = rng.normal(0, 1, (4, 6)), rng.normal(5, 2, (3, 6))
    together = head_log_probabilities(head, np.concatenate([a, b]), np.array([0] * 4 + [1] * 3))
    assert np.allclose(together[:4], head.log_probabilities(a, FrameStats.of(a)))
    assert np.allclose(together[4:], head.log_probabilities(b, FrameStats.of(b)))


def speakers_with_classes(n_speakers: int = 6, per_class: int = 20, n_labels: int = 3, seed: int = 4):
    """Functionals where the class shifts the first two dimensions and each speaker shifts all of them."""
    rng = np.random.default_rng(seed)
    rows, labels, groups = [], [], []
    for speaker in range(n_speakers):
        offset = rng.normal(0, 8, 5)
        for label in range(n_labels):
            values = rng.normal(0, 1, (per_class, 5)) + offset
            values[:, label % 2] += 2.5 * (1 if label < 2 else -1)
            rows.append(values)
            labels += [label] * per_class
            groups += [speaker] * per_class
    return np.concatenate(rows), np.array(labels), np.array(groups)


def test_fit_head_learns_classes_through_speaker_shifts():
    x, y, groups = speakers_with_classes(n_speakers=10)
    head = fit_head([x[groups < 6]], y[groups < 6], groups[groups < 6], 4, np.ones((groups < 6).sum()))
    test = groups >= 6
    predicted = head_log_probabilities(head, x[test], groups[test]).argmax(axis=1)
    assert np.mean(predicted == y[test]) > 0.7  # chance 1/3
    pooled = head_log_probabilities(head, x[test], np.zeros(test.sum())).argmax(axis=1)
    assert np.mean(predicted == y[test]) > np.mean(pooled == y[test]) + 0.1  # speakers told apart help
    assert head.shape == (5, 4) and head.hidden == (128, 64)
    assert np.exp(head_log_probabilities(head, x[test], groups[test]))[:, 3].max() < 1e-6  # never trained on


def test_a_head_with_hidden_layers_learns_what_functionals_mean_together():
    # the label is whether two functionals move the same way: no weighted sum of them tells it
    rng = np.random.default_rng(6)
    x = rng.normal(size=(640, 4))
    y = (x[:, 0] * x[:, 1] > 0).astype(int)
    groups = np.arange(len(x)) // 80
    train, test = groups < 6, groups >= 6

    def accuracy(hidden):
        head = fit_head([x[train]], y[train], groups[train], 2, np.ones(train.sum()), hidden=hidden)
        return np.mean(head_log_probabilities(head, x[test], groups[test]).argmax(axis=1) == y[test])

    assert accuracy((16,)) > 0.8 and accuracy(()) < 0.65


def test_fit_head_with_two_labels_scores_both():
    x, y, groups = speakers_with_classes(n_labels=2)
    head = fit_head([x], y, groups, 2, np.ones(len(y)))
    predicted = head_log_probabilities(head, x, groups).argmax(axis=1)
    assert set(predicted) == {0, 1} and np.mean(predicted == y) > 0.8


def test_fit_head_on_degraded_copies_leans_on_what_survives_them():
    # functional 0 tells the classes apart on clean clips; in the degraded copies it is raised by the noise and
    # tells nothing (as a noise floor moves energy); functional 1 tells them apart in both
    x, y, groups = speakers_with_classes(n_labels=2, n_speakers=8)
    rng = np.random.default_rng(3)
    x[:, 1] = 0.8 * np.where(y == 0, 1.0, -1.0) + rng.normal(0, 1, len(y))
    noisy = x.copy()
    noisy[:, 0] = rng.normal(20, 3, len(y))
    train, test = groups < 5, groups >= 5
    ones = np.ones(train.sum())
    clean_only = fit_head([x[train]], y[train], groups[train], 2, ones, hidden=())
    with_copies = fit_head([x[train], noisy[train]], y[train], groups[train], 2, ones, hidden=())
    clean_weights, copies_weights = clean_only.layers[0][0][:, 1], with_copies.layers[0][0][:, 1]  # of label 1
    assert abs(copies_weights[0]) < abs(clean_weights[0]) and abs(copies_weights[1]) > abs(clean_weights[1])

    def accuracy(head, values, groups):
        return np.mean(head_log_probabilities(head, values[test], groups).argmax(axis=1) == y[test])

    alone = np.arange(test.sum())  # each noisy clip standardised alone: the shift is not taken out
    assert accuracy(with_copies, noisy, alone) > accuracy(clean_only, noisy, alone) + 0.1
    assert accuracy(with_copies, x, groups[test]) > 0.75  # still right on clean clips, per speaker


def test_fit_head_weighs_a_small_corpus_as_much_as_a_large_one():
    # functional 0 tells the classes apart with opposite signs in the two corpora; functional 1, weakly, in
    # the small one only (a head with hidden layers could learn both corpora from that). Weighted per corpus, functional 0 cancels out and the small corpus is labelled
    # by functional 1; weighted per clip, the large corpus's sign wins and the small one is labelled backwards.
    from sercli.datasets import LabelledClip, balanced_weights

    x, y, groups = speakers_with_classes(n_labels=2, n_speakers=10, per_class=20)
    rng = np.random.default_rng(5)
    small = groups >= 8  # 2 speakers against 8
    sign = np.where(y == 1, 1.0, -1.0)
    x[:, 0] = 2.0 * sign * np.where(small, -1.0, 1.0) + rng.normal(0, 1, len(y))
    x[:, 1] = np.where(small, 1.0 * sign, 0.0) + rng.normal(0, 1, len(y))
    clips = [
        LabelledClip(Path(f"{i}.wav"), str(label), corpus="b" if s else "a")
        for i, (label, s) in enumerate(zip(y, small))
    ]
    by_corpus = fit_head([x], y, groups, 2, balanced_weights(clips), hidden=())  # linear: the weights alone decide
    by_clip = fit_head([x], y, groups, 2, np.ones(len(y)), hidden=())

    def accuracy(head):
        return np.mean(head_log_probabilities(head, x[small], groups[small]).argmax(axis=1) == y[small])

    assert accuracy(by_clip) < 0.4 and accuracy(by_corpus) > 0.6


@pytest.mark.parametrize(
    "bad",
    [
        {"layers": [{"weights": [[1.0]], "bias": [0.0]}]},  # one functional, one label
        {"layers": [{"weights": [[1.0, 2.0]], "bias": [0.0]}]},  # a bias that does not fit its weights
        {"layers": []},
        {"prior": {}},
    ],
)
def test_a_card_with_a_broken_head_is_refused(tmp_path, bad):
    import json

    from sercli import EMOTIONS
    from sercli.features import FeatureConfig
    from sercli.model import ModelCard, ModelError
    from sercli.prosody import n_functionals

    head = random_head(len(EMOTIONS), n_functionals(FeatureConfig().n_mfcc)).to_dict()
    card = ModelCard("m", "1", list(EMOTIONS), FeatureConfig().to_dict(), functional_head=head)
    card.write(tmp_path / "good.json")
    assert ModelCard.read(tmp_path / "good.json").head is not None
    fields = json.loads((tmp_path / "good.json").read_text())
    fields["functional_head"].update(bad)
    (tmp_path / "bad.json").write_text(json.dumps(fields))
    with pytest.raises(ModelError, match="functional_head"):
        ModelCard.read(tmp_path / "bad.json")


def test_evaluation_fuses_as_annotate_does(utterances, headed_model, tmp_path):
    import soundfile as sf
    from conftest import ESPEAK_RATE, speech_with_silences

    from sercli.datasets import LabelledClip
    from sercli.evaluation import extract_features, predict_clips
    from sercli.model import load_classifier
    from sercli.pipeline import annotate_files
    from sercli.vad import VadConfig

    classifier = load_classifier(headed_model)
    clips = []
    for i, utterance in enumerate(utterances[:3]):
        signal, _ = speech_with_silences([utterance])
        sf.write(tmp_path / f"{i}.wav", signal, ESPEAK_RATE)
        clips.append(LabelledClip(tmp_path / f"{i}.wav", "happy"))
    config = classifier.card.feature_config
    data = extract_features(clips, config, VadConfig()).windows(config.window_frames, config.window_hop_frames,
                                                                classifier.card.labels)  # fmt: skip
    assert data.functionals.shape == (3, classifier.card.head.shape[0])
    for mode in ("recording", "folder"):
        rows = [o.rows for o in annotate_files([c.path for c in clips], classifier, VadConfig(), normalization=mode)]
        assert all(len(r) == 1 for r in rows)  # one segment a clip: evaluation and annotation see the same
        fused = predict_clips(classifier.predict_proba, data, mode, classifier.card.prior, head=classifier.card.head)
        network = predict_clips(classifier.predict_proba, data, mode, classifier.card.prior)
        assert np.allclose(fused, [r[0].probabilities for r in rows], atol=2e-5)
        assert not np.allclose(fused, network, atol=1e-3)
