"""Automatic rollback: a canary that breaches its capability's gates on live traffic is
rolled back by moving its alias back to the champion's version, with the evidence recorded.

:class:`AutoRollback` is a record processor. For every capability with a canary
(``Canary(model="name@alias", percent=...)``, not a shadow) and declared ``gates``, it keeps
the canary's and the primary's recent calls and, every ``check_every`` canary calls (off the
caller's path), judges:

* **quality**, once ``min_samples`` of the canary's calls are labelled (a proposal kept
  counts as right): ``gates.max_quality_drop`` compares its accuracy with the primary's on
  the same kind of reviewed calls (one-sided Fisher exact test) — what to use when reviewers
  see only the unsure slice of traffic; ``gates.min_quality`` is an absolute floor for the
  canary's reviewed accuracy (one-sided binomial test). Either way a few dozen wrong answers
  from an always-wrong canary are enough, and a good canary's unlucky streak is not;
* **errors** (``gates.max_error_rate``): canary calls ending in ``error``; breached when a
  binomial test says the rate is above the limit at level ``alpha``;
* **latency** (``gates.max_latency_ratio``): canary p95 over primary p95, once both have
  ``min_samples`` calls;
* **drift**: a drift alarm raised for the canary's model version (:meth:`drift_alarm`, which
  the drift monitor calls).

On a breach the canary's alias moves to the version the primary serves (so the canary
variant answers like the champion from the next call on), the response cache is cleared, and
the audit log gets an ``alias_change`` entry with ``action: "auto_rollback"`` and the
evidence; a ``aios.mesh.rollback`` event goes out through the outbox.

The binomial tests are scipy's (``scipy.stats.binomtest``); each canary is checked many
times, so ``alpha`` is divided by the number of checks a canary may get in its window
(``max_checks``, Bonferroni) — a good canary is not rolled back by repeated testing.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Protocol

from aios_mesh.errors import MeshError
from aios_mesh.lifecycle.gates import PromotionGates
from aios_mesh.lifecycle.stats import p95
from aios_mesh.ports.events import Event
from aios_mesh.ports.registry import parse_model_spec
from aios_mesh.recorder.processor import Recorded

if TYPE_CHECKING:
    from aios_mesh.capabilities import CapabilitySpec
    from aios_mesh.pipeline.cache import ResponseCache
    from aios_mesh.ports.container import Ports
    from aios_mesh.resolver import AliasResolver
    from aios_mesh.review import ReviewQueue


class RollbackHost(Protocol):
    """What :class:`AutoRollback` uses of a :class:`~aios_mesh.mesh.Mesh` (a protocol, so
    the mesh can install it without an import circle)."""

    @property
    def ports(self) -> Ports: ...
    @property
    def resolver(self) -> AliasResolver: ...
    @property
    def response_cache(self) -> ResponseCache: ...
    def capability(self, name: str) -> CapabilitySpec: ...
    def review_queue(self) -> ReviewQueue: ...
    async def publish(self, topic: str, event: Event) -> None: ...

__all__ = ["ROLLBACK_TOPIC", "AutoRollback", "Breach", "RollbackHost"]

_log = logging.getLogger("aios_mesh.lifecycle")

#: where a rollback is announced (through the mesh's outbox)
ROLLBACK_TOPIC = "aios.mesh.rollback"


@dataclass(frozen=True, slots=True)
class Breach:
    """Why a canary was rolled back: which gate, what was observed, on how many calls."""

    gate: str
    threshold: float
    observed: float
    samples: int
    p_value: float | None = None

    def document(self) -> dict[str, Any]:
        return {"gate": self.gate, "threshold": self.threshold,
                "observed": round(self.observed, 6), "samples": self.samples,
                "p_value": None if self.p_value is None else float(f"{self.p_value:.3g}")}


@dataclass(slots=True)
class _Window:
    """Recent calls of one capability, by variant."""

    canary: deque[tuple[str, bool, float, str]] = field(
        default_factory=lambda: deque(maxlen=5000))  # record id, error, latency, version
    primary_ms: deque[float] = field(default_factory=lambda: deque(maxlen=5000))
    primary_ids: deque[str] = field(default_factory=lambda: deque(maxlen=5000))
    #: when the first call was watched: labels older than that judge none of these calls
    since: str | None = None
    since_check: int = 0
    checks: int = 0
    drifted: set[str] = field(default_factory=set)


class AutoRollback:
    """Rolls back canaries that breach their gates (see the module docs).

    Args:
        mesh: the mesh whose records are watched (public parts only: the registry, the
            review queue, the audit log, the outbox).
        check_every: judge a canary after this many of its calls.
        alpha: the family-wise false-rollback level per canary.
        max_checks: checks one canary may get (the Bonferroni divisor of ``alpha``).

    Example::

        guard = AutoRollback(mesh)
        mesh.recorder.add(guard)
    """

    name = "auto-rollback"

    def __init__(self, mesh: RollbackHost, *, check_every: int = 10, alpha: float = 0.01,
                 max_checks: int = 1000) -> None:
        self.mesh = mesh
        self.check_every = check_every
        self.alpha = alpha
        self.max_checks = max_checks
        self.rollbacks: list[dict[str, Any]] = []
        self._windows: dict[str, _Window] = {}
        self._lock = threading.Lock()
        self._pending: set[str] = set()
        self._work: deque[str] = deque()
        self._wake = threading.Event()
        self._idle = threading.Event()
        self._idle.set()
        self._stop = False
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ the caller's path
    def process(self, item: Recorded) -> None:
        record, call = item.record, item.call
        if record.variant is None or call is None:
            return  # no canary on this capability: nothing to watch, nothing spent
        spec = call.spec
        canary = spec.canary
        if canary is None or canary.shadow or canary.model is None or spec.gates is None:
            return
        window = self._windows.get(spec.name)
        if window is None:
            with self._lock:
                window = self._windows.setdefault(spec.name, _Window())
        if window.since is None:
            window.since = record.started_at
        if record.variant == "canary":
            version = (record.model or {}).get("version", "")
            window.canary.append((record.record_id, record.outcome == "error",
                                  record.latency_ms, str(version)))
            window.since_check += 1
            if window.since_check >= self.check_every:
                window.since_check = 0
                self._schedule(spec.name)
        else:
            window.primary_ids.append(record.record_id)
            if record.outcome != "error":
                window.primary_ms.append(record.latency_ms)

    def drift_alarm(self, capability: str, model_version: str) -> None:
        """A drift alarm for ``capability``'s model version: if that is the canary's, the
        canary is rolled back at the next check (scheduled now)."""
        with self._lock:
            window = self._windows.setdefault(capability, _Window())
            window.drifted.add(model_version)
        self._schedule(capability)

    def _schedule(self, capability: str) -> None:
        with self._lock:
            if capability in self._pending:
                return
            self._pending.add(capability)
            self._work.append(capability)
            self._idle.clear()
            if self._thread is None:
                self._thread = threading.Thread(target=self._main, daemon=True,
                                                name="aios-mesh-auto-rollback")
                self._thread.start()
        self._wake.set()

    # ------------------------------------------------------------------ off the caller's path
    def _main(self) -> None:
        loop = asyncio.new_event_loop()
        try:
            while True:
                self._wake.wait()
                self._wake.clear()
                while True:
                    with self._lock:
                        if not self._work:
                            self._idle.set()
                            break
                        capability = self._work.popleft()
                        self._pending.discard(capability)
                    try:
                        loop.run_until_complete(self.check(capability))
                    except Exception:  # a failed check never hurts the callers
                        _log.warning("automatic rollback check of %s failed", capability,
                                     exc_info=True)
                if self._stop:
                    return
        finally:
            loop.close()

    async def check(self, capability: str) -> list[Breach]:
        """Judge ``capability``'s canary now; roll it back on a breach. Returns the breaches
        (empty: the canary stays)."""
        spec = self.mesh.capability(capability)
        window = self._windows.get(capability)
        canary = spec.canary
        if window is None or canary is None or canary.model is None or spec.gates is None:
            return []
        primary = await self.mesh.resolver.resolve(spec.model) if spec.model else None
        current = await self.mesh.resolver.resolve(canary.model)
        if primary is not None and current.version == primary.version:
            return []  # rolled back already (or never diverged): the canary is the champion
        window.checks += 1
        calls = [c for c in window.canary if c[3] == current.version]
        breaches = self._judge(spec, spec.gates, window, calls, current.version)
        if breaches and primary is not None:
            await self._roll_back(spec, canary.model, current.version, primary.version,
                                  breaches, len(calls))
        return breaches

    def _judge(self, spec: CapabilitySpec, gates: PromotionGates, window: _Window,
               calls: list[tuple[str, bool, float, str]], version: str) -> list[Breach]:
        from scipy.stats import binomtest  # the lifecycle extra; only once a canary runs

        level = self.alpha / self.max_checks
        found: list[Breach] = []
        if version in window.drifted:
            found.append(Breach("drift", 0.0, 1.0, len(calls)))
        if (gates.min_quality is not None or gates.max_quality_drop is not None) and calls:
            found.extend(self._judge_quality(spec, gates, window, calls, level))
        if gates.max_error_rate is not None and calls:
            errors = sum(1 for c in calls if c[1])
            p = binomtest(errors, len(calls), gates.max_error_rate,
                          alternative="greater").pvalue
            if p < level:
                found.append(Breach("max_error_rate", gates.max_error_rate,
                                    errors / len(calls), len(calls), p))
        if gates.max_latency_ratio is not None:
            answered = [c[2] for c in calls if not c[1]]
            if len(answered) >= gates.min_samples and len(window.primary_ms) >= \
                    gates.min_samples:
                ratio = (p95(answered) or 0.0) / max(p95(list(window.primary_ms)) or 0.0, 1e-9)
                if ratio > gates.max_latency_ratio:
                    found.append(Breach("max_latency_ratio", gates.max_latency_ratio, ratio,
                                        len(answered)))
        return found

    def _judge_quality(self, spec: CapabilitySpec, gates: PromotionGates, window: _Window,
                       calls: list[tuple[str, bool, float, str]], level: float
                       ) -> list[Breach]:
        """The reviewers' verdicts on canary calls, once there are ``min_samples`` of them:
        against ``min_quality`` (one-sided binomial test) and against the primary's verdicts
        on the same kind of calls (``max_quality_drop``: one-sided Fisher exact test).

        The second is the one to rely on when reviewers see only a slice of traffic (calls
        below a confidence threshold are the hard ones, where even a good model is often
        wrong): both variants are judged on the same slice, so the review threshold cancels
        out, while an absolute ``min_quality`` must be set for that slice."""
        from scipy.stats import binomtest, fisher_exact

        canary_ids = {c[0] for c in calls}
        primary_ids = set(window.primary_ids)
        canary: list[bool] = []
        primary: list[bool] = []
        for label in self.mesh.review_queue().labels(capability=spec.name,
                                                     since=window.since):
            if label.proposed is None:
                continue  # parked with no proposal: nothing of the model's was judged
            if label.record_id in canary_ids:
                canary.append(label.proposal_kept)
            elif label.record_id in primary_ids:
                primary.append(label.proposal_kept)
        if len(canary) < gates.min_samples:
            return []
        right = sum(canary)
        found: list[Breach] = []
        if gates.min_quality is not None:
            p = binomtest(right, len(canary), gates.min_quality, alternative="less").pvalue
            if p < level:
                found.append(Breach("min_quality", gates.min_quality, right / len(canary),
                                    len(canary), p))
        if gates.max_quality_drop is not None and len(primary) >= gates.min_samples:
            drop = sum(primary) / len(primary) - right / len(canary)
            if drop > gates.max_quality_drop:
                table = [[right, len(canary) - right],
                         [sum(primary), len(primary) - sum(primary)]]
                p = fisher_exact(table, alternative="less").pvalue
                if p < level:
                    found.append(Breach("max_quality_drop", gates.max_quality_drop, drop,
                                        len(canary), p))
        return found

    async def _roll_back(self, spec: CapabilitySpec, canary_model: str, from_version: str,
                         to_version: str, breaches: list[Breach], calls: int) -> None:
        name, alias, _ = parse_model_spec(canary_model)
        evidence = [b.document() for b in breaches]
        if alias is None:
            _log.warning("canary %s of %s breached its gates (%s) but pins a version: "
                         "nothing to move back", canary_model, spec.name,
                         ", ".join(b.gate for b in breaches))
            return
        await self.mesh.ports.registry.set_alias(name, alias, to_version)
        self.mesh.resolver.invalidate(canary_model)
        self.mesh.response_cache.clear()
        entry = {"kind": "alias_change", "action": "auto_rollback", "capability": spec.name,
                 "target": "model", "model": name, "alias": alias,
                 "from_version": from_version, "to_version": to_version,
                 "actor": "aios-mesh:auto-rollback", "canary_calls": calls,
                 "evidence": evidence, "at": datetime.now(UTC).isoformat()}
        await self.mesh.ports.audit.append(entry)
        try:
            await self.mesh.publish(ROLLBACK_TOPIC, Event(
                type=ROLLBACK_TOPIC, source="aios-mesh/auto-rollback", tenant="aios-mesh",
                subject=spec.name, key=spec.name, data=entry))
        except MeshError:
            _log.warning("the rollback of %s is in the audit log but its event could not "
                         "be queued", spec.name, exc_info=True)
        self.rollbacks.append(entry)
        _log.warning("canary %s of %s rolled back from version %s to %s: %s", canary_model,
                     spec.name, from_version, to_version,
                     ", ".join(f"{b.gate} {b.observed:.3g} vs {b.threshold}" for b in breaches))

    # ------------------------------------------------------------------ processor protocol
    def flush(self, timeout: float) -> bool:
        return self._idle.wait(timeout)

    def close(self) -> None:
        self.flush(10.0)
        self._stop = True
        self._wake.set()
        if self._thread is not None:
            self._thread.join(10.0)
            self._thread = None
