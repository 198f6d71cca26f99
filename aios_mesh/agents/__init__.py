"""Agents: a capability whose handler is a tool-calling loop over an LLM capability.

An agent's tools are other capabilities on an explicit allow-list; every tool call (and every
LLM step) is a child call through the whole pipeline — its own policy, quota, redaction and
decision record, naming the agent run as its ``parent`` — so one run is a tree of records.
Budgets per run (steps, tokens, cost, wall clock) end a runaway run with
:class:`AgentBudgetExceeded`.

    from aios_mesh.agents import Budgets, agent, planner

    plan = planner("refund-planner", [lookup_order], model="gemma@champion", serving="llm")
    refund = agent("refund-agent", instructions="Help with refunds.", llm="refund-planner",
                   tools=[lookup_order], budgets=Budgets(max_steps=4))
    mesh = Mesh.local(capabilities=[refund, plan, lookup_order])
    mesh.invoke("refund-agent", {"task": "Where is order A-17?"}, tenant="acme")

Tools named in ``approval`` wait for a human: the run parks in the review queue (its state in
:class:`ParkedRuns`, on the shared state) and ``{"resume": review_id}`` goes on after the
decision, in any process. ``aios-mesh lock`` pins each agent's definition (see
docs/guides/agents.md).
"""

from aios_mesh.agents.budget import (
    AgentBudgetExceeded,
    AgentToolRefused,
    BudgetName,
    BudgetTracker,
)
from aios_mesh.agents.parking import ParkedRun, ParkedRuns
from aios_mesh.agents.runtime import AgentRuntime, AgentStepFailed, agent, planner
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

__all__ = ["FINAL", "AgentBudgetExceeded", "AgentInput", "AgentResult", "AgentRuntime",
           "AgentSpec", "AgentStepFailed", "AgentToolRefused", "BudgetName", "BudgetTracker",
           "Budgets", "NextAction", "ParkedRun", "ParkedRuns", "ToolCallSummary",
           "action_model", "agent", "planner"]
