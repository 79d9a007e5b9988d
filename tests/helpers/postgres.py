"""A real PostgreSQL server on loopback, from the binaries the pinned `pgserver` wheel ships (no system install):
initdb into a fresh folder, TCP on 127.0.0.1:<free port>, trust auth, fast shutdown at the end. As root (CI) the
server runs as `nobody`, since PostgreSQL refuses root."""

from __future__ import annotations

import importlib.util
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psycopg

from tests.helpers.processes import stop
from tests.helpers.servers import free_port

# Found without importing pgserver: its import sets up lock files and atexit hooks these tests don't use.
SITE = Path(importlib.util.find_spec("pgserver").origin).parents[1]  # the wheel's site-packages
INSTALL = SITE / "pgserver" / "pginstall"  # bin/, lib/, share/
SUPERUSER = "postgres"  # the role initdb creates; trust auth, so no password (loopback only)


@dataclass(frozen=True)
class Postgres:
    proc: subprocess.Popen
    port: int

    def uri(self, database: str = "postgres") -> str:
        return f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/{database}"


def _server_user() -> dict:
    """Popen arguments that drop root: PostgreSQL refuses to run as root, and CI runs as root."""
    if os.geteuid() != 0:
        return {}
    nobody = pwd.getpwnam("nobody")
    return {"user": nobody.pw_uid, "group": nobody.pw_gid, "extra_groups": []}


def _wait_ready(pg: Postgres, log: Path, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pg.proc.poll() is not None:
            raise RuntimeError(f"postgres exited with {pg.proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            psycopg.connect(pg.uri(), connect_timeout=2).close()
            return
        except psycopg.OperationalError:
            time.sleep(0.2)
    raise RuntimeError(f"postgres not accepting connections after {timeout} s:\n{log.read_text()[-3000:]}")


def _binaries(scratch: Path, who: dict) -> Path:
    """The folder of initdb and postgres. Run as `nobody`, they must be reachable by it, and a checkout under a
    private home (/root) is not: then a copy in `scratch` (~30 MB, well under a second)."""
    if not who:
        return INSTALL / "bin"
    # The wheel's layout, kept: the binaries find share/ from their own path and libpq at $ORIGIN/../../../.
    for rel in ("pgserver/pginstall/bin", "pgserver/pginstall/lib", "pgserver/pginstall/share", "pgserver.libs"):
        shutil.copytree(SITE / rel, scratch / rel, symlinks=True)
    return scratch / "pgserver" / "pginstall" / "bin"


@contextmanager
def postgres_server(log: Path) -> Iterator[Postgres]:
    """A fresh cluster, its server accepting TCP connections on 127.0.0.1 only (no unix socket); removed after."""
    # Not under pytest's tmp folder: that is private to root, and the server may run as `nobody`.
    scratch = Path(tempfile.mkdtemp(prefix="postgres-"))
    who = _server_user()
    try:
        scratch.chmod(0o755)
        data, bin_dir = scratch / "data", _binaries(scratch, who)
        data.mkdir(mode=0o700)
        if who:
            os.chown(data, who["user"], who["group"])
        init = [bin_dir / "initdb", "-D", data, "-U", SUPERUSER, "--auth=trust", "--no-locale", "--encoding=UTF8"]
        done = subprocess.run([*init, "--no-sync"], cwd=data, capture_output=True, text=True, **who)
        if done.returncode:
            raise RuntimeError(f"initdb failed ({done.returncode}):\n{done.stderr[-3000:]}")
        port = free_port()
        # fsync off: a throwaway cluster need not survive a power cut, and CREATE DATABASE / migrations get faster.
        options = {"listen_addresses": "127.0.0.1", "unix_socket_directories": "", "fsync": "off"}
        cmd = [bin_dir / "postgres", "-D", data, "-p", str(port), *[f"-c{k}={v}" for k, v in options.items()]]
        with open(log, "wb") as out:
            proc = subprocess.Popen(cmd, cwd=data, stdout=out, stderr=subprocess.STDOUT, start_new_session=True, **who)
        pg = Postgres(proc, port)
        try:
            _wait_ready(pg, log)
            yield pg
        finally:
            stop(proc, signal.SIGINT)  # SIGINT is PostgreSQL's fast shutdown: no waiting for clients
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def create_database(pg: Postgres, name: str) -> str:
    """CREATE DATABASE `name` (outside a transaction, as PostgreSQL requires); its URI."""
    with psycopg.connect(pg.uri(), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return pg.uri(name)


def query(uri: str, sql: str) -> list[tuple]:
    """The rows of one read-only query."""
    with psycopg.connect(uri) as conn:  # psycopg 3: leaving the block closes the connection
        return conn.execute(sql).fetchall()
