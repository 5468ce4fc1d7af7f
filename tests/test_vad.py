import numpy as np
import pytest
import scipy.signal
import soundfile as sf
import soxr
from conftest import ESPEAK_RATE, speech_with_silences

from sercli.audio import read_audio
from sercli.vad import SpeechSegment, VadConfig, flags_to_segments, stream_speech


def segments_of(pattern: str, frame_s=0.1, energy_db=None, **options):
    flags = np.array([c == "1" for c in pattern])
    return flags_to_segments(flags, frame_s, VadConfig(**options), len(flags) * frame_s, energy_db)


def test_short_pauses_are_bridged_and_long_ones_split():
    segments = segments_of("0111001110000000111", min_silence_s=0.3, padding_s=0, min_speech_s=0)
    assert [(round(s.start_s, 3), round(s.end_s, 3)) for s in segments] == [(0.1, 0.9), (1.6, 1.9)]


def test_short_bursts_are_dropped_and_padding_is_clipped_to_the_signal():
    segments = segments_of("1100000010000000", min_speech_s=0.15, padding_s=0.3, min_silence_s=0.1)
    assert segments == [SpeechSegment(0.0, pytest.approx(0.5))]


def test_quiet_edges_are_trimmed_off_segments():
    energy = np.array([-100, -20, -25, -30, -90, -95, -100.0])
    segments = segments_of("0111111", energy_db=energy, trim_db=40, padding_s=0, min_speech_s=0)
    assert [(round(s.start_s, 3), round(s.end_s, 3)) for s in segments] == [(0.1, 0.4)]


def test_long_segments_are_split_into_equal_parts_no_longer_than_the_maximum():
    segments = segments_of("1" * 250, max_segment_s=10.0, padding_s=0, min_speech_s=0)
    assert len(segments) == 3
    assert all(s.duration_s == pytest.approx(25 / 3) for s in segments)
    assert segments[-1].end_s == pytest.approx(25.0)


@pytest.mark.parametrize(
    "options", [{"aggressiveness": 4}, {"frame_ms": 25}, {"padding_s": -1}, {"max_segment_s": 0.1}]
)
def test_invalid_settings_are_refused(options):
    with pytest.raises(ValueError):
        VadConfig(**options)


def test_espeak_speech_is_segmented_at_the_known_silences(utterances, tmp_path):
    signal, spans = speech_with_silences(utterances, silence_s=1.0)
    signal += np.random.default_rng(0).normal(0, 0.001, len(signal)).astype(np.float32)  # -60 dB room noise
    path = tmp_path / "speech.wav"
    sf.write(path, signal, ESPEAK_RATE)
    config = VadConfig(padding_s=0.0)
    found = [segment for segment, _ in stream_speech([read_audio(path)], 16000, config)]
    assert len(found) == len(spans)
    for segment, (start, end) in zip(found, spans):
        assert segment.start_s == pytest.approx(start, abs=0.1)
        assert segment.end_s == pytest.approx(end, abs=0.1)


def test_streaming_in_small_buffers_finds_the_same_segments(utterances):
    signal, _ = speech_with_silences(utterances * 3, silence_s=0.8)
    signal = soxr.resample(signal, ESPEAK_RATE, 16000)
    whole = [s for s, _ in stream_speech([signal], 16000, VadConfig())]
    blocks = np.array_split(signal, 40)
    streamed = list(stream_speech(blocks, 16000, VadConfig(), buffer_s=3.0))
    assert len(streamed) == len(whole) == 9
    for (segment, samples), reference in zip(streamed, whole):
        assert segment.start_s == pytest.approx(reference.start_s, abs=0.1)
        assert segment.end_s == pytest.approx(reference.end_s, abs=0.1)
        assert len(samples) == pytest.approx(segment.duration_s * 16000, abs=1)


def test_silence_has_no_segments():
    assert list(stream_speech([np.zeros(16000 * 5, np.float32)], 16000, VadConfig())) == []


def test_quiet_speech_is_segmented_as_the_same_speech_at_full_level(utterances):
    signal, _ = speech_with_silences(utterances, silence_s=1.0)
    signal = soxr.resample(signal, ESPEAK_RATE, 16000)
    signal += np.random.default_rng(0).normal(0, 1e-3, len(signal)).astype(np.float32)  # -60 dB room noise
    quiet = signal * np.float32(10 ** (-50 / 20))  # loudest frame below -50 dBFS, under webrtcvad's threshold
    loud = [segment for segment, _ in stream_speech([signal], 16000, VadConfig())]
    found = list(stream_speech([quiet], 16000, VadConfig()))
    assert len(found) == len(loud) == 3
    for (segment, samples), reference in zip(found, loud):
        assert segment.start_s == pytest.approx(reference.start_s, abs=0.1)
        assert segment.end_s == pytest.approx(reference.end_s, abs=0.1)
        first = round(segment.start_s * 16000)
        np.testing.assert_array_equal(samples, quiet[first : first + len(samples)])  # raised for the VAD only


def test_quiet_noise_is_not_raised_into_speech():
    noise = np.random.default_rng(0).normal(0, 1, 16000 * 10)
    rumble = scipy.signal.lfilter(*scipy.signal.butter(1, 0.05), noise).astype(np.float32)  # low, stationary
    for level_db in (-90, -60):
        signal = rumble * np.float32(10 ** (level_db / 20) / rumble.std())
        assert list(stream_speech([signal], 16000, VadConfig())) == []
