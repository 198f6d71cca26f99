"""Admission: the one stage between resolving the model and invoking it.

Everything that decides *whether and when* a resolved call may go to its backend plugs in
here as an :class:`Admission` controller: per-backend or per-tenant concurrency (bulkheads),
a fair scheduler across tenants, SLO routing among candidates, pausing an automation. A
controller may wait (queue the call), raise a :class:`~aios_mesh.errors.MeshError` (refuse
it: the call unwinds and is recorded like any other refusal), and returns a release function
that the stage calls when the call has finished, whatever its outcome.

    mesh = Mesh(config, admission=[ConcurrencyLimit(4, per="tenant")])

With no controllers the stage is not in any call's plan and costs nothing.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence
from typing import Literal, Protocol, runtime_checkable

from aios_mesh.capabilities import CapabilitySpec
from aios_mesh.errors import ConfigError, MeshError
from aios_mesh.pipeline.call import Call, Release
from aios_mesh.pipeline.runner import StepBase

__all__ = ["Admission", "AdmissionStep", "ConcurrencyLimit"]


@runtime_checkable
class Admission(Protocol):
    """Decides whether and when a resolved call goes to its backend."""

    name: str

    def applies(self, spec: CapabilitySpec) -> bool:
        """Whether calls of ``spec`` ever pass through this controller (asked once per spec)."""
        ...

    async def admit(self, call: Call) -> Release:
        """Wait until ``call`` may proceed (or raise to refuse it); return what gives back
        the grant. ``call.model_ref`` and ``call.spec.serving`` say where it is going."""
        ...


class AdmissionStep(StepBase):
    """Runs the admission controllers in order; releases their grants in reverse when the
    call ends (after, on error, and when a stream's consumer leaves)."""

    name = "admission"

    def __init__(self, controllers: Sequence[Admission] = ()) -> None:
        self.controllers = list(controllers)

    def applies(self, spec: CapabilitySpec) -> bool:
        return any(c.applies(spec) for c in self.controllers)

    async def before(self, call: Call) -> None:
        if call.cache == "hit":
            return  # answered from the cache: nothing goes to the backend
        for controller in self.controllers:
            if controller.applies(call.spec):
                call.admitted.append(await controller.admit(call))

    async def after(self, call: Call) -> None:
        _release(call)

    async def on_error(self, call: Call, error: MeshError) -> None:
        _release(call)


def _release(call: Call) -> None:
    while call.admitted:
        call.admitted.pop()()


class ConcurrencyLimit:
    """At most ``limit`` calls in flight at once per key: per ``backend`` (the serving
    backend's name), per ``tenant`` (a bulkhead: one tenant's burst cannot take every slot)
    or per ``capability``. Calls over the limit wait their turn in arrival order.

    Counted per process: each replica enforces its own limit.
    """

    def __init__(self, limit: int, *, per: Literal["backend", "tenant", "capability"] =
                 "backend", capabilities: Sequence[str] | None = None) -> None:
        if limit < 1:
            raise ConfigError(f"ConcurrencyLimit({limit}) admits nothing",
                              hint="give a limit of 1 or more")
        self.limit = limit
        self.per = per
        self.name = f"concurrency:{per}"
        self._only = frozenset(capabilities) if capabilities is not None else None
        self._lock = threading.Lock()
        # asyncio primitives belong to one event loop; the sync facade gives each thread
        # its own loop, so the semaphores are kept per loop.
        self._semaphores: dict[tuple[int, str], asyncio.Semaphore] = {}
        self._held: dict[str, int] = {}

    def applies(self, spec: CapabilitySpec) -> bool:
        return self._only is None or spec.name in self._only

    def _key(self, call: Call) -> str:
        if self.per == "tenant":
            return call.tenant
        if self.per == "capability":
            return call.spec.name
        return call.spec.serving or "default"

    async def admit(self, call: Call) -> Release:
        name = self._key(call)
        key = (id(asyncio.get_running_loop()), name)
        sem = self._semaphores.get(key)
        if sem is None:
            with self._lock:
                sem = self._semaphores.setdefault(key, asyncio.Semaphore(self.limit))
        await sem.acquire()
        with self._lock:
            self._held[name] = self._held.get(name, 0) + 1

        def release() -> None:
            with self._lock:
                self._held[name] -= 1
            sem.release()

        return release

    def in_flight(self, key: str) -> int:
        """Calls holding a slot under ``key`` now (over every event loop of the process)."""
        return self._held.get(key, 0)
