"""A LangGraph agent whose every step is a governed capability call.

Needs ``langgraph`` (the ``interop`` extra); importing this module without it raises an
``ImportError`` that names the extra.

The graph is ``start → decide ⇄ tools → end``:

* **decide** asks a mesh *planner* capability (:func:`aios_mesh.agents.planner`) for the next
  action as constrained output — ``action`` is an enum of the allowed tool names plus
  ``"final"`` — because a small model (Gemma 3 270M) never calls a tool with
  ``tool_choice: "auto"``. Each decision is a governed call with its own record.
* **tools** calls the chosen capability through the mesh's pipeline as a child call of the
  graph run: policy, quota, redaction and **exactly one decision record per tool call**,
  whose ``parent`` is the run (``{"run_id", "namespace": "langgraph", "name"}``, or the
  ``parent=`` you give, e.g. ``ctx.as_parent()`` inside a capability handler).
* the run ends when the planner answers ``"final"`` or after ``max_steps`` decisions
  (``stopped_by = "steps"``); the same call twice (same tool, same arguments) is not made
  again — the planner is shown the earlier output, as in :mod:`aios_mesh.agents`.

::

    from aios_mesh.interop.langgraph import governed_agent

    graph = governed_agent(mesh, llm="order-planner", tools=["lookup-order"],
                           tenant="acme", max_steps=4)
    state = await graph.ainvoke({"task": "Where is order A-17?"})
    state["answer"], state["tool_calls"]      # each tool call with its record id

The same graph runs with the tools called *directly* (no pipeline, no record) for
comparison — :func:`direct_agent` swaps only the tool calls (:class:`DirectCalls`), the
graph code and the planner calls are the same::

    graph = direct_agent(mesh, llm="order-planner", tools={"lookup-order": lookup},
                         tenant="acme", max_steps=4)
"""

from __future__ import annotations

import inspect
import json
import uuid
from collections.abc import Callable, Coroutine, Mapping, Sequence
from typing import Any, Protocol, TypedDict

from pydantic import BaseModel, ValidationError

from aios_mesh.agents import FINAL, AgentSpec, AgentStepFailed, NextAction
from aios_mesh.agents.runtime import AgentRuntime
from aios_mesh.capabilities import CapabilitySpec
from aios_mesh.errors import InvalidInput, InvalidOutput, MeshError, PolicyDenied
from aios_mesh.interop import missing_framework, plain_output
from aios_mesh.mesh import Mesh

try:
    from langchain_core.runnables import RunnableLambda
    from langgraph.graph import END, START, StateGraph
    from langgraph.graph.state import CompiledStateGraph
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise missing_framework("langgraph", exc) from exc

__all__ = ["RUN_NAMESPACE", "AgentCalls", "AgentState", "DirectCalls", "GovernedCalls",
           "ToolCallOutcome", "build_agent_graph", "direct_agent", "direct_tools",
           "governed_agent", "tool_sequence"]

#: The lineage namespace of a graph run (the ``parent`` of its calls).
RUN_NAMESPACE = "langgraph"

#: After each observation (small models otherwise call the same tool again and again).
_NEXT = ('\nIf this answers the task, reply with action "final" and the answer; otherwise '
         'call the tool you still need.')

DirectTool = Callable[[dict[str, Any]], Any]


class ToolCallOutcome(TypedDict):
    """One tool call the graph made: its arguments, record (``None`` for a direct call) and
    how it ended."""

    tool: str
    arguments: dict[str, Any]
    record_id: str | None
    outcome: str
    code: str | None


class AgentState(TypedDict, total=False):
    """The graph's state. Give ``task`` (and optionally ``run``, the parent of every call);
    read ``answer``, ``tool_calls``, ``steps``, ``stopped_by``."""

    task: str
    run: dict[str, Any]
    messages: list[dict[str, str]]
    steps: int
    pending: dict[str, Any] | None
    tool_calls: list[ToolCallOutcome]
    seen: dict[str, Any]
    refused: int
    answer: str | None
    stopped_by: str | None


class AgentCalls(Protocol):
    """What the graph's two nodes call: the planner and the tools. The graph code is the
    same for every implementation (governed or direct)."""

    async def decide(self, messages: list[dict[str, str]], run: dict[str, Any]
                     ) -> NextAction:
        """The planner's next action for the conversation so far."""
        ...

    async def call_tool(self, tool: str, arguments: dict[str, Any], run: dict[str, Any]
                        ) -> tuple[dict[str, Any], ToolCallOutcome]:
        """Call ``tool``; the observation the planner sees next and what the call was."""
        ...


