"""The pretrained MobileNet conv base: loading it (offline too), its input scaling, and its blocks for fine-tuning."""

from __future__ import annotations

import keras
import tensorflow as tf

from pipeline.config import BackboneConfig

# MobileNet v1 has 13 depthwise-separable blocks named conv_dw_N / conv_pw_N (+ _bn, _relu, conv_pad_N).
N_BLOCKS = 13
BASE_NAME = "conv_base"  # a fixed label in saved models whatever the size and alpha; found by structure
PREPROCESSING = "mobilenet: x / 127.5 - 1 on RGB resized (bilinear, no crop) to image_size"


def conv_base(cfg: BackboneConfig) -> keras.Model:
    """ImageNet MobileNet without its classifier; offline, KERAS_HOME must hold the weights file."""
    size = cfg.image_size
    try:
        return keras.applications.MobileNet(
            input_shape=(size, size, 3),
            alpha=cfg.alpha,
            include_top=False,
            weights=cfg.weights,
            name=BASE_NAME,
        )
    except Exception as err:  # keras raises a bare Exception when the weights URL can't be fetched
        if cfg.weights and "URL fetch failure" in str(err):
            raise RuntimeError(
                f"could not load ImageNet weights for MobileNet alpha={cfg.alpha} size={size}: {err}\n"
                "Offline? Copy a keras_home with models/mobilenet_*_tf_no_top.h5 (e.g. ../shared/keras_home) "
                "to a writable folder and set KERAS_HOME to it."
            ) from None
        raise


def preprocess(images: tf.Tensor) -> tf.Tensor:
    """RGB floats in [0, 255] -> the [-1, 1] range MobileNet was trained on."""
    return images / 127.5 - 1.0


def preprocessing_layer() -> keras.layers.Layer:
    """The same scaling as `preprocess`, as a layer so saved models take raw pixels."""
    return keras.layers.Rescaling(1 / 127.5, offset=-1.0, name="mobilenet_preprocess")


def unfreeze_top_blocks(base: keras.Model, n_blocks: int) -> list[str]:
    """Make the last `n_blocks` conv blocks trainable; BatchNorm stays frozen. Returns the trainable layers."""
    first = N_BLOCKS - n_blocks + 1
    top = {f"conv_dw_{i}" for i in range(first, N_BLOCKS + 1)} | {f"conv_pw_{i}" for i in range(first, N_BLOCKS + 1)}
    base.trainable = True
    names = []
    for layer in base.layers:
        layer.trainable = layer.name in top  # conv_dw_N / conv_pw_N hold the weights; _bn layers stay frozen
        if layer.trainable:
            names.append(layer.name)
    return names


def split_at_trainable(base: keras.Model, n_blocks: int) -> tuple[keras.Model, keras.Model]:
    """(frozen bottom, top made of the `n_blocks` top blocks), sharing `base`'s layers and weights."""
    if n_blocks == 0:  # nothing trainable in the base: all of it is the bottom
        features = keras.Input(base.output.shape[1:])
        return base, keras.Model(features, features)
    first = N_BLOCKS - n_blocks + 1
    boundary = base.get_layer("conv1_relu" if first == 1 else f"conv_pw_{first - 1}_relu").output
    return keras.Model(base.input, boundary, name="frozen_bottom"), keras.Model(boundary, base.output, name="top")
