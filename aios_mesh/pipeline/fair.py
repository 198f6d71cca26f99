"""Fair scheduling in front of every serving backend, as an admission controller.

One busy backend (a single-generation llama.cpp server, a GPU model) is shared by every
tenant. Without a scheduler the calls reach it in arrival order, so a tenant with sixteen
callers in a loop holds sixteen places in line and a quiet tenant's one call waits behind all
of them. :class:`FairScheduler` puts a queue per backend in front of it::

                          ┌ interactive ┐  tenant a: ▢▢▢▢▢▢▢▢▢▢▢▢▢▢▢▢  (16 noisy callers)
    call ─ admission ─▶ backend "gpu" │  tenant b: ▢                  (one quiet call)
                          └ bulk ───────┘  tenant a: ▢▢▢▢ ...            (invoke_many rows)
                                   │
                 slot frees ─▶ next = least weighted service so far ─▶ [gpu: 1 in flight]

* **Concurrency per backend**: at most ``limit`` calls of a backend (``call.spec.serving``,
  ``default`` when unnamed) run at once; the others wait. Capabilities that name a model are
  scheduled; in-process handlers are not (see :meth:`FairScheduler.applies`).
* **Weighted fair queues per tenant**: start-time fair queuing (SFQ; P. Goyal, H. M. Vin,
  H. Cheng, "Start-time Fair Queueing: a scheduling algorithm for integrated services packet
  switching networks", SIGCOMM 1996). Each waiting call gets a virtual start tag: its
  tenant's previous finish tag, or the backend's virtual time if the tenant was idle (an idle
  tenant banks no credit); a granted call advances its tenant by ``1 / weight``. A freed slot
  goes to the call with the smallest start tag, so grants follow the weights and a quiet
  tenant's call goes ahead of a noisy tenant's backlog: it waits behind at most about one
  call per other waiting tenant. Service is counted in calls, not seconds or tokens: a
  tenant whose calls are ten times longer gets ten times the busy time at equal weight.
* **Interactive before bulk**: a row of ``invoke_many`` or of a gateway bulk job
  (``call.mode == "bulk"``) is bulk, any other call interactive; ``attributes["priority"]``
  (``"interactive"`` / ``"bulk"``) overrides. Bulk runs only when no interactive call waits,
  so a steady interactive load would starve it forever; ``bulk_aging_s`` bounds that: a bulk
  call that has waited that long goes next (among the bulk calls, in their fair order).
* **Early refusal**: an interactive call that must queue gets an estimate of its wait, the
  calls ahead of it in the fair order plus itself over the backend's concurrency, times the
  backend's mean service time (an exponentially weighted moving average of the time from
  grant to release). If that wait plus one service time would break the capability's SLO
  (``slo.p95_ms``, else ``slo.timeout_s``), it is refused at once with
  :class:`~aios_mesh.errors.Overloaded` (``retry_after_s`` set): the caller learns in
  microseconds what it would otherwise learn at its deadline, and the decision record says
  ``rejected`` / ``overloaded``. Nothing is shed before a backend's first call has finished
  (no mean yet), and bulk calls are never shed: nobody waits on their latency, and the
  job's own concurrency bounds how many of them queue.

A call whose task is cancelled while it waits leaves its queue and holds nothing; a grant
that raced the cancellation is handed to the next call. The release function frees the slot
once, whatever the call's outcome.

State is per scheduler instance, which the mesh builds once (``[scheduler] enabled``), so
per process for a process with one mesh: shared by every event loop in it (the sync facade
runs one loop per thread; a grant to a call waiting in another loop wakes it with
``loop.call_soon_threadsafe``). Fairness across gateway workers or replicas is out of scope:
each process schedules its own calls, so with ``N`` workers a backend sees up to ``N × limit``
calls at once; size ``limit`` for that, or run one worker in front of a single-call server.
"""

from __future__ import annotations

import asyncio
import difflib
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final, Literal, Self

from aios_mesh.capabilities import CapabilitySpec
from aios_mesh.config import MeshConfig
from aios_mesh.errors import ConfigError, InvalidInput, Overloaded
from aios_mesh.pipeline.call import Call, Release

__all__ = ["BackendLoad", "FairScheduler", "Priority", "priority_of"]

Priority = Literal["interactive", "bulk"]
PRIORITIES: Final[tuple[Priority, ...]] = ("interactive", "bulk")
_EPS: Final = 1e-9  # start tags are sums of 1/weight: compare with a little slack


