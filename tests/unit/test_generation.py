"""The generative path's core: templates, the wire format, and a generation through the
pipeline (prompt rendered after redaction, tokens reserved and settled, streamed usage,
off-schema answers retried). The LLM here is a scripted fake; the real engines are proven in
tests/integration/test_llm_*.py and tests/conformance/test_generation_*.py."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import BaseModel, ValidationError

from aios_mesh import (
    CapabilitySpec,
    ChatInput,
    ConfigError,
    ContextWindowExceeded,
    Generation,
    InvalidInput,
    InvalidOutput,
    Mesh,
    Price,
    QuotaExceeded,
    TextOutput,
)
from aios_mesh.config import config_from_mapping
from aios_mesh.generation import (
    PromptTemplate,
    completion_to_prediction,
    estimate_tokens,
    response_format,
    stream_delta,
    usage_of,
)
from aios_mesh.ports.base import Feature
from aios_mesh.ports.registry import ModelRef
from aios_mesh.ports.serving import Prediction, ServingBase, Usage
from tests.unit.fakes import StaticPolicy, StaticRegistry


class Ticket(BaseModel):
    text: str
    customer: str = "unknown"


class Label(BaseModel):
    label: str


# -- templates -------------------------------------------------------------------------------
def test_a_template_names_its_variables_and_renders_them() -> None:
    t = PromptTemplate("Ticket from {{customer}}: {{ text }}")
    assert t.variables == {"customer", "text"}
    [msg] = t.render({"text": "refund", "customer": "ada"})
    assert (msg.role, msg.content) == ("user", "Ticket from ada: refund")


def test_a_chat_template_keeps_its_roles_and_reads_back_from_json() -> None:
    raw = json.dumps([{"role": "system", "content": "Be brief."},
                      {"role": "user", "content": "{{text}}"}])
    msgs = PromptTemplate.parse(raw).render({"text": "hi"})
    assert [(m.role, m.content) for m in msgs] == [("system", "Be brief."), ("user", "hi")]


def test_a_missing_variable_is_a_typed_error_naming_it() -> None:
    with pytest.raises(InvalidInput, match="customer"):
        PromptTemplate("{{ customer }}").render({})


def test_variables_must_be_fields_of_the_input_model() -> None:
    with pytest.raises(ConfigError, match="priority"):
        PromptTemplate("{{ priority }}").check_variables(Ticket, where="t")
    with pytest.raises(ValidationError, match="priority"):
        CapabilitySpec(name="t", input=Ticket, output=Label, model="m@a",
                       generate=Generation(prompt="{{ priority }}"))


def test_a_generation_without_a_prompt_takes_chat_messages() -> None:
    with pytest.raises(ValidationError, match="ChatInput"):
        CapabilitySpec(name="t", input=Ticket, output=TextOutput, model="m@a",
                       generate=Generation())
    CapabilitySpec(name="t", input=ChatInput, output=TextOutput, model="m@a",
                   generate=Generation())


@given(st.text(), st.text())
def test_values_are_placed_verbatim_never_re_rendered(text: str, customer: str) -> None:
    [msg] = PromptTemplate("<{{text}}|{{customer}}>").render(
        {"text": text or "x", "customer": customer or "y"})
    assert msg.content == f"<{text or 'x'}|{customer or 'y'}>"


# -- wire ------------------------------------------------------------------------------------
def _answer(content: str, usage: dict[str, int] | None = None) -> dict[str, Any]:
    doc: dict[str, Any] = {"choices": [{"message": {"role": "assistant", "content": content},
                                        "finish_reason": "stop"}]}
    if usage is not None:
        doc["usage"] = usage
    return doc


def test_answers_become_predictions_with_the_reported_usage() -> None:
    p = completion_to_prediction(_answer("hello", {"prompt_tokens": 7, "completion_tokens": 2}),
                                 structured=False)
    assert p.output == {"text": "hello"}
    assert (p.usage.input_tokens, p.usage.output_tokens, p.usage.tokens) == (7, 2, 9)
    assert completion_to_prediction(_answer('{"label": "billing"}'),
                                    structured=True).output == {"label": "billing"}


def test_an_answer_that_is_not_json_is_invalid_output_without_quoting_it() -> None:
    with pytest.raises(InvalidOutput) as info:
        completion_to_prediction(_answer("my secret is hunter2"), structured=True)
    assert "hunter2" not in str(info.value)
    with pytest.raises(InvalidOutput, match="not an object"):
        completion_to_prediction(_answer("[1, 2]"), structured=True)


def test_stream_deltas_and_usage_shapes() -> None:
    assert stream_delta({"choices": [{"delta": {"content": "he"}}]}) == "he"
    assert stream_delta({"choices": [{"delta": {"role": "assistant"}}]}) == ""
    assert stream_delta({"choices": [], "usage": {}}) == ""
    assert usage_of(None) is None
    assert usage_of({"prompt_tokens": 3, "completion_tokens": 4}) == Usage.of_tokens(3, 4)


def test_response_format_carries_the_output_schema() -> None:
    rf = response_format(Label)
    assert rf["type"] == "json_schema"
    assert rf["json_schema"]["schema"]["properties"]["label"]["type"] == "string"


def test_prices_split_input_and_output_tokens() -> None:
    price = Price(per_1k_input_tokens=1.0, per_1k_output_tokens=3.0, per_call=0.5)
    assert price.cost(Usage.of_tokens(1000, 2000)) == pytest.approx(0.5 + 1.0 + 6.0)
    assert estimate_tokens([{"role": "user", "content": "x" * 300}]) >= 75


# -- through the pipeline ----------------------------------------------------------------------
class ScriptedLLM(ServingBase):
    """A fake LLM backend: answers from a script of contents; streams a content word by word
    and then its usage. Records the requests it received."""

    features = frozenset({Feature.BATCH, Feature.GENERATION, Feature.STREAMING})

    def __init__(self, *contents: str, usage: tuple[int, int] | None = (11, 3)) -> None:
        self.contents = list(contents) or ['{"label": "billing"}']
        self.usage = usage
        self.requests: list[dict[str, Any]] = []
        self.stopped_after: int | None = None

    def _content(self) -> str:
        return self.contents[min(len(self.requests) - 1, len(self.contents) - 1)]

    async def infer_batch(self, model: ModelRef, payloads: Sequence[Mapping[str, Any]], *,
                          timeout: float | None = None) -> list[Prediction]:
        out = []
        for payload in payloads:
            self.requests.append(json.loads(json.dumps(payload)))
            usage = None if self.usage is None else {"prompt_tokens": self.usage[0],
                                                     "completion_tokens": self.usage[1]}
            out.append(completion_to_prediction(_answer(self._content(), usage),
                                                structured=payload["structured"]))
        return out

    async def _chunks(self, payload: Mapping[str, Any]) -> AsyncIterator[dict[str, Any]]:
        self.requests.append(json.loads(json.dumps(payload)))
        words = self._content().split(" ")
        sent = 0
        try:
            for i, word in enumerate(words):
                await asyncio.sleep(0)
                yield {"text": word if i == 0 else f" {word}"}
                sent += 1
            if self.usage is not None:
                yield {"usage": {"input_tokens": self.usage[0], "output_tokens": sent},
                       "finish_reason": "stop"}
        finally:
            self.stopped_after = sent

    def stream(self, model: ModelRef, payload: Mapping[str, Any], *,
               timeout: float | None = None) -> AsyncIterator[dict[str, Any]]:
        return self._chunks(payload)


def gen_spec(**kw: Any) -> CapabilitySpec:
    options: dict[str, Any] = {
        "name": "classify-ticket", "input": Ticket, "output": Label, "model": "clf@champion",
        "generate": Generation(prompt="Classify for {{customer}}: {{text}}", max_tokens=16,
                               system="Answer in JSON."),
        "price": Price(per_1k_input_tokens=1.0, per_1k_output_tokens=2.0)}
    options.update(kw)
    return CapabilitySpec(**options)


def gen_mesh(tmp_path: Path, llm: ScriptedLLM, spec: CapabilitySpec | None = None,
             **config: Any) -> Mesh:
    doc: dict[str, Any] = {"state_dir": str(tmp_path), "retry": {"backoff_s": 0.0},
                           "tenants": {"acme": {}, "globex": {}}, **config}
    return Mesh(config_from_mapping(doc), capabilities=[spec or gen_spec()],
                adapters={"serving": llm, "registry": StaticRegistry({"clf@champion": "3"}),
                          "policy": StaticPolicy()})


def audit(tmp_path: Path) -> list[dict[str, Any]]:
    return [json.loads(line)["record"]
            for line in (tmp_path / "audit.jsonl").read_text().splitlines()]


def test_a_generation_renders_its_prompt_and_records_tokens_and_cost(tmp_path: Path) -> None:
    llm = ScriptedLLM()
    with gen_mesh(tmp_path, llm) as mesh:
        result = mesh.invoke("classify-ticket", {"text": "refund", "customer": "ada"},
                             tenant="acme")
    assert result.output == Label(label="billing")
    [req] = llm.requests
    assert req["messages"] == [{"role": "system", "content": "Answer in JSON."},
                               {"role": "user", "content": "Classify for ada: refund"}]
    assert req["max_tokens"] == 16 and req["temperature"] == 0.0 and req["structured"]
    assert req["response_format"]["json_schema"]["name"] == "Label"
    [rec] = audit(tmp_path)
    assert rec["usage"] == {"calls": 1, "tokens": 14, "gpu_seconds": 0.0, "input_tokens": 11,
                            "output_tokens": 3, "estimated": False}
    assert rec["cost"] == pytest.approx(11 / 1000 + 2 * 3 / 1000)


def test_the_prompt_sees_redacted_fields_when_the_backend_is_external(tmp_path: Path) -> None:
    llm = ScriptedLLM()
    with gen_mesh(tmp_path, llm, gen_spec(external=True)) as mesh:
        mesh.invoke("classify-ticket", {"text": "mail bob@example.com", "customer": "ada"},
                    tenant="acme")
    content = llm.requests[0]["messages"][1]["content"]
    assert "bob@example.com" not in content and "[EMAIL]" in content


def test_token_quota_reserves_prompt_plus_max_tokens_before_the_call(tmp_path: Path) -> None:
    llm = ScriptedLLM()
    tight = {"acme": {"quota": {"tokens": 20}}, "globex": {}}  # prompt (~20) + 16 > 20
    with gen_mesh(tmp_path, llm, tenants=tight) as mesh, pytest.raises(QuotaExceeded):
        mesh.invoke("classify-ticket", {"text": "refund"}, tenant="acme")
    assert llm.requests == []  # refused before anything was spent
    [rec] = audit(tmp_path)
    assert rec["outcome"] == "rejected" and rec["error"]["code"] == "quota_exceeded"


def test_a_prompt_over_the_context_window_fails_before_any_token(tmp_path: Path) -> None:
    llm = ScriptedLLM()
    small = gen_spec(generate=Generation(prompt="{{text}}", max_tokens=16, context_window=32))
    with gen_mesh(tmp_path, llm, small) as mesh, pytest.raises(ContextWindowExceeded):
        mesh.invoke("classify-ticket", {"text": "word " * 50}, tenant="acme")
    assert llm.requests == []
    assert audit(tmp_path)[0]["error"]["code"] == "context_window_exceeded"


def test_an_off_schema_answer_is_retried_with_sampling_then_fails_typed(tmp_path: Path) -> None:
    llm = ScriptedLLM("not json", '{"label": "tech"}')
    with gen_mesh(tmp_path, llm) as mesh:
        assert mesh.invoke("classify-ticket", {"text": "x"}, tenant="acme").output.label == \
            "tech"
    assert [r["temperature"] for r in llm.requests] == [0.0, 0.3]
    always_bad = ScriptedLLM('{"nope": 1}')
    with gen_mesh(tmp_path / "2", always_bad) as mesh, pytest.raises(InvalidOutput):
        mesh.invoke("classify-ticket", {"text": "x"}, tenant="acme")
    assert len(always_bad.requests) == 3  # retry.max_attempts
    [rec] = audit(tmp_path / "2")
    assert rec["outcome"] == "error" and "nope" not in json.dumps(rec["error"])


def test_a_streamed_generation_is_assembled_validated_and_charged(tmp_path: Path) -> None:
    llm = ScriptedLLM("hello there world")
    spec = gen_spec(output=TextOutput, generate=Generation(prompt="{{text}}", max_tokens=8))

    async def run() -> list[dict[str, Any]]:
        async with gen_mesh(tmp_path, llm, spec) as mesh:
            return [c async for c in mesh.stream("classify-ticket", {"text": "hi"},
                                                 tenant="acme")]

    chunks = asyncio.run(run())
    assert "".join(c.get("text", "") for c in chunks) == "hello there world"
    assert chunks[-1]["usage"] == {"input_tokens": 11, "output_tokens": 3}
    [rec] = audit(tmp_path)
    assert rec["outcome"] == "ok" and rec["mode"] == "stream"
    assert rec["usage"]["output_tokens"] == 3 and rec["output_sha256"]


def test_a_stream_left_early_charges_what_was_generated(tmp_path: Path) -> None:
    llm = ScriptedLLM("one two three four five six", usage=None)
    spec = gen_spec(output=TextOutput, generate=Generation(prompt="{{text}}", max_tokens=8))

    async def run() -> None:
        async with gen_mesh(tmp_path, llm, spec) as mesh:
            stream = mesh.stream("classify-ticket", {"text": "hi"}, tenant="acme", buffer=1)
            async for _ in stream:
                break
            await stream.aclose()

    asyncio.run(run())
    assert llm.stopped_after is not None and llm.stopped_after < 6
    [rec] = audit(tmp_path)
    assert rec["outcome"] == "cancelled"
    assert rec["usage"]["estimated"] is True and 1 <= rec["usage"]["output_tokens"] < 6


def test_a_caller_may_ask_for_fewer_tokens_and_another_temperature(tmp_path: Path) -> None:
    llm = ScriptedLLM()
    with gen_mesh(tmp_path, llm) as mesh:
        mesh.invoke("classify-ticket", {"text": "x"}, tenant="acme",
                    attributes={"max_tokens": 4, "temperature": 0.7})
        mesh.invoke("classify-ticket", {"text": "x"}, tenant="acme",
                    attributes={"max_tokens": 999})  # never more than declared
        with pytest.raises(InvalidInput, match="max_tokens"):
            mesh.invoke("classify-ticket", {"text": "x"}, tenant="acme",
                        attributes={"max_tokens": 0})
    assert [(r["max_tokens"], r["temperature"]) for r in llm.requests] == [(4, 0.7), (16, 0.0)]
