"""The functional head: a small network over a segment's functionals, fused with the CNN-BiLSTM.

The CNN-BiLSTM reads local spectral patterns, one second at a time; the head reads the
whole segment's prosody and voice quality (:mod:`sercli.prosody`). Their log-probabilities
are added (a product of experts), which on speakers neither had heard gained 5-11 points of
clip-level UA over the CNN alone in every condition and grouping measured (2-fold RAVDESS,
docs/robustness.md).

Like the MFCCs, the functionals are standardised over a group of segments that share a
voice and a channel, with the training set's statistics added as ``PRIOR_SEGMENTS``
pseudo-segments (:class:`sercli.normalization.FrameStats` sums any vectors), so a segment
alone is standardised mostly with the training statistics and a speaker's minute of
speech with its own.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from sercli.datasets import LabelledClip, balanced_weights, clip_groups
from sercli.normalization import FrameStats

PRIOR_SEGMENTS = 20
"""Pseudo-segments of the training functionals added to every group's statistics (2-fold, RAVDESS + nEMO:
20 beat 5 by 1-3 points when a group is one clip or several speakers, and tied per speaker)."""

REGULARIZATION = 0.03
"""Inverse L2 strength ``C`` of a head without hidden layers, a logistic regression (0.03 beat 0.3 by 1-3
points but for a folder of several speakers)."""

HIDDEN_UNITS = (128, 64)
"""Units of the head's hidden layers. Against a logistic regression, fused with the 5-fold RAVDESS fold
networks: ahead in 34 of 45 cells of the robustness table (15 conditions x 3 groupings), mean +0.4 to +0.8
points, clean per actor -0.3; head alone, 5-fold RAVDESS + nEMO, +2.8 on RAVDESS and +7.2 on nEMO; one
hidden layer, or 256 + 128 units, scored 0.8-1.3 points lower alone at the same penalty (docs/training.md)."""

HIDDEN_PENALTY = 3.0
"""L2 penalty (scikit-learn's ``alpha``) of a head with hidden layers (1 and 5 scored 2.6 and 3.2 points
lower on RAVDESS, head alone)."""

HIDDEN_EPOCHS = 300
"""At most this many passes of Adam over the training segments (it stops earlier once the loss settles)."""

HEAD_WEIGHT = 1.0
"""Weight of the head's log-probabilities against the CNN's (1.0 beat 0.5 and 2.0 on the 2-fold comparison)."""

TEMPERATURES = (0.25, 10.0)
"""The range :func:`fit_temperature` searches."""


@dataclass(frozen=True)
class FunctionalHead:
    """A small network over standardised functionals: dense layers, ReLU between them, a softmax at the end.

    One layer is a multinomial logistic regression.

    Attributes
    ----------
    layers : tuple of (np.ndarray, np.ndarray)
        Each layer's weights, shape (n_inputs, n_outputs), and bias, shape (n_outputs,): from
        ``n_functionals`` inputs to ``n_labels`` outputs.
    prior : FrameStats
        The training functionals' statistics as :data:`PRIOR_SEGMENTS` pseudo-segments.
    weight : float
        Weight of its log-probabilities when fused with the CNN's (:func:`fuse`).
    temperature : float
        What the fused log-probabilities are divided by, so that a segment's confidence is how often such
        a label is right on speakers neither model heard (:func:`fit_temperature`); 1 for uncalibrated.
    """

    layers: tuple[tuple[np.ndarray, np.ndarray], ...]
    prior: FrameStats
    weight: float = HEAD_WEIGHT
    temperature: float = 1.0

    @property
    def shape(self) -> tuple[int, int]:
        """``(n_functionals, n_labels)``: what it reads and what it scores."""
        return self.layers[0][0].shape[0], self.layers[-1][0].shape[1]

    @property
    def hidden(self) -> tuple[int, ...]:
        """Units of each hidden layer; ``()`` for a logistic regression."""
        return tuple(weights.shape[1] for weights, _ in self.layers[:-1])

    @property
    def architecture(self) -> str:
        """Its shape in words: ``"hidden layers of 128, 64 units"`` or ``"linear"``."""
        return f"hidden layers of {', '.join(map(str, self.hidden))} units" if self.hidden else "linear"

    def log_probabilities(self, functionals: np.ndarray, group: FrameStats) -> np.ndarray:
        """Log-probabilities of segments standardised over ``group`` (their group's statistics, without
        the prior, which is added here).

        Parameters
        ----------
        functionals : np.ndarray, shape (n_segments, n_functionals)
        group : FrameStats

        Returns
        -------
        np.ndarray, shape (n_segments, n_labels)
        """
        stats = group + self.prior
        x = (np.asarray(functionals, dtype=np.float64) - stats.mean) / stats.std
        for weights, bias in self.layers[:-1]:
            x = np.maximum(x @ weights + bias, 0.0)
        weights, bias = self.layers[-1]
        logits = x @ weights + bias
        return logits - _logsumexp(logits)

    def fused(self, cnn_probabilities: np.ndarray, log_probabilities: np.ndarray) -> np.ndarray:
        """:func:`fuse` with this head's weight and temperature: the segments' probabilities, shape
        (n, n_labels), from the CNN's and this head's (:meth:`log_probabilities`)."""
        return fuse(cnn_probabilities, log_probabilities, self.weight, self.temperature)

    def to_dict(self) -> dict:
        """The head as a card's ``functional_head`` (JSON-ready)."""
        return {
            "layers": [{"weights": weights.tolist(), "bias": bias.tolist()} for weights, bias in self.layers],
            "prior": {"segments": self.prior.count, "mean": self.prior.mean.tolist(), "std": self.prior.std.tolist()},
            "weight": self.weight,
            "temperature": self.temperature,
        }

    @classmethod
    def from_dict(cls, fields: dict) -> FunctionalHead:
        """Inverse of :meth:`to_dict`; also reads the logistic regression (``coef``, shape (n_labels,
        n_functionals), and ``intercept``) of the cards written before heads had hidden layers, and a
        temperature of 1 from cards written before calibration."""
        if "layers" in fields:
            layers = [(layer["weights"], layer["bias"]) for layer in fields["layers"]]
        else:
            layers = [(np.asarray(fields["coef"], dtype=np.float64).T, fields["intercept"])]
        layers = tuple((np.asarray(w, dtype=np.float64), np.asarray(b, dtype=np.float64)) for w, b in layers)
        if not layers or any(
            w.ndim != 2 or b.shape != (w.shape[1],) or (i and w.shape[0] != layers[i - 1][0].shape[1])
            for i, (w, b) in enumerate(layers)
        ):
            raise ValueError("its layers' shapes do not chain")
        prior = fields["prior"]
        temperature = float(fields.get("temperature", 1.0))
        if not temperature > 0:
            raise ValueError(f"its temperature {temperature} is not positive")
        return cls(
            layers,
            FrameStats.of_moments(prior["mean"], prior["std"], prior["segments"]),
            float(fields["weight"]),
            temperature,
        )


