"""Handles on a model's parts (model/parts.py): the builder's, and the same parts read back from a saved model's
structure after every layer of it is renamed, so nothing can have found them by name. Untrained models, 64 px."""

import keras
import numpy as np
import pytest

from pipeline.evaluation.explain import gradcam_parts
from pipeline.model.finetune import split_frozen
from pipeline.model.heads import build_dense_head, build_finetune_parts, ensemble, head_logits
from pipeline.model.inference import load_for_inference
from pipeline.model.parts import FinetuneParts, averaged, finetune_parts, output_dense
from pipeline.model.shipping import average_model, fine_tuned_part
from pipeline.model.training import save_model
from tests.helpers.params import tiny_config

SIZE = 64
N_CLASSES = 3
AUGMENT = {"flip": True, "rotation": 0.05, "zoom": 0.1, "color": 0.1}  # every augmentation layer class


@pytest.fixture(scope="module")
def cfg():
    return tiny_config(
        {
            "backbone": {"image_size": SIZE},
            "dense": {"units": 8},
            "finetune": {"unfreeze_blocks": 1, "augment": AUGMENT},
        }
    )


@pytest.fixture(scope="module")
def built(cfg) -> FinetuneParts:
    """A fine-tune model on an ensemble of two dense heads, as the builder returns it."""
    keras.utils.set_random_seed(0)
    members = [build_dense_head((2, 2, 1024), N_CLASSES, cfg.dense, f"member_{k}") for k in range(2)]
    return build_finetune_parts(ensemble(members), cfg.backbone, cfg.finetune)


@pytest.fixture(scope="module")
def pixels() -> np.ndarray:
    return np.random.default_rng(0).uniform(0, 255, (2, SIZE, SIZE, 3)).astype(np.float32)


def _saved_and_renamed(model: keras.Model, path) -> keras.Model:
    """`model` saved and loaded again, every layer (nested ones too) then given a meaningless name."""
    save_model(model, path)
    loaded = load_for_inference(path)
    for i, layer in enumerate(_all_layers(loaded)):
        layer.name = f"renamed_{i}"
    return loaded


def _all_layers(model: keras.Model) -> list[keras.layers.Layer]:
    out = []
    for layer in model.layers:
        out += [layer, *(_all_layers(layer) if isinstance(layer, keras.Model) else [])]
    return out


def _same_weights(a: keras.Model, b: keras.Model) -> bool:
    return all(np.array_equal(x, y) for x, y in zip(a.get_weights(), b.get_weights(), strict=True))


def test_the_builder_returns_the_handles_the_structure_gives_back(built, cfg):
    read = finetune_parts(built.model)
    assert (read.model, read.preprocessing, read.base, read.head) == (
        built.model,
        built.preprocessing,
        built.base,
        built.head,
    )
    assert all(a is b for a, b in zip(read.augmentation, built.augmentation, strict=True))
    assert [type(layer).__name__ for layer in built.augmentation] == [
        "RandomFlip",
        "RandomRotation",
        "RandomZoom",
        "RandomBrightness",
        "RandomContrast",
    ]
    bottom, top = split_frozen(built.model, cfg.finetune)  # fine-tuning's split: of the built base's layers
    assert top.layers[-1] is built.base.layers[-1] and bottom.layers[0] is built.base.layers[0]
    members = averaged(built.head)  # an ensemble: its members in call order, each ending in its Dense output
    assert len(members) == 2 and averaged(members[0]) == []
    assert output_dense(members[0]) is members[0].layers[-1] and output_dense(members[0]).units == N_CLASSES


def test_a_loaded_fine_tuned_model_gives_its_parts_by_structure(built, pixels, tmp_path):
    loaded = _saved_and_renamed(built.model, tmp_path / "model.keras")
    parts = finetune_parts(loaded)
    assert [type(x) for x in parts.augmentation] == [type(x) for x in built.augmentation]
    assert parts.base.outputs[0].shape[1:] == (2, 2, 1024) and _same_weights(parts.base, built.base)
    assert [output_dense(m).units for m in averaged(parts.head)] == [N_CLASSES, N_CLASSES]
    assert all(_same_weights(a, b) for a, b in zip(averaged(parts.head), averaged(built.head), strict=True))
    want, got = gradcam_parts(built), gradcam_parts(parts)
    conv = want.conv(pixels)
    np.testing.assert_allclose(got.conv(pixels), conv, atol=1e-5)
    np.testing.assert_allclose(got.scores(conv), want.scores(conv), atol=1e-5)
    assert head_logits(parts.head)(conv).shape == (2, N_CLASSES)


def test_a_loaded_average_is_explained_by_its_fine_tuned_branch(built, pixels, tmp_path):
    tuned = built.model
    start = keras.models.clone_model(tuned)  # as train_finetune ships an average: the start, then the tuned one
    start.name = "start"  # a label only: layer names must be unique within the average
    start.set_weights([w + 0.05 if w.ndim == 1 else w for w in tuned.get_weights()])
    assert fine_tuned_part(tuned).model is tuned
    loaded = _saved_and_renamed(average_model(start, tuned), tmp_path / "average.keras")
    first, second = averaged(loaded)
    assert _same_weights(first, start) and _same_weights(second, tuned)
    parts = fine_tuned_part(loaded)
    assert parts.model is second and _same_weights(parts.base, built.base)
    np.testing.assert_allclose(gradcam_parts(parts).conv(pixels), gradcam_parts(built).conv(pixels), atol=1e-5)


def test_models_of_another_shape_are_refused():
    flat = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Flatten(), keras.layers.Dense(1)])
    with pytest.raises(ValueError, match="conv base"):
        finetune_parts(flat)
    no_output = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2), keras.layers.Dropout(0.1)])
    with pytest.raises(ValueError, match="not a Dense output layer"):
        output_dense(no_output)
