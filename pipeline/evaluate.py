"""Stage 6: score both heads on the held-out test split (or on any labelled image folder).

    python -m pipeline.evaluate --features F --manifest M --dense D --finetune T --out reports/
    python -m pipeline.evaluate --dense D --finetune T --images other_folder/ --out other_reports/
"""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import keras
import numpy as np

from pipeline.backbone import conv_base, preprocessing_layer
from pipeline.config import BackboneConfig, EvaluateConfig, load_config
from pipeline.extract import MIRRORED, load_features
from pipeline.explain import write_explanations
from pipeline.heads import image_probabilities, mirror_average, probabilities
from pipeline.io import log, read_json, run_cli, setup_logging, write_json
from pipeline.manifest import Row, read_manifest, split_rows
from pipeline.metrics import classification_metrics
from pipeline.plots import write_plots
from pipeline.prepare import check_images, find_root, scan
from pipeline.report import write_report

HEADS = ("dense", "finetune")

def dense_on_images(head: keras.Model, backbone: BackboneConfig) -> keras.Model:
    """The dense head on top of the frozen base, for scoring images rather than cached features."""
    size = backbone.image_size
    inputs = keras.Input((size, size, 3))
    return keras.Model(inputs, head(conv_base(backbone)(preprocessing_layer()(inputs), training=False)))


def _score(y: np.ndarray, probs: dict[str, np.ndarray], classes: list[str], out_dir: Path,
           model_dirs: dict[str, Path]) -> dict:
    metrics = {head: classification_metrics(y, p, classes) for head, p in probs.items()}
    histories = {h: d / "history.csv" for h, d in model_dirs.items() if (d / "history.csv").exists()}
    write_plots(out_dir, y, probs, classes, histories)
    write_json(out_dir / "metrics.json", metrics)
    for head, m in metrics.items():
        log.info("%s on %d images: accuracy %.4f, f1 %.4f", head, len(y), m["accuracy"], m["f1"])
    log.info("metrics -> %s, plots -> %s", out_dir / "metrics.json", out_dir / "plots")
    return metrics


def evaluate(features: Path, manifest: Path, dense_dir: Path, finetune_dir: Path, out_dir: Path,
             backbone: BackboneConfig, cfg: EvaluateConfig) -> dict:
    """Dense head on the cached test features, fine-tuned model on the test images."""
    classes = read_json(features / "meta.json")["classes"]
    n, size = len(classes), backbone.image_size
    x_test, y_test = load_features(features, "test")
    paths = [r.path for r in split_rows(read_manifest(manifest), "test")]
    head = keras.models.load_model(dense_dir / "model.keras")
    finetuned = keras.models.load_model(finetune_dir / "model.keras")
    dense = probabilities(head, x_test, n)
    if cfg.tta_flip:  # extract cached the mirrored test images' features: the dense head decodes no image
        dense = (dense + probabilities(head, load_features(features, MIRRORED)[0], n)) / 2
    probs = {
        "dense": dense,
        "finetune": mirror_average(image_probabilities(finetuned, paths, n, size), finetuned, paths, n, size,
                                   cfg.tta_flip),
    }
    model_dirs = {"dense": dense_dir, "finetune": finetune_dir}
    metrics = _score(y_test, probs, classes, out_dir, model_dirs)
    write_explanations(out_dir / "plots", finetuned, paths, y_test, probs, classes, size, cfg)
    write_report(out_dir, model_dirs, manifest)
    return metrics


def evaluate_folder(images: Path, dense_dir: Path, finetune_dir: Path, out_dir: Path,
                    backbone: BackboneConfig, cfg: EvaluateConfig) -> dict:
    """Score both models on another folder of class sub-folders with the training class names."""
    classes = read_json(dense_dir / "summary.json")["classes"]
    n, size = len(classes), backbone.image_size
    with tempfile.TemporaryDirectory() as tmp:
        root = find_root(images)
        items, rejected, _ = scan(root)
        good, bad = check_images(items, root, Path(tmp), Path(tmp))
        for f, reason in rejected + bad:
            log.warning("skipped %s: %s", f, reason)
        unknown = sorted({label for _, label, _, _, _ in good} - set(classes))
        if unknown:
            raise ValueError(f"{images}: class folders {unknown} are not among the model's classes {classes}")
        rows = [Row(path=str(p), source=rel, label=label, split="test", sha256=d) for rel, label, _, d, p in good]
        y = np.array([classes.index(r.label) for r in rows])
        paths = [r.path for r in rows]
        models = {"dense": dense_on_images(keras.models.load_model(dense_dir / "model.keras"), backbone),
                  "finetune": keras.models.load_model(finetune_dir / "model.keras")}
        probs = {head: mirror_average(image_probabilities(m, paths, n, size), m, paths, n, size, cfg.tta_flip)
                 for head, m in models.items()}
        metrics = _score(y, probs, classes, out_dir, {})
        write_explanations(out_dir / "plots", models["finetune"], paths, y, probs, classes, size, cfg)
    write_report(out_dir, {"dense": dense_dir, "finetune": finetune_dir})
    return metrics


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--params", type=Path, default=Path("params.yaml"))
    ap.add_argument("--features", type=Path, help="feature folder (test split scoring)")
    ap.add_argument("--manifest", type=Path, help="manifest.csv (test split scoring)")
    ap.add_argument("--dense", type=Path, required=True, help="train_dense output folder")
    ap.add_argument("--finetune", type=Path, required=True, help="train_finetune output folder")
    ap.add_argument("--images", type=Path, help="score this labelled image folder instead of the test split")
    ap.add_argument("--out", type=Path, required=True, help="folder for metrics.json and plots/")
    args = ap.parse_args(argv)
    setup_logging()
    cfg = load_config(args.params)
    if args.images:
        evaluate_folder(args.images, args.dense, args.finetune, args.out, cfg.backbone, cfg.evaluate)
    elif args.features and args.manifest:
        evaluate(args.features, args.manifest, args.dense, args.finetune, args.out, cfg.backbone, cfg.evaluate)
    else:
        ap.error("give --features and --manifest (test split) or --images FOLDER")


if __name__ == "__main__":
    run_cli(main)
