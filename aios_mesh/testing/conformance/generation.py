"""Conformance suite for LLM serving adapters (``Feature.GENERATION``).

An LLM adapter takes the pipeline's :data:`~aios_mesh.generation.GenerationRequest` as its
payload. Mix :class:`GenerationConformance` into a test class that provides an ``adapter``
fixture (a real engine or server, never a fake), a ``model_ref`` it serves and the
``context_window`` in tokens it runs with::

    class TestMine(GenerationConformance):
        @pytest.fixture
        async def adapter(self, tmp_path):
            a = load_adapter("serving", "openai+http://127.0.0.1:8080/v1", base_dir=tmp_path)
            yield a
            await a.aclose()

        @pytest.fixture
        def model_ref(self):
            return ModelRef(name="gemma-3-270m", version="1")

        @pytest.fixture
        def context_window(self):
            return 2048

The suite proves plumbing, not answer quality (it runs on a 270M-parameter model), at
temperature 0 and with a few tokens per call:

* text generation answers ``{"text": str}`` with usage: input and output tokens counted,
  ``tokens`` their sum, ``output_tokens <= max_tokens``;
* structured output under ``response_format`` (an enum ``{"label": "billing" | "tech"}``)
  is JSON that validates against the pydantic model;
* ``stream`` yields ``{"text": delta}`` chunks then one ``{"usage": {"input_tokens",
  "output_tokens"}, "finish_reason"}`` chunk, and the joined text equals the answer
  ``infer`` gives to the same request (greedy decoding is deterministic); an unestimated
  streamed usage equals ``infer``'s;
* a stream closed after its first chunk ends, and the adapter answers the next request;
* ``max_tokens`` bounds the output (a 1-token and a 3-token request; ``finish_reason``
  ``length`` when the bound cut it);
* a prompt larger than the context window raises
  :class:`~aios_mesh.errors.ContextWindowExceeded` (a typed error with a hint), and the
  adapter keeps answering;
* an adapter that is a :class:`~aios_mesh.generation.TokenCounter` counts a one-message
  prompt as the usage the backend reports, give or take the chat template (never fewer
  tokens, at most 8 more), and knows its window.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, Literal

import pytest
from pydantic import BaseModel

from aios_mesh.errors import ContextWindowExceeded
from aios_mesh.generation.tokens import TokenCounter
from aios_mesh.generation.wire import GenerationRequest, response_format
from aios_mesh.ports.base import Feature
from aios_mesh.ports.registry import ModelRef
from aios_mesh.ports.serving import Serving

__all__ = ["GenerationConformance", "TicketLabel", "generation_request"]

_PROMPT = "Classify the support ticket as billing or tech: 'I was charged twice this month.'"


class TicketLabel(BaseModel):
    """The structured output the suite asks for: a closed enum, so constrained decoding has
    something to constrain."""

    label: Literal["billing", "tech"]


def generation_request(text: str = _PROMPT, *, max_tokens: int = 8,
                       output: type[BaseModel] | None = None,
                       system: str | None = None) -> GenerationRequest:
    """A greedy GenerationRequest for one user message (structured when ``output`` is
    given), as the pipeline's prompt step builds it."""
    messages = ([{"role": "system", "content": system}] if system else []) + \
        [{"role": "user", "content": text}]
    request: GenerationRequest = {"messages": messages, "max_tokens": max_tokens,
                                  "temperature": 0.0, "structured": output is not None}
    if output is not None:
        request["response_format"] = response_format(output)
    return request


async def _collect(it: AsyncIterator[dict[str, Any]]) -> list[dict[str, Any]]:
    try:
        return [chunk async for chunk in it]
    finally:
        await it.aclose()  # type: ignore[attr-defined]  # adapters return async generators


