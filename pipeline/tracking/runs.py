"""The MLflow side of one pipeline execution: run params, each head's child run with its registered models (the
head on images, and the same as the served image-file model)."""

from __future__ import annotations

import csv
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
from mlflow.entities import Metric
from mlflow.models import infer_signature

from pipeline.config import Config
from pipeline.contracts import DownloadRecord, Metrics, TrainingSummary
from pipeline.data.manifest import read_manifest, split_rows
from pipeline.files import sha256_file
from pipeline.layout import (
    HISTORY_FILE,
    METRIC_NAMES,
    ROC_PNG,
    SUMMARY_FILE,
    DatasetLayout,
    confusion_png,
    curves_png,
    gradcam_png,
    misclassified_png,
)
from pipeline.model.inputs import load_image
from pipeline.tracking.lineage import pip_requirements
from pipeline.tracking.owner import Run
from pipeline.tracking.records import ChildRun, timing_metrics, training_record
from pipeline.tracking.registry import DATA_TAG, SERVED_TAG, SHIPPED_TAG, VAL_LOSS_TAG, model_name, served_name
from pipeline.tracking.served import image_model, log_pyfunc_model
from pipeline.tracking.store import RUN_CONFIG, save_run_config


def run_params(cfg: Config, download_info: Path, manifest: Path) -> dict[str, object]:
    """params.yaml under its dotted names (unset ones left out, not logged as 'None'), plus what identifies the
    data: archive and manifest sha256."""
    params = {key: value for key, value in cfg.flat().items() if value is not None}
    archive_sha = DownloadRecord.load(download_info).sha256  # None when data.url is a folder
    if archive_sha:
        params["data.archive_sha256"] = archive_sha
    params[DATA_TAG] = sha256_file(manifest)
    return params


def history_metrics(history_csv: Path) -> list[tuple[int, dict[str, float]]]:
    with open(history_csv, newline="") as f:
        return [(int(row.pop("epoch")), {k: float(v) for k, v in row.items()}) for row in csv.DictReader(f)]


def log_history(run: ChildRun, history: list[tuple[int, dict[str, float]]]) -> None:
    """history.csv's points at step = epoch, in one batch; an adopted live run keeps the points it already has."""
    client = mlflow.MlflowClient()
    keys = {key for _, values in history for key in values}
    have = {(key, m.step) for key in keys for m in client.get_metric_history(run.run_id, key)} if run.adopted else set()
    stamp = int(time.time() * 1000)
    points = [
        Metric(key, value, stamp, epoch)
        for epoch, values in history
        for key, value in values.items()
        if (key, epoch) not in have
    ]
    for first in range(0, len(points), 1000):  # MLflow's limit per batch
        client.log_batch(run.run_id, metrics=points[first : first + 1000])


def example_image(manifest: Path) -> Path:
    """The models' input example: the test split's first image."""
    return Path(split_rows(read_manifest(manifest), "test")[0].path)


def input_example(image: Path, image_size: int) -> np.ndarray:
    """`image` as the models take it: RGB pixels 0..255."""
    return np.round(np.asarray(load_image(str(image), image_size).numpy()))[None].astype(np.float32)


class _KerasFlavor:
    """mlflow.keras, creating the model folder before the input example is written into it: mlflow.keras
    (3.17) writes the example first and fails (mlflow/mlflow#16183). Model.log takes any such flavor."""

    __name__ = "mlflow.keras"

    @staticmethod
    def save_model(path: str, **kwargs: Any) -> None:
        os.makedirs(path, exist_ok=True)
        mlflow.keras.save_model(path=path, **kwargs)


def log_files(files: list[Path], artifact_path: str | None = None) -> None:
    for f in files:
        if f.exists():  # ROC_PNG exists for two-class datasets only, gradcam_png for the fine-tuned model only
            mlflow.log_artifact(str(f), artifact_path)


def log_plots(layout: DatasetLayout, names: list[str]) -> None:
    """The plots `names` (of layout's registry) that the evaluate stage wrote, under the run's plots/."""
    log_files([layout.plots / name for name in names], "plots")


def log_run_config(cfg: Config) -> None:
    """The execution's Config as store.RUN_CONFIG in the active run: what predict --model-uri reads."""
    with tempfile.TemporaryDirectory() as tmp:
        save_run_config(cfg, Path(tmp) / RUN_CONFIG)
        mlflow.log_artifact(str(Path(tmp) / RUN_CONFIG))


