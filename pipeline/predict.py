"""Class and probability of images (files, folders searched recursively, http(s) URLs), one line each.

    python -m pipeline.predict photo.jpg photos/ https://example.com/cat.jpg
    python -m pipeline.predict photos/ --model-dir data/<name>/models/dense --csv predictions.csv
    python -m pipeline.predict photo.jpg --model-uri models:/<name>-classifier@champion

Default model: data/<data.name>/models/finetune (params.yaml): the shipped model, whichever of the dense head on
the frozen base, the fine-tuned model and their average the fine-tune stage chose on validation (it logs which).
Each file is decoded, and converted where TensorFlow would misread it, by the same code as prepare
(pipeline/data/images.py), then resized by the training input pipeline and averaged with its mirror image when
evaluate.tta_flip is set, as evaluate does. A file that can't be used gets an error line and the others are still
predicted; the exit status is then 1.
"""

from __future__ import annotations

import http.client
import sys
import tempfile
from pathlib import Path

from pipeline.cli import output, parser, run_cli, setup_logging
from pipeline.config import Config, load_config
from pipeline.contracts import ContractError, TrainingSummary
from pipeline.data.archive import DownloadError, fetch
from pipeline.data.naming import IMAGE_SUFFIXES
from pipeline.files import csv_kind, log, write_csv
from pipeline.layout import MODEL_FILE, SUMMARY_FILE, DatasetLayout
from pipeline.model.inference import load_for_inference
from pipeline.model.predictor import PredictError, Prediction, Predictor, predictor_for
from pipeline.tracking.store import RUN_CONFIG, TrackingError, check_reachable, run_config, tracking_uri

MAX_DOWNLOAD = 50 << 20  # bytes; far above any photo, stops a wrong URL from filling the disk
URL_TIMEOUT_S = 30
URL_DEADLINE_S = 120  # one image, however slowly the server sends it
COLUMNS = ["source", "class", "probability", "error"]  # then prob_<class> per class
CSV = csv_kind(COLUMNS)  # --csv replaces only a predictions CSV (of any model's classes)


def from_model_dir(model_dir: Path, cfg: Config) -> Predictor:
    """A train_dense / train_finetune output folder: model.keras, class names from summary.json."""
    model_file, summary_file = model_dir / MODEL_FILE, model_dir / SUMMARY_FILE
    if not (model_file.is_file() and summary_file.is_file()):
        raise PredictError(
            f"{model_dir}: no {MODEL_FILE} + {SUMMARY_FILE} there; train one (dvc repro) or give "
            f"--model-dir / --model-uri"
        )
    model = load_for_inference(model_file)
    summary = TrainingSummary.load(summary_file)
    if summary.shipped is not None:  # the fine-tune stage's folder: say which candidate it ships
        log.info("model %s ships %s", model_dir, summary.shipped_line())
    return predictor_for(model, summary.classes, cfg.backbone, cfg.evaluate.tta_flip)


def from_model_uri(uri: str) -> Predictor:
    """An MLflow model: the served pyfunc model (pipeline/tracking/served.py) or a Keras model logged by the track
    stage, whose run holds the class names (summary.json) and the parameters it was trained with (RUN_CONFIG)."""
    import mlflow

    store = tracking_uri()
    check_reachable(store)
    mlflow.set_tracking_uri(store)
    try:
        info = mlflow.models.get_model_info(uri)
        if "keras" not in info.flavors:
            wrapper = mlflow.pyfunc.load_model(uri).unwrap_python_model()
            if not isinstance(predictor := getattr(wrapper, "predictor", None), Predictor):
                raise PredictError(
                    f"{uri}: neither a Keras model nor the image pyfunc model of pipeline/tracking/served.py"
                )
            return predictor
        logged = {f.path for f in mlflow.MlflowClient().list_artifacts(info.run_id)}
        if missing := [f for f in (SUMMARY_FILE, RUN_CONFIG) if f not in logged]:
            raise PredictError(
                f"{uri}: its run {info.run_id} holds no {' or '.join(missing)} (the track stage logs them beside "
                f"the model; older runs lack {RUN_CONFIG}): use its served model (<name>-classifier-served), or "
                f"--model-dir"
            )
        with tempfile.TemporaryDirectory() as tmp:
            fetched = {
                f: Path(mlflow.artifacts.download_artifacts(run_id=info.run_id, artifact_path=f, dst_path=tmp))
                for f in (SUMMARY_FILE, RUN_CONFIG)
            }
            summary, cfg = TrainingSummary.load(fetched[SUMMARY_FILE]), run_config(fetched[RUN_CONFIG])
        model = mlflow.keras.load_model(uri)
    except mlflow.exceptions.MlflowException as err:
        raise PredictError(f"{uri}: {err.message}") from None
    return predictor_for(model, summary.classes, cfg.backbone, cfg.evaluate.tta_flip)


