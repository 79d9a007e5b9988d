"""Per-epoch metrics in MLflow while a head trains, when MLFLOW_TRACKING_URI is an http(s) server.

A Keras callback hands each epoch's metrics to a background thread that posts them over MLflow's REST API with
short timeouts, so training never waits on the server: after the first failure the thread logs one warning and
sends no more epochs, only the run's heartbeat (owner.py) and its end. Once its run exists, the thread ends the runs
that processes which died left RUNNING (owner.reap). The run's id goes into the training stage's execution record; the
track stage then adopts the run as the head's child run (or marks it orphaned), and logs everything else. Only the
standard library and Keras are imported (and the lineage and owner helpers, stdlib only): a training stage does
not load MLflow.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import queue
import threading
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import keras

from pipeline.files import log
from pipeline.links import is_server
from pipeline.tracking.lineage import run_name, workspace_tags
from pipeline.tracking.owner import (
    FAILED,
    HEARTBEAT_S,
    HEARTBEAT_TAG,
    STATE_TAG,
    TRAINED,
    TRAINING,
    Run,
    claim,
    now_ms,
    reap,
)

RUN_ID_KEY = "mlflow_live_run_id"  # in the training stage's execution record
STAGE_TAG = "pipeline.live.stage"  # the training stage that logged the run (its state: owner.STATE_TAG)
TIMEOUT_S = 2.0  # per request: a hung server costs the logging thread this once, never the training loop
FINISH_WAIT_S = 5.0  # at the stage's end, for the last epochs to go out (track fills in whatever did not)


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

    def call(
        self, endpoint: str, body: dict | None = None, query: dict | None = None, method: str = ""
    ) -> dict[str, Any]:
        url = self.base + endpoint + ("?" + urllib.parse.urlencode(query) if query else "")
        data = None if body is None else json.dumps(body).encode()
        method = method or ("GET" if data is None else "POST")
        request = urllib.request.Request(url, data=data, headers=self.headers, method=method)
        with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response:
            answer = json.loads(response.read() or b"{}")
        if isinstance(answer, dict):  # every endpoint we call answers an object
            return answer
        raise ValueError(f"{url} answered a JSON {type(answer).__name__}, not an object")


class LiveRun:
    """One MLflow run per training stage, created and fed by a daemon thread; `callback()` for each model.fit."""

    def __init__(self, uri: str, experiment: str, name: str, stage: str):
        self.uri, self.run_id, self._stopped = uri, None, False
        self._rest = _Rest(uri)
        self._queue: queue.Queue[list | tuple[str, str]] = queue.Queue()  # epochs' metrics, then (state, status)
        self._thread = threading.Thread(
            target=self._work, args=(experiment, name, stage, now_ms()), daemon=True, name="mlflow-live"
        )
        self._thread.start()

    def callback(self, prefix: str = "") -> keras.callbacks.Callback:
        """A callback putting each epoch's logs in the queue as `<prefix><key>` at step = epoch (1, 2, ..., as in
        history.csv); each member of an ensemble gets its own prefix."""
        return _EpochLogger(self._queue, prefix)

    def finish(self, failed: bool = False) -> str | None:
        """End the run once the queue is sent (FINISHED, tag `trained`; FAILED, tag `failed` when training
        raised), waiting at most FINISH_WAIT_S; its id, or None when it was never created."""
        self._queue.put((FAILED, "FAILED") if failed else (TRAINED, "FINISHED"))
        self._thread.join(FINISH_WAIT_S)
        return self.run_id

    def _work(self, experiment: str, name: str, stage: str, started: int) -> None:
        try:
            experiment_id = self._experiment_id(experiment)
            tags = _tags({STATE_TAG: TRAINING, STAGE_TAG: stage, **claim()})
            created = {"experiment_id": experiment_id, "run_name": name, "start_time": started}
            self.run_id = self._rest.call("runs/create", {**created, "tags": tags})["run"]["info"]["run_id"]
        except (OSError, ValueError, KeyError) as err:  # refused, timeout, HTTP error, not MLflow's JSON
            self._stop(err)
            return
        self._reap(experiment_id)
        while not isinstance(item := self._next(), tuple):  # an epoch's metrics, or None: a heartbeat is due
            if item is None or not self._stopped:  # after a failure only heartbeats: the run's stage still runs
                beat = _tags({HEARTBEAT_TAG: str(now_ms())})
                self._post("runs/log-batch", {"run_id": self.run_id, "metrics": item or [], "tags": beat})
        state, status = item
        self._post("runs/set-tag", {"run_id": self.run_id, "key": STATE_TAG, "value": state})
        self._post("runs/update", {"run_id": self.run_id, "status": status, "end_time": now_ms()})

    def _next(self) -> list | tuple | None:
        try:
            return self._queue.get(timeout=HEARTBEAT_S)
        except queue.Empty:
            return None

    def _post(self, endpoint: str, body: dict) -> None:
        try:
            self._rest.call(endpoint, body)
        except (OSError, ValueError, KeyError) as err:
            self._stop(err)

    def _stop(self, err: Exception) -> None:
        if not self._stopped:
            log.warning("live MLflow logging to %s stopped (%s); training goes on, track logs it all", self.uri, err)
        self._stopped = True

    def _reap(self, experiment_id: str) -> None:
        """End the runs that processes which died left RUNNING (a killed stage's live run, a killed track's)."""
        try:
            if ended := reap(RestStore(self._rest), experiment_id):
                log.warning("ended %d run(s) of processes that died FAILED: %s", len(ended), ", ".join(ended))
        except (OSError, ValueError, KeyError) as err:
            log.warning("could not end the runs of processes that died in %s (%s)", self.uri, err)

    def _experiment_id(self, name: str) -> str:
        try:
            found = self._rest.call("experiments/get-by-name", query={"experiment_name": name})
            return str(found["experiment"]["experiment_id"])
        except urllib.error.HTTPError as err:
            if err.code != 404:
                raise
        return str(self._rest.call("experiments/create", {"name": name})["experiment_id"])


def _tags(tags: dict[str, str]) -> list[dict[str, str]]:
    return [{"key": key, "value": value} for key, value in tags.items()]


class RestStore:
    """owner.reap's calls over MLflow's REST API: a training stage does not load MLflow."""

    def __init__(self, rest: _Rest):
        self.rest = rest

    def runs(self, experiment_id: str, query: str) -> list[Run]:
        found, body = [], {"experiment_ids": [experiment_id], "filter": query, "max_results": 1000}
        while True:
            page = self.rest.call("runs/search", body)
            for run in page.get("runs", []):
                tags = {tag["key"]: tag["value"] for tag in run.get("data", {}).get("tags", [])}
                found.append(Run(run["info"]["run_id"], tags))
            if not page.get("next_page_token"):
                return found
            body["page_token"] = page["next_page_token"]

    def versions(self, run_id: str) -> list[tuple[str, str]]:
        page = self.rest.call("model-versions/search", query={"filter": f"run_id = '{run_id}'"})
        return [(version["name"], version["version"]) for version in page.get("model_versions", [])]

    def delete_version(self, name: str, version: str) -> None:
        self.rest.call("model-versions/delete", {"name": name, "version": version}, method="DELETE")

    def set_tag(self, run_id: str, key: str, value: str) -> None:
        self.rest.call("runs/set-tag", {"run_id": run_id, "key": key, "value": value})

    def fail(self, run_id: str) -> None:
        self.rest.call("runs/update", {"run_id": run_id, "status": "FAILED", "end_time": now_ms()})


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
    live = live_run(experiment, run_name(workspace_tags(Path.cwd()), head), stage)
    try:
        yield live
    except BaseException:  # a crash or Ctrl-C: the run shows FAILED in MLflow, not RUNNING for ever
        if live:
            live.finish(failed=True)
        raise
    if live and live.finish():
        facts[RUN_ID_KEY] = live.run_id
