"""One relay loop: every outbox of a state folder shipped by one background worker.

A *shipper* drains one durable outbox into its sinks: the record relay
(:class:`~aios_mesh.recorder.relay.RecordRelay`: the audit log → lineage and decision events)
and the application outbox (:class:`OutboxShipper`: ``mesh.publish`` → the event bus).
:class:`RelayLoop` runs them in turn, each with its own exponential backoff, so a bus that is
down is retried less and less often (a circuit breaker per sink) while the others go on.

:class:`RelayDriver` is the loop's life: woken by messages (a call was recorded, someone
waits for a drain, stop), it lingers so a burst ships as one batch, ships, and answers drains.
It only takes messages from a queue and hands replies to a callback, so the same driver runs
on a thread or in a child process (:mod:`aios_mesh.relay.runner`).

Only one relay ships a state folder at a time: the driver holds ``relay.lock`` (``flock``)
while active. A second one (another worker process on the same folder) stands by: it ships
nothing, answers drains from the shared state, and takes over when the lock frees.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import queue
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from aios_mesh.outbox import Outbox, Relay
from aios_mesh.ports.events import EventBus
from aios_mesh.recorder.relay import Factory, ShipResult

__all__ = ["Message", "OutboxShipper", "RelayDriver", "RelayLock", "RelayLoop", "Shipper"]

_log = logging.getLogger("aios_mesh.relay")


@runtime_checkable
class Shipper(Protocol):
    """Drains one durable outbox into its sinks."""

    name: str

    async def ship(self) -> ShipResult:
        """One pass: ship what is pending; never raise for a sink that is down."""
        ...

    async def backlog(self) -> bool:
        """Whether anything is waiting (read from the durable state, not from memory)."""
        ...

    async def aclose(self) -> None: ...


class OutboxShipper:
    """The application outbox (``<state>/outbox.db``, filled by ``mesh.publish``) as a
    shipper. The file is opened once it exists; per-key order and backoff are the
    :class:`~aios_mesh.outbox.Relay`'s."""

    name = "outbox"

    def __init__(self, path: Path, bus: Factory[EventBus]) -> None:
        self.path = path
        self._bus = bus
        self._outbox: Outbox | None = None
        self._relay: Relay | None = None
        self._owned: EventBus | None = None
        self.sent = 0

    def _open(self) -> Outbox | None:
        if self._outbox is None and self.path.exists():
            self._outbox = Outbox(self.path)
        return self._outbox

    async def ship(self) -> ShipResult:
        outbox = self._open()
        if outbox is None or not outbox.pending():
            return ShipResult(0, True)
        if self._relay is None:
            bus, owned = self._bus()
            self._owned = bus if owned else None
            self._relay = Relay(outbox, bus)
        result = await self._relay.run_once()
        self.sent += result.sent
        return ShipResult(result.sent, outbox.pending() == 0)

    async def backlog(self) -> bool:
        outbox = self._open()
        return outbox is not None and outbox.pending() > 0

    async def aclose(self) -> None:
        if self._owned is not None:
            with contextlib.suppress(Exception):
                await self._owned.aclose()
        if self._outbox is not None:
            self._outbox.close()
        self._outbox = self._relay = self._owned = None


@dataclass(slots=True)
class _Backoff:
    failures: int = 0
    due: float = 0.0


