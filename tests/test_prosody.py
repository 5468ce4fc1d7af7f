import numpy as np
import pytest

from sercli.features import mfcc
from sercli.prosody import (
    FUNCTIONAL_NAMES,
    HOP_S,
    _percentiles,
    functional_names,
    n_functionals,
    pitch_track,
    prosody_functionals,
    segment_functionals,
    spectral_shape,
)

SR = 16000


def harmonic_tone(f0_hz: np.ndarray, sample_rate: int = SR, harmonics: int = 8) -> np.ndarray:
    """A voice-like tone: harmonics of decreasing amplitude following ``f0_hz`` (one value per sample)."""
    phase = 2 * np.pi * np.cumsum(f0_hz) / sample_rate
    return (0.3 * sum(np.sin(k * phase) / k for k in range(1, harmonics + 1))).astype(np.float32)


@pytest.mark.parametrize("f0", [75.0, 110.0, 220.0, 440.0])
@pytest.mark.parametrize("sample_rate", [16000, 44100])
def test_pitch_of_a_steady_tone_is_found_within_one_percent(f0, sample_rate):
    track = pitch_track(harmonic_tone(np.full(sample_rate, f0), sample_rate), sample_rate)
    voiced = ~np.isnan(track.f0_hz)
    assert voiced[2:-2].all()
    assert np.nanmedian(track.f0_hz) == pytest.approx(f0, rel=0.01)
    assert len(track.f0_hz) == pytest.approx(1.0 / HOP_S, abs=2)


def test_white_noise_and_silence_are_unvoiced():
    noise = np.random.default_rng(0).normal(0, 0.1, 2 * SR).astype(np.float32)
    assert np.mean(~np.isnan(pitch_track(noise, SR).f0_hz)) < 0.05
    silence = np.zeros(SR, dtype=np.float32)
    assert np.isnan(pitch_track(silence, SR).f0_hz).all()


def test_a_signal_shorter_than_a_frame_gives_one_frame():
    track = pitch_track(np.zeros(100, dtype=np.float32), SR)
    assert len(track.f0_hz) == len(track.energy_db) == 1


def test_functionals_of_a_rising_glide():
    # 150 -> 300 Hz over 2 s: an octave, 12 semitones, 6 semitones a second, rising all the way
    f0 = 150 * 2 ** np.linspace(0, 1, 2 * SR)
    values = dict(zip(FUNCTIONAL_NAMES, prosody_functionals(pitch_track(harmonic_tone(f0), SR))))
    assert values["voiced_fraction"] > 0.95
    assert values["f0_slope_st_per_s"] == pytest.approx(6.0, rel=0.05)
    assert values["f0_p50_st"] == pytest.approx(12 * np.log2(np.sqrt(150 * 300) / 100), abs=0.3)
    assert values["f0_range_st"] == pytest.approx(12 * 0.8, abs=0.5)
    assert values["f0_rising_fraction"] > 0.9
    assert values["voicing_mean"] > 0.9


def test_a_falling_quieter_voice_differs_from_a_rising_louder_one():
    rising = prosody_functionals(pitch_track(harmonic_tone(120 * 2 ** np.linspace(0, 0.5, SR)), SR))
    falling = prosody_functionals(pitch_track(0.2 * harmonic_tone(240 * 2 ** np.linspace(0, -0.5, SR)), SR))
    names = list(FUNCTIONAL_NAMES)
    assert rising[names.index("f0_slope_st_per_s")] > 5 > -5 > falling[names.index("f0_slope_st_per_s")]


