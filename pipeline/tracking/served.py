"""A head's model as an MLflow pyfunc model that takes image files' bytes (the dense head on the frozen base
below it): clients send the file as it is and get class names back, with decoding, conversion, resizing and
test-time mirroring done as in predict.

    mlflow models serve -m models:/<name>-classifier-served@champion --env-manager local --host 127.0.0.1 --port 5001
    POST /invocations  {"dataframe_split": {"columns": ["image"], "data": [["<base64 of the file>"], ...]}}
      (or {"dataframe_records": [{"image": ...}]}, {"inputs": {"image": [...]}}, {"instances": [...]}: same answer)
    -> {"predictions": [{"class": "cats", "probability": 0.98, "probabilities": {...}, "error": null}, ...]}

A row that isn't a decodable image gets `error` set; the other rows are still answered. A request over one of
BOUNDS (rows, decoded pixels of an image, requests decoding at once) gets HTTP 400 / 429 naming it. The class names,
image size and mirroring flag travel as an artifact of the model; the pipeline code it runs (this module's import
closure) in its code/ folder.
"""

from __future__ import annotations

import base64
import binascii
import importlib.metadata
import os
import shutil
import tempfile
import threading
from pathlib import Path
from typing import Any, cast

import keras
import mlflow
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.models import ModelSignature
from mlflow.models.model import ModelInfo
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE, RESOURCE_EXHAUSTED
from mlflow.pyfunc import PythonModel, PythonModelContext
from mlflow.types import ColSpec, DataType, Schema

from pipeline.config import BackboneConfig
from pipeline.contracts import ServedMeta, TrainingSummary
from pipeline.data.images import MAX_MEGAPIXELS, over_bound
from pipeline.imports import closure
from pipeline.layout import MODEL_FILE, PROJECT, SUMMARY_FILE
from pipeline.model.heads import dense_on_images, takes_images
from pipeline.model.inference import load_for_inference
from pipeline.model.predictor import Prediction, Predictor
from pipeline.tracking.lineage import pip_requirements

INPUT_COLUMN = "image"
SERVED_META_FILE = "meta.json"  # beside the served model's model.keras: its ServedMeta
# A binary column: the scoring server base64-decodes it, Python callers pass bytes.
SIGNATURE = ModelSignature(inputs=Schema([ColSpec(DataType.binary, INPUT_COLUMN)]))
EXTRA_REQUIREMENTS = ("pillow", "pandas", "pydantic", "PyYAML")  # what the pipeline code imports besides Keras
# The serving process's bounds: environment variables read when the model loads, with their defaults. The
# server's memory is about its own (~1 GB) plus DECODERS x one decode (~0.5 GB at the pixel bound).
BOUNDS = {
    "PIPELINE_SERVE_MAX_ROWS": 64,  # image files per request
    "PIPELINE_SERVE_MAX_IMAGE_MP": MAX_MEGAPIXELS,  # decoded megapixels per image, checked from its header
    "PIPELINE_SERVE_DECODERS": 2,  # requests decoding and predicting at once; the others wait for a turn
    "PIPELINE_SERVE_WAIT_S": 30,  # seconds a request waits for its turn (below MLflow's 60 s request timeout)
}


def bounds() -> dict[str, int]:
    """BOUNDS, each overridden by its environment variable when set."""
    out = {}
    for name, default in BOUNDS.items():
        raw = os.environ.get(name, str(default)).strip()
        if not raw.isdigit() or int(raw) < 1:
            raise ValueError(f"{name}={raw!r}: expected a whole number >= 1 (default {default})")
        out[name] = int(raw)
    return out


def _refused(message: str) -> MlflowException:
    return MlflowException(message, error_code=INVALID_PARAMETER_VALUE)  # HTTP 400 from the scoring server


def _as_bytes(value: object) -> bytes | None:
    """The image file's bytes. The scoring server base64-decodes `dataframe_split` / `dataframe_records` itself
    but passes `inputs` / `instances` on as the base64 text's bytes; an image file is never valid base64 (its
    first byte is not ASCII), so base64 is decoded whenever it parses."""
    if isinstance(value, (bytes, bytearray, str)):
        try:
            return base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):  # ValueError: non-ASCII str
            return None if isinstance(value, str) else bytes(value)
    return None


