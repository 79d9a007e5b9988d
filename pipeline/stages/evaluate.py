"""Stage 6: score both heads on the held-out test split (or on any labelled image folder).

python -m pipeline.stages.evaluate --features F --manifest M --dense D --finetune T --out reports/
python -m pipeline.stages.evaluate --dense D --finetune T --images other_folder/ --out other_reports/
"""

from __future__ import annotations

import contextlib
import tempfile
from pathlib import Path

import numpy as np

from pipeline.cli import execution_record, output, parser, run_cli, setup_logging
from pipeline.config import Config, load_config
from pipeline.contracts import FeatureMeta, Metrics, PrepareSummary, TrainingSummary
from pipeline.data.dataset import check_images, find_root, scan
from pipeline.data.manifest import read_manifest, split_rows
from pipeline.evaluation.explain import write_explanations
from pipeline.evaluation.report import REPORT_HTML, write_report
from pipeline.evaluation.scoring import score
from pipeline.files import JSON, files_in, log
from pipeline.layout import (
    FEATURE_META_FILE,
    HISTORY_FILE,
    METRICS_FILE,
    MODEL_FILE,
    REPORT_FILE,
    SUMMARY_FILE,
    DatasetLayout,
)
from pipeline.model.features import feature_probabilities
from pipeline.model.heads import dense_on_images
from pipeline.model.inference import image_probabilities, load_for_inference, probabilities

# Written into --out file by file, each replacing only its own kind (plots/: the same, per file when written).
OUTPUT = files_in(
    "a reports folder", {METRICS_FILE: JSON, REPORT_FILE: REPORT_HTML, "plots": files_in("a plots folder", {})}
)


def evaluate(
    features: Path, manifest: Path, dense_dir: Path, finetune_dir: Path, out_dir: Path, cfg: Config
) -> Metrics:
    """Dense head on the cached test features, fine-tuned model on the test images; the report says `cfg` is
    what it was made from, and shows the data that prepare's summary (beside the manifest's folder) counts."""
    classes = FeatureMeta.load(features / FEATURE_META_FILE).classes
    n, size = len(classes), cfg.backbone.image_size
    paths = [r.path for r in split_rows(read_manifest(manifest), "test")]
    head = load_for_inference(dense_dir / MODEL_FILE)
    finetuned = load_for_inference(finetune_dir / MODEL_FILE)
    dense, y_test = feature_probabilities(lambda x: probabilities(head, x, n), features, "test", cfg.evaluate.tta_flip)
    probs = {"dense": dense, "finetune": image_probabilities(finetuned, paths, n, size, cfg.evaluate.tta_flip)}
    model_dirs = {"dense": dense_dir, "finetune": finetune_dir}
    summaries = _summaries(model_dirs)
    histories = {h: d / HISTORY_FILE for h, d in model_dirs.items() if (d / HISTORY_FILE).exists()}
    metrics = score(y_test, probs, classes, out_dir, histories, summaries)
    write_explanations(out_dir / "plots", finetuned, paths, y_test, probs, classes, size, cfg.evaluate)
    prepared = PrepareSummary.load(DatasetLayout(manifest.parent.parent).prepare_summary)  # <root>/prepared/
    write_report(out_dir, metrics, summaries, model_dirs, cfg, prepared)
    return metrics


def evaluate_folder(images: Path, dense_dir: Path, finetune_dir: Path, out_dir: Path, cfg: Config) -> Metrics:
    """Score both models on another folder of class sub-folders with the training class names."""
    model_dirs = {"dense": dense_dir, "finetune": finetune_dir}
    summaries = _summaries(model_dirs)
    classes = summaries["dense"].classes
    n, size = len(classes), cfg.backbone.image_size
    with tempfile.TemporaryDirectory() as tmp:
        root = find_root(images)
        found = scan(root)
        usable, bad = check_images(found.images, root, Path(tmp), Path(tmp))
        for f, reason in found.rejected + bad:
            log.warning("skipped %s: %s", f, reason)
        unknown = sorted({u.label for u in usable} - set(classes))
        if unknown:
            raise ValueError(f"{images}: class folders {unknown} are not among the model's classes {classes}")
        y = np.array([classes.index(u.label) for u in usable])
        paths = [str(u.read_from) for u in usable]
        models = {
            "dense": dense_on_images(load_for_inference(dense_dir / MODEL_FILE), cfg.backbone),
            "finetune": load_for_inference(finetune_dir / MODEL_FILE),
        }
        probs = {head: image_probabilities(m, paths, n, size, cfg.evaluate.tta_flip) for head, m in models.items()}
        metrics = score(y, probs, classes, out_dir, {}, {})
        write_explanations(out_dir / "plots", models["finetune"], paths, y, probs, classes, size, cfg.evaluate)
    write_report(out_dir, metrics, summaries, model_dirs, cfg, title=images.resolve().name)
    return metrics


def _summaries(model_dirs: dict[str, Path]) -> dict[str, TrainingSummary]:
    return {h: TrainingSummary.load(d / SUMMARY_FILE) for h, d in model_dirs.items()}


def main(argv: list[str] | None = None) -> None:
    ap = parser(__doc__)
    ap.add_argument("--features", type=Path, help="feature folder (test split scoring)")
    ap.add_argument("--manifest", type=Path, help="manifest.csv (test split scoring)")
    ap.add_argument("--dense", type=Path, required=True, help="train_dense output folder")
    ap.add_argument("--finetune", type=Path, required=True, help="train_finetune output folder")
    ap.add_argument("--images", type=Path, help="score this labelled image folder instead of the test split")
    ap.add_argument("--out", type=output(OUTPUT), required=True, help="folder for metrics.json and plots/")
    ap.add_argument("--execution", type=output(JSON), help="JSON: when it ran and for how long (the MLflow run's end)")
    args = ap.parse_args(argv)
    setup_logging()
    cfg = load_config(args.params, args.dataset)
    if not (args.images or (args.features and args.manifest)):
        ap.error("give --features and --manifest (test split) or --images FOLDER")
    with execution_record(args.execution) if args.execution else contextlib.nullcontext():
        if args.images:
            evaluate_folder(args.images, args.dense, args.finetune, args.out, cfg)
        else:
            evaluate(args.features, args.manifest, args.dense, args.finetune, args.out, cfg)


if __name__ == "__main__":
    run_cli(main)