def priority_of(call: Call) -> Priority:
    """``call.attributes["priority"]`` if given, else ``bulk`` for a bulk-mode row and
    ``interactive`` for everything else. A value other than the two is refused."""
    given = call.attributes.get("priority")
    if given is None:
        return "bulk" if call.mode == "bulk" else "interactive"
    if given == "interactive" or given == "bulk":
        return "interactive" if given == "interactive" else "bulk"
    raise InvalidInput("the call attribute 'priority' must be 'interactive' or 'bulk'",
                       hint="leave it out to get 'bulk' for invoke_many rows and bulk jobs "
                            "and 'interactive' for every other call")


@dataclass(eq=False, slots=True)
class _Ticket:
    """One waiting call. ``granted`` is written under the scheduler's lock only."""

    tenant: str
    seq: int
    enqueued: float
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[None]
    granted: bool = False


@dataclass(eq=False, slots=True)
class _Flow:
    """One tenant's FIFO within one priority class of one backend. ``start`` is the start
    tag of the head while the queue is not empty; ``finish`` that of the last grant."""

    weight: float
    start: float = 0.0
    finish: float = 0.0
    queue: deque[_Ticket] = field(default_factory=deque)


class _FairQueue:
    """Start-time fair queuing over the tenants' flows of one priority class."""

    __slots__ = ("flows", "vtime", "waiting")

    def __init__(self) -> None:
        self.flows: dict[str, _Flow] = {}
        self.vtime = 0.0  # start tag of the last grant: never decreases
        self.waiting = 0

    def tag_for(self, tenant: str, weight: float) -> float:
        """The start tag a call of ``tenant`` would get if it joined now."""
        flow = self.flows.get(tenant)
        if flow is None:
            return self.vtime
        if not flow.queue:
            return max(self.vtime, flow.finish)
        return flow.start + len(flow.queue) / flow.weight

    def ahead(self, tag: float) -> int:
        """Waiting calls that go before a new call with start tag ``tag`` (ties go to the
        earlier arrival, so they count)."""
        count = 0
        for flow in self.flows.values():
            n = len(flow.queue)
            if n and flow.start <= tag + _EPS:
                count += min(n, math.floor((tag - flow.start) * flow.weight + _EPS) + 1)
        return count

    def charge(self, tenant: str, weight: float) -> None:
        """Account a call granted at once (nobody waiting) as if it had queued, so that a
        tenant running alone does not meet the next newcomer with a clean slate."""
        flow = self.flows.get(tenant)
        if flow is None:
            flow = self.flows[tenant] = _Flow(weight)
        flow.weight = weight
        start = max(self.vtime, flow.finish)
        self.vtime = start
        flow.finish = flow.start = start + 1.0 / weight

    def push(self, ticket: _Ticket, weight: float) -> None:
        flow = self.flows.get(ticket.tenant)
        if flow is None:
            flow = self.flows[ticket.tenant] = _Flow(weight, start=self.vtime,
                                                     finish=self.vtime)
        elif not flow.queue:
            flow.weight = weight
            flow.start = max(self.vtime, flow.finish)
        flow.queue.append(ticket)
        self.waiting += 1

    def pop(self) -> _Ticket | None:
        """The head with the smallest start tag (earliest arrival on a tie), charged to its
        tenant; a head whose task was cancelled meanwhile is dropped uncharged."""
        while self.waiting:
            best: _Flow | None = None
            for flow in self.flows.values():
                if flow.queue and (best is None or (flow.start, flow.queue[0].seq)
                                   < (best.start, best.queue[0].seq)):
                    best = flow
            assert best is not None  # waiting > 0 means some flow has a queue
            ticket = best.queue.popleft()
            self.waiting -= 1
            if ticket.future.cancelled():  # its own cleanup will find it gone
                continue
            self.vtime = max(self.vtime, best.start)
            best.finish = best.start + 1.0 / best.weight
            best.start = best.finish
            return ticket
        return None

    def remove(self, ticket: _Ticket) -> None:
        flow = self.flows.get(ticket.tenant)
        if flow is not None and ticket in flow.queue:
            flow.queue.remove(ticket)  # not charged: the start tags of the rest stand
            self.waiting -= 1

    def oldest(self) -> float:
        """When the longest-waiting call joined (the heads are each tenant's oldest)."""
        return min((f.queue[0].enqueued for f in self.flows.values() if f.queue),
                   default=math.inf)


