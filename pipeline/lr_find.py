"""Learning-rate range test for either head, on what the pipeline already cached (not a DVC stage: run it when
choosing dense.learning_rate or finetune.learning_rate, then set the value in params.yaml).

    python -m pipeline.lr_find --head dense       # the dense head on the cached features: seconds
    python -m pipeline.lr_find --head finetune    # the fine-tuning model, on its frozen layers' cached output

Writes data/<name>/lr_find/<head>.csv (learning_rate, loss, smoothed_loss: `dvc plots show` draws it), .png and
.json (the suggestion); with --mlflow also logs them to an `lr_find <head>` run of the dataset's experiment.
"""

from __future__ import annotations

import math
from pathlib import Path

import keras
import numpy as np

from pipeline.cli import parser, run_cli, setup_logging
from pipeline.config import Config, load_config
from pipeline.contracts import FeatureMeta
from pipeline.data.manifest import classes_of, read_manifest, split_rows
from pipeline.evaluation.plots import PNG, plt, save_figure
from pipeline.files import JSON, check_output, csv_kind, log, write_csv, write_json
from pipeline.layout import FEATURE_META_FILE, HEADS, DatasetLayout
from pipeline.model.devices import distribution
from pipeline.model.features import load_features
from pipeline.model.finetune import activations_trainer, frozen_activations, split_frozen
from pipeline.model.heads import build_dense_head, build_finetune_model
from pipeline.model.inference import load_for_inference
from pipeline.model.inputs import array_batches
from pipeline.model.lr_range import RangeTest, range_test
from pipeline.model.training import compile_for, targets

COLUMNS = ["learning_rate", "loss", "smoothed_loss"]
RESULTS = {".csv": csv_kind(COLUMNS), ".png": PNG, ".json": JSON}  # what each result file may replace


def dense_test(cfg: Config, layout: DatasetLayout, steps: int) -> RangeTest:
    meta = FeatureMeta.load(layout.features / FEATURE_META_FILE)
    n, dense = len(meta.classes), cfg.dense.model_copy(update={"schedule": "constant"})
    x, y = load_features(layout.features, "train")
    keras.utils.set_random_seed(dense.seed)
    model = compile_for(build_dense_head(meta.feature_shape, n, dense), dense, n, 1)
    batches = array_batches(x, targets(y, n, dense.label_smoothing), dense.batch_size, shuffle_seed=dense.seed)
    return range_test(model, batches, steps)


def finetune_test(cfg: Config, layout: DatasetLayout, steps: int) -> RangeTest:
    """The trained dense head under the top blocks, as train_finetune starts; the frozen layers run once."""
    rows = read_manifest(layout.manifest)
    classes = classes_of(rows)
    n, ft = len(classes), cfg.finetune.model_copy(update={"schedule": "constant"})
    train = split_rows(rows, "train")
    keras.utils.set_random_seed(ft.seed)
    strategy = distribution(False)
    head = load_for_inference(layout.model_file("dense"))
    bottom, top = split_frozen(build_finetune_model(head, cfg.backbone, ft), ft)
    paths, size, scratch = [r.path for r in train], cfg.backbone.image_size, layout.root / "lr_find"
    (x,) = frozen_activations(bottom, strategy, paths, False, size, ft.batch_size, scratch)
    model = activations_trainer(top, head, strategy, ft, n, 1)  # steps per epoch shape only a cosine schedule
    y = targets(np.array([classes.index(r.label) for r in train]), n, ft.label_smoothing)
    return range_test(model, array_batches(x, y, ft.batch_size, shuffle_seed=ft.seed), steps)


def write_results(result: RangeTest, stem: Path, head: str) -> list[Path]:
    rows = zip(result.learning_rates, result.losses, result.smoothed)
    write_csv(stem.with_suffix(".csv"), COLUMNS, rows)
    write_json(stem.with_suffix(".json"), {"suggestion": result.suggestion, "steepest_descent": result.steepest})
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(result.learning_rates, result.losses, alpha=0.3, label="batch loss")
    ax.plot(result.learning_rates, result.smoothed, label="smoothed")
    ax.axvline(result.suggestion, color="tab:green", ls="--", label=f"suggestion: minimum / 10 {result.suggestion:.1e}")
    ax.axvline(result.steepest, color="tab:red", ls=":", label=f"steepest descent {result.steepest:.1e}")
    ax.set(xscale="log", xlabel="learning rate", ylabel="training loss", title=f"{head}: learning-rate range test")
    finite = [v for v in result.smoothed if math.isfinite(v)]
    ax.set_ylim(0, 1.5 * max(finite[: max(len(finite) // 2, 1)]))  # divergence at the end would hide the rest
    ax.legend()
    save_figure(fig, stem.with_suffix(".png"))
    return [stem.with_suffix(s) for s in RESULTS]


def log_to_mlflow(cfg: Config, head: str, result: RangeTest, files: list[Path]) -> str:
    import mlflow

    from pipeline.tracking.store import open_experiment

    open_experiment(cfg.data.name)
    with mlflow.start_run(run_name=f"lr_find {head}") as run:
        mlflow.log_metrics({"suggested_learning_rate": result.suggestion, "steepest_descent": result.steepest})
        for f in files:
            mlflow.log_artifact(str(f), "lr_find")
    return str(run.info.run_id)


def main(argv: list[str] | None = None) -> None:
    ap = parser(__doc__)
    ap.add_argument("--head", choices=HEADS, required=True)
    ap.add_argument("--steps", type=int, default=200, help="batches to train on while the rate grows")
    ap.add_argument("--mlflow", action="store_true", help="also log the results to MLflow")
    args = ap.parse_args(argv)
    setup_logging()
    cfg = load_config(args.params, args.dataset)
    layout = DatasetLayout.of(cfg.data.name)
    for suffix, kind in RESULTS.items():  # before the test: a file of another kind there stops it at once
        check_output(layout.lr_find(args.head).with_suffix(suffix), kind)
    result = (dense_test if args.head == "dense" else finetune_test)(cfg, layout, args.steps)
    files = write_results(result, layout.lr_find(args.head), args.head)
    if result.steepest == result.learning_rates[0]:  # suggest() found no descent after the first steps
        log.warning("the loss never fell after the first steps: no descent to suggest a rate from (more --steps?)")
    log.info(
        "suggested %s.learning_rate: %.2e (a tenth of the minimum's; steepest descent %.2e); plot %s",
        args.head,
        result.suggestion,
        result.steepest,
        files[1],
    )
    if args.mlflow:
        log.info("logged to MLflow run %s", log_to_mlflow(cfg, args.head, result, files))


if __name__ == "__main__":
    run_cli(main, FileNotFoundError)
