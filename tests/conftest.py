"""Fixtures for every test folder (the helpers they use live in tests/helpers/). Telemetry is off and Keras
reads the ImageNet weights from a writable copy of ../shared/keras_home, set here before anything imports it."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import SHARED

os.environ.setdefault("DVC_NO_ANALYTICS", "1")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# Randomly initialised MobileNets output ~1e-18 (activations vanish without trained BatchNorm statistics),
# so even the tiny tests use the real ImageNet weights, from a writable copy of ../shared/keras_home.
if "KERAS_HOME" not in os.environ and (SHARED / "keras_home" / "models").is_dir():
    _home = Path(tempfile.mkdtemp(prefix="keras_home-"))
    shutil.copytree(SHARED / "keras_home" / "models", _home / "models")
    os.environ["KERAS_HOME"] = str(_home)

from tests.helpers.images import make_dataset, zip_dir  # noqa: E402
from tests.helpers.pipeline import TinyProject, build_tiny_project  # noqa: E402
from tests.helpers.processes import stop  # noqa: E402
from tests.helpers.servers import start_mlflow_server  # noqa: E402
from tests.helpers.tracking import SERVED, register_served  # noqa: E402


@pytest.fixture
def synthetic_zip(tmp_path: Path) -> Path:
    """The tiny two-class dataset (train/validation layout, 40 images) as a zip archive."""
    src = make_dataset(tmp_path / "src" / "synthetic")
    return zip_dir(src, tmp_path / "synthetic.zip")


@pytest.fixture(scope="session")
def tiny_project(tmp_path_factory) -> TinyProject:
    """The tiny two-class pipeline run once, download to evaluate, for every test that reads its outputs
    (model checks, predict, tracking). Tests must not change it: copy it first."""
    return build_tiny_project(tmp_path_factory.mktemp("tiny_project"))


@pytest.fixture(scope="session")
def served_store(tiny_project, tmp_path_factory) -> str:
    """A sqlite MLflow store holding tiny_project's fine-tuned model as the served image model, registered as
    SERVED with the champion alias; its URI."""
    return register_served(tiny_project, tmp_path_factory.mktemp("served_store"), SERVED)


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory) -> Iterator[str]:
    """A real `mlflow server` on loopback, shared by the whole session (tests use their own experiment and
    registered model names); yields its URL."""
    proc, url = start_mlflow_server(tmp_path_factory.mktemp("mlflow_server"))
    try:
        yield url
    finally:
        stop(proc, timeout=15)


@pytest.fixture
def forget_tracking_uri() -> Iterator[None]:
    """track() and from_model_uri() set MLflow's process-wide tracking URI (track also the env var): don't leak
    it into later tests."""
    import mlflow

    before = os.environ.get("MLFLOW_TRACKING_URI")
    yield
    mlflow.set_tracking_uri(None)
    if before is None:
        os.environ.pop("MLFLOW_TRACKING_URI", None)
    else:
        os.environ["MLFLOW_TRACKING_URI"] = before