def _logsumexp(logits: np.ndarray) -> np.ndarray:
    top = logits.max(axis=1, keepdims=True)
    return top + np.log(np.exp(logits - top).sum(axis=1, keepdims=True))


def fuse(
    cnn_probabilities: np.ndarray, head_log_probabilities: np.ndarray, weight: float, temperature: float = 1.0
) -> np.ndarray:
    """Product of experts: ``softmax((log p_cnn + weight * log p_head) / temperature)``.

    Parameters
    ----------
    cnn_probabilities : np.ndarray, shape (n, n_labels)
        The CNN-BiLSTM's (mean window) probabilities.
    head_log_probabilities : np.ndarray, shape (n, n_labels)
    weight : float
    temperature : float
        Above 1 flattens the probabilities; the most probable label stays the same.

    Returns
    -------
    np.ndarray, shape (n, n_labels), float32
        Each row sums to 1.
    """
    logits = (np.log(np.maximum(cnn_probabilities, 1e-9)) + weight * head_log_probabilities) / temperature
    return np.exp(logits - _logsumexp(logits)).astype(np.float32)


def fit_temperature(probabilities: np.ndarray, labels: np.ndarray) -> float:
    """The temperature that makes held-out probabilities most likely (temperature scaling: Guo et al.,
    *On calibration of modern neural networks*, ICML 2017).

    The product of two experts is overconfident: on the 5-fold RAVDESS fold models, per speaker, the fused
    output's mean confidence was 0.86 for an accuracy of 0.62 (expected calibration error 0.23); a
    temperature fitted on the other folds brought it to 0.03 (docs/training.md).

    Parameters
    ----------
    probabilities : np.ndarray, shape (n, n_labels)
        Fused probabilities (temperature 1) of clips that neither model was trained on.
    labels : np.ndarray of int, shape (n,)
        Their true labels' indices.

    Returns
    -------
    float
        Within :data:`TEMPERATURES`; divide the fused log-probabilities by it (:func:`fuse`).
    """
    from scipy.optimize import minimize_scalar

    log_p = np.log(np.maximum(np.asarray(probabilities, dtype=np.float64), 1e-9))
    labels = np.asarray(labels)

    def nll(log_t: float) -> float:
        scaled = log_p / np.exp(log_t)
        return float((_logsumexp(scaled)[:, 0] - scaled[np.arange(len(labels)), labels]).mean())

    bounds = np.log(TEMPERATURES)
    return float(np.exp(minimize_scalar(nll, bounds=bounds, method="bounded").x))


