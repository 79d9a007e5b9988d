"""Every model architecture of the pipeline: the dense head on cached features, the fine-tuning model (MobileNet
with its top blocks trainable, augmentation, the trained head on top), and the dense head on raw images."""

from __future__ import annotations

import keras

from pipeline.config import AugmentConfig, BackboneConfig, DenseConfig, FinetuneConfig
from pipeline.files import log
from pipeline.model.backbone import conv_base, preprocessing_layer, unfreeze_top_blocks


def output_layer(n_classes: int) -> keras.layers.Layer:
    """Sigmoid unit for two classes, softmax otherwise."""
    if n_classes == 2:
        return keras.layers.Dense(1, activation="sigmoid", name="prediction")
    return keras.layers.Dense(n_classes, activation="softmax", name="prediction")


def build_dense_head(feature_shape: tuple[int, ...], n_classes: int, cfg: DenseConfig) -> keras.Model:
    """The classic head: Flatten -> Dense -> Dropout -> sigmoid/softmax, on cached conv features."""
    return keras.Sequential(
        [
            keras.Input(feature_shape, name="features"),
            keras.layers.Flatten(name="flatten"),
            keras.layers.Dense(cfg.units, activation=cfg.activation, name="dense"),
            keras.layers.Dropout(cfg.dropout, name="dropout"),
            output_layer(n_classes),
        ],
        name="dense_head",
    )


def augmentation(cfg: AugmentConfig, seed: int) -> list[keras.layers.Layer]:
    layers: list[keras.layers.Layer] = []
    if cfg.flip:
        layers.append(keras.layers.RandomFlip("horizontal", seed=seed))
    if cfg.rotation:
        layers.append(keras.layers.RandomRotation(cfg.rotation, fill_mode="reflect", seed=seed))
    if cfg.zoom:
        layers.append(keras.layers.RandomZoom(cfg.zoom, fill_mode="reflect", seed=seed))
    return layers


def augments(cfg: AugmentConfig) -> bool:
    return bool(cfg.flip or cfg.rotation or cfg.zoom)


def build_finetune_model(head: keras.Model, backbone: BackboneConfig, cfg: FinetuneConfig) -> keras.Model:
    """Raw RGB pixels in [0, 255] -> augmentation (training only) -> MobileNet with its top `unfreeze_blocks`
    trainable -> the dense head. BatchNorm stays in inference mode (training=False): small batches would wreck
    its ImageNet statistics."""
    base = conv_base(backbone)
    trainable = unfreeze_top_blocks(base, cfg.unfreeze_blocks)
    log.info("fine-tuning %d conv layers: %s", len(trainable), trainable)
    size = backbone.image_size
    inputs = keras.Input((size, size, 3), name="image")
    x = inputs
    for layer in augmentation(cfg.augment, cfg.seed):
        x = layer(x)  # active only while training
    x = preprocessing_layer()(x)
    x = base(x, training=False)
    outputs = head(x)
    return keras.Model(inputs, outputs, name="finetuned")


def dense_on_images(head: keras.Model, backbone: BackboneConfig) -> keras.Model:
    """The dense head on top of the frozen base, for scoring images rather than cached features."""
    size = backbone.image_size
    inputs = keras.Input((size, size, 3))
    return keras.Model(inputs, head(conv_base(backbone)(preprocessing_layer()(inputs), training=False)))


def takes_images(model: keras.Model) -> bool:
    """True for a model on RGB pixels; False for the dense head, whose input is conv features."""
    return model.inputs[0].shape[-1] == 3