class GovernedCalls:
    """Planner and tools as governed mesh calls for ``tenant`` / ``caller``; each names the
    graph run as its ``parent``.

    Example::

        calls = GovernedCalls(mesh, llm="order-planner", tenant="acme", caller="bot")
    """

    def __init__(self, mesh: Mesh, *, llm: str, tenant: str, caller: str | None = None
                 ) -> None:
        self.mesh = mesh
        self.llm = llm
        self.tenant = tenant
        self.caller = caller or RUN_NAMESPACE

    async def decide(self, messages: list[dict[str, str]], run: dict[str, Any]
                     ) -> NextAction:
        """One planner call (constrained next action), its own record."""
        result = await self.mesh.ainvoke(self.llm, {"messages": messages},
                                         tenant=self.tenant, caller=self.caller, parent=run)
        if result.output is None:
            raise AgentStepFailed(f"the planner {self.llm!r} was sent to human review",
                                  hint="an agent's planner must answer without review")
        try:
            return NextAction.model_validate(result.output.model_dump(mode="json"))
        except ValidationError as exc:
            raise InvalidOutput(f"the planner {self.llm!r} does not answer a next action",
                                hint="its output needs action, arguments, answer: build it "
                                     "with aios_mesh.agents.planner") from exc

    async def call_tool(self, tool: str, arguments: dict[str, Any], run: dict[str, Any]
                        ) -> tuple[dict[str, Any], ToolCallOutcome]:
        """One governed child call; a refusal (invalid arguments, policy, quota) is the
        observation, with the refused call's record."""
        try:
            result = await self.mesh.ainvoke(tool, arguments, tenant=self.tenant,
                                             caller=self.caller, parent=run)
        except InvalidInput as exc:  # the tool's own pipeline rejected the arguments
            return ({"tool": tool, "error": exc.code, "message": exc.message},
                    _outcome(tool, arguments, exc.record_id, exc.outcome, exc.code))
        except PolicyDenied as exc:
            return ({"tool": tool, "denied": exc.reason_code or exc.code,
                     "message": exc.message},
                    _outcome(tool, arguments, exc.record_id, exc.outcome, exc.code))
        except MeshError as exc:
            return ({"tool": tool, "error": exc.code, "message": exc.message},
                    _outcome(tool, arguments, exc.record_id, exc.outcome, exc.code))
        return ({"tool": tool, "output": plain_output(result)},
                _outcome(tool, arguments, result.record.record_id,
                         str(result.record.outcome), None))


class DirectCalls(GovernedCalls):
    """The comparison path: the same planner calls through the mesh, the tools called as
    plain functions (no policy, quota, redaction or record) — what an agent framework does
    on its own.

    Args:
        tools: name → a function of the arguments dict (sync or async); see
            :func:`direct_tools` for a capability's own handler.

    Example::

        calls = DirectCalls(mesh, llm="order-planner", tenant="acme",
                            tools=direct_tools([lookup_order]))
    """

    def __init__(self, mesh: Mesh, *, llm: str, tenant: str,
                 tools: Mapping[str, DirectTool], caller: str | None = None) -> None:
        super().__init__(mesh, llm=llm, tenant=tenant, caller=caller)
        self.tools = dict(tools)

    async def call_tool(self, tool: str, arguments: dict[str, Any], run: dict[str, Any]
                        ) -> tuple[dict[str, Any], ToolCallOutcome]:
        """Call the function; an exception is the observation (``invalid_input`` for a
        pydantic ``ValidationError``)."""
        try:
            answer = self.tools[tool](arguments)
            if inspect.isawaitable(answer):
                answer = await answer
        except ValidationError as exc:
            return ({"tool": tool, "error": "invalid_input", "message": str(exc)},
                    _outcome(tool, arguments, None, "rejected", "invalid_input"))
        except Exception as exc:
            return ({"tool": tool, "error": type(exc).__name__, "message": str(exc)},
                    _outcome(tool, arguments, None, "error", type(exc).__name__))
        output = answer.model_dump(mode="json") if isinstance(answer, BaseModel) else answer
        return {"tool": tool, "output": output}, _outcome(tool, arguments, None, "ok", None)


def _outcome(tool: str, arguments: dict[str, Any], record_id: str | None, outcome: str,
             code: str | None) -> ToolCallOutcome:
    return {"tool": tool, "arguments": dict(arguments), "record_id": record_id,
            "outcome": outcome, "code": code}