def log_head(
    layout: DatasetLayout, head: str, run: ChildRun, *, cfg: Config, params: dict
) -> tuple[mlflow.models.model.ModelInfo, int]:
    """`head`'s child run `run` of the active parent, from the outputs under `layout`: the execution's `params`
    (and its Config), per-epoch history, test metrics, plots, the head's image model and its served image-file
    model, each registered: the head's version (its ModelInfo, returned with the served version) tagged with the
    served one."""
    model_dir, test = layout.model_dir(head), Metrics.load(layout.metrics)[head]
    with mlflow.start_run(run_id=run.run_id, nested=True):
        mlflow.log_params({**params, "head": head})
        log_history(run, history_metrics(model_dir / HISTORY_FILE))
        summary = TrainingSummary.load(model_dir / SUMMARY_FILE)
        # Step-0 metrics logged before the model are linked to it too (its page in the Models tab). The model
        # keeps its best epoch's weights: best_val_* are its validation scores, the history's last point is not.
        mlflow.log_metrics(
            {
                "best_epoch": float(summary.best_epoch),
                "epochs_run": float(summary.epochs_run),
                "best_val_loss": summary.val_loss,
                "best_val_accuracy": summary.val_accuracy,
                **timing_metrics(training_record(layout, head)),
                **{f"test_{k}": float(v) for k in METRIC_NAMES if (v := getattr(test, k)) is not None},
            }
        )
        log_files([model_dir / SUMMARY_FILE, model_dir / HISTORY_FILE])
        log_run_config(cfg)
        log_plots(layout, [confusion_png(head), curves_png(head), ROC_PNG, misclassified_png(head), gradcam_png(head)])
        # The version is created with its tags (what the champion comparison reads) in one request: a crash
        # can't leave a version without them.
        version_tags = {
            "head": head,
            VAL_LOSS_TAG: str(summary.val_loss),
            "test_accuracy": str(test.accuracy),  # reported: it chooses nothing
            DATA_TAG: str(params[DATA_TAG]),
        }
        if summary.shipped is not None:  # the fine-tune stage's choice on validation
            version_tags[SHIPPED_TAG] = summary.shipped
        # The image-file model that `mlflow models serve` answers requests with, first: the head's version names it.
        image = example_image(layout.manifest)
        served = log_pyfunc_model(
            model_dir,
            cfg.evaluate.tta_flip,
            image,
            registered_model_name=served_name(model_name(cfg)),
            backbone=cfg.backbone,
            tags=version_tags,
        )
        # On images whichever the head (so any MLflow client can load @champion), without the optimizer state.
        model, example = image_model(model_dir, cfg.backbone), input_example(image, cfg.backbone.image_size)
        served_version = int(str(served.registered_model_version))  # str over REST
        info = mlflow.models.Model.log(  # = mlflow.keras.log_model(...), see _KerasFlavor
            name=head,
            artifact_path=None,
            flavor=_KerasFlavor,
            model=model,
            signature=infer_signature(example, model.predict(example, verbose=0)),
            input_example=example,
            pip_requirements=pip_requirements(),
            registered_model_name=model_name(cfg),
            tags={**version_tags, SERVED_TAG: str(served_version)},
        )
        return info, served_version


class ClientStore:
    """owner.reap's calls over MlflowClient (any tracking store)."""

    def __init__(self) -> None:
        self.client = mlflow.MlflowClient()

    def runs(self, experiment_id: str, query: str) -> list[Run]:
        found, token = [], None
        while True:
            page = self.client.search_runs([experiment_id], query, max_results=1000, page_token=token)
            found += [Run(run.info.run_id, run.data.tags) for run in page]
            if not (token := page.token):
                return found

    def versions(self, run_id: str) -> list[tuple[str, str]]:
        return [(v.name, v.version) for v in self.client.search_model_versions(f"run_id = '{run_id}'")]

    def delete_version(self, name: str, version: str) -> None:
        self.client.delete_model_version(name, version)

    def set_tag(self, run_id: str, key: str, value: str) -> None:
        self.client.set_tag(run_id, key, value)

    def fail(self, run_id: str) -> None:
        self.client.set_terminated(run_id, "FAILED")
