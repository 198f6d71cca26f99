"""The generation conformance suite on llama.cpp in process (Gemma 3 270M), plus what only
the in-process engine promises: a caller that leaves frees the engine at the next token, the
deadline is its own, options are checked."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
from aios_mesh_llamacpp import LlamaCppServing

from aios_mesh.backends import load_adapter, parse_url
from aios_mesh.errors import BackendTimeout, ConfigError
from aios_mesh.ports.registry import ModelRef
from aios_mesh.testing.conformance.generation import GenerationConformance, generation_request

N_CTX = 1024
LONG = generation_request("Count from 1 to 500, separated by commas.", max_tokens=600)


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LlamaCppServing]:
    """One loaded model for the module (loading costs a second; each test has its loop)."""
    serving = LlamaCppServing.from_url(parse_url(f"llamacpp://gemma3-270m?n_ctx={N_CTX}"),
                                       base_dir=tmp_path_factory.getbasetemp() / "llm")
    yield serving
    serving.engine.close()


class TestLlamaCppGeneration(GenerationConformance):
    @pytest.fixture
    def adapter(self, engine: LlamaCppServing) -> LlamaCppServing:
        return engine

    @pytest.fixture
    def model_ref(self) -> ModelRef:
        return ModelRef(name="gemma3-270m", version="1")

    @pytest.fixture
    def context_window(self) -> int:
        return N_CTX


async def _idle(adapter: LlamaCppServing, within_s: float) -> bool:
    for _ in range(int(within_s / 0.02)):
        if not adapter.busy:
            return True
        await asyncio.sleep(0.02)
    return not adapter.busy


async def test_a_stream_left_early_frees_the_engine_at_the_next_token(
        engine: LlamaCppServing) -> None:
    model = ModelRef(name="gemma3-270m", version="1")
    before = engine.engine.interrupted
    it = engine.stream(model, LONG)
    first = await anext(it)
    assert engine.busy and "text" in first
    await it.aclose()  # type: ignore[attr-defined]
    # 600 tokens take tens of seconds here: idle within 10 s means it stopped
    assert await _idle(engine, 10.0)
    assert engine.engine.interrupted == before + 1


async def test_a_cancelled_task_stops_its_generation(engine: LlamaCppServing) -> None:
    model = ModelRef(name="gemma3-270m", version="1")
    before = engine.engine.interrupted
    task = asyncio.create_task(engine.infer(model, LONG))
    for _ in range(500):
        if engine.busy:
            break
        await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await _idle(engine, 10.0)
    assert engine.engine.interrupted == before + 1


async def test_the_deadline_stops_the_generation_and_is_typed(engine: LlamaCppServing) -> None:
    model = ModelRef(name="gemma3-270m", version="1")
    await engine.count_tokens(model, LONG["messages"])  # loaded: the deadline is generation's
    with pytest.raises(BackendTimeout) as info:
        await engine.infer(model, LONG, timeout=0.3)
    assert info.value.hint
    assert await _idle(engine, 10.0)
    assert (await engine.infer(model, generation_request(max_tokens=2))).usage.output_tokens <= 2


async def test_a_system_message_reaches_gemma(engine: LlamaCppServing) -> None:
    """Gemma's template has no system turn (llama-cpp-python drops system messages); the
    engine folds it into the first user message, and counts it."""
    model = ModelRef(name="gemma3-270m", version="1")
    plain = generation_request(max_tokens=1)
    with_system = generation_request(max_tokens=1, system="Answer in one word.")
    a = (await engine.infer(model, plain)).usage.input_tokens
    b = (await engine.infer(model, with_system)).usage.input_tokens
    assert b > a
    assert await engine.count_tokens(model, with_system["messages"]) == b


@pytest.mark.parametrize(("url", "match"), [
    ("llamacpp://gemma3-270m?n_ctxx=512", "did you mean 'n_ctx'"),
    ("llamacpp://gemma3-270m?n_ctx=ten", "n_ctx"),
    ("llamacpp://gemma3-270m?chat_format=klingon", "chat_format"),
    ("llamacpp://gpt-5", "names no model"),
])
def test_bad_urls_are_config_errors_with_a_hint(tmp_path: Path, url: str, match: str) -> None:
    with pytest.raises(ConfigError, match=match) as info:
        load_adapter("serving", url, base_dir=tmp_path)
    assert info.value.hint


async def test_a_missing_model_file_is_a_config_error(tmp_path: Path) -> None:
    adapter = load_adapter("serving", "llamacpp:///nowhere/model.gguf", base_dir=tmp_path)
    with pytest.raises(ConfigError, match="no model file") as info:
        await adapter.health()
    assert info.value.hint
    await adapter.aclose()


async def test_concurrent_calls_queue_and_each_gets_its_answer(engine: LlamaCppServing) -> None:
    model = ModelRef(name="gemma3-270m", version="1")
    texts = ["Say one.", "Say two.", "Say three."]
    alone = [(await engine.infer(model, generation_request(t, max_tokens=3))).output
             for t in texts]
    together = await asyncio.gather(*(engine.infer(model, generation_request(t, max_tokens=3))
                                      for t in texts))
    assert [p.output for p in together] == alone


async def test_aclose_frees_the_model_and_a_later_call_loads_it_again(
        tmp_path_factory: pytest.TempPathFactory) -> None:
    adapter = load_adapter("serving", f"llamacpp://gemma3-270m?n_ctx={N_CTX}",
                           base_dir=tmp_path_factory.getbasetemp() / "llm")
    model = ModelRef(name="gemma3-270m", version="1")
    first = await adapter.infer(model, generation_request(max_tokens=2))
    await adapter.aclose()
    await adapter.aclose()
    assert not adapter.engine.loaded
    assert (await adapter.infer(model, generation_request(max_tokens=2))).output == first.output
    await adapter.aclose()
