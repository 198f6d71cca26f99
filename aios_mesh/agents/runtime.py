"""The agent loop: ask the LLM capability for the next action (constrained output), call the
tool it names through the whole pipeline as a child call, show it what happened, repeat —
until it answers or a budget ends the run.

    refund_agent = agent("refund-agent", instructions="Help customers with refunds.",
                         llm="refund-planner", tools=[lookup_order, open_refund],
                         budgets=Budgets(max_steps=6, max_cost=0.05, max_wall_s=60))
    mesh = Mesh.local(capabilities=[refund_agent, planner, lookup_order, open_refund])
    mesh.invoke("refund-agent", {"task": "Refund order A-17"}, tenant="acme")

One run is a tree of decision records: the agent's own record, and one child record per LLM
step and per tool call, each naming the run as its ``parent``. At the end the run appends an
``agent_run`` entry to the audit log (budgets used, every step's record id, refusals).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from pydantic import BaseModel, ValidationError

from aios_mesh.agents.budget import AgentBudgetExceeded, AgentToolRefused, BudgetTracker
from aios_mesh.agents.spec import (
    FINAL,
    AgentInput,
    AgentResult,
    AgentSpec,
    Budgets,
    NextAction,
    ToolCallSummary,
    action_model,
)
from aios_mesh.capabilities import SLO, CapabilitySpec
from aios_mesh.context import CallContext
from aios_mesh.errors import InvalidInput, InvalidOutput, MeshError, PolicyDenied
from aios_mesh.generation import ChatInput, Generation
from aios_mesh.generation.tokens import estimate_tokens
from aios_mesh.result import Result

__all__ = ["AgentRuntime", "AgentStepFailed", "agent", "planner"]

#: Seconds the agent capability's SLO timeout leaves above the wall-clock budget, so the
#: budget (a typed outcome) ends a slow run, not the pipeline's timeout (which would retry).
_TIMEOUT_GRACE_S = 5.0


#: After each observation: small models otherwise call the same tool again and again.
_NEXT = ('\nIf this answers the task, reply with action "final" and the answer; otherwise '
         'call the tool you still need.')


class AgentStepFailed(MeshError):
    """An LLM step of an agent run failed (its own record says why). Never retried as a
    whole: a retry would run the agent's tool calls again."""

    code = "agent_step_failed"


