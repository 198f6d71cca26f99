"""The mesh a test gateway serves (``--app tests.integration.gateway_app:mesh``), built in
each gateway worker from the config at ``$GATEWAY_TEST_CONFIG``.

Capabilities: ``echo`` (a handler), ``slow`` (sleeps ``seconds``: graceful shutdown),
``down`` (its backend always fails: the breaker opens) and ``words`` (a model on the
in-process serving backend that streams one chunk per word, ``delay_s`` apart).
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from pydantic import BaseModel

from aios_mesh import Mesh
from aios_mesh.capabilities import SLO, Price, capability
from aios_mesh.errors import BackendUnavailable
from aios_mesh.ports.events import Event


class Text(BaseModel):
    text: str
    seconds: float = 0.0
    delay_s: float = 0.0


class Echo(BaseModel):
    text: str
    confidence: float = 0.9


@capability("echo", price=Price(per_call=0.25))
def echo(payload: Text) -> Echo:
    """Answer the text upper-cased."""
    return Echo(text=payload.text.upper())


@capability("slow", slo=SLO(timeout_s=60))
async def slow(payload: Text) -> Echo:
    """Sleep, then publish an event (the outbox must be shipped at shutdown) and answer."""
    await asyncio.sleep(payload.seconds)
    await mesh.publish("slow.done", Event(type="slow.done", source="gateway-test",
                                          tenant="acme", data={"text": payload.text}))
    return Echo(text=payload.text)


@capability("down")
def down(payload: Text) -> Echo:
    raise BackendUnavailable("the model server is down")


@capability("words", model="words@champion", price=Price(per_call=0.5), slo=SLO(timeout_s=60))
def words(payload: Text) -> Echo:
    """Stream the text word by word (a model on a streaming backend)."""
    ...


def _words(payload: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for word in payload["text"].split():
        if payload.get("delay_s"):
            time.sleep(payload["delay_s"])  # a slow model: chunks come apart
        yield {"word": word}


def _whole(batch: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{"text": p["text"], "confidence": 1.0} for p in batch]


def _build() -> Mesh:
    built = Mesh.from_config(os.environ["GATEWAY_TEST_CONFIG"],
                             capabilities=[echo, slow, down, words])
    ref = built.local_serving.register("words", "1", _whole, stream=_words)

    async def publish() -> None:
        registry = built.ports.registry
        version = await registry.register("words", ref.source)
        await registry.set_alias("words", "champion", version.version)

    # uvicorn imports this module inside its event loop: register from a thread of our own
    with ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, publish()).result()
    return built


mesh = _build()
