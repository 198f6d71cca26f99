"""Shadow traffic: after each answered call of a capability with ``Canary(shadow=True)``, the
same (possibly redacted) payload goes to the candidate model on a background thread; the
caller never waits for it and never sees it. Agreement, latency and cost land in
``<state>/shadow.db`` (``aios-mesh compare`` reads them).

:class:`ShadowProcessor` is the record processor that feeds the runner.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aios_mesh.capabilities import CapabilitySpec
from aios_mesh.errors import MeshError
from aios_mesh.lifecycle.agreement import agreement_of
from aios_mesh.ports.serving import Serving
from aios_mesh.recorder.processor import Recorded
from aios_mesh.resolver import AliasResolver

__all__ = ["ShadowJob", "ShadowProcessor", "ShadowRunner", "open_shadow_db"]

_log = logging.getLogger("aios_mesh.rollout")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS shadow (
  capability TEXT NOT NULL, record_id TEXT NOT NULL, tenant TEXT NOT NULL,
  primary_version TEXT, candidate_version TEXT, agree INTEGER, primary_ms REAL,
  candidate_ms REAL, candidate_cost REAL, error TEXT, at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS shadow_cap ON shadow(capability);
"""


@dataclass(frozen=True, slots=True)
class ShadowJob:
    """One answered call to mirror: the payload the primary saw and what it answered."""

    spec: CapabilitySpec
    payload: dict[str, Any]
    tenant: str
    record_id: str
    primary_output: dict[str, Any]
    primary_ms: float
    primary_version: str


class ShadowRunner:
    """Mirrors calls to a candidate model on its own thread and event loop.

    Args:
        resolver: resolves the candidate's model alias.
        serving: ``(label, adapter)`` of a capability's serving backend by its ``serving``
            name (:meth:`aios_mesh.ports.container.Ports.serving_for`).
        path: the sqlite file the comparisons go to (read by ``aios-mesh compare``).
    """

    def __init__(self, resolver: AliasResolver,
                 serving: Callable[[str | None], tuple[str, Serving]], path: Path) -> None:
        self.resolver = resolver
        self._serving = serving
        self.path = path
        self._queue: queue.SimpleQueue[ShadowJob | threading.Event | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def submit(self, job: ShadowJob) -> None:
        if self._thread is None:
            with self._lock:
                if self._thread is None:
                    self._thread = threading.Thread(target=self._main, daemon=True,
                                                    name="aios-mesh-shadow")
                    self._thread.start()
        self._queue.put(job)

    def _main(self) -> None:
        loop = asyncio.new_event_loop()
        db = open_shadow_db(self.path)
        try:
            while True:
                item = self._queue.get()
                if item is None:
                    return
                if isinstance(item, threading.Event):
                    item.set()
                    continue
                try:
                    row = loop.run_until_complete(self._shadow(item))
                except Exception as exc:  # a shadow never hurts the caller
                    _log.warning("shadow call failed: %s", exc)
                    continue
                db.execute("INSERT INTO shadow VALUES (?,?,?,?,?,?,?,?,?,?,?)", row)
        finally:
            db.close()
            loop.close()

    async def _shadow(self, job: ShadowJob) -> tuple[Any, ...]:
        spec = job.spec
        assert spec.canary is not None and spec.canary.model is not None
        ref = await self.resolver.resolve(spec.canary.model)
        _, serving = self._serving(spec.serving)
        started = time.perf_counter()
        error = None
        agree: float | None = None
        cost = None
        try:
            prediction = await serving.infer(ref, job.payload, timeout=spec.slo.timeout_s)
            output = spec.output.model_validate(prediction.output).model_dump(mode="json")
            agree = agreement_of(spec)(job.primary_output, output)
            cost = spec.price.cost(prediction.usage)
        except MeshError as exc:
            error = f"{type(exc).__name__}: {exc.message}"
        elapsed = (time.perf_counter() - started) * 1000.0
        return (spec.name, job.record_id, job.tenant, job.primary_version, ref.version, agree,
                job.primary_ms, elapsed, cost, error, datetime.now(UTC).isoformat())

    def flush(self, timeout: float = 10.0) -> bool:
        if self._thread is None:
            return True
        done = threading.Event()
        self._queue.put(done)
        return done.wait(timeout)

    def stop(self) -> None:
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join(10)
            self._thread = None


def open_shadow_db(path: Path) -> sqlite3.Connection:
    path.parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    db.execute("PRAGMA journal_mode=WAL")
    db.executescript(_SCHEMA)
    return db


class ShadowProcessor:
    """Sends each answered call of a shadowed capability to the :class:`ShadowRunner`."""

    name = "shadow"

    def __init__(self, runner: ShadowRunner) -> None:
        self.runner = runner

    def process(self, item: Recorded) -> None:
        call = item.call
        spec = call.spec if call is not None else None
        # a prompt-only candidate is not shadowed yet (it would need the call re-rendered)
        if spec is None or spec.canary is None or not spec.canary.shadow or call is None \
                or spec.canary.model is None \
                or call.output is None or call.model_ref is None:
            return
        self.runner.submit(ShadowJob(spec, call.payload or {}, call.tenant,
                                     item.record.record_id, call.output.model_dump(mode="json"),
                                     item.record.latency_ms, call.model_ref.version))

    def flush(self, timeout: float) -> bool:
        return self.runner.flush(timeout)

    def close(self) -> None:
        self.runner.stop()
