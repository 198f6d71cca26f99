"""The pipeline runner: a for-loop over steps (structlog's processor-chain idea).

Your own step is a class with a ``name`` and the hooks it needs (subclass :class:`StepBase`
for no-op defaults); put it where it belongs with :meth:`Pipeline.add`::

    class TagPriority(StepBase):
        name = "tag_priority"

        async def before(self, call: Call) -> None:
            call.attributes["priority"] = "high" if call.tenant == "acme" else "normal"

    mesh.pipeline.add(TagPriority(), before="policy")

A step that raises something other than a :class:`MeshError` is unwound like any failure
(its exception becomes a :class:`~aios_mesh.errors.StepFailed`), and the call is recorded.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Protocol

from aios_mesh.capabilities import CapabilitySpec
from aios_mesh.errors import CallCancelled, MeshError, StepFailed
from aios_mesh.pipeline.call import Call

__all__ = ["Pipeline", "Step", "StepBase"]

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
    """Runs each step's ``before`` in order, then ``after`` in reverse; a failure unwinds
    ``on_error`` (reverse) over the steps that ran instead.

    The same steps serve every mode of a call (invoke, stream, bulk): a step that behaves
    differently reads ``call.mode``.
    """

    def __init__(self, steps: Sequence[Step]) -> None:
        self._set(steps)

    def _set(self, steps: Sequence[Step]) -> None:
        names = [s.name for s in steps]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise MeshError(f"two pipeline steps are named {', '.join(dupes)}",
                            hint="give each step its own name")
        self.steps = tuple(steps)
        # Hooks left as StepBase's no-ops are not awaited at all: every call pays for each
        # coroutine it creates, several times over when the CPU comes back cold from a
        # backend call.
        self._after = frozenset(id(s) for s in self.steps if _overrides(s, "after"))
        self._plans: dict[int, tuple[CapabilitySpec, tuple[Step, ...]]] = {}

    @property
    def names(self) -> list[str]:
        return [s.name for s in self.steps]

    def _index(self, name: str) -> int:
        try:
            return self.names.index(name)
        except ValueError:
            raise MeshError(f"no pipeline step named {name!r}",
                            hint=f"steps are: {', '.join(self.names)}") from None

    def add(self, step: Step, *, before: str | None = None, after: str | None = None) -> None:
        """Insert ``step`` before or after the step of that name (at the end with neither).

        Example: ``mesh.pipeline.add(MyAudit(), after="validate_input")``.
        """
        if before is not None and after is not None:
            raise MeshError("add() takes before= or after=, not both")
        steps = list(self.steps)
        if before is not None:
            steps.insert(self._index(before), step)
        elif after is not None:
            steps.insert(self._index(after) + 1, step)
        else:
            steps.append(step)
        self._set(steps)

    def remove(self, name: str) -> Step:
        """Take the step of that name out of the pipeline and return it."""
        steps = list(self.steps)
        step = steps.pop(self._index(name))
        self._set(steps)
        return step

    def step(self, name: str) -> Step:
        """The step of that name."""
        return self.steps[self._index(name)]

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
        """Run the steps; on a failure unwind ``on_error`` and raise it as a
        :class:`MeshError` (a cancelled task unwinds with :class:`CallCancelled` and stays
        cancelled)."""
        ran: list[Step] = []
        step: Step | None = None
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
            await self._unwind(call, ran, exc)
            raise
        except asyncio.CancelledError:
            await self._unwind(call, ran, CallCancelled(
                f"{call.spec.name} was cancelled by its caller"))
            raise
        except Exception as exc:
            name = step.name if step is not None else "?"
            error = StepFailed(f"pipeline step {name!r} raised {type(exc).__name__}",
                               hint="a step must raise MeshError subclasses; see the "
                                    "cause for the original exception", step=name)
            await self._unwind(call, ran, error)
            raise error from exc

    @staticmethod
    async def _unwind(call: Call, ran: list[Step], error: MeshError) -> None:
        call.error = error
        for step in reversed(ran):
            try:
                await step.on_error(call, error)
            except Exception:  # an unwind failure must not hide the original error
                _log.exception("step %s failed while unwinding", step.name)
