"""Feature extraction speed, three ways on the same real JPEGs in one run:

  (a) classic: keras.utils.image_dataset_from_directory (batch 20) and conv_base.predict per batch;
  (b) ceiling: the compiled conv base alone on images already decoded into memory;
  (c) pipeline.stages.extract.extract() (all images in one split; its streaming loop's img/s, and whole-call img/s).

For reference: the input pipeline alone (decode + resize, no model; also with dct_method INTEGER_FAST), (b) at
other batch sizes (--batch-sweep) and under Keras's mixed_bfloat16 policy (not used by the pipeline).
Methods alternate within each repeat (a b c a b c ...) so that load changes hit them alike; best of the repeats
is reported. Usage: python benchmarks/extraction.py [--images 1000] [--repeats 2] [--batch-sweep 16 64]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from common import load, machine, real_images, write_manifest

import keras  # noqa: E402  (after common: environment first)
import tensorflow as tf  # noqa: E402

from pipeline.config import BackboneConfig, ExtractConfig, load_config  # noqa: E402
from pipeline.model.backbone import conv_base, preprocess  # noqa: E402
from pipeline.model.inputs import image_dataset  # noqa: E402
from pipeline.stages.extract import extract  # noqa: E402


def classic(base: keras.Model, folder: Path, size: int, batch: int) -> float:
    """The textbook loop: a Keras directory dataset, then predict() batch by batch."""
    start = time.perf_counter()
    ds = keras.utils.image_dataset_from_directory(
        folder, image_size=(size, size), batch_size=batch, shuffle=False, verbose=False
    )
    n = 0
    for images, _ in ds:
        n += len(base.predict(preprocess(images), verbose=0))
    return n / (time.perf_counter() - start)


def ceiling(base: keras.Model, batches: list[tf.Tensor]) -> float:
    """Compute only: the tf.function conv base on in-memory float batches (after one warm-up batch)."""
    run = tf.function(lambda x: base(preprocess(x), training=False), reduce_retracing=True)
    run(batches[0]).numpy()
    start = time.perf_counter()
    for b in batches:
        run(b).numpy()
    return sum(len(b) for b in batches) / (time.perf_counter() - start)


def decode_only(paths: list[str], size: int, batch: int, dct_method: str) -> float:
    """The input pipeline without the model (parallel decode + resize on all cores), for its share of the work."""

    def load(path: tf.Tensor) -> tf.Tensor:
        image = tf.io.decode_jpeg(tf.io.read_file(path), channels=3, dct_method=dct_method)
        return tf.image.resize(image, (size, size))

    ds = tf.data.Dataset.from_tensor_slices(paths).map(load, num_parallel_calls=tf.data.AUTOTUNE).batch(batch)
    start = time.perf_counter()
    n = sum(len(b) for b in ds.prefetch(tf.data.AUTOTUNE))
    return n / (time.perf_counter() - start)


def bf16_ceiling(backbone: BackboneConfig, batches: list[tf.Tensor]) -> float:
    """(b) with the conv base built under Keras's mixed_bfloat16 policy: not what the pipeline does (it changes
    the features), measured to size the option."""
    keras.config.set_dtype_policy("mixed_bfloat16")
    try:
        base = conv_base(backbone)
    finally:
        keras.config.set_dtype_policy("float32")
    return ceiling(base, batches)


def pipeline_extract(
    manifest: Path, out: Path, backbone: BackboneConfig, cfg: ExtractConfig, n: int
) -> tuple[float, float]:
    """(img/s of extract's streaming loop as it records in its execution record, img/s of the whole call)."""
    start = time.perf_counter()
    speed = extract(manifest, out, backbone, cfg)
    total = n / (time.perf_counter() - start)
    return speed["train"], total


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=1000)
    ap.add_argument("--size", type=int, default=224, help="image_size (the project's default)")
    ap.add_argument("--batch", type=int, default=32, help="extract.batch_size for (b) and (c)")
    ap.add_argument("--classic-batch", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--batch-sweep", type=int, nargs="*", default=[], help="also (b) at these batch sizes")
    args = ap.parse_args()
    print(machine(), flush=True)
    with tempfile.TemporaryDirectory(prefix="bench-extract-") as tmp:
        tmp = Path(tmp)
        images = real_images(tmp, args.images)
        folder = tmp / "classic"  # image_dataset_from_directory wants class folders: link the same files
        for i, p in enumerate(images):
            (folder / p.parent.name).mkdir(parents=True, exist_ok=True)
            (folder / p.parent.name / f"{i:05d}.jpg").symlink_to(p)
        manifest = write_manifest(images, tmp / "prepared" / "manifest.csv")
        params = load_config()
        backbone = params.backbone.model_copy(update={"image_size": args.size})
        cfg = params.extract.model_copy(update={"batch_size": args.batch})
        base = conv_base(backbone)
        decoded = list(image_dataset([str(p) for p in images], None, args.size, args.batch))
        paths = [str(p) for p in images]
        best = dict.fromkeys(["a", "b", "c", "c_call", "decode", "decode_fast"], 0.0)
        for r in range(args.repeats):
            a = classic(base, folder, args.size, args.classic_batch)
            b = ceiling(base, decoded)
            c, c_call = pipeline_extract(manifest, tmp / f"features{r}", backbone, cfg, args.images)
            dec, fast = (decode_only(paths, args.size, args.batch, m) for m in ("INTEGER_ACCURATE", "INTEGER_FAST"))
            print(
                f"repeat {r + 1}: a {a:.1f}  b {b:.1f}  c {c:.1f}  (c whole call {c_call:.1f})  decode only "
                f"{dec:.0f} (INTEGER_FAST {fast:.0f}) img/s; {load()}",
                flush=True,
            )
            best = {k: max(best[k], v) for k, v in zip(best, (a, b, c, c_call, dec, fast))}
        for bs in args.batch_sweep:
            rebatched = list(tf.data.Dataset.from_tensor_slices(tf.concat(decoded, 0)).batch(bs))
            speed = max(ceiling(base, rebatched) for _ in range(args.repeats))
            print(f"(b) at batch {bs}: {speed:.1f} img/s; {load()}", flush=True)
        # last: once a bfloat16 model has run, float32 extraction in the same process ran ~1/3 slower here
        best["b_bf16"] = max(bf16_ceiling(backbone, decoded) for _ in range(args.repeats))
    print(f"\n{args.images} real JPEGs at {args.size} px, best of {args.repeats}:")
    print(
        f"  (a) classic loop (dataset_from_directory, batch {args.classic_batch}, predict per batch): "
        f"{best['a']:7.1f} img/s"
    )
    print(f"  (b) conv base alone, in-memory tensors (ceiling), batch {args.batch}:  {best['b']:7.1f} img/s")
    print(
        f"  (c) pipeline.stages.extract.extract(), batch {args.batch}:                        {best['c']:7.1f} img/s "
        f"(whole call incl. model load: {best['c_call']:.1f})"
    )
    print(f"  c/a = {best['c'] / best['a']:.2f}   c/b = {best['c'] / best['b']:.2f}   ({load()})")
    print(
        f"  for reference: input pipeline alone (decode + resize, no model) {best['decode']:.0f} img/s, "
        f"{best['decode_fast']:.0f} with dct_method INTEGER_FAST; (b) under mixed_bfloat16 "
        f"{best['b_bf16']:.1f} img/s"
    )


if __name__ == "__main__":
    main()
