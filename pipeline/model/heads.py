"""Every model architecture of the pipeline: the dense head on cached features, the fine-tuning model (MobileNet
with its top blocks trainable, augmentation, the trained head on top), and the dense head on raw images."""

from __future__ import annotations

import keras

from pipeline.config import AugmentConfig, BackboneConfig, DenseConfig, FinetuneConfig
from pipeline.files import log
from pipeline.model.backbone import conv_base, preprocessing_layer, unfreeze_top_blocks
from pipeline.model.parts import FinetuneParts, averaged, output_dense


def output_layer(n_classes: int) -> keras.layers.Layer:
    """Sigmoid unit for two classes, softmax otherwise."""
    if n_classes == 2:
        return keras.layers.Dense(1, activation="sigmoid", name="prediction")
    return keras.layers.Dense(n_classes, activation="softmax", name="prediction")


POOLING = {
    "flatten": lambda: keras.layers.Flatten(name="flatten"),
    "avg": lambda: keras.layers.GlobalAveragePooling2D(name="avg_pool"),
    "max": lambda: keras.layers.GlobalMaxPooling2D(name="max_pool"),
}


def build_dense_head(
    feature_shape: tuple[int, ...], n_classes: int, cfg: DenseConfig, name: str = "dense_head"
) -> keras.Model:
    """Cached conv features -> pooling (flatten: the classic recipe) -> [Dense(units)] -> Dropout -> output."""
    features = keras.Input(feature_shape, name="features")
    if cfg.pooling == "avg_max":
        x = keras.layers.Concatenate(name="avg_max")([POOLING["avg"]()(features), POOLING["max"]()(features)])
    else:
        x = POOLING[cfg.pooling]()(features)
    if cfg.units:
        x = keras.layers.Dense(cfg.units, activation=cfg.activation, name="dense")(x)
    x = keras.layers.Dropout(cfg.dropout, name="dropout")(x)
    return keras.Model(features, output_layer(n_classes)(x), name=name)


def ensemble(members: list[keras.Model]) -> keras.Model:
    """One model averaging the members' probabilities: evaluate, predict and the served model use it as any head."""
    if len(members) == 1:
        return members[0]
    features = keras.Input(members[0].inputs[0].shape[1:], name="features")
    mean = keras.layers.Average(name="ensemble_mean")([m(features) for m in members])
    return keras.Model(features, mean, name="dense_ensemble")


def head_logits(head: keras.Model) -> keras.Model:
    """features -> class scores before the sigmoid / softmax (an ensemble: the members' mean score), for
    Grad-CAM, whose gradient the output activation's saturation would flatten."""
    features = keras.Input(head.inputs[0].shape[1:])
    scores = []
    for member in averaged(head) or [head]:
        output = output_dense(member)
        before = keras.Model(member.inputs, output.input)  # the same layers and weights, up to the output layer
        linear = keras.layers.Dense(output.units)
        scores.append(linear(before(features, training=False)))
        linear.set_weights(output.get_weights())
    mean = scores[0] if len(scores) == 1 else keras.layers.Average()(scores)
    return keras.Model(features, mean)


def augmentation(cfg: AugmentConfig, seed: int) -> list[keras.layers.Layer]:
    layers: list[keras.layers.Layer] = []
    if cfg.flip:
        layers.append(keras.layers.RandomFlip("horizontal", seed=seed))
    if cfg.rotation:
        layers.append(keras.layers.RandomRotation(cfg.rotation, fill_mode="reflect", seed=seed))
    if cfg.zoom:
        layers.append(keras.layers.RandomZoom(cfg.zoom, fill_mode="reflect", seed=seed))
    if cfg.color:  # on pixels in [0, 255], before MobileNet's scaling
        layers.append(keras.layers.RandomBrightness(cfg.color, value_range=(0, 255), seed=seed))
        layers.append(keras.layers.RandomContrast(cfg.color, value_range=(0, 255), seed=seed))
    return layers


def build_finetune_parts(head: keras.Model, backbone: BackboneConfig, cfg: FinetuneConfig) -> FinetuneParts:
    """Raw RGB pixels in [0, 255] -> augmentation (training only) -> MobileNet with its top `unfreeze_blocks`
    trainable -> the dense head, with a handle on each part. BatchNorm stays in inference mode (training=False):
    small batches would wreck its ImageNet statistics."""
    base = conv_base(backbone)
    trainable = unfreeze_top_blocks(base, cfg.unfreeze_blocks)
    log.info("fine-tuning %d conv layers: %s", len(trainable), trainable)
    size = backbone.image_size
    inputs = keras.Input((size, size, 3), name="image")
    x = inputs
    augment = augmentation(cfg.augment, cfg.seed)
    for layer in augment:
        x = layer(x)  # active only while training
    scaling = preprocessing_layer()
    x = base(scaling(x), training=False)
    outputs = head(x)
    # "finetuned": a label in the saved file (also inside a shipped average); parts.py finds it by structure
    return FinetuneParts(keras.Model(inputs, outputs, name="finetuned"), tuple(augment), scaling, base, head)


def build_finetune_model(head: keras.Model, backbone: BackboneConfig, cfg: FinetuneConfig) -> keras.Model:
    """build_finetune_parts' model, for callers that need no handle on its parts."""
    return build_finetune_parts(head, backbone, cfg).model


def dense_on_images(head: keras.Model, backbone: BackboneConfig) -> keras.Model:
    """The dense head on top of the frozen base, for scoring images rather than cached features."""
    size = backbone.image_size
    inputs = keras.Input((size, size, 3))
    return keras.Model(inputs, head(conv_base(backbone)(preprocessing_layer()(inputs), training=False)))


def takes_images(model: keras.Model) -> bool:
    """True for a model on RGB pixels; False for the dense head, whose input is conv features."""
    return bool(model.inputs[0].shape[-1] == 3)
