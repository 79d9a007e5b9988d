"""What the tests share: synthetic data, tiny params, stage runners, servers, processes and bad inputs."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SHARED = REPO.parent / "shared"
