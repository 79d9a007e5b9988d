"""The fine-tuned model as an MLflow pyfunc model that takes image files' bytes: clients send the file as it is
and get class names back, with decoding, conversion, resizing and test-time mirroring done as in predict.

    mlflow models serve -m models:/<name>-classifier-served/latest --env-manager local --host 127.0.0.1 --port 5001
    POST /invocations  {"dataframe_split": {"columns": ["image"], "data": [["<base64 of the file>"], ...]}}
      (or {"dataframe_records": [{"image": ...}]}, {"inputs": {"image": [...]}}, {"instances": [...]}: same answer)
    -> {"predictions": [{"class": "cats", "probability": 0.98, "probabilities": {...}, "error": null}, ...]}

A row that isn't a decodable image gets `error` set; the other rows are still answered. The class names,
image size and mirroring flag travel as an artifact of the model; the pipeline code it runs (this module's import
closure) in its code/ folder.
"""

from __future__ import annotations

import base64
import binascii
import importlib.metadata
import shutil
import tempfile
from pathlib import Path

import mlflow
import pandas as pd
from mlflow.models import ModelSignature
from mlflow.types import ColSpec, DataType, Schema

from pipeline.files import read_json, write_json
from pipeline.imports import closure
from pipeline.layout import MODEL_FILE, PROJECT, SUMMARY_FILE
from pipeline.model.inference import load_for_inference
from pipeline.model.predictor import Prediction, Predictor
from pipeline.tracking.lineage import pip_requirements

INPUT_COLUMN = "image"
# A binary column: the scoring server base64-decodes it, Python callers pass bytes.
SIGNATURE = ModelSignature(inputs=Schema([ColSpec(DataType.binary, INPUT_COLUMN)]))
EXTRA_REQUIREMENTS = ("pillow", "pandas", "pydantic", "PyYAML")  # what the pipeline code imports besides Keras


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


class ImageClassifier(mlflow.pyfunc.PythonModel):
    """Rows of image bytes in, one row of class / probability / probabilities / error out per image."""

    def load_context(self, context) -> None:
        meta = read_json(context.artifacts["meta"])
        model = load_for_inference(context.artifacts["model"])
        self.predictor = Predictor(model, meta["classes"], meta["image_size"], meta["tta_flip"])

    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
        # a DataFrame from the scoring server; a dict of columns or a bare list of files from Python callers
        values = model_input[INPUT_COLUMN] if isinstance(model_input, (pd.DataFrame, dict)) else model_input
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
            predictions = self.predictor.predict_files(items)
        # object columns keep None as null in the JSON answer (a float column would turn it into NaN)
        return pd.DataFrame(
            [[p.label, p.probability, p.probabilities, p.error] for p in predictions],
            columns=["class", "probability", "probabilities", "error"],
            dtype=object,
        )


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


def log_pyfunc_model(
    model_dir: Path, tta_flip: bool, example: Path, name: str = "served", registered_model_name: str | None = None
) -> mlflow.models.model.ModelInfo:
    """Log `model_dir`'s model.keras (raw-pixel input: the fine-tuned model) with its class names from
    summary.json as the image pyfunc model, in the active run (MLflow starts one if none is); register it
    under `registered_model_name` when given. `example`: an image file, the request example MLflow shows."""
    model = load_for_inference(model_dir / MODEL_FILE)
    shape = model.inputs[0].shape
    if len(shape) != 4 or shape[-1] != 3:
        raise ValueError(f"{model_dir}: the model takes {tuple(shape)}, not RGB images: serve the fine-tuned model")
    with tempfile.TemporaryDirectory() as tmp:
        meta = Path(tmp) / "meta.json"
        write_json(
            meta,
            {
                "classes": read_json(model_dir / SUMMARY_FILE)["classes"],
                "image_size": int(shape[1]),
                "tta_flip": tta_flip,
            },
        )
        return mlflow.pyfunc.log_model(
            name=name,
            python_model=ImageClassifier(),
            artifacts={"model": str(model_dir / MODEL_FILE), "meta": str(meta)},
            code_paths=[str(copy_code(Path(tmp) / "code"))],
            signature=SIGNATURE,
            input_example=pd.DataFrame({INPUT_COLUMN: [example.read_bytes()]}),
            pip_requirements=requirements(),
            registered_model_name=registered_model_name,
        )
