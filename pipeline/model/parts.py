"""Handles on the parts of the pipeline's image models, as keras-io's transfer-learning guide keeps `base_model`.
The builder returns them (model/heads.py: build_finetune_parts); a model loaded from disk gets them back from its
structure: the classes of its layers and the order Keras calls them in. Layer names only label the saved files:
nothing here looks one up, so renaming a layer breaks no surgery (Grad-CAM, ensembles, the shipped average,
fine-tuning's frozen split)."""

from __future__ import annotations

from dataclasses import dataclass

import keras

# The classes model/heads.py's augmentation() builds: identity at inference, but active by default when called.
AUGMENTATION = (
    keras.layers.RandomFlip,
    keras.layers.RandomRotation,
    keras.layers.RandomZoom,
    keras.layers.RandomBrightness,
    keras.layers.RandomContrast,
)


@dataclass(frozen=True)
class FinetuneParts:
    """An image model in call order: RGB pixels -> `augmentation` (training only) -> `preprocessing` (MobileNet's
    scaling) -> `base` (the MobileNet conv base, its output the last conv block's maps) -> `head` (a dense head or
    an ensemble of them). `model` is the whole chain, the one that trains and is saved."""

    model: keras.Model
    augmentation: tuple[keras.layers.Layer, ...]
    preprocessing: keras.layers.Rescaling
    base: keras.Model
    head: keras.Model


def finetune_parts(model: keras.Model) -> FinetuneParts:
    """`model`'s parts, read from its layers in call order (build_finetune_model's and dense_on_images' models);
    ValueError when it is not that chain."""
    layers = [layer for layer in model.layers if not isinstance(layer, keras.layers.InputLayer)]
    n_aug = next((i for i, layer in enumerate(layers) if not isinstance(layer, AUGMENTATION)), len(layers))
    match layers[n_aug:]:
        case [keras.layers.Rescaling() as scaling, keras.Model() as base, keras.Model() as head] if (
            len(base.outputs[0].shape) == 4  # a conv grid: (batch, height, width, channels)
        ):
            return FinetuneParts(model, tuple(layers[:n_aug]), scaling, base, head)
    found = " -> ".join(type(layer).__name__ for layer in layers)
    raise ValueError(
        f"model {model.name!r} is not pixels -> [augmentation] -> Rescaling -> conv base -> head, but {found}"
    )


def averaged(model: keras.Model) -> list[keras.Model]:
    """The models whose outputs `model`'s final Average layer takes, in call order (a dense ensemble's members,
    a shipped average's start and fine-tuned model); [] when `model` does not end in an Average."""
    if not isinstance(model.layers[-1], keras.layers.Average):
        return []
    return [layer for layer in model.layers if isinstance(layer, keras.Model)]


def output_dense(head: keras.Model) -> keras.layers.Dense:
    """A single head's output layer (the sigmoid / softmax Dense); ValueError when it ends in anything else."""
    last = head.layers[-1]
    if not isinstance(last, keras.layers.Dense):
        raise ValueError(f"head {head.name!r} ends in a {type(last).__name__}, not a Dense output layer")
    return last
