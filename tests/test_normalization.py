"""Normalisation over segments, recordings and folders: exact statistics, same rows however the audio arrives."""

import numpy as np
import pytest
import soundfile as sf
from conftest import ESPEAK_RATE, speech_with_silences

from sercli import pipeline
from sercli.audio import iter_audio
from sercli.model import load_classifier
from sercli.normalization import FrameStats, standardize
from sercli.pipeline import annotate_files, model_normalization, segment_windows
from sercli.vad import VadConfig


def test_statistics_of_parts_add_up_to_the_whole():
    frames = np.random.default_rng(0).normal(3.0, 2.0, (1000, 40)).astype(np.float32)
    whole = FrameStats.of(frames)
    parts = FrameStats.of(frames[:1]) + FrameStats.of(frames[1:377]) + FrameStats.of(frames[377:])
    assert parts.count == whole.count == 1000
    assert np.allclose(parts.mean, frames.mean(axis=0), atol=1e-9)
    assert np.allclose(parts.std, frames.std(axis=0, dtype=np.float64), atol=1e-9)
    assert (
        FrameStats.from_array(
            np.stack([FrameStats.of(frames[:500]).to_array(), FrameStats.of(frames[500:]).to_array()])
        ).count
        == 1000
    )
    standardized = standardize(frames[None], whole)[0]
    assert np.allclose(standardized.mean(axis=0), 0, atol=1e-4) and np.allclose(standardized.std(axis=0), 1, atol=1e-4)


def test_constant_input_stays_finite():
    stats = FrameStats.of(np.full((50, 40), -100.0))
    assert np.isfinite(standardize(np.full((1, 100, 40), -100.0), stats)).all()
    assert np.array_equal(FrameStats.empty(40).std, np.ones(40))


@pytest.fixture(scope="module")
def recordings(tmp_path_factory, utterances):
    """one/long.wav (about 40 s, 12 utterances: several decoding blocks), one/short.wav, two/other.wav (loud)."""
    root = tmp_path_factory.mktemp("normalization")
    (root / "one").mkdir()
    (root / "two").mkdir()
    long_signal, _ = speech_with_silences(utterances * 4, silence_s=1.2)
    sf.write(root / "one" / "long.wav", long_signal, ESPEAK_RATE)
    short, _ = speech_with_silences(utterances[:1])
    sf.write(root / "one" / "short.wav", 0.3 * short, ESPEAK_RATE)
    other, _ = speech_with_silences(utterances[1:])
    sf.write(root / "two" / "other.wav", np.clip(3 * other, -1, 1), ESPEAK_RATE)
    return root


@pytest.fixture(scope="module")
def classifier(normalized_model):
    return load_classifier(normalized_model)


def rows_of(outcomes):
    return {(row.path, row.segment): (row.start_s, row.end_s, row.probabilities) for o in outcomes for row in o.rows}


def test_recording_mode_equals_the_whole_recording_standardised_at_once(recordings, classifier):
    path = recordings / "one" / "long.wav"
    features, vad = classifier.card.feature_config, VadConfig()
    blocks = list(iter_audio(path, 16000))
    assert len(blocks) > 1  # the file really arrives in several blocks
    [outcome] = annotate_files([path], classifier, vad, normalization="recording")
    whole = np.concatenate(blocks)  # the same samples, segmented and analysed in one piece
    segments = list(segment_windows([whole], features, vad))
    stats = sum((s for _, _, s, _ in segments), FrameStats.empty(features.n_mfcc))
    assert len(outcome.rows) == len(segments) >= 10
    for row, (segment, windows, _, _) in zip(outcome.rows, segments):
        assert (row.start_s, row.end_s) == pytest.approx((segment.start_s, segment.end_s), abs=1e-6)
        expected = classifier.predict_proba(standardize(windows, stats + classifier.card.prior)).mean(axis=0)
        assert np.allclose(row.probabilities, expected, atol=2e-5)


@pytest.mark.parametrize("mode", ["recording", "folder"])
@pytest.mark.parametrize("model", ["normalized_model", "headed_model"])
def test_windows_spilled_to_disk_give_identical_rows(recordings, model, mode, monkeypatch, request):
    classifier = load_classifier(request.getfixturevalue(model))
    paths = sorted(recordings.rglob("*.wav"))
    in_memory = rows_of(annotate_files(paths, classifier, VadConfig(), normalization=mode))
    monkeypatch.setattr(pipeline, "HELD_WINDOWS_BYTES", 0)  # every window waits in the temporary file
    spilled = rows_of(annotate_files(paths, classifier, VadConfig(), normalization=mode))
    assert in_memory.keys() == spilled.keys()
    for key, (start, end, probabilities) in in_memory.items():
        assert spilled[key][:2] == (start, end)
        assert np.array_equal(spilled[key][2], probabilities)


def test_modes_use_the_speech_they_name(recordings, classifier):
    paths = sorted(recordings.rglob("*.wav"))
    by_mode = {
        m: rows_of(annotate_files(paths, classifier, VadConfig(), normalization=m))
        for m in ("segment", "recording", "folder")
    }
    other = str(recordings / "two" / "other.wav")
    short = str(recordings / "one" / "short.wav")
    for key, row in by_mode["recording"].items():
        if key[0] == other:  # alone in its folder: folder statistics are its own
            assert np.allclose(by_mode["folder"][key][2], row[2], atol=1e-6)
    # sharing a folder with a long recording changes a short one's statistics, and so its probabilities
    assert not np.allclose(by_mode["folder"][(short, 1)][2], by_mode["recording"][(short, 1)][2], atol=1e-4)
    # one segment alone is its own recording
    assert np.allclose(by_mode["segment"][(short, 1)][2], by_mode["recording"][(short, 1)][2], atol=1e-6)


def test_folder_mode_keeps_each_folder_together(tmp_path, utterances, classifier):
    signal, _ = speech_with_silences(utterances[:1])
    for name in ("a/1.wav", "a/b/2.wav", "a/3.wav"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        sf.write(tmp_path / name, signal, ESPEAK_RATE)
    paths = sorted(tmp_path.rglob("*.wav"))
    order = [
        o.path.relative_to(tmp_path).as_posix()
        for o in annotate_files(paths, classifier, VadConfig(), normalization="folder")
    ]
    assert order == ["a/1.wav", "a/3.wav", "a/b/2.wav"]


def test_normalisation_must_match_the_model(classifier, random_model):
    plain = load_classifier(random_model)
    assert model_normalization(classifier.card) == "auto"
    assert model_normalization(plain.card) == "none"
    with pytest.raises(ValueError, match="trained without normalisation"):
        model_normalization(plain.card, "segment")
    with pytest.raises(ValueError, match="normalised MFCCs"):
        model_normalization(classifier.card, "none")
    with pytest.raises(ValueError, match="unknown normalization"):
        model_normalization(classifier.card, "speakers")
