"""Memory of decoding large images: prepare's check of one file, and the served model under hostile requests.

  decode: peak RSS growth of `check_image` on one file, each in a fresh process (a prepare worker's cost);
  serve:  a real `mlflow models serve` of a MobileNet fine-tune-shaped model (ImageNet weights, untrained head):
          the process tree's RSS sampled every 20 ms while it gets 3 concurrent requests of an 18000x18000 PNG,
          3 concurrent requests of a PNG at the pixel bound, 64 rows of 4096x4096 PNGs (TensorFlow's parallel
          decoding), one request of --rows small JPEG rows, then a good one.

Usage: python benchmarks/bounds.py [--only decode|serve] [--rows 5000]   (about 3-5 minutes on 2 cores)
"""

from __future__ import annotations

import argparse
import base64
import json
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from common import REPO, machine, real_images

import psutil
from PIL import Image

from pipeline.cli import output
from pipeline.files import claim_folder, folder_of
from tests.helpers.faults import huge_jpeg, large_png
from tests.helpers.processes import env, start, stop
from tests.helpers.servers import free_port, wait_healthy

CACHE = folder_of("benchmarks/bounds.py")  # --dir: new, empty, or one this benchmark made (it writes into it)
DECODE = (  # a fresh interpreter; VmHWM, not ru_maxrss: Linux carries ru_maxrss over from the parent across exec
    "import re, sys; from pathlib import Path; from pipeline.data.images import check_image\n"
    "peak = lambda: int(re.search(r'VmHWM:\\s+(\\d+)', Path('/proc/self/status').read_text())[1]) / 1024\n"
    "before = peak(); r = check_image(Path(sys.argv[1]), Path(sys.argv[2]))\n"
    "print(f'{peak() - before:.0f} MB', r.reason or f'used ({r.width}x{r.height})')"
)


def files(tmp: Path) -> dict[str, Path]:
    """The large images, made once: PNGs of one colour (cheap to write), JPEGs of two halves."""
    made = {
        "PNG 19999x19999 (400 MP)": lambda p: large_png(p, 19999, 19999),
        "PNG 18000x18000 (324 MP)": lambda p: large_png(p, 18000, 18000),
        "PNG 8000x8000 (64 MP)": lambda p: large_png(p, 8000, 8000),
        "PNG 8064x6048 (48.8 MP)": lambda p: large_png(p, 8064, 6048),
        "PNG 4096x4096 (kept as is: TF import counts)": lambda p: large_png(p, 4096, 4096),
        "JPEG 8064x6048 (48.8 MP phone photo)": lambda p: huge_jpeg(p, (8064, 6048)),
        "JPEG 12000x9000 (108 MP)": lambda p: huge_jpeg(p, (12000, 9000)),
        "JPEG 16320x12240 (200 MP)": lambda p: huge_jpeg(p, (16320, 12240)),
    }
    out = {}
    for name, make in made.items():
        path = tmp / f"{name.split(' (')[0].replace(' ', '_')}.{name[:4].strip().lower()}"  # e.g. PNG_8000x8000.png
        if not path.exists():
            make(path)
        out[name] = path
    return out


def decode(tmp: Path) -> None:
    print("## check_image (a prepare worker, one file): peak RSS growth, outcome")
    for name, path in files(tmp).items():
        run = subprocess.run(
            [sys.executable, "-c", DECODE, str(path), str(tmp / "out.png")], env=env(), capture_output=True, text=True
        )
        print(f"{name:45s} {(run.stdout.strip() or run.stderr.strip()[-300:])[:200]}")


def served_model(tmp: Path) -> str:
    """A MobileNet fine-tune-shaped model (params.yaml's backbone) logged as the served image model; its URI."""
    import mlflow

    from pipeline.config import load_config
    from pipeline.contracts import TrainingSummary
    from pipeline.layout import MODEL_FILE, SUMMARY_FILE
    from pipeline.model.backbone import conv_base
    from pipeline.model.heads import build_dense_head, build_finetune_model
    from pipeline.tracking.served import log_pyfunc_model

    cfg = load_config(REPO / "params.yaml")
    head = build_dense_head(tuple(conv_base(cfg.backbone).output.shape[1:]), 2, cfg.dense)
    model_dir = tmp / "model"
    model_dir.mkdir(exist_ok=True)
    build_finetune_model(head, cfg.backbone, cfg.finetune).save(model_dir / MODEL_FILE)
    # the served model reads its classes from summary.json; the training numbers are placeholders
    summary = TrainingSummary(
        classes=["cats", "dogs"], epochs_run=1, best_epoch=1, val_loss=0.5, val_accuracy=0.5, class_weight=None
    )
    summary.save(model_dir / SUMMARY_FILE)
    mlflow.set_tracking_uri(f"sqlite:///{tmp / 'mlflow.db'}")
    with mlflow.start_run():
        return log_pyfunc_model(model_dir, cfg.evaluate.tta_flip, real_images(tmp, 1)[0]).model_uri


