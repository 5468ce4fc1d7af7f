"""Audio input: decode any file libsndfile reads into 16 kHz mono float32 blocks.

Files are streamed block by block so that memory stays flat however long a
recording is. Every block is mixed down to mono, cleaned of NaN/Inf samples,
clipped to [-1, 1] and resampled with soxr's streaming resampler.
"""

from __future__ import annotations

import errno
import math
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

MIN_SAMPLE_RATE, MAX_SAMPLE_RATE = 1000, 768000
"""Header sample rates (Hz) outside this range are refused: a corrupt 1 Hz header would turn one
block into a billion resampled samples."""

BLOCK_FRAMES = 1 << 18
"""Frames (per channel, at the file's own rate) decoded per block: 5.5 s at 48 kHz."""

BLOCK_SAMPLES = 1 << 20
"""At most this many samples (frames x channels, 4 MiB of float32) decoded per block, however
many channels a header claims."""


class AudioError(Exception):
    """A file that cannot be decoded as audio; the message is a one-line cause."""


@dataclass(frozen=True)
class AudioInfo:
    """What a file's header says.

    Attributes
    ----------
    sample_rate : int
        Native sampling rate in Hz.
    channels : int
        Number of channels.
    frames : int
        Length in samples per channel.
    """

    sample_rate: int
    channels: int
    frames: int

    @property
    def duration_s(self) -> float:
        """Length in seconds."""
        return self.frames / self.sample_rate


def audio_info(path: str | Path) -> AudioInfo:
    """Read a file's header.

    Raises
    ------
    AudioError
        If the file is missing, unreadable, or not audio libsndfile understands.
    """
    path = Path(path)
    if not path.exists():
        raise AudioError(_missing(path))
    if path.is_dir():
        listable = os.access(path, os.R_OK | os.X_OK)
        raise AudioError("is a directory" if listable else "folder cannot be listed (permission denied)")
    if not stat.S_ISREG(path.stat().st_mode):  # opening a FIFO would block until a writer came
        raise AudioError("not a regular file (a FIFO, socket or device)")
    if not os.access(path, os.R_OK):
        raise AudioError("permission denied")
    try:
        info = sf.info(os.fsencode(path))  # bytes: names that are not UTF-8 open too
    except (sf.LibsndfileError, RuntimeError, OSError) as error:
        raise AudioError(_cause(error)) from None
    if info.frames <= 0:
        raise AudioError("no audio samples (zero-length audio)")
    if not MIN_SAMPLE_RATE <= info.samplerate <= MAX_SAMPLE_RATE:
        raise AudioError(
            f"header sample rate {info.samplerate} Hz is outside {MIN_SAMPLE_RATE}-{MAX_SAMPLE_RATE} Hz (corrupt header?)"
        )
    return AudioInfo(info.samplerate, info.channels, info.frames)


def to_mono(block: np.ndarray) -> np.ndarray:
    """Mix a ``(frames, channels)`` block down to a clean ``(frames,)`` float32 signal.

    Out-of-range samples and +/-Inf are clipped to [-1, 1], NaN becomes 0, then
    the block's DC offset (its mean) is removed, so the result lies in [-2, 2].
    """
    if block.ndim == 1:
        block = block[:, None]
    channels = block.shape[1]
    if channels == 1:  # a one-column matrix product would cost 7x more than the rest together
        mixed = block[:, 0]
    else:
        mixed = np.asarray(block, dtype=np.float32) @ np.full(channels, 1.0 / channels, dtype=np.float32)
    mono = np.clip(mixed, -1.0, 1.0, dtype=np.float32)
    total = float(mono.sum())
    if not math.isfinite(total):  # NaN somewhere
        np.nan_to_num(mono, copy=False)
        total = float(mono.sum())
    if len(mono):
        mono -= total / len(mono)
    return mono


