"""One piece of business code, three serving backends, only the config changes.

The capability and the function that calls it are written once; the test runs them against
in-process serving, a real `bentoml serve` process and a real Triton server (PyTriton), each
selected by nothing but `backends.serving` in the config.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import BaseModel

from aios_mesh import CapabilitySpec, Mesh
from aios_mesh.config import config_from_mapping
from aios_mesh.testing import free_port
from aios_mesh.testing.conformance.serving import ECHO_UPPER_SOURCE

pytestmark = pytest.mark.integration


class Shout(BaseModel):
    text: str
    n: int


SHOUT = CapabilitySpec(name="shout", input=Shout, output=Shout, model="echo-upper@live")


def business_code(mesh: Mesh, words: list[str]) -> list[tuple[str, int]]:
    """What an application would write: no model, no server, no backend in sight."""
    results = mesh.invoke_many("shout", [{"text": w, "n": i} for i, w in enumerate(words)],
                               tenant="acme", caller="app")
    return [(r.output.text, r.output.n) for r in results]  # type: ignore[union-attr]


def mesh_for(state: Path, serving_url: str) -> Mesh:
    config = config_from_mapping({
        "state_dir": str(state), "tenants": {"acme": {}},
        "backends": {"serving": serving_url, "registry": "memory://"},
        "telemetry": {"lineage": False, "decision_events": False}})
    mesh = Mesh(config, capabilities=[SHOUT])
    registry = mesh.port("registry")  # deployment setup, not business code
    ref = mesh.run_sync(registry.register("echo-upper", ECHO_UPPER_SOURCE))
    mesh.run_sync(registry.set_alias("echo-upper", "live", ref.version))
    return mesh


@pytest.fixture(scope="module")
def bentoml_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    from aios_mesh_bentoml.testing import ECHO_UPPER, bentoml_server

    with bentoml_server(tmp_path_factory.mktemp("bento"),
                        python_models={"echo-upper/1": ECHO_UPPER}) as server:
        yield f"bentoml+http://127.0.0.1:{server.port}"


@pytest.fixture(scope="module")
def triton_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    from aios_mesh_triton.testing import start_triton_server

    http, grpc = free_port(), free_port()
    with start_triton_server(http_port=http, grpc_port=grpc,
                             pytriton_home=tmp_path_factory.mktemp("pytriton")):
        yield f"triton+grpc://127.0.0.1:{grpc}"


WORDS = ["invoice", "straße", "ok", "x" * 50]
EXPECTED = [(w.upper(), 2 * i) for i, w in enumerate(WORDS)]


@pytest.mark.parametrize("backend", ["inprocess", "bentoml", "triton"])
def test_same_business_code_on_every_serving_backend(backend: str, tmp_path: Path,
                                                     request: pytest.FixtureRequest) -> None:
    url = {"inprocess": "inprocess://"}.get(backend) or request.getfixturevalue(
        f"{backend}_url")
    with mesh_for(tmp_path, url) as mesh:
        assert business_code(mesh, WORDS) == EXPECTED
        record = mesh.invoke("shout", {"text": "a", "n": 1}, tenant="acme").record
    assert record.model is not None
    assert (record.model["name"], record.model["version"]) == ("echo-upper", "1")
    assert record.serving == url.split("://")[0]