def direct_tools(specs: Sequence[CapabilitySpec]) -> dict[str, DirectTool]:
    """Capabilities' own handlers as direct tool functions (validate the arguments with the
    input model, call the handler): the ungoverned twin of the governed tool.

    Raises:
        ValueError: a spec without a one-argument handler (a model-served capability).

    Example::

        direct_tools([lookup_order])["lookup-order"]({"order_id": "A-17"})
    """
    tools: dict[str, DirectTool] = {}
    for spec in specs:
        handler = spec.handler
        if handler is None or len(inspect.signature(handler).parameters) != 1:
            raise ValueError(f"{spec.name!r} has no one-argument handler to call directly")

        def call(arguments: dict[str, Any], *, _h: Callable[[Any], Any] = handler,
                 _in: type[BaseModel] = spec.input) -> Any:
            return _h(_in.model_validate(arguments))

        tools[spec.name] = call
    return tools


def tool_sequence(state: Mapping[str, Any]) -> list[tuple[str, str]]:
    """The tool calls a finished run made, as ``(tool, canonical JSON arguments)`` pairs —
    what the benchmark compares between the governed and the direct graph.

    Example: ``tool_sequence(state) == [("lookup-order", '{"order_id": "A-17"}')]``.
    """
    return [(c["tool"], json.dumps(c["arguments"], sort_keys=True, default=str))
            for c in state.get("tool_calls", [])]


def build_agent_graph(calls: AgentCalls, *, tools: Sequence[str], instructions: str,
                      tool_docs: Mapping[str, str] | None = None, max_steps: int = 8,
                      name: str = "governed-agent", parent: Mapping[str, Any] | None = None,
                      sync_runner: Callable[[Coroutine[Any, Any, Any]], Any] | None = None
                      ) -> CompiledStateGraph[Any, Any, Any, Any]:
    """The agent graph over any :class:`AgentCalls` (governed or direct).

    Args:
        calls: the planner and tool calls.
        tools: the allow-list (a name outside it is refused and never called).
        instructions: the planner's system prompt (the tools and the answer protocol are
            added, as :mod:`aios_mesh.agents` does).
        tool_docs: a line per tool for the planner.
        max_steps: planner decisions before the run stops (``stopped_by = "steps"``).
        name: the run's name in its ``parent``.
        parent: the ``parent`` of every call (default: a fresh graph run per invocation).
        sync_runner: runs a coroutine to completion for ``graph.invoke`` (the mesh's
            ``run_sync``); without it the graph is async only.

    Example::

        graph = build_agent_graph(GovernedCalls(mesh, llm="p", tenant="acme"),
                                  tools=["lookup-order"], instructions="Answer.")
    """
    if max_steps < 1:
        raise ValueError("max_steps must be at least 1")
    allowed = tuple(tools)
    prompt = AgentRuntime(AgentSpec(name=name, instructions=instructions, llm="planner",
                                    tools=allowed, tool_docs=dict(tool_docs or {}))
                          ).system_prompt()

    async def start(state: AgentState) -> AgentState:
        run = dict(state.get("run") or parent or {
            "run_id": str(uuid.uuid4()), "namespace": RUN_NAMESPACE, "name": name})
        return {"run": run, "steps": 0, "tool_calls": [], "seen": {}, "refused": 0,
                "pending": None, "answer": None, "stopped_by": None,
                "messages": [{"role": "system", "content": prompt},
                             {"role": "user", "content": state["task"]}]}

    async def decide(state: AgentState) -> AgentState:
        steps = state.get("steps", 0)
        if steps >= max_steps:
            return {"stopped_by": "steps", "pending": None}
        action = await calls.decide(state["messages"], state["run"])
        if action.action == FINAL:
            return {"steps": steps + 1, "answer": action.answer, "pending": None}
        message = {"role": "assistant", "content": json.dumps(
            {"action": action.action, "arguments": action.arguments}, default=str)}
        return {"steps": steps + 1, "messages": [*state["messages"], message],
                "pending": {"action": action.action, "arguments": dict(action.arguments)}}

    async def act(state: AgentState) -> AgentState:
        pending = state.get("pending") or {}
        tool, arguments = str(pending.get("action")), dict(pending.get("arguments") or {})
        key = json.dumps([tool, arguments], sort_keys=True, default=str)
        seen = dict(state.get("seen", {}))
        update: AgentState = {"pending": None}
        if key in seen:  # the same call again: not made twice
            observation: dict[str, Any] = {"tool": tool, "repeated":
                                           "you already made this call",
                                           "earlier": seen[key]}
            update["refused"] = state.get("refused", 0) + 1
        elif tool not in allowed:
            observation = {"refused": "not an allowed tool", "allowed": list(allowed)}
            update["refused"] = state.get("refused", 0) + 1
        else:
            observation, made = await calls.call_tool(tool, arguments, state["run"])
            update["tool_calls"] = [*state.get("tool_calls", []), made]
            if "output" in observation:
                seen[key] = observation["output"]
        update["seen"] = seen
        update["messages"] = [*state["messages"], {"role": "user", "content": (
            "Observation: " + json.dumps(observation, default=str) + _NEXT)}]
        return update

    def route(state: AgentState) -> str:
        return "tools" if state.get("pending") else END

    def node(fn: Callable[[AgentState], Coroutine[Any, Any, AgentState]]
             ) -> RunnableLambda[Any, Any]:
        if sync_runner is None:
            return RunnableLambda(fn, name=fn.__name__)
        runner = sync_runner

        def sync(state: AgentState) -> AgentState:
            result: AgentState = runner(fn(state))
            return result

        return RunnableLambda(sync, afunc=fn, name=fn.__name__)

    graph: StateGraph[AgentState, Any, Any, Any] = StateGraph(AgentState)
    graph.add_node("start", node(start))
    graph.add_node("decide", node(decide))
    graph.add_node("tools", node(act))
    graph.add_edge(START, "start")
    graph.add_edge("start", "decide")
    graph.add_conditional_edges("decide", route, {"tools": "tools", END: END})
    graph.add_edge("tools", "decide")
    # two supersteps per decision, plus start and the last decision
    return graph.compile(name=name).with_config(recursion_limit=2 * max_steps + 4)


