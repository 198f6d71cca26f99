"""What the BentoML adapter puts on the wire, seen by an httpx transport (the adapter's test
seam): it goes to the transport directly, so the request must carry everything
``httpx.AsyncClient`` used to add that the protocol needs."""

from __future__ import annotations

import json
import re

import httpx
import pytest
from aios_mesh_bentoml.client import BentoMLServing

from aios_mesh.errors import BackendTimeout, BackendUnavailable
from aios_mesh.ports.registry import ModelRef

ANSWER = [{"model": {"name": "m", "version": "3"}, "output": {"y": 1}, "confidence": 0.5,
           "usage": {"calls": 1, "tokens": 0, "gpu_seconds": 0.0}}]


async def test_a_predict_request_names_the_version_and_carries_headers_and_timeout() -> None:
    seen: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, content=json.dumps(ANSWER).encode())

    serving = BentoMLServing("http://127.0.0.1:3000/prefix/", timeout=7.0,
                             transport=httpx.MockTransport(answer),
                             headers={"Authorization": "Bearer t"})
    [prediction] = await serving.infer_batch(ModelRef("m", "3"), [{"x": 1}], timeout=2.5)
    assert prediction.output == {"y": 1} and prediction.confidence == 0.5
    await serving.infer(ModelRef("m", "3"), {"x": 2})
    first, second = seen
    assert str(first.url) == "http://127.0.0.1:3000/prefix/predict"
    assert first.method == "POST"
    assert first.headers["content-type"] == "application/json"
    assert first.headers["authorization"] == "Bearer t"
    assert first.headers["host"] == "127.0.0.1:3000"
    assert int(first.headers["content-length"]) == len(first.content)
    assert json.loads(first.content) == {
        "inputs": [{"model": {"name": "m", "version": "3"}, "input": {"x": 1}}]}
    assert first.extensions["timeout"] == dict.fromkeys(("connect", "read", "write", "pool"),
                                                        2.5)
    assert second.extensions["timeout"]["read"] == 7.0  # the adapter's own when none given
    await serving.aclose()


@pytest.mark.parametrize(("error", "raised"), [
    (httpx.ReadTimeout("slow"), BackendTimeout),
    (httpx.ConnectError("refused"), BackendUnavailable),
    (httpx.RemoteProtocolError("reset"), BackendUnavailable),
])
async def test_transport_failures_are_typed(error: Exception, raised: type[Exception]) -> None:
    def fail(request: httpx.Request) -> httpx.Response:
        raise error

    serving = BentoMLServing("http://127.0.0.1:3000", transport=httpx.MockTransport(fail))
    with pytest.raises(raised, match=re.escape("127.0.0.1:3000/predict")):
        await serving.infer(ModelRef("m", "3"), {"x": 1})
