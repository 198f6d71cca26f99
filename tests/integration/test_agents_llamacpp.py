"""An agent on the real in-process llama.cpp engine (Gemma 3 270M, temperature 0): the
planner's next action comes out under llama.cpp's JSON-schema grammar, whose ``action`` enum
holds only the allow-listed tools and ``final``, so the model picks an allowed tool; the
tool runs as a child call and the run completes as a tree of decision records. A small model
does not know when to stop (here it calls the tool again rather than answer ``final``), so
the run ends by answering or by its step budget (a typed outcome): either way every record
names the run as its parent and there is exactly one record per tool call served."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from pydantic import BaseModel

from aios_mesh import Mesh
from aios_mesh.agents import AgentBudgetExceeded, AgentResult, Budgets, agent, planner
from aios_mesh.capabilities import capability
from aios_mesh.config import config_from_mapping
from aios_mesh.embedded.registry import MemoryRegistry
from aios_mesh.record import DecisionRecord

pytestmark = pytest.mark.integration

OPEN = "package tools.open\nimport rego.v1\ndefault allow := true\n"
SERVED: list[str] = []


class OrderQuery(BaseModel):
    order_id: str


class Order(BaseModel):
    order_id: str
    status: str


@capability("lookup-order", policy="tools/open", description="Find an order's status by id.")
def lookup_order(q: OrderQuery) -> Order:
    SERVED.append(q.order_id)
    return Order(order_id=q.order_id, status="shipped")


PLANNER = planner("order-planner", [lookup_order], model="gemma@champion", serving="llm",
                  max_tokens=48, policy="tools/open", timeout_s=120)
AGENT = agent("order-agent", llm="order-planner", tools=[lookup_order], policy="tools/open",
              instructions="You answer questions about orders. You do not know any order: "
                           "always call lookup-order first with the order id, then answer.",
              budgets=Budgets(max_steps=2, max_tokens=4000, max_wall_s=240),
              max_step_tokens=48)


@pytest.fixture
async def mesh(tmp_path: Path) -> AsyncIterator[Mesh]:
    (tmp_path / "policies/tools").mkdir(parents=True)
    (tmp_path / "policies/tools/open.rego").write_text(OPEN)
    registry = MemoryRegistry()
    ref = await registry.register("gemma", "llamacpp://gemma3-270m")
    await registry.set_alias("gemma", "champion", ref.version)
    config = config_from_mapping({
        "state_dir": str(tmp_path / "state"), "tenants": {"acme": {}},
        "backends": {"policy": f"rego:///{tmp_path}/policies",
                     "serving_named": {"llm": "llamacpp://gemma3-270m?n_ctx=1024"}},
        "retry": {"backoff_s": 0.0}}, base_dir=tmp_path)
    built = Mesh(config, capabilities=[AGENT, PLANNER, lookup_order],
                 adapters={"registry": registry})
    yield built
    await built.aclose()


async def test_gemma_picks_an_allowed_tool_and_the_run_is_a_record_tree(mesh: Mesh) -> None:
    SERVED.clear()
    records: list[DecisionRecord] = []
    mesh.sinks.append(lambda record, _doc: records.append(record))
    result: AgentResult | None = None
    stopped: AgentBudgetExceeded | None = None
    try:
        out = await mesh.ainvoke("order-agent", {"task": "What is the status of order A-17?"},
                                 tenant="acme", caller="t")
        assert isinstance(out.output, AgentResult)
        result = out.output
    except AgentBudgetExceeded as exc:  # the small model kept calling the tool
        stopped = exc
    await asyncio.to_thread(mesh.flush)
    (run,) = [r for r in records if r.capability == "order-agent"]
    steps = [r for r in records if r.capability == "order-planner"]
    tools = [r for r in records if r.capability == "lookup-order"]
    assert steps and all(r.outcome == "ok" for r in steps)
    assert steps[0].model is not None and steps[0].model["name"] == "gemma"
    assert steps[0].usage["tokens"] > 0  # the engine's own count
    # the model picked the tool through its constrained answer, and the tool ran
    assert tools and len(tools) == len(SERVED)
    for child in [*steps, *tools]:
        assert child.parent is not None and child.parent["run_id"] == run.record_id
    if result is not None:
        assert run.outcome == "ok" and result.tool_calls
        assert {c.record_id for c in result.tool_calls} == {r.record_id for r in tools}
    else:  # what Gemma 3 270M does here at temperature 0: it never answers "final"
        assert stopped is not None and stopped.budget == "steps"
        assert run.outcome == "rejected" and len(steps) == 2