def iter_audio(path: str | Path, sample_rate: int = 16000, block_frames: int = BLOCK_FRAMES) -> Iterator[np.ndarray]:
    """Stream a file as mono float32 blocks at ``sample_rate`` Hz.

    Parameters
    ----------
    path : str or Path
        Any file libsndfile reads (wav, flac, ogg, mp3, aiff, ...).
    sample_rate : int
        Output rate in Hz.
    block_frames : int
        Input frames decoded per block.

    Yields
    ------
    np.ndarray, shape (n,)
        Consecutive pieces of the resampled signal (some may be empty).

    Raises
    ------
    AudioError
        If the file cannot be opened or a block cannot be decoded (truncated file).
    """
    info = audio_info(path)
    block_frames = max(1, min(block_frames, BLOCK_SAMPLES // info.channels))

    def blocks() -> Iterator[np.ndarray]:
        with sf.SoundFile(os.fsencode(path)) as handle:
            while len(block := handle.read(block_frames, dtype="float32", always_2d=True)) == block_frames:
                yield block
            yield block  # the last, short (maybe empty) one

    try:
        yield from _mono_resampled(blocks(), info.sample_rate, sample_rate)
    except (sf.LibsndfileError, RuntimeError, OSError) as error:
        raise AudioError(_cause(error)) from None


def iter_signal(
    signal: np.ndarray, signal_rate: int, sample_rate: int = 16000, block_frames: int = BLOCK_FRAMES
) -> Iterator[np.ndarray]:
    """Stream a signal held in memory as :func:`iter_audio` streams a file.

    Parameters
    ----------
    signal : np.ndarray, shape (n,), (n, channels) or (channels, n)
        Samples: floats at full scale 1, or integers at their type's full scale (int16
        PCM, unsigned 8-bit PCM centred on 128, ...). A 2-D array with more columns
        than rows is taken as (channels, n), librosa's layout.
    signal_rate : int
        Its rate in Hz (1 kHz to 768 kHz).
    sample_rate : int
        Output rate in Hz.

    Raises
    ------
    AudioError
        If the signal is empty, not real numbers, or its rate is out of range.
    """
    signal = full_scale(signal)
    if signal.ndim == 2 and signal.shape[1] > signal.shape[0]:
        signal = signal.T
    if signal.ndim not in (1, 2) or signal.size == 0:
        raise AudioError(f"a signal must be shaped (samples,) or (samples, channels) and not empty, not {signal.shape}")
    if not MIN_SAMPLE_RATE <= signal_rate <= MAX_SAMPLE_RATE:
        raise AudioError(f"sample rate {signal_rate} Hz is outside {MIN_SAMPLE_RATE}-{MAX_SAMPLE_RATE} Hz")
    starts = range(0, len(signal) + 1, block_frames)  # a last, short (maybe empty) block ends the stream
    yield from _mono_resampled((signal[i : i + block_frames] for i in starts), signal_rate, sample_rate)


def full_scale(signal: np.ndarray) -> np.ndarray:
    """Samples as float32 at full scale 1: floats as they are, signed integers divided by their
    type's full scale (32768 for int16), unsigned ones centred first (128 for uint8).

    Raises
    ------
    AudioError
        For booleans, complex numbers and anything else that is not a real number.
    """
    signal = np.asarray(signal)
    kind = signal.dtype.kind
    if kind == "f":
        return signal.astype(np.float32, copy=False)
    if kind == "i":
        return (signal / float(-np.iinfo(signal.dtype).min)).astype(np.float32)
    if kind == "u":
        middle = float(np.iinfo(signal.dtype).max // 2 + 1)
        return ((signal - middle) / middle).astype(np.float32)
    raise AudioError(f"samples must be real numbers (float or integer PCM), not {signal.dtype}")


def _mono_resampled(blocks: Iterator[np.ndarray], rate: int, sample_rate: int) -> Iterator[np.ndarray]:
    """Blocks at ``rate`` Hz, the last one shorter than the others, as mono blocks at ``sample_rate`` Hz."""
    resampler = (
        None if rate == sample_rate else soxr.ResampleStream(rate, sample_rate, 1, dtype="float32", quality="HQ")
    )
    previous = None
    for block in blocks:
        if previous is not None:
            mono = to_mono(previous)
            yield mono if resampler is None else resampler.resample_chunk(mono)
        previous = block
    mono = to_mono(previous)
    yield mono if resampler is None else resampler.resample_chunk(mono, last=True)


def read_audio(path: str | Path, sample_rate: int = 16000) -> np.ndarray:
    """Decode a whole file as one mono float32 signal at ``sample_rate`` Hz, shape ``(n,)``."""
    return np.concatenate(list(iter_audio(path, sample_rate)))


def _missing(path: Path) -> str:
    """Why a path that ``exists()`` denies is missing: a link loop, a broken link, or nothing there."""
    if not path.is_symlink():
        return "file not found"
    try:
        os.stat(path)
    except OSError as error:
        if error.errno == errno.ELOOP:
            return "symbolic link loop"
    return "broken symbolic link"


LIBSNDFILE_MESSAGES = {
    "Internal error : SF_INFO struct incomplete.": "corrupt header (impossible sample rate, channels or format)",
    "Error in WAV file. No 'data' chunk marker.": "WAV header without audio data (no 'data' chunk)",
    "Channel count is zero.": "corrupt header (zero channels)",
}
"""libsndfile's texts that say little to a user, and what they mean."""


def _cause(error: Exception) -> str:
    """A one-line, human cause for a decoding error."""
    if isinstance(error, FileNotFoundError):
        return "file not found (deleted while being read?)"
    message = str(error).splitlines()[0] if str(error) else type(error).__name__
    # libsndfile prefixes its messages with "Error opening 'path': " or "Error : "; the caller names the file.
    message = message.split(": ", 1)[-1] if message.startswith(("Error opening", "Error : ")) else message
    # Some garbage headers make libsndfile claim a regular, existing file does not exist.
    if message.startswith("File does not exist"):
        return "Format not recognised."
    return LIBSNDFILE_MESSAGES.get(message, message)
