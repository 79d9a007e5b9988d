"""MLflow stores for the tests: the tiny fine-tuned model logged and registered as the served image model."""

from __future__ import annotations

from pathlib import Path

from pipeline.contracts import TrainingSummary
from tests.helpers.pipeline import TinyProject

SERVED = "tiny-served"  # the registered model of conftest's served_store


def summary_of(classes: list[str]) -> TrainingSummary:
    """A summary.json for a model made in a test: its classes; the training numbers are placeholders."""
    return TrainingSummary(
        classes=classes, epochs_run=1, best_epoch=1, val_loss=0.5, val_accuracy=0.5, class_weight=None
    )


def register_served(project: TinyProject, store: Path, name: str) -> str:
    """Log `project`'s fine-tuned model as the image pyfunc model into a sqlite store under `store`, register it
    as `name` with the champion alias; return the store's URI (MLflow's process-wide URI is left unset)."""
    import mlflow

    from pipeline.tracking.served import log_pyfunc_model

    uri = f"sqlite:///{store / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    try:
        mlflow.set_experiment(experiment_id=mlflow.create_experiment(name, (store / "mlruns").as_uri()))
        example = next(project.layout.raw.rglob("*.jpg"))
        with mlflow.start_run():
            info = log_pyfunc_model(
                project.layout.model_dir("finetune"), project.cfg.evaluate.tta_flip, example, registered_model_name=name
            )
        mlflow.MlflowClient().set_registered_model_alias(name, "champion", info.registered_model_version)
    finally:
        mlflow.set_tracking_uri(None)
    return uri
