"""Degrading clean speech as real recordings are degraded: noise, telephone, codecs, rooms, gain, speed.

Each function is a pure function of a mono float signal (full scale 1) at
``sample_rate`` Hz and, where it draws anything, of a seeded
:class:`numpy.random.Generator`, so every degraded variant can be made again.
The robustness benchmark applies them one at a time (:data:`CONDITIONS`);
multi-condition training draws a random chain of them per clip
(:func:`random_degradation`). Codecs run through libsndfile (soundfile), rooms
are simulated with pyroomacoustics (imported only when a room is asked for, each
room made once per process).
"""

from __future__ import annotations

import io
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import scipy.signal
import soundfile as sf
import soxr


def signal_power(signal: np.ndarray) -> float:
    """Mean power of a signal (mean of squares)."""
    return float(np.mean(np.square(signal, dtype=np.float64))) if len(signal) else 0.0


def mix_at_snr(signal: np.ndarray, noise: np.ndarray, snr_db: float) -> np.ndarray:
    """``signal`` plus ``noise`` scaled so that their power ratio is ``snr_db`` dB.

    Powers are taken over the whole clip; ``noise`` is repeated or cut to the
    signal's length. A silent signal is returned unchanged.
    """
    noise = np.resize(np.asarray(noise, dtype=np.float64), len(signal))
    power, noise_power = signal_power(signal), signal_power(noise)
    if power == 0 or noise_power == 0:
        return np.asarray(signal, dtype=np.float32)
    scale = np.sqrt(power / (noise_power * 10 ** (snr_db / 10)))
    return (signal + scale * noise).astype(np.float32)


def colored_noise(n: int, color: str, rng: np.random.Generator) -> np.ndarray:
    """Gaussian noise of ``n`` samples: ``white`` (flat spectrum) or ``pink`` (power falling 3 dB an octave)."""
    white = rng.standard_normal(n)
    if color == "white":
        return white
    if color != "pink":
        raise ValueError(f"noise colour must be 'white' or 'pink', not {color!r}")
    spectrum = np.fft.rfft(white)
    frequency = np.arange(len(spectrum), dtype=np.float64)
    frequency[0] = 1.0
    return np.fft.irfft(spectrum / np.sqrt(frequency), n)


def babble(sources: Sequence[np.ndarray], n: int, rng: np.random.Generator, talkers: int = 4) -> np.ndarray:
    """Several talkers at once: ``talkers`` of ``sources``, each at equal power and a random start, ``n`` samples."""
    mix = np.zeros(n)
    for index in rng.choice(len(sources), size=min(talkers, len(sources)), replace=False):
        source = np.asarray(sources[index], dtype=np.float64)
        power = signal_power(source)
        if power > 0:
            mix += np.roll(np.resize(source, n), rng.integers(0, n)) / np.sqrt(power)
    return mix


def telephone(signal: np.ndarray, sample_rate: int) -> np.ndarray:
    """A narrow-band phone line: 8 kHz, 300-3400 Hz, G.711 mu-law, brought back to ``sample_rate``."""
    narrow = soxr.resample(signal, sample_rate, 8000)
    band = scipy.signal.butter(4, [300, 3400], btype="bandpass", fs=8000, output="sos")
    narrow = np.clip(scipy.signal.sosfilt(band, narrow), -1.0, 1.0)
    coded = _through_libsndfile(narrow, 8000, format="WAV", subtype="ULAW")
    return soxr.resample(coded, 8000, sample_rate).astype(np.float32)


