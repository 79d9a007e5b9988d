"""Stage 7: log one pipeline execution to MLflow: a parent run, one child run per head, both models
registered under `<data.name>-classifier`, and the `champion` alias on the best version seen so far.

Tracking URI: MLFLOW_TRACKING_URI, else sqlite:///<project>/mlflow.db with artifacts in <project>/mlruns.
An http(s) server is probed at /health first, so a server that is down fails the stage in seconds.
"""
from __future__ import annotations

import argparse
import csv
import os
from pathlib import Path

import keras
import mlflow
import numpy as np
from mlflow.models import infer_signature

from pipeline.backbone import load_image
from pipeline.config import Config, load_config
from pipeline.evaluate import HEADS
from pipeline.io import log, read_json, run_cli, setup_logging, sha256_file, write_json
from pipeline.manifest import read_manifest, split_rows
from pipeline.serving import log_pyfunc_model
from pipeline.tracking_context import (HTTP_DEFAULTS, TrackingError, artifact_location, check_reachable,
                                       execution_tags, pip_requirements, tracking_uri)

TEST_METRICS = ("accuracy", "precision", "recall", "f1", "macro_f1", "roc_auc")
SUMMARY_METRICS = ("best_epoch", "epochs_run", "train_seconds", "seconds_per_epoch")
CHAMPION = "champion"


def model_name(cfg: Config) -> str:
    """One registered model per dataset: both heads are versions of it, so `champion` can pick either."""
    return f"{cfg.data.name}-classifier"


def run_params(cfg: Config, download_info: Path, manifest: Path) -> dict[str, object]:
    """params.yaml under its dotted names, plus what identifies the data: archive and manifest sha256."""
    params = cfg.flat()
    archive_sha = read_json(download_info).get("sha256")  # absent when data.url is a folder
    if archive_sha:
        params["data.archive_sha256"] = archive_sha
    params["data.manifest_sha256"] = sha256_file(manifest)
    return params


def history_metrics(history_csv: Path) -> list[tuple[int, dict[str, float]]]:
    with open(history_csv, newline="") as f:
        return [(int(row.pop("epoch")), {k: float(v) for k, v in row.items()}) for row in csv.DictReader(f)]


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


def _log_files(files: list[Path], artifact_path: str | None = None) -> None:
    for f in files:
        if f.exists():  # roc.png exists for two-class datasets only
            mlflow.log_artifact(str(f), artifact_path)


def _log_head(head: str, cfg: Config, params: dict, tags: dict, model_dir: Path, test: dict, plots: Path,
              example: np.ndarray, manifest: Path) -> mlflow.models.model.ModelInfo:
    """Child run of the active parent: params, per-epoch history, test metrics, plots, registered model."""
    with mlflow.start_run(run_name=head, nested=True, tags=tags):
        mlflow.log_params({**params, "head": head})
        for epoch, values in history_metrics(model_dir / "history.csv"):
            mlflow.log_metrics(values, step=epoch)
        summary = read_json(model_dir / "summary.json")
        # Step-0 metrics logged before the model are linked to it too (its page in the Models tab).
        mlflow.log_metrics({**{k: float(summary[k]) for k in SUMMARY_METRICS if k in summary},
                            **{f"test_{k}": float(test[k]) for k in TEST_METRICS if k in test}})
        _log_files([model_dir / "summary.json", model_dir / "history.csv"])
        _log_files([plots / f"confusion_{head}.png", plots / f"curves_{head}.png", plots / "roc.png",
                    plots / f"misclassified_{head}.png", plots / f"gradcam_{head}.png"], "plots")
        if head == "finetune":  # the raw-image model that `mlflow models serve` answers requests with
            log_pyfunc_model(model_dir, cfg.evaluate.tta_flip, Path(split_rows(read_manifest(manifest), "test")[0].path),
                             registered_model_name=f"{model_name(cfg)}-served")
        # Without the optimizer state: half the size, and the registry serves inference (DVC keeps the rest).
        model = keras.models.load_model(model_dir / "model.keras", compile=False)
        return mlflow.models.Model.log(  # = mlflow.keras.log_model(...), see _KerasFlavor
            name=head, artifact_path=None, flavor=_KerasFlavor, model=model,
            signature=infer_signature(example, model.predict(example, verbose=0)), input_example=example,
            pip_requirements=pip_requirements(), registered_model_name=model_name(cfg))


def pick_champion(accuracy: dict[str, float], current: float | None) -> str | None:
    """The head to promote: this run's best by test accuracy (ties: the first of HEADS, the cheaper model),
    only if it beats the current champion strictly (a tie keeps the champion: no churn)."""
    best = max(accuracy, key=accuracy.__getitem__)
    return best if current is None or accuracy[best] > current else None


