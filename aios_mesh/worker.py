"""Event-driven automation: consume events, invoke capabilities, publish results.

    mesh.on("tickets.new", "classify-ticket", result_topic="tickets.routed")
    await Worker(mesh).run(stop)          # or: aios-mesh worker --config aios-mesh.toml

Each route subscribes with a consumer group (default ``aios-mesh.<capability>``). The worker
fetches only as many events as it has free slots (``concurrency``), so a slow backend slows
consumption instead of piling up work (backpressure). Per delivery:

* the capability answers → a ``<capability>.result`` event on the result topic, then ack;
* the call is decided against (invalid input, policy denial, quota) → a ``<capability>.failed``
  event with the error, then ack — redelivering would decide the same;
* a backend failure that outlived retries, breaker and fallbacks → nack: the bus redelivers
  and dead-letters after its bounded retries;
* the call went to human review → ack now; the answer is published when a reviewer approves
  (``aios-mesh review approve``), to the same result topic.

Redeliveries are deduplicated by the event's idempotency key. ``stop`` (SIGTERM in the CLI)
stops fetching, lets in-flight calls finish and ack, then closes the subscriptions.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from aios_mesh.errors import InvalidInput, MeshError, NotFound, PolicyDenied, QuotaExceeded
from aios_mesh.outbox import IdempotentConsumer
from aios_mesh.ports.events import Delivery, Event, EventBus, Subscription
from aios_mesh.routes import Route

if TYPE_CHECKING:
    from aios_mesh.mesh import Mesh

__all__ = ["Route", "Worker", "WorkerStats"]

_log = logging.getLogger("aios_mesh.worker")

#: Outcomes that are decisions, not outages: redelivery would decide the same way.
DECIDED = (InvalidInput, PolicyDenied, QuotaExceeded, NotFound)


@dataclass(slots=True)
class WorkerStats:
    received: int = 0
    answered: int = 0
    failed: int = 0
    review: int = 0
    retried: int = 0
    duplicates: int = 0


def result_event(route: Route, source: Event, kind: str, data: dict[str, Any]) -> Event:
    return Event(type=f"{route.capability}.{kind}", source="aios-mesh/worker",
                 tenant=source.tenant, subject=source.subject, key=source.key or source.id,
                 data=data, idempotency_key=f"{source.idempotency_key}:{route.capability}",
                 headers={"causationid": source.id})


class Worker:
    def __init__(self, mesh: Mesh, routes: list[Route] | None = None, *,
                 concurrency: int = 8, poll_s: float = 0.2) -> None:
        self.mesh = mesh
        self.routes = list(routes if routes is not None else mesh.routes)
        if not self.routes:
            raise MeshError("the worker has no routes",
                            hint="add mesh.on(topic, capability) or [[routes]] to the config")
        self.concurrency = concurrency
        self.poll_s = poll_s
        self.stats = WorkerStats()
        self._dedupe = IdempotentConsumer(mesh.config.state_path / "worker-dedupe.db")
        self._claimed: set[str] = set()

    async def run(self, stop: asyncio.Event) -> WorkerStats:
        bus: EventBus = self.mesh.port("events")
        subs = [(route, await bus.subscribe(route.topic, group=route.consumer_group))
                for route in self.routes]
        slots = asyncio.Semaphore(self.concurrency)
        in_flight: set[asyncio.Task[None]] = set()
        try:
            while not stop.is_set():
                fetched = 0
                for route, sub in subs:
                    free = self.concurrency - len(in_flight)
                    if free <= 0 or stop.is_set():
                        break
                    for delivery in await sub.fetch(max_messages=free, timeout=self.poll_s):
                        fetched += 1
                        await slots.acquire()
                        task = asyncio.create_task(self._handle(bus, route, sub, delivery))
                        in_flight.add(task)
                        task.add_done_callback(in_flight.discard)
                        task.add_done_callback(lambda _t: slots.release())
                if not fetched and in_flight:
                    await asyncio.wait(in_flight, timeout=self.poll_s,
                                       return_when=asyncio.FIRST_COMPLETED)
        finally:
            if in_flight:  # graceful: finish and ack what we took
                await asyncio.gather(*in_flight, return_exceptions=True)
            for _, sub in subs:
                await sub.aclose()
        return self.stats

    async def _handle(self, bus: EventBus, route: Route, sub: Subscription,
                      delivery: Delivery) -> None:
        event = delivery.event
        self.stats.received += 1
        dedupe_key = f"{route.consumer_group}:{event.idempotency_key}"
        # A copy of an event this worker holds right now, or has finished, is a duplicate.
        # (Across worker processes the result events still carry a deterministic
        # idempotency key, so downstream consumers can dedupe what slips through.)
        if dedupe_key in self._claimed or self._dedupe.seen(dedupe_key):
            self.stats.duplicates += 1
            await sub.ack(delivery)
            return
        self._claimed.add(dedupe_key)
        try:
            await self._process(bus, route, sub, delivery, dedupe_key)
        finally:
            self._claimed.discard(dedupe_key)

    async def _process(self, bus: EventBus, route: Route, sub: Subscription,
                       delivery: Delivery, dedupe_key: str) -> None:
        event = delivery.event
        resume = ({"topic": route.result_topic, "key": event.key or event.id,
                   "idempotency_key": event.idempotency_key, "causation_id": event.id,
                   "capability": route.capability} if route.result_topic else None)
        try:
            result = await self.mesh.ainvoke(
                route.capability, route.payload(event), tenant=event.tenant,
                caller=f"worker:{route.topic}", resume=resume,
                traceparent=_trace_headers(event.headers))
        except DECIDED as exc:
            self.stats.failed += 1
            await self._publish(bus, route, event, "failed",
                                {"error": exc.to_dict(), "reason": getattr(exc, "reason", None)})
        except MeshError as exc:
            self.stats.retried += 1
            await sub.nack(delivery, reason=f"{type(exc).__name__}: {exc.message}")
            return
        else:
            if result.needs_review:
                self.stats.review += 1
            else:
                self.stats.answered += 1
                out = result.output.model_dump(mode="json") if result.output else None
                await self._publish(bus, route, event, "result",
                                    {"output": out, "record_id": result.record.record_id})
        self._dedupe.mark(dedupe_key)
        await sub.ack(delivery)

    async def _publish(self, bus: EventBus, route: Route, source: Event, kind: str,
                       data: dict[str, Any]) -> None:
        if route.result_topic:
            await bus.publish(route.result_topic, [result_event(route, source, kind, data)])

    def close(self) -> None:
        self._dedupe.close()


def _trace_headers(headers: Mapping[str, str]) -> dict[str, str] | None:
    found = {k: v for k, v in headers.items() if k in ("traceparent", "tracestate")}
    return found or None
