"""Utterance-level prosody and voice-quality functionals of a speech segment, in numpy.

The CNN-BiLSTM sees one second of MFCCs at a time; how a whole utterance rises, falls,
speeds up and strains is what openSMILE's functionals capture and what the emotion
peers in the literature classify. This module computes a small set of such functionals
fast enough to run beside the MFCCs (an autocorrelation pitch tracker at 8 kHz, after
Boersma 1993, and statistics of pitch, voicing, energy and the MFCCs).

Beside pitch, the tracker's own frame spectra give the spectral shape of the voice (alpha ratio,
Hammarberg index, spectral slopes, H1-H2: the voice-quality measures of eGeMAPS, Eyben et al. 2016),
at no further FFT.

The functionals of a segment depend on the voice and the channel as much as on the
emotion: like the MFCCs, they are standardised over a group of segments
(:class:`sercli.normalization.FrameStats` works on any vectors) before a classifier
reads them (:mod:`sercli.fusion`).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import scipy.fft
import soxr

PITCH_RATE = 8000
"""Sample rate of the pitch analysis in Hz (pitch and its harmonics that matter lie below 4 kHz)."""

FRAME_S = 0.04
"""Pitch analysis frame in seconds: two periods of the lowest pitch searched."""

HOP_S = 0.02
"""Seconds between pitch frames."""

F0_MIN_HZ, F0_MAX_HZ = 60.0, 500.0
"""Pitch search range in Hz."""

VOICING_THRESHOLD = 0.45
"""Normalised autocorrelation peak from which a frame is voiced (Praat's default)."""

SILENCE_DB = 35.0
"""Frames more than this many dB below a segment's loudest frame are silence: never voiced, not in the
energy statistics."""

SUBMULTIPLE_RATIO = 0.9
"""A half, a third, ... of the best lag is the period instead when its autocorrelation reaches this
fraction of the best one's (a periodic signal correlates as well at two or four periods as at one: the
tracker would otherwise halve or quarter the pitch)."""


_FRAMES_PER_PASS = 256
"""Frames analysed together, so their intermediate arrays stay in cache."""


@dataclass(frozen=True)
class PitchTrack:
    """Frame-wise pitch, voicing and energy of a signal.

    Attributes
    ----------
    f0_hz : np.ndarray, shape (n_frames,)
        Pitch in Hz; NaN where the frame is not voiced.
    voicing : np.ndarray, shape (n_frames,)
        Normalised autocorrelation at the pitch period, 0..1 (an HNR-like measure).
    energy_db : np.ndarray, shape (n_frames,)
        Frame energy in dB (full scale 1 is 0 dB).
    power : np.ndarray, shape (n_frames, n_bins)
        Each frame's Hann-windowed power spectrum at :data:`PITCH_RATE`, bins ``PITCH_RATE / (2 * (n_bins - 1))``
        Hz apart.
    hop_s : float
        Seconds between frames.
    """

    f0_hz: np.ndarray
    voicing: np.ndarray
    energy_db: np.ndarray
    power: np.ndarray
    hop_s: float = HOP_S


@lru_cache(maxsize=2)
def _analysis_window(frame: int, n_fft: int) -> tuple[np.ndarray, np.ndarray]:
    """Hann window of ``frame`` samples and its own normalised autocorrelation (``n_fft // 2`` lags)."""
    window = np.hanning(frame + 2)[1:-1].astype(np.float32)
    autocorrelation = scipy.fft.irfft(np.abs(scipy.fft.rfft(window, n_fft)) ** 2, n_fft)[: n_fft // 2]
    return window, (autocorrelation / autocorrelation[0]).astype(np.float32)


def pitch_track(signal: np.ndarray, sample_rate: int) -> PitchTrack:
    """Track pitch by normalised autocorrelation (Boersma 1993, without path finding).

    Parameters
    ----------
    signal : np.ndarray, shape (n,)
        Mono signal, full scale 1.
    sample_rate : int
        Its rate in Hz; it is resampled to :data:`PITCH_RATE`.

    Returns
    -------
    PitchTrack
        One frame every :data:`HOP_S` seconds; a signal shorter than one frame gives one frame.
    """
    signal = np.asarray(signal, dtype=np.float32)
    if sample_rate != PITCH_RATE and len(signal):
        signal = soxr.resample(signal, sample_rate, PITCH_RATE, quality="LQ")
    frame, hop = round(FRAME_S * PITCH_RATE), round(HOP_S * PITCH_RATE)
    if len(signal) < frame:
        signal = np.pad(signal, (0, frame - len(signal)))
    lags = np.arange(int(PITCH_RATE / F0_MAX_HZ), int(PITCH_RATE / F0_MIN_HZ) + 1)
    n_fft = 1 << int(frame + lags[-1]).bit_length()  # long enough that no lag searched wraps around
    window, window_autocorrelation = _analysis_window(frame, n_fft)
    frames = np.lib.stride_tricks.as_strided(  # sliding_window_view(signal, frame)[::hop], without its overhead
        signal, ((len(signal) - frame) // hop + 1, frame), (hop * signal.strides[0], signal.strides[0]), writeable=False
    )
    autocorrelation = np.empty((len(frames), lags[-1] + 1), dtype=np.float32)
    spectra = np.empty((len(frames), n_fft // 2 + 1), dtype=np.float32)
    for first in range(0, len(frames), _FRAMES_PER_PASS):
        spectrum = scipy.fft.rfft(frames[first : first + _FRAMES_PER_PASS] * window, n_fft, axis=1)
        spectra[first : first + _FRAMES_PER_PASS] = spectrum.real**2 + spectrum.imag**2
        autocorrelation[first : first + _FRAMES_PER_PASS] = scipy.fft.irfft(
            spectra[first : first + _FRAMES_PER_PASS], n_fft, axis=1
        )[:, : lags[-1] + 1]
    power = autocorrelation[:, 0]
    normalised = autocorrelation[:, lags] / np.maximum(power, 1e-12)[:, None] / window_autocorrelation[lags]
    rows = np.arange(len(frames))[:, None]
    best = normalised.argmax(axis=1)
    peak, shift = _parabolic_peak(normalised, best[:, None])
    # A multiple of the period correlates about as well as the period: the largest divisor of the best
    # lag whose lag (or a neighbour) correlates nearly as well gives the period.
    divisors = np.arange(lags[-1] // lags[0], 1, -1)
    candidate = np.rint((lags[best][:, None] + shift) / divisors - lags[0]).astype(int)
    near = np.clip(candidate[:, :, None] + np.arange(-1, 2), 0, len(lags) - 1)
    local = np.take_along_axis(near, normalised[rows[:, :, None], near].argmax(axis=2)[:, :, None], 2)[:, :, 0]
    local_peak, local_shift = _parabolic_peak(normalised, local)
    better = (candidate >= 0) & (local < best[:, None]) & (local_peak >= SUBMULTIPLE_RATIO * peak)
    chosen = better.argmax(axis=1)[:, None]
    found = better.any(axis=1)
    best = np.where(found, local[rows, chosen][:, 0], best)
    peak = np.where(found, local_peak[rows, chosen][:, 0], peak[:, 0])
    shift = np.where(found, local_shift[rows, chosen][:, 0], shift[:, 0])
    energy_db = 10 * np.log10(np.maximum(power / np.sum(window**2), 1e-12)).astype(np.float32)
    voiced = (peak >= VOICING_THRESHOLD) & (energy_db > energy_db.max() - SILENCE_DB)
    f0 = np.where(voiced, PITCH_RATE / (lags[best] + shift), np.nan).astype(np.float32)
    return PitchTrack(f0, np.clip(peak, 0.0, 1.0).astype(np.float32), energy_db, spectra)


def _parabolic_peak(values: np.ndarray, index: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Height and position (in lags, -0.5..0.5 from ``index``) of the parabola through each row's
    ``values`` at ``index - 1``, ``index`` and ``index + 1``: a peak between two lags.

    ``values`` is ``(n_frames, n_lags)``, ``index`` ``(n_frames, k)``; both results are ``(n_frames, k)``.
    """
    rows = np.arange(len(values))[:, None]
    centre = values[rows, index]
    left = values[rows, np.maximum(index - 1, 0)]
    right = values[rows, np.minimum(index + 1, values.shape[1] - 1)]
    curvature = left - 2 * centre + right
    concave = curvature < 0
    shift = np.clip(np.where(concave, 0.5 * (left - right) / np.where(concave, curvature, -1.0), 0.0), -0.5, 0.5)
    return centre - 0.25 * (left - right) * shift, shift


SHAPE_MEASURES = (
    "alpha_ratio_db",
    "hammarberg_db",
    "slope_0_500_db_per_khz",
    "slope_500_1500_db_per_khz",
    "centroid_khz",
    "h1_h2_db",
)
"""Spectral shape measures of a frame (:func:`spectral_shape`), as eGeMAPS defines them but within the 4 kHz
of :data:`PITCH_RATE`."""

UNVOICED_SHAPE_MEASURES = ("alpha_ratio_db", "hammarberg_db", "centroid_khz")
"""Shape measures whose mean over audible unvoiced frames (fricatives, breath) is a functional."""

SHAPE_BANDS_HZ = ((0, 500), (500, 1000), (1000, 2000), (2000, 4000))
"""Bands in Hz whose level relative to the whole frame is a functional."""


SLOPE_BANDS_HZ = ((0, 500), (500, 1500))
"""Bands in Hz over which the regression slope of the dB spectrum is a shape measure."""


@lru_cache(maxsize=4)
def _shape_layout(n_bins: int, sample_rate: int) -> tuple[np.ndarray, list[float], np.ndarray, dict]:
    """What :func:`spectral_shape` needs of ``n_bins`` bins up to ``sample_rate / 2``: the bin frequencies
    in Hz; the edges in Hz of the bands it sums, the last at the Nyquist bin, and the first bin of each
    band; and for each regression slope its bins and their centred frequencies over their sum of squares."""
    freqs = np.arange(n_bins, dtype=np.float32) * (sample_rate / (2 * (n_bins - 1)))
    edges = sorted({0, 50, 1000, *(edge for band in SHAPE_BANDS_HZ for edge in band), sample_rate / 2})
    slopes = {}
    for low, high in SLOPE_BANDS_HZ:
        chosen = slice(*np.searchsorted(freqs, [low, high]))
        centred = freqs[chosen] - freqs[chosen].mean()
        slopes[f"slope_{low}_{high}_db_per_khz"] = chosen, centred / np.square(centred).sum()
    return freqs, edges, np.searchsorted(freqs, edges), slopes


def spectral_shape(power: np.ndarray, f0_hz: np.ndarray, sample_rate: int = PITCH_RATE) -> dict[str, np.ndarray]:
    """Spectral shape of each frame.

    Parameters
    ----------
    power : np.ndarray, shape (n_frames, n_bins)
        Power spectra (:attr:`PitchTrack.power`).
    f0_hz : np.ndarray, shape (n_frames,)
        Pitch in Hz, NaN where unvoiced (``h1_h2_db`` is NaN there).
    sample_rate : int
        Rate of the spectra's signal in Hz.

    Returns
    -------
    dict of str to np.ndarray, each of shape (n_frames,)
        :data:`SHAPE_MEASURES`: ``alpha_ratio_db``, the energy of 50-1000 Hz over that of 1-4 kHz;
        ``hammarberg_db``, the strongest bin below 2 kHz over the strongest of 2-4 kHz; the regression
        slopes of the dB spectrum over 0-500 and 500-1500 Hz; the spectral centroid; ``h1_h2_db``, the
        first harmonic over the second (breathy voices high, pressed ones low); and ``band_<low>_<high>_db``
        for each of :data:`SHAPE_BANDS_HZ`.
    """
    power = np.maximum(np.asarray(power, dtype=np.float32), 1e-12)
    freqs, edges, first_bins, slopes = _shape_layout(power.shape[1], sample_rate)
    bin_hz = float(freqs[1])
    parts = np.add.reduceat(power, first_bins, axis=1)  # each band between consecutive edges, in one pass

    def band(low: float, high: float | None) -> np.ndarray:  # low up to (not including) high Hz; None: all
        return parts[:, edges.index(low) : None if high is None else edges.index(high)].sum(axis=1)

    total = power.sum(axis=1)
    strongest = np.maximum.reduceat(power, first_bins[[0, edges.index(2000)]], axis=1)  # below 2 kHz, from 2 kHz
    shape = {
        "alpha_ratio_db": 10 * np.log10(band(50, 1000) / band(1000, None)),
        "hammarberg_db": 10 * np.log10(strongest[:, 0] / strongest[:, 1]),
    }
    levels_db = np.log10(power[:, : max(chosen.stop for chosen, _ in slopes.values())])
    for name, (chosen, centred) in slopes.items():
        shape[name] = 10 * (levels_db[:, chosen] @ centred) * 1000
    shape["centroid_khz"] = power @ freqs / total / 1000
    harmonics = np.full(len(power), np.nan)
    voiced = np.flatnonzero(~np.isnan(f0_hz))
    if len(voiced):
        first = np.rint(f0_hz[voiced] / bin_hz).astype(int)
        near = np.clip(np.array([1, 2])[:, None] * first[:, None, None] + np.arange(-1, 2), 0, power.shape[1] - 1)
        levels = power[voiced[:, None, None], near].max(axis=2)  # (n_voiced, 2): the first two harmonics
        harmonics[voiced] = 10 * np.log10(levels[:, 0] / levels[:, 1])
    shape["h1_h2_db"] = harmonics
    for low, high in SHAPE_BANDS_HZ:
        shape[f"band_{low}_{high}_db"] = 10 * np.log10(band(low, high) / total)
    return shape


FUNCTIONAL_NAMES = (
    "voiced_fraction",
    "f0_mean_st",
    "f0_std_st",
    "f0_p10_st",
    "f0_p50_st",
    "f0_p90_st",
    "f0_range_st",
    "f0_slope_st_per_s",
    "f0_delta_st",
    "f0_rising_fraction",
    "voicing_mean",
    "voicing_std",
    "energy_std_db",
    "energy_range_db",
    "energy_delta_db",
    "voiced_energy_gain_db",
    "voiced_onsets_per_s",
    "voiced_run_mean_s",
    "voiced_run_std_s",
    "unvoiced_run_mean_s",
    "energy_peaks_per_s",
    *(f"{measure}_{statistic}" for measure in SHAPE_MEASURES for statistic in ("mean", "std")),
    *(f"band_{low}_{high}_db" for low, high in SHAPE_BANDS_HZ),
    *(f"unvoiced_{measure}_mean" for measure in UNVOICED_SHAPE_MEASURES),
)
"""Prosodic and voice-quality functionals, in :func:`prosody_functionals` order (``st``: semitones re 100 Hz;
``delta``: mean absolute change between consecutive voiced frames, a jitter- or shimmer-like measure; ``run``:
a stretch of consecutive voiced, or audible unvoiced, frames; spectral shape measures (:func:`spectral_shape`)
over voiced frames, then the level of each band relative to the whole frame's, then the shape of audible
unvoiced frames). On 2-fold RAVDESS, the rhythm and spectral shape functionals raised the head's own UA by
2 points on average over 6 conditions x 3 groupings (docs/training.md)."""


def prosody_functionals(track: PitchTrack) -> np.ndarray:
    """Statistics of a segment's pitch track, shape ``(len(FUNCTIONAL_NAMES),)``, float32.

    Statistics over fewer than two frames (voiced, or audible unvoiced) are 0.
    """
    audible = track.energy_db > track.energy_db.max() - SILENCE_DB
    voiced = ~np.isnan(track.f0_hz)
    energy = track.energy_db[audible]
    values = dict.fromkeys(FUNCTIONAL_NAMES, 0.0)
    values["voiced_fraction"] = voiced.sum() / max(audible.sum(), 1)
    values["energy_std_db"] = energy.std()
    low, high = _percentiles(energy, (5, 95))
    values["energy_range_db"] = high - low
    values["energy_delta_db"] = np.abs(np.diff(energy)).mean() if len(energy) > 1 else 0.0
    onsets = np.count_nonzero(voiced[1:] & ~voiced[:-1]) + bool(voiced[:1].any())
    audible_s = max(audible.sum(), 1) * track.hop_s
    values["voiced_onsets_per_s"] = onsets / audible_s
    voiced_runs, unvoiced_runs = _run_lengths(voiced) * track.hop_s, _run_lengths(audible & ~voiced) * track.hop_s
    if len(voiced_runs):
        values.update(voiced_run_mean_s=voiced_runs.mean(), voiced_run_std_s=voiced_runs.std())
    if len(unvoiced_runs):
        values["unvoiced_run_mean_s"] = unvoiced_runs.mean()
    level = track.energy_db
    peaks = (level[1:-1] > level[:-2]) & (level[1:-1] >= level[2:]) & (level[1:-1] > energy.mean())
    values["energy_peaks_per_s"] = np.count_nonzero(peaks) / audible_s
    shape = spectral_shape(track.power, track.f0_hz)
    unvoiced = audible & ~voiced
    if np.count_nonzero(unvoiced) >= 2:
        means = np.stack([shape[measure] for measure in UNVOICED_SHAPE_MEASURES], axis=1)[unvoiced].mean(axis=0)
        values.update(zip((f"unvoiced_{measure}_mean" for measure in UNVOICED_SHAPE_MEASURES), means))
    if voiced.sum() >= 2:
        bands = [f"band_{low}_{high}_db" for low, high in SHAPE_BANDS_HZ]
        measures = np.stack([shape[name] for name in (*SHAPE_MEASURES, *bands)], axis=1)[voiced]
        means, stds = measures.mean(axis=0), measures[:, : len(SHAPE_MEASURES)].std(axis=0)
        values.update(zip((f"{measure}_mean" for measure in SHAPE_MEASURES), means))
        values.update(zip((f"{measure}_std" for measure in SHAPE_MEASURES), stds))
        values.update(zip(bands, means[len(SHAPE_MEASURES) :]))
        semitones = 12 * np.log2(track.f0_hz[voiced] / 100.0)
        times = np.flatnonzero(voiced) * track.hop_s
        p10, p50, p90 = _percentiles(semitones, (10, 50, 90))
        steps = np.diff(semitones)[np.diff(np.flatnonzero(voiced)) == 1]
        values.update(
            f0_mean_st=semitones.mean(),
            f0_std_st=semitones.std(),
            f0_p10_st=p10,
            f0_p50_st=p50,
            f0_p90_st=p90,
            f0_range_st=p90 - p10,
            f0_slope_st_per_s=_slope(times, semitones),
            f0_delta_st=np.abs(steps).mean() if len(steps) else 0.0,
            f0_rising_fraction=(steps > 0).mean() if len(steps) else 0.0,
            voicing_mean=track.voicing[voiced].mean(),
            voicing_std=track.voicing[voiced].std(),
            voiced_energy_gain_db=track.energy_db[voiced].mean() - energy.mean(),
        )
    return np.array([values[name] for name in FUNCTIONAL_NAMES], dtype=np.float32)


RANGE_COEFFICIENTS = 13
"""MFCCs whose 10-90 % range is a functional: loudness and the spectral envelope's coarse shape."""


def functional_names(n_mfcc: int) -> list[str]:
    """Names of :func:`segment_functionals`' values for ``n_mfcc`` coefficients, in order."""
    return [
        *FUNCTIONAL_NAMES,
        *(f"mfcc{i}_mean" for i in range(n_mfcc)),
        *(f"mfcc{i}_std" for i in range(n_mfcc)),
        *(f"mfcc{i}_delta" for i in range(n_mfcc)),
        *(f"mfcc{i}_range" for i in range(min(n_mfcc, RANGE_COEFFICIENTS))),
    ]


def _run_lengths(mask: np.ndarray) -> np.ndarray:
    """Lengths in frames of the stretches of consecutive true values of ``mask``."""
    edges = np.diff(np.concatenate([[0], mask.astype(np.int8), [0]]))
    return np.flatnonzero(edges == -1) - np.flatnonzero(edges == 1)


def _percentiles(values: np.ndarray, percents: tuple[float, ...]) -> np.ndarray:
    """``np.percentile(values, percents, axis=0)`` (linear interpolation) by one sort: on a segment's few hundred
    frames, 2-9x as fast (``np.percentile``'s own overhead is 80-250 us a call; a segment needs 4 such calls).

    Parameters
    ----------
    values : np.ndarray, shape (n, ...)
        ``n >= 1``.
    percents : tuple of float
        In 0..100.

    Returns
    -------
    np.ndarray, shape (len(percents), ...)
    """
    ordered = np.sort(values, axis=0)
    position = np.asarray(percents, dtype=np.float64) / 100 * (len(ordered) - 1)
    low = np.floor(position).astype(int)
    high = np.minimum(low + 1, len(ordered) - 1)
    fraction = (position - low).reshape(-1, *[1] * (ordered.ndim - 1))
    return ordered[low] + (ordered[high] - ordered[low]) * fraction


def _slope(x: np.ndarray, y: np.ndarray) -> float:
    """Least-squares slope of ``y`` against ``x`` (0 when ``x`` does not vary)."""
    spread = np.square(x - x.mean()).sum()
    return float(((x - x.mean()) * (y - y.mean())).sum() / spread) if spread > 0 else 0.0


def n_functionals(n_mfcc: int) -> int:
    """Length of :func:`segment_functionals`' vector for ``n_mfcc`` coefficients."""
    return len(functional_names(n_mfcc))


def segment_functionals(signal: np.ndarray, sample_rate: int, mfccs: np.ndarray) -> np.ndarray:
    """All functionals of a speech segment (:func:`functional_names`): prosody, then per MFCC its mean,
    standard deviation and mean absolute change between frames (spectral flux), then the 10-90 %
    range of the first :data:`RANGE_COEFFICIENTS` MFCCs.

    Parameters
    ----------
    signal : np.ndarray, shape (n,)
        The segment, mono, full scale 1.
    sample_rate : int
        In Hz.
    mfccs : np.ndarray, shape (n_frames, n_mfcc)
        Its MFCC frames (:func:`sercli.features.mfcc`).

    Returns
    -------
    np.ndarray, shape (n_functionals(n_mfcc),), float32
    """
    prosody = prosody_functionals(pitch_track(signal, sample_rate))
    delta = np.abs(np.diff(mfccs, axis=0)).mean(axis=0) if len(mfccs) > 1 else np.zeros(mfccs.shape[1])
    low, high = _percentiles(mfccs[:, :RANGE_COEFFICIENTS], (10, 90))
    parts = [prosody, mfccs.mean(axis=0), mfccs.std(axis=0), delta, high - low]
    return np.concatenate(parts).astype(np.float32)
