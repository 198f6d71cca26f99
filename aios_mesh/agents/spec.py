"""What an agent is: its instructions, the tools it may call, the LLM that decides, its budgets.

    from aios_mesh.agents import AgentSpec, Budgets

    spec = AgentSpec(name="refund-agent", instructions="Help with refunds.",
                     llm="refund-planner", tools=("lookup-order", "open-refund"),
                     budgets=Budgets(max_steps=6, max_tokens=4000, max_cost=0.05,
                                     max_wall_s=60))
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, create_model, field_validator, model_validator

__all__ = ["FINAL", "AgentInput", "AgentResult", "AgentSpec", "Budgets", "NextAction",
           "ToolCallSummary", "action_model"]

#: The action that ends a run with an answer (never a tool name: tool names are kebab-case
#: capability names, and ``final`` is refused as one).
FINAL = "final"


class Budgets(BaseModel):
    """Ceilings of one agent run; the first one reached ends the run with
    :class:`~aios_mesh.agents.AgentBudgetExceeded`.

    Args:
        max_steps: LLM decisions (each may call one tool).
        max_tokens: tokens of every child call together (LLM steps and tools); ``None``: no
            ceiling.
        max_cost: cost of every child call together (the records' ``cost``); ``None``: none.
        max_wall_s: seconds from the start of the run.

    Example::

        Budgets(max_steps=8, max_tokens=2000, max_cost=0.01, max_wall_s=30)
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_steps: int = Field(8, ge=1, le=10_000)
    max_tokens: int | None = Field(None, ge=1)
    max_cost: float | None = Field(None, ge=0)
    max_wall_s: float = Field(60.0, gt=0, le=3600)


class AgentSpec(BaseModel):
    """One agent's definition.

    Args:
        name: the capability name callers invoke (kebab-case).
        instructions: the system prompt the LLM decides under.
        llm: the LLM capability asked for each next action (its output must have ``action``,
            ``arguments`` and ``answer``: :func:`action_model` builds one).
        tools: the allow-list: capability names the agent may call. A name the LLM gives
            that is not here is refused and never called.
        tool_docs: a line per tool for the LLM (its description and input schema);
            :func:`~aios_mesh.agents.agent` fills it from the tools' specs.
        budgets: the run's ceilings.
        on_refused: what a refused action does: ``continue`` (the LLM sees the refusal as
            its observation) or ``end`` (the run ends with
            :class:`~aios_mesh.agents.AgentToolRefused`). Applies to a tool outside the
            allow-list and to arguments the tool's input schema rejects.
        max_step_tokens: the most completion tokens one LLM step may ask for (further
            lowered to what the token budget has left).
        approval: tools (of ``tools``) whose every call waits for a human: the run parks in
            the review queue and resumes after the decision (``{"resume": review_id}``).
        history_tokens: the most prompt tokens a conversation session's earlier turns may
            take in a run given ``AgentInput.session`` (the oldest are trimmed, or
            summarised, to fit).
        history_summariser: a chat capability that summarises the oldest turns instead of
            trimming them (a child call of the run, counted against its budgets); ``None``:
            trim.

    Example::

        AgentSpec(name="refund-agent", instructions="...", llm="refund-planner",
                  tools=("lookup-order",), budgets=Budgets(max_steps=4))
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    version: str = "1"
    instructions: str
    llm: str
    tools: tuple[str, ...] = Field(min_length=1)
    tool_docs: dict[str, str] = Field(default_factory=dict)
    budgets: Budgets = Budgets()
    on_refused: Literal["continue", "end"] = "continue"
    max_step_tokens: int = Field(128, ge=1)
    approval: tuple[str, ...] = ()
    history_tokens: int = Field(1024, ge=16)
    history_summariser: str | None = None

    @model_validator(mode="after")
    def _approval_within_tools(self) -> AgentSpec:
        unknown = sorted(set(self.approval) - set(self.tools))
        if unknown:
            raise ValueError(f"approval names tools the agent cannot call: {unknown}; "
                             "list them in tools too")
        return self

    def definition(self) -> dict[str, Any]:
        """What defines this agent beyond its code, as ``aios-mesh lock`` pins it: its
        instructions, LLM, tools (with what the LLM is told of them), approvals, budgets."""
        return {"kind": "agent", **self.model_dump(mode="json", exclude={"name", "version"})}

    @field_validator("tools")
    @classmethod
    def _tools(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if FINAL in value:
            raise ValueError(f"{FINAL!r} is the action that ends a run, not a tool name")
        if len(set(value)) != len(value):
            raise ValueError("tools lists a name twice")
        return value


class AgentInput(BaseModel):
    """What an agent is asked to do: a new ``task``, or ``resume`` a run parked for a human's
    approval (the ``review_id`` it returned) once the reviewer decided.

    Example: ``mesh.invoke("refund-agent", {"task": "Refund order A-17"}, tenant="acme")``,
    later ``mesh.invoke("refund-agent", {"resume": result.output.review_id}, tenant="acme")``.

    ``session``: a conversation session of the tenant
    (:class:`~aios_mesh.conversations.ConversationStore`). A new run sees the session's
    earlier turns (windowed to the agent's ``history_tokens``) before the task and appends
    the task; the run (or the resumed run) that answers appends the answer.
    """

    model_config = ConfigDict(extra="forbid")

    task: str | None = Field(None, min_length=1)
    resume: str | None = Field(None, min_length=1, max_length=64)
    session: str | None = Field(None, min_length=1, max_length=128)

    @model_validator(mode="after")
    def _one_of(self) -> AgentInput:
        if (self.task is None) == (self.resume is None):
            raise ValueError("give either task (a new run) or resume (the review_id of a "
                             "parked run), not both and not neither")
        return self


class ToolCallSummary(BaseModel):
    """One tool call of a run: its record (a child of the run's record) and how it ended."""

    tool: str
    record_id: str | None
    outcome: str
    code: str | None = None
    #: the review item of a call that waited for a human's approval
    review_id: str | None = None


class AgentResult(BaseModel):
    """An agent run's answer and what it took; or, with ``status`` ``awaiting_approval``, the
    review item (``review_id``) its next tool call waits on."""

    status: Literal["answered", "awaiting_approval"] = "answered"
    answer: str
    review_id: str | None = None
    #: the record of the run segment this one resumed (a parked run's earlier record)
    resumed_from: str | None = None
    steps: int
    tool_calls: list[ToolCallSummary] = []
    refused: int = 0
    tokens: int = 0
    cost: float = 0.0


class NextAction(BaseModel):
    """The LLM's next action, loosely typed (a scripted or hand-written planner may answer
    with this; :func:`action_model` gives the constrained form)."""

    action: str
    arguments: dict[str, Any] = {}
    answer: str = ""


def action_model(tools: tuple[str, ...] | list[str], *, name: str = "AgentAction"
                 ) -> type[BaseModel]:
    """The next-action model for an LLM capability: ``action`` is one of ``tools`` or
    ``"final"`` (an enum in the JSON schema, so constrained decoding cannot name another
    tool), ``arguments`` the tool's input, ``answer`` the final answer.

    Example::

        Action = action_model(["lookup-order"])
        Action.model_validate({"action": "final", "arguments": {}, "answer": "done"})
    """
    names = (*tools, FINAL)
    # Literal[...] over names known only at run time, so the JSON schema gets an inline
    # enum (typed Any: mypy cannot follow a Literal built at run time)
    choice: Any = Literal.__getitem__(names)
    model: type[BaseModel] = create_model(
        name, __config__=ConfigDict(extra="forbid"),
        action=(choice, ...), arguments=(dict[str, Any], ...), answer=(str, ...))
    return model
