"""FlyteRemoteOrchestrator against a real Flyte cluster.

The cluster is the one at ``FLYTE_ENDPOINT`` when that is set (it must answer, else the tests
fail and say so), else one already answering at 127.0.0.1:30080 (``flytectl demo start``);
otherwise the Flyte sandbox (the image ``flytectl demo start`` runs) is started with
testcontainers (tests/containers.py), publishing its HTTP port 30080 and its
object store (30002, which its signed upload URLs name) on 127.0.0.1. A Flyte cluster needs a
Docker engine (or Kubernetes): without an engine these tests skip ("needs a Docker engine") —
the only kind of skip allowed.
The sample workflows are fast-registered into ``FLYTE_PROJECT``/``FLYTE_DOMAIN``
(flytesnacks/development) with the default flytekit image, then the conformance suite runs.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from aios_mesh.backends import load_adapter
from aios_mesh.testing.conformance.orchestrator import OrchestratorBasic
from aios_mesh.testing.processes import docker_engine_answers
from tests.containers import http_container

PROJECT = os.environ.get("FLYTE_PROJECT", "flytesnacks")
DOMAIN = os.environ.get("FLYTE_DOMAIN", "development")
WF_MODULE = "aios_mesh.testing.conformance.workflows"
REPO = Path(__file__).resolve().parents[2]
#: The Flyte sandbox (single-container k3s + Flyte, what ``flytectl demo start`` runs): the
#: commit build flytekit-java's testcontainers tests pin. ``FLYTE_SANDBOX_IMAGE`` overrides it.
SANDBOX_IMAGE = os.environ.get(
    "FLYTE_SANDBOX_IMAGE",
    "ghcr.io/flyteorg/flyte-sandbox-bundled:sha-f3ab1b7480bad4072f7ecb695660fdf47032a6c4")
#: The sandbox's HTTP entry (flyteadmin HTTP + gRPC, console) and its MinIO API.
SANDBOX_HTTP, SANDBOX_S3 = 30080, 30002


def _cluster_answers(endpoint: str) -> bool:
    host, _, port = endpoint.rpartition(":")
    try:
        with socket.create_connection((host or "127.0.0.1", int(port)), timeout=1.0):
            return True
    except (OSError, ValueError):
        return False


pytestmark = [
    pytest.mark.docker,
    pytest.mark.integration,
    pytest.mark.skipif(not docker_engine_answers(),
                       reason="needs a Docker engine (for a Flyte cluster: the Flyte sandbox)"),
]


@pytest.fixture(scope="module")
def flyte_endpoint() -> Iterator[str]:
    """``FLYTE_ENDPOINT`` when set; else a sandbox already running on this machine
    (``flytectl demo start``, 127.0.0.1:30080); else a Flyte sandbox container."""
    given = os.environ.get("FLYTE_ENDPOINT")
    if given:
        if not _cluster_answers(given):
            pytest.fail(f"no Flyte cluster at FLYTE_ENDPOINT={given}: start one (`flytectl "
                        "demo start`) or unset FLYTE_ENDPOINT to let the test start a sandbox")
        yield given
        return
    running = f"127.0.0.1:{SANDBOX_HTTP}"
    if _cluster_answers(running):
        yield running
        return
    # k3s inside the container needs privileges, its own cgroup namespace view and tmpfs runs
    with http_container(SANDBOX_IMAGE, SANDBOX_HTTP, what="Flyte sandbox cluster",
                        health="/healthcheck", fixed_ports=(SANDBOX_HTTP, SANDBOX_S3),
                        tmpfs=("/run", "/var/run"), timeout=timedelta(minutes=10),
                        privileged=True, cgroupns="host",
                        extra_hosts={"host.docker.internal": "host-gateway"}) as url:
        yield url.removeprefix("http://")


@pytest.fixture(scope="module")
def registered(flyte_endpoint: str) -> str:
    """Fast-register the sample workflows once; returns the version."""
    from flytekit.configuration import Config, ImageConfig
    from flytekit.remote import FlyteRemote

    from aios_mesh.testing.conformance import workflows

    version = f"conformance-{uuid.uuid4().hex[:10]}"
    remote = FlyteRemote(Config.for_endpoint(flyte_endpoint, insecure=True),
                         default_project=PROJECT, default_domain=DOMAIN)
    for entity in (workflows.add_wf, workflows.divmod_wf, workflows.failing_wf,
                   workflows.slow_wf):
        remote.register_script(entity, image_config=ImageConfig.auto_default_image(),
                               version=version, source_path=str(REPO), module_name=WF_MODULE)
    return version


class TestFlyteRemote(OrchestratorBasic):
    TERMINAL_TIMEOUT = 600.0

    @pytest.fixture
    async def adapter(self, tmp_path: Path, flyte_endpoint: str,
                      registered: str) -> AsyncIterator[Any]:
        url = (f"flyte://{flyte_endpoint}?project={PROJECT}&domain={DOMAIN}"
               f"&version={registered}"
               "&insecure=true&poll=1")
        orchestrator = load_adapter("orchestrator", url, base_dir=tmp_path)
        yield orchestrator
        await orchestrator.aclose()
