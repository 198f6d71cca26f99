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
from dataclasses import dataclass, field
from typing import Any

import orjson
from pydantic import BaseModel, ValidationError

from aios_mesh.agents.budget import AgentBudgetExceeded, AgentToolRefused, BudgetTracker
from aios_mesh.agents.parking import ParkedRun, ParkedRuns
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
from aios_mesh.conversations import ConversationStore, capability_summariser, session_window
from aios_mesh.errors import InvalidInput, InvalidOutput, MeshError, PolicyDenied
from aios_mesh.generation import ChatInput, Generation
from aios_mesh.generation.tokens import estimate_tokens
from aios_mesh.pipeline.validate import digest
from aios_mesh.redaction import RuleRedactor
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


@dataclass(slots=True)
class _Run:
    """One run segment's working state (what a parked run keeps, see :mod:`.parking`)."""

    tracker: BudgetTracker
    messages: list[dict[str, str]]
    steps: list[str | None] = field(default_factory=list)
    calls: list[ToolCallSummary] = field(default_factory=list)
    refusals: list[dict[str, Any]] = field(default_factory=list)
    answered: dict[str, Any] = field(default_factory=dict)  # (tool, arguments) -> output
    resumed_from: str | None = None
    #: the reviewed call a resumed run makes first, and the tool a human approved
    pending: NextAction | None = None
    approved: str | None = None
    #: the review item this segment parked on, or still waits on (nothing ran)
    parked: str | None = None
    waiting: str | None = None
    #: what the conversation window did (``WindowReport.to_dict()``), for the audit entry
    conversation: dict[str, Any] | None = None

    @classmethod
    def waiting_on(cls, parked: ParkedRun, tracker: BudgetTracker) -> _Run:
        return cls(tracker=tracker, messages=[], resumed_from=parked.run_record_id,
                   waiting=parked.review_id)

    def result(self, *, answer: str, status: str = "answered",
               review_id: str | None = None) -> AgentResult:
        return AgentResult.model_validate({
            "status": status, "answer": answer, "review_id": review_id,
            "resumed_from": self.resumed_from, "steps": self.tracker.steps,
            "tool_calls": self.calls, "refused": len(self.refusals),
            "tokens": self.tracker.tokens, "cost": round(self.tracker.cost, 10)})


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
        #: the digest ``aios-mesh lock`` pins (the audit entry of every run names it)
        self.definition_sha256 = digest(spec.definition())

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
        """One run: decide, call, observe, until the LLM answers ``final``, a budget ends
        the run (:class:`AgentBudgetExceeded`), or a tool call needs a human's approval (the
        run parks and returns ``status="awaiting_approval"``; ``{"resume": review_id}``
        goes on from there)."""
        spec = self.spec
        if task.resume is not None:
            run = await self._resume(task.resume, ctx)
            if run.waiting is not None:
                return run.result(answer="", status="awaiting_approval",
                                  review_id=run.waiting)
        else:
            run = _Run(tracker=BudgetTracker(spec.budgets, clock=self._clock), messages=[
                {"role": "system", "content": self.system_prompt()},
                {"role": "user", "content": task.task or ""}])
        ended: MeshError | None = None
        # one store for the run's reads and appends (the handler's input is what the
        # pipeline saw; the store redacts again before writing)
        store = (await asyncio.to_thread(ConversationStore, ctx.state, redactor=RuleRedactor())
                 if task.session is not None else None)
        try:
            if store is not None and task.session is not None and task.resume is None:
                await self._load_session(ctx, run, store, task.session, task.task or "")
            if run.pending is not None:  # a resumed run: the reviewed call comes first
                await self._observe(ctx, run, run.pending)
            while True:
                run.tracker.before_step()
                limit = run.tracker.step_tokens(estimate_tokens(run.messages),
                                                spec.max_step_tokens)
                decided = await self._llm_step(ctx, run, limit)
                if decided.action == FINAL:
                    if store is not None and task.session is not None:
                        await asyncio.to_thread(self._say, ctx, store, task.session,
                                                "assistant", decided.answer)
                    return run.result(answer=decided.answer)
                run.messages.append({"role": "assistant", "content": json.dumps(
                    {"action": decided.action, "arguments": decided.arguments}, default=str)})
                if decided.action in spec.approval:
                    run.parked = await self._park(ctx, run, decided)
                    return run.result(answer="", status="awaiting_approval",
                                      review_id=run.parked)
                await self._observe(ctx, run, decided)
        except MeshError as exc:
            ended = exc
            raise
        except Exception as exc:
            # not retryable on purpose: a retry would repeat the run's tool calls
            ended = AgentStepFailed(f"the agent loop failed: {type(exc).__name__}",
                                    hint="see the run's audit entry and its child records")
            raise ended from exc
        finally:
            if store is not None:
                store.close()
            await self._audit(ctx, run, ended)

    @staticmethod
    def _say(ctx: CallContext, store: ConversationStore, session: str, role: str,
             content: str) -> None:
        """Append a turn of this run (its record id) to the session."""
        store.append(session, tenant=ctx.tenant, role=role, content=content,
                     record_id=ctx.record_id)

    async def _load_session(self, ctx: CallContext, run: _Run, store: ConversationStore,
                            session: str, task: str) -> None:
        """Put the session's earlier turns (windowed to ``history_tokens``; a summary is a
        child call counted against the run's budgets) between the instructions and the
        task, and append the task to the session."""
        summariser = None
        if self.spec.history_summariser is not None:
            async def invoke(capability: str, payload: Any, *,
                             attributes: Mapping[str, Any] | None = None) -> Result[Any]:
                return await self._child(ctx, run.tracker, capability, payload, attributes)

            summariser = capability_summariser(invoke, self.spec.history_summariser)
        made = await session_window(
            store, session, tenant=ctx.tenant, max_tokens=self.spec.history_tokens,
            strategy="trim" if summariser is None else "summarise", summariser=summariser)
        run.messages[1:1] = made.payload()
        run.conversation = {"conversation_window": made.report.to_dict()}
        await asyncio.to_thread(self._say, ctx, store, session, "user", task)

    async def _observe(self, ctx: CallContext, run: _Run, decided: NextAction) -> None:
        observation = await self._act(ctx, run, decided)
        run.messages.append({"role": "user", "content": "Observation: "
                             + json.dumps(observation, default=str) + _NEXT})

    async def _park(self, ctx: CallContext, run: _Run, decided: NextAction) -> str:
        """Stop before a tool call that needs approval: a review item for the human (the
        tool and its arguments; a correction replaces the arguments) and the run's state,
        both on the shared state, so any process can resume it."""
        run.tracker.before_call()  # a run out of budget ends here, not after the review
        review_id = await asyncio.to_thread(
            ctx.review.enqueue, record_id=ctx.record_id, tenant=ctx.tenant,
            capability=ctx.capability or self.spec.name,
            reason=f"agent tool call needs approval: {decided.action}",
            payload={"tool": decided.action, "arguments": decided.arguments},
            proposed=dict(decided.arguments),
            resume={"agent_run": ctx.record_id, "tool": decided.action})
        run.calls.append(ToolCallSummary(tool=decided.action, record_id=None,
                                         outcome="awaiting_approval", review_id=review_id))
        parked = ParkedRun(
            review_id=review_id, tenant=ctx.tenant, agent=self.spec.name,
            run_record_id=ctx.record_id, tool=decided.action, arguments=decided.arguments,
            messages=run.messages, llm_steps=run.steps, tool_calls=run.calls,
            refusals=run.refusals, answered=run.answered, used=run.tracker.snapshot())
        await asyncio.to_thread(self._keep, ctx, parked)
        return review_id

    @staticmethod
    def _keep(ctx: CallContext, parked: ParkedRun) -> None:
        with ParkedRuns(ctx.state) as runs:
            runs.park(parked)

    async def _resume(self, review_id: str, ctx: CallContext) -> _Run:
        """The parked run, claimed (exactly once), with the reviewer's decision as the
        pending action: the approved (or corrected) call, or a refusal the LLM is shown."""
        with ParkedRuns(ctx.state) as runs:
            parked = await asyncio.to_thread(runs.get, review_id, tenant=ctx.tenant)
            if parked.agent != self.spec.name:
                raise InvalidInput(f"review item {review_id!r} belongs to agent "
                                   f"{parked.agent!r}",
                                   hint=f"resume it with mesh.invoke({parked.agent!r}, ...)")
            item = await asyncio.to_thread(ctx.review.get, review_id)
            if item.status == "pending":
                # still waiting: the same answer again, nothing taken, nothing called
                return _Run.waiting_on(parked, BudgetTracker.restore(
                    self.spec.budgets, parked.used, clock=self._clock))
            parked = await asyncio.to_thread(runs.claim, review_id, tenant=ctx.tenant,
                                             by=ctx.record_id)
        run = _Run(tracker=BudgetTracker.restore(self.spec.budgets, parked.used,
                                                 clock=self._clock),
                   messages=parked.messages, steps=parked.llm_steps, calls=parked.tool_calls,
                   refusals=parked.refusals, answered=parked.answered,
                   resumed_from=parked.run_record_id)
        approved = item.status == "approved"
        for call in run.calls:
            if call.review_id == review_id:
                call.outcome = "approved" if approved else "rejected"
        if approved:
            arguments = item.final_output if isinstance(item.final_output, dict) \
                else parked.arguments
            run.pending = NextAction(action=parked.tool, arguments=arguments)
            run.approved = parked.tool
        else:
            run.refusals.append({"reason": "rejected_by_reviewer", "tool": parked.tool,
                                 "review_id": review_id})
            run.messages.append({"role": "user", "content": "Observation: " + json.dumps(
                {"tool": parked.tool, "refused": "a reviewer rejected this call"}) + _NEXT})
        return run

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

    async def _llm_step(self, ctx: CallContext, run: _Run, max_tokens: int) -> NextAction:
        tracker, steps = run.tracker, run.steps
        try:
            result = await self._child(ctx, tracker, self.spec.llm,
                                       {"messages": run.messages}, {"max_tokens": max_tokens})
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

    async def _act(self, ctx: CallContext, run: _Run, decided: NextAction) -> dict[str, Any]:
        """Call the chosen tool (or refuse it); what the LLM sees next."""
        tracker, calls, refusals, seen = run.tracker, run.calls, run.refusals, run.answered
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

    async def _audit(self, ctx: CallContext, run: _Run, ended: MeshError | None) -> None:
        """The run's own account in the audit log: budgets against use, which budget stopped
        it, the record of every step and tool call, the refusals (no payload values); for a
        parked or resumed run, the review item and the run segment it goes on from."""
        outcome = "ok" if ended is None else ended.code
        if ended is None and (run.parked or run.waiting):
            outcome = "awaiting_approval"
        await ctx.ports.audit.append({
            "kind": "agent_run", "record_id": ctx.record_id, "agent": self.spec.name,
            "agent_version": self.spec.version, "tenant": ctx.tenant,
            "definition_sha256": self.definition_sha256,
            "ended": outcome, "stopped_by": run.tracker.stopped_by,
            "budgets": run.tracker.used(), "llm_steps": run.steps,
            "tool_calls": [c.model_dump(mode="json") for c in run.calls],
            "refusals": run.refusals, "parked_on": run.parked or run.waiting,
            "resumed_from": run.resumed_from, **(run.conversation or {})})


