"""The emotion model for inference: its card, and loading it as a classifier.

A model is a ``.keras`` file (and its LiteRT ``.tflite`` export) with a JSON
model card beside it (same stem). The card names the label order and the
feature configuration the model was trained with, so a model can never be fed
features it was not trained on. TensorFlow is imported only inside the
functions that need it; the architecture is :mod:`sercli.architecture`, the
export :mod:`sercli.export`.
"""

from __future__ import annotations

import hashlib
import json
import os
import queue
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np

from sercli.features import FeatureConfig
from sercli.fusion import FunctionalHead
from sercli.normalization import FrameStats
from sercli.prosody import n_functionals

BUNDLED_MODEL_NAME = "sercli-cnn-bilstm"
PREDICT_BATCH = 256
"""Windows per inference call."""
LITERT_BATCH = 8
"""Fixed batch size of LiteRT exports: small, so that short recordings waste little on padding."""


class ModelError(Exception):
    """A model file or model card that cannot be used; the message is a one-line cause."""


@dataclass
class ModelCard:
    """What a model is and how it was made, stored as JSON beside the weights.

    Attributes
    ----------
    name, version : str
        Model identity.
    labels : list of str
        Output order of the softmax: the 8 RAVDESS emotions (:data:`sercli.EMOTIONS`)
        for the bundled model, any two or more names for a model trained on a labels table.
    features : dict
        :class:`FeatureConfig` fields the model expects.
    normalization : str
        How its training input was standardised (:data:`sercli.training.TRAIN_NORMALIZATIONS`):
        ``speaker`` (over groups of a speaker's clips; ``annotate`` standardises over
        a recording, folder or segment) or ``none`` (raw MFCCs, as models made before
        normalisation existed).
    normalization_prior : dict
        ``frames``, ``mean`` and ``std`` (per coefficient) of the training set's MFCC
        frames: added as ``frames`` pseudo-frames to the statistics of every group
        standardised for this model (:attr:`prior`). Empty for models trained without it.
    sha256 : str
        Hex digest of the ``.keras`` weights file.
    training : dict
        Data, speakers, hyper-parameters and package versions of the training run.
    metrics : dict
        Validation figures (cross-validated where available).
    exports : dict
        Other formats of the same weights, e.g. ``litert``: file, digest, batch,
        quantization and the largest probability difference from the Keras model.
    functional_head : dict
        The logistic regression over segment functionals fused with the network's
        output (:meth:`sercli.fusion.FunctionalHead.to_dict`); empty for a model without one.
    """

    name: str
    version: str
    labels: list[str]
    features: dict
    normalization: str = "none"
    normalization_prior: dict = field(default_factory=dict)
    sha256: str = ""
    training: dict = field(default_factory=dict)
    metrics: dict = field(default_factory=dict)
    exports: dict = field(default_factory=dict)
    functional_head: dict = field(default_factory=dict)

    @property
    def feature_config(self) -> FeatureConfig:
        """The feature configuration as a :class:`FeatureConfig`."""
        return FeatureConfig(**self.features)

    @property
    def prior(self) -> FrameStats:
        """The pseudo-frames added to every normalisation group's statistics (no frame without a prior)."""
        prior = self.normalization_prior
        if not prior:
            return FrameStats.empty(self.feature_config.n_mfcc)
        return FrameStats.of_moments(prior["mean"], prior["std"], prior["frames"])

    @property
    def head(self) -> FunctionalHead | None:
        """The functional head (:mod:`sercli.fusion`), None for a model without one."""
        return FunctionalHead.from_dict(self.functional_head) if self.functional_head else None

    def headline(self) -> str | None:
        """The figure the model is judged by, as a line: clip-level UA on speakers it never heard, from
        its own cross-validation of 5 folds or more (each corpus's when it has several), else its 5-fold
        robustness table (the model's own column, first row: fold models of its recipe, possibly trained
        on fewer corpora), else a cross-validation of fewer folds, else its 2-fold robustness table; None
        when the card has none of them."""
        cv = self.metrics.get("cross_validation")
        if cv and (len(cv["folds"]) >= 5 or "robustness_5fold" not in self.metrics):
            pooled = cv["pooled"]
            if "by_corpus" in pooled:
                figures = ", ".join(f"{name} {m['unweighted_accuracy']:.3f}" for name, m in pooled["by_corpus"].items())
                return f"{figures} ({len(cv['folds'])}-fold cross-validation)"
            interval = (
                f", 95 % CI {pooled['ua_ci95'][0]:.3f}-{pooled['ua_ci95'][1]:.3f}" if pooled.get("ua_ci95") else ""
            )
            return f"{pooled['unweighted_accuracy']:.3f} ({len(cv['folds'])}-fold cross-validation{interval})"
        table = self.metrics.get("robustness_5fold") or self.metrics.get("robustness_2fold")
        if table is None:
            return None
        row, ua = next(iter(next(iter(table["unweighted_accuracy"].values())).items()))
        return f"{ua:.3f}, {row} ({table['protocol'].split(', clip-level')[0]})"

    def write(self, path: str | Path) -> None:
        """Write the card as indented JSON."""
        Path(path).write_text(json.dumps(asdict(self), indent=2) + "\n")

    @classmethod
    def read(cls, path: str | Path) -> ModelCard:
        """Read and validate a card.

        Raises
        ------
        ModelError
            If the card is missing, not JSON, or its labels or features are unusable.
        """
        try:
            card = cls(**json.loads(Path(path).read_text()))
            config = card.feature_config
        except FileNotFoundError:
            raise ModelError(f"model card {path} not found") from None
        except (ValueError, TypeError) as error:
            raise ModelError(f"model card {path} is invalid: {error}") from None
        labels = card.labels
        if (
            not isinstance(labels, list)
            or len(labels) < 2
            or not all(isinstance(label, str) and label.strip() for label in labels)
            or len(set(labels)) != len(labels)
        ):
            raise ModelError(f"model card {path} labels {labels} are not two or more distinct names")
        if config.window_frames <= 0 or config.n_mfcc <= 0:
            raise ModelError(f"model card {path} has an empty feature window")
        try:
            head = card.head
        except (KeyError, TypeError, ValueError) as error:
            raise ModelError(f"model card {path} functional_head is invalid: {error}") from None
        if head is not None and head.shape != (n_functionals(config.n_mfcc), len(labels)):
            raise ModelError(
                f"model card {path} functional_head reads {head.shape[0]} functionals into {head.shape[1]} labels, "
                f"not {n_functionals(config.n_mfcc)} into {len(labels)}"
            )
        return card