class GenerationConformance:
    """What every LLM serving adapter must do (see the module docs)."""

    async def test_declares_generation_and_streaming(self, adapter: Serving) -> None:
        assert isinstance(adapter, Serving)
        assert Feature.GENERATION in adapter.features
        assert Feature.STREAMING in adapter.features

    async def test_text_with_usage(self, adapter: Serving, model_ref: ModelRef) -> None:
        prediction = await adapter.infer(model_ref, generation_request(max_tokens=8))
        assert set(prediction.output) == {"text"}
        assert isinstance(prediction.output["text"], str) and prediction.output["text"]
        usage = prediction.usage
        assert usage.input_tokens > 5, usage  # the prompt is ~20 tokens in any tokenizer
        assert 1 <= usage.output_tokens <= 8, usage
        assert usage.tokens == usage.input_tokens + usage.output_tokens
        assert usage.calls == 1 and not usage.estimated

    async def test_structured_output_validates(self, adapter: Serving,
                                               model_ref: ModelRef) -> None:
        request = generation_request(max_tokens=24, output=TicketLabel,
                                     system="Answer with JSON only.")
        prediction = await adapter.infer(model_ref, request)
        label = TicketLabel.model_validate(prediction.output)
        assert label.label in ("billing", "tech")
        assert prediction.usage.output_tokens <= 24

    async def test_stream_is_text_then_usage_and_equals_invoke(self, adapter: Serving,
                                                               model_ref: ModelRef) -> None:
        request = generation_request(max_tokens=10)
        answer = await adapter.infer(model_ref, request)
        chunks = await _collect(adapter.stream(model_ref, request))
        *texts, last = chunks
        assert texts, "a stream of 10 tokens yielded no text"
        assert all(set(c) == {"text"} and isinstance(c["text"], str) for c in texts), texts
        assert set(last) == {"usage", "finish_reason"}, last
        assert last["finish_reason"] in ("stop", "length")
        usage = last["usage"]
        assert 1 <= usage["output_tokens"] <= 10 and usage["input_tokens"] > 5
        assert "".join(c["text"] for c in texts) == answer.output["text"]
        if not usage.get("estimated"):
            assert (usage["input_tokens"], usage["output_tokens"]) == \
                (answer.usage.input_tokens, answer.usage.output_tokens)

    async def test_structured_stream_joins_to_the_json(self, adapter: Serving,
                                                       model_ref: ModelRef) -> None:
        request = generation_request(max_tokens=24, output=TicketLabel)
        chunks = await _collect(adapter.stream(model_ref, request))
        joined = "".join(c.get("text", "") for c in chunks)
        TicketLabel.model_validate_json(joined)

    async def test_early_close_stops_the_stream(self, adapter: Serving,
                                                model_ref: ModelRef) -> None:
        long = generation_request("Count from 1 to 500, separated by commas.",
                                  max_tokens=400)
        it = adapter.stream(model_ref, long)
        first = await anext(it)
        await it.aclose()  # type: ignore[attr-defined]
        assert "text" in first
        with_more = await _collect(it)  # a closed stream yields nothing more
        assert with_more == []
        after = await adapter.infer(model_ref, generation_request(max_tokens=2))
        assert after.usage.output_tokens <= 2

    async def test_max_tokens_is_respected(self, adapter: Serving,
                                           model_ref: ModelRef) -> None:
        for bound in (1, 3):
            prediction = await adapter.infer(model_ref, generation_request(
                "Write a long story about a lighthouse keeper.", max_tokens=bound))
            assert 1 <= prediction.usage.output_tokens <= bound, prediction.usage
        chunks = await _collect(adapter.stream(model_ref, generation_request(
            "Write a long story about a lighthouse keeper.", max_tokens=3)))
        assert chunks[-1]["finish_reason"] == "length"
        assert chunks[-1]["usage"]["output_tokens"] <= 3
        assert len(chunks) - 1 <= 3

    async def test_prompt_over_the_context_window(self, adapter: Serving, model_ref: ModelRef,
                                                  context_window: int) -> None:
        huge = generation_request("word " * (context_window + 100), max_tokens=4)
        with pytest.raises(ContextWindowExceeded) as info:
            await adapter.infer(model_ref, huge)
        assert info.value.hint
        after = await adapter.infer(model_ref, generation_request(max_tokens=2))
        assert after.usage.output_tokens <= 2

    async def test_token_counter_counts_like_the_backend(self, adapter: Serving,
                                                         model_ref: ModelRef) -> None:
        if not isinstance(adapter, TokenCounter):
            assert Feature.GENERATION in adapter.features  # counting is optional
            return
        request = generation_request(max_tokens=2)
        counted = await adapter.count_tokens(model_ref, request["messages"])
        reported = (await adapter.infer(model_ref, request)).usage.input_tokens
        assert reported <= counted <= reported + 8, (counted, reported)
        window = adapter.context_window(model_ref)
        assert window is None or window >= 64