def calibration_error(probabilities: np.ndarray, labels: np.ndarray, bins: int = 10) -> float:
    """Expected calibration error: the gap between confidence and accuracy, over ``bins`` equal-width bins of
    confidence, weighted by their share of the rows.

    Parameters
    ----------
    probabilities : np.ndarray, shape (n, n_labels)
    labels : np.ndarray of int, shape (n,)

    Returns
    -------
    float
        0 when every bin's mean confidence is its accuracy.
    """
    confidence = np.asarray(probabilities).max(axis=1)
    right = np.asarray(probabilities).argmax(axis=1) == np.asarray(labels)
    which = np.minimum((confidence * bins).astype(int), bins - 1)
    return float(
        sum(
            abs(confidence[which == b].mean() - right[which == b].mean()) * np.mean(which == b)
            for b in np.unique(which)
        )
    )


def group_standardized(functionals: np.ndarray, groups: np.ndarray, prior: FrameStats) -> np.ndarray:
    """Functionals standardised over the rows sharing a label in ``groups``, with ``prior`` added.

    Parameters
    ----------
    functionals : np.ndarray, shape (n, n_functionals)
    groups : np.ndarray, shape (n,)
    prior : FrameStats

    Returns
    -------
    np.ndarray, shape (n, n_functionals), float64
    """
    functionals = np.asarray(functionals, dtype=np.float64)
    out = np.empty_like(functionals)
    for group in np.unique(groups):
        members = groups == group
        stats = FrameStats.of(functionals[members]) + prior
        out[members] = (functionals[members] - stats.mean) / stats.std
    return out


def head_log_probabilities(head: FunctionalHead, functionals: np.ndarray, groups: np.ndarray | None) -> np.ndarray:
    """:meth:`FunctionalHead.log_probabilities` of every row, each standardised over its group in ``groups``
    (``None``: over no group, with the prior alone)."""
    if groups is None:
        return head.log_probabilities(functionals, FrameStats.empty(head.shape[0]))
    out = np.empty((len(functionals), head.shape[1]))
    for group in np.unique(groups):
        members = groups == group
        out[members] = head.log_probabilities(functionals[members], FrameStats.of(functionals[members]))
    return out


