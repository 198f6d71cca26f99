"""Agents benchmark: what governing a LangGraph agent's tools costs, whether every tool call
leaves exactly one decision record, and whether budgets hold against runaway runs.

Writes ``benchmarks/results/agents.json`` as ``{"mesh_over_direct_wall",
"records_per_tool_call", "budget_overruns", "runaway_runs", ...}``:

* ``mesh_over_direct_wall``: wall time of the LangGraph agent of
  :func:`aios_mesh.interop.langgraph.governed_agent` (tools called through the mesh's
  pipeline: policy, quota, record; redaction off — the tools are not ``external`` and their
  policy sets no redaction obligation) over the *same graph* built by ``direct_agent`` (the
  tools' functions called directly). Both ask the same planner capability on the same
  llama.cpp engine (in process, ``llamacpp://``: Gemma 3 270M, temperature 0, the next
  action under its JSON-schema grammar — llama-cpp-python's HTTP server, given the schema as
  ``json_object``, had Gemma answer ``final`` at once without calling a tool), runs
  interleaved (the order alternates each round, so neither side always goes first); only
  rounds whose tool-call sequences are identical on both sides, with at least one tool call,
  count,
  and the figure is the sum of their governed walls over the sum of their direct walls
  (target <= 1.05);
* ``records_per_tool_call``: tool-call decision records under the governed runs (records of
  a tool whose ``parent`` is the run) over the tool calls the runs made (must be 1.0);
* ``runaway_runs`` / ``budget_overruns``: deliberately runaway runs of
  :func:`aios_mesh.agents.agent` with scripted planner capabilities that never answer
  (loops, token floods — the planner always uses every completion token it is allowed, tools
  reporting growing usage —, cost floods, slow tools against the wall clock), and how many of
  them used more than a ceiling, counted from the run's child records (tokens, cost, LLM
  steps) and the run's record (wall clock, with 0.1 s for cancelling the running child call
  and writing the record) — target 0.

Run: ``.venv/bin/python benchmarks/agents.py [--rounds 8] [--max-steps 2] [--runaway 60]
[--skip-graph] [--skip-runaway]`` (loads Gemma 3 270M in process; ~8 minutes on 2 cores).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import random
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "adapters")]

from pydantic import BaseModel  # noqa: E402

from aios_mesh import Mesh, Price  # noqa: E402
from aios_mesh.agents import AgentBudgetExceeded, Budgets, action_model, agent, planner  # noqa: E402
from aios_mesh.capabilities import CapabilitySpec, capability  # noqa: E402
from aios_mesh.config import config_from_mapping  # noqa: E402
from aios_mesh.context import CallContext  # noqa: E402
from aios_mesh.generation import ChatInput  # noqa: E402
from aios_mesh.generation.tokens import estimate_tokens  # noqa: E402
from aios_mesh.ports.serving import Prediction, Usage  # noqa: E402
from aios_mesh.record import DecisionRecord  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "agents.json"
OPEN = "package tools.open\nimport rego.v1\ndefault allow := true\n"
INSTRUCTIONS = ("You answer questions about orders. You do not know any order: always call "
                "lookup-order first with the order id, then answer.")
#: cancelling a running child call and writing the run's record, past the wall-clock ceiling
WALL_TOLERANCE_S = 0.1


class OrderQuery(BaseModel):
    order_id: str


class Order(BaseModel):
    order_id: str
    status: str
    carrier: str


def lookup(q: OrderQuery) -> Order:
    return Order(order_id=q.order_id, status="shipped", carrier="DHL")


LOOKUP = capability("lookup-order", policy="tools/open",
                    description="Find an order's status by id.")(lookup)


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def write_policies(base: Path) -> str:
    (base / "policies/tools").mkdir(parents=True, exist_ok=True)
    (base / "policies/tools/open.rego").write_text(OPEN)
    return f"rego:///{base}/policies"


# --- the LangGraph agent, governed over direct ------------------------------------------


async def graph_figures(base: Path, rounds: int, max_steps: int) -> dict[str, Any]:
    from aios_mesh.interop.langgraph import (
        direct_agent,
        direct_tools,
        governed_agent,
        tool_sequence,
    )

    url = "llamacpp://gemma3-270m?n_ctx=2048"
    config = config_from_mapping({
        "state_dir": str(base / "graph-state"), "tenants": {"acme": {}},
        "retry": {"backoff_s": 0.0},
        "backends": {"policy": write_policies(base), "registry": "memory://",
                     "serving_named": {"llm": url}}}, base_dir=base)
    order_planner = planner("order-planner", [LOOKUP], model="gemma@champion",
                            serving="llm", max_tokens=64, temperature=0.0,
                            policy="tools/open", timeout_s=120)
    mesh = Mesh(config, capabilities=[LOOKUP, order_planner])
    try:
        version = await mesh.ports.registry.register("gemma", "llama.cpp: gemma-3-270m")
        await mesh.ports.registry.set_alias("gemma", "champion", version.version)
        records: list[DecisionRecord] = []
        mesh.sinks.append(lambda record, _doc: records.append(record))
        tools = ["lookup-order"]
        graphs = {
            "governed": governed_agent(mesh, llm="order-planner", tools=tools,
                                       tenant="acme", max_steps=max_steps,
                                       instructions=INSTRUCTIONS),
            "direct": direct_agent(mesh, llm="order-planner",
                                   tools=direct_tools([LOOKUP]), tenant="acme",
                                   max_steps=max_steps, instructions=INSTRUCTIONS),
        }
        for side, graph in graphs.items():  # warm-up: model pages, connections
            await graph.ainvoke({"task": "What is the status of order W-1?"})
            log(f"warm-up {side} done")
        pairs: list[dict[str, Any]] = []
        for i in range(rounds):
            task = f"What is the status of order A-{100 + i}?"
            order = ["governed", "direct"] if i % 2 == 0 else ["direct", "governed"]
            pair: dict[str, Any] = {"task": task}
            for side in order:
                started = time.perf_counter()
                state = await graphs[side].ainvoke({"task": task})
                pair[side] = {"wall_s": time.perf_counter() - started,
                              "sequence": tool_sequence(state),
                              "run_id": state["run"]["run_id"],
                              "tool_calls": len(state["tool_calls"]),
                              "steps": state["steps"], "stopped_by": state["stopped_by"]}
            pair["same"] = pair["governed"]["sequence"] == pair["direct"]["sequence"]
            pairs.append(pair)
            log(f"round {i + 1}/{rounds}: governed {pair['governed']['wall_s']:.2f} s, "
                f"direct {pair['direct']['wall_s']:.2f} s, tool calls "
                f"{pair['governed']['tool_calls']}/{pair['direct']['tool_calls']}, "
                f"same sequence: {pair['same']}")
        await asyncio.to_thread(mesh.flush)
    finally:
        await mesh.aclose()
    tool_names = set(tools)
    governed_runs = {p["governed"]["run_id"] for p in pairs}
    tool_records = [r for r in records if r.capability in tool_names and r.parent
                    and r.parent["run_id"] in governed_runs]
    tool_calls = sum(p["governed"]["tool_calls"] for p in pairs)
    direct_runs = {p["direct"]["run_id"] for p in pairs}
    direct_tool_records = [r for r in records if r.capability in tool_names and r.parent
                           and r.parent["run_id"] in direct_runs]
    matched = [p for p in pairs if p["same"]]
    gov = sum(p["governed"]["wall_s"] for p in matched)
    direct = sum(p["direct"]["wall_s"] for p in matched)
    ratios = sorted(p["governed"]["wall_s"] / p["direct"]["wall_s"] for p in matched)
    latencies = sorted(r.latency_ms for r in tool_records)
    return {
        "mesh_over_direct_wall": round(gov / direct, 4) if matched else None,
        "records_per_tool_call": round(len(tool_records) / tool_calls, 4) if tool_calls
        else None,
        "graph": {
            "rounds": rounds, "rounds_counted": len(matched), "max_steps": max_steps,
            "governed_wall_s": round(gov, 3), "direct_wall_s": round(direct, 3),
            "pair_ratio_p50": round(ratios[len(ratios) // 2], 4) if ratios else None,
            "tool_calls_governed": tool_calls, "tool_records_governed": len(tool_records),
            "tool_records_direct": len(direct_tool_records),
            "tool_record_latency_ms_p50": round(latencies[len(latencies) // 2], 3)
            if latencies else None,
            "sequences": [[list(s) for s in p["governed"]["sequence"]] for p in pairs],
            "stopped_by_steps": sum(p["governed"]["stopped_by"] == "steps" for p in pairs),
            "notes": ("Same compiled graph code on both sides; only the tool calls differ "
                      "(GovernedCalls: Mesh.ainvoke with the run as parent; DirectCalls: the "
                      "capability's function). The planner is the same mesh capability on "
                      "both sides, on one llama.cpp engine in process (one generation at a "
                      "time). "
                      "Rounds alternate which side goes first."),
        },
    }


# --- runaway runs against budgets -------------------------------------------------------


@dataclass(frozen=True)
class Runaway:
    """One deliberately runaway run: its scenario and its budgets."""

    kind: str
    budgets: Budgets
    tool: str


def always_another(conversation: ChatInput, ctx: CallContext, tool: str) -> Prediction:
    """A scripted planner that never answers: a new tool call every step, using every
    completion token it is allowed (``max_tokens`` the run passes), like an LLM that
    rambles to the limit; its prompt is counted as the mesh estimates it."""
    granted = int(ctx.attributes.get("max_tokens", 128))
    action = {"action": tool, "answer": "",
              "arguments": {"order_id": f"R-{len(conversation.messages)}"}}
    prompt = estimate_tokens([m.model_dump() for m in conversation.messages])
    return Prediction(action, usage=Usage.of_tokens(prompt, granted))


GROWING: dict[str, int] = {}


def tool_specs() -> list[CapabilitySpec]:
    def loop_tool(q: OrderQuery) -> Order:
        return lookup(q)

    def flood_tool(q: OrderQuery) -> Prediction:
        # each call reports more tokens than the one before (a tool whose answers grow)
        GROWING[q.order_id] = 40 * (len(GROWING) % 25 + 1)
        return Prediction(lookup(q).model_dump(), usage=Usage(tokens=GROWING[q.order_id]))

    def costly_tool(q: OrderQuery) -> Order:
        return lookup(q)

    async def slow_tool(q: OrderQuery) -> Order:
        await asyncio.sleep(0.12)
        return lookup(q)

    specs = [
        CapabilitySpec(name="loop-tool", input=OrderQuery, output=Order, handler=loop_tool),
        CapabilitySpec(name="flood-tool", input=OrderQuery, output=Order, handler=flood_tool),
        CapabilitySpec(name="costly-tool", input=OrderQuery, output=Order,
                       handler=costly_tool, price=Price(per_call=0.004)),
        CapabilitySpec(name="slow-tool", input=OrderQuery, output=Order, handler=slow_tool),
    ]
    return specs


def runaway_plan(count: int, seed: int = 7) -> list[Runaway]:
    rng = random.Random(seed)
    kinds: list[Callable[[], Runaway]] = [
        lambda: Runaway("loop", Budgets(max_steps=rng.randint(2, 12), max_wall_s=30),
                        "loop-tool"),
        lambda: Runaway("token_flood", Budgets(max_steps=10_000,
                                               max_tokens=rng.randint(300, 4000),
                                               max_wall_s=60), "loop-tool"),
        lambda: Runaway("growing_tool_tokens", Budgets(max_steps=10_000,
                                                       max_tokens=rng.randint(500, 5000),
                                                       max_wall_s=60), "flood-tool"),
        lambda: Runaway("cost_flood", Budgets(max_steps=10_000,
                                              max_cost=round(rng.uniform(0.01, 0.12), 4),
                                              max_wall_s=60), "costly-tool"),
        lambda: Runaway("wall_clock", Budgets(max_steps=10_000,
                                              max_wall_s=round(rng.uniform(0.3, 1.2), 2)),
                        "slow-tool"),
    ]
    return [kinds[i % len(kinds)]() for i in range(count)]


async def runaway_figures(base: Path, count: int) -> dict[str, Any]:
    plan = runaway_plan(count)
    tools = tool_specs()
    planner_price = Price(per_1k_input_tokens=0.002, per_1k_output_tokens=0.004)
    planners = [CapabilitySpec(name=f"script-{t.name}", input=ChatInput,
                               output=action_model([t.name]), price=planner_price,
                               handler=_planner_for(t.name)) for t in tools]
    agents = [agent(f"runaway-{i}", instructions="Never stop.", llm=f"script-{run.tool}",
                    tools=[run.tool], budgets=run.budgets, max_step_tokens=96)
              for i, run in enumerate(plan)]
    mesh = Mesh.local(base / "runaway-state", tenants=["acme"],
                      capabilities=[*tools, *planners, *agents])
    records: list[DecisionRecord] = []
    mesh.sinks.append(lambda record, _doc: records.append(record))
    outcomes: list[dict[str, Any]] = []
    try:
        for i, run in enumerate(plan):
            try:
                await mesh.ainvoke(f"runaway-{i}", {"task": "Keep going."}, tenant="acme",
                                   caller="bench")
                outcomes.append({"kind": run.kind, "stopped_by": None, "record_id": None})
            except AgentBudgetExceeded as exc:
                outcomes.append({"kind": run.kind, "stopped_by": exc.budget,
                                 "record_id": exc.record_id, "details": exc.details})
            if (i + 1) % 10 == 0:
                log(f"runaway runs: {i + 1}/{len(plan)}")
        await asyncio.to_thread(mesh.flush)
    finally:
        await mesh.aclose()
    by_parent: dict[str, list[DecisionRecord]] = {}
    for record in records:
        if record.parent:
            by_parent.setdefault(record.parent["run_id"], []).append(record)
    runs = {r.record_id: r for r in records if r.capability.startswith("runaway-")}
    overruns: list[dict[str, Any]] = []
    per_kind: dict[str, dict[str, Any]] = {}
    worst_wall_excess = 0.0
    for run, outcome in zip(plan, outcomes, strict=True):
        kind = per_kind.setdefault(run.kind, {"runs": 0, "stopped_by": {}, "overruns": 0,
                                              "max_used_over_ceiling": 0.0})
        kind["runs"] += 1
        stopped = str(outcome["stopped_by"])
        kind["stopped_by"][stopped] = kind["stopped_by"].get(stopped, 0) + 1
        children = by_parent.get(outcome["record_id"] or "", [])
        tokens = sum(int(c.usage.get("tokens", 0) or 0) for c in children)
        cost = sum(c.cost for c in children)
        steps = sum(c.capability.startswith("script-") for c in children)
        record = runs.get(outcome["record_id"] or "")
        wall = record.latency_ms / 1000 if record else float("inf")
        b = run.budgets
        used = {"steps": steps / b.max_steps,
                "tokens": tokens / b.max_tokens if b.max_tokens else 0.0,
                "cost": cost / b.max_cost if b.max_cost else 0.0,
                "wall_clock": wall / b.max_wall_s}
        worst_wall_excess = max(worst_wall_excess, wall - b.max_wall_s)
        over = [name for name, fraction in used.items() if fraction > 1.0 and not (
            name == "wall_clock" and wall <= b.max_wall_s + WALL_TOLERANCE_S)]
        binding = {"loop": "steps", "token_flood": "tokens", "growing_tool_tokens": "tokens",
                   "cost_flood": "cost", "wall_clock": "wall_clock"}[run.kind]
        kind["max_used_over_ceiling"] = max(kind["max_used_over_ceiling"],
                                            round(used[binding], 4))
        if over or outcome["stopped_by"] is None:
            kind["overruns"] += 1
            overruns.append({"kind": run.kind, "over": over, "budgets": b.model_dump(),
                             "tokens": tokens, "cost": round(cost, 6), "steps": steps,
                             "wall_s": round(wall, 3), "stopped_by": outcome["stopped_by"]})
    return {"runaway_runs": len(plan), "budget_overruns": len(overruns),
            "runaway": {"by_kind": per_kind, "overruns": overruns,
                        "wall_excess_s_max": round(worst_wall_excess, 4),
                        "wall_tolerance_s": WALL_TOLERANCE_S,
                        "notes": ("Scripted planners (handlers) that never answer final; "
                                  "each step reports the prompt as the mesh estimates it plus "
                                  "every completion token the run allows it. Used amounts are "
                                  "counted from the child records (tokens, cost, LLM steps) "
                                  "and the run's record (wall clock), not from the tracker.")}}


def _planner_for(tool: str) -> Callable[[ChatInput, CallContext], Prediction]:
    def plan(conversation: ChatInput, ctx: CallContext) -> Prediction:
        return always_another(conversation, ctx, tool)

    return plan


# --- main ---------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=8,
                        help="interleaved governed/direct graph runs (default 8)")
    parser.add_argument("--max-steps", type=int, default=2,
                        help="planner decisions per graph run (default 2)")
    parser.add_argument("--runaway", type=int, default=60,
                        help="deliberately runaway agent runs (default 60, at least 50)")
    parser.add_argument("--skip-graph", action="store_true",
                        help="keep the graph figures of the last results file")
    parser.add_argument("--skip-runaway", action="store_true",
                        help="keep the runaway figures of the last results file")
    args = parser.parse_args(argv)
    doc: dict[str, Any] = json.loads(RESULTS.read_text()) if RESULTS.is_file() else {}
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="agents-bench-") as tmp:
        base = Path(tmp)
        if not args.skip_runaway:
            log(f"runaway runs: {args.runaway}")
            doc.update(asyncio.run(runaway_figures(base, args.runaway)))
        if not args.skip_graph:
            log(f"LangGraph agent, governed over direct: {args.rounds} rounds")
            doc.update(asyncio.run(graph_figures(base, args.rounds, args.max_steps)))
    doc["machine"] = (f"{platform.machine()} {platform.python_implementation()} "
                      f"{platform.python_version()}, shared 2-core host, no GPU")
    doc["seconds"] = round(time.perf_counter() - started, 1)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n")
    return doc


if __name__ == "__main__":
    result = main()
    print(json.dumps({k: v for k, v in result.items() if not isinstance(v, dict)}, indent=2))
