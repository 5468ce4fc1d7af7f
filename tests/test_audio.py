import numpy as np
import pytest
import soundfile as sf

from sercli.audio import AudioError, audio_info, iter_audio, read_audio, to_mono


def tone(rate: int, seconds: float = 1.0, hz: float = 440.0, channels: int = 1) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    mono = 0.5 * np.sin(2 * np.pi * hz * t)
    return np.repeat(mono[:, None], channels, axis=1) if channels > 1 else mono


def peak_hz(signal: np.ndarray, rate: int = 16000) -> float:
    spectrum = np.abs(np.fft.rfft(signal))
    return np.fft.rfftfreq(len(signal), 1 / rate)[spectrum.argmax()]


CASES = [
    ("wav", "PCM_U8", 8000, 1),
    ("wav", "PCM_16", 11025, 1),
    ("wav", "PCM_24", 44100, 2),
    ("wav", "PCM_32", 48000, 1),
    ("wav", "FLOAT", 96000, 6),
    ("wav", "DOUBLE", 192000, 2),
    ("flac", "PCM_16", 22050, 2),
    ("flac", "PCM_24", 16000, 1),
    ("ogg", "VORBIS", 44100, 2),
    ("mp3", "MPEG_LAYER_III", 44100, 1),
    ("aiff", "PCM_16", 32000, 1),
]


@pytest.mark.parametrize(("suffix", "subtype", "rate", "channels"), CASES)
def test_every_format_rate_and_channel_count_becomes_16k_mono(tmp_path, suffix, subtype, rate, channels):
    path = tmp_path / f"tone.{suffix}"
    sf.write(path, tone(rate, 2.0, channels=channels), rate, subtype=subtype)
    signal = read_audio(path)
    assert signal.dtype == np.float32 and signal.ndim == 1
    assert len(signal) == pytest.approx(32000, abs=1200)  # mp3/ogg add encoder padding
    assert peak_hz(signal) == pytest.approx(440, abs=2)
    assert np.abs(signal).max() == pytest.approx(0.5, abs=0.08)
    assert abs(signal.mean()) < 0.01


def test_long_file_streams_in_blocks_that_add_up_to_the_whole(tmp_path):
    path = tmp_path / "long.wav"
    sf.write(path, tone(44100, 20.0), 44100)
    blocks = list(iter_audio(path, block_frames=44100))
    assert len(blocks) > 10
    joined = np.concatenate(blocks)
    assert len(joined) == pytest.approx(20 * 16000, abs=2)
    assert peak_hz(joined) == pytest.approx(440, abs=1)


def test_nan_inf_and_out_of_range_samples_are_cleaned():
    block = np.array([[np.nan, 0.0], [np.inf, np.inf], [-np.inf, 0.0], [3.0, 3.0], [0.2, 0.4]], np.float32)
    clean = np.array([0.0, 1.0, -1.0, 1.0, 0.3])
    np.testing.assert_allclose(to_mono(block), clean - clean.mean(), atol=1e-6)


def test_dc_offset_is_removed():
    block = (0.4 + 0.1 * np.sin(np.arange(1000) / 5))[:, None].astype(np.float32)
    assert abs(to_mono(block).mean()) < 1e-6


def test_header_reports_duration(tmp_path):
    path = tmp_path / "a.flac"
    sf.write(path, tone(48000, 1.5), 48000)
    info = audio_info(path)
    assert (info.sample_rate, info.channels, info.frames) == (48000, 1, 72000)
    assert info.duration_s == pytest.approx(1.5)


@pytest.mark.parametrize(
    ("make", "cause"),
    [
        (lambda p: p.write_bytes(b""), "Format not recognised"),
        (lambda p: p.write_text("not audio, just text\n" * 20), "Format not recognised"),
        (lambda p: p.write_bytes(np.random.default_rng(0).bytes(5000)), "Format not recognised"),
        (lambda p: None, "file not found"),
    ],
)
def test_bad_files_raise_one_line_audio_errors(tmp_path, make, cause):
    path = tmp_path / "bad.wav"
    make(path)
    with pytest.raises(AudioError) as error:
        read_audio(path)
    assert cause.lower() in str(error.value).lower()
    assert "\n" not in str(error.value)
