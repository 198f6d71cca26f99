"""Generations through a real :class:`Mesh`, on both LLM backends: llama.cpp in process
(``llamacpp://``) and a real llama.cpp server behind ``openai+http://``, Gemma 3 270M at
temperature 0, a few tokens per call.

Proves what the pipeline and the adapters do together: the record's token usage and cost,
the token quota reserved (prompt + max_tokens) and settled to the actual usage, streaming,
and each bad input of issue 18 with a typed error and a record: a prompt over the context
window (refused before the backend is called), max_tokens over the tenant's token quota, a
missing template variable, invalid JSON under a schema (retried, then InvalidOutput without
the raw answer), a stream cut by the server mid-generation (recorded as an error; the quota
settles what was generated).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any, Literal

import pytest
from aios_mesh_llamacpp import gemma_model_path
from aios_mesh_llamacpp.testing import SERVED_MODEL, llama_server
from pydantic import BaseModel

from aios_mesh import (
    BackendUnavailable,
    CapabilitySpec,
    ContextWindowExceeded,
    Generation,
    InvalidInput,
    InvalidOutput,
    Mesh,
    Price,
    QuotaExceeded,
    TextOutput,
)
from aios_mesh.backends import load_adapter
from aios_mesh.capabilities import SLO
from aios_mesh.config import config_from_mapping
from aios_mesh.ports.registry import ModelRef
from aios_mesh.testing.servers import Server

pytestmark = pytest.mark.integration

N_CTX = 512
PRICE = Price(per_1k_input_tokens=1.0, per_1k_output_tokens=2.0)
BACKENDS = ("llamacpp", "openai")


class Ticket(BaseModel):
    text: str
    customer: str | None = None


class Label(BaseModel):
    label: Literal["billing", "tech"]


def classify(**generate: Any) -> CapabilitySpec:
    # 16 tokens: '{"label": "billing"}' is ~9 Gemma tokens; 8 would cut it
    options: dict[str, Any] = {"prompt": "Classify the ticket: {{ text }}", "max_tokens": 16}
    options.update(generate)
    return CapabilitySpec(name="classify", input=Ticket, output=Label, model="gemma@champion",
                          serving="llm", price=PRICE, generate=Generation(**options),
                          slo=SLO(timeout_s=120))


def classify_for() -> CapabilitySpec:
    return CapabilitySpec(name="classify-for", input=Ticket, output=Label,
                          model="gemma@champion", serving="llm", slo=SLO(timeout_s=120),
                          generate=Generation(prompt="Ticket from {{ customer }}: {{ text }}",
                                              max_tokens=16))


@pytest.fixture(scope="module")
def model_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return gemma_model_path(tmp_path_factory.getbasetemp() / "llm" / "models")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, model_file: Path) -> Iterator[Server]:
    with llama_server(tmp_path_factory.mktemp("llm-server"), n_ctx=N_CTX,
                      model_dir=model_file.parent) as running:
        yield running


def llm_url(backend: str, model_file: Path, server: Server | None, **options: str) -> str:
    if backend == "llamacpp":
        return f"llamacpp:///{model_file}?n_ctx={N_CTX}"  # '////abs': an absolute path
    assert server is not None
    query = {"model": SERVED_MODEL, "response_format": "json_object", "tokenize": "llamacpp",
             "context_window": str(N_CTX), **options}
    return f"openai+http://{server.address}/v1?" + "&".join(f"{k}={v}" for k, v in
                                                            query.items())


def mesh_for(tmp_path: Path, url: str, *specs: CapabilitySpec,
             tenants: dict[str, Any] | None = None) -> Mesh:
    policies = tmp_path / "policies" / "llm"
    policies.mkdir(parents=True, exist_ok=True)
    (policies / "open.rego").write_text("package llm.open\n\nimport rego.v1\n\n"
                                        "default allow := true\n")
    doc = {"state_dir": str(tmp_path), "retry": {"backoff_s": 0.0},
           "backends": {"registry": "memory://", "serving_named": {"llm": url}},
           "tenants": tenants or {"acme": {"quota": {"tokens": 100_000}}}}
    return Mesh(config_from_mapping(doc), capabilities=list(specs or [classify()]))


async def publish(mesh: Mesh) -> None:
    registry = mesh.ports.registry
    version = await registry.register("gemma", "llama.cpp: gemma-3-270m")
    await registry.set_alias("gemma", "champion", version.version)


def records(tmp_path: Path) -> list[dict[str, Any]]:
    path = tmp_path / "audit.jsonl"
    return [json.loads(line)["record"] for line in path.read_text().splitlines()]


def completions_served(server: Server) -> int:
    return server.process.log.read_text(errors="replace").count("/v1/chat/completions")


@pytest.fixture
async def llm_mesh(request: pytest.FixtureRequest, tmp_path: Path, model_file: Path,
                   server: Server) -> AsyncIterator[Mesh]:
    async with mesh_for(tmp_path, llm_url(request.param, model_file, server),
                        classify(), classify_for(),
                        tenants={"acme": {"quota": {"tokens": 100_000}},
                                 "tight": {"quota": {"tokens": 12}}}) as mesh:
        await publish(mesh)
        yield mesh


both = pytest.mark.parametrize("llm_mesh", BACKENDS, indirect=True)


@both
async def test_invoke_and_stream_record_tokens_cost_and_settled_quota(
        llm_mesh: Mesh, tmp_path: Path) -> None:
    result = await llm_mesh.ainvoke("classify", {"text": "I was charged twice."},
                                    tenant="acme")
    assert isinstance(result.output, Label)
    chunks = [c async for c in llm_mesh.stream("classify", {"text": "The app crashes."},
                                               tenant="acme")]
    joined = "".join(c.get("text", "") for c in chunks)
    Label.model_validate_json(joined)
    assert "usage" in chunks[-1]
    invoked, streamed = records(tmp_path)
    assert (invoked["outcome"], invoked["mode"]) == ("ok", "invoke")
    assert (streamed["outcome"], streamed["mode"]) == ("ok", "stream")
    for rec in (invoked, streamed):
        usage = rec["usage"]
        assert usage["input_tokens"] > 5 and 1 <= usage["output_tokens"] <= 16
        assert usage["tokens"] == usage["input_tokens"] + usage["output_tokens"]
        assert rec["cost"] == pytest.approx(usage["input_tokens"] / 1000 +
                                            2 * usage["output_tokens"] / 1000)
    assert invoked["usage"]["estimated"] is False
    # reserved prompt + max_tokens before each call; settled what each really used
    used, cost = await llm_mesh.ports.quota.used("acme")
    assert used.tokens == invoked["usage"]["tokens"] + streamed["usage"]["tokens"]
    assert used.tokens < 2 * (invoked["usage"]["input_tokens"] + 16)
    assert cost == pytest.approx(invoked["cost"] + streamed["cost"])


@both
async def test_a_prompt_over_the_context_window_fails_before_the_backend(
        llm_mesh: Mesh, tmp_path: Path, server: Server) -> None:
    served = completions_served(server)
    with pytest.raises(ContextWindowExceeded) as info:
        await llm_mesh.ainvoke("classify", {"text": "refund " * 600}, tenant="acme")
    assert info.value.hint
    [rec] = records(tmp_path)
    assert rec["outcome"] == "rejected" and rec["error"]["code"] == "context_window_exceeded"
    assert completions_served(server) == served  # the server was never asked
    used, _ = await llm_mesh.ports.quota.used("acme")
    assert used.tokens == 0


@both
async def test_max_tokens_over_the_token_quota_is_refused(llm_mesh: Mesh,
                                                           tmp_path: Path) -> None:
    with pytest.raises(QuotaExceeded) as info:  # max_tokens 16 alone is over 12
        await llm_mesh.ainvoke("classify", {"text": "refund"}, tenant="tight")
    assert info.value.hint
    [rec] = records(tmp_path)
    assert rec["outcome"] == "rejected" and rec["error"]["code"] == "quota_exceeded"


@both
async def test_a_missing_template_variable_is_invalid_input(llm_mesh: Mesh,
                                                             tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="customer"):
        await llm_mesh.ainvoke("classify-for", {"text": "refund"}, tenant="acme")
    [rec] = records(tmp_path)
    assert rec["outcome"] == "rejected" and rec["error"]["code"] == "invalid_input"


@both
async def test_a_template_variable_of_the_wrong_type_is_invalid_input(
        llm_mesh: Mesh, tmp_path: Path, server: Server) -> None:
    served = completions_served(server)
    with pytest.raises(InvalidInput, match="text"):
        await llm_mesh.ainvoke("classify", {"text": ["not", "a", "string"]}, tenant="acme")
    [rec] = records(tmp_path)
    assert rec["outcome"] == "rejected" and rec["error"]["code"] == "invalid_input"
    assert completions_served(server) == served


async def test_invalid_json_under_a_schema_is_retried_then_typed_without_the_answer(
        tmp_path: Path, model_file: Path, server: Server) -> None:
    """With the constraint switched off (?response_format=none) the tiny model writes prose;
    the mesh retries (sampling) and then raises InvalidOutput; neither the error nor the
    record quotes what the model wrote."""
    url = llm_url("openai", model_file, server, response_format="none")
    prompt = "Say hello to {{ text }}."
    spec = classify(prompt=prompt)
    raw_adapter = load_adapter("serving", url, base_dir=tmp_path)
    raw = await raw_adapter.infer(ModelRef(name="gemma", version="1"), {
        "messages": [{"role": "user", "content": "Say hello to Ada."}], "max_tokens": 16,
        "temperature": 0.0, "structured": False})
    await raw_adapter.aclose()
    written = raw.output["text"].strip()
    assert written and not written.startswith("{")
    served = completions_served(server)
    async with mesh_for(tmp_path, url, spec) as mesh:
        await publish(mesh)
        with pytest.raises(InvalidOutput) as info:
            await mesh.ainvoke("classify", {"text": "Ada"}, tenant="acme")
    assert completions_served(server) - served == 3  # retry.max_attempts
    [rec] = records(tmp_path)
    assert rec["outcome"] == "error" and rec["error"]["code"] == "invalid_output"
    shown = json.dumps(rec) + str(info.value)
    assert written not in shown and written[:12] not in shown


async def test_a_stream_cut_by_the_server_is_an_error_and_settles_what_was_used(
        tmp_path: Path, model_file: Path) -> None:
    spec = CapabilitySpec(name="classify", input=Ticket, output=TextOutput, price=PRICE,
                          model="gemma@champion", serving="llm", slo=SLO(timeout_s=120),
                          generate=Generation(prompt="Count from 1 to 500 for {{ text }}, "
                                                     "separated by commas.", max_tokens=300))
    with llama_server(tmp_path / "doomed", n_ctx=N_CTX, model_dir=model_file.parent) as doomed:
        async with mesh_for(tmp_path / "state", llm_url("openai", model_file, doomed),
                            spec) as mesh:
            await publish(mesh)
            got: list[dict[str, Any]] = []

            async def consume() -> None:
                async for chunk in mesh.stream("classify", {"text": "me"}, tenant="acme"):
                    got.append(chunk)
                    if len(got) == 3:
                        doomed.process.kill()

            with pytest.raises(BackendUnavailable) as info:
                await consume()
            assert info.value.hint
            used, _ = await mesh.ports.quota.used("acme")
    assert len(got) >= 3
    [rec] = records(tmp_path / "state")
    assert rec["outcome"] == "error" and rec["mode"] == "stream"
    assert rec["error"]["code"] == "backend_unavailable"
    usage = rec["usage"]
    assert usage["estimated"] is True and 3 <= usage["output_tokens"] < 300
    assert used.tokens == usage["tokens"]  # settled what was generated, not the reservation