class RelayLoop:
    """Runs shippers in turn; one that is not caught up waits ``backoff_s`` doubling up to
    ``max_backoff_s`` (with jitter) before its next pass, unless a pass is forced.

    Args:
        shippers: what to ship, in order (records first: their events are the audit trail).
        clock: monotonic seconds (tests pass a fake one).
    """

    def __init__(self, shippers: Sequence[Shipper], *, backoff_s: float = 0.1,
                 max_backoff_s: float = 10.0, clock: Callable[[], float] = time.monotonic
                 ) -> None:
        self.shippers = list(shippers)
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self._clock = clock
        self._backoff = {s.name: _Backoff() for s in self.shippers}

    async def round(self, *, force: bool = False) -> bool:
        """One pass over every shipper that is due (all of them when ``force``); True when
        every shipper is caught up."""
        caught_up = True
        for shipper in self.shippers:
            state = self._backoff[shipper.name]
            if not force and self._clock() < state.due:
                caught_up = False
                continue
            try:
                result = await shipper.ship()
            except Exception as exc:  # fail soft: a shipper bug must not stop the others
                _log.error("relay: %s pass failed: %s: %s", shipper.name,
                           type(exc).__name__, exc)
                result = ShipResult(0, False)
            if result.caught_up:
                state.failures, state.due = 0, 0.0
                continue
            caught_up = False
            state.failures += 1
            delay = min(self.max_backoff_s, self.backoff_s * 2 ** (state.failures - 1))
            state.due = self._clock() + delay * random.uniform(0.8, 1.0)
        return caught_up

    def next_due(self) -> float | None:
        """Seconds until the earliest backed-off shipper is due, or None if none waits."""
        waiting = [b.due for b in self._backoff.values() if b.failures]
        return max(0.0, min(waiting) - self._clock()) if waiting else None

    async def backlog(self) -> bool:
        """Whether any shipper has something waiting."""
        for shipper in self.shippers:
            if await shipper.backlog():
                return True
        return False

    def stats(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for shipper in self.shippers:
            stats = getattr(shipper, "stats", None)
            if stats is not None:
                out.update(stats.to_dict())
            if isinstance(shipper, OutboxShipper):
                out["outbox_sent"] = shipper.sent
        return out

    async def aclose(self) -> None:
        for shipper in self.shippers:
            await shipper.aclose()


class RelayLock:
    """An exclusive, non-blocking ``flock`` on a file: held by the one active relay of a
    state folder (released by the kernel when its holder dies, even by ``kill -9``)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def try_acquire(self) -> bool:
        if self._fd is not None:
            return True
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            return False
        self._fd = fd
        return True

    def release(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            with contextlib.suppress(OSError):
                os.close(fd)


@dataclass(frozen=True, slots=True)
class Message:
    """What a driver is told: ``poke`` (a call was recorded or an event published),
    ``drain`` (reply once everything so far is shipped; ``ident`` names the request) or
    ``stop`` (ship what is left, then end)."""

    kind: str
    ident: int = 0


#: How a driver answers a drain: (ident, caught up?, stats).
Reply = Callable[[int, bool, dict[str, Any]], None]


class RelayDriver:
    """The relay's life on one thread: wait, linger, ship, answer.

    Args:
        build: makes the loop (called on the driver's own thread and event loop, so the
            adapters are bound there).
        lock_path: the state folder's relay lock.
        interval_s: how often an idle driver looks anyway (records written by another
            process, backoffs that expired).
        linger_s: after a poke, wait this long so a burst becomes one batch.
    """

    def __init__(self, build: Callable[[], RelayLoop], *, lock_path: Path,
                 interval_s: float = 0.5, linger_s: float = 0.05) -> None:
        self.build = build
        self.lock = RelayLock(lock_path)
        self.interval_s = interval_s
        self.linger_s = linger_s

    def run(self, inbox: queue.Queue[Message], reply: Reply) -> None:
        """Serve ``inbox`` until a ``stop`` message; always ships once more at the end."""
        loop = asyncio.new_event_loop()
        relay = loop.run_until_complete(_build(self.build))
        try:
            while True:
                wait = relay.next_due()
                timeout = self.interval_s if wait is None else min(self.interval_s, wait)
                messages = self._collect(inbox, timeout)
                stop = any(m.kind == "stop" for m in messages)
                drains = [m.ident for m in messages if m.kind == "drain"]
                caught_up = self._pass(loop, relay, force=bool(drains) or stop)
                for ident in drains:
                    reply(ident, caught_up, relay.stats())
                if stop:
                    return
        finally:
            loop.run_until_complete(relay.aclose())
            self.lock.release()
            loop.close()

    def _pass(self, loop: asyncio.AbstractEventLoop, relay: RelayLoop, *, force: bool
              ) -> bool:
        if self.lock.try_acquire():
            return loop.run_until_complete(relay.round(force=force))
        # Standby: another relay ships this folder; report what the shared state says.
        return not loop.run_until_complete(relay.backlog())

    def _collect(self, inbox: queue.Queue[Message], timeout: float) -> list[Message]:
        try:
            first = inbox.get(timeout=timeout)
        except queue.Empty:
            return []
        messages = [first]
        if first.kind == "poke" and self.linger_s:
            deadline = time.monotonic() + self.linger_s
            while (left := deadline - time.monotonic()) > 0:
                try:
                    message = inbox.get(timeout=left)
                except queue.Empty:
                    break
                messages.append(message)
                if message.kind != "poke":
                    break  # someone waits: ship now
        with contextlib.suppress(queue.Empty):
            while True:
                messages.append(inbox.get_nowait())
        return messages


async def _build(build: Callable[[], RelayLoop]) -> RelayLoop:
    return build()  # inside the loop: adapters that bind to the running loop find it
