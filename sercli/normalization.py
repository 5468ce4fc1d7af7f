"""Normalising MFCCs over a speaker or a recording.

A model trained on one set of voices and microphones hears a new voice or a
telephone line as a shift of every cepstral coefficient. Standardising each
coefficient over a group of speech frames that share the voice and the channel
(a segment, a recording, a folder of one speaker's clips) removes most of that
shift while keeping what varies within the group: the emotion.

:class:`FrameStats` holds the sufficient statistics (frame count, sum and sum
of squares per coefficient, in float64), so the statistics of a group are the
sum of its parts' statistics, exactly, whatever order or blocks they came in.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

NORMALIZATIONS = ("auto", "speaker", "recording", "folder", "segment", "none")
"""Groups whose speech frames are standardised together when annotating:

- ``auto``: a recording long enough to be its own group is; shorter ones are pooled
  with the other short recordings of their folder (see :mod:`sercli.groups`);
- ``speaker``: all speech of one speaker, across folders (speakers from a table or a
  file-name pattern);
- ``recording``: all speech of one recording (a call, an interview, a clip);
- ``folder``: all speech of the recordings in one folder (e.g. one speaker's clips);
- ``segment``: each speech segment alone;
- ``none``: no normalisation (models trained without it).

Whatever the group, a model whose card holds a prior (:attr:`sercli.model.ModelCard.prior`)
adds its pseudo-frames to the group's statistics, so a small group is standardised with
statistics shrunk towards the training set's, and a large one with its own.
"""

PRIOR_FRAMES = 400
"""Pseudo-frames of the training statistics added to every group's statistics (10 s of speech at a
25 ms hop): a 3 s clip's own statistics weigh about a fifth, a speaker's minute of speech 86 %."""

MIN_STD = 1e-3
"""Floor of a coefficient's standard deviation, so constant input (digital silence) stays finite."""


@dataclass
class FrameStats:
    """Per-coefficient sums over a set of MFCC frames.

    Attributes
    ----------
    count : float
        Number of frames.
    total : np.ndarray, shape (n_coeffs,), float64
        Sum of the frames.
    total_sq : np.ndarray, shape (n_coeffs,), float64
        Sum of the squared frames.
    """

    count: float
    total: np.ndarray
    total_sq: np.ndarray

    @classmethod
    def empty(cls, n_coeffs: int) -> FrameStats:
        """Statistics of no frame."""
        return cls(0.0, np.zeros(n_coeffs), np.zeros(n_coeffs))

    @classmethod
    def of(cls, frames: np.ndarray) -> FrameStats:
        """Statistics of frames shaped ``(n_frames, n_coeffs)``."""
        frames = np.asarray(frames, dtype=np.float64)
        return cls(float(len(frames)), frames.sum(axis=0), np.square(frames).sum(axis=0))

    @classmethod
    def of_moments(cls, mean: np.ndarray, std: np.ndarray, count: float) -> FrameStats:
        """Statistics of ``count`` frames with this mean and standard deviation per coefficient."""
        mean, std = np.asarray(mean, dtype=np.float64), np.asarray(std, dtype=np.float64)
        return cls(float(count), mean * count, (np.square(std) + np.square(mean)) * count)

    def __add__(self, other: FrameStats) -> FrameStats:
        return FrameStats(self.count + other.count, self.total + other.total, self.total_sq + other.total_sq)

    @property
    def mean(self) -> np.ndarray:
        """Mean per coefficient, shape ``(n_coeffs,)`` (zeros for no frame)."""
        return self.total / max(self.count, 1.0)

    @property
    def std(self) -> np.ndarray:
        """Standard deviation per coefficient, at least :data:`MIN_STD` (ones for no frame)."""
        if self.count == 0:
            return np.ones_like(self.total)
        variance = np.maximum(self.total_sq / self.count - np.square(self.mean), 0.0)
        return np.maximum(np.sqrt(variance), MIN_STD)

    def to_array(self) -> np.ndarray:
        """``(count, total, total_sq)`` stacked, shape ``(3, n_coeffs)``: for storing many as one array."""
        return np.stack([np.full_like(self.total, self.count), self.total, self.total_sq])

    @classmethod
    def from_array(cls, array: np.ndarray) -> FrameStats:
        """Inverse of :meth:`to_array`; an array ``(n, 3, n_coeffs)`` gives the sum of its ``n`` statistics."""
        array = np.asarray(array, dtype=np.float64)
        if array.ndim == 3:
            array = array.sum(axis=0)
        return cls(float(array[0, 0]), array[1].copy(), array[2].copy())


def standardize(windows: np.ndarray, stats: FrameStats) -> np.ndarray:
    """Windows ``(n, frames, coeffs)`` standardised per coefficient with ``stats``, float32."""
    return ((windows - stats.mean) / stats.std).astype(np.float32)
