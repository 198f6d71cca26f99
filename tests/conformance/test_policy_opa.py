"""The OPA adapter against a real OPA server: the whole Policy conformance suite.

The server is ``OPA_URL`` when set, else an ``openpolicyagent/opa`` container started with
testcontainers (tests/containers.py) when a Docker engine answers; otherwise every test here
skips ("needs a Docker engine (OPA server)"). The
protocol-level proof that runs everywhere is tests/integration/test_opa_protocol.py (a
regopy-backed fake of OPA's REST API — explicitly not OPA).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from aios_mesh_opa import OpaPolicy

from aios_mesh.testing.conformance.policy import PolicyBasic, PolicyErrors, PolicyObligations
from tests.containers import http_container

#: Pinned like compose/docker-compose.yml.
OPA_IMAGE = "openpolicyagent/opa:1.4.2"


def _wait_ready(url: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if httpx.get(f"{url}/health", timeout=2.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"OPA at {url} did not become ready in {timeout:.0f} s")
        time.sleep(0.3)


@pytest.fixture(scope="module")
def opa_server() -> Iterator[str]:
    """``OPA_URL`` when set, else a container; skips only when no Docker engine answers."""
    given = os.environ.get("OPA_URL")
    if given:
        _wait_ready(given.rstrip("/"), timeout=10)
        yield given.rstrip("/")
        return
    with http_container(OPA_IMAGE, 8181, what="OPA server", health="/health",
                        command=["run", "--server", "--addr", "0.0.0.0:8181"]) as url:
        yield url


@pytest.mark.docker
class TestOpaPolicy(PolicyBasic, PolicyObligations, PolicyErrors):
    @pytest.fixture
    def make_adapter(self, opa_server: str) -> Callable[[Path], Any]:
        token = os.environ.get("OPA_TOKEN")
        return lambda folder: OpaPolicy(opa_server, bundle=folder, token=token).start()
