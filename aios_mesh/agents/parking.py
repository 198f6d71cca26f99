"""Parked agent runs: where a run waits while a human decides on a tool call that needs
approval, durable on the shared-state seam (a sqlite file embedded, PostgreSQL for replicas),
so the run resumes after the decision — in this process, another replica, or after a restart.

    runs = ParkedRuns(mesh.state)
    runs.park(parked)                               # the run stops; its review item is open
    ...                                             # a reviewer approves or rejects
    parked = runs.claim(review_id, tenant="acme")   # exactly one resumer gets it

What is kept is the run's working state: the conversation as the agent's LLM saw it (after
the pipeline's redaction, like the review queue's payloads), the record ids of its steps and
tool calls, the budgets used so far, and the tool call waiting for approval.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from aios_mesh.agents.spec import ToolCallSummary
from aios_mesh.errors import InvalidInput, NotFound
from aios_mesh.state import Database, Migration, SharedState

__all__ = ["MIGRATIONS", "ParkedRun", "ParkedRuns"]

#: The store's schema (the same SQL on sqlite and PostgreSQL: the state is JSON text).
MIGRATIONS: tuple[Migration, ...] = (Migration(1, (
    """CREATE TABLE IF NOT EXISTS agent_parked (
          review_id TEXT PRIMARY KEY, tenant TEXT NOT NULL, agent TEXT NOT NULL,
          run_record_id TEXT NOT NULL, status TEXT NOT NULL, parked_at TEXT NOT NULL,
          resumed_by TEXT, resumed_at TEXT, state TEXT NOT NULL
        )""",
    "CREATE INDEX IF NOT EXISTS agent_parked_tenant ON agent_parked(tenant, status)",
)),)


class ParkedRun(BaseModel):
    """A run stopped before a tool call that needs a human's approval.

    ``used`` is :meth:`BudgetTracker.snapshot <aios_mesh.agents.BudgetTracker.snapshot>`:
    the time spent waiting for the reviewer does not count against the wall-clock budget.
    """

    model_config = ConfigDict(extra="forbid")

    review_id: str
    tenant: str
    agent: str
    run_record_id: str
    tool: str
    arguments: dict[str, Any]
    messages: list[dict[str, str]]
    llm_steps: list[str | None]
    tool_calls: list[ToolCallSummary]
    refusals: list[dict[str, Any]]
    answered: dict[str, Any]
    used: dict[str, float]
    status: Literal["parked", "resumed"] = "parked"


class ParkedRuns:
    """The parked runs of a mesh's shared state.

    Args:
        state: the shared state (``mesh.state``: sqlite in the state folder, or PostgreSQL).
    """

    def __init__(self, state: SharedState) -> None:
        self._db = Database(state, "agent_runs", MIGRATIONS, what="the parked agent runs")

    def park(self, run: ParkedRun) -> None:
        """Keep ``run`` until its review is decided (one row per review item)."""
        self._db.execute(
            "INSERT INTO agent_parked (review_id, tenant, agent, run_record_id, status, "
            "parked_at, state) VALUES (?,?,?,?,?,?,?)",
            (run.review_id, run.tenant, run.agent, run.run_record_id, "parked",
             datetime.now(UTC).isoformat(), run.model_dump_json()))

    def get(self, review_id: str, *, tenant: str) -> ParkedRun:
        """The parked run waiting on ``review_id``; another tenant's run is not found (the
        same answer as no run at all, so ids of other tenants cannot be probed)."""
        rows = self._db.execute("SELECT state, status FROM agent_parked WHERE review_id = ? "
                                "AND tenant = ?", (review_id, tenant))
        if not rows:
            raise NotFound(f"no agent run waits on review item {review_id!r}",
                           hint="resume with the review_id the agent returned "
                                "(AgentResult.review_id) and the same tenant")
        run = ParkedRun.model_validate_json(rows[0][0])
        return run.model_copy(update={"status": rows[0][1]})

    def claim(self, review_id: str, *, tenant: str, by: str) -> ParkedRun:
        """Take the parked run to resume it: exactly one caller gets it (two replicas
        resuming at once: the second gets :class:`~aios_mesh.errors.InvalidInput`)."""
        run = self.get(review_id, tenant=tenant)
        changed = self._db.execute(
            "UPDATE agent_parked SET status = 'resumed', resumed_by = ?, resumed_at = ? "
            "WHERE review_id = ? AND tenant = ? AND status = 'parked'",
            (by, datetime.now(UTC).isoformat(), review_id, tenant)).rowcount
        if changed != 1:
            raise InvalidInput(f"the agent run waiting on review item {review_id!r} was "
                               "already resumed", hint="its resumed run's record holds the "
                                                       "answer; each parked run resumes once")
        return run.model_copy(update={"status": "resumed"})

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> ParkedRuns:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()
