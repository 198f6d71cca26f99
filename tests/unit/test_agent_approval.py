"""Tools that need a human (issue 20, item 1): the run parks in the review queue before the
call, nothing runs until a reviewer decides, and ``{"resume": review_id}`` goes on — with the
approved or corrected arguments, or with the refusal shown to the LLM — exactly once, in any
process (the run's state is on the shared state). And ``aios-mesh lock`` pins an agent's
definition: a changed definition under the same version is refused.

The LLM is a scripted planner capability (the point is the parking, not the model); tools
and the review queue, policy and audit log are the real embedded ones."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from aios_mesh import Mesh
from aios_mesh.agents import AgentResult, Budgets, BudgetTracker, ParkedRuns, agent
from aios_mesh.capabilities import CapabilitySpec, capability
from aios_mesh.config import config_from_mapping
from aios_mesh.errors import ConfigError, InvalidInput, NotFound
from aios_mesh.record import DecisionRecord
from tests.unit.test_agents import OPEN, SEEN, TOOL_CALLS, call, final, scripted_planner


class RefundAsk(BaseModel):
    order_id: str


class RefundOpened(BaseModel):
    ticket: str


class OrderQuery(BaseModel):
    order_id: str


class Order(BaseModel):
    order_id: str
    status: str


@capability("lookup-order", policy="tools/open", description="Find an order by id.")
def lookup_order(q: OrderQuery) -> Order:
    TOOL_CALLS.append(q.order_id)
    return Order(order_id=q.order_id, status="shipped")


@capability("open-refund", policy="tools/open", description="Open a refund request.")
def open_refund(q: RefundAsk) -> RefundOpened:
    TOOL_CALLS.append(f"refund:{q.order_id}")
    return RefundOpened(ticket=f"R-{q.order_id}")


def refund_script(i: int, observations: list[str], _ctx: Any) -> tuple[dict[str, Any], int]:
    """Look the order up, ask for the refund, then answer from what the last call said."""
    if i == 0:
        return call("lookup-order", order_id="A-17"), 10
    if i == 1:
        return call("open-refund", order_id="A-17"), 10
    return final(observations[-1].splitlines()[0]), 10


@pytest.fixture(autouse=True)
def _reset() -> None:
    TOOL_CALLS.clear()
    SEEN.clear()


def refund_agent(instructions: str = "Help with refunds.") -> CapabilitySpec:
    return agent("refund-agent", instructions=instructions, llm="planner",
                 tools=[lookup_order, open_refund], approval=[open_refund],
                 budgets=Budgets(max_steps=6, max_wall_s=30))


def config_doc(tmp_path: Path) -> dict[str, Any]:
    return {"state_dir": str(tmp_path / "state"), "tenants": {"acme": {}, "globex": {}},
            "backends": {"policy": f"rego:///{tmp_path / 'policies'}"},
            "lock_file": str(tmp_path / "aios-mesh.lock"), "retry": {"backoff_s": 0.0}}


def build(tmp_path: Path, spec: CapabilitySpec | None = None) -> Mesh:
    policies = tmp_path / "policies" / "tools"
    policies.mkdir(parents=True, exist_ok=True)
    (policies / "open.rego").write_text(OPEN)
    config = config_from_mapping(config_doc(tmp_path))
    return Mesh(config, capabilities=[spec or refund_agent(),
                                      scripted_planner(refund_script), lookup_order,
                                      open_refund])


def parked(tmp_path: Path) -> tuple[str, str]:
    """A run parked on its open-refund call: (review id, the run's record id)."""
    with build(tmp_path) as mesh:
        out = mesh.invoke("refund-agent", {"task": "Refund order A-17"}, tenant="acme")
    assert isinstance(out.output, AgentResult)
    assert out.output.status == "awaiting_approval" and out.output.review_id
    return out.output.review_id, out.record.record_id


def test_a_tool_needing_approval_parks_the_run_before_the_call(tmp_path: Path) -> None:
    review_id, run_id = parked(tmp_path)
    assert TOOL_CALLS == ["A-17"]  # the lookup ran; the refund did not
    with build(tmp_path) as mesh:
        item = mesh.review_queue().get(review_id)
        assert item.status == "pending" and item.record_id == run_id
        assert item.payload == {"tool": "open-refund", "arguments": {"order_id": "A-17"}}
        assert item.proposed == {"order_id": "A-17"}
        run = ParkedRuns(mesh.state).get(review_id, tenant="acme")
        assert run.status == "parked" and run.tool == "open-refund"
        assert [c.outcome for c in run.tool_calls] == ["ok", "awaiting_approval"]
        entries = mesh.run_sync(mesh.ports.audit.read())
    entry = next(e.record for e in entries if e.record.get("kind") == "agent_run")
    assert entry["ended"] == "awaiting_approval" and entry["parked_on"] == review_id


def test_resuming_before_the_decision_changes_nothing(tmp_path: Path) -> None:
    review_id, _ = parked(tmp_path)
    with build(tmp_path) as mesh:
        again = mesh.invoke("refund-agent", {"resume": review_id}, tenant="acme")
        assert again.output is not None and again.output.status == "awaiting_approval"
        assert ParkedRuns(mesh.state).get(review_id, tenant="acme").status == "parked"
    assert TOOL_CALLS == ["A-17"]


def test_an_approved_call_runs_once_and_the_run_goes_on_after_a_restart(
        tmp_path: Path) -> None:
    review_id, run_id = parked(tmp_path)  # that mesh is closed: a "process" gone
    config = tmp_path / "aios-mesh.toml"
    config.write_text(f'state_dir = "{tmp_path / "state"}"\n'
                      f'[backends]\npolicy = "rego:///{tmp_path / "policies"}"\n')
    # the reviewer decides in another process, on the CLI
    done = subprocess.run([sys.executable, "-m", "aios_mesh.cli", "review", "approve",
                           review_id, "--reviewer", "alice", "--config", str(config)],
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert "resume" in done.stdout
    records: list[DecisionRecord] = []
    with build(tmp_path) as mesh:  # a fresh mesh resumes
        mesh.sinks.append(lambda record, _doc: records.append(record))
        out = mesh.invoke("refund-agent", {"resume": review_id}, tenant="acme")
        mesh.flush()
        with pytest.raises(InvalidInput, match="already resumed"):
            mesh.invoke("refund-agent", {"resume": review_id}, tenant="acme")
    result = out.output
    assert isinstance(result, AgentResult)
    assert result.status == "answered" and result.resumed_from == run_id
    assert TOOL_CALLS == ["A-17", "refund:A-17"]  # exactly once, after approval
    assert [c.outcome for c in result.tool_calls] == ["ok", "approved", "ok"]
    refund = [r for r in records if r.capability == "open-refund"]
    assert len(refund) == 1 and refund[0].parent is not None
    assert refund[0].parent["run_id"] == out.record.record_id
    assert '"ticket": "R-A-17"' in result.answer


def test_a_corrected_call_runs_with_the_reviewers_arguments(tmp_path: Path) -> None:
    review_id, _ = parked(tmp_path)
    with build(tmp_path) as mesh:
        with pytest.raises(InvalidInput, match="RefundAsk"):
            mesh.resolve_review(review_id, approve=True, reviewer="alice",
                                output={"order": "A-18"})
        mesh.resolve_review(review_id, approve=True, reviewer="alice",
                            output={"order_id": "A-18"})
        out = mesh.invoke("refund-agent", {"resume": review_id}, tenant="acme")
    assert TOOL_CALLS == ["A-17", "refund:A-18"]
    assert out.output is not None and "R-A-18" in out.output.answer


def test_a_rejected_call_never_runs_and_the_llm_is_told(tmp_path: Path) -> None:
    review_id, _ = parked(tmp_path)
    with build(tmp_path) as mesh:
        mesh.resolve_review(review_id, approve=False, reviewer="bob", note="not eligible")
        out = mesh.invoke("refund-agent", {"resume": review_id}, tenant="acme")
    assert TOOL_CALLS == ["A-17"]
    result = out.output
    assert result is not None and result.status == "answered" and result.refused == 1
    assert "a reviewer rejected this call" in SEEN[-1][-1]
    assert [c.outcome for c in result.tool_calls] == ["ok", "rejected"]


def test_another_tenant_cannot_resume_a_run(tmp_path: Path) -> None:
    review_id, _ = parked(tmp_path)
    with build(tmp_path) as mesh:
        mesh.resolve_review(review_id, approve=True, reviewer="alice")
        with pytest.raises(NotFound):
            mesh.invoke("refund-agent", {"resume": review_id}, tenant="globex")
        with pytest.raises(NotFound):
            mesh.invoke("refund-agent", {"resume": "no-such-item"}, tenant="acme")
    assert TOOL_CALLS == ["A-17"]


@pytest.mark.parametrize("payload", [{}, {"task": "x", "resume": "y"}, {"task": ""}])
def test_an_agent_input_is_a_task_or_a_resume(tmp_path: Path, payload: dict[str, Any]
                                              ) -> None:
    with build(tmp_path) as mesh, pytest.raises(InvalidInput):
        mesh.invoke("refund-agent", payload, tenant="acme")


def test_approval_must_name_allowed_tools() -> None:
    with pytest.raises(ValueError, match="approval names tools"):
        agent("a", instructions="x", llm="planner", tools=[lookup_order],
              approval=["open-refund"])


def test_time_waiting_for_a_reviewer_is_not_counted() -> None:
    now = [100.0]
    tracker = BudgetTracker(Budgets(max_wall_s=10), clock=lambda: now[0])
    tracker.before_step()
    tracker.add(tokens=7, cost=0.5)
    now[0] += 4
    kept = tracker.snapshot()
    now[0] += 3600  # an hour in the queue
    back = BudgetTracker.restore(Budgets(max_wall_s=10), kept, clock=lambda: now[0])
    assert back.steps == 1 and back.tokens == 7 and back.cost == 0.5
    assert back.elapsed() == pytest.approx(4)


def test_the_lock_pins_an_agents_definition(tmp_path: Path) -> None:
    with build(tmp_path) as mesh:
        mesh.lock()
        out = mesh.invoke("refund-agent", {"task": "Refund order A-17"}, tenant="acme")
    spec = refund_agent()
    assert out.record.model is not None
    assert out.record.model["source"] == f"definition:sha256:{spec.definition_sha256}"
    lock = (tmp_path / "aios-mesh.lock").read_text()
    assert '"refund-agent@1"' in lock and str(spec.definition_sha256) in lock
    assert '"open-refund"' in lock  # the tools it may call, readable in the lock
    changed = refund_agent("Help with refunds, generously.")
    with build(tmp_path, changed) as mesh, pytest.raises(ConfigError, match="lock file pins"):
        mesh.invoke("refund-agent", {"task": "Refund order A-17"}, tenant="acme")