def fit_head(
    functionals: Sequence[np.ndarray],
    labels: np.ndarray,
    groups: np.ndarray,
    n_labels: int,
    weights: np.ndarray,
    hidden: tuple[int, ...] = HIDDEN_UNITS,
) -> FunctionalHead:
    """Fit a head on training segments, clean and as each degraded copy, as the network is trained.

    Each copy's rows are standardised twice: over their group within that copy (a speaker's clips
    through the same kind of degradation) and alone (with the prior), so the head knows both ends of
    what ``annotate`` gives it (2-fold, RAVDESS + nEMO: +4 points for a segment alone or a folder of
    several speakers, -0.6 per speaker). The degraded copies keep the head from trusting what noise
    moves: fitted on clean clips alone, a noisy or phone-line clip standardised alone was labelled
    worse fused than by the network alone (2-fold RAVDESS, docs/training.md).

    Segments are weighted as the CNN's training batches are (:func:`sercli.datasets.balanced_weights`:
    corpora alike, and classes alike within each). Weighted by class alone, 2,235 nEMO clips outweighed
    1,200 RAVDESS ones: a head fitted on both scored 6.8 points below one fitted on RAVDESS alone on
    RAVDESS actors it never heard, and 3.9 weighted per corpus, which also gained 0.7 on nEMO (5-fold,
    head alone; fused with the network the two weightings are within a point: docs/training.md).

    Parameters
    ----------
    functionals : sequence of np.ndarray, each of shape (n, n_functionals)
        The same ``n`` segments, clean and each degraded copy (one array for clean only).
    labels : np.ndarray of int, shape (n,)
        Indices into the model's labels.
    groups : np.ndarray, shape (n,)
        Each segment's speaker (or recording when speakers are unknown).
    n_labels : int
        The model's number of labels; a label with no training row is never predicted.
    weights : np.ndarray, shape (n,)
        Each segment's weight in the loss (the same in every copy).
    hidden : tuple of int
        Units of each hidden layer (ReLU, L2 penalty :data:`HIDDEN_PENALTY`, Adam for :data:`HIDDEN_EPOCHS`
        epochs, seeded); ``()``: a logistic regression (L2, ``C`` :data:`REGULARIZATION`), the head until
        2026-12-07.

    Returns
    -------
    FunctionalHead
    """
    rows = np.concatenate(functionals).astype(np.float64)
    group_ids = np.unique(groups, return_inverse=True)[1]
    within_copy = np.concatenate([group_ids + k * len(group_ids) for k in range(len(functionals))])
    pooled = FrameStats.of(rows)
    prior = FrameStats.of_moments(pooled.mean, pooled.std, PRIOR_SEGMENTS)
    x = np.concatenate(
        [group_standardized(rows, within_copy, prior), group_standardized(rows, np.arange(len(rows)), prior)]
    )
    y, sample_weight = np.tile(labels, 2 * len(functionals)), np.tile(weights, 2 * len(functionals))
    if hidden:
        from sklearn.neural_network import MLPClassifier

        model = MLPClassifier(hidden, alpha=HIDDEN_PENALTY, max_iter=HIDDEN_EPOCHS, random_state=0)
        model.fit(x, y, sample_weight=sample_weight)
        layers = list(zip(model.coefs_, model.intercepts_))
    else:
        from sklearn.linear_model import LogisticRegression

        model = LogisticRegression(C=REGULARIZATION, max_iter=3000).fit(x, y, sample_weight=sample_weight)
        layers = [(model.coef_.T, model.intercept_)]
    # the last layer scores every label of the model: -30 for the labels never seen in training
    fitted_weights, fitted_bias = layers[-1]
    weights_out, bias_out = np.zeros((fitted_weights.shape[0], n_labels)), np.full(n_labels, -30.0)
    classes = model.classes_
    if len(classes) == 2:  # sklearn gives one output for two classes: the logit of the second
        weights_out[:, classes[1]], bias_out[classes[1]], bias_out[classes[0]] = fitted_weights[:, 0], fitted_bias[0], 0
    else:
        weights_out[:, classes], bias_out[classes] = fitted_weights, fitted_bias
    return FunctionalHead((*layers[:-1], (weights_out, bias_out)), prior)


def fit_clip_head(functionals: Sequence[np.ndarray], clips: list[LabelledClip], labels: list[str]) -> FunctionalHead:
    """The head ``sercli train`` fits beside its network (:func:`fit_head`, hidden layers): on labelled clips,
    clean and each degraded copy, each clip standardised with its speaker's (or, unknown, its recording's)
    and weighted as the network's loss weighs it (:func:`sercli.datasets.balanced_weights`).

    Parameters
    ----------
    functionals : sequence of np.ndarray, each of shape (len(clips), n_functionals)
        The clips' functionals, clean and each degraded copy.
    clips : list of LabelledClip
    labels : list of str
        The model's labels, in its output order.
    """
    return fit_head(
        functionals,
        np.array([labels.index(clip.label) for clip in clips]),
        clip_groups(clips),
        len(labels),
        balanced_weights(clips),
    )