def _download(url: str, dest: Path) -> Prediction | tuple[str, Path]:
    try:  # archive.fetch: a deadline over the whole transfer, not only per read
        fetch(url, dest, URL_DEADLINE_S, URL_TIMEOUT_S, max_bytes=MAX_DOWNLOAD)
    except (OSError, ValueError, http.client.HTTPException, DownloadError) as err:  # status, DNS, refused, bad URL
        return Prediction(url, error=f"cannot download: {err}")
    return url, dest


def collect(inputs: list[str], download_dir: Path) -> list[Prediction | tuple[str, Path]]:
    """(source, file) to predict, or an error Prediction for what can't be, in the order given."""
    items: list[Prediction | tuple[str, Path]] = []
    for arg in inputs:
        path = Path(arg)
        if arg.startswith(("http://", "https://")):
            items.append(_download(arg, download_dir / str(len(items))))
        elif path.is_dir():
            files = sorted(f for f in path.rglob("*") if f.is_file())
            if not files:
                items.append(Prediction(arg, error="folder holds no files"))
            for f in files:
                ok = f.suffix.lower() in IMAGE_SUFFIXES
                items.append(
                    (str(f), f)
                    if ok
                    else Prediction(str(f), error=f"unsupported file type ({f.suffix or 'no suffix'})")
                )
        else:
            items.append((arg, path))  # missing or unreadable files: check_image says why
    return items


def predict(inputs: list[str], predictor: Predictor) -> list[Prediction]:
    with tempfile.TemporaryDirectory() as tmp:
        return predictor.predict_files(collect(inputs, Path(tmp)))


def line(p: Prediction) -> str:
    return f"{p.source}\terror: {p.error}" if p.error else f"{p.source}\t{p.label}\t{p.probability:.4f}"


def write_predictions(path: Path, predictions: list[Prediction], classes: list[str]) -> None:
    """source, class, probability, error, then one probability column per class (prob_<class>)."""
    rows = []
    for p in predictions:
        probs = [f"{p.probabilities[c]:.6f}" for c in classes] if p.probabilities else [""] * len(classes)
        rows.append(
            [p.source, p.label or "", "" if p.probability is None else f"{p.probability:.6f}", p.error or "", *probs]
        )
    write_csv(path, [*COLUMNS, *(f"prob_{c}" for c in classes)], rows, CSV)


def main(argv: list[str] | None = None) -> None:
    ap = parser(__doc__, "data.name, backbone, evaluate.tta_flip")
    ap.add_argument("inputs", nargs="+", help="image files, folders (searched recursively) or http(s) URLs")
    model = ap.add_mutually_exclusive_group()
    model.add_argument(
        "--model-dir",
        type=Path,
        help="a train_finetune or train_dense output folder (default: data/<data.name>/models/finetune)",
    )
    model.add_argument(
        "--model-uri",
        help="an MLflow model, e.g. models:/<name>-classifier@champion; store: "
        "MLFLOW_TRACKING_URI, else the project's mlflow.db",
    )
    ap.add_argument("--csv", type=output(CSV), help="also write the predictions to this CSV file")
    args = ap.parse_args(argv)
    setup_logging()
    if args.model_uri:
        predictor = from_model_uri(args.model_uri)
    else:
        cfg = load_config(args.params, args.dataset)
        predictor = from_model_dir(args.model_dir or DatasetLayout.of(cfg.data.name).model_dir("finetune"), cfg)
    predictions = predict(args.inputs, predictor)
    for p in predictions:
        print(line(p), flush=True)
    if args.csv:
        write_predictions(args.csv, predictions, predictor.classes)
    failed = sum(1 for p in predictions if p.error)
    if failed:
        print(f"{failed} of {len(predictions)} input(s) could not be predicted", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    run_cli(main, PredictError, TrackingError, ContractError)
