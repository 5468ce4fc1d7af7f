"""The CNN-BiLSTM classifier: built fresh, or adapted from a trained model for fine-tuning.

Keras is imported inside the functions, so importing this module stays cheap.
"""

from __future__ import annotations

import numpy as np

from sercli import EMOTIONS


def build_cnn_bilstm(
    feature_mean: np.ndarray,
    feature_std: np.ndarray,
    window_frames: int = 100,
    n_coeffs: int = 40,
    n_classes: int = len(EMOTIONS),
):
    """The CNN-BiLSTM classifier, uncompiled.

    Input ``(window_frames, n_coeffs, 1)`` MFCC windows, normalised per coefficient
    inside the model with the training set's ``feature_mean`` and ``feature_std``
    (each shape ``(n_coeffs,)``); then Conv2D 64 + BN + ReLU + 2x2 max-pool +
    dropout 0.3, Conv2D 128 + BN + ReLU + 2x2 max-pool + dropout 0.3, reshape to
    ``window_frames / 4`` steps, BiLSTM 128 (sequences), BiLSTM 128, Dense 256
    ReLU, dropout 0.5, softmax over ``n_classes``.
    """
    import keras
    from keras import layers

    steps, bins = window_frames // 4, n_coeffs // 4
    inputs = keras.Input((window_frames, n_coeffs, 1), name="mfcc")
    x = layers.Normalization(
        axis=2, mean=np.asarray(feature_mean).reshape(-1), variance=np.square(np.asarray(feature_std)).reshape(-1)
    )(inputs)
    for filters in (64, 128):
        x = layers.Conv2D(filters, 3, padding="same", use_bias=False)(x)
        x = layers.BatchNormalization()(x)
        x = layers.ReLU()(x)
        x = layers.MaxPooling2D(2)(x)
        x = layers.Dropout(0.3)(x)
    x = layers.Reshape((steps, bins * 128))(x)
    x = layers.Bidirectional(layers.LSTM(128, return_sequences=True))(x)
    x = layers.Bidirectional(layers.LSTM(128))(x)
    x = layers.Dense(256, activation="relu")(x)
    x = layers.Dropout(0.5)(x)
    outputs = layers.Dense(n_classes, activation="softmax", name="emotion")(x)
    return keras.Model(inputs, outputs, name="cnn_bilstm")


def fine_tuning_model(base, base_labels: list[str], labels: list[str], freeze_convolutions: bool = False):
    """A copy of a trained model to go on training, with a softmax layer for ``labels``; uncompiled.

    The new softmax layer takes the base model's weights for each label the base
    model has (so a subset of its labels starts where the base model is) and a
    fresh initialisation for the others. ``base`` is left untouched.

    Parameters
    ----------
    base : keras.Model
        A model :func:`build_cnn_bilstm` made; its input normalisation is kept.
    base_labels : list of str
        The base model's output labels, in order.
    labels : list of str
        The new model's output labels, in order.
    freeze_convolutions : bool
        Keep the two convolution blocks (weights and batch-norm statistics) as
        trained; only the BiLSTMs and dense layers learn.
    """
    import keras
    from keras import layers

    model = keras.Model.from_config(base.get_config())
    model.set_weights(base.get_weights())
    head = layers.Dense(len(labels), activation="softmax", name="emotion")
    model = keras.Model(model.input, head(model.layers[-2].output), name=model.name)
    base_kernel, base_bias = base.layers[-1].get_weights()
    kernel, bias = head.get_weights()
    for j, label in enumerate(labels):
        if label in base_labels:
            kernel[:, j], bias[j] = base_kernel[:, base_labels.index(label)], base_bias[base_labels.index(label)]
    head.set_weights([kernel, bias])
    if freeze_convolutions:
        for layer in model.layers:
            if isinstance(layer, (layers.Conv2D, layers.BatchNormalization)):
                layer.trainable = False
    return model