class Sampler(threading.Thread):
    """Peak of the summed RSS of a process and its children, sampled every 20 ms."""

    def __init__(self, pid: int):
        super().__init__(daemon=True)
        self.root, self.peak, self.running = psutil.Process(pid), 0, True

    def rss(self) -> int:
        try:
            return sum(p.memory_info().rss for p in [self.root, *self.root.children(recursive=True)])
        except psutil.Error:  # a process ended between the listing and the reading: the next sample counts
            return self.peak

    def run(self) -> None:
        while self.running:
            self.peak = max(self.peak, self.rss())
            time.sleep(0.02)

    def reset(self) -> int:
        self.peak = now = self.rss()
        return now


def post(url: str, rows: list[bytes]) -> tuple[int, str, float]:
    data = [[base64.b64encode(r).decode()] for r in rows]
    body = json.dumps({"dataframe_split": {"columns": ["image"], "data": data}}).encode()
    request = urllib.request.Request(f"{url}/invocations", body, {"Content-Type": "application/json"})
    start_s = time.monotonic()
    try:
        with urllib.request.urlopen(request, timeout=300) as response:
            status, text = response.status, response.read().decode()
    except urllib.error.HTTPError as err:
        status, text = err.code, err.read().decode()
    return status, text, time.monotonic() - start_s


def phase(url: str, sampler: Sampler, name: str, requests: list[list[bytes]]) -> None:
    before = sampler.reset() / 2**20
    with ThreadPoolExecutor(len(requests)) as pool:
        answers = list(pool.map(lambda rows: post(url, rows), requests))
    print(f"{name}: RSS {before:.0f} MB before, peak {sampler.peak / 2**20:.0f} MB")
    for status, text, seconds in answers:
        message = json.loads(text).get("message", text) if text.startswith("{") else text
        print(f"    HTTP {status} in {seconds:.1f} s: {message.splitlines()[-1][:230]}")


def serve(tmp: Path, n_rows: int) -> None:
    big = files(tmp)
    jpeg = real_images(tmp, 1)[0].read_bytes()
    small = tmp / "small.jpg"
    Image.new("RGB", (64, 48), (90, 120, 150)).save(small, quality=90)
    port, log = free_port(), tmp / "serve.log"
    command = [sys.executable, "-m", "mlflow", "models", "serve", "-m", served_model(tmp)]
    command += ["--host", "127.0.0.1", "--port", str(port), "--env-manager", "local"]
    proc = start(command, tmp, log, env(MLFLOW_TRACKING_URI=f"sqlite:///{tmp / 'mlflow.db'}"))
    try:
        url = f"http://127.0.0.1:{port}"
        wait_healthy(f"{url}/ping", proc, log, timeout=300)
        sampler = Sampler(proc.pid)
        sampler.start()
        phase(url, sampler, "1 good JPEG (warm-up)", [[jpeg]])
        phase(url, sampler, "3 concurrent x PNG 18000x18000", [[big["PNG 18000x18000 (324 MP)"].read_bytes()]] * 3)
        phase(url, sampler, "3 concurrent x PNG 8000x8000", [[big["PNG 8000x8000 (64 MP)"].read_bytes()]] * 3)
        kept = next(path for name, path in big.items() if name.startswith("PNG 4096"))
        phase(url, sampler, "64 rows x PNG 4096x4096", [[kept.read_bytes()] * 64])
        phase(url, sampler, f"{n_rows} rows of a 64x48 JPEG", [[small.read_bytes()] * n_rows])
        phase(url, sampler, "1 good JPEG (still up?)", [[jpeg]])
        sampler.running = False
    finally:
        stop(proc)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=["decode", "serve"])
    parser.add_argument("--rows", type=int, default=5000)
    parser.add_argument("--dir", type=output(CACHE), help="keep the images here between runs (default: a temp dir)")
    args = parser.parse_args()
    print(machine())
    with tempfile.TemporaryDirectory() as scratch:
        tmp = claim_folder(args.dir, CACHE) if args.dir else Path(scratch)
        if args.only != "serve":
            decode(tmp)
        if args.only != "decode":
            serve(tmp, args.rows)


if __name__ == "__main__":
    main()