@dataclass(frozen=True, slots=True)
class BackendLoad:
    """What one backend's scheduler holds now (:meth:`FairScheduler.load`)."""

    limit: int
    in_flight: int
    waiting: dict[Priority, int]
    mean_service_s: float | None


class _Backend:
    __slots__ = ("in_flight", "limit", "mean", "queues")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.in_flight = 0
        self.mean: float | None = None
        self.queues: dict[Priority, _FairQueue] = {p: _FairQueue() for p in PRIORITIES}

    @property
    def waiting(self) -> int:
        return self.queues["interactive"].waiting + self.queues["bulk"].waiting


class FairScheduler:
    """Per-backend concurrency, per-tenant weighted fair queues, interactive before bulk,
    and early :class:`~aios_mesh.errors.Overloaded` refusals (see the module docstring).

    Args:
        default_concurrency: calls in flight at once on a backend not in ``backends``.
        backends: serving backend name (``default`` for capabilities that name none) →
            its concurrency.
        weights: tenant → weight (default 1).
        bulk_aging_s: a bulk call that has waited this long goes before interactive ones;
            None: never (bulk waits while any interactive call waits).
        smoothing: the EWMA factor of the mean service time (weight of the newest sample).
        capabilities: only these capabilities pass through it (default: every capability
            that names a model).
        clock: monotonic seconds (tests drive aging with their own).
    """

    name = "fair"

    def __init__(self, *, default_concurrency: int = 4, backends: Mapping[str, int] | None = None,
                 weights: Mapping[str, float] | None = None,
                 bulk_aging_s: float | None = 30.0, smoothing: float = 0.2,
                 capabilities: Sequence[str] | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        limits = dict(backends or {})
        for where, limit in [("default_concurrency", default_concurrency),
                             *((f"backends.{k}", v) for k, v in limits.items())]:
            if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
                raise ConfigError(f"scheduler {where} = {limit!r} admits nothing",
                                  hint="give a whole number of calls, 1 or more")
        for tenant, weight in (weights or {}).items():
            if not (isinstance(weight, int | float) and math.isfinite(weight) and weight > 0):
                raise ConfigError(f"scheduler weight of tenant {tenant!r} must be a positive "
                                  "number", hint="1 is an equal share; 2 twice that")
        if bulk_aging_s is not None and not (math.isfinite(bulk_aging_s) and bulk_aging_s > 0):
            raise ConfigError("scheduler bulk_aging_s must be a positive number of seconds",
                              hint="leave it out (None) to let bulk wait for interactive calls")
        if not 0 < smoothing <= 1:
            raise ConfigError("scheduler smoothing must be in (0, 1]",
                              hint="0.2 weighs the newest service time by a fifth")
        self.default_concurrency = default_concurrency
        self.limits = limits
        self.weights = {t: float(w) for t, w in (weights or {}).items()}
        self.bulk_aging_s = bulk_aging_s
        self.smoothing = smoothing
        self._only = frozenset(capabilities) if capabilities is not None else None
        self._clock = clock
        self._lock = threading.Lock()
        self._backends: dict[str, _Backend] = {}
        self._seq = 0

    @classmethod
    def from_config(cls, config: MeshConfig) -> Self:
        """The scheduler ``[scheduler]`` describes; backend and tenant names must be
        declared (``default`` or ``[backends.serving_named]``; ``[tenants.*]``)."""
        conf = config.scheduler
        _check_names("backends", conf.backends,
                     ["default", *config.backends.serving_named], "[backends.serving_named]")
        _check_names("weights", conf.weights, list(config.tenants), "[tenants.NAME]")
        return cls(default_concurrency=conf.default_concurrency, backends=conf.backends,
                   weights=conf.weights, bulk_aging_s=conf.bulk_aging_s)

    def applies(self, spec: CapabilitySpec) -> bool:
        """Capabilities that name a model (they call a serving backend). A handler runs in
        the caller's process and may call other capabilities: queueing it behind a slot its
        own nested call needs could deadlock, so handlers pass only when named in
        ``capabilities``."""
        if self._only is not None:
            return spec.name in self._only
        return spec.model is not None

    async def admit(self, call: Call) -> Release:
        priority = priority_of(call)
        tenant = call.tenant
        weight = self.weights.get(tenant, 1.0)
        loop = asyncio.get_running_loop()
        with self._lock:
            backend = self._backend(call.spec.serving or "default")
            queue = backend.queues[priority]
            if backend.in_flight < backend.limit and not backend.waiting:
                backend.in_flight += 1
                queue.charge(tenant, weight)
                return self._release(backend, self._clock())
            if priority == "interactive" and backend.mean is not None:
                self._shed_if_late(call, backend, queue.ahead(queue.tag_for(tenant, weight)))
            self._seq += 1
            ticket = _Ticket(tenant, self._seq, self._clock(), loop, loop.create_future())
            queue.push(ticket, weight)
            self._dispatch(backend)
        try:
            await ticket.future
        except asyncio.CancelledError:
            with self._lock:
                if ticket.granted:  # the grant raced the cancellation: pass the slot on
                    self._free(backend)
                else:
                    queue.remove(ticket)
            raise
        return self._release(backend, self._clock())

    def load(self, backend: str) -> BackendLoad:
        """Calls in flight and waiting on ``backend`` (over every event loop of the
        process), its limit and its mean service time so far."""
        with self._lock:
            b = self._backend(backend)
            return BackendLoad(b.limit, b.in_flight,
                               {p: q.waiting for p, q in b.queues.items()}, b.mean)

    # -- under the lock -------------------------------------------------------------------

    def _backend(self, name: str) -> _Backend:
        backend = self._backends.get(name)
        if backend is None:
            backend = self._backends[name] = _Backend(
                self.limits.get(name, self.default_concurrency))
        return backend

    def _shed_if_late(self, call: Call, backend: _Backend, ahead: int) -> None:
        mean = backend.mean
        assert mean is not None
        slo = call.spec.slo
        budget = slo.p95_ms / 1000 if slo.p95_ms is not None else slo.timeout_s
        wait = (ahead + 1) / backend.limit * mean
        if wait + mean <= budget:
            return
        retry = max(wait + mean - budget, mean / backend.limit)
        name = call.spec.serving or "default"
        raise Overloaded(
            f"{call.spec.name}: backend {name!r} is busy; the estimated wait "
            f"({wait * 1000:.0f} ms behind {ahead} call(s)) plus a service time of "
            f"{mean * 1000:.0f} ms would break the SLO of {budget * 1000:.0f} ms",
            hint=f"retry after {retry:.3f} s, raise the backend's concurrency under "
                 "[scheduler.backends], or relax the capability's slo",
            retry_after_s=round(retry, 3), backend=name, queued_ahead=ahead,
            estimated_wait_ms=round(wait * 1000, 1), budget_ms=round(budget * 1000, 1))

    def _dispatch(self, backend: _Backend) -> None:
        """Hand free slots to waiting calls, in priority then fair order."""
        here = _running_loop()
        while backend.in_flight < backend.limit and backend.waiting:
            queue = self._next_queue(backend)
            ticket = queue.pop()
            if ticket is None:
                continue
            ticket.granted = True
            backend.in_flight += 1
            try:  # a waiter in another thread's loop is woken through that loop's pipe
                (ticket.loop.call_soon if ticket.loop is here
                 else ticket.loop.call_soon_threadsafe)(_wake, ticket.future)
            except RuntimeError:  # its event loop is closed: nobody is waiting any more
                ticket.granted = False
                backend.in_flight -= 1

    def _next_queue(self, backend: _Backend) -> _FairQueue:
        interactive, bulk = backend.queues["interactive"], backend.queues["bulk"]
        if not interactive.waiting:
            return bulk
        if bulk.waiting and self.bulk_aging_s is not None \
                and self._clock() - bulk.oldest() >= self.bulk_aging_s:
            return bulk
        return interactive

    def _free(self, backend: _Backend) -> None:
        backend.in_flight -= 1
        self._dispatch(backend)

    def _release(self, backend: _Backend, granted_at: float) -> Release:
        released = False

        def release() -> None:
            nonlocal released
            took = max(0.0, self._clock() - granted_at)
            with self._lock:
                if released:  # a second call gives back nothing
                    return
                released = True
                backend.mean = took if backend.mean is None \
                    else backend.mean + self.smoothing * (took - backend.mean)
                self._free(backend)

        return release


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:  # a release from plain sync code
        return None


def _wake(future: asyncio.Future[None]) -> None:
    if not future.done():  # cancelled meanwhile: its own cleanup passes the slot on
        future.set_result(None)


def _check_names(table: str, given: Iterable[str], known: list[str], where: str) -> None:
    for name in given:
        if name not in known:
            close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
            guess = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(f"[scheduler.{table}] names {name!r}, which is not declared{guess}",
                              hint=f"declare it under {where} or remove it; declared: "
                                   f"{', '.join(known)}")
