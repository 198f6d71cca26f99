"""The relay's anchoring pass: a checkpoint every ``every_records`` records, or ``every_s``
after the first unanchored one.

Why in the relay: it already follows the audit log in its own process (off the caller's GIL
and path), wakes after calls, and runs each pass with backoff. The caller pays nothing — not
even a counter: the pass counts the records it walks. A timer inside the mesh would run in
every replica and on the caller's event loop; the relay runs once per state folder (its lock).
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from aios_mesh.anchoring.check import Anchorer, effective_anchors
from aios_mesh.anchoring.config import AnchorConfig
from aios_mesh.anchoring.keys import signer_for, verifier_for
from aios_mesh.anchoring.stores import store_for
from aios_mesh.errors import MeshError
from aios_mesh.ports.anchor import Anchor
from aios_mesh.ports.audit import AuditLog
from aios_mesh.ports.events import EventBus
from aios_mesh.recorder.relay import Factory, ShipResult

__all__ = ["AnchorShipper", "anchor_shipper", "rebaselines"]

_log = logging.getLogger("aios_mesh.anchoring")


class AnchorShipper:
    """A :class:`~aios_mesh.relay.loop.Shipper` that writes checkpoints.

    Args:
        build: makes the :class:`Anchorer` (on the relay's thread and event loop).
        every_records, every_s: when a checkpoint is due.
        clock: monotonic seconds (tests pass a fake one).
    """

    name = "anchors"

    def __init__(self, build: Callable[[], Anchorer], *, every_records: int = 1000,
                 every_s: float = 60.0, clock: Callable[[], float] = time.monotonic) -> None:
        self._build = build
        self._anchorer: Anchorer | None = None
        self.every_records = every_records
        self.every_s = every_s
        self._clock = clock
        self._since: float | None = None  # when the first unanchored record was seen
        self.anchors = 0

    async def ship(self) -> ShipResult:
        """Walk the new records; sign a checkpoint when one is due. A log that no longer
        holds the latest anchor is logged (error) and retried with backoff, never signed."""
        try:
            if self._anchorer is None:
                self._anchorer = self._build()
            pending = await self._anchorer.advance()
            if pending == 0:
                self._since = None
                return ShipResult(0, True)
            now = self._clock()
            if self._since is None:
                self._since = now
            if pending < self.every_records and now - self._since < self.every_s:
                return ShipResult(0, True)
            anchor = await self._anchorer.checkpoint()
        except MeshError as exc:
            _log.error("audit anchoring paused: %s", exc.message)
            return ShipResult(0, False)
        self._since = None
        if anchor is not None:
            self.anchors += 1
        return ShipResult(1 if anchor is not None else 0, True)

    async def backlog(self) -> bool:
        """Anchors are not a backlog anyone waits on (a drain does not wait for them)."""
        return False

    async def aclose(self) -> None:
        """Close the audit adapter and the store the anchorer uses."""
        if self._anchorer is not None:
            for part in (self._anchorer.audit, self._anchorer.store):
                with contextlib.suppress(Exception):
                    await part.aclose()
            self._anchorer = None


def anchor_shipper(config: AnchorConfig, *, audit: Factory[AuditLog], state_dir: Path,
                   bus: Factory[EventBus] | None = None) -> AnchorShipper:
    """The relay's anchoring pass for ``[anchors]`` (keys and store opened on first use, on
    the relay's own thread)."""
    def build() -> Anchorer:
        log, _owned = audit()
        return Anchorer(log, store_for(config, state_dir, bus), signer_for(config),
                        verifier_for(config))

    return AnchorShipper(build, every_records=config.every_records, every_s=config.every_s)


def rebaselines(config: AnchorConfig, *, state_dir: Path,
                bus: Factory[EventBus] | None = None) -> Callable[[], Awaitable[list[Anchor]]]:
    """What the record relay asks when the log rewound: the validly signed rebaselines of
    the anchor store, oldest first (a store or key that cannot be read gives none: the relay
    then raises its alarm, as without anchors)."""
    async def read() -> list[Anchor]:
        try:
            store = store_for(config, state_dir, bus)
        except MeshError as exc:
            _log.warning("cannot open the anchor store: %s", exc.message)
            return []
        try:
            live, _bad = effective_anchors(await store.list(), verifier_for(config))
        except MeshError as exc:
            _log.warning("cannot read the rebaselines of the anchor store: %s", exc.message)
            return []
        finally:
            with contextlib.suppress(Exception):
                await store.aclose()
        return [a for a in live if a.kind == "rebaseline"]

    return read
