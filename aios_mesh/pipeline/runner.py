"""The pipeline runner: a for-loop over steps (structlog's processor-chain idea)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Protocol

from aios_mesh.errors import MeshError
from aios_mesh.pipeline.call import Call

__all__ = ["Pipeline", "Step"]

_log = logging.getLogger("aios_mesh.pipeline")


class Step(Protocol):
    """One pipeline step. Implement the hooks you need; the base does nothing."""

    name: str

    async def before(self, call: Call) -> None: ...

    async def after(self, call: Call) -> None: ...

    async def on_error(self, call: Call, error: MeshError) -> None: ...


class StepBase:
    """No-op hooks, so each step writes only what it does."""

    name = "step"

    async def before(self, call: Call) -> None:
        return None

    async def after(self, call: Call) -> None:
        return None

    async def on_error(self, call: Call, error: MeshError) -> None:
        return None


def _overrides(step: Step, hook: str) -> bool:
    return getattr(type(step), hook, None) is not getattr(StepBase, hook)


class Pipeline:
    """Runs each step's ``before`` in order, then ``after`` in reverse; a :class:`MeshError`
    unwinds ``on_error`` (reverse) over the steps that ran instead."""

    def __init__(self, steps: Sequence[Step]) -> None:
        self.steps = tuple(steps)
        # Hooks left as StepBase's no-ops are not awaited at all: every call pays for each
        # coroutine it creates, several times over when the CPU comes back cold from a
        # backend call.
        self._after = frozenset(id(s) for s in self.steps if _overrides(s, "after"))

    @property
    def names(self) -> list[str]:
        return [s.name for s in self.steps]

    async def run(self, call: Call) -> None:
        """Run the steps; on a :class:`MeshError` unwind ``on_error`` and re-raise it."""
        ran: list[Step] = []
        try:
            for step in self.steps:
                ran.append(step)
                await step.before(call)
                if call.done:
                    break
            after = self._after
            for step in reversed(ran):
                if id(step) in after:
                    await step.after(call)
        except MeshError as exc:
            call.error = exc
            for step in reversed(ran):
                try:
                    await step.on_error(call, exc)
                except Exception:  # an unwind failure must not hide the original error
                    _log.exception("step %s failed while unwinding", step.name)
            raise
