"""Where a fine-tuning epoch's time goes, and what caching the frozen layers' activations buys.

Parts, each timed alone on batches of finetune.batch_size and scaled to one epoch (train + validation split):
input pipeline (decode + resize, all cores), augmentation layers, forward through the frozen bottom, forward
through the whole model, a training step with and without augmentation, a training step of the top blocks and
head on cached activations; then real model.fit epochs as train_finetune runs them, with tf.data's autotuner
off (as now) and on (as before).
--accuracy: train_finetune() to the end with the params.yaml settings and with augmentation off (cached path).

Needs a data folder with prepared/manifest.csv and models/dense/model.keras (default: data/<data.name> of this
repo, only read). Usage: python benchmarks/finetune.py [--data DIR] [--accuracy]
"""

from __future__ import annotations

import argparse
import math
import tempfile
import time
from pathlib import Path

from common import REPO, load, machine, split_data, with_autotuner

import keras  # noqa: E402  (after common: environment first)
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from pipeline.config import FinetuneConfig, load_config  # noqa: E402
from pipeline.data.manifest import read_manifest, split_rows  # noqa: E402
from pipeline.model.backbone import split_at_trainable  # noqa: E402
from pipeline.model.heads import augmentation, build_finetune_model  # noqa: E402
from pipeline.model.inputs import image_dataset  # noqa: E402
from pipeline.model.parts import finetune_parts  # noqa: E402
from pipeline.model.training import compile_for  # noqa: E402
from pipeline.stages.train_finetune import train_finetune  # noqa: E402

BATCHES = 10  # timed batches per part, after one warm-up batch


def per_image(fn, batches: list) -> float:
    """Seconds per image of fn over `batches` (first call excluded: tracing)."""
    fn(batches[0])
    start = time.perf_counter()
    for b in batches[1:]:
        fn(b)
    return (time.perf_counter() - start) / sum(len(b[0] if isinstance(b, tuple) else b) for b in batches[1:])


def profile(data: Path, cfg, n_train: int, n_val: int, paths: list[str], labels: np.ndarray, n_classes: int) -> None:
    size, bs, ft = cfg.backbone.image_size, cfg.finetune.batch_size, cfg.finetune
    start = time.perf_counter()
    for _ in image_dataset(paths, labels.tolist(), size, bs, shuffle_seed=0):
        pass
    input_epoch = (time.perf_counter() - start) * (n_train + n_val) / n_train
    images = list(image_dataset(paths[: bs * (BATCHES + 1)], None, size, bs))
    pairs = [(x, labels[i * bs : (i + 1) * bs]) for i, x in enumerate(images)]
    head = keras.models.load_model(data / "models" / "dense" / "model.keras")
    model = compile_for(build_finetune_model(head, cfg.backbone, ft), ft, n_classes, math.ceil(n_train / bs))
    still = {"flip": False, "rotation": 0, "zoom": 0, "color": 0.0}
    no_aug_cfg = FinetuneConfig(**{**ft.model_dump(), "augment": still})
    no_aug = compile_for(build_finetune_model(head, cfg.backbone, no_aug_cfg), ft, n_classes, math.ceil(n_train / bs))
    parts = finetune_parts(model)
    bottom, top = split_at_trainable(parts.base, ft.unfreeze_blocks)
    aug = keras.Sequential(augmentation(ft.augment, ft.seed))
    rescale = parts.preprocessing
    acts = [(bottom(rescale(x), training=False), y) for x, y in pairs]
    inputs = keras.Input(top.input.shape[1:])
    trainer = compile_for(
        keras.Model(inputs, head(top(inputs, training=False))), ft, n_classes, math.ceil(n_train / bs)
    )
    f = {  # seconds per image
        "augmentation layers (training=True)": per_image(tf.function(lambda x: aug(x, training=True)), images),
        "forward, frozen bottom only": per_image(tf.function(lambda x: bottom(rescale(x), training=False)), images),
        "forward, whole model (inference)": per_image(tf.function(lambda x: model(x, training=False)), images),
        "train step, augmentation on": per_image(lambda p: model.train_on_batch(*p), pairs),
        "train step, augmentation off": per_image(lambda p: no_aug.train_on_batch(*p), pairs),
        "train step on cached activations": per_image(lambda p: trainer.train_on_batch(*p), acts),
    }
    print(f"\nper epoch ({n_train} train + {n_val} validation images, batch {bs}, {size} px), parts timed alone:")
    print(f"   {'input pipeline (decode+resize), alone':42s} {input_epoch:6.1f} s")
    for name, s in f.items():
        print(f"   {name:42s} {s * n_train:6.1f} s for train ({1000 * s:.1f} ms/img)")
    print(f"   {'validation = forward of whole model':42s} {f['forward, whole model (inference)'] * n_val:6.1f} s")
    epoch = f["train step, augmentation on"] * n_train + f["forward, whole model (inference)"] * n_val
    print(
        f"   estimate: train steps + validation = {epoch:.1f} s/epoch; frozen bottom's share of it: "
        f"{f['forward, frozen bottom only'] * (n_train + n_val) / epoch:.0%}  ({load()})",
        flush=True,
    )