class AgentRuntime:
    """Runs one agent's loop inside its capability's handler.

    Args:
        spec: the agent's definition.
        clock: monotonic seconds for the wall-clock budget (a test gives its own).
    """

    def __init__(self, spec: AgentSpec, *, clock: Callable[[], float] = time.monotonic
                 ) -> None:
        self.spec = spec
        self._clock = clock

    def system_prompt(self) -> str:
        """The instructions plus the tools and the answer protocol the LLM decides under."""
        lines = [self.spec.instructions.strip(), "", "Tools you may call:"]
        for tool in self.spec.tools:
            doc = self.spec.tool_docs.get(tool, "")
            lines.append(f"- {tool}{': ' + doc if doc else ''}")
        lines += ["", 'Answer with JSON: {"action": <a tool name or "final">, '
                      '"arguments": <the tool\'s input>, "answer": <your answer when the '
                      'action is "final", else "">}. Call a tool when you need its '
                      'information; after each call you see its observation.']
        return "\n".join(lines)

    async def run(self, task: AgentInput, ctx: CallContext) -> AgentResult:
        """One run: decide, call, observe, until the LLM answers ``final`` or a budget ends
        the run (:class:`AgentBudgetExceeded`)."""
        spec = self.spec
        tracker = BudgetTracker(spec.budgets, clock=self._clock)
        messages: list[dict[str, str]] = [{"role": "system", "content": self.system_prompt()},
                                          {"role": "user", "content": task.task}]
        steps: list[str | None] = []
        calls: list[ToolCallSummary] = []
        refusals: list[dict[str, Any]] = []
        answered: dict[str, Any] = {}  # (tool, arguments) -> the output it gave
        ended: MeshError | None = None
        try:
            while True:
                tracker.before_step()
                limit = tracker.step_tokens(estimate_tokens(messages), spec.max_step_tokens)
                decided = await self._llm_step(ctx, tracker, messages, limit, steps)
                if decided.action == FINAL:
                    return AgentResult(answer=decided.answer, steps=tracker.steps,
                                       tool_calls=calls, refused=len(refusals),
                                       tokens=tracker.tokens, cost=round(tracker.cost, 10))
                messages.append({"role": "assistant", "content": json.dumps(
                    {"action": decided.action, "arguments": decided.arguments}, default=str)})
                observation = await self._act(ctx, tracker, decided, calls, refusals,
                                              answered)
                messages.append({"role": "user", "content": "Observation: "
                                 + json.dumps(observation, default=str) + _NEXT})
        except MeshError as exc:
            ended = exc
            raise
        except Exception as exc:
            # not retryable on purpose: a retry would repeat the run's tool calls
            ended = AgentStepFailed(f"the agent loop failed: {type(exc).__name__}",
                                    hint="see the run's audit entry and its child records")
            raise ended from exc
        finally:
            await self._audit(ctx, tracker, steps, calls, refusals, ended)

    async def _child(self, ctx: CallContext, tracker: BudgetTracker, capability: str,
                     payload: Mapping[str, Any], attributes: Mapping[str, Any] | None = None,
                     ) -> Result[Any]:
        """A child call through the whole pipeline, cut off when the run's clock runs out;
        its usage is counted against the budgets."""
        try:
            async with asyncio.timeout(max(tracker.remaining_s(), 0.0)):
                result = await ctx.invoke(capability, dict(payload), attributes=attributes)
        except TimeoutError:
            raise tracker.timed_out() from None
        usage = result.record.usage or {}
        tracker.add(tokens=int(usage.get("tokens", 0) or 0), cost=float(result.record.cost))
        return result

    async def _llm_step(self, ctx: CallContext, tracker: BudgetTracker,
                        messages: list[dict[str, str]], max_tokens: int,
                        steps: list[str | None]) -> NextAction:
        try:
            result = await self._child(ctx, tracker, self.spec.llm, {"messages": messages},
                                       {"max_tokens": max_tokens})
        except AgentBudgetExceeded:
            raise
        except MeshError as exc:
            steps.append(exc.record_id)
            raise AgentStepFailed(f"LLM step {tracker.steps} ({self.spec.llm}) ended with "
                                  f"{exc.code}", hint="see the step's record",
                                  step_record=exc.record_id) from exc
        steps.append(result.record.record_id)
        if result.output is None:
            raise AgentStepFailed(f"LLM step {tracker.steps} was sent to human review",
                                  hint="an agent's planner must answer without review")
        try:
            return NextAction.model_validate(result.output.model_dump(mode="json"))
        except ValidationError as exc:
            raise InvalidOutput(f"the LLM capability {self.spec.llm!r} does not answer a "
                                "next action", hint="its output needs action, arguments, "
                                "answer: build it with aios_mesh.agents.action_model") from exc

    async def _act(self, ctx: CallContext, tracker: BudgetTracker, decided: NextAction,
                   calls: list[ToolCallSummary], refusals: list[dict[str, Any]],
                   seen: dict[str, Any]) -> dict[str, Any]:
        """Call the chosen tool (or refuse it); what the LLM sees next."""
        tool = decided.action
        key = json.dumps([tool, decided.arguments], sort_keys=True, default=str)
        if key in seen:
            # the same call again: no second child call; the model is shown what it had
            refusals.append({"reason": "repeated", "step": tracker.steps, "tool": tool})
            return {"tool": tool, "repeated": "you already made this call",
                    "earlier": seen[key]}
        if tool not in self.spec.tools:
            # the model's own text: only a digest of it goes into the audit entry
            refusals.append({"reason": "not_allowed", "step": tracker.steps,
                             "tool_sha256": hashlib.sha256(tool.encode()).hexdigest()})
            if self.spec.on_refused == "end":
                raise AgentToolRefused("the agent's model chose a tool outside its allow-list",
                                       hint="the run ended (on_refused = 'end'); allowed: "
                                            + ", ".join(self.spec.tools))
            return {"refused": "not an allowed tool", "allowed": list(self.spec.tools)}
        tracker.before_call()
        try:
            result = await self._child(ctx, tracker, tool, decided.arguments)
        except AgentBudgetExceeded:
            raise
        except InvalidInput as exc:  # the tool's own pipeline rejected the arguments
            calls.append(ToolCallSummary(tool=tool, record_id=exc.record_id,
                                         outcome=exc.outcome, code=exc.code))
            refusals.append({"reason": "invalid_arguments", "step": tracker.steps,
                             "tool": tool, "record_id": exc.record_id})
            if self.spec.on_refused == "end":
                raise AgentToolRefused(f"the arguments for {tool!r} fail its input schema",
                                       hint="the run ended (on_refused = 'end'); see the "
                                            "tool call's record") from exc
            return {"tool": tool, "error": exc.code, "message": exc.message}
        except PolicyDenied as exc:
            calls.append(ToolCallSummary(tool=tool, record_id=exc.record_id,
                                         outcome=exc.outcome, code=exc.code))
            return {"tool": tool, "denied": exc.reason_code or exc.code,
                    "message": exc.message}
        except MeshError as exc:
            calls.append(ToolCallSummary(tool=tool, record_id=exc.record_id,
                                         outcome=exc.outcome, code=exc.code))
            return {"tool": tool, "error": exc.code, "message": exc.message}
        record = result.record
        calls.append(ToolCallSummary(tool=tool, record_id=record.record_id,
                                     outcome=str(record.outcome)))
        if result.output is None:
            return {"tool": tool, "review": record.review_id}
        seen[key] = result.output.model_dump(mode="json")
        return {"tool": tool, "output": seen[key]}

    async def _audit(self, ctx: CallContext, tracker: BudgetTracker,
                     steps: list[str | None], calls: list[ToolCallSummary],
                     refusals: list[dict[str, Any]], ended: MeshError | None) -> None:
        """The run's own account in the audit log: budgets against use, which budget stopped
        it, the record of every step and tool call, the refusals (no payload values)."""
        await ctx.ports.audit.append({
            "kind": "agent_run", "record_id": ctx.record_id, "agent": self.spec.name,
            "agent_version": self.spec.version, "tenant": ctx.tenant,
            "ended": "ok" if ended is None else ended.code,
            "stopped_by": tracker.stopped_by, "budgets": tracker.used(),
            "llm_steps": steps,
            "tool_calls": [c.model_dump(mode="json") for c in calls],
            "refusals": refusals})


