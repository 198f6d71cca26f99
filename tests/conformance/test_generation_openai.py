"""The generation conformance suite on a real llama.cpp server (``python -m
llama_cpp.server``, Gemma 3 270M) through :class:`OpenAIServing`, plus what only the HTTP
adapter promises: the key never shows, errors are typed, an early close reaches the server."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from aios_mesh_llamacpp.testing import SERVED_MODEL, llama_server
from aios_mesh_openai import CountingOpenAIServing, OpenAIServing
from aios_mesh_openai.sse import sse_data

from aios_mesh.backends import load_adapter
from aios_mesh.errors import (
    BackendTimeout,
    BackendUnavailable,
    ConfigError,
    InvalidOutput,
    NotFound,
)
from aios_mesh.ports.registry import ModelRef
from aios_mesh.ports.serving import Serving
from aios_mesh.testing.conformance.generation import (
    GenerationConformance,
    TicketLabel,
    generation_request,
)
from aios_mesh.testing.processes import free_port
from aios_mesh.testing.servers import Server

N_CTX = 1024
KEY = "sk-test-3f9a1c7e-never-shown"
MODEL = ModelRef(name=SERVED_MODEL, version="1")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    base = tmp_path_factory.getbasetemp() / "llm"
    with llama_server(tmp_path_factory.mktemp("llama-server"), n_ctx=N_CTX,
                      model_dir=base / "models", api_key=KEY) as running:
        yield running


def url(server: Server, **options: str) -> str:
    query = "&".join(f"{k}={v}" for k, v in {"response_format": "json_object",
                                               "api_key_env": "LLM_TEST_KEY",
                                               **options}.items())
    return f"openai+http://{server.address}/v1?{query}"


@pytest.fixture(autouse=True)
def key_in_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLM_TEST_KEY", KEY)


class TestOpenAIGeneration(GenerationConformance):
    @pytest.fixture
    async def adapter(self, server: Server, tmp_path: Path) -> AsyncIterator[Serving]:
        adapter = load_adapter("serving", url(server, tokenize="llamacpp",
                                              context_window=str(N_CTX)), base_dir=tmp_path)
        yield adapter
        await adapter.aclose()

    @pytest.fixture
    def model_ref(self) -> ModelRef:
        return MODEL

    @pytest.fixture
    def context_window(self) -> int:
        return N_CTX


async def test_without_tokenize_the_adapter_does_not_claim_to_count(server: Server,
                                                                   tmp_path: Path) -> None:
    from aios_mesh.generation import TokenCounter

    plain = load_adapter("serving", url(server), base_dir=tmp_path)
    counting = load_adapter("serving", url(server, tokenize="llamacpp"), base_dir=tmp_path)
    assert type(plain) is OpenAIServing and not isinstance(plain, TokenCounter)
    assert isinstance(counting, CountingOpenAIServing) and isinstance(counting, TokenCounter)
    # no usage in llama-cpp-python's streams: counted pieces, marked estimated
    chunks = [c async for c in plain.stream(MODEL, generation_request(max_tokens=3))]
    assert chunks[-1]["usage"]["estimated"] is True
    await plain.aclose()
    await counting.aclose()


async def test_an_early_close_reaches_the_server(server: Server, tmp_path: Path) -> None:
    adapter = load_adapter("serving", url(server), base_dir=tmp_path)
    long = generation_request("Count from 1 to 500, separated by commas.", max_tokens=600)
    it = adapter.stream(MODEL, long)
    await anext(it)
    await it.aclose()
    # llama-cpp-python's server logs the disconnect and stops generating; 600 tokens would
    # hold its single generation slot for tens of seconds
    for _ in range(200):
        if "Disconnected from client" in server.process.log.read_text(errors="replace"):
            break
        await asyncio.sleep(0.05)
    assert "Disconnected from client" in server.process.log.read_text(errors="replace")
    answer = await adapter.infer(MODEL, generation_request(max_tokens=2), timeout=15.0)
    assert answer.usage.output_tokens <= 2
    await adapter.aclose()


async def test_a_wrong_key_is_typed_and_never_shown(server: Server, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    wrong = "sk-wrong-77aa5511-never-shown"
    monkeypatch.setenv("LLM_TEST_KEY", wrong)
    adapter = load_adapter("serving", url(server), base_dir=tmp_path)
    with pytest.raises(BackendUnavailable) as info:
        await adapter.infer(MODEL, generation_request(max_tokens=2))
    shown = f"{info.value} {info.value.hint} {info.value.to_dict()} {adapter!r}"
    assert "key" in (info.value.hint or "") and wrong not in shown and KEY not in shown
    with pytest.raises(BackendUnavailable):
        await adapter.health()
    await adapter.aclose()


async def test_a_key_file_works_and_repr_masks_it(server: Server, tmp_path: Path) -> None:
    (tmp_path / "key").write_text(KEY + "\n")
    adapter = load_adapter("serving", f"openai+http://{server.address}/v1?api_key_file=key"
                                      "&response_format=json_object", base_dir=tmp_path)
    await adapter.health()
    assert KEY not in repr(adapter) and "***" in repr(adapter)
    await adapter.aclose()


def test_a_key_in_the_url_is_refused_masked(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_adapter("serving", f"openai+http://127.0.0.1:1/v1?api_key={KEY}", base_dir=tmp_path)
    assert KEY not in str(info.value) and "***" in str(info.value)
    with pytest.raises(ConfigError, match="LLM_MISSING_KEY") as missing:
        load_adapter("serving", "openai+http://127.0.0.1:1/v1?api_key_env=LLM_MISSING_KEY",
                     base_dir=tmp_path)
    assert missing.value.hint


async def test_json_schema_dialect_on_llama_cpp_python_fails_typed(server: Server,
                                                                  tmp_path: Path) -> None:
    """llama-cpp-python's server answers OpenAI's json_schema with HTTP 500 (hence
    ?response_format=json_object); the adapter reports it typed and retryable."""
    adapter = load_adapter("serving", url(server, response_format="json_schema"),
                           base_dir=tmp_path)
    with pytest.raises(BackendUnavailable) as info:
        await adapter.infer(MODEL, generation_request(max_tokens=8, output=TicketLabel))
    assert "500" in str(info.value)
    await adapter.aclose()


async def test_no_constraint_gives_invalid_output_without_the_text(server: Server,
                                                                   tmp_path: Path) -> None:
    adapter = load_adapter("serving", url(server, response_format="none"), base_dir=tmp_path)
    with pytest.raises(InvalidOutput) as info:
        await adapter.infer(MODEL, generation_request("Say: hello there", max_tokens=6,
                                                      output=TicketLabel))
    assert "hello" not in str(info.value).lower()
    await adapter.aclose()


async def test_nothing_listening_is_backend_unavailable(tmp_path: Path) -> None:
    adapter = load_adapter("serving", f"openai+http://127.0.0.1:{free_port()}/v1",
                           base_dir=tmp_path)
    with pytest.raises(BackendUnavailable) as info:
        await adapter.infer(MODEL, generation_request(max_tokens=2))
    assert info.value.retryable and info.value.hint
    await adapter.aclose()


async def test_a_wrong_path_is_not_found(server: Server, tmp_path: Path) -> None:
    adapter = load_adapter("serving", f"openai+http://{server.address}/v2?api_key_env="
                                      "LLM_TEST_KEY", base_dir=tmp_path)
    with pytest.raises(NotFound) as info:
        await adapter.infer(MODEL, generation_request(max_tokens=2))
    assert "/v1" in (info.value.hint or "") and not info.value.retryable
    await adapter.aclose()


async def _lines(*lines: str) -> AsyncIterator[str]:
    for line in lines:
        yield line


@pytest.mark.parametrize(("lines", "events"), [
    (["data: {\"a\": 1}", "", "data: [DONE]", ""], ['{"a": 1}', "[DONE]"]),
    ([": ping", "", "event: x", "data:{\"b\"", "data: : 2}", "", "data: [DONE]"],
     ['{"b"\n: 2}', "[DONE]"]),
    (["data: 1\r", "\r", "data: [DONE]", "", "data: after"], ["1", "[DONE]"]),
    (["data: cut"], ["cut"]),
], ids=["plain", "comments-and-multiline", "crlf-and-stop", "no-blank-line"])
async def test_sse_events(lines: list[str], events: list[str]) -> None:
    assert [e async for e in sse_data(_lines(*lines))] == events


async def test_a_read_timeout_is_backend_timeout(server: Server, tmp_path: Path) -> None:
    adapter = load_adapter("serving", url(server, read_timeout="50ms"), base_dir=tmp_path)
    with pytest.raises(BackendTimeout) as info:  # 20 tokens take far longer than 50 ms
        await adapter.infer(MODEL, generation_request(max_tokens=20))
    assert info.value.retryable and info.value.hint
    await adapter.aclose()
