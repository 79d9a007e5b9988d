"""How much the two heads' results depend on the seed, and whether averaging the fine-tune's epochs helps.
Validation split only: the test split is never read here.

Per seed (dense.seed = finetune.seed = S): train_dense() on the cached features, then the fine-tune of
params.yaml for all finetune.epochs (no early stop), keeping the trainable weights after every epoch. Scores on
validation: the dense head; the fine-tuned model at its best epoch by val_loss (what train_finetune keeps, here
without the early stop; selected on these same images, so optimistic); and weight averages (SWA: the mean of the
epochs' weights, exact here since every BatchNorm stays in inference mode) over all epochs and over the second
half. Needs data/<data.name>/{features,prepared} of a finished `dvc repro`.
Usage: python benchmarks/seeds.py [--seeds 42 43 44 45]
"""

from __future__ import annotations

import argparse
import math
import tempfile
import time
from pathlib import Path

from common import REPO, load, machine, split_data

import keras  # noqa: E402  (after common: environment first)
import numpy as np  # noqa: E402

from pipeline.config import load_config  # noqa: E402
from pipeline.data.manifest import classes_of, read_manifest  # noqa: E402
from pipeline.model.heads import build_finetune_model  # noqa: E402
from pipeline.model.inputs import image_dataset  # noqa: E402
from pipeline.model.training import compile_for  # noqa: E402
from pipeline.stages.train_dense import train_dense  # noqa: E402


def finetune_epochs(model: keras.Model, train, val, size: int, cfg) -> tuple[list[list[np.ndarray]], list[float]]:
    """Fit for cfg.epochs; the trainable weights and the val_loss after each epoch."""
    snapshots: list[list[np.ndarray]] = []
    keep = keras.callbacks.LambdaCallback(
        on_epoch_end=lambda e, logs: snapshots.append([v.numpy() for v in model.trainable_variables])
    )
    history = model.fit(
        image_dataset(train[0], train[1], size, cfg.batch_size, shuffle_seed=cfg.seed),
        validation_data=image_dataset(val[0], val[1], size, cfg.batch_size),
        epochs=cfg.epochs,
        callbacks=[keep],
        shuffle=False,
        verbose=0,
    )
    return snapshots, history.history["val_loss"]


def scored(model: keras.Model, weights: list[np.ndarray], val, size: int, batch: int) -> tuple[float, float]:
    for var, value in zip(model.trainable_variables, weights):
        var.assign(value)
    loss, acc = model.evaluate(image_dataset(val[0], val[1], size, batch), verbose=0)
    return loss, acc


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, nargs="+", default=[42, 43, 44, 45])
    args = ap.parse_args()
    print(machine(), flush=True)
    cfg = load_config(REPO / "params.yaml")
    data = REPO / "data" / cfg.data.name
    rows = read_manifest(data / "prepared" / "manifest.csv")
    classes = classes_of(rows)

    train, val = split_data(rows, "train", classes), split_data(rows, "validation", classes)
    size, ft = cfg.backbone.image_size, cfg.finetune
    results = []
    for seed in args.seeds:
        start = time.perf_counter()
        dense_cfg, ft_cfg = cfg.dense.model_copy(update={"seed": seed}), ft.model_copy(update={"seed": seed})
        with tempfile.TemporaryDirectory(prefix="bench-seeds-") as tmp:
            dense = train_dense(data / "features", Path(tmp), dense_cfg)
            keras.utils.set_random_seed(seed)
            head = keras.models.load_model(Path(tmp) / "model.keras", compile=False)
        model = compile_for(
            build_finetune_model(head, cfg.backbone, ft_cfg),
            ft_cfg,
            len(classes),
            math.ceil(len(train[0]) / ft_cfg.batch_size),
        )
        snaps, val_losses = finetune_epochs(model, train, val, size, ft_cfg)
        best = int(np.argmin(val_losses))
        half = len(snaps) // 2
        row = {
            "seed": seed,
            "dense": (dense["val_loss"], dense["val_accuracy"]),
            f"best epoch ({best + 1})": scored(model, snaps[best], val, size, ft.batch_size),
            "SWA all epochs": scored(model, [np.mean(w, 0) for w in zip(*snaps)], val, size, ft.batch_size),
            f"SWA epochs {half + 1}-{len(snaps)}": scored(
                model, [np.mean(w, 0) for w in zip(*snaps[half:])], val, size, ft.batch_size
            ),
        }
        results.append(row)
        print(
            f"seed {seed} ({time.perf_counter() - start:.0f} s, {load()}): "
            + "; ".join(f"{k} val_loss {v[0]:.4f} val_acc {v[1]:.4f}" for k, v in row.items() if k != "seed"),
            flush=True,
        )
    print("\nmean over seeds (val_loss / val_accuracy):")
    for i, key in enumerate(("dense", "best epoch", "SWA all epochs", "SWA epochs")):
        values = np.array([list(r.values())[1 + i] for r in results])
        print(f"  {key:16s} {values[:, 0].mean():.4f} ± {values[:, 0].std():.4f} / {values[:, 1].mean():.4f}")


if __name__ == "__main__":
    main()