def real_epochs(data: Path, cfg, n_classes: int, epochs: int = 3) -> None:
    """model.fit as train_finetune calls it, timing each epoch; then again with tf.data's autotuner switched back
    on (as before image_dataset turned it off), in this same run."""
    ft = cfg.finetune
    rows = read_manifest(data / "prepared" / "manifest.csv")
    classes = sorted({r.label for r in rows})

    def ds(split: str, seed, autotune: bool) -> tf.data.Dataset:
        paths, labels = split_data(rows, split, classes)
        return with_autotuner(
            image_dataset(paths, labels, cfg.backbone.image_size, ft.batch_size, shuffle_seed=seed), autotune
        )

    print()
    for autotune in (False, True):
        model = compile_for(
            build_finetune_model(keras.models.load_model(data / "models/dense/model.keras"), cfg.backbone, ft),
            ft,
            n_classes,
            math.ceil(len(split_rows(rows, "train")) / ft.batch_size),
        )
        times: list[float] = []
        timer = epoch_timer(times)
        model.fit(
            ds("train", ft.seed, autotune),
            validation_data=ds("validation", None, autotune),
            epochs=epochs,
            callbacks=[timer],
            verbose=0,
        )
        print(
            f"real model.fit epochs (augmentation on), tf.data autotuner {'on (before)' if autotune else 'off (now)'}"
            f": {', '.join(f'{b - a:.1f} s' for a, b in zip(times[::2], times[1::2]))}  ({load()})",
            flush=True,
        )


def epoch_timer(times: list[float]) -> keras.callbacks.Callback:
    """A callback appending the clock at each epoch's start and end to `times`."""
    return keras.callbacks.LambdaCallback(
        on_epoch_begin=lambda e, logs: times.append(time.perf_counter()),
        on_epoch_end=lambda e, logs: times.append(time.perf_counter()),
    )


def accuracy(data: Path, cfg) -> None:
    ft = cfg.finetune
    runs = {
        "params.yaml settings": ft,
        "augmentation off (cached)": FinetuneConfig(
            **{**ft.model_dump(), "augment": {"flip": False, "rotation": 0, "zoom": 0, "color": 0.0}}
        ),
    }
    print("\ntrain_finetune() to the end:")
    with tempfile.TemporaryDirectory(prefix="bench-finetune-") as tmp:
        for i, (name, run_cfg) in enumerate(runs.items()):
            start = time.perf_counter()
            s = train_finetune(
                data / "prepared" / "manifest.csv",
                data / "models/dense/model.keras",
                Path(tmp) / str(i),
                cfg.backbone,
                run_cfg,
            )
            seconds = time.perf_counter() - start
            print(
                f"   {name:28s} {seconds:6.1f} s ({s['epochs_run']} epochs, {seconds / s['epochs_run']:.1f} "
                f"s/epoch), best epoch {s['best_epoch']}: val_accuracy {s['val_accuracy']:.4f}, val_loss "
                f"{s['val_loss']:.4f}  ({load()})",
                flush=True,
            )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--params", type=Path, default=REPO / "params.yaml")
    ap.add_argument("--data", type=Path, help="data/<name> folder (default: this repo's, read only)")
    ap.add_argument("--accuracy", action="store_true", help="also fine-tune to the end, two ways (minutes)")
    args = ap.parse_args()
    cfg = load_config(args.params)
    data = args.data or REPO / "data" / cfg.data.name
    print(machine(), flush=True)
    rows = read_manifest(data / "prepared" / "manifest.csv")
    train = split_rows(rows, "train")
    classes = sorted({r.label for r in rows})
    labels = np.array([classes.index(r.label) for r in train], dtype=np.float32)
    profile(data, cfg, len(train), len(split_rows(rows, "validation")), [r.path for r in train], labels, len(classes))
    real_epochs(data, cfg, len(classes))
    if args.accuracy:
        accuracy(data, cfg)


if __name__ == "__main__":
    main()
