"""Shared test setup: keep every backend's state in temp folders and off the network."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("BENTOML_DO_NOT_TRACK", "True")

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _no_ambient_backend_urls(monkeypatch: pytest.MonkeyPatch) -> None:
    """A developer's AIOS_MESH_*_URL must not leak into tests."""
    for key in list(os.environ):
        if key.startswith("AIOS_MESH_"):
            monkeypatch.delenv(key, raising=False)
