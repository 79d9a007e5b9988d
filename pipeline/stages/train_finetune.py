"""Stage 5: MobileNet + the trained dense head, top conv blocks unfrozen, low learning rate, augmentation.

The saved model takes raw RGB pixels in [0, 255]. With no augmentation but flips, the frozen layers run once
(model/finetune.py). With several GPUs visible, the model trains on all of them (finetune.multi_gpu), each batch
split across them. With --checkpoint, training state is saved there after every epoch (model/checkpoint.py): a
run killed mid-way (a preempted worker) resumes after its last finished epoch and ends as an uninterrupted run
would; the checkpoint is removed once the model is saved.
"""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np

from pipeline.cli import execution_record, output, parser, run_cli, setup_logging
from pipeline.config import BackboneConfig, FinetuneConfig, load_config
from pipeline.contracts import Scores, TrainingSummary
from pipeline.data.manifest import classes_of, read_manifest, split_rows
from pipeline.files import JSON, log, sha256_file
from pipeline.model.checkpoint import CHECKPOINT_FOLDER, Checkpoint, fingerprint
from pipeline.model.devices import distribution
from pipeline.model.finetune import ImageSplit, fit_inputs
from pipeline.model.heads import build_finetune_model
from pipeline.model.shipping import Choice, average_model, candidate_probabilities, choose, midpoint
from pipeline.model.training import TRAINING_OUTPUTS, class_weights, fit_from_start, save_training, summarize
from pipeline.tracking.live import LiveRun, live_training


def train_finetune(
    manifest: Path,
    dense_model: Path,
    out_dir: Path,
    backbone: BackboneConfig,
    cfg: FinetuneConfig,
    checkpoint_dir: Path | None = None,
    live: LiveRun | None = None,
) -> TrainingSummary:
    """Fine-tune and save; with `checkpoint_dir`, checkpointed after every epoch and resumed from there, the
    checkpoint removed once the model is saved. `live` gets each epoch's metrics (MLflow, when a server is set)."""
    rows = read_manifest(manifest)
    classes = classes_of(rows)
    n = len(classes)

    def split(name: str) -> ImageSplit:
        part = split_rows(rows, name)
        return [r.path for r in part], np.array([classes.index(r.label) for r in part])

    train, val = split("train"), split("validation")
    keras.utils.set_random_seed(cfg.seed)
    strategy = distribution(cfg.multi_gpu)
    with strategy.scope():
        head = keras.models.load_model(dense_model, compile=False)  # its optimizer state would bloat the model
        model = build_finetune_model(head, backbone, cfg)
    start = model.get_weights()  # the dense head on the frozen base: a candidate to ship (model/shipping.py)
    weights = class_weights(train[1], n, cfg.class_weight)
    log.info(
        "fine-tuning on %d train / %d validation images (class weights %s, %d replica(s))",
        len(train[0]),
        len(val[0]),
        weights,
        strategy.num_replicas_in_sync,
    )
    checkpoint = (
        Checkpoint(checkpoint_dir, _fingerprint(manifest, dense_model, backbone, cfg)) if checkpoint_dir else None
    )
    inputs = fit_inputs(model, head, strategy, train, val, backbone.image_size, cfg, n, out_dir)
    history = fit_from_start(
        inputs.trainer,
        inputs.batches,
        inputs.validation,
        cfg.patience,
        epochs=cfg.epochs,
        steps_per_epoch=inputs.steps_per_epoch,
        class_weight=weights,
        verbose=2,
        callbacks=[live.callback()] if live else [],
        checkpoint=checkpoint.variant(inputs.variant) if checkpoint else None,
        beat_start=True,  # no epoch beats the start: stop after patience, the start ships (model/shipping.py)
    )
    shipped, choice = _ship(model, start, val, n, backbone.image_size)
    log.info("shipping %s: %s", choice.shipped, choice.why())
    candidates = {c: Scores(**scores) for c, scores in choice.validation.items()}
    summary = summarize(history, classes, weights).model_copy(  # the scores are those of the model it ships
        update={"shipped": choice.shipped, "candidates": candidates, **candidates[choice.shipped].model_dump()}
    )
    save_training(shipped, history, out_dir, summary)
    if checkpoint:
        checkpoint.remove()
    return summary


def _ship(
    model: keras.Model, start: list[np.ndarray], val: ImageSplit, n: int, size: int
) -> tuple[keras.Model, Choice]:
    """The candidate chosen on validation, as the image model to save: `model` with its start, fine-tuned or
    midpoint weights, or the average of the start's and its probabilities."""
    choice = choose(val[1], candidate_probabilities(model, start, val[0], n, size))
    if choice.shipped == "finetune":
        return model, choice
    if choice.shipped in ("dense", "interpolated"):
        model.set_weights(start if choice.shipped == "dense" else midpoint(start, model.get_weights()))
        return model, choice
    first = keras.models.clone_model(model)  # the same architecture, built from memory: no file or weights re-read
    first.name = "start"
    first.set_weights(start)
    return average_model(first, model), choice


def _fingerprint(manifest: Path, dense_model: Path, backbone: BackboneConfig, cfg: FinetuneConfig) -> str:
    """What determines fine-tuning: a checkpoint of anything else is not resumed."""
    return fingerprint(
        backbone=backbone.model_dump(),
        finetune=cfg.model_dump(),
        manifest=sha256_file(manifest),
        dense_model=sha256_file(dense_model),
    )


def main(argv: list[str] | None = None) -> None:
    ap = parser(__doc__)
    ap.add_argument("--manifest", type=Path, required=True)
    ap.add_argument("--dense-model", type=Path, required=True, help="model.keras from train_dense")
    ap.add_argument("--out", type=output(TRAINING_OUTPUTS), required=True)
    ap.add_argument("--execution", type=output(JSON), required=True, help="JSON: training time, epochs run")
    ap.add_argument(
        "--checkpoint",
        type=output(CHECKPOINT_FOLDER),
        help="folder for the per-epoch checkpoint (outside --out: DVC deletes outs)",
    )
    args = ap.parse_args(argv)
    if args.checkpoint and args.out.resolve() in (args.checkpoint.resolve(), *args.checkpoint.resolve().parents):
        ap.error("--checkpoint must be outside --out (DVC deletes a stage's outputs before running it)")
    setup_logging()
    cfg = load_config(args.params, args.dataset)
    # Per-epoch metrics in MLflow while it trains, when a server is configured (never waited on).
    with (
        execution_record(args.execution) as facts,
        live_training(cfg.data.name, "finetune", "train_finetune", facts) as live,
    ):
        summary = train_finetune(
            args.manifest, args.dense_model, args.out, cfg.backbone, cfg.finetune, args.checkpoint, live
        )
        facts["epochs_run"] = summary.all_epochs_run


if __name__ == "__main__":
    run_cli(main)
