"""Does extraction scale? Time per image and peak memory of pipeline.stages.extract.extract() for growing image counts,
each size in a fresh process (real cats-vs-dogs JPEGs, repeated past the archive's 3,000).

Memory: RSS sampled every 20 ms while extract() runs (peak), next to the RSS before it and the process's
high-water mark (ru_maxrss). Usage: python benchmarks/scaling.py [--sizes 500 1000 2000 4000 8000]
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from common import load, machine, real_images, write_manifest


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS"):
            return int(line.split()[1]) / 1024
    return 0.0


def child(manifest: Path, out: Path, size: int, batch: int) -> None:
    """Runs in its own process: extract once, print the figures as JSON."""
    from pipeline.config import load_config
    from pipeline.stages.extract import extract

    before, peak, running = rss_mb(), [0.0], [True]

    def sample() -> None:
        while running[0]:
            peak[0] = max(peak[0], rss_mb())
            time.sleep(0.02)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    start = time.perf_counter()
    params = load_config()
    speed = extract(
        manifest,
        out,
        params.backbone.model_copy(update={"image_size": size}),
        params.extract.model_copy(update={"batch_size": batch}),
    )
    seconds = time.perf_counter() - start
    running[0] = False
    sampler.join()
    print(
        json.dumps(
            {
                "seconds": seconds,
                "img_s": speed["train"],
                "rss_before_mb": before,
                "rss_peak_mb": peak[0],
                "maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            }
        )
    )


def writers(n: int, shape: tuple[int, ...] = (7, 7, 1024)) -> str:
    """Why extract appends to a plain file: a memmap's written pages count in RSS, so it grows with n."""
    import numpy as np

    chunk = np.ones((32, *shape), np.float16)
    grown = {}
    with tempfile.TemporaryDirectory(prefix="bench-writers-") as tmp:
        for kind in ("memmap", "appending writes"):
            before = rss_mb()
            if kind == "memmap":
                out = np.lib.format.open_memmap(Path(tmp) / "m.npy", mode="w+", dtype=np.float16, shape=(n, *shape))
                for i in range(0, n, 32):
                    out[i : i + 32] = chunk[: n - i]
                out.flush()
            else:
                with open(Path(tmp) / "f.npy", "wb") as f:
                    for i in range(0, n, 32):
                        f.write(chunk[: n - i].tobytes())
            grown[kind] = rss_mb() - before
            out = None
    return ", ".join(f"{k} +{v:.0f} MB" for k, v in grown.items())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[500, 1000, 2000, 4000, 8000])
    ap.add_argument("--size", type=int, default=224, help="image_size")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--child", nargs=2, type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return child(*args.child, args.size, args.batch)
    print(machine(), flush=True)
    begin = time.perf_counter()
    print(
        f"{'images':>7} {'seconds':>8} {'ms/img':>7} {'img/s':>6} {'RSS before':>10} {'RSS peak':>9} "
        f"{'peak - before':>13} {'ru_maxrss':>9}  load"
    )
    with tempfile.TemporaryDirectory(prefix="bench-scaling-") as tmp:
        tmp = Path(tmp)
        for n in args.sizes:
            manifest = write_manifest(real_images(tmp, n), tmp / f"m{n}" / "manifest.csv")
            out = tmp / f"features{n}"
            proc = subprocess.run(
                [
                    sys.executable,
                    __file__,
                    "--child",
                    str(manifest),
                    str(out),
                    "--size",
                    str(args.size),
                    "--batch",
                    str(args.batch),
                ],
                capture_output=True,
                text=True,
            )
            if proc.returncode:
                sys.exit(f"size {n} failed:\n{proc.stderr[-3000:]}")
            r = json.loads(proc.stdout.strip().splitlines()[-1])
            grown = r["rss_peak_mb"] - r["rss_before_mb"]
            print(
                f"{n:7d} {r['seconds']:8.1f} {1000 * r['seconds'] / n:7.2f} {r['img_s']:6.1f} "
                f"{r['rss_before_mb']:8.0f}MB {r['rss_peak_mb']:7.0f}MB {grown:11.0f}MB {r['maxrss_mb']:7.0f}MB  "
                f"{load()}",
                flush=True,
            )
            shutil.rmtree(out)
    n = max(args.sizes)
    print(f"RSS growth writing {n} feature rows (7x7x1024 float16) in batches of 32: {writers(n)}")
    print(f"total runtime {time.perf_counter() - begin:.0f} s")


if __name__ == "__main__":
    main()