def lossy_codec(signal: np.ndarray, sample_rate: int, codec: str = "mp3") -> np.ndarray:
    """The signal after a low-bitrate ``mp3`` or ``opus`` encoding and decoding (libsndfile's encoders)."""
    formats = {"mp3": ("MP3", "MPEG_LAYER_III", 0.95), "opus": ("OGG", "OPUS", 1.0)}
    if codec not in formats:
        raise ValueError(f"codec must be one of {sorted(formats)}, not {codec!r}")
    file_format, subtype, compression = formats[codec]
    rate = 48000 if codec == "opus" else sample_rate
    resampled = soxr.resample(signal, sample_rate, rate) if rate != sample_rate else signal
    decoded = _through_libsndfile(resampled, rate, format=file_format, subtype=subtype, compression_level=compression)
    decoded = soxr.resample(decoded, rate, sample_rate) if rate != sample_rate else decoded
    return np.resize(decoded, len(signal)).astype(np.float32)


def room_impulse_responses(sample_rate: int, rt60_s: float, rooms: int = 8, seed: int = 0) -> list[np.ndarray]:
    """Impulse responses of ``rooms`` simulated shoebox rooms with reverberation time ``rt60_s`` seconds.

    Room sizes, talker and microphone positions are drawn from a generator seeded
    by ``(seed, rt60 in ms)``; the responses come from pyroomacoustics'
    image-source method (no order cap, so the decay really lasts ``rt60_s``). A
    0.9 s room takes 1-2 s to simulate, so the responses are made once per
    process and reused (:func:`reverberate` draws among them).
    """
    return list(_room_bank(sample_rate, round(rt60_s * 1000), rooms, seed))


@lru_cache(maxsize=64)
def _room_bank(sample_rate: int, rt60_ms: int, rooms: int, seed: int) -> tuple[np.ndarray, ...]:
    import pyroomacoustics as pra

    rng = np.random.default_rng([seed, rt60_ms])
    responses = []
    for _ in range(rooms):
        size = rng.uniform([3.0, 3.0, 2.4], [8.0, 6.0, 3.2])
        absorption, max_order = pra.inverse_sabine(rt60_ms / 1000, size)
        room = pra.ShoeBox(size, fs=sample_rate, materials=pra.Material(absorption), max_order=max_order)
        room.add_source(rng.uniform(0.5, size - 0.5))
        room.add_microphone(rng.uniform(0.5, size - 0.5))
        room.compute_rir()
        responses.append(np.asarray(room.rir[0][0], dtype=np.float64))
    return tuple(responses)


def reverberate(signal: np.ndarray, sample_rate: int, rt60_s: float, rng: np.random.Generator) -> np.ndarray:
    """The signal heard in a simulated room with reverberation time ``rt60_s`` seconds.

    The room is drawn from ``rng`` among :func:`room_impulse_responses` (RT60
    rounded to 0.1 s). The result keeps the signal's length and power.
    """
    responses = room_impulse_responses(sample_rate, round(rt60_s, 1))
    response = responses[rng.integers(len(responses))]
    wet = scipy.signal.fftconvolve(signal, response)[: len(signal)]
    power = signal_power(wet)
    return (wet * np.sqrt(signal_power(signal) / power) if power > 0 else wet).astype(np.float32)


def gain(signal: np.ndarray, gain_db: float) -> np.ndarray:
    """The signal amplified by ``gain_db`` dB and clipped to full scale, as a recorder would."""
    return np.clip(signal * 10 ** (gain_db / 20), -1.0, 1.0).astype(np.float32)


def speed(signal: np.ndarray, sample_rate: int, factor: float) -> np.ndarray:
    """The signal played ``factor`` times faster (pitch and tempo together, as in Kaldi's speed perturbation)."""
    return soxr.resample(signal, sample_rate, sample_rate / factor).astype(np.float32)


def _through_libsndfile(signal: np.ndarray, sample_rate: int, **options) -> np.ndarray:
    """Encode a signal into an in-memory file with soundfile and decode it again."""
    buffer = io.BytesIO()
    sf.write(buffer, np.asarray(signal, dtype=np.float32), sample_rate, **options)
    buffer.seek(0)
    return sf.read(buffer, dtype="float32")[0]