def test_bursts_of_voicing_count_as_onsets():
    tone = harmonic_tone(np.full(SR // 5, 150.0))
    hiss = np.random.default_rng(1).normal(0, 0.03, SR // 5).astype(np.float32)  # audible, unvoiced
    bursts = np.concatenate([tone, hiss] * 5)  # 5 voiced bursts in 2 s
    values = dict(zip(FUNCTIONAL_NAMES, prosody_functionals(pitch_track(bursts, SR))))
    assert values["voiced_fraction"] == pytest.approx(0.5, abs=0.1)
    assert values["voiced_onsets_per_s"] == pytest.approx(2.5, abs=0.3)
    assert values["voiced_energy_gain_db"] > 3
    assert values["voiced_run_mean_s"] == pytest.approx(0.2, abs=0.04)
    assert values["unvoiced_run_mean_s"] == pytest.approx(0.2, abs=0.04)
    assert values["unvoiced_centroid_khz_mean"] > 1.5 > values["centroid_khz_mean"]  # hiss is bright, the tone dull
    silent = np.concatenate([tone, np.zeros(SR // 5, dtype=np.float32)] * 5)
    values = dict(zip(FUNCTIONAL_NAMES, prosody_functionals(pitch_track(silent, SR))))
    assert values["voiced_fraction"] > 0.9  # silence is not counted as unvoiced speech
    assert values["unvoiced_run_mean_s"] == values["unvoiced_centroid_khz_mean"] == 0.0


def test_first_harmonic_over_second_is_their_level_difference():
    # harmonics of amplitude 1/k: H1 is 20 log10(2) = 6 dB above H2
    track = pitch_track(harmonic_tone(np.full(SR, 200.0)), SR)
    shape = spectral_shape(track.power, track.f0_hz)
    voiced = ~np.isnan(track.f0_hz)
    assert np.median(shape["h1_h2_db"][voiced]) == pytest.approx(6.0, abs=0.7)
    assert np.isnan(shape["h1_h2_db"][~voiced]).all()


def test_a_pressed_bright_voice_has_a_flatter_spectrum_than_a_breathy_dull_one():
    phase = 2 * np.pi * 150 * np.arange(SR) / SR
    bright = 0.05 * sum(np.sin(k * phase) for k in range(1, 26))  # flat harmonics up to 3.75 kHz
    dull = 0.3 * sum(np.sin(k * phase) / k**2 for k in range(1, 26))  # -12 dB an octave
    values = {}
    for name, signal in (("bright", bright), ("dull", dull)):
        functionals = prosody_functionals(pitch_track(signal.astype(np.float32), SR))
        values[name] = dict(zip(FUNCTIONAL_NAMES, functionals))
    bright, dull = values["bright"], values["dull"]
    assert bright["alpha_ratio_db_mean"] < dull["alpha_ratio_db_mean"]
    assert bright["hammarberg_db_mean"] < dull["hammarberg_db_mean"]
    assert bright["centroid_khz_mean"] > 1.0 > dull["centroid_khz_mean"]
    assert bright["slope_500_1500_db_per_khz_mean"] > dull["slope_500_1500_db_per_khz_mean"]
    assert bright["h1_h2_db_mean"] == pytest.approx(0.0, abs=1.0)
    assert bright["band_2000_4000_db"] > -10 > dull["band_2000_4000_db"]


def test_band_levels_of_a_pure_tone_put_all_energy_in_its_band():
    tone = (0.3 * np.sin(2 * np.pi * 700 * np.arange(SR) / SR)).astype(np.float32)
    track = pitch_track(tone, SR)
    shape = spectral_shape(track.power, track.f0_hz)
    assert np.median(shape["band_500_1000_db"]) == pytest.approx(0.0, abs=0.1)
    assert np.median(shape["band_0_500_db"]) < -20 and np.median(shape["band_2000_4000_db"]) < -20
    assert np.median(shape["centroid_khz"]) == pytest.approx(0.7, abs=0.02)


def test_segment_functionals_are_prosody_then_mfcc_moments():
    signal = harmonic_tone(np.full(SR, 200.0))
    frames = mfcc(signal)
    values = segment_functionals(signal, SR, frames)
    names = functional_names(frames.shape[1])
    assert values.shape == (n_functionals(frames.shape[1]),) == (len(names),) == (len(FUNCTIONAL_NAMES) + 133,)
    assert np.isfinite(values).all()
    named = dict(zip(names, values))
    assert np.allclose([named[f"mfcc{i}_mean"] for i in range(40)], frames.mean(axis=0), atol=1e-4)
    assert np.allclose([named[f"mfcc{i}_std"] for i in range(40)], frames.std(axis=0), atol=1e-4)
    assert np.allclose([named[f"mfcc{i}_delta"] for i in range(40)], np.abs(np.diff(frames, axis=0)).mean(0), atol=1e-4)
    low, high = np.percentile(frames[:, :13], [10, 90], axis=0)
    assert np.allclose([named[f"mfcc{i}_range"] for i in range(13)], high - low, atol=1e-4)
    assert np.isfinite(segment_functionals(signal[:100], SR, frames[:1])).all()  # one frame: no change, no range


@pytest.mark.parametrize("shape", [(1,), (2,), (257,), (1, 13), (300, 13)])
def test_percentiles_equal_numpys_linear_percentiles(shape):
    values = np.random.default_rng(3).normal(size=shape).astype(np.float32)
    np.testing.assert_allclose(
        _percentiles(values, (5, 10, 50, 90, 95)), np.percentile(values, [5, 10, 50, 90, 95], axis=0), rtol=1e-6
    )


def test_unvoiced_segment_has_zero_pitch_statistics():
    noise = np.random.default_rng(2).normal(0, 0.1, SR).astype(np.float32)
    values = dict(zip(FUNCTIONAL_NAMES, prosody_functionals(pitch_track(noise, SR))))
    assert values["f0_mean_st"] == values["f0_std_st"] == 0.0
    assert values["energy_std_db"] > 0
