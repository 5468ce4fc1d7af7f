"""Degradations: deterministic under a seed, and each measured on its output."""

import numpy as np
import pytest
import scipy.signal

from sercli import augment
from sercli.augment import CONDITIONS, AugmentConfig, random_degradation

RATE = 16000


@pytest.fixture(scope="module")
def voiced():
    """2 s of a harmonic 'voice' (150 Hz fundamental, 40 harmonics up to 6 kHz) with a syllable envelope."""
    t = np.arange(2 * RATE) / RATE
    harmonics = sum(np.sin(2 * np.pi * 150 * k * t) / k for k in range(1, 41))
    envelope = 0.5 + 0.5 * np.sin(2 * np.pi * 4 * t) ** 2
    return (0.1 * harmonics * envelope).astype(np.float32)


def snr_db(clean, degraded):
    return 10 * np.log10(augment.signal_power(clean) / augment.signal_power(degraded[: len(clean)] - clean))


def band_power(signal, low, high):
    frequency, density = scipy.signal.welch(signal, RATE, nperseg=1024)
    return density[(frequency >= low) & (frequency < high)].mean()


@pytest.mark.parametrize("name", list(CONDITIONS))
def test_every_condition_is_deterministic_finite_and_keeps_length(voiced, name):
    sources = [np.roll(voiced, 1234), voiced[::-1].copy(), np.roll(voiced, 777)]
    first = CONDITIONS[name](voiced, RATE, np.random.default_rng(7), sources)
    again = CONDITIONS[name](voiced, RATE, np.random.default_rng(7), sources)
    assert np.array_equal(first, again)
    assert np.isfinite(first).all() and first.dtype == np.float32
    assert abs(len(first) - len(voiced)) <= 1


@pytest.mark.parametrize("color", ["white", "pink"])
@pytest.mark.parametrize("snr", [20, 10, 5])
def test_noise_is_mixed_at_the_asked_snr(voiced, color, snr):
    noisy = augment.mix_at_snr(voiced, augment.colored_noise(len(voiced), color, np.random.default_rng(0)), snr)
    assert snr_db(voiced, noisy) == pytest.approx(snr, abs=0.05)
    other = augment.mix_at_snr(voiced, augment.colored_noise(len(voiced), color, np.random.default_rng(1)), snr)
    assert not np.array_equal(noisy, other)  # the seed matters


def test_white_noise_is_flat_and_pink_noise_falls_3_db_an_octave():
    rng = np.random.default_rng(0)
    white, pink = augment.colored_noise(10 * RATE, "white", rng), augment.colored_noise(10 * RATE, "pink", rng)
    assert 10 * np.log10(band_power(white, 400, 600) / band_power(white, 3600, 4400)) == pytest.approx(0, abs=0.5)
    # 500 Hz to 4 kHz is three octaves: 9 dB for pink noise
    assert 10 * np.log10(band_power(pink, 450, 550) / band_power(pink, 3600, 4400)) == pytest.approx(9, abs=1.0)


def test_babble_of_other_talkers_at_10_db(voiced):
    sources = [np.roll(voiced, 4000 * k) for k in range(1, 6)]
    noisy = CONDITIONS["babble 10 dB"](voiced, RATE, np.random.default_rng(0), sources)
    assert snr_db(voiced, noisy) == pytest.approx(10, abs=0.05)


def test_telephone_keeps_300_to_3400_hz_only():
    noise = augment.colored_noise(4 * RATE, "white", np.random.default_rng(0)).astype(np.float32) * 0.1
    phone = augment.telephone(noise, RATE)
    inside = band_power(phone, 500, 3000)
    assert 10 * np.log10(inside / band_power(phone, 4200, 7800)) > 40  # nothing above the 8 kHz line's band
    assert 10 * np.log10(inside / band_power(phone, 20, 150)) > 15  # low frequencies filtered out


def test_the_phone_line_is_g711_mu_law():
    tone = (0.3 * np.sin(2 * np.pi * 997 * np.arange(8000) / 8000)).astype(np.float32)
    coded = augment._through_libsndfile(tone, 8000, format="WAV", subtype="ULAW")
    assert len(np.unique(coded)) <= 256  # 8-bit code words
    assert 30 < snr_db(tone, coded) < 45  # G.711's ~38 dB for a loud tone


@pytest.mark.parametrize("codec", ["mp3", "opus"])
def test_lossy_codec_changes_the_signal_but_keeps_its_power(voiced, codec):
    coded = augment.lossy_codec(voiced, RATE, codec)
    assert len(coded) == len(voiced)
    assert not np.allclose(coded, voiced, atol=1e-3)
    assert 10 * np.log10(augment.signal_power(coded) / augment.signal_power(voiced)) == pytest.approx(0, abs=2)


@pytest.mark.parametrize("rt60", [0.3, 0.9])
def test_simulated_rooms_have_the_asked_reverberation_time(rt60):
    import pyroomacoustics as pra

    impulse = np.zeros(2 * RATE, np.float32)
    impulse[100] = 1.0
    measured = [
        pra.experimental.measure_rt60(
            augment.reverberate(impulse, RATE, rt60, np.random.default_rng(s))[100:], RATE, decay_db=20
        )
        for s in range(4)
    ]
    assert np.median(measured) == pytest.approx(rt60, rel=0.25)


def test_reverberation_keeps_length_and_power(voiced):
    wet = augment.reverberate(voiced, RATE, 0.3, np.random.default_rng(0))
    assert len(wet) == len(voiced)
    assert augment.signal_power(wet) == pytest.approx(augment.signal_power(voiced), rel=1e-3)


def test_gain_scales_and_clips(voiced):
    assert np.allclose(augment.gain(voiced, -20), voiced * 0.1, atol=1e-7)
    loud = augment.gain(4 * voiced, 12)
    assert np.abs(loud).max() == pytest.approx(1.0) and (np.abs(loud) >= 1.0).any()


@pytest.mark.parametrize("factor", [0.9, 1.1])
def test_speed_changes_length_by_the_factor(voiced, factor):
    assert len(augment.speed(voiced, RATE, factor)) == pytest.approx(len(voiced) / factor, abs=2)


def test_random_degradation_is_deterministic_and_varied(voiced):
    sources = [np.roll(voiced, 999)]
    outputs = [random_degradation(voiced, RATE, np.random.default_rng([3, k]), sources) for k in range(12)]
    again = [random_degradation(voiced, RATE, np.random.default_rng([3, k]), sources) for k in range(12)]
    assert all(np.array_equal(a, b) for a, b in zip(outputs, again))
    assert all(np.isfinite(o).all() for o in outputs)
    assert len({round(float(augment.signal_power(o)), 6) for o in outputs}) > 6  # different chains
    untouched = AugmentConfig(noise=0, room=0, telephone=0, codec=0, gain=0, speed=0)
    assert np.array_equal(random_degradation(voiced, RATE, np.random.default_rng(0), sources, untouched), voiced)
