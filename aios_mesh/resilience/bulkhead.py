"""Breakers per (backend, model version) with a compartment per tenant, so one tenant's
failures cannot cut another tenant off.

A tenant's calls pass two breakers: the tenant's own compartment, which opens after
``failure_threshold`` consecutive backend failures *of that tenant*, and the backend's shared
breaker, which opens for every tenant only once the compartments of ``min_failing_tenants``
distinct tenants have opened with no successful call in between (a backend that is down for
everyone). A tenant whose payloads make the backend fail thus loses only its own access;
while another tenant's call succeeds, the backend is known to work and nobody else is cut
off. Only backend failures count: the caller's own mistakes (bad input, a handler rejecting
its input) are neutral and never move a breaker (:meth:`Bulkhead.release`).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from aios_mesh.config import BreakerConfig
from aios_mesh.resilience.breaker import BreakerState, CircuitBreaker

__all__ = ["BreakerBoard", "Bulkhead"]

_RANK = {BreakerState.CLOSED: 0, BreakerState.HALF_OPEN: 1, BreakerState.OPEN: 2}


class Bulkhead:
    """One tenant's way through one (backend, model): its compartment, then the shared
    breaker. Use it like a breaker: :meth:`acquire`, then exactly one of
    :meth:`record_success`, :meth:`record_failure` or :meth:`release` per acquired call."""

    __slots__ = ("compartment", "shared", "tenant")

    def __init__(self, tenant: str, compartment: CircuitBreaker,
                 shared: CircuitBreaker) -> None:
        self.tenant = tenant
        self.compartment = compartment
        self.shared = shared

    def acquire(self) -> tuple[bool, bool]:
        """Raise :class:`~aios_mesh.errors.CircuitOpen` unless the call may go through;
        returns which breakers made it their half-open probe ``(compartment, shared)``, to
        hand back to :meth:`record_failure` or :meth:`release`."""
        own = self.compartment.acquire()
        try:
            shared = self.shared.acquire()
        except BaseException:
            if own:
                self.compartment.release()
            raise
        return own, shared

    def record_success(self) -> None:
        """The backend answered: both breakers close."""
        self.compartment.record_success()
        self.shared.record_success()

    def record_failure(self, probes: tuple[bool, bool], error: str | None = None) -> None:
        """The backend failed this tenant's call; ``error`` is the error's class name."""
        tripped = self.compartment.record_failure(self.tenant, error)
        # The shared breaker counts tenants whose compartment just opened (and reopens when
        # its own probe failed): one tenant's streak never opens it alone.
        if tripped or probes[1]:
            self.shared.record_failure(self.tenant, error)

    def release(self, probes: tuple[bool, bool]) -> None:
        """The call ended without saying anything about the backend (a caller error)."""
        if probes[0]:
            self.compartment.release()
        if probes[1]:
            self.shared.release()

    @property
    def state(self) -> BreakerState:
        """What this tenant's next call meets: the stricter of the two breakers (open, then
        half-open, then closed)."""
        return max(self.compartment.state, self.shared.state, key=_RANK.__getitem__)


class BreakerBoard:
    """The breakers of a mesh: one shared :class:`CircuitBreaker` per (backend, model), each
    with one compartment per tenant, created on first use.

    Args:
        config: thresholds (:class:`~aios_mesh.config.BreakerConfig`).
        clock: monotonic seconds (tests pass a fake).
    """

    def __init__(self, config: BreakerConfig,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.config = config
        self._clock = clock
        self._shared: dict[tuple[str, str], CircuitBreaker] = {}
        self._bulkheads: dict[tuple[str, str, str], Bulkhead] = {}
        self._lock = threading.Lock()

    def _breaker(self, name: str, threshold: int, sources: int = 1) -> CircuitBreaker:
        return CircuitBreaker(name, failure_threshold=threshold, min_sources=sources,
                              reset_timeout_s=self.config.reset_timeout_s, clock=self._clock)

    def get(self, label: str, model: str, tenant: str | None = None) -> CircuitBreaker:
        """The shared breaker of ``label``/``model``, or ``tenant``'s compartment of it."""
        if tenant is None:
            with self._lock:
                shared = self._shared.get((label, model))
                if shared is None:
                    # its "failures" are compartments that opened, one per tenant
                    tenants = self.config.min_failing_tenants
                    shared = self._shared[(label, model)] = self._breaker(
                        f"{label}/{model}", tenants, sources=tenants)
                return shared
        return self.bulkhead(label, model, tenant).compartment

    def bulkhead(self, label: str, model: str, tenant: str) -> Bulkhead:
        """``tenant``'s way through ``label``/``model`` (what the invoke step uses)."""
        found = self._bulkheads.get((label, model, tenant))  # lock-free on the hot path
        if found is not None:
            return found
        shared = self.get(label, model)
        with self._lock:
            found = self._bulkheads.get((label, model, tenant))
            if found is None:
                own = self._breaker(f"{label}/{model}#{tenant}", self.config.failure_threshold)
                found = self._bulkheads[(label, model, tenant)] = Bulkhead(tenant, own, shared)
            return found

    def state(self, label: str, model: str, tenant: str) -> BreakerState:
        """What ``tenant``'s next call to ``label``/``model`` meets (open, half-open or
        closed: the stricter of its compartment and the shared breaker)."""
        return self.bulkhead(label, model, tenant).state

    def states(self) -> dict[str, str]:
        """Every breaker's state: ``label/model`` for the shared ones, ``label/model#tenant``
        for the tenants' compartments."""
        with self._lock:
            found = [*self._shared.values(), *(b.compartment for b in self._bulkheads.values())]
        return {b.name: b.state.value for b in found}