def agent(name: str, *, instructions: str, llm: str,
          tools: Sequence[CapabilitySpec | str], budgets: Budgets | None = None,
          version: str = "1", description: str = "", policy: str | None = None,
          on_refused: str = "continue", max_step_tokens: int = 128,
          clock: Callable[[], float] | None = None) -> CapabilitySpec:
    """An agent as a capability: its handler runs the loop (:class:`AgentRuntime`), its input
    is :class:`~aios_mesh.agents.AgentInput`, its output
    :class:`~aios_mesh.agents.AgentResult`. ``tools`` is the allow-list: capability specs
    (their description and input schema are shown to the LLM) or names.

    Example::

        refund_agent = agent("refund-agent", instructions="Help with refunds.",
                             llm="refund-planner", tools=[lookup_order],
                             budgets=Budgets(max_steps=4, max_tokens=3000))
        result = mesh.invoke("refund-agent", {"task": "Where is order A-17?"},
                             tenant="acme")
    """
    docs: dict[str, str] = {}
    names: list[str] = []
    for tool in tools:
        if isinstance(tool, CapabilitySpec):
            names.append(tool.name)
            schema = json.dumps(tool.input.model_json_schema().get("properties", {}),
                                separators=(",", ":"))
            docs[tool.name] = f"{tool.description.strip()} input: {schema}".strip()
        else:
            names.append(tool)
    spec = AgentSpec.model_validate({
        "name": name, "version": version, "instructions": instructions, "llm": llm,
        "tools": tuple(names), "tool_docs": docs, "budgets": budgets or Budgets(),
        "on_refused": on_refused, "max_step_tokens": max_step_tokens})
    runtime = AgentRuntime(spec, clock=clock or time.monotonic)

    async def run_agent(task: AgentInput, ctx: CallContext) -> AgentResult:
        return await runtime.run(task, ctx)

    return CapabilitySpec(name=name, version=version, input=AgentInput, output=AgentResult,
                          description=description or instructions.strip().splitlines()[0],
                          handler=run_agent, policy=policy,
                          slo=SLO(timeout_s=spec.budgets.max_wall_s + _TIMEOUT_GRACE_S))


def planner(name: str, tools: Sequence[CapabilitySpec | str], *, model: str,
            serving: str | None = None, max_tokens: int = 128, temperature: float = 0.0,
            policy: str | None = None, timeout_s: float = 60.0,
            **options: Any) -> CapabilitySpec:
    """The LLM capability an agent asks for its next action: a chat capability whose output
    is :func:`~aios_mesh.agents.action_model` over ``tools``, so the backend's constrained
    decoding can only name an allowed tool or ``final``.

    Example::

        refund_planner = planner("refund-planner", [lookup_order], model="gemma@champion",
                                 serving="llm", max_tokens=64)
    """
    names = [t.name if isinstance(t, CapabilitySpec) else t for t in tools]
    output: type[BaseModel] = action_model(names)
    return CapabilitySpec(name=name, input=ChatInput, output=output, model=model,
                          serving=serving, policy=policy, slo=SLO(timeout_s=timeout_s),
                          generate=Generation(max_tokens=max_tokens, temperature=temperature),
                          **options)