def agent(name: str, *, instructions: str, llm: str,
          tools: Sequence[CapabilitySpec | str], budgets: Budgets | None = None,
          version: str = "1", description: str = "", policy: str | None = None,
          on_refused: str = "continue", max_step_tokens: int = 128,
          approval: Sequence[CapabilitySpec | str] = (),
          history_tokens: int = 1024, history_summariser: str | None = None,
          clock: Callable[[], float] | None = None) -> CapabilitySpec:
    """An agent as a capability: its handler runs the loop (:class:`AgentRuntime`), its input
    is :class:`~aios_mesh.agents.AgentInput`, its output
    :class:`~aios_mesh.agents.AgentResult`. ``tools`` is the allow-list: capability specs
    (their description and input schema are shown to the LLM) or names. Every call of a tool
    in ``approval`` waits for a human: the run parks in the review queue and returns
    ``status="awaiting_approval"`` with the ``review_id``; once a reviewer decided,
    ``{"resume": review_id}`` goes on (in any process: the run is kept on the shared state).
    The definition (instructions, tools, LLM, budgets) is what ``aios-mesh lock`` pins.

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
        "on_refused": on_refused, "max_step_tokens": max_step_tokens,
        "approval": tuple(t.name if isinstance(t, CapabilitySpec) else t for t in approval),
        "history_tokens": history_tokens, "history_summariser": history_summariser})
    runtime = AgentRuntime(spec, clock=clock or time.monotonic)

    async def run_agent(task: AgentInput, ctx: CallContext) -> AgentResult:
        return await runtime.run(task, ctx)

    return CapabilitySpec(name=name, version=version, input=AgentInput, output=AgentResult,
                          description=description or instructions.strip().splitlines()[0],
                          handler=run_agent, policy=policy,
                          definition=orjson.dumps(spec.definition(),
                                                  option=orjson.OPT_SORT_KEYS).decode(),
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
