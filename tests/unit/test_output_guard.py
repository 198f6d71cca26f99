"""The output guard's logic: obligations parsed and merged, the scanner, and the step's
mask / deny / review / hold decisions on a mesh with scripted serving and policy fakes
(core logic only; tests/integration/test_output_guard.py runs it on the real Rego engine)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel, Field

from aios_mesh import SLO, CapabilitySpec, InvalidOutput, Mesh, PolicyDenied
from aios_mesh.config import config_from_mapping
from aios_mesh.embedded.serving import InProcessServing
from aios_mesh.pipeline.call import Call
from aios_mesh.pipeline.guard import (
    BLOCKED_TERM,
    OUTPUT_BLOCKED,
    Finding,
    OutputGuard,
    OutputScanner,
    install_output_guard,
    schema_review,
)
from aios_mesh.ports.policy import (
    Decision,
    Obligations,
    OutputObligations,
    PolicyCheck,
    decision_from_result,
)
from aios_mesh.review import ReviewQueue
from tests.unit.fakes import ScriptedServing, StaticPolicy, StaticRegistry

EMAIL = "jane.doe@example.com"
IBAN = "DE89 3704 0044 0532 0130 00"


class Ticket(BaseModel):
    text: str


class Answer(BaseModel):
    text: str


class Short(BaseModel):
    text: str = Field(max_length=12)


def spec(**kw: Any) -> CapabilitySpec:
    base: dict[str, Any] = {"name": "answer-ticket", "input": Ticket, "output": Answer,
                            "model": "clf@champion", "slo": SLO(timeout_s=2), "policy": "p"}
    base.update(kw)
    return CapabilitySpec(**base)


def make_mesh(tmp_path: Path, serving: Any, output: OutputObligations | dict[str, Any],
              *, caps: list[CapabilitySpec] | None = None,
              config: dict[str, Any] | None = None) -> Mesh:
    per_tenant = output if isinstance(output, dict) else {"acme": output}
    policy = StaticPolicy(obligations={t: Obligations(output=o) for t, o in per_tenant.items()})
    doc: dict[str, Any] = {"state_dir": str(tmp_path), "tenants": {"acme": {}, "globex": {}},
                           "retry": {"backoff_s": 0.0}, **(config or {})}
    mesh = Mesh(config_from_mapping(doc), capabilities=caps or [spec()],
                adapters={"serving": serving, "policy": policy,
                          "registry": StaticRegistry({"clf@champion": "3"})})
    default = mesh.config.policy.default is not None
    install_output_guard(mesh.pipeline, OutputGuard(mesh.review_queue, default_policy=default))
    return mesh


def records(tmp_path: Path) -> list[dict[str, Any]]:
    lines = (tmp_path / "audit.jsonl").read_text().splitlines()
    return [json.loads(line)["record"] for line in lines]


def guard_of(record: dict[str, Any]) -> Any:
    return record["policy"]["checks"][-1]["guard"]


# ---------------------------------------------------------------------- the obligations


def _parse(obligations: Any) -> Decision:
    return decision_from_result({"allow": True, "obligations": obligations}, package="p",
                                path="p", bundle_hash="h", where="test")


def test_output_obligations_parse() -> None:
    d = _parse({"output": {"pii": "mask", "pii_kinds": ["email"], "blocked_terms":
                           [" Falcon ", "falcon ", "acme corp"], "on_blocked": "review",
                           "schema": "review"}})
    assert d.obligations.output == OutputObligations(
        pii="mask", pii_kinds=("email",), blocked_terms=("Falcon", "falcon", "acme corp"),
        on_blocked="review", schema="review")
    assert _parse({"redact": ["email"]}).obligations.output == OutputObligations()
    assert not _parse({}).obligations.output.checks_content


@pytest.mark.parametrize(("output", "says"), [
    ("mask", "obligations.output must be an object"),
    ({"pii": "hide"}, "obligations.output.pii must be one of mask, review, deny"),
    ({"on_blocked": True}, "obligations.output.on_blocked must be one of"),
    ({"schema": "mask"}, "obligations.output.schema must be one of review, deny"),
    ({"blocked_terms": "falcon"}, "obligations.output.blocked_terms must be a list"),
    ({"blocked_terms": ["  "]}, "non-blank strings"),
    ({"blocked_terms": ["x" * 101]}, "at most 100 characters"),
    ({"blocked_terms": ["x"] * 257}, "at most 256"),
    ({"pii_kinds": [1]}, "obligations.output.pii_kinds must be a list"),
    ({"pii": "mask", "toxicity": "deny"}, "unknown output obligation(s) toxicity"),
])
def test_malformed_output_obligations_are_typed(output: Any, says: str) -> None:
    with pytest.raises(InvalidOutput) as err:
        _parse({"output": output})
    assert says in str(err.value) and err.value.hint


def test_merge_takes_the_stricter_action_and_joins_terms() -> None:
    a = OutputObligations(pii="mask", pii_kinds=("email",), blocked_terms=("x",),
                          on_blocked="mask")
    b = OutputObligations(pii="review", pii_kinds=("iban",), blocked_terms=("y", "x"),
                          on_blocked="deny", schema="review")
    merged = OutputObligations.merge([a, b])
    assert merged == OutputObligations(pii="review", pii_kinds=("email", "iban"),
                                       blocked_terms=("x", "y"), on_blocked="deny",
                                       schema="review")
    # a policy that names no kinds asks for every kind
    every = OutputObligations.merge([a, OutputObligations(pii="mask")])
    assert every.pii_kinds == () and every.pii == "mask"
    assert OutputObligations.merge([]) == OutputObligations()
    assert OutputObligations.merge([OutputObligations(schema="deny"), b]).schema == "deny"


def test_the_record_shows_actions_and_counts_never_the_terms() -> None:
    o = OutputObligations(pii="mask", blocked_terms=("project falcon",))
    check = PolicyCheck(Decision(True, obligations=Obligations(output=o), policy="p"))
    doc = check.to_record()
    assert doc["output"] == {"pii": "mask", "pii_kinds": [], "blocked_terms": 1,
                             "on_blocked": "deny", "schema": None}
    assert "falcon" not in json.dumps(doc)
    # a policy without output obligations keeps the record's former shape
    assert "output" not in PolicyCheck(Decision(True, policy="p")).to_record()


# ---------------------------------------------------------------------- the scanner


def test_terms_are_whole_words_in_any_case() -> None:
    scan = OutputScanner().scan
    o = OutputObligations(blocked_terms=("falcon", "acme corp"))
    found = scan({"a": "FALCON lands; Falcons fly; falcon-9", "b": "acme  corp, ACME CORP"}, o)
    assert found.value == {"a": "[BLOCKED_TERM] lands; Falcons fly; [BLOCKED_TERM]-9",
                           "b": "acme  corp, [BLOCKED_TERM]"}
    assert found.counts == {BLOCKED_TERM: 3}
    # terms are literal text, not patterns
    assert scan("a.c abc", OutputObligations(blocked_terms=("a.c",))).counts == {BLOCKED_TERM: 1}


def test_pii_uses_the_mesh_detectors_and_kinds_narrow_them() -> None:
    scan = OutputScanner().scan
    text = f"mail {EMAIL}, pay {IBAN}"
    assert scan(text, OutputObligations(pii="mask")).value == "mail [EMAIL], pay [IBAN]"
    only = scan(text, OutputObligations(pii="mask", pii_kinds=("iban",)))
    assert only.value == f"mail {EMAIL}, pay [IBAN]" and only.counts == {"iban": 1}
    # a blocked term inside an address does not leave the rest of the address in clear
    both = scan(text, OutputObligations(pii="mask", blocked_terms=("example",)))
    assert both.value == "mail [EMAIL], pay [IBAN]"


@pytest.mark.parametrize(("counts", "pii", "on_blocked", "action"), [
    ({}, "deny", "deny", None),
    ({"email": 1}, None, "deny", None),
    ({"email": 1}, "mask", "deny", "mask"),
    ({"email": 1, BLOCKED_TERM: 1}, "mask", "review", "review"),
    ({"email": 1, BLOCKED_TERM: 1}, "deny", "mask", "deny"),
    ({BLOCKED_TERM: 2}, "review", "mask", "mask"),
])
def test_the_strictest_action_wins(counts: dict[str, int], pii: Any, on_blocked: Any,
                                   action: str | None) -> None:
    o = OutputObligations(pii=pii, blocked_terms=("x",), on_blocked=on_blocked)
    assert Finding("v", counts).action(o) == action


# ---------------------------------------------------------------------- the step


def test_mask_replaces_values_and_records_kinds_and_counts(tmp_path: Path) -> None:
    serving = ScriptedServing({"text": f"write to {EMAIL} or {IBAN}"})
    with make_mesh(tmp_path, serving, OutputObligations(pii="mask")) as mesh:
        result = mesh.invoke("answer-ticket", {"text": "x"}, tenant="acme")
        clean = mesh.invoke("answer-ticket", {"text": "x"}, tenant="globex")
    assert result.output == Answer(text="write to [EMAIL] or [IBAN]")
    assert clean.output.text == f"write to {EMAIL} or {IBAN}"  # globex has no obligation
    rec, other = records(tmp_path)
    assert rec["outcome"] == "ok"
    assert guard_of(rec) == {"action": "mask", "kinds": ["email", "iban"], "count": 2}
    assert rec["policy"]["checks"][-1]["output"]["pii"] == "mask"
    assert "output" not in other["policy"]["checks"][-1]
    assert EMAIL not in (tmp_path / "audit.jsonl").read_text()


def test_a_clean_answer_passes_and_says_so(tmp_path: Path) -> None:
    with make_mesh(tmp_path, ScriptedServing({"text": "all good"}),
                   OutputObligations(pii="deny", blocked_terms=("falcon",))) as mesh:
        assert mesh.invoke("answer-ticket", {"text": "x"}, tenant="acme").output.text == \
            "all good"
    assert guard_of(records(tmp_path)[0]) == {"action": "pass", "kinds": [], "count": 0}


def test_deny_blocks_the_answer_without_quoting_it(tmp_path: Path) -> None:
    serving = ScriptedServing({"text": "Project FALCON ships to jane.doe@example.com"})
    obligations = OutputObligations(pii="mask", blocked_terms=("project falcon",))
    with make_mesh(tmp_path, serving, obligations) as mesh, \
            pytest.raises(PolicyDenied) as err:
        mesh.invoke("answer-ticket", {"text": "x"}, tenant="acme")
    denied = err.value
    assert denied.reason_code == OUTPUT_BLOCKED and denied.policy == "p" and denied.hint
    assert "blocked_term x1" in str(denied) and "email x1" in str(denied)
    rec = records(tmp_path)[0]
    assert rec["outcome"] == "denied" and rec["error"]["code"] == "policy_denied"
    assert "blocked_term x1" in rec["error"]["message"]
    assert guard_of(rec) == {"action": "deny", "kinds": ["blocked_term", "email"], "count": 2}
    text = (tmp_path / "audit.jsonl").read_text().lower()
    assert "falcon" not in text and "jane.doe" not in text
    assert serving.calls == 1  # a blocked answer is not retried


def test_review_parks_the_answer_and_gives_the_caller_none(tmp_path: Path) -> None:
    serving = ScriptedServing({"text": "falcon"})
    obligations = OutputObligations(blocked_terms=("falcon",), on_blocked="review")
    with make_mesh(tmp_path, serving, obligations) as mesh:
        result = mesh.invoke("answer-ticket", {"text": "x"}, tenant="acme")
        item = mesh.review_queue().get(result.review_id or "")
    assert result.output is None and result.needs_review
    assert item.reason == "policy obligation output: blocked_term x1"
    assert item.proposed == {"text": "falcon"}  # the reviewer sees what was caught
    rec = records(tmp_path)[0]
    assert rec["outcome"] == "review" and rec["review_id"] == item.id
    assert guard_of(rec)["action"] == "review"


def test_a_masked_answer_that_no_longer_fits_is_denied(tmp_path: Path) -> None:
    serving = ScriptedServing({"text": "a@example.io"})  # [EMAIL] would fit; [BLOCKED_TERM] not
    obligations = OutputObligations(blocked_terms=("a",), on_blocked="mask")
    with make_mesh(tmp_path, serving, obligations, caps=[spec(output=Short)]) as mesh, \
            pytest.raises(PolicyDenied) as err:
        mesh.invoke("answer-ticket", {"text": "x"}, tenant="acme")
    assert err.value.reason_code == OUTPUT_BLOCKED and "no longer matches Short" in str(err.value)
    assert guard_of(records(tmp_path)[0])["action"] == "deny"


def test_capabilities_without_policy_never_enter_the_guard(tmp_path: Path) -> None:
    bare = spec(name="bare", policy=None)
    with make_mesh(tmp_path, ScriptedServing({"text": EMAIL}), OutputObligations(pii="deny"),
                   caps=[spec(), bare]) as mesh:
        assert "guard_output" not in [s.name for s in mesh.pipeline.plan(bare)]
        assert "guard_output_hold" not in [s.name for s in mesh.pipeline.plan(bare)]
        assert "guard_output" in [s.name for s in mesh.pipeline.plan(mesh.catalog.get(
            "answer-ticket"))]
        assert mesh.invoke("bare", {"text": "x"}, tenant="acme").output.text == EMAIL
    # with a mesh-wide default policy every capability may be obliged
    with make_mesh(tmp_path / "d", ScriptedServing({"text": EMAIL}),
                   OutputObligations(pii="mask"), caps=[bare],
                   config={"policy": {"default": "mesh/default"}}) as mesh:
        assert mesh.invoke("bare", {"text": "x"}, tenant="acme").output.text == "[EMAIL]"


def test_guard_comes_after_invoke_and_before_the_confidence_gate(tmp_path: Path) -> None:
    with make_mesh(tmp_path, ScriptedServing(), OutputObligations()) as mesh:
        names = mesh.pipeline.names
    assert names.index("guard_output_hold") == names.index("invoke") - 1
    assert names.index("guard_output") == names.index("invoke") + 1
    assert names.index("guard_output") < names.index("confidence_gate")


# ---------------------------------------------------------------------- streaming


def _streaming(chunks: list[dict[str, Any]]) -> InProcessServing:
    serving = InProcessServing()
    serving.register("clf", "3", lambda batch: [{"text": "whole"} for _ in batch],
                     stream=lambda payload: iter(chunks))
    return serving


async def test_a_held_stream_is_released_masked(tmp_path: Path) -> None:
    chunks = [{"token": "mail"}, {"token": EMAIL}, {"token": "now"}]
    mesh = make_mesh(tmp_path, _streaming(chunks), OutputObligations(pii="mask"))
    got = [c async for c in mesh.stream("answer-ticket", {"text": "x"}, tenant="acme")]
    clean = [c async for c in mesh.stream("answer-ticket", {"text": "x"}, tenant="globex")]
    await mesh.aclose()
    assert got == [{"token": "mail"}, {"token": "[EMAIL]"}, {"token": "now"}]
    assert clean == chunks
    rec = records(tmp_path)[0]
    assert rec["mode"] == "stream" and guard_of(rec) == {"action": "mask", "kinds": ["email"],
                                                         "count": 1}


async def test_only_a_stream_with_output_obligations_is_held(tmp_path: Path) -> None:
    produced: list[int] = []

    def count(payload: dict[str, Any]) -> Any:
        for i in range(5):
            produced.append(i)
            yield {"token": str(i)}

    serving = InProcessServing()
    serving.register("clf", "3", lambda batch: [{"text": "x"} for _ in batch], stream=count)
    mesh = make_mesh(tmp_path, serving, OutputObligations(pii="mask"))
    seen: dict[str, int] = {}
    for tenant in ("acme", "globex"):  # acme's policy has output obligations, globex's not
        produced.clear()
        async for _ in mesh.stream("answer-ticket", {"text": "x"}, tenant=tenant, buffer=1):
            seen.setdefault(tenant, len(produced))  # how far the backend got by chunk one
    await mesh.aclose()
    assert seen["acme"] == 5  # held: the first chunk left after the whole answer was checked
    assert seen["globex"] < 5  # streamed as produced (one buffered chunk at most)


async def test_a_denied_stream_sends_nothing(tmp_path: Path) -> None:
    chunks = [{"token": "the"}, {"token": "falcon"}]
    mesh = make_mesh(tmp_path, _streaming(chunks), OutputObligations(blocked_terms=("falcon",)))
    got: list[dict[str, Any]] = []

    async def consume() -> None:
        async for chunk in mesh.stream("answer-ticket", {"text": "x"}, tenant="acme"):
            got.append(chunk)

    with pytest.raises(PolicyDenied) as err:
        await consume()
    await mesh.aclose()
    assert got == [] and err.value.reason_code == OUTPUT_BLOCKED
    assert records(tmp_path)[0]["outcome"] == "denied"


async def test_a_stream_for_review_sends_nothing(tmp_path: Path) -> None:
    chunks = [{"token": "falcon"}]
    mesh = make_mesh(tmp_path, _streaming(chunks),
                     OutputObligations(blocked_terms=("falcon",), on_blocked="review"))
    got = [c async for c in mesh.stream("answer-ticket", {"text": "x"}, tenant="acme")]
    await mesh.aclose()
    assert got == [] and records(tmp_path)[0]["outcome"] == "review"


def test_a_generations_text_is_masked_as_a_whole() -> None:
    # an address split over two deltas is found; usage and finish chunks pass unchanged
    guard = OutputGuard(lambda: pytest.fail("no review"))  # type: ignore[arg-type,return-value]
    deltas = [{"text": "mail jane.doe@exa"}, {"text": "mple.com now"},
              {"usage": {"input_tokens": 3, "output_tokens": 5}, "finish_reason": "stop"}]
    out = guard._masked_text(deltas, OutputObligations(pii="mask"))
    assert out == [{"text": "mail [EMAIL] now"}, deltas[2]]


# ---------------------------------------------------------------------- schema obligation


def test_schema_review_parks_an_off_schema_answer(tmp_path: Path) -> None:
    queue = ReviewQueue(tmp_path / "review.db")
    decision = Decision(True, obligations=Obligations(output=OutputObligations(
        schema="review")), policy="p")
    call = Call(spec=spec(), tenant="acme", caller="c", raw={}, record_id="r1",
                policy_checks=(PolicyCheck(decision),))
    error = InvalidOutput("backend answer does not match Answer: text: field required")
    assert schema_review(call, error, lambda: queue, proposed={"txt": "raw"})
    assert call.done and call.output is None and call.review_id is not None
    item = queue.get(call.review_id)
    assert item.proposed == {"txt": "raw"} and "does not match Answer" in item.reason
    assert call.policy_checks[0].guard == {"action": "review", "kinds": ["schema"],
                                           "count": 1, "error": "invalid_output"}
    # no obligation (or "deny"): the InvalidOutput stands
    plain = Call(spec=spec(), tenant="acme", caller="c", raw={}, record_id="r2",
                 policy_checks=(PolicyCheck(Decision(True, policy="p")),))
    assert not schema_review(plain, error, lambda: queue)
    queue.close()


def test_installing_twice_replaces_the_steps(tmp_path: Path) -> None:
    with make_mesh(tmp_path, ScriptedServing(), OutputObligations()) as mesh:
        again = OutputGuard(mesh.review_queue)
        install_output_guard(mesh.pipeline, again)
        names = mesh.pipeline.names
        assert names.count("guard_output") == 1 and mesh.pipeline.step("guard_output") is again
        assert names.index("guard_output_hold") == names.index("invoke") - 1


def test_an_off_schema_answer_goes_to_review_when_a_policy_says_so(tmp_path: Path) -> None:
    obligations = {"acme": OutputObligations(schema="review")}
    with make_mesh(tmp_path, ScriptedServing({"wrong": "shape"}), obligations) as mesh:
        parked = mesh.invoke("answer-ticket", {"text": "x"}, tenant="acme")
        with pytest.raises(InvalidOutput):  # no such obligation: the error stands
            mesh.invoke("answer-ticket", {"text": "x"}, tenant="globex")
        item = mesh.review_queue().get(parked.review_id or "")
    assert parked.needs_review and parked.output is None
    assert item.reason == "policy obligation output.schema: the answer does not match Answer"
    rec = records(tmp_path)
    assert [r["outcome"] for r in rec] == ["review", "error"]
    assert guard_of(rec[0]) == {"action": "review", "kinds": ["schema"], "count": 1,
                                "error": "invalid_output"}
