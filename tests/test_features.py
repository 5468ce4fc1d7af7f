import numpy as np
import pytest

from sercli.features import FeatureConfig, dct_matrix, mel_filterbank, mfcc, mfcc_windows, signal_windows


@pytest.fixture(scope="module")
def chirp() -> np.ndarray:
    t = np.arange(3 * 16000) / 16000
    rng = np.random.default_rng(0)
    return (0.3 * np.sin(2 * np.pi * (200 + 300 * t) * t) + 0.01 * rng.normal(size=t.size)).astype(np.float32)


def test_mel_filterbank_matches_librosa():
    librosa = pytest.importorskip("librosa")
    ours = mel_filterbank(16000, 512, 64, 20.0, 8000.0)
    theirs = librosa.filters.mel(sr=16000, n_fft=512, n_mels=64, fmin=20.0, fmax=8000.0)
    np.testing.assert_allclose(ours, theirs.T, atol=1e-7)


def test_dct_matrix_is_the_first_coefficients_of_scipys_orthonormal_dct():
    import scipy.fft

    values = np.random.default_rng(0).normal(size=(5, 64)).astype(np.float32)
    expected = scipy.fft.dct(values, type=2, norm="ortho", axis=1)[:, :40]
    np.testing.assert_allclose(values @ dct_matrix(64, 40), expected, atol=1e-5)


def test_mfcc_matches_librosa(chirp):
    librosa = pytest.importorskip("librosa")
    power = librosa.feature.melspectrogram(
        y=chirp, sr=16000, n_fft=512, hop_length=400, n_mels=64, fmin=20, fmax=8000, center=False
    )
    theirs = librosa.feature.mfcc(S=librosa.power_to_db(power, top_db=None), n_mfcc=40).T
    ours = mfcc(chirp)
    assert ours.shape == theirs.shape == (1 + (len(chirp) - 512) // 400, 40)
    np.testing.assert_allclose(ours, theirs, atol=1e-3)


def test_mfcc_of_signal_shorter_than_a_frame_is_one_frame():
    assert mfcc(np.zeros(100, np.float32)).shape == (1, 40)


def test_windows_cover_every_frame_with_the_last_aligned_to_the_end():
    features = np.arange(230 * 40, dtype=np.float32).reshape(230, 40)
    windows = mfcc_windows(features, 100, 50)
    assert windows.shape == (4, 100, 40)  # starts 0, 50, 100, then 130 aligned to the end
    np.testing.assert_array_equal(windows[0], features[:100])
    np.testing.assert_array_equal(windows[2], features[100:200])
    np.testing.assert_array_equal(windows[-1], features[130:])


def test_short_features_are_repeated_to_fill_one_window():
    features = np.arange(30 * 40, dtype=np.float32).reshape(30, 40)
    (window,) = mfcc_windows(features, 100, 50)
    np.testing.assert_array_equal(window[:30], features)
    np.testing.assert_array_equal(window[30:60], features)
    np.testing.assert_array_equal(window[90:], features[:10])


def test_window_timing_in_seconds():
    config = FeatureConfig()
    assert config.window_hop_s == pytest.approx(2.5)
    assert config.window_s == pytest.approx((99 * 400 + 512) / 16000)
    assert signal_windows(np.zeros(int(2.5 * 16000), np.float32)).shape[1:] == (100, 40)
