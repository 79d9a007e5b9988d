"""The MLflow side of one pipeline execution: run params, each head's child run with its registered model, and
the `champion` alias on the best version seen so far."""

from __future__ import annotations

import csv
import os
import time
from pathlib import Path

import mlflow
import numpy as np
from mlflow.entities import Metric
from mlflow.models import infer_signature

from pipeline.config import Config
from pipeline.data.manifest import read_manifest, split_rows
from pipeline.files import read_json, sha256_file
from pipeline.layout import HISTORY_FILE, METRIC_NAMES, MODEL_FILE, SUMMARY_FILE
from pipeline.model.inference import load_for_inference
from pipeline.model.inputs import load_image
from pipeline.tracking.lineage import pip_requirements
from pipeline.tracking.owner import Run
from pipeline.tracking.records import timing_metrics
from pipeline.tracking.served import log_pyfunc_model

CHAMPION = "champion"


def model_name(cfg: Config) -> str:
    """One registered model per dataset: both heads are versions of it, so `champion` can pick either."""
    return f"{cfg.data.name}-classifier"


def run_params(cfg: Config, download_info: Path, manifest: Path) -> dict[str, object]:
    """params.yaml under its dotted names (unset ones left out, not logged as 'None'), plus what identifies the
    data: archive and manifest sha256."""
    params = {key: value for key, value in cfg.flat().items() if value is not None}
    archive_sha = read_json(download_info).get("sha256")  # absent when data.url is a folder
    if archive_sha:
        params["data.archive_sha256"] = archive_sha
    params["data.manifest_sha256"] = sha256_file(manifest)
    return params


def history_metrics(history_csv: Path) -> list[tuple[int, dict[str, float]]]:
    with open(history_csv, newline="") as f:
        return [(int(row.pop("epoch")), {k: float(v) for k, v in row.items()}) for row in csv.DictReader(f)]


def log_history(run_id: str, history: list[tuple[int, dict[str, float]]], adopted: bool) -> None:
    """history.csv's points at step = epoch, in one batch; an adopted live run keeps the points it already has."""
    client = mlflow.MlflowClient()
    keys = {key for _, values in history for key in values}
    have = {(key, m.step) for key in keys for m in client.get_metric_history(run_id, key)} if adopted else set()
    stamp = int(time.time() * 1000)
    points = [
        Metric(key, value, stamp, epoch)
        for epoch, values in history
        for key, value in values.items()
        if (key, epoch) not in have
    ]
    for first in range(0, len(points), 1000):  # MLflow's limit per batch
        client.log_batch(run_id, metrics=points[first : first + 1000])


def input_example(head: str, features: Path, manifest: Path, image_size: int) -> np.ndarray:
    """One real test sample in the model's own input: cached features (dense) or RGB pixels 0..255."""
    if head == "dense":
        return np.load(features / "test.npy", mmap_mode="r")[:1].astype(np.float32)  # not the whole split
    path = split_rows(read_manifest(manifest), "test")[0].path
    return np.round(load_image(path, image_size).numpy())[None].astype(np.float32)


class _KerasFlavor:
    """mlflow.keras, creating the model folder before the input example is written into it: mlflow.keras
    (3.17) writes the example first and fails (mlflow/mlflow#16183). Model.log takes any such flavor."""

    __name__ = "mlflow.keras"

    @staticmethod
    def save_model(path: str, **kwargs) -> None:
        os.makedirs(path, exist_ok=True)
        mlflow.keras.save_model(path=path, **kwargs)


def log_files(files: list[Path], artifact_path: str | None = None) -> None:
    for f in files:
        if f.exists():  # roc.png exists for two-class datasets only
            mlflow.log_artifact(str(f), artifact_path)