def card_path(model_path: str | Path) -> Path:
    """Where a model's card lives: beside it, with a ``.json`` suffix."""
    return Path(model_path).with_suffix(".json")


def file_sha256(path: str | Path) -> str:
    """Hex SHA-256 digest of a file."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def bundled_model_path(suffix: str = ".tflite") -> Path:
    """The model shipped with sercli, inside the installed package or in ``models/`` of a checkout.

    ``.tflite`` (the default) is the LiteRT export that annotation runs without
    TensorFlow; ``.keras`` is the trained Keras model it was exported from.
    """
    package = Path(__file__).resolve().parent
    for folder in (package / "models", package.parent / "models"):
        if (folder / f"{BUNDLED_MODEL_NAME}{suffix}").exists():
            return folder / f"{BUNDLED_MODEL_NAME}{suffix}"
    raise ModelError("the bundled model is missing from this installation; pass --model")


class Classifier(Protocol):
    """Anything that turns MFCC windows into emotion probabilities."""

    card: ModelCard
    path: Path

    def predict_proba(self, windows: np.ndarray) -> np.ndarray:
        """Probabilities ``(n_windows, n_labels)`` for windows ``(n_windows, frames, coeffs)``."""


def usable_cores() -> int:
    """CPU cores this process may run on (its affinity mask where the OS has one)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


class LiteRTClassifier:
    """Runs a LiteRT (``.tflite``) export of a model, without TensorFlow.

    The export has a fixed batch size (LiteRT cannot lower the BiLSTM's loops with
    a dynamic one); a short last batch is padded with zeros. ``threads``
    single-threaded interpreters run a call's batches in parallel (on this model
    two of them do 1.25x the work of one two-threaded interpreter), and calls from
    several threads at once are safe.
    """

    def __init__(self, path: Path, card: ModelCard, threads: int | None = None):
        from ai_edge_litert.interpreter import Interpreter

        self.card, self.path = card, path
        count = threads or usable_cores()
        with quiet_native_output():
            interpreters = [Interpreter(model_path=str(path), num_threads=1) for _ in range(count)]
            for interpreter in interpreters:
                interpreter.allocate_tensors()
        self.input = interpreters[0].get_input_details()[0]
        self.output = interpreters[0].get_output_details()[0]
        self.batch = int(self.input["shape"][0])
        self._idle: queue.SimpleQueue = queue.SimpleQueue()
        for interpreter in interpreters:
            self._idle.put(interpreter)
        self._threads = ThreadPoolExecutor(count, thread_name_prefix="litert") if count > 1 else None

    def predict_proba(self, windows: np.ndarray) -> np.ndarray:
        windows = np.asarray(windows, dtype=np.float32)[..., None]
        chunks = [windows[i : i + self.batch] for i in range(0, len(windows), self.batch)]
        if not chunks:
            return np.zeros((0, len(self.card.labels)), np.float32)
        if self._threads is None or len(chunks) == 1:
            return np.concatenate([self._invoke(chunk) for chunk in chunks])
        return np.concatenate(list(self._threads.map(self._invoke, chunks)))

    def _invoke(self, chunk: np.ndarray) -> np.ndarray:
        """Probabilities of at most one batch of windows, on whichever interpreter is idle."""
        padded = np.zeros((self.batch, *chunk.shape[1:]), np.float32)
        padded[: len(chunk)] = chunk
        interpreter = self._idle.get()
        try:
            interpreter.set_tensor(self.input["index"], padded)
            interpreter.invoke()  # releases the GIL
            return interpreter.get_tensor(self.output["index"])[: len(chunk)].copy()
        finally:
            self._idle.put(interpreter)


