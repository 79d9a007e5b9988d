"""Wall time of a fanned-out 4-setting dense-head sweep (flows/fanout_sweep.py) with 1 worker vs 2 workers on
one process pool, on this machine. Each trial runs in its own clone with the features pulled from a DVC remote
(as tests/integration/test_workers.py sets it up), so the trials share nothing but the CPU: expect the speed-up
to be capped by the core count, and by each trial's fixed costs (clone, Python/TensorFlow start, dvc push).

Data: the tests' tiny synthetic dataset (2 classes x 20 images, 32 px backbone) by default, so the trial's
fixed costs dominate; --epochs raises dense.epochs to make the training itself weigh more.

Usage: python benchmarks/sweep_workers.py [--epochs 6]   (about 5 minutes on 2 cores)
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from common import SHARED, load, machine

from tests.helpers.images import make_dataset, zip_dir
from tests.helpers.params import tiny_params
from tests.helpers.prefect_server import deploy_scale_out, prefect_server, run_fanout, scale_out_origin, workers
from tests.helpers.processes import stop
from tests.helpers.servers import start_mlflow_server

GRID = ["dense.learning_rate=0.05,0.01,0.002,0.0005"]  # 4 settings


def sweep_seconds(env: dict, root: Path, folder: Path, count: int) -> tuple[float, list[dict]]:
    with workers(env, "checkout-process", count, folder) as logs:
        time.sleep(3)  # the workers register and poll (every second) before the sweep submits its trials
        start_s = time.perf_counter()
        rows = run_fanout(env, root, GRID, logs)
        return time.perf_counter() - start_s, rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--epochs", type=int, default=6, help="dense.epochs of every trial")
    args = ap.parse_args()
    print(machine())
    with tempfile.TemporaryDirectory(prefix="sweep-workers-") as scratch:
        tmp = Path(scratch)
        if not Path(os.environ["KERAS_HOME"], "models").is_dir():  # what `make` copies there, else a scratch copy
            shutil.copytree(SHARED / "keras_home" / "models", tmp / "keras_home" / "models")
            os.environ["KERAS_HOME"] = str(tmp / "keras_home")
        archive = zip_dir(make_dataset(tmp / "src" / "bench"), tmp / "bench.zip")
        params = tiny_params({"data": {"name": "bench", "url": str(archive)}, "dense": {"epochs": args.epochs}})
        root, bare, _ = scale_out_origin(tmp, params)
        (tmp / "mlflow").mkdir()
        mlflow, uri = start_mlflow_server(tmp / "mlflow")
        try:
            with prefect_server(tmp / "prefect_home") as env:
                env = deploy_scale_out({**env, "MLFLOW_TRACKING_URI": uri}, root, bare)
                results = {}
                for count in (1, 2):
                    (tmp / f"w{count}").mkdir()
                    print(f"{count} worker(s): 4-setting sweep ... ({load()})", flush=True)
                    results[count], rows = sweep_seconds(env, root, tmp / f"w{count}", count)
                    trial = sorted(r["metrics"].get("seconds.train_dense", 0) for r in rows)
                    print(f"  wall {results[count]:.1f} s; train_dense per trial {trial} s; {load()}", flush=True)
        finally:
            stop(mlflow, timeout=15)
    print(f"4 settings: 1 worker {results[1]:.1f} s, 2 workers {results[2]:.1f} s, ratio {results[1] / results[2]:.2f}")


if __name__ == "__main__":
    sys.exit(main())
