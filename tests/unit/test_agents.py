"""The agent runtime (issue 20, item 1) on a real mesh with a scripted LLM capability: a
handler that answers the next action from a script (the issue allows a scripted model where
the point is the loop and its budgets, not the model). Tools are ordinary capabilities; one
has a real Rego policy that denies. Every check reads the decision records the mesh wrote."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from aios_mesh import Mesh, Price
from aios_mesh.agents import (
    AgentBudgetExceeded,
    AgentResult,
    AgentToolRefused,
    Budgets,
    NextAction,
    action_model,
    agent,
)
from aios_mesh.capabilities import CapabilitySpec, capability
from aios_mesh.config import config_from_mapping
from aios_mesh.context import CallContext
from aios_mesh.generation import ChatInput
from aios_mesh.generation.tokens import estimate_tokens
from aios_mesh.ports.serving import Prediction, Usage
from aios_mesh.record import DecisionRecord

DENY_REFUNDS = """package tools.refund
import rego.v1
default allow := false
reason := "refunds need a human"
reason_code := "needs_human"
"""
OPEN = "package tools.open\nimport rego.v1\ndefault allow := true\n"


class OrderQuery(BaseModel):
    order_id: str


class Order(BaseModel):
    order_id: str
    status: str


class RefundAsk(BaseModel):
    order_id: str


class RefundOpened(BaseModel):
    ticket: str


TOOL_CALLS: list[str] = []  # what the tools' handlers actually ran


@capability("lookup-order", policy="tools/open", description="Find an order by id.")
def lookup_order(q: OrderQuery) -> Order:
    TOOL_CALLS.append(q.order_id)
    return Order(order_id=q.order_id, status="shipped")


@capability("open-refund", policy="tools/refund", description="Open a refund request.")
def open_refund(q: RefundAsk) -> RefundOpened:
    TOOL_CALLS.append(f"refund:{q.order_id}")
    return RefundOpened(ticket="R-1")


Script = Callable[[int, list[str], CallContext], tuple[dict[str, Any], int]]


def scripted_planner(script: Script, *, price: Price | None = None) -> CapabilitySpec:
    """An LLM capability answered by ``script(step, observations, ctx)`` -> (action, tokens);
    ``SEEN`` keeps every conversation it was shown."""

    async def plan(payload: ChatInput, ctx: CallContext) -> NextAction:
        messages = payload.messages
        observations = [m.content for m in messages if m.content.startswith("Observation:")]
        SEEN.append([m.content for m in messages])
        action, tokens = script(len(observations), observations, ctx)
        return Prediction(dict(action), usage=Usage(tokens=tokens, input_tokens=tokens))  # type: ignore[return-value]  # a handler may answer a Prediction (usage)

    return CapabilitySpec(name="planner", input=ChatInput, output=action_model(
        ["lookup-order", "open-refund"]), handler=plan, policy="tools/open",
        price=price or Price())


SEEN: list[list[str]] = []


def final(answer: str = "done") -> dict[str, Any]:
    return {"action": "final", "arguments": {}, "answer": answer}


def call(tool: str, **arguments: Any) -> dict[str, Any]:
    return {"action": tool, "arguments": arguments, "answer": ""}


def loose_planner(script: Script) -> CapabilitySpec:
    """A planner without the constrained enum (a model that may name any tool)."""
    spec = scripted_planner(script)
    return spec.model_copy(update={"output": NextAction})


@pytest.fixture(autouse=True)
def _reset() -> None:
    TOOL_CALLS.clear()
    SEEN.clear()


def build(tmp_path: Path, planner: CapabilitySpec, **agent_options: Any) -> Mesh:
    policies = tmp_path / "policies" / "tools"
    policies.mkdir(parents=True, exist_ok=True)
    (policies / "refund.rego").write_text(DENY_REFUNDS)
    (policies / "open.rego").write_text(OPEN)
    options: dict[str, Any] = {"instructions": "Help with orders.", "llm": "planner",
                               "tools": [lookup_order, open_refund], **agent_options}
    refund_agent = agent("refund-agent", **options)
    config = config_from_mapping({
        "state_dir": str(tmp_path / "state"), "tenants": {"acme": {}},
        "backends": {"policy": f"rego:///{tmp_path / 'policies'}"},
        "retry": {"backoff_s": 0.0}})
    return Mesh(config, capabilities=[refund_agent, planner, lookup_order, open_refund])


class Run:
    """One agent run on a fresh mesh: its result or error, every record, the audit entry."""

    def __init__(self, tmp_path: Path, planner: CapabilitySpec, **agent_options: Any) -> None:
        self.records: list[DecisionRecord] = []
        self.error: Exception | None = None
        self.result: AgentResult | None = None
        with build(tmp_path, planner, **agent_options) as mesh:
            mesh.sinks.append(lambda record, _doc: self.records.append(record))
            try:
                out = mesh.invoke("refund-agent", {"task": "Where is order A-17?"},
                                  tenant="acme", caller="t")
                assert isinstance(out.output, AgentResult)
                self.result = out.output
            except Exception as exc:
                self.error = exc
            mesh.flush()
            entries = mesh.run_sync(mesh.ports.audit.read())
        self.audit = [e.record for e in entries if e.record.get("kind") == "agent_run"]
        runs = [r for r in self.records if r.capability == "refund-agent"]
        assert len(runs) == 1
        self.run = runs[0]

    def children(self, capability: str) -> list[DecisionRecord]:
        return [r for r in self.records if r.capability == capability]


def test_one_run_is_a_tree_of_records(tmp_path: Path) -> None:
    steps = [call("lookup-order", order_id="A-17"), final("A-17 has shipped")]
    run = Run(tmp_path, scripted_planner(lambda i, _o, _c: (steps[i], 10)))
    assert run.result is not None and run.result.answer == "A-17 has shipped"
    assert run.run.outcome == "ok" and run.run.parent is None
    me = {"run_id": run.run.record_id, "namespace": "aios-mesh", "name": "refund-agent"}
    llm, tools = run.children("planner"), run.children("lookup-order")
    assert len(llm) == 2 and len(tools) == 1 and len(run.records) == 4
    for child in [*llm, *tools]:
        assert child.parent == {**me, "root": me}
    assert TOOL_CALLS == ["A-17"]
    assert run.result.tool_calls[0].record_id == tools[0].record_id
    assert run.result.steps == 2 and run.result.tokens == 20
    # the LLM saw the tool's output as its observation
    assert '"status": "shipped"' in SEEN[1][-1]
    (entry,) = run.audit
    assert entry["record_id"] == run.run.record_id and entry["ended"] == "ok"
    assert entry["llm_steps"] == [r.record_id for r in llm]
    assert entry["budgets"]["steps"] == 2 and entry["stopped_by"] is None


def test_exactly_one_record_per_tool_call_and_the_step_budget_ends_a_runaway(
        tmp_path: Path) -> None:
    forever = scripted_planner(lambda i, _o, _c: (call("lookup-order", order_id=f"A-{i}"), 5))
    run = Run(tmp_path, forever, budgets=Budgets(max_steps=5))
    assert isinstance(run.error, AgentBudgetExceeded) and run.error.budget == "steps"
    assert run.run.outcome == "rejected"
    assert run.run.error is not None and run.run.error["code"] == "agent_budget_exceeded"
    tools = run.children("lookup-order")
    assert len(run.children("planner")) == 5 and len(tools) == 5
    assert len(TOOL_CALLS) == 5  # one record per call the tool actually served
    (entry,) = run.audit
    assert entry["stopped_by"] == "steps" and entry["budgets"]["steps"] == 5
    assert sorted(c["record_id"] for c in entry["tool_calls"]) == \
        sorted(r.record_id for r in tools)


def _child_totals(run: Run) -> tuple[int, float]:
    kids = [r for r in run.records if r.parent is not None]
    return sum(int(r.usage.get("tokens", 0)) for r in kids), sum(r.cost for r in kids)


def test_the_token_budget_ends_a_token_flood_with_nothing_over(tmp_path: Path) -> None:
    def flood(i: int, _o: list[str], ctx: CallContext) -> tuple[dict[str, Any], int]:
        # as much as the step may use: its prompt plus every completion token it may ask for
        used = estimate_tokens([{"role": "user", "content": m} for m in SEEN[-1]])
        return call("lookup-order", order_id="A"), used + int(ctx.attributes["max_tokens"])

    run = Run(tmp_path, scripted_planner(flood),
              budgets=Budgets(max_steps=100, max_tokens=900), max_step_tokens=200)
    assert isinstance(run.error, AgentBudgetExceeded) and run.error.budget == "tokens"
    tokens, _cost = _child_totals(run)
    assert 0 < tokens <= 900
    assert run.audit[0]["budgets"]["tokens"] == tokens


def test_the_cost_budget_ends_a_cost_flood_with_nothing_over(tmp_path: Path) -> None:
    pricey = scripted_planner(lambda i, _o, _c: (call("lookup-order", order_id="A"), 1000),
                              price=Price(per_1k_input_tokens=0.01))
    run = Run(tmp_path, pricey, budgets=Budgets(max_steps=100, max_cost=0.055))
    assert isinstance(run.error, AgentBudgetExceeded) and run.error.budget == "cost"
    _tokens, cost = _child_totals(run)
    assert 0 < cost <= 0.055
    assert len(run.children("planner")) == 5  # 5 x 0.01; a sixth would cross 0.055


def test_the_wall_clock_budget_ends_a_slow_run(tmp_path: Path) -> None:
    now = [0.0]

    def slow(i: int, _o: list[str], _c: CallContext) -> tuple[dict[str, Any], int]:
        now[0] += 1.0  # each decision takes a (simulated) second
        return call("lookup-order", order_id="A"), 1

    run = Run(tmp_path, scripted_planner(slow), clock=lambda: now[0],
              budgets=Budgets(max_steps=100, max_wall_s=3.5))
    assert isinstance(run.error, AgentBudgetExceeded) and run.error.budget == "wall_clock"
    assert len(run.children("planner")) == 4  # started at 0, 1, 2, 3 s; not at 4 s
    assert run.audit[0]["stopped_by"] == "wall_clock"


def test_a_tool_outside_the_allow_list_is_refused_and_the_model_sees_it(
        tmp_path: Path) -> None:
    steps = [call("delete-everything"), final("could not")]
    run = Run(tmp_path, loose_planner(lambda i, _o, _c: (steps[i], 1)))
    assert run.result is not None and run.result.refused == 1
    assert not run.children("delete-everything") and TOOL_CALLS == []
    assert "not an allowed tool" in SEEN[1][-1]
    (refusal,) = run.audit[0]["refusals"]
    assert refusal["reason"] == "not_allowed" and "delete-everything" not in str(refusal)


def test_a_refusal_can_end_the_run(tmp_path: Path) -> None:
    run = Run(tmp_path, loose_planner(lambda i, _o, _c: (call("delete-everything"), 1)),
              on_refused="end")
    assert isinstance(run.error, AgentToolRefused)
    assert run.run.outcome == "denied" and run.run.error is not None
    assert run.run.error["code"] == "agent_tool_refused"


def test_the_constrained_action_cannot_name_another_tool() -> None:
    model = action_model(["lookup-order"])
    schema = model.model_json_schema()
    assert schema["properties"]["action"]["enum"] == ["lookup-order", "final"]
    with pytest.raises(ValueError):
        model.model_validate(call("delete-everything"))


def test_arguments_failing_the_tool_schema_are_rejected_by_its_own_record(
        tmp_path: Path) -> None:
    steps = [call("lookup-order", order="A-17"), call("lookup-order", order_id="A-17"),
             final("shipped")]
    run = Run(tmp_path, scripted_planner(lambda i, _o, _c: (steps[i], 1)))
    assert run.result is not None and run.result.answer == "shipped"
    bad, good = run.children("lookup-order")
    assert bad.outcome == "rejected" and good.outcome == "ok"
    assert bad.parent is not None and bad.parent["run_id"] == run.run.record_id
    assert TOOL_CALLS == ["A-17"]  # the tool never ran on the bad arguments
    assert "invalid_input" in SEEN[1][-1]
    assert [c.outcome for c in run.result.tool_calls] == ["rejected", "ok"]
    assert run.audit[0]["refusals"][0]["reason"] == "invalid_arguments"


def test_a_tool_its_own_policy_denies_is_recorded_and_the_agent_sees_it(
        tmp_path: Path) -> None:
    steps = [call("open-refund", order_id="A-17"), final("a human must refund")]
    run = Run(tmp_path, scripted_planner(lambda i, _o, _c: (steps[i], 1)))
    assert run.result is not None and run.result.answer == "a human must refund"
    (denied,) = run.children("open-refund")
    assert denied.outcome == "denied" and denied.parent is not None
    assert denied.parent["run_id"] == run.run.record_id
    assert TOOL_CALLS == []
    assert "needs_human" in SEEN[1][-1]
    assert run.result.tool_calls[0].outcome == "denied"


def test_a_repeated_identical_call_is_not_made_twice(tmp_path: Path) -> None:
    steps = [call("lookup-order", order_id="A-17"), call("lookup-order", order_id="A-17"),
             final("shipped")]
    run = Run(tmp_path, scripted_planner(lambda i, _o, _c: (steps[i], 1)))
    assert run.result is not None and run.result.steps == 3
    assert len(run.children("lookup-order")) == 1 and TOOL_CALLS == ["A-17"]
    assert '"repeated"' in SEEN[2][-1] and '"shipped"' in SEEN[2][-1]
    assert [r["reason"] for r in run.audit[0]["refusals"]] == ["repeated"]
