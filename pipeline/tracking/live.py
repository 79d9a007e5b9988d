"""Per-epoch metrics in MLflow while a head trains, when MLFLOW_TRACKING_URI is an http(s) server.

A Keras callback hands each epoch's metrics to a background thread that posts them over MLflow's REST API with
short timeouts, so training never waits on the server: after the first failure the thread stops trying and logs
one warning. The run's id goes into the training stage's execution record; the track stage then adopts the run
as the head's child run (or marks it orphaned), and logs everything else. Only the standard library and Keras
are imported (and the lineage helpers, stdlib only): a training stage does not load MLflow.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import queue
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import keras

from pipeline.files import log
from pipeline.links import is_server
from pipeline.tracking.lineage import run_name, workspace_tags

RUN_ID_KEY = "mlflow_live_run_id"  # in the training stage's execution record
STATE_TAG = "pipeline.live"  # training -> trained (stage done) -> adopted (a track made it a child) | orphaned,
STAGE_TAG = "pipeline.live.stage"  # or training -> failed (the stage raised: the run ends FAILED, never adopted)
TRAINING, TRAINED, ADOPTED, ORPHANED, FAILED = "training", "trained", "adopted", "orphaned", "failed"
TIMEOUT_S = 2.0  # per request: a hung server costs the logging thread this once, never the training loop
FINISH_WAIT_S = 5.0  # at the stage's end, for the last epochs to go out (track fills in whatever did not)


def now_ms() -> int:
    return time.time_ns() // 1_000_000


class _Rest:
    """MLflow's REST API (/api/2.0/mlflow/...) with one short timeout and no retries."""

    def __init__(self, uri: str):
        self.base = uri.rstrip("/") + "/api/2.0/mlflow/"
        self.headers = {"Content-Type": "application/json"}
        token, user = os.environ.get("MLFLOW_TRACKING_TOKEN"), os.environ.get("MLFLOW_TRACKING_USERNAME")
        if token:
            self.headers["Authorization"] = f"Bearer {token}"
        elif user:
            pair = f"{user}:{os.environ.get('MLFLOW_TRACKING_PASSWORD', '')}".encode()
            self.headers["Authorization"] = f"Basic {base64.b64encode(pair).decode()}"

    def call(self, endpoint: str, body: dict | None = None, query: dict | None = None) -> dict:
        url = self.base + endpoint + ("?" + urllib.parse.urlencode(query) if query else "")
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(url, data=data, headers=self.headers, method="GET" if data is None else "POST")
        with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response:
            return json.loads(response.read() or b"{}")


class LiveRun:
    """One MLflow run per training stage, created and fed by a daemon thread; `callback()` for each model.fit."""

    def __init__(self, uri: str, experiment: str, name: str, stage: str):
        self.uri, self.run_id = uri, None
        self._rest, self._queue = _Rest(uri), queue.Queue()
        self._thread = threading.Thread(
            target=self._work, args=(experiment, name, stage, now_ms()), daemon=True, name="mlflow-live"
        )
        self._thread.start()

    def callback(self, prefix: str = "") -> keras.callbacks.Callback:
        """A callback putting each epoch's logs in the queue as `<prefix><key>` at step = epoch (1, 2, ..., as in
        history.csv); an ensemble's later members get their own prefix."""
        return _EpochLogger(self._queue, prefix)

    def finish(self, failed: bool = False) -> str | None:
        """End the run once the queue is sent (FINISHED, tag `trained`; FAILED, tag `failed` when training
        raised), waiting at most FINISH_WAIT_S; its id, or None when it was never created."""
        self._queue.put((FAILED, "FAILED") if failed else (TRAINED, "FINISHED"))
        self._thread.join(FINISH_WAIT_S)
        return self.run_id

    def _work(self, experiment: str, name: str, stage: str, started: int) -> None:
        try:
            tags = [{"key": STATE_TAG, "value": TRAINING}, {"key": STAGE_TAG, "value": stage}]
            created = {"experiment_id": self._experiment_id(experiment), "run_name": name, "start_time": started}
            run = self._rest.call("runs/create", {**created, "tags": tags})
            self.run_id = run["run"]["info"]["run_id"]
            while isinstance(metrics := self._queue.get(), list):
                self._rest.call("runs/log-batch", {"run_id": self.run_id, "metrics": metrics})
            state, status = metrics
            self._rest.call("runs/set-tag", {"run_id": self.run_id, "key": STATE_TAG, "value": state})
            self._rest.call("runs/update", {"run_id": self.run_id, "status": status, "end_time": now_ms()})
        except (OSError, ValueError, KeyError) as err:  # refused, timeout, HTTP error, not MLflow's JSON
            log.warning("live MLflow logging to %s stopped (%s); training goes on, track logs it all", self.uri, err)

    def _experiment_id(self, name: str) -> str:
        try:
            return self._rest.call("experiments/get-by-name", query={"experiment_name": name})["experiment"][
                "experiment_id"
            ]
        except urllib.error.HTTPError as err:
            if err.code != 404:
                raise
        return self._rest.call("experiments/create", {"name": name})["experiment_id"]


class _EpochLogger(keras.callbacks.Callback):
    def __init__(self, out: queue.Queue, prefix: str):
        super().__init__()
        self._out, self._prefix = out, prefix

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        stamp = now_ms()
        self._out.put(
            [
                {"key": self._prefix + k, "value": float(v), "timestamp": stamp, "step": epoch + 1}
                for k, v in (logs or {}).items()
                if isinstance(v, (int, float)) or getattr(v, "shape", None) == ()
            ]
        )


def live_run(experiment: str, name: str, stage: str) -> LiveRun | None:
    """A LiveRun when MLFLOW_TRACKING_URI is an http(s) server; None for a local store (nothing would watch it
    live, and the track stage writes it anyway)."""
    uri = os.environ.get("MLFLOW_TRACKING_URI", "")
    return LiveRun(uri, experiment, name, stage) if is_server(uri) else None


@contextlib.contextmanager
def live_training(experiment: str, head: str, stage: str, facts: dict) -> Iterator[LiveRun | None]:
    """A training stage's live run (named as the track stage names the head's child run), inside its
    execution_record block: once training is done and its epochs are sent, the run id goes into `facts`."""
    live = live_run(experiment, run_name(head, workspace_tags(Path.cwd())), stage)
    try:
        yield live
    except BaseException:  # a crash or Ctrl-C: the run shows FAILED in MLflow, not RUNNING for ever
        if live:
            live.finish(failed=True)
        raise
    if live and live.finish():
        facts[RUN_ID_KEY] = live.run_id
