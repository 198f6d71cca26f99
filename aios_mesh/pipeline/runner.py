"""The pipeline runner: a for-loop over steps (structlog's processor-chain idea)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Protocol

from aios_mesh.capabilities import CapabilitySpec
from aios_mesh.errors import MeshError
from aios_mesh.pipeline.call import Call

__all__ = ["Pipeline", "Step"]

_log = logging.getLogger("aios_mesh.pipeline")


class Step(Protocol):
    """One pipeline step. Implement the hooks you need; the base does nothing.

    A step may also say which capabilities it can do anything for, with
    ``applies(spec) -> bool`` (default: all); the others' calls never enter it.
    """

    name: str

    async def before(self, call: Call) -> None: ...

    async def after(self, call: Call) -> None: ...

    async def on_error(self, call: Call, error: MeshError) -> None: ...


class StepBase:
    """No-op hooks, so each step writes only what it does."""

    name = "step"

    def applies(self, spec: CapabilitySpec) -> bool:
        """Whether this step can do anything for calls of ``spec`` (asked once per spec)."""
        return True

    async def before(self, call: Call) -> None:
        return None

    async def after(self, call: Call) -> None:
        return None

    async def on_error(self, call: Call, error: MeshError) -> None:
        return None


def _overrides(step: Step, hook: str) -> bool:
    return getattr(type(step), hook, None) is not getattr(StepBase, hook)


def _applies(step: Step, spec: CapabilitySpec) -> bool:
    applies = getattr(step, "applies", None)
    return True if applies is None else bool(applies(spec))


_MAX_PLANS = 1024  # specs made on the fly must not grow the plan table without bound


class Pipeline:
    """Runs each step's ``before`` in order, then ``after`` in reverse; a :class:`MeshError`
    unwinds ``on_error`` (reverse) over the steps that ran instead."""

    def __init__(self, steps: Sequence[Step]) -> None:
        self.steps = tuple(steps)
        # Hooks left as StepBase's no-ops are not awaited at all: every call pays for each
        # coroutine it creates, several times over when the CPU comes back cold from a
        # backend call.
        self._after = frozenset(id(s) for s in self.steps if _overrides(s, "after"))
        self._plans: dict[int, tuple[CapabilitySpec, tuple[Step, ...]]] = {}

    @property
    def names(self) -> list[str]:
        return [s.name for s in self.steps]

    def plan(self, spec: CapabilitySpec) -> tuple[Step, ...]:
        """The steps that apply to ``spec``, in order; worked out once per spec (a step with
        nothing to do, e.g. policy for a capability without one, still costs a coroutine
        on every call otherwise)."""
        found = self._plans.get(id(spec))
        if found is None or found[0] is not spec:
            if len(self._plans) >= _MAX_PLANS:
                self._plans.clear()
            found = self._plans[id(spec)] = (
                spec, tuple(s for s in self.steps if _applies(s, spec)))
        return found[1]

    async def run(self, call: Call) -> None:
        """Run the steps; on a :class:`MeshError` unwind ``on_error`` and re-raise it."""
        ran: list[Step] = []
        try:
            for step in self.plan(call.spec):
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
