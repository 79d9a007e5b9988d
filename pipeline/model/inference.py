"""Class probabilities from a model's output, for cached features or image files, with test-time mirroring."""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from pipeline.model.inputs import image_dataset

BATCH = 32


def load_for_inference(path: Path | str) -> keras.Model:
    """A saved model without its optimizer state and loss: half the memory, and nothing to deserialise that
    inference does not use."""
    return keras.models.load_model(path, compile=False)


def probabilities(model: keras.Model, x: np.ndarray | tf.data.Dataset, n_classes: int) -> np.ndarray:
    """Class probabilities, shape (n, n_classes), whichever output layer the model has."""
    p = np.asarray(model.predict(x, verbose=0), dtype=np.float64)
    return np.concatenate([1 - p, p], axis=1) if n_classes == 2 else p


def image_probabilities(model: keras.Model, paths: list[str], n_classes: int, size: int, tta_flip: bool) -> np.ndarray:
    """Probabilities for image files, decoded and resized exactly as for training; with `tta_flip`
    (evaluate.tta_flip) the mean with the prediction for the mirrored images."""
    probs = probabilities(model, image_dataset(paths, None, size, BATCH), n_classes)
    if tta_flip:
        probs = (probs + probabilities(model, image_dataset(paths, None, size, BATCH, flip=True), n_classes)) / 2
    return probs
