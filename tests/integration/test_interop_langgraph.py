"""A real LangGraph agent (``langgraph``'s ``StateGraph``) over governed capabilities.

The decision node asks a mesh planner capability for the next action (constrained output:
an enum of the allowed tools plus ``final``), the tool node calls the chosen capability
through the pipeline as a child call of the graph run. Proven here:

* on the real llama.cpp engine in process (Gemma 3 270M, temperature 0, its JSON-schema
  grammar constraining the next action): the graph calls a tool, and the record tree holds
  exactly one child record per tool call, each naming the graph run as its parent;
* with a deterministic planner capability (a handler, for the loop's own logic): the
  answer, the step limit, a tool outside the allow-list (refused, never called, no record),
  arguments failing the tool's schema (a typed ``invalid_input`` with a ``rejected``
  record), the sync face, a graph run nested in a capability run, and the same graph with
  the tools called directly (same tool-call sequence, no records).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from langgraph.graph.state import CompiledStateGraph
from pydantic import BaseModel

from aios_mesh import Mesh
from aios_mesh.agents import NextAction, action_model, planner
from aios_mesh.capabilities import CapabilitySpec, capability
from aios_mesh.config import config_from_mapping
from aios_mesh.context import CallContext
from aios_mesh.generation import ChatInput
from aios_mesh.interop.langgraph import (
    RUN_NAMESPACE,
    direct_agent,
    direct_tools,
    governed_agent,
    tool_sequence,
)
from aios_mesh.record import DecisionRecord

pytestmark = pytest.mark.integration

OPEN = "package tools.open\nimport rego.v1\ndefault allow := true\n"
INSTRUCTIONS = ("You answer questions about orders. You do not know any order: always call "
                "lookup-order first with the order id, then answer.")


class OrderQuery(BaseModel):
    order_id: str


class Order(BaseModel):
    order_id: str
    status: str


class Task(BaseModel):
    task: str


class Answer(BaseModel):
    answer: str
    tool_records: list[str]


@capability("lookup-order", policy="tools/open", description="Find an order's status by id.")
def lookup_order(q: OrderQuery) -> Order:
    return Order(order_id=q.order_id, status="shipped")


def observations(conversation: ChatInput) -> list[dict[str, Any]]:
    return [json.loads(m.content.removeprefix("Observation: ").splitlines()[0])
            for m in conversation.messages if m.content.startswith("Observation:")]


def decide(conversation: ChatInput) -> dict[str, Any]:
    """Look the order up once, then answer from what the tool said."""
    seen = observations(conversation)
    if not seen:
        return {"action": "lookup-order", "arguments": {"order_id": "A-17"}, "answer": ""}
    return {"action": "final", "arguments": {},
            "answer": f"A-17 is {seen[-1]['output']['status']}"}


def scripted(name: str, handler: Any, *, constrained: bool = True) -> CapabilitySpec:
    output = action_model(["lookup-order"]) if constrained else NextAction
    return CapabilitySpec(name=name, input=ChatInput, output=output, handler=handler,
                          policy="tools/open")


PLANNERS = [
    scripted("order-planner", decide),
    # never stops: a new order id each step
    scripted("loop-planner", lambda c: {"action": "lookup-order", "answer": "",
                                        "arguments": {"order_id": f"L-{len(c.messages)}"}}),
    # arguments that fail the tool's schema, then gives up
    scripted("bad-args-planner", lambda c: (
        {"action": "final", "arguments": {}, "answer": "gave up"} if observations(c) else
        {"action": "lookup-order", "arguments": {"order": 17}, "answer": ""})),
    # no enum in its output: names a tool outside the allow-list
    scripted("rogue-planner", lambda c: (
        {"action": "final", "arguments": {}, "answer": "refused"} if observations(c) else
        {"action": "delete-all-orders", "arguments": {}, "answer": ""}), constrained=False),
]


@capability("graph-in-a-capability", policy="tools/open")
async def graph_in_a_capability(task: Task, ctx: CallContext) -> Answer:
    assert isinstance(ctx.mesh, Mesh)  # the mesh serving this call
    graph = governed_agent(ctx.mesh, llm="order-planner", tools=["lookup-order"],
                           tenant=ctx.tenant, caller=ctx.caller, parent=ctx.as_parent(),
                           max_steps=3)
    state = await graph.ainvoke({"task": task.task})
    return Answer(answer=state["answer"],
                  tool_records=[c["record_id"] for c in state["tool_calls"]])


def policies(tmp_path: Path) -> str:
    (tmp_path / "policies/tools").mkdir(parents=True, exist_ok=True)
    (tmp_path / "policies/tools/open.rego").write_text(OPEN)
    return f"rego:///{tmp_path}/policies"


def scripted_mesh(tmp_path: Path) -> Mesh:
    config = config_from_mapping({
        "state_dir": str(tmp_path / "state"), "tenants": {"acme": {}},
        "backends": {"policy": policies(tmp_path)}}, base_dir=tmp_path)
    return Mesh(config, capabilities=[lookup_order, graph_in_a_capability, *PLANNERS])


@pytest.fixture
async def mesh(tmp_path: Path) -> AsyncIterator[Mesh]:
    built = scripted_mesh(tmp_path)
    yield built
    await built.aclose()


def collect(mesh: Mesh) -> list[DecisionRecord]:
    records: list[DecisionRecord] = []
    mesh.sinks.append(lambda record, _doc: records.append(record))
    return records


def children(records: list[DecisionRecord], run_id: str, capability: str
             ) -> list[DecisionRecord]:
    return [r for r in records if r.capability == capability
            and r.parent is not None and r.parent["run_id"] == run_id]


async def test_the_graph_answers_and_each_tool_call_is_one_child_record(mesh: Mesh) -> None:
    records = collect(mesh)
    graph = governed_agent(mesh, llm="order-planner", tools=["lookup-order"], tenant="acme",
                           caller="support", max_steps=4, instructions=INSTRUCTIONS)
    assert isinstance(graph, CompiledStateGraph)
    state = await graph.ainvoke({"task": "Where is order A-17?"})
    await asyncio.to_thread(mesh.flush)
    assert state["answer"] == "A-17 is shipped" and state["stopped_by"] is None
    run = state["run"]
    assert run["namespace"] == RUN_NAMESPACE and run["name"] == "governed-agent"
    tools = children(records, run["run_id"], "lookup-order")
    steps = children(records, run["run_id"], "order-planner")
    assert len(steps) == 2 and len(records) == 3  # nothing outside the run's tree
    assert [c["record_id"] for c in state["tool_calls"]] == [r.record_id for r in tools]
    assert [(r.tenant, r.caller, r.outcome) for r in tools] == [("acme", "support", "ok")]
    assert tool_sequence(state) == [("lookup-order", '{"order_id": "A-17"}')]


async def test_the_step_limit_ends_a_runaway_graph(mesh: Mesh) -> None:
    records = collect(mesh)
    graph = governed_agent(mesh, llm="loop-planner", tools=["lookup-order"], tenant="acme",
                           max_steps=3)
    state = await graph.ainvoke({"task": "Loop."})
    await asyncio.to_thread(mesh.flush)
    assert state["stopped_by"] == "steps" and state["answer"] is None
    assert state["steps"] == 3 and len(state["tool_calls"]) == 3
    tools = children(records, state["run"]["run_id"], "lookup-order")
    assert len(tools) == len(state["tool_calls"]) == 3


async def test_arguments_failing_the_schema_are_a_typed_rejection_with_a_record(
        mesh: Mesh) -> None:
    records = collect(mesh)
    graph = governed_agent(mesh, llm="bad-args-planner", tools=["lookup-order"],
                           tenant="acme")
    state = await graph.ainvoke({"task": "Look up order 17."})
    await asyncio.to_thread(mesh.flush)
    (call,) = state["tool_calls"]
    assert (call["outcome"], call["code"]) == ("rejected", "invalid_input")
    (record,) = children(records, state["run"]["run_id"], "lookup-order")
    assert record.record_id == call["record_id"] and record.outcome == "rejected"
    assert '"error": "invalid_input"' in state["messages"][-1]["content"]
    assert state["answer"] == "gave up"


async def test_a_tool_outside_the_allow_list_is_refused_and_never_called(mesh: Mesh) -> None:
    records = collect(mesh)
    graph = governed_agent(mesh, llm="rogue-planner", tools=["lookup-order"], tenant="acme")
    state = await graph.ainvoke({"task": "Delete everything."})
    await asyncio.to_thread(mesh.flush)
    assert state["tool_calls"] == [] and state["refused"] == 1
    assert {r.capability for r in records} == {"rogue-planner"}
    assert "not an allowed tool" in state["messages"][-1]["content"]


def test_the_sync_face(tmp_path: Path) -> None:
    with scripted_mesh(tmp_path) as mesh:
        graph = governed_agent(mesh, llm="order-planner", tools=["lookup-order"],
                               tenant="acme", max_steps=4)
        state = graph.invoke({"task": "Where is order A-17?"})
    assert state["answer"] == "A-17 is shipped" and len(state["tool_calls"]) == 1


async def test_a_graph_run_inside_a_capability_is_a_subtree_of_its_record(
        mesh: Mesh) -> None:
    records = collect(mesh)
    result = await mesh.ainvoke("graph-in-a-capability", {"task": "Where is A-17?"},
                                tenant="acme", caller="support")
    await asyncio.to_thread(mesh.flush)
    outer = result.record
    assert result.output.answer == "A-17 is shipped"
    tools = children(records, outer.record_id, "lookup-order")
    assert [r.record_id for r in tools] == result.output.tool_records
    assert tools[0].parent is not None and tools[0].parent["root"]["run_id"] == \
        outer.record_id


async def test_the_same_graph_with_direct_tools_makes_the_same_calls_without_records(
        mesh: Mesh) -> None:
    records = collect(mesh)
    governed = governed_agent(mesh, llm="loop-planner", tools=["lookup-order"],
                              tenant="acme", max_steps=3)
    direct = direct_agent(mesh, llm="loop-planner", tools=direct_tools([lookup_order]),
                          tenant="acme", max_steps=3)
    a = await governed.ainvoke({"task": "Loop."})
    b = await direct.ainvoke({"task": "Loop."})
    await asyncio.to_thread(mesh.flush)
    assert tool_sequence(a) == tool_sequence(b) and len(tool_sequence(b)) == 3
    assert [c["record_id"] for c in b["tool_calls"]] == [None] * 3
    assert a["messages"][0] == b["messages"][0]  # the planner saw the same prompt
    assert len(children(records, b["run"]["run_id"], "lookup-order")) == 0
    assert len(children(records, a["run"]["run_id"], "lookup-order")) == 3


# --- the real model --------------------------------------------------------------------


@pytest.fixture
async def llm_mesh(tmp_path: Path) -> AsyncIterator[Mesh]:
    # llama.cpp in process: its JSON-schema grammar holds the action enum and the arguments
    url = "llamacpp://gemma3-270m?n_ctx=2048"
    config = config_from_mapping({
        "state_dir": str(tmp_path / "state"), "tenants": {"acme": {}},
        "retry": {"backoff_s": 0.0},
        "backends": {"policy": policies(tmp_path), "registry": "memory://",
                     "serving_named": {"llm": url}}}, base_dir=tmp_path)
    order_planner = planner("order-planner", [lookup_order], model="gemma@champion",
                            serving="llm", max_tokens=64, policy="tools/open", timeout_s=240)
    built = Mesh(config, capabilities=[lookup_order, order_planner])
    version = await built.ports.registry.register("gemma", "llama.cpp: gemma-3-270m")
    await built.ports.registry.set_alias("gemma", "champion", version.version)
    yield built
    await built.aclose()


async def test_gemma_on_llama_cpp_drives_the_graph_through_governed_tools(
        llm_mesh: Mesh) -> None:
    records = collect(llm_mesh)
    graph = governed_agent(llm_mesh, llm="order-planner", tools=["lookup-order"],
                           tenant="acme", caller="support", max_steps=2,
                           instructions=INSTRUCTIONS)
    state = await graph.ainvoke({"task": "What is the status of order A-17?"})
    await asyncio.to_thread(llm_mesh.flush)
    run_id = state["run"]["run_id"]
    steps = children(records, run_id, "order-planner")
    tools = children(records, run_id, "lookup-order")
    # the model picked the tool through its constrained answer, and the tool ran
    assert state["tool_calls"], "Gemma chose no tool"
    assert steps and all(r.outcome == "ok" and r.usage["tokens"] > 0 for r in steps)
    assert steps[0].model is not None and steps[0].model["name"] == "gemma"
    # exactly one child record per tool call, each under the graph run
    assert [c["record_id"] for c in state["tool_calls"]] == [r.record_id for r in tools]
    assert len(records) == len(steps) + len(tools)
    assert state["answer"] is not None or state["stopped_by"] == "steps"