class ImageClassifier(PythonModel):
    """Rows of image bytes in, one row of class / probability / probabilities / error out per image."""

    def load_context(self, context: PythonModelContext) -> None:
        meta = ServedMeta.load(context.artifacts["meta"])
        model = load_for_inference(context.artifacts["model"])
        self.bounds = bounds()
        self.predictor = Predictor(
            model, meta.classes, meta.image_size, meta.tta_flip, self.bounds["PIPELINE_SERVE_MAX_IMAGE_MP"]
        )
        # the scoring server runs each request in a thread of one process: this caps the decodes held at once
        self.turns = threading.BoundedSemaphore(self.bounds["PIPELINE_SERVE_DECODERS"])

    # MLflow reads these annotations (typing.get_type_hints): each name must exist at run time, not only for mypy
    def predict(
        self, context: PythonModelContext, model_input: pd.DataFrame, params: dict[str, Any] | None = None
    ) -> pd.DataFrame:
        # a DataFrame from the scoring server; a dict of columns or a bare list of files from Python callers
        values = model_input[INPUT_COLUMN] if isinstance(model_input, (pd.DataFrame, dict)) else model_input
        if len(values) > (most := self.bounds["PIPELINE_SERVE_MAX_ROWS"]):
            raise _refused(f"{len(values)} rows in one request, above the bound of {most} (PIPELINE_SERVE_MAX_ROWS)")
        with tempfile.TemporaryDirectory() as tmp:
            items: list[Prediction | tuple[str, Path]] = []
            for i, value in enumerate(values):
                data = _as_bytes(value)
                if data is None:
                    items.append(
                        Prediction(
                            f"row {i}", error=f"expected image bytes (base64 in JSON), got {type(value).__name__}"
                        )
                    )
                    continue
                (Path(tmp) / str(i)).write_bytes(data)
                items.append((f"row {i}", Path(tmp) / str(i)))
            self._refuse_large(items)
            predictions = self._in_turn(items)
        # object columns keep None as null in the JSON answer (a float column would turn it into NaN)
        return pd.DataFrame(
            [[p.label, p.probability, p.probabilities, p.error] for p in predictions],
            columns=["class", "probability", "probabilities", "error"],
            dtype=object,
        )

    def _refuse_large(self, items: list[Prediction | tuple[str, Path]]) -> None:
        """The whole request refused, from the files' headers, before anything is decoded."""
        most = self.bounds["PIPELINE_SERVE_MAX_IMAGE_MP"]
        large = [
            f"{s}: {why}" for s, path in (x for x in items if isinstance(x, tuple)) if (why := over_bound(path, most))
        ]
        if large:
            raise _refused(f"{'; '.join(large)} (PIPELINE_SERVE_MAX_IMAGE_MP)")

    def _in_turn(self, items: list[Prediction | tuple[str, Path]]) -> list[Prediction]:
        wait = self.bounds["PIPELINE_SERVE_WAIT_S"]
        if not self.turns.acquire(timeout=wait):
            raise MlflowException(
                f"all {self.bounds['PIPELINE_SERVE_DECODERS']} decode turn(s) (PIPELINE_SERVE_DECODERS) stayed taken "
                f"for {wait} s (PIPELINE_SERVE_WAIT_S): retry later",
                error_code=RESOURCE_EXHAUSTED,  # HTTP 429
            )
        try:
            return self.predictor.predict_files(items)
        finally:
            self.turns.release()


def copy_code(dest: Path) -> Path:
    """The project files this module imports, directly or not, copied under `dest` with their package folders:
    what the served model needs, and exactly what the track stage lists as its code deps."""
    for file in sorted(closure(Path(__file__).resolve())):
        target = dest / file.relative_to(PROJECT)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(file, target)
    return dest / "pipeline"


def requirements() -> list[str]:
    return [*pip_requirements(), *(f"{d}=={importlib.metadata.version(d)}" for d in EXTRA_REQUIREMENTS)]


def image_model(model_dir: Path, backbone: BackboneConfig | None = None) -> keras.Model:
    """`model_dir`'s model.keras without its optimizer state, on RGB pixels 0..255: a head on conv features (the
    dense head) is put on `backbone`'s frozen base, as predict does, when `backbone` is given."""
    model = load_for_inference(model_dir / MODEL_FILE)
    return dense_on_images(model, backbone) if backbone is not None and not takes_images(model) else model


def log_pyfunc_model(
    model_dir: Path,
    tta_flip: bool,
    example: Path,
    name: str = "served",
    registered_model_name: str | None = None,
    backbone: BackboneConfig | None = None,
    tags: dict[str, str] | None = None,
) -> ModelInfo:
    """Log `model_dir`'s model (image_model: with `backbone` the dense head too) with its class names from
    summary.json as the image pyfunc model, in the active run (MLflow starts one if none is); register it
    under `registered_model_name` when given, the version created with `tags`. `example`: an image file, the
    request example MLflow shows."""
    model = image_model(model_dir, backbone)
    shape = model.inputs[0].shape
    if len(shape) != 4 or shape[-1] != 3:
        raise ValueError(f"{model_dir}: the model takes {tuple(shape)}, not RGB images: give its backbone")
    with tempfile.TemporaryDirectory() as tmp:
        model.save(Path(tmp) / MODEL_FILE)  # without the optimizer state: half the size
        meta = Path(tmp) / SERVED_META_FILE
        classes = TrainingSummary.load(model_dir / SUMMARY_FILE).classes
        ServedMeta(classes=classes, image_size=int(shape[1]), tta_flip=tta_flip).save(meta)
        logged = mlflow.pyfunc.log_model(
            name=name,
            python_model=ImageClassifier(),
            artifacts={"model": str(Path(tmp) / MODEL_FILE), "meta": str(meta)},
            code_paths=[str(copy_code(Path(tmp) / "code"))],
            signature=SIGNATURE,
            input_example=pd.DataFrame({INPUT_COLUMN: [example.read_bytes()]}),
            pip_requirements=requirements(),
            registered_model_name=registered_model_name,
            tags=tags,  # on the logged model and on its registered version
        )
        return cast(ModelInfo, logged)  # log_model has no return annotation; it returns the ModelInfo it logged
