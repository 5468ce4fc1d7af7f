"""Shared fixtures: a randomly initialised model and generated recordings."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import soxr

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Slow tests first. CI runs the suite on one worker per core, each sent one test at a time (``-n auto
    --maxschedchunk 1``, pytest-xdist), so the longest tests start at once on different workers instead of one
    of them ending the run alone while the others wait."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


def sercli(*args, code: int = 0, **kwargs) -> subprocess.CompletedProcess:
    """Run ``python -m sercli ARGS`` (text output captured) and check that it exits with ``code``.

    ``kwargs`` go to :func:`subprocess.run` (``cwd``, ``env``, ``input``).
    """
    result = subprocess.run(
        [sys.executable, "-m", "sercli", *map(str, args)], check=False, capture_output=True, text=True, **kwargs
    )
    assert result.returncode == code, result.stderr
    return result


def make_random_model(folder: Path, name: str = "random", normalization: str = "none") -> Path:
    """An untrained CNN-BiLSTM with a valid card, saved as ``folder/name.keras``.

    ``normalization`` ``speaker``: the card says it takes standardised MFCCs (its input
    layer then expects mean 0 and standard deviation 1).
    """
    import keras

    from sercli import EMOTIONS
    from sercli.architecture import build_cnn_bilstm
    from sercli.export import save_model
    from sercli.features import FeatureConfig, signal_windows
    from sercli.model import ModelCard

    keras.utils.set_random_seed(1)
    config = FeatureConfig()
    normalized = normalization != "none"
    model = build_cnn_bilstm(
        np.full(config.n_mfcc, 0.0 if normalized else -10.0), np.full(config.n_mfcc, 1.0 if normalized else 50.0)
    )
    # a normalised model's card carries a prior, as trained ones do: 1000 frames of mean -5, std 20
    prior = {"frames": 1000, "mean": [-5.0] * config.n_mfcc, "std": [20.0] * config.n_mfcc} if normalized else {}
    card = ModelCard(
        name=name,
        version="test",
        labels=list(EMOTIONS),
        features=config.to_dict(),
        normalization=normalization,
        normalization_prior=prior,
    )
    path = folder / f"{name}.keras"
    noise = np.random.default_rng(0).normal(0, 0.1, 5 * config.sample_rate).astype(np.float32)
    save_model(model, path, card, signal_windows(noise, config))
    return path


@pytest.fixture(scope="session")
def random_model(tmp_path_factory) -> Path:
    return make_random_model(tmp_path_factory.mktemp("model"))


@pytest.fixture(scope="session")
def tflite_model(random_model) -> Path:
    """The random model's LiteRT export, as ``annotate`` runs it by default."""
    return random_model.with_suffix(".tflite")


@pytest.fixture(scope="session")
def normalized_model(tmp_path_factory) -> Path:
    """A random model whose card says it was trained on speaker-normalised MFCCs (LiteRT export)."""
    return make_random_model(tmp_path_factory.mktemp("model"), "normalized", "speaker").with_suffix(".tflite")


@pytest.fixture(scope="session")
def headed_model(normalized_model, tmp_path_factory) -> Path:
    """The normalised random model with a random functional head in its card (LiteRT export)."""
    import shutil

    from sercli.fusion import FunctionalHead
    from sercli.model import ModelCard, card_path
    from sercli.normalization import FrameStats
    from sercli.prosody import n_functionals

    folder = tmp_path_factory.mktemp("headed")
    path = folder / normalized_model.name
    shutil.copy(normalized_model, path)
    card = ModelCard.read(card_path(normalized_model))
    rng = np.random.default_rng(5)
    n = n_functionals(card.feature_config.n_mfcc)
    prior = FrameStats.of_moments(rng.normal(0, 5, n), rng.uniform(1, 10, n), 20)
    hidden = (rng.normal(0, 0.3, (n, 16)), rng.normal(0, 0.3, 16))
    head = FunctionalHead(
        (hidden, (rng.normal(0, 0.5, (16, len(card.labels))), rng.normal(0, 1, len(card.labels)))),
        prior,
        temperature=2.0,
    )
    card.functional_head = head.to_dict()
    card.write(card_path(path))
    return path


def speak(text: str, path: Path, voice: str = "en-us", speed: int = 150) -> np.ndarray:
    """Synthesise ``text`` with espeak-ng into ``path`` (22.05 kHz mono WAV); return the samples."""
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed (apt-get install espeak-ng)")
    subprocess.run(["espeak-ng", "-v", voice, "-s", str(speed), "-w", str(path), text], check=True)
    signal, _ = sf.read(path, dtype="float32")
    return signal


@pytest.fixture(scope="session")
def utterances(tmp_path_factory) -> list[np.ndarray]:
    """Three espeak utterances at 22.05 kHz, trimmed to their first and last audible sample."""
    folder = tmp_path_factory.mktemp("speech")
    texts = [
        "I can't believe you did that again.",
        "Well, I suppose we could try it tomorrow.",
        "That is wonderful news, congratulations!",
    ]
    trimmed = []
    for i, text in enumerate(texts):
        signal = speak(text, folder / f"{i}.wav")
        loud = np.flatnonzero(np.abs(signal) > 0.01)
        trimmed.append(signal[loud[0] : loud[-1] + 1])
    return trimmed


ESPEAK_RATE = 22050


def speech_with_silences(utterances: list[np.ndarray], silence_s: float = 1.0, lead_s: float = 0.5):
    """Utterances separated by silences; returns the signal (22.05 kHz) and true (start_s, end_s) spans."""
    pieces, spans, cursor = [np.zeros(int(lead_s * ESPEAK_RATE), np.float32)], [], lead_s
    for utterance in utterances:
        pieces.append(utterance)
        spans.append((cursor, cursor + len(utterance) / ESPEAK_RATE))
        cursor += len(utterance) / ESPEAK_RATE + silence_s
        pieces.append(np.zeros(int(silence_s * ESPEAK_RATE), np.float32))
    return np.concatenate(pieces), spans


@pytest.fixture(scope="session")
def speech_16k(utterances) -> np.ndarray:
    """The three utterances with 1 s silences between them, at 16 kHz."""
    signal, _ = speech_with_silences(utterances, silence_s=1.0)
    return soxr.resample(signal, ESPEAK_RATE, 16000).astype(np.float32)


@pytest.fixture(scope="session")
def ravdess(tmp_path_factory):
    """4 actors x 8 emotions of espeak speech: actors 1-2 as 48 kHz WAV, 3-4 as 16 kHz FLAC."""
    root = tmp_path_factory.mktemp("ravdess")
    voices = {1: "en-us", 2: "en-gb", 3: "en-us", 4: "en-gb"}
    for actor, voice in voices.items():
        folder = root / f"Actor_{actor:02d}"
        folder.mkdir()
        for emotion in range(1, 9):
            speed = 100 + 15 * emotion
            signal = speak("Kids are talking by the door.", root / "tmp.wav", voice=voice, speed=speed)
            name = f"03-01-{emotion:02d}-01-01-01-{actor:02d}"
            if actor <= 2:
                sf.write(folder / f"{name}.wav", soxr.resample(signal, ESPEAK_RATE, 48000), 48000, subtype="PCM_16")
            else:
                sf.write(folder / f"{name}.flac", soxr.resample(signal, ESPEAK_RATE, 16000), 16000)
    (root / "tmp.wav").unlink()
    return root
