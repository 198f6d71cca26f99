"""Counting prompts with the server's own tokenizer, for servers that expose one.

Only llama.cpp's servers do, and only for raw text: llama-cpp-python's
``POST /extras/tokenize`` (``{"input": text}`` → ``{"tokens": [...]}``, with the model's BOS
token first). The chat template the server wraps the messages in is not exposed, so its
overhead is counted by rule: :data:`MESSAGE_TOKENS` per message and :data:`REPLY_TOKENS` for
the reply's opening. Gemma, ChatML and Llama 3 templates spend 5 tokens around a message
(``<start_of_turn>user\\n ... <end_of_turn>\\n``) and 3-4 to open the reply, so the count is
exact for Gemma and cautious (never under) for the others.

A separate class (:class:`CountingOpenAIServing`) rather than a flag: the pipeline asks
``isinstance(adapter, TokenCounter)`` whether counts are the model's own, and an adapter that
cannot count must not claim to.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Any, Final

import httpx

from aios_mesh.errors import InvalidOutput
from aios_mesh.ports.registry import ModelRef
from aios_mesh_openai.client import OpenAIServing

__all__ = ["MESSAGE_TOKENS", "REPLY_TOKENS", "CountingOpenAIServing", "LlamaCppTokenizer"]

#: Template tokens around one message (role marker, separators).
MESSAGE_TOKENS: Final = 5
#: Template tokens that open the model's reply, BOS included.
REPLY_TOKENS: Final = 4


class LlamaCppTokenizer:
    """Counts chat prompts with a llama.cpp server's ``/extras/tokenize``.

    Args:
        context_window: the server's ``--n_ctx`` (it does not say it over HTTP).
    """

    def __init__(self, *, context_window: int | None = None) -> None:
        self.context_window = context_window

    async def count(self, serving: OpenAIServing, model: ModelRef,
                    messages: Sequence[Mapping[str, str]]) -> int:
        """Prompt tokens: each message's content tokenised by the server (one request per
        message, concurrently), its BOS dropped, plus the template's tokens."""
        root = serving.base_url.removesuffix("/v1")
        name = serving.model or model.name

        async def one(text: str) -> int:
            try:
                response = await serving.client().post(
                    f"{root}/extras/tokenize", json={"input": text, "model": name},
                    timeout=httpx.Timeout(10.0, connect=serving.connect_timeout))
            except httpx.TransportError as exc:
                raise serving.transport_error(exc) from exc
            if response.status_code != 200:
                raise serving.status_error(response.status_code, response.content,
                                           f"tokenize on {root}")
            tokens = _tokens(response)
            return max(0, len(tokens) - 1)  # the BOS the server puts first

        counts = await asyncio.gather(*(one(m["content"]) for m in messages))
        return sum(counts) + MESSAGE_TOKENS * len(messages) + REPLY_TOKENS


def _tokens(response: httpx.Response) -> list[Any]:
    try:
        tokens = response.json()["tokens"]
    except (ValueError, KeyError, TypeError):
        tokens = None
    if not isinstance(tokens, list):
        raise InvalidOutput("the tokenize answer has no token list",
                            hint="tokenize=llamacpp needs llama-cpp-python's server "
                                 "(POST /extras/tokenize)")
    return tokens


class CountingOpenAIServing(OpenAIServing):
    """:class:`OpenAIServing` that is also a :class:`~aios_mesh.generation.TokenCounter`:
    the pipeline checks the context window and reserves quota with the server's own count.
    Built by ``from_url`` for ``?tokenize=llamacpp``."""

    def __init__(self, base_url: str, *, counter: LlamaCppTokenizer, **kwargs: Any) -> None:
        super().__init__(base_url, **kwargs)
        self.counter = counter

    async def count_tokens(self, model: ModelRef,
                           messages: Sequence[Mapping[str, str]]) -> int:
        """Prompt tokens by the server's tokenizer, template included."""
        return await self.counter.count(self, model, messages)

    def context_window(self, model: ModelRef) -> int | None:
        """The ``context_window`` option (None: unknown)."""
        return self.counter.context_window

    async def prompt_tokens(self, model: ModelRef, payload: Mapping[str, Any]) -> int:
        """The server's count of the prompt, for a stream that reported no usage."""
        return await self.count_tokens(model, payload.get("messages") or [])
