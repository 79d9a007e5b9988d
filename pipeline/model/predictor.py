"""A model that takes raw pixels, with its class names and test-time mirroring: what predict and the served
model run. Each file is decoded, and converted where TensorFlow would misread it, by the same code as prepare."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

import keras

from pipeline.config import BackboneConfig
from pipeline.data.images import MAX_MEGAPIXELS, check_image
from pipeline.model.heads import dense_on_images, takes_images
from pipeline.model.inference import image_probabilities


class PredictError(ValueError):
    """No usable model; the message says where it was looked for and why it can't be used."""


@dataclass(frozen=True)
class Prediction:
    source: str  # as given: file path, URL, or a row number for the served model
    label: str | None = None
    probability: float | None = None
    probabilities: dict[str, float] | None = None
    error: str | None = None


@dataclass(frozen=True)
class Predictor:
    """A model taking raw RGB pixels (image_size square, 0..255) with its class names and test-time mirroring;
    a file declaring more than `max_megapixels` decoded gets its error without being decoded."""

    model: keras.Model
    classes: list[str]
    image_size: int
    tta_flip: bool
    max_megapixels: int = MAX_MEGAPIXELS

    def predict_files(self, items: list[Prediction | tuple[str, Path]]) -> list[Prediction]:
        """One Prediction per (source, file), in order; a file that doesn't decode gets its `error`. Items that
        already are (error) Predictions pass through, so callers report every input in place."""
        found: dict[int, Prediction] = {}  # item index -> its Prediction
        readable: list[tuple[int, str, str]] = []  # (item index, source, the file to read)
        with tempfile.TemporaryDirectory() as tmp:
            for i, item in enumerate(items):
                if isinstance(item, Prediction):
                    continue
                source, path = item
                converted = Path(tmp) / f"{i}.png"
                checked = check_image(path, converted, self.max_megapixels)
                if checked.reason:
                    found[i] = Prediction(source, error=checked.reason)
                else:
                    readable.append((i, source, str(converted if checked.converted else path)))
            if readable:
                paths = [p for _, _, p in readable]
                probs = image_probabilities(self.model, paths, len(self.classes), self.image_size, self.tta_flip)
                for (i, source, _), p in zip(readable, probs):
                    k = int(p.argmax())
                    found[i] = Prediction(
                        source, self.classes[k], float(p[k]), {c: float(v) for c, v in zip(self.classes, p)}
                    )
        return [x if isinstance(x, Prediction) else found[i] for i, x in enumerate(items)]


def predictor_for(model: keras.Model, classes: list[str], backbone: BackboneConfig, tta_flip: bool) -> Predictor:
    """Wrap a saved model; the dense head (its input is conv features, not pixels) gets the frozen base below."""
    if not takes_images(model):
        model = dense_on_images(model, backbone)
    units = model.outputs[0].shape[-1]
    if (units == 1 and len(classes) != 2) or (units != 1 and units != len(classes)):
        raise PredictError(f"{model.name}: {units} output unit(s) don't match the {len(classes)} classes {classes}")
    return Predictor(model, list(classes), int(model.inputs[0].shape[1]), tta_flip)