def register_champion(name: str, versions: dict[str, int], metrics: dict, manifest_sha: str) -> dict:
    """Tag the new versions with what the comparison needs; move `champion` to the better one."""
    client = mlflow.MlflowClient()
    accuracy = {head: float(metrics[head]["accuracy"]) for head in versions}
    for head, version in versions.items():
        for key, value in (("head", head), ("test_accuracy", accuracy[head]), ("data.manifest_sha256", manifest_sha)):
            client.set_model_version_tag(name, version, key, str(value))
    held_by = client.get_registered_model(name).aliases.get(CHAMPION)  # missing-alias errors differ by store
    current = None if held_by is None else client.get_model_version(name, held_by)
    # A champion without the tag (aliased by hand) counts as beaten.
    held = None if current is None else float(current.tags.get("test_accuracy", "-inf"))
    head = pick_champion(accuracy, held)
    if head is None:
        return {"version": int(current.version), "head": current.tags.get("head"), "test_accuracy": held,
                "changed": False}
    client.set_registered_model_alias(name, CHAMPION, versions[head])
    return {"version": versions[head], "head": head, "test_accuracy": accuracy[head], "changed": True}


def track(cfg: Config, *, download_info: Path, prepare_summary: Path, features: Path, manifest: Path,
          model_dirs: dict[str, Path], reports: Path, lock: Path, out: Path) -> dict:
    """Log one execution; write what was logged (ids, versions, champion) to `out` and return it."""
    uri = tracking_uri()
    check_reachable(uri)
    mlflow.set_tracking_uri(uri)
    name = cfg.data.name
    if mlflow.get_experiment_by_name(name) is None:
        mlflow.create_experiment(name, artifact_location=artifact_location(uri))
    experiment = mlflow.set_experiment(name)
    params = run_params(cfg, download_info, manifest)
    metrics = read_json(reports / "metrics.json")
    runs, versions = {}, {}
    tags = execution_tags(lock)
    with mlflow.start_run(run_name="pipeline", tags=tags) as parent:
        mlflow.log_params(params)
        _log_files([reports / "metrics.json", reports / "report.html", prepare_summary, download_info, lock])
        _log_files([reports / "plots" / "roc.png"], "plots")
        for head in HEADS:
            example = input_example(head, features, manifest, cfg.backbone.image_size)
            info = _log_head(head, cfg, params, tags, model_dirs[head], metrics[head], reports / "plots", example,
                             manifest)
            runs[head], versions[head] = info.run_id, int(info.registered_model_version)  # str over REST
        champion = register_champion(model_name(cfg), versions, metrics, params["data.manifest_sha256"])
    record = {
        "tracking_uri": uri, "experiment_name": name, "experiment_id": experiment.experiment_id,
        "parent_run_id": parent.info.run_id, "child_run_ids": runs, "registered_model": model_name(cfg),
        "model_versions": versions, CHAMPION: champion,
    }
    write_json(out, record)
    log.info("logged to %s: experiment %s, run %s; %s@%s is version %s (%s)", uri, name, parent.info.run_id,
             model_name(cfg), CHAMPION, champion["version"], champion["head"])
    return record


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--params", type=Path, default=Path("params.yaml"))
    ap.add_argument("--download-info", type=Path, required=True, help="download.json")
    ap.add_argument("--prepare-summary", type=Path, required=True, help="prepare.json")
    ap.add_argument("--features", type=Path, required=True, help="feature folder (dense input example)")
    ap.add_argument("--manifest", type=Path, required=True, help="manifest.csv (hash, finetune input example)")
    ap.add_argument("--dense", type=Path, required=True, help="train_dense output folder")
    ap.add_argument("--finetune", type=Path, required=True, help="train_finetune output folder")
    ap.add_argument("--reports", type=Path, required=True, help="evaluate output folder")
    ap.add_argument("--lock", type=Path, default=Path("dvc.lock"), help="its stage hashes become run tags")
    ap.add_argument("--out", type=Path, required=True, help="JSON record of what was logged")
    args = ap.parse_args(argv)
    setup_logging()
    for key, value in HTTP_DEFAULTS.items():
        os.environ.setdefault(key, value)
    track(load_config(args.params), download_info=args.download_info, prepare_summary=args.prepare_summary,
          features=args.features, manifest=args.manifest, model_dirs={"dense": args.dense, "finetune": args.finetune},
          reports=args.reports, lock=args.lock, out=args.out)


if __name__ == "__main__":
    run_cli(main, TrackingError)