def governed_agent(mesh: Mesh, *, llm: str, tools: Sequence[str], tenant: str,
                   caller: str | None = None, max_steps: int = 8,
                   instructions: str = "Use the tools to answer the task.",
                   name: str = "governed-agent", parent: Mapping[str, Any] | None = None
                   ) -> CompiledStateGraph[Any, Any, Any, Any]:
    """A compiled LangGraph agent over mesh capabilities: the decision node calls the
    planner capability ``llm``, the tool node calls ``tools`` as governed child calls of the
    run (one decision record each). Tool descriptions and input schemas come from the specs.

    Example::

        graph = governed_agent(mesh, llm="order-planner", tools=["lookup-order"],
                               tenant="acme", max_steps=4,
                               instructions="Call lookup-order, then answer.")
        state = graph.invoke({"task": "Where is order A-17?"})
        [c["record_id"] for c in state["tool_calls"]]
    """
    return build_agent_graph(GovernedCalls(mesh, llm=llm, tenant=tenant, caller=caller),
                             tools=tools, instructions=instructions,
                             tool_docs=_tool_docs(mesh, tools), max_steps=max_steps,
                             name=name, parent=parent, sync_runner=mesh.run_sync)


def direct_agent(mesh: Mesh, *, llm: str, tools: Mapping[str, DirectTool], tenant: str,
                 caller: str | None = None, max_steps: int = 8,
                 instructions: str = "Use the tools to answer the task.",
                 name: str = "direct-agent", tool_docs_from: Sequence[str] | None = None,
                 ) -> CompiledStateGraph[Any, Any, Any, Any]:
    """The same graph as :func:`governed_agent` with the tools called directly (no pipeline,
    no record) — the benchmark's baseline. The planner is still the mesh capability ``llm``,
    and the tool docs come from the capabilities named ``tool_docs_from`` (default: the tool
    names, where the mesh has them), so both graphs prompt the planner identically.

    Example::

        graph = direct_agent(mesh, llm="order-planner",
                             tools=direct_tools([lookup_order]), tenant="acme")
    """
    names = list(tools)
    documented = [n for n in (tool_docs_from or names) if n in mesh.capabilities]
    return build_agent_graph(DirectCalls(mesh, llm=llm, tenant=tenant, tools=tools,
                                         caller=caller),
                             tools=names, instructions=instructions,
                             tool_docs=_tool_docs(mesh, documented), max_steps=max_steps,
                             name=name, sync_runner=mesh.run_sync)


def _tool_docs(mesh: Mesh, tools: Sequence[str]) -> dict[str, str]:
    docs = {}
    for tool in tools:
        spec = mesh.capability(tool)
        schema = json.dumps(spec.input.model_json_schema().get("properties", {}),
                            separators=(",", ":"))
        docs[tool] = f"{spec.description.strip()} input: {schema}".strip()
    return docs
