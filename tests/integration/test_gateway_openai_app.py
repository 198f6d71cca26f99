"""The mesh the OpenAI-face tests' gateway serves (``--app
tests.integration.test_gateway_openai_app:mesh``), built in each gateway worker from the
config at ``$GATEWAY_TEST_CONFIG``. (No tests here: the mesh is built on first access of
``mesh``, so collecting this module builds nothing.)

Capabilities:

* ``chat``: a chat generation (``ChatInput`` → ``TextOutput``, ``max_tokens=24``);
* ``long-chat``: the same with room for a long answer (a client leaves mid-stream);
* ``embed``: ``text`` → ``embedding`` (8 floats, hashed character trigrams), in process;
* ``echo``: a plain function (neither a chat nor an embedding model).

The two chat capabilities run on the in-process serving backend with a Python model that
speaks the generation wire format (a ``GenerationRequest`` in, ``{"text"}`` and usage out),
until ``$OPENAI_TEST_LLM_URL`` names a real LLM backend (``openai+http://HOST:PORT/v1``): then
they are served by it, as the model ``$OPENAI_TEST_LLM_MODEL``.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from pydantic import BaseModel

from aios_mesh import ChatInput, Generation, Mesh, TextOutput
from aios_mesh.capabilities import SLO, Price, capability
from aios_mesh.ports.serving import Prediction, Usage


class Text(BaseModel):
    text: str


class Vector(BaseModel):
    embedding: list[float]


def _caps() -> list[Any]:
    serving = "llm" if os.environ.get("OPENAI_TEST_LLM_URL") else None

    @capability("chat", model="chat-model@champion", serving=serving,
                price=Price(per_1k_input_tokens=0.1, per_1k_output_tokens=0.2),
                generate=Generation(system="Answer in one short sentence.", max_tokens=24),
                slo=SLO(timeout_s=60))
    def chat(payload: ChatInput) -> TextOutput:
        """A short answer to the conversation."""
        ...

    @capability("long-chat", model="chat-model@champion", serving=serving,
                generate=Generation(max_tokens=400), slo=SLO(timeout_s=120))
    def long_chat(payload: ChatInput) -> TextOutput:
        """A long answer (the client leaves before it ends)."""
        ...

    @capability("embed", model="embedder@champion", price=Price(per_1k_tokens=0.01))
    def embed(payload: Text) -> Vector:
        """The text as a vector."""
        ...

    @capability("echo")
    def echo(payload: Text) -> Text:
        """The text as it came."""
        return payload

    return [chat, long_chat, embed, echo]


# ------------------------------------------------------------------ the in-process models
def _words(request: dict[str, Any]) -> list[str]:
    """What the in-process chat model answers: the last user message, word by word, after
    ``You said:`` (``max_tokens`` words at most; a word counts as a token here)."""
    last = next(m["content"] for m in reversed(request["messages"]) if m["role"] == "user")
    words = ["You", "said:", *last.split()]
    if last.startswith("count "):
        words = [str(i) for i in range(int(last.split()[1]))]
    return words[:request["max_tokens"]]


def _prompt_tokens(request: dict[str, Any]) -> int:
    return sum(len(m["content"].split()) + 4 for m in request["messages"])


def _generate(batch: list[dict[str, Any]]) -> list[Prediction]:
    out = []
    for request in batch:
        words = _words(request)
        out.append(Prediction({"text": " ".join(words)},
                              usage=Usage.of_tokens(_prompt_tokens(request), len(words))))
    return out


def _stream(request: dict[str, Any]) -> Iterator[dict[str, Any]]:
    words = _words(request)
    for i, word in enumerate(words):
        if len(words) > 100:
            time.sleep(0.02)  # a long answer comes slowly: a client can leave mid-way
        yield {"text": word if i == 0 else " " + word}
    finish = "length" if len(words) >= request["max_tokens"] else "stop"
    yield {"usage": {"input_tokens": _prompt_tokens(request), "output_tokens": len(words)},
           "finish_reason": finish}


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
    local = built.local_serving
    models = {"embedder": local.register("embedder", "1", _embed).source}
    if not os.environ.get("OPENAI_TEST_LLM_URL"):
        models["chat-model"] = local.register("chat-model", "1", _generate,
                                              stream=_stream).source
    else:
        models["chat-model"] = os.environ["OPENAI_TEST_LLM_MODEL"]

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
