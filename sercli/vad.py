"""Voice activity detection: split a signal into speech segments with webrtcvad.

webrtcvad labels fixed frames (10, 20 or 30 ms of 16-bit PCM) as speech or not;
:func:`flags_to_segments` turns those labels into segments: gaps shorter than
``min_silence_s`` are bridged, bursts shorter than ``min_speech_s`` dropped, each
segment padded by ``padding_s`` and segments longer than ``max_segment_s`` split
into equal parts. :func:`stream_speech` does the same over a stream of blocks so
that a recording of any length is segmented in bounded memory.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np
import webrtcvad

VAD_SAMPLE_RATES = (8000, 16000, 32000, 48000)
VAD_FRAME_MS = (10, 20, 30)


@dataclass(frozen=True, order=True)
class SpeechSegment:
    """A time interval of speech, in seconds from the start of the recording."""

    start_s: float
    end_s: float

    @property
    def duration_s(self) -> float:
        """Length in seconds."""
        return self.end_s - self.start_s


@dataclass(frozen=True)
class VadConfig:
    """How speech segments are found.

    Attributes
    ----------
    aggressiveness : int
        webrtcvad mode, 0 (keeps most) to 3 (keeps least).
    frame_ms : int
        VAD frame length in milliseconds: 10, 20 or 30.
    min_speech_s : float
        Speech bursts shorter than this (seconds) are dropped.
    min_silence_s : float
        Pauses shorter than this (seconds) do not end a segment.
    padding_s : float
        Seconds of context added before and after each segment.
    max_segment_s : float
        Longer segments are split into equal parts no longer than this (seconds).
    trim_db : float
        Frames at a segment's edges quieter than its loudest frame by more than
        this (dB) are trimmed off: webrtcvad holds on ~0.1 s after speech ends.
    quiet_dbfs : float
        A buffer whose loudest frame is quieter than this (dB re full scale) is
        amplified to it for webrtcvad, which ignores quiet frames (at -20 dB, it
        found no speech in 13 of 240 RAVDESS clips); stationary noise this loud
        stays below its threshold. The segments' samples are not changed.
    """

    aggressiveness: int = 2
    frame_ms: int = 30
    min_speech_s: float = 0.25
    min_silence_s: float = 0.3
    padding_s: float = 0.1
    max_segment_s: float = 10.0
    trim_db: float = 40.0
    quiet_dbfs: float = -35.0

    def __post_init__(self) -> None:
        if self.aggressiveness not in (0, 1, 2, 3):
            raise ValueError(f"VAD aggressiveness must be 0, 1, 2 or 3, not {self.aggressiveness}")
        if self.frame_ms not in VAD_FRAME_MS:
            raise ValueError(f"VAD frame must be 10, 20 or 30 ms, not {self.frame_ms}")
        numbers = {
            "min speech": self.min_speech_s,
            "min silence": self.min_silence_s,
            "padding": self.padding_s,
            "max segment": self.max_segment_s,
            "trim": self.trim_db,
            "quiet level": self.quiet_dbfs,
        }
        for name, value in numbers.items():
            if not math.isfinite(value):
                raise ValueError(f"{name} must be a number, not {value}")
        if min(self.min_speech_s, self.min_silence_s, self.padding_s) < 0:
            raise ValueError("min speech, min silence and padding must be >= 0 seconds")
        if self.max_segment_s <= max(self.min_speech_s, 2 * self.frame_ms / 1000):
            raise ValueError(
                f"max segment length ({self.max_segment_s} s) must exceed the minimum "
                f"speech length ({self.min_speech_s} s)"
            )


def speech_flags(signal: np.ndarray, sample_rate: int, aggressiveness: int, frame_ms: int) -> np.ndarray:
    """Label each whole frame of a signal as speech or not.

    Parameters
    ----------
    signal : np.ndarray, shape (n,)
        Mono float signal, full scale 1 (clipped to [-1, 1] for the VAD).
    sample_rate : int
        8000, 16000, 32000 or 48000 Hz.
    aggressiveness : int
        webrtcvad mode, 0 to 3.
    frame_ms : int
        Frame length in milliseconds: 10, 20 or 30.

    Returns
    -------
    np.ndarray of bool, shape (n // frame_samples,)
        True where webrtcvad hears speech; a trailing partial frame is not labelled.
    """
    if sample_rate not in VAD_SAMPLE_RATES:
        raise ValueError(f"webrtcvad needs 8, 16, 32 or 48 kHz audio, not {sample_rate} Hz")
    frame_samples = sample_rate * frame_ms // 1000
    pcm = memoryview((np.clip(signal, -1.0, 1.0) * 32767).astype("<i2")).cast("B")  # frames sliced without copies
    step = 2 * frame_samples
    vad = webrtcvad.Vad(aggressiveness)
    return np.fromiter(
        (vad.is_speech(pcm[i : i + step], sample_rate) for i in range(0, len(pcm) - step + 1, step)),
        dtype=bool,
    )


def frame_energy_db(signal: np.ndarray, frame_samples: int) -> np.ndarray:
    """Mean power of each whole frame in dB (re full scale), shape ``(n // frame_samples,)``."""
    frames = signal[: len(signal) // frame_samples * frame_samples].reshape(-1, frame_samples)
    power = np.einsum("ij,ij->i", frames, frames) / frame_samples
    return 10 * np.log10(power.astype(np.float64) + 1e-12)


def flags_to_segments(
    flags: np.ndarray, frame_s: float, config: VadConfig, total_s: float, energy_db: np.ndarray | None = None
) -> list[SpeechSegment]:
    """Turn per-frame speech labels into padded, bounded speech segments.

    Parameters
    ----------
    flags : np.ndarray of bool, shape (n_frames,)
        Per-frame speech labels; frame ``i`` covers ``[i * frame_s, (i + 1) * frame_s)``.
    frame_s : float
        Frame length in seconds.
    config : VadConfig
        Bridging, minimum length, trimming, padding and maximum length rules.
    total_s : float
        Length of the signal in seconds; padding never goes past it.
    energy_db : np.ndarray, shape (n_frames,), optional
        Frame energies (:func:`frame_energy_db`); when given, segment edges
        quieter than ``config.trim_db`` below the segment's peak are trimmed.

    Returns
    -------
    list of SpeechSegment
        Sorted, non-overlapping segments.
    """
    edges = np.diff(np.concatenate(([0], flags.astype(np.int8), [0])))
    starts, ends = np.flatnonzero(edges == 1) * frame_s, np.flatnonzero(edges == -1) * frame_s
    runs: list[list[float]] = []
    for start, end in zip(starts, ends):
        if runs and start - runs[-1][1] < config.min_silence_s:
            runs[-1][1] = end
        else:
            runs.append([start, end])
    padded: list[list[float]] = []
    for start, end in runs:
        if energy_db is not None:
            first, last = round(start / frame_s), round(end / frame_s)
            loud = np.flatnonzero(energy_db[first:last] >= energy_db[first:last].max() - config.trim_db)
            start, end = (first + loud[0]) * frame_s, (first + loud[-1] + 1) * frame_s
        if end - start < config.min_speech_s:
            continue
        start, end = max(0.0, start - config.padding_s), min(total_s, end + config.padding_s)
        if padded and start <= padded[-1][1]:
            padded[-1][1] = end
        else:
            padded.append([start, end])
    segments = []
    for start, end in padded:
        parts = math.ceil((end - start) / config.max_segment_s - 1e-9)
        bounds = np.linspace(start, end, parts + 1)
        segments.extend(SpeechSegment(float(a), float(b)) for a, b in itertools.pairwise(bounds))
    return segments


def stream_speech(
    blocks: Iterable[np.ndarray], sample_rate: int, config: VadConfig, buffer_s: float = 60.0
) -> Iterator[tuple[SpeechSegment, np.ndarray]]:
    """Segment a stream of signal blocks, yielding each speech segment with its samples.

    Blocks are gathered into buffers of about ``buffer_s`` seconds. Segments that
    end too close to a buffer's end to be complete are carried into the next
    buffer, so memory is bounded by ``buffer_s + max_segment_s`` seconds of audio.

    Parameters
    ----------
    blocks : iterable of np.ndarray, shape (n,)
        Consecutive pieces of one mono float signal at ``sample_rate`` Hz.
    sample_rate : int
        Rate in Hz (one webrtcvad accepts).
    config : VadConfig
        Segmentation rules.
    buffer_s : float
        Seconds of audio gathered before each VAD pass.

    Yields
    ------
    (SpeechSegment, np.ndarray)
        The segment, in seconds from the start of the stream, and its samples.
    """
    pieces: list[np.ndarray] = []
    gathered = 0
    offset = 0  # stream sample index of the buffer's first sample
    for block in blocks:
        pieces.append(block)
        gathered += len(block)
        if gathered >= buffer_s * sample_rate:
            carry, offset = yield from _segment_buffer(np.concatenate(pieces), offset, sample_rate, config, final=False)
            pieces, gathered = [carry], len(carry)
    yield from _segment_buffer(
        np.concatenate(pieces or [np.zeros(0, np.float32)]), offset, sample_rate, config, final=True
    )


def _segment_buffer(buffer, offset, sample_rate, config, final):
    """Yield the complete segments of one buffer; return the samples to carry and their offset."""
    frame_s = config.frame_ms / 1000
    total_s = len(buffer) / sample_rate
    energy_db = frame_energy_db(buffer, sample_rate * config.frame_ms // 1000)
    lift_db = config.quiet_dbfs - energy_db.max() if len(energy_db) else 0.0
    heard = buffer * np.float32(10 ** (lift_db / 20)) if lift_db > 0 else buffer
    flags = speech_flags(heard, sample_rate, config.aggressiveness, config.frame_ms)
    horizon_s = math.inf if final else total_s - (config.min_silence_s + config.padding_s + 2 * frame_s)
    carry_s = min(horizon_s, total_s)
    for segment in flags_to_segments(flags, frame_s, config, total_s, energy_db):
        if segment.end_s >= horizon_s:
            carry_s = min(segment.start_s, horizon_s)
            break
        first, last = round(segment.start_s * sample_rate), round(segment.end_s * sample_rate)
        start_s = offset / sample_rate
        yield SpeechSegment(start_s + segment.start_s, start_s + segment.end_s), buffer[first:last]
    carry = max(0, round(carry_s * sample_rate))
    return buffer[carry:], offset + carry
