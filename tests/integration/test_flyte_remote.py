"""FlyteRemoteOrchestrator against a real Flyte cluster (``flytectl demo start``).

A Flyte cluster needs a Docker engine (or Kubernetes): without a Docker engine these tests
skip — the only kind of skip allowed. With one, a cluster must answer at ``FLYTE_ENDPOINT``
(default 127.0.0.1:30080), else they fail and say how to start it.
With a cluster, the sample workflows are fast-registered into ``FLYTE_PROJECT``/``FLYTE_DOMAIN``
(flytesnacks/development) with the default flytekit image, then the conformance suite runs.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from aios_mesh.backends import load_adapter
from aios_mesh.testing.conformance.orchestrator import OrchestratorBasic
from aios_mesh.testing.processes import docker_engine_answers

ENDPOINT = os.environ.get("FLYTE_ENDPOINT", "127.0.0.1:30080")
PROJECT = os.environ.get("FLYTE_PROJECT", "flytesnacks")
DOMAIN = os.environ.get("FLYTE_DOMAIN", "development")
WF_MODULE = "aios_mesh.testing.conformance.workflows"
REPO = Path(__file__).resolve().parents[2]


def _cluster_answers() -> bool:
    host, _, port = ENDPOINT.rpartition(":")
    try:
        with socket.create_connection((host or "127.0.0.1", int(port)), timeout=1.0):
            return True
    except (OSError, ValueError):
        return False


pytestmark = [
    pytest.mark.docker,
    pytest.mark.integration,
    pytest.mark.skipif(not docker_engine_answers(),
                       reason="needs a Docker engine (for a Flyte cluster: flytectl demo)"),
]


@pytest.fixture(scope="module")
def registered() -> str:
    """Fast-register the sample workflows once; returns the version."""
    if not _cluster_answers():
        pytest.fail(f"no Flyte cluster at {ENDPOINT}: start one with `flytectl demo start` "
                    "(or set FLYTE_ENDPOINT)")
    from flytekit.configuration import Config, ImageConfig
    from flytekit.remote import FlyteRemote

    from aios_mesh.testing.conformance import workflows

    version = f"conformance-{uuid.uuid4().hex[:10]}"
    remote = FlyteRemote(Config.for_endpoint(ENDPOINT, insecure=True),
                         default_project=PROJECT, default_domain=DOMAIN)
    for entity in (workflows.add_wf, workflows.divmod_wf, workflows.failing_wf,
                   workflows.slow_wf):
        remote.register_script(entity, image_config=ImageConfig.auto_default_image(),
                               version=version, source_path=str(REPO), module_name=WF_MODULE)
    return version


class TestFlyteRemote(OrchestratorBasic):
    TERMINAL_TIMEOUT = 600.0

    @pytest.fixture
    async def adapter(self, tmp_path: Path, registered: str) -> AsyncIterator[Any]:
        url = (f"flyte://{ENDPOINT}?project={PROJECT}&domain={DOMAIN}&version={registered}"
               "&insecure=true&poll=1")
        orchestrator = load_adapter("orchestrator", url, base_dir=tmp_path)
        yield orchestrator
        await orchestrator.aclose()
