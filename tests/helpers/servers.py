"""Servers on loopback: free ports, waiting for health, an MLflow server, and file servers that misbehave."""

from __future__ import annotations

import functools
import http.server
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

from tests.helpers.processes import start


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_healthy(url: str, proc: subprocess.Popen, log: Path, timeout: float = 90) -> None:
    """Poll `url` until it answers; fail with the server's log if it exits or stays silent."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            time.sleep(0.3)
    raise RuntimeError(f"{url} not healthy after {timeout} s:\n{log.read_text()[-3000:]}")


def start_mlflow_server(
    root: Path, backend_uri: str | None = None, artifacts: Path | None = None
) -> tuple[subprocess.Popen, str]:
    """`mlflow server` with proxied artifacts, healthy; (process, URL). The store is `backend_uri` (e.g. PostgreSQL),
    else sqlite under `root`; artifacts go to `artifacts`, else root/artifacts; its log is root/server.log.

    One worker and no job runner: 2 processes and ~7 s to start instead of 13 and ~18 s."""
    port = free_port()
    cmd = [
        sys.executable,
        "-m",
        "mlflow",
        "server",
        "--backend-store-uri",
        backend_uri or f"sqlite:///{root / 'mlflow.db'}",
        "--artifacts-destination",
        str(artifacts or root / "artifacts"),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "1",
    ]
    log = root / "server.log"
    proc = start(cmd, root, log, {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"})
    url = f"http://127.0.0.1:{port}"
    wait_healthy(f"{url}/health", proc, log)
    return proc, url


class _Faulty(http.server.SimpleHTTPRequestHandler):
    """Serves files; `mode` "truncate" announces the full length and sends half, "drop" closes at once."""

    mode = "ok"

    def log_message(self, *args) -> None:  # keep test output clean
        pass

    def do_GET(self) -> None:
        if self.mode == "ok":
            return super().do_GET()
        if self.mode == "drop":
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        data = Path(self.translate_path(self.path)).read_bytes()
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data[: len(data) // 2])
        self.close_connection = True


def serve(directory: Path, mode: str = "ok") -> http.server.ThreadingHTTPServer:
    """An HTTP server for `directory` on a free loopback port, in a thread; call .shutdown() when done."""
    handler = functools.partial(type("Handler", (_Faulty,), {"mode": mode}), directory=str(directory))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def silent_listener() -> socket.socket:
    """Accepts connections (via the kernel backlog) and never answers: a hung server."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(8)
    return sock