Degradation = Callable[[np.ndarray, int, np.random.Generator, Sequence[np.ndarray]], np.ndarray]
"""``(signal, sample_rate, rng, babble_sources) -> degraded signal``."""


def _noise(color: str, snr_db: float) -> Degradation:
    return lambda x, sr, rng, _: mix_at_snr(x, colored_noise(len(x), color, rng), snr_db)


CONDITIONS: dict[str, Degradation] = {
    "clean": lambda x, sr, rng, _: np.asarray(x, dtype=np.float32),
    "white 20 dB": _noise("white", 20),
    "white 10 dB": _noise("white", 10),
    "white 5 dB": _noise("white", 5),
    "pink 20 dB": _noise("pink", 20),
    "pink 10 dB": _noise("pink", 10),
    "pink 5 dB": _noise("pink", 5),
    "babble 10 dB": lambda x, sr, rng, sources: mix_at_snr(x, babble(sources, len(x), rng), 10),
    "telephone": lambda x, sr, rng, _: telephone(x, sr),
    "mp3": lambda x, sr, rng, _: lossy_codec(x, sr, "mp3"),
    "opus": lambda x, sr, rng, _: lossy_codec(x, sr, "opus"),
    "reverb 0.3 s": lambda x, sr, rng, _: reverberate(x, sr, 0.3, rng),
    "reverb 0.9 s": lambda x, sr, rng, _: reverberate(x, sr, 0.9, rng),
    "gain -20 dB": lambda x, sr, rng, _: gain(x, -20),
    "gain +12 dB": lambda x, sr, rng, _: gain(x, 12),
}
"""The robustness benchmark's conditions, each applied alone to clean clips.
``babble`` mixes other test speakers' clips (``babble_sources``)."""


@dataclass(frozen=True)
class AugmentConfig:
    """How likely each family of degradation is in multi-condition training.

    Each probability is drawn independently per clip and variant; the families
    apply in this order: speed, room, noise, gain, channel (telephone or codec).
    Noise is white, pink or babble with equal odds, at an SNR uniform in
    ``snr_db``; gain is uniform in ``gain_db``; speed uniform in ``speed``.
    """

    noise: float = 0.6
    room: float = 0.3
    telephone: float = 0.2
    codec: float = 0.15
    gain: float = 0.5
    speed: float = 0.3
    snr_db: tuple[float, float] = (0.0, 30.0)
    rt60_s: tuple[float, float] = (0.2, 1.0)
    gain_db: tuple[float, float] = (-20.0, 12.0)
    speed_factor: tuple[float, float] = (0.9, 1.1)


def random_degradation(
    signal: np.ndarray,
    sample_rate: int,
    rng: np.random.Generator,
    babble_sources: Sequence[np.ndarray],
    config: AugmentConfig = AugmentConfig(),
) -> np.ndarray:
    """A randomly degraded copy of a clean signal, for multi-condition training (see :class:`AugmentConfig`)."""
    x = np.asarray(signal, dtype=np.float32)
    if rng.random() < config.speed:
        x = speed(x, sample_rate, rng.uniform(*config.speed_factor))
    if rng.random() < config.room:
        x = reverberate(x, sample_rate, rng.uniform(*config.rt60_s), rng)
    if rng.random() < config.noise:
        kind = rng.choice(["white", "pink", "babble"] if len(babble_sources) else ["white", "pink"])
        noise = babble(babble_sources, len(x), rng) if kind == "babble" else colored_noise(len(x), kind, rng)
        x = mix_at_snr(x, noise, rng.uniform(*config.snr_db))
    if rng.random() < config.gain:
        x = gain(x, rng.uniform(*config.gain_db))
    channel = rng.random()
    if channel < config.telephone:
        x = telephone(x, sample_rate)
    elif channel < config.telephone + config.codec:
        x = lossy_codec(x, sample_rate, str(rng.choice(["mp3", "opus"])))
    return x
