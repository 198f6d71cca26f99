"""The mesh the OpenAI-face tests' gateway serves (``--app
tests.integration.test_gateway_openai_app:mesh``), built in each gateway worker from the
config at ``$GATEWAY_TEST_CONFIG``. (No tests here: the mesh is built on first access of
``mesh``, so collecting this module builds nothing.)

Capabilities:

* ``chat``: a chat generation (``ChatInput`` → ``TextOutput``, ``max_tokens=24``) on the
  ``llm`` serving backend (a real llama.cpp server the config names);
* ``long-chat``: the same with room for a long answer (a client leaves mid-stream);
* ``fragile-chat``: a long answer on the ``fragile`` backend (a server a test kills);
* ``triage``: a chat generation whose output is a model (``Triage``), so the answer is its
  JSON under constrained decoding (the ``llm-json`` backend: the same server, asked for
  llama-cpp-python's ``json_object`` dialect);
* ``embed``: ``text`` → ``embedding`` (8 floats, hashed character trigrams), in process;
* ``echo``: a plain function (neither a chat nor an embedding model).
"""

from __future__ import annotations

import asyncio
import hashlib
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Literal

from pydantic import BaseModel

from aios_mesh import ChatInput, Generation, Mesh, TextOutput
from aios_mesh.capabilities import SLO, Price, capability
from aios_mesh.ports.serving import Prediction, Usage


class Text(BaseModel):
    text: str


class Vector(BaseModel):
    embedding: list[float]


class Triage(BaseModel):
    queue: Literal["billing", "shipping", "other"]
    urgent: bool


def _caps() -> list[Any]:
    @capability("chat", model="gemma@champion", serving="llm",
                price=Price(per_1k_input_tokens=0.1, per_1k_output_tokens=0.2),
                generate=Generation(system="Answer in one short sentence.", max_tokens=24),
                slo=SLO(timeout_s=120))
    def chat(payload: ChatInput) -> TextOutput:
        """A short answer to the conversation."""
        ...

    @capability("long-chat", model="gemma@champion", serving="llm",
                generate=Generation(max_tokens=400), slo=SLO(timeout_s=120))
    def long_chat(payload: ChatInput) -> TextOutput:
        """A long answer (the client leaves before it ends)."""
        ...

    @capability("fragile-chat", model="gemma@champion", serving="fragile",
                generate=Generation(max_tokens=400), slo=SLO(timeout_s=120))
    def fragile_chat(payload: ChatInput) -> TextOutput:
        """A long answer from a server that dies while it writes."""
        ...

    @capability("triage", model="gemma@champion", serving="llm-json",
                generate=Generation(system="Route the customer's message.", max_tokens=32),
                slo=SLO(timeout_s=120))
    def triage(payload: ChatInput) -> Triage:
        """Which queue a customer's message goes to (structured output)."""
        ...

    @capability("embed", model="embedder@champion", price=Price(per_1k_tokens=0.01))
    def embed(payload: Text) -> Vector:
        """The text as a vector."""
        ...

    @capability("echo")
    def echo(payload: Text) -> Text:
        """The text as it came."""
        return payload

    return [chat, long_chat, fragile_chat, triage, embed, echo]


# ------------------------------------------------------------------ the in-process embedder
def _embed(batch: list[dict[str, Any]]) -> list[Prediction]:
    out = []
    for item in batch:
        text = item["text"]
        vector = [0.0] * 8
        for i in range(max(1, len(text) - 2)):
            digest = hashlib.blake2b(text[i:i + 3].encode(), digest_size=2).digest()
            vector[digest[0] % 8] += 1.0 if digest[1] % 2 else -1.0
        out.append(Prediction({"embedding": vector},
                              usage=Usage(calls=1, tokens=len(text.split()))))
    return out


def _build() -> Mesh:
    built = Mesh.from_config(os.environ["GATEWAY_TEST_CONFIG"], capabilities=_caps())
    # the LLM backends serve what their URL names; the registry entry names it for records
    models = {"embedder": built.local_serving.register("embedder", "1", _embed).source,
              "gemma": "llama.cpp server: gemma-3-270m"}

    async def publish() -> None:
        registry = built.ports.registry
        for name, source in models.items():
            version = await registry.register(name, source)
            await registry.set_alias(name, "champion", version.version)

    # uvicorn imports this module inside its event loop: register from a thread of our own
    with ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, publish()).result()
    return built


_built: list[Mesh] = []


def __getattr__(name: str) -> Mesh:
    if name != "mesh":
        raise AttributeError(name)
    if not _built:
        _built.append(_build())
    return _built[0]
