"""``aios_mesh.client.MeshClient`` against a real ``aios-mesh gateway`` process (uvicorn,
API keys made with the ``aios-mesh keys`` CLI): the same business code runs on the
in-process Mesh and through the gateway; errors come back as the same MeshError classes;
``tenant=`` is checked against the credential, never an override."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from aios_mesh import BackendUnavailable, CapabilitySpec, Forbidden, Mesh, Unauthenticated
from aios_mesh.capabilities import Price, capability
from aios_mesh.client import CallResult, MeshClient
from aios_mesh.gateway.testing import RunningGateway, running_gateway
from tests.integration.test_gateway_http import APP, REPO, gateway_env
from tests.integration.test_gateway_identity import create

pytestmark = pytest.mark.integration


class Text(BaseModel):
    text: str
    seconds: float = 0.0


class Echo(BaseModel):
    text: str
    confidence: float = 0.9


@capability("echo", price=Price(per_call=0.25))
def echo(payload: Text) -> Echo:
    """The gateway app's echo (tests/integration/gateway_app.py), here in process."""
    return Echo(text=payload.text.upper())


# What the client knows of the gateway's other capabilities: their output models.
down, slow, words = (CapabilitySpec(name=n, input=Text, output=Echo, model="m@champion")
                     for n in ("down", "slow", "words"))

CONFIG = """
state_dir = "state"
[backends]
registry = "memory://"
[tenants.acme]
[tenants.globex]
[gateway.auth]
key_cache_s = 0
"""


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RunningGateway, str,
                                                                         Path]]:
    tmp = tmp_path_factory.mktemp("client")
    config, env = gateway_env(tmp, CONFIG)
    key = create(config, "acme", "billing-bot")["key"]
    with running_gateway(None, app=APP, env=env, cwd=REPO, workers=2) as gw:
        yield gw, key, config


def shout(mesh: Any, text: str) -> str:
    """Business code: it neither knows nor cares where the capability runs."""
    result = mesh.invoke("echo", {"text": text}, tenant="acme")
    return str(result.output.text)


def test_the_same_business_code_runs_in_process_and_through_the_gateway(
        gateway: tuple[RunningGateway, str, Path], tmp_path: Path) -> None:
    gw, key, _ = gateway
    with Mesh.local(tmp_path, capabilities=[echo], tenants=("acme",)) as local:
        in_process = shout(local, "refund please")
    with MeshClient(gw.url, api_key=key, capabilities=[echo]) as remote:
        over_http = shout(remote, "refund please")
    assert in_process == over_http == "REFUND PLEASE"


def test_invoke_returns_the_typed_output_and_the_records_summary(
        gateway: tuple[RunningGateway, str, Path]) -> None:
    gw, key, _ = gateway
    with MeshClient(gw.url, api_key=key, capabilities=[echo]) as client:
        result = client.invoke("echo", Echo(text="pydantic in", confidence=0.5))
        assert isinstance(result, CallResult) and result.output == Echo(text="PYDANTIC IN")
        assert result.outcome == "ok" and result.cost == 0.25 and not result.needs_review
        record = client.run_sync(client.record(result.record_id))
        assert record["tenant"] == "acme" and record["caller"] == "billing-bot"
    with MeshClient(gw.url, api_key=key) as untyped:  # no specs: plain JSON
        assert untyped.invoke("echo", {"text": "x"}).output == {"text": "X",
                                                                "confidence": 0.9}


def test_invoke_many_keeps_order_and_can_return_errors(
        gateway: tuple[RunningGateway, str, Path]) -> None:
    gw, key, _ = gateway
    with MeshClient(gw.url, api_key=key, capabilities=[echo]) as client:
        texts = [f"row {i}" for i in range(12)]
        results = client.invoke_many("echo", [{"text": t} for t in texts], concurrency=4)
        assert [r.output.text for r in results if isinstance(r, CallResult)] == \
            [t.upper() for t in texts]
        mixed = client.invoke_many("echo", [{"text": "ok"}, {"nope": 1}],
                                   return_exceptions=True)
        assert isinstance(mixed[0], CallResult)
        assert type(mixed[1]).__name__ == "InvalidInput" and mixed[1].record_id


def test_errors_are_the_mesh_errors_with_hint_and_record(
        gateway: tuple[RunningGateway, str, Path]) -> None:
    gw, key, _ = gateway
    with MeshClient(gw.url, api_key=key, capabilities=[down]) as client:
        with pytest.raises(BackendUnavailable) as failed:
            client.invoke("down", {"text": "x"})
        assert failed.value.record_id  # the call was recorded; its id came back
        with pytest.raises(Forbidden, match="tenant 'acme', not 'globex'"):
            client.invoke("down", {"text": "x"}, tenant="globex")
    with MeshClient(gw.url, api_key=key[:-2] + "zz") as bad, \
            pytest.raises(Unauthenticated):
        bad.invoke("echo", {"text": "x"})


def test_streaming_and_the_async_api(gateway: tuple[RunningGateway, str, Path]) -> None:
    gw, key, _ = gateway

    async def run() -> tuple[list[dict[str, Any]], CallResult]:
        async with MeshClient(gw.url, api_key=key, capabilities=[words, slow]) as client:
            chunks = [c async for c in client.stream("words", {"text": "one two three"},
                                                     tenant="acme")]
            return chunks, await client.ainvoke("slow", {"text": "s", "seconds": 0.01})

    chunks, result = asyncio.run(run())
    assert chunks == [{"word": "one"}, {"word": "two"}, {"word": "three"}]
    assert result.output.text == "s"


def test_from_env(gateway: tuple[RunningGateway, str, Path],
                  monkeypatch: pytest.MonkeyPatch) -> None:
    gw, key, _ = gateway
    monkeypatch.setenv("AIOS_MESH_GATEWAY_URL", gw.url)
    monkeypatch.setenv("AIOS_MESH_API_KEY", key)
    with MeshClient.from_env(capabilities=[echo]) as client:
        assert client.invoke("echo", {"text": "env"}).output.text == "ENV"
    assert os.environ["AIOS_MESH_GATEWAY_URL"] == gw.url


def test_attributes_and_parent_reach_the_call(
        gateway: tuple[RunningGateway, str, Path]) -> None:
    """``attributes`` (policy input) and ``parent`` (lineage) cross HTTP as JSON headers; a
    header that is not a JSON object is refused before the call, with a hint."""
    import httpx

    from aios_mesh import InvalidInput

    gw, key, _ = gateway
    parent = {"namespace": "flyte", "name": "invoice_intake", "run_id": "run-é-1"}
    with MeshClient(gw.url, api_key=key, capabilities=[echo]) as client:
        result = client.invoke("echo", {"text": "x"}, attributes={"amount_usd": 12.5},
                               parent=parent)
        assert client.run_sync(client.record(result.record_id))["parent"] == parent
    for name, value in (("X-Mesh-Attributes", "[1, 2]"), ("X-Mesh-Parent", "{not json")):
        answer = httpx.post(f"{gw.url}/v1/capabilities/echo/invoke", json={"text": "x"},
                            headers={"Authorization": f"Bearer {key}", name: value})
        assert answer.status_code == 422, answer.text
        problem = answer.json()
        assert problem["code"] == InvalidInput.code and name in problem["detail"]
        assert problem["hint"]
        assert not problem.get("record_id")  # refused before it was a call
