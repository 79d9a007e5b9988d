"""What a re-run costs once the pipeline has run: `dvc repro` in a temporary copy of the repo on the real data.

  1. cold run, stage by stage (`dvc repro --single-item S` in pipeline order), for reference;
  2. no-op `dvc repro` (3 times);
  3. dense.dropout changed: `dvc repro --single-item train_dense` with the images moved away, so the stage
     provably decodes none (it would fail if it opened one);
  4. then `dvc repro`: what else re-runs (train_finetune starts from the dense model, so it re-runs and reads
     images; evaluate and track follow);
  5. a head sweep: stages.train_dense.train_dense() on the cached features, once per setting, images moved away.

Usage: python benchmarks/reruns.py [--keep]   (about 15-25 minutes on 2 cores)
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from common import SHARED, load, machine

from flows.dvc_commands import stage_order
from flows.overrides import write_overrides
from pipeline.config import load_params
from pipeline.layout import stage_parts
from tests.helpers.project import copy_repo  # the tests' copy: tracked + untracked-not-ignored files

SWEEP = [{}, {"dropout": 0.3}, {"units": 128}, {"units": 512}, {"learning_rate": 1e-4}]


def dvc(project: Path, *args: str) -> tuple[float, set[str]]:
    """Seconds taken and the stages that ran (without their `@<dataset>`: the copy has one dataset)."""
    env = {
        **os.environ,
        "PIPELINE_DATA_MIRROR": str(SHARED / "mirror"),
        "TQDM_DISABLE": "1",
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
    }
    env.pop("MLFLOW_TRACKING_URI", None)  # the track stage logs into the copy's own mlflow.db
    start = time.perf_counter()
    proc = subprocess.run(["dvc", *args], cwd=project, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if proc.returncode:
        sys.exit(f"dvc {' '.join(args)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    ran = {line.split("'")[1] for line in proc.stdout.splitlines() if line.startswith("Running stage")}
    return seconds, {stage_parts(stage)[0] for stage in ran}


@contextlib.contextmanager
def images_moved_away(data: Path) -> Iterator[None]:
    """raw/ and prepared/ (every image the manifest names) renamed for the duration: nothing can decode them."""
    moved = [(data / name, data / f"{name}.away") for name in ("raw", "prepared")]
    for src, dst in moved:
        src.rename(dst)
    try:
        yield
    finally:
        for src, dst in moved:
            dst.rename(src)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--keep", action="store_true", help="keep the temporary project (its path is printed)")
    args = ap.parse_args()
    print(machine(), flush=True)
    tmp = Path(tempfile.mkdtemp(prefix="bench-reruns-"))
    project = copy_repo(tmp / "project")
    subprocess.run(["git", "init", "-q"], cwd=project, check=True)  # DVC's project is a git repo (as test_e2e's)
    params_file = project / "params.yaml"
    params = load_params(params_file)  # as DVC reads it
    data = project / "data" / params["data"]["name"]
    stages = [stage_parts(s)[0] for s in stage_order(project)]  # dvc.yaml's own order (the copy has one dataset)
    print(f"project copy: {project}")

    print("\n1. cold run, stage by stage:")
    total = 0.0
    for stage in stages:
        seconds, _ = dvc(project, "repro", "--single-item", stage)
        total += seconds
        print(f"   {stage:15s} {seconds:7.1f} s   ({load()})", flush=True)
    print(f"   {'all':15s} {total:7.1f} s")

    print("\n2. no-op `dvc repro`:")
    for _ in range(3):
        seconds, ran = dvc(project, "repro")
        print(f"   {seconds:5.2f} s, stages run: {sorted(ran) or 'none'}", flush=True)

    features = data / "features" / "train.npy"
    stamp = features.stat().st_mtime_ns
    write_overrides(params_file, {"dense.dropout": 0.4})  # as `dvc exp run -S` writes it
    print("\n3. dense.dropout 0.5 -> 0.4, `dvc repro --single-item train_dense` with the images moved away:")
    with images_moved_away(data):
        seconds, ran = dvc(project, "repro", "--single-item", "train_dense")
    print(f"   {seconds:.1f} s, stages run: {sorted(ran)}; 0 images decoded (none were there)", flush=True)

    print("\n4. then `dvc repro` (images back):")
    seconds, ran = dvc(project, "repro")
    print(
        f"   {seconds:.1f} s, stages run: {[s for s in stages if s in ran]}; "
        f"features untouched: {features.stat().st_mtime_ns == stamp}",
        flush=True,
    )

    print("\n5. head sweep, train_dense() on the cached features, images moved away:")
    from pipeline.config import DenseConfig
    from pipeline.stages.train_dense import train_dense

    with images_moved_away(data):
        for i, change in enumerate(SWEEP):
            cfg = DenseConfig(**{**params["dense"], "dropout": 0.5, **change})
            start = time.perf_counter()
            summary = train_dense(data / "features", tmp / f"sweep{i}", cfg)
            seconds = time.perf_counter() - start
            print(
                f"   {str(change or 'defaults'):28s} {seconds:6.1f} s ({summary['epochs_run']} epochs, "
                f"{seconds / summary['epochs_run']:.1f} s/epoch), val_accuracy {summary['val_accuracy']:.3f}; "
                f"{load()}",
                flush=True,
            )
    if args.keep:
        print(f"kept {tmp}")
    else:
        shutil.rmtree(tmp)


if __name__ == "__main__":
    main()
