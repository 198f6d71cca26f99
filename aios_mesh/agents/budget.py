"""A run's budgets, kept: steps, tokens, cost and wall clock, checked before every child call
(so a runaway run stops *before* a call that could cross a ceiling) and after it.

    tracker = BudgetTracker(Budgets(max_steps=3))
    tracker.before_step()          # raises AgentBudgetExceeded once 3 steps are taken
    tracker.add(tokens=40, cost=0.001)
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, Literal

from aios_mesh.agents.spec import Budgets
from aios_mesh.errors import MeshError

__all__ = ["AgentBudgetExceeded", "AgentToolRefused", "BudgetName", "BudgetTracker"]

BudgetName = Literal["steps", "tokens", "cost", "wall_clock"]


class AgentBudgetExceeded(MeshError):
    """An agent run reached one of its budgets (``budget``: ``steps``, ``tokens``, ``cost``
    or ``wall_clock``) and was ended before the next call could cross it. Counted like a
    spent quota (outcome ``rejected``); ``details`` hold what was used against each ceiling."""

    code = "agent_budget_exceeded"
    outcome = "rejected"

    def __init__(self, message: str, *, budget: BudgetName, hint: str | None = None,
                 **details: Any) -> None:
        super().__init__(message, hint=hint, budget=budget, **details)
        self.budget = budget


class AgentToolRefused(MeshError):
    """An agent's LLM chose an action the run refuses (a tool outside the allow-list, or
    arguments the tool's input schema rejects) and the agent ends on a refusal
    (``on_refused = "end"``)."""

    code = "agent_tool_refused"
    outcome = "denied"


class BudgetTracker:
    """Counts what a run used and refuses the next step or call that would cross a ceiling.

    Tokens and cost of a call are only known after it; before it the tracker projects the
    costliest call seen so far (``projected``), so a run of alike steps stops with nothing
    over budget. An LLM step is bounded exactly: :meth:`step_tokens` is what the step may
    ask for.

    Args:
        budgets: the ceilings.
        clock: seconds, monotonic (a test gives its own).
    """

    def __init__(self, budgets: Budgets, *, clock: Callable[[], float] = time.monotonic
                 ) -> None:
        self.budgets = budgets
        self._clock = clock
        self.started = clock()
        self.steps = 0
        self.tokens = 0
        self.cost = 0.0
        self._peak_tokens = 0
        self._peak_cost = 0.0
        self.stopped_by: BudgetName | None = None

    def used(self) -> dict[str, Any]:
        """What the run used, next to its ceilings (goes into the run's audit entry and the
        error that ends it)."""
        b = self.budgets
        return {"steps": self.steps, "max_steps": b.max_steps,
                "tokens": self.tokens, "max_tokens": b.max_tokens,
                "cost": round(self.cost, 10), "max_cost": b.max_cost,
                "wall_s": round(self.elapsed(), 6), "max_wall_s": b.max_wall_s}

    def snapshot(self) -> dict[str, float]:
        """What a parked run keeps of its budgets (see :meth:`restore`)."""
        return {"steps": self.steps, "tokens": self.tokens, "cost": self.cost,
                "wall_s": self.elapsed(), "peak_tokens": self._peak_tokens,
                "peak_cost": self._peak_cost}

    @classmethod
    def restore(cls, budgets: Budgets, used: dict[str, float], *,
                clock: Callable[[], float] = time.monotonic) -> BudgetTracker:
        """A tracker that goes on from a :meth:`snapshot`: what was used counts, the time
        the run waited for a reviewer does not."""
        tracker = cls(budgets, clock=clock)
        tracker.started -= float(used.get("wall_s", 0.0))
        tracker.steps = int(used.get("steps", 0))
        tracker.tokens = int(used.get("tokens", 0))
        tracker.cost = float(used.get("cost", 0.0))
        tracker._peak_tokens = int(used.get("peak_tokens", 0))
        tracker._peak_cost = float(used.get("peak_cost", 0.0))
        return tracker

    def elapsed(self) -> float:
        return self._clock() - self.started

    def remaining_s(self) -> float:
        """Seconds the run has left (a child call is cut off when they run out)."""
        return self.budgets.max_wall_s - self.elapsed()

    def _stop(self, budget: BudgetName, why: str) -> AgentBudgetExceeded:
        self.stopped_by = budget
        return AgentBudgetExceeded(
            f"the agent run was stopped: {why}", budget=budget,
            hint="raise the agent's budget if the task needs more, or check why the model "
                 "keeps calling tools (the run's record tree shows every step)",
            **self.used())

    def before_step(self) -> None:
        """Refuse a new LLM decision when the step ceiling is reached (or any other is)."""
        if self.steps >= self.budgets.max_steps:
            raise self._stop("steps", f"{self.steps} of {self.budgets.max_steps} steps taken")
        self.before_call()
        self.steps += 1

    def before_call(self) -> None:
        """Refuse a child call that would cross the wall-clock, token or cost ceiling
        (projected from the costliest call so far)."""
        b = self.budgets
        if self.remaining_s() <= 0:
            raise self.timed_out()
        if b.max_tokens is not None and self.tokens + max(self._peak_tokens, 1) > b.max_tokens:
            raise self._stop("tokens", f"{self.tokens} of {b.max_tokens} tokens used; the "
                                       f"next call could take {self._peak_tokens}")
        if b.max_cost is not None and self.cost + self._peak_cost > b.max_cost:
            raise self._stop("cost", f"{self.cost:.6f} of {b.max_cost:.6f} spent; the next "
                                     f"call could cost {self._peak_cost:.6f}")

    def timed_out(self) -> AgentBudgetExceeded:
        """The error for a run whose wall clock ran out (also while a child call ran)."""
        return self._stop("wall_clock", f"{self.elapsed():.3f} s of "
                                        f"{self.budgets.max_wall_s} s used")

    def step_tokens(self, prompt_tokens: int, asked: int) -> int:
        """The completion tokens an LLM step may ask for: ``asked``, lowered so that its
        prompt plus completion fit the token budget. Raises when not even one fits."""
        b = self.budgets
        if b.max_tokens is None:
            return asked
        room = b.max_tokens - self.tokens - prompt_tokens
        if room < 1:
            raise self._stop("tokens", f"{self.tokens} of {b.max_tokens} tokens used; the "
                                       f"next prompt alone needs about {prompt_tokens}")
        return min(asked, room)

    def add(self, *, tokens: int, cost: float) -> None:
        """Count one finished child call; raise when it crossed a ceiling (a call whose
        usage the projection could not foresee: the error says by how much)."""
        self.tokens += tokens
        self.cost += cost
        self._peak_tokens = max(self._peak_tokens, tokens)
        self._peak_cost = max(self._peak_cost, cost)
        b = self.budgets
        if b.max_tokens is not None and self.tokens > b.max_tokens:
            raise self._stop("tokens", f"{self.tokens} of {b.max_tokens} tokens used")
        if b.max_cost is not None and self.cost > b.max_cost:
            raise self._stop("cost", f"{self.cost:.6f} of {b.max_cost:.6f} spent")
