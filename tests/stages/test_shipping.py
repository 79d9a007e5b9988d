"""The shipped model: chosen on validation among fine-tuning's start, the fine-tuned model and their average;
an average is one image model that saves, loads, predicts and explains like the others."""

import keras
import numpy as np
import pytest

from pipeline.data.manifest import read_manifest
from pipeline.evaluation.explain import gradcam_parts
from pipeline.files import read_json
from pipeline.layout import CANDIDATES, MODEL_FILE, SUMMARY_FILE
from pipeline.model.inference import image_probabilities, load_for_inference
from pipeline.model.predictor import predictor_for
from pipeline.model.shipping import average_model, choose, fine_tuned_part
from pipeline.model.training import save_model
from pipeline.predict import predict


def test_the_lowest_validation_log_loss_ships_and_a_tie_goes_to_the_cheaper():
    y = np.array([0, 1, 1, 0])
    sure = np.array([[0.9, 0.1], [0.2, 0.8], [0.1, 0.9], [0.8, 0.2]])
    unsure = np.full((4, 2), 0.5)
    half = (sure + unsure) / 2
    assert choose(y, {"dense": unsure, "finetune": sure, "interpolated": half, "average": half}).shipped == "finetune"
    assert choose(y, dict.fromkeys(CANDIDATES, sure)).shipped == "dense"
    mean = choose(y, {"dense": unsure, "finetune": half, "interpolated": sure, "average": sure.copy()})
    assert mean.shipped == "interpolated"  # as good as the average: the cheaper of the two
    assert set(mean.validation) == set(CANDIDATES) and "finetune 0." in mean.why()


def test_the_stage_records_what_it_shipped_and_why(tiny_project):
    summary = read_json(tiny_project.layout.model_dir("finetune") / SUMMARY_FILE)
    assert summary["shipped"] in CANDIDATES and set(summary["candidates"]) == set(CANDIDATES)
    shipped = summary["candidates"][summary["shipped"]]
    assert (summary["val_loss"], summary["val_accuracy"]) == (shipped["val_loss"], shipped["val_accuracy"])
    assert shipped["val_loss"] == min(c["val_loss"] for c in summary["candidates"].values())


@pytest.fixture(scope="module")
def averaged(tiny_project, tmp_path_factory):
    """tiny_project's fine-tuned model averaged with a copy whose head is perturbed: saved and loaded again."""
    tuned = load_for_inference(tiny_project.layout.model_dir("finetune") / MODEL_FILE)
    start = keras.models.clone_model(tuned)
    start.name = "start"
    start.set_weights([w + 0.05 if w.ndim == 1 else w for w in tuned.get_weights()])
    path = tmp_path_factory.mktemp("average") / MODEL_FILE
    save_model(average_model(start, tuned), path)
    return start, tuned, load_for_inference(path)


def test_an_average_is_the_mean_of_its_models_probabilities(tiny_project, averaged):
    start, tuned, loaded = averaged
    paths = [r.path for r in read_manifest(tiny_project.layout.manifest)][:6]
    size, n = tiny_project.cfg.backbone.image_size, 2
    want = (image_probabilities(start, paths, n, size, False) + image_probabilities(tuned, paths, n, size, False)) / 2
    np.testing.assert_allclose(image_probabilities(loaded, paths, n, size, False), want, atol=1e-6)
    predictor = predictor_for(loaded, ["a", "b"], tiny_project.cfg.backbone, tta_flip=True)
    (out,) = predict([paths[0]], predictor)
    assert out.error is None and out.label in ("a", "b")


def test_an_average_is_explained_by_its_fine_tuned_model(averaged):
    _, tuned, loaded = averaged
    assert fine_tuned_part(tuned).model is tuned  # a model that is no average explains itself
    branch = fine_tuned_part(loaded).model  # the second of the average's branches (model/parts.py)
    assert all(np.array_equal(a, b) for a, b in zip(branch.get_weights(), tuned.get_weights(), strict=True))
    parts = gradcam_parts(fine_tuned_part(loaded))
    pixels = np.full((1, *loaded.inputs[0].shape[1:]), 100.0, np.float32)
    np.testing.assert_allclose(parts.conv(pixels).shape[-1], 1024)