def log_head(
    head: str,
    cfg: Config,
    params: dict,
    run: tuple[str, bool],
    model_dir: Path,
    test: dict,
    plots: Path,
    example: np.ndarray,
    manifest: Path,
    execution: Path,
) -> mlflow.models.model.ModelInfo:
    """Child run `run` (its id, and whether it is the training stage's adopted live run) of the active parent:
    params, per-epoch history, test metrics, plots, registered model."""
    with mlflow.start_run(run_id=run[0], nested=True):
        mlflow.log_params({**params, "head": head})
        log_history(run[0], history_metrics(model_dir / HISTORY_FILE), run[1])
        summary = read_json(model_dir / SUMMARY_FILE)
        # Step-0 metrics logged before the model are linked to it too (its page in the Models tab). The model
        # keeps its best epoch's weights: best_val_* are its validation scores, the history's last point is not.
        mlflow.log_metrics(
            {
                **{k: float(summary[k]) for k in ("best_epoch", "epochs_run")},
                **{f"best_{k}": float(summary[k]) for k in ("val_loss", "val_accuracy")},
                **timing_metrics(execution),
                **{f"test_{k}": float(test[k]) for k in METRIC_NAMES if k in test},
            }
        )
        log_files([model_dir / SUMMARY_FILE, model_dir / HISTORY_FILE])
        log_files(
            [
                plots / f"confusion_{head}.png",
                plots / f"curves_{head}.png",
                plots / "roc.png",
                plots / f"misclassified_{head}.png",
                plots / f"gradcam_{head}.png",
            ],
            "plots",
        )
        if head == "finetune":  # the raw-image model that `mlflow models serve` answers requests with
            example_image = Path(split_rows(read_manifest(manifest), "test")[0].path)
            log_pyfunc_model(
                model_dir, cfg.evaluate.tta_flip, example_image, registered_model_name=f"{model_name(cfg)}-served"
            )
        # Without the optimizer state: half the size, and the registry serves inference (DVC keeps the rest).
        model = load_for_inference(model_dir / MODEL_FILE)
        # The version is created with its tags (what the champion comparison reads) in one request: a crash
        # can't leave a version without them.
        version_tags = {
            "head": head,
            "test_accuracy": str(float(test["accuracy"])),
            "data.manifest_sha256": str(params["data.manifest_sha256"]),
        }
        return mlflow.models.Model.log(  # = mlflow.keras.log_model(...), see _KerasFlavor
            name=head,
            artifact_path=None,
            flavor=_KerasFlavor,
            model=model,
            signature=infer_signature(example, model.predict(example, verbose=0)),
            input_example=example,
            pip_requirements=pip_requirements(),
            registered_model_name=model_name(cfg),
            tags=version_tags,  # on the logged model and on its registered version
        )


def pick_champion(accuracy: dict[str, float], current: float | None) -> str | None:
    """The head to promote: this run's best by test accuracy (ties: the first of HEADS, the cheaper model),
    only if it beats the current champion strictly (a tie keeps the champion: no churn)."""
    best = max(accuracy, key=accuracy.__getitem__)
    return best if current is None or accuracy[best] > current else None


def _best_earlier(client: mlflow.MlflowClient, name: str, new: dict[str, int]):
    """The best version of `name` but the `new` ones by its test_accuracy tag, the earliest on a tie (the one the
    strict rule kept); None when there is none."""
    earlier = [
        v
        for v in client.search_model_versions(f"name = '{name}'")
        if int(v.version) not in new.values() and "test_accuracy" in v.tags
    ]
    return max(earlier, key=lambda v: (float(v.tags["test_accuracy"]), -int(v.version)), default=None)


def register_champion(name: str, versions: dict[str, int], metrics: dict) -> dict:
    """Move `champion` to the better of the new versions if it beats the one holding it."""
    client = mlflow.MlflowClient()
    accuracy = {head: float(metrics[head]["accuracy"]) for head in versions}
    held_by = client.get_registered_model(name).aliases.get(CHAMPION)  # missing-alias errors differ by store
    # No alias although versions are left: it went with the version a sweep deleted (owner.reap: a dead track's),
    # and the best one left holds it again.
    current = _best_earlier(client, name, versions) if held_by is None else client.get_model_version(name, held_by)
    # A champion without the tag (aliased by hand) counts as beaten.
    held = None if current is None else float(current.tags.get("test_accuracy", "-inf"))
    head = pick_champion(accuracy, held)
    if head is None:
        if held_by is None:
            client.set_registered_model_alias(name, CHAMPION, current.version)
        return {
            "version": int(current.version),
            "head": current.tags.get("head"),
            "test_accuracy": held,
            "changed": False,
        }
    client.set_registered_model_alias(name, CHAMPION, versions[head])
    return {"version": versions[head], "head": head, "test_accuracy": accuracy[head], "changed": True}


class ClientStore:
    """owner.reap's calls over MlflowClient (any tracking store)."""

    def __init__(self):
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