class KerasClassifier:
    """Runs a ``.keras`` model with TensorFlow, in fixed-size batches through one traced graph."""

    def __init__(self, model, card: ModelCard, path: Path):
        import tensorflow as tf

        self.card, self.model, self.path = card, model, path
        config = card.feature_config
        signature = tf.TensorSpec((None, config.window_frames, config.n_mfcc, 1), tf.float32)
        self._forward = tf.function(lambda x: model(x, training=False), input_signature=[signature])

    def predict_proba(self, windows: np.ndarray) -> np.ndarray:
        windows = np.asarray(windows, dtype=np.float32)[..., None]
        batches = [self._forward(windows[i : i + PREDICT_BATCH]).numpy() for i in range(0, len(windows), PREDICT_BATCH)]
        return np.concatenate(batches) if batches else np.zeros((0, len(self.card.labels)), np.float32)


def load_classifier(model_path: str | Path, threads: int | None = None) -> Classifier:
    """Load a model (``.keras`` with TensorFlow, ``.tflite`` with LiteRT) and its card.

    ``threads`` is the number of LiteRT inference threads (default: one per core).

    Raises
    ------
    ModelError
        If either file is missing or unusable, or the model's input and output
        shapes do not match the card.
    ValueError
        If ``threads`` is not a positive integer.
    """
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
        raise ValueError(f"threads must be a positive integer, not {threads!r}")
    model_path = Path(model_path)
    if not model_path.is_file():
        raise ModelError(f"model file {model_path} not found")
    card = ModelCard.read(card_path(model_path))
    config = card.feature_config
    expected_in, expected_out = (config.window_frames, config.n_mfcc, 1), len(card.labels)
    if model_path.suffix == ".tflite":
        try:
            classifier = LiteRTClassifier(model_path, card, threads)
        except (ValueError, RuntimeError) as error:
            raise ModelError(f"{model_path} is not a LiteRT model: {str(error).splitlines()[0]}") from None
        shape_in, shape_out = tuple(classifier.input["shape"][1:]), tuple(classifier.output["shape"][1:])
    else:
        require_training(f"{model_path}: .keras models")
        with quiet_native_output():
            import keras

            try:
                model = keras.models.load_model(model_path, compile=False)
            except Exception as error:  # noqa: BLE001 - keras raises many types for a file that is not a model
                raise ModelError(f"{model_path} is not a Keras model: {str(error).splitlines()[0]}") from None
            classifier = KerasClassifier(model, card, model_path)
        shape_in, shape_out = tuple(model.input_shape[1:]), tuple(model.output_shape[1:])
    if shape_in != expected_in or shape_out != (expected_out,):
        raise ModelError(
            f"{model_path} takes {shape_in} windows and gives {shape_out} outputs, "
            f"but its card describes {expected_in} -> ({expected_out},)"
        )
    return classifier


def require_training(what: str = "training") -> None:
    """Raise :class:`ModelError` naming the extra to install when TensorFlow or Keras is missing."""
    from importlib.util import find_spec

    if find_spec("tensorflow") is None or find_spec("keras") is None:
        raise ModelError(f"{what} need TensorFlow: pip install 'sercli[train]' (annotation runs without it)")


@contextmanager
def quiet_native_output(fds: tuple[int, ...] = (2,)) -> Iterator[None]:
    """Send what native code (TensorFlow, LiteRT) prints on these file descriptors to /dev/null.

    TensorFlow prints its oneDNN and CPU-feature notices from C++ before its
    log level applies, so only redirecting the descriptor keeps them off stderr.
    """
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(fd) for fd in fds]
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        for fd in fds:
            os.dup2(devnull, fd)
        yield
    finally:
        for fd, copy in zip(fds, saved):
            os.dup2(copy, fd)
            os.close(copy)
        os.close(devnull)
