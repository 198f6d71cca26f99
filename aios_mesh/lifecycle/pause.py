"""Pause an automation and resume it: while a capability is paused (for one tenant or for
every tenant) its calls go to the human review queue, or to its declared fallback chain,
instead of its primary model.

    await pause(mesh, "extract-invoice", tenant="acme", mode="human",
                reason="INC-42: totals off by 10x", actor="oncall")
    ...                                   # acme's calls are parked for people
    await resume(mesh, "extract-invoice", tenant="acme", actor="oncall")

The same from a shell: ``aios-mesh pause extract-invoice --tenant acme --to human --reason
...`` / ``aios-mesh resume extract-invoice --tenant acme`` / ``aios-mesh paused``.

* **Where it lives**: a ``pauses`` store on the shared-state seam (:mod:`aios_mesh.state`): a
  sqlite file in the state folder on the embedded default, the PostgreSQL that ``[backends]
  state`` names for replicas. Every process that shares the state honours one pause.
* **How it enters the call path**: :class:`PauseControl`, an admission controller the
  default pipeline installs first in the admission stage. It never asks the database on a
  call's path: it keeps a snapshot of the pause table, read again at most every
  ``refresh_s`` seconds (default 1.0). **Another process sees a pause within** ``refresh_s``
  (a call admitted at time *t* uses a snapshot read at *t* − ``refresh_s`` or later; the one
  call that finds the snapshot stale waits for one read of the table); the process that
  pauses sees it at once. With nothing paused a call pays a clock read and a dict check.
* **What a paused call does**: mode ``human`` parks it in the review queue with no proposal
  (outcome ``review``, review reason ``paused: <reason>``); mode ``fallback`` skips the
  primary and runs the capability's fallback chain (outcome ``degraded``, ``fallback`` names
  who answered). Either way the record's ``error`` is a :class:`CapabilityPaused` saying who
  paused it and why, as it names the primary's error for any fallback answer. A stream of a
  capability paused to ``fallback`` is refused with :class:`CapabilityPaused` (fallbacks do
  not stream). A call answered from the response cache never reaches admission, so it is
  still answered from the cache until its entry expires (pausing clears this process's
  cache).
* **Audit**: every pause and resume is appended to the audit log (``kind: "pause"`` /
  ``"resume"``: capability, tenant, mode, actor, reason, at), so the hash chain covers who
  stopped and restarted what. A pause whose audit entry cannot be written is undone.
* **Bad reads**: when the store cannot be read the controller keeps its last snapshot (pauses
  stay in force, a resume waits) and tries again ``refresh_s`` later.

Resuming what is not paused changes nothing, writes no audit entry and is not an error
(:func:`resume` returns ``None``; the CLI says so and exits 0), so a runbook can resume
blindly.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import difflib
import logging
import math
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final, Literal, Protocol, get_args

from aios_mesh.capabilities import CapabilitySpec
from aios_mesh.config import MeshConfig
from aios_mesh.errors import ConfigError, InvalidInput, MeshError, UnknownTenant
from aios_mesh.pipeline.admission import AdmissionStep
from aios_mesh.pipeline.call import Call, Release
from aios_mesh.pipeline.runner import Pipeline
from aios_mesh.ports.container import Ports
from aios_mesh.redaction.scrub import Scrubber
from aios_mesh.state import Database, Migration, SharedState

__all__ = ["ALL_TENANTS", "PAUSE_MIGRATIONS", "CapabilityPaused", "Pause", "PauseControl",
           "PauseMode", "PauseStore", "list_pauses", "pause", "pause_control", "resume"]

_log = logging.getLogger("aios_mesh.lifecycle.pause")

PauseMode = Literal["human", "fallback"]
_MODES: Final = get_args(PauseMode)

#: The tenant column of a pause that holds for every tenant (not a declarable tenant name).
ALL_TENANTS: Final = "*"

#: Longest reason kept (it goes into the audit entry, the review item and each record).
_MAX_REASON: Final = 500

PAUSE_MIGRATIONS: Final = (
    Migration(1, (
        """CREATE TABLE pauses (
            capability TEXT NOT NULL,
            tenant TEXT NOT NULL,
            mode TEXT NOT NULL,
            reason TEXT NOT NULL,
            actor TEXT NOT NULL,
            paused_at TEXT NOT NULL,
            PRIMARY KEY (capability, tenant))""",
    )),
)


class CapabilityPaused(MeshError):
    """An operator paused the capability: its primary was not called. On a parked or
    fallback-answered call it is the record's ``error`` (why the primary did not answer); a
    stream of a capability paused to ``fallback`` ends with it."""

    code = "capability_paused"
    outcome = "rejected"


@dataclass(frozen=True, slots=True)
class Pause:
    """One pause in force: ``capability`` for ``tenant`` (``None``: every tenant), its calls
    sent to ``mode`` (``human`` or ``fallback``), since ``at`` (ISO 8601, UTC)."""

    capability: str
    tenant: str | None
    mode: PauseMode
    reason: str
    actor: str
    at: str

    @property
    def scope(self) -> str:
        """Whose calls it holds, in words: ``tenant 'acme'`` or ``every tenant``."""
        return "every tenant" if self.tenant is None else f"tenant {self.tenant!r}"

    def document(self, kind: Literal["pause", "resume"] = "pause", *,
                 actor: str | None = None, reason: str | None = None) -> dict[str, Any]:
        """The audit-log entry of this pause (``kind: "pause"``), or of its end (``kind:
        "resume"``: ``actor`` and ``reason`` are the resumer's, ``paused_at`` when it
        began)."""
        doc: dict[str, Any] = {"kind": kind, "capability": self.capability,
                               "tenant": self.tenant, "mode": self.mode,
                               "actor": self.actor if actor is None else actor,
                               "reason": self.reason if reason is None else reason,
                               "at": self.at if kind == "pause" else _now()}
        if kind == "resume":
            doc["paused_at"] = self.at
        return doc

    def to_dict(self) -> dict[str, Any]:
        """The JSON form (``aios-mesh paused --json``)."""
        return {"capability": self.capability, "tenant": self.tenant, "mode": self.mode,
                "reason": self.reason, "actor": self.actor, "at": self.at}


def _now() -> str:
    return datetime.now(UTC).isoformat()


def _key(tenant: str | None) -> str:
    return ALL_TENANTS if tenant is None else tenant


class PauseStore:
    """The pauses in force, on the shared-state seam (store ``pauses``: ``pauses.db`` in the
    state folder, or a table of the shared PostgreSQL). One row per (capability, tenant);
    pausing again replaces the row. Blocking: async code calls it in a thread.

    Example::

        store = PauseStore(SqliteState(Path(".aios-mesh")))
        store.put(Pause("triage", None, "human", "INC-7", "oncall", "2026-12-07T10:00:00+00:00"))
        [p.capability for p in store.all()]    # ['triage']
    """

    def __init__(self, state: SharedState) -> None:
        # Connects (and migrates) on first use: a mesh that never looks pays nothing.
        self._db = Database(state, "pauses", PAUSE_MIGRATIONS, what="the pause store")

    @staticmethod
    def _row(row: tuple[Any, ...]) -> Pause:
        tenant = None if row[1] == ALL_TENANTS else str(row[1])
        mode: PauseMode = "fallback" if row[2] == "fallback" else "human"
        return Pause(str(row[0]), tenant, mode, str(row[3]), str(row[4]), str(row[5]))

    def all(self) -> list[Pause]:
        """Every pause in force, by capability then tenant."""
        rows = self._db.execute("SELECT capability, tenant, mode, reason, actor, paused_at "
                                "FROM pauses ORDER BY capability, tenant")
        return [self._row(r) for r in rows]

    def get(self, capability: str, tenant: str | None) -> Pause | None:
        """The pause of exactly ``capability`` for ``tenant`` (``None``: the every-tenant
        one), if any."""
        row = self._db.execute(
            "SELECT capability, tenant, mode, reason, actor, paused_at FROM pauses "
            "WHERE capability = ? AND tenant = ?", (capability, _key(tenant))).fetchone()
        return None if row is None else self._row(row)

    def put(self, pause: Pause) -> Pause | None:
        """Put ``pause`` in force (replacing the one of the same capability and tenant);
        returns the replaced one."""
        with self._db.transaction():
            before = self.get(pause.capability, pause.tenant)
            self._db.execute("DELETE FROM pauses WHERE capability = ? AND tenant = ?",
                             (pause.capability, _key(pause.tenant)))
            self._db.execute(
                "INSERT INTO pauses (capability, tenant, mode, reason, actor, paused_at) "
                "VALUES (?,?,?,?,?,?)", (pause.capability, _key(pause.tenant), pause.mode,
                                         pause.reason, pause.actor, pause.at))
        return before

    def remove(self, capability: str, tenant: str | None) -> Pause | None:
        """Lift the pause of ``capability`` for ``tenant``; returns it (None: none was)."""
        with self._db.transaction():
            before = self.get(capability, tenant)
            if before is not None:
                self._db.execute("DELETE FROM pauses WHERE capability = ? AND tenant = ?",
                                 (capability, _key(tenant)))
        return before

    def close(self) -> None:
        """Release the connection (it reconnects if used again)."""
        self._db.close()


@dataclass(frozen=True, slots=True)
class _Snapshot:
    pauses: Mapping[tuple[str, str], Pause]  # (capability, tenant or ALL_TENANTS)
    at: float  # the clock when the read began


def _granted() -> None:
    """The release of a call the controller let through: it holds nothing."""


class PauseControl:
    """The admission controller that honours pauses (see the module docstring).

    Args:
        store: the pause store, or a function that opens it on first use; the default
            pipeline binds the mesh's (:meth:`bind`) when none is given.
        refresh_s: the longest a snapshot of the pause table is used before it is read
            again (0: on every call) — the bound on how late another process sees a pause.
        clock: monotonic seconds (tests move it by hand).

    Example (a mesh that sees other processes' pauses within 0.2 s)::

        mesh = Mesh(config, admission=[PauseControl(refresh_s=0.2)])
    """

    name = "pause"

    def __init__(self, store: PauseStore | Callable[[], PauseStore] | None = None, *,
                 refresh_s: float = 1.0, clock: Callable[[], float] = time.monotonic) -> None:
        if not (math.isfinite(refresh_s) and refresh_s >= 0):
            raise ConfigError(f"PauseControl(refresh_s={refresh_s!r}) is not a duration",
                              hint="give refresh_s in seconds, 0 or more (default 1.0)")
        self.refresh_s = refresh_s
        self._clock = clock
        self._opener: Callable[[], PauseStore] | None = None
        self._store: PauseStore | None = None
        if isinstance(store, PauseStore):
            self._store = store
        elif store is not None:
            self._opener = store
        self._lock = threading.Lock()
        self._snapshot = _Snapshot({}, -math.inf)  # stale: the first call reads the table
        self._gen = 0  # bumped by each local change: an older read in flight is dropped
        self._inflight: concurrent.futures.Future[_Snapshot] | None = None
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None
        self._failing = False

    @property
    def bound(self) -> bool:
        """Whether the controller has a store to read."""
        return self._store is not None or self._opener is not None

    def bind(self, store: Callable[[], PauseStore]) -> None:
        """Give a controller made without a store the mesh's (opened on first use); a
        controller that has one keeps it."""
        if not self.bound:
            self._opener = store

    @property
    def store(self) -> PauseStore:
        """The pause store (opened now if it was given as a function)."""
        with self._lock:
            if self._store is None:
                if self._opener is None:
                    raise ConfigError("this PauseControl has no pause store",
                                      hint="install it through Mesh(admission=[...]) or give "
                                           "it PauseStore(state)")
                self._store = self._opener()
            return self._store

    def applies(self, spec: CapabilitySpec) -> bool:
        """Every capability (asked once per spec, so it cannot know what is paused now)."""
        return True

    async def admit(self, call: Call) -> Release:
        snap = self._snapshot
        if self._clock() - snap.at > self.refresh_s and self.bound:
            snap = await asyncio.shield(asyncio.wrap_future(self._read_soon()))
        if snap.pauses:  # nothing paused (the usual case): one dict check
            name = call.spec.name
            pause = snap.pauses.get((name, call.tenant)) or snap.pauses.get(
                (name, ALL_TENANTS))
            if pause is not None:
                _hold(call, pause)
        return _granted

    def pauses(self) -> list[Pause]:
        """The pauses this controller honours now (its snapshot, not read again)."""
        return sorted(self._snapshot.pauses.values(),
                      key=lambda p: (p.capability, _key(p.tenant)))

    def reload(self) -> list[Pause]:
        """Read the pause table now (after a change made in this process, which then holds
        at once); returns what is in force."""
        with self._lock:
            self._gen += 1  # a read that began before the change must not win
        self._read()
        return self.pauses()

    def _read_soon(self) -> concurrent.futures.Future[_Snapshot]:
        """One read at a time, shared by every call (and event loop) that finds the
        snapshot stale; it runs off the event loop."""
        with self._lock:
            if self._inflight is None or self._inflight.done():
                if self._executor is None:
                    self._executor = concurrent.futures.ThreadPoolExecutor(
                        1, thread_name_prefix="aios-mesh-pauses")
                self._inflight = self._executor.submit(self._read)
            return self._inflight

    def _read(self) -> _Snapshot:
        with self._lock:
            gen = self._gen
        began = self._clock()
        try:
            found = {(p.capability, _key(p.tenant)): p for p in self.store.all()}
        except MeshError as exc:
            # Fail static: the pauses known stay in force; the next read is refresh_s away.
            if not self._failing:
                _log.warning("cannot read the pause store (%s); keeping the %d pauses "
                             "known", exc.message, len(self._snapshot.pauses))
            self._failing = True
            found = dict(self._snapshot.pauses)
        else:
            self._failing = False
        snap = _Snapshot(found, began)
        with self._lock:
            if self._gen == gen:
                self._snapshot = snap
            return self._snapshot

    def close(self) -> None:
        """Release the store's connection and the reader thread."""
        with self._lock:
            store, executor = self._store, self._executor
            self._executor = None
            if self._opener is not None:
                self._store = None  # opened again if used again
        if executor is not None:
            executor.shutdown(wait=False)
        if store is not None:
            store.close()


def _hold(call: Call, pause: Pause) -> None:
    """Mark ``call`` paused; the invoke step skips its primary (and parks it, or runs the
    fallback chain). The error says why, in the record."""
    error = CapabilityPaused(
        f"{pause.capability} is paused for {pause.scope} (calls go to "
        f"{'human review' if pause.mode == 'human' else 'the fallback chain'}) by "
        f"{pause.actor} since {pause.at}: {pause.reason or 'no reason given'}",
        hint=f"aios-mesh resume {pause.capability}"
             + ("" if pause.tenant is None else f" --tenant {pause.tenant}"))
    if pause.mode == "fallback" and call.mode == "stream":
        raise error  # fallbacks answer whole: there is nothing to stream
    call.paused = pause.mode
    call.primary_error = error
    if pause.mode == "human":
        call.review_reason = f"paused: {pause.reason or 'no reason given'}"


# -- the operator's side: pause, resume, list ----------------------------------------------


class _Audit(Protocol):
    async def append(self, record: dict[str, Any]) -> Any: ...


class _Recorder(Protocol):
    @property
    def scrubber(self) -> Scrubber: ...


class MeshParts(Protocol):
    """What pausing needs of a :class:`~aios_mesh.mesh.Mesh` (its public parts)."""

    @property
    def config(self) -> MeshConfig: ...

    @property
    def state(self) -> SharedState: ...

    @property
    def pipeline(self) -> Pipeline: ...

    @property
    def ports(self) -> Ports: ...

    @property
    def recorder(self) -> _Recorder: ...

    def capability(self, name: str) -> CapabilitySpec: ...


def pause_control(mesh: MeshParts) -> PauseControl | None:
    """The pause controller in ``mesh``'s admission stage (None with a pipeline of its own
    that has none)."""
    for step in mesh.pipeline.steps:
        if isinstance(step, AdmissionStep):
            for controller in step.controllers:
                if isinstance(controller, PauseControl) and controller.bound:
                    return controller
    return None


class _Stores:
    """The mesh's pause store (its controller's), or one opened for this change."""

    def __init__(self, mesh: MeshParts) -> None:
        self.control = pause_control(mesh)
        self._own = PauseStore(mesh.state) if self.control is None else None

    @property
    def store(self) -> PauseStore:
        if self._own is not None:
            return self._own
        assert self.control is not None
        return self.control.store

    def changed(self) -> None:
        if self.control is not None:
            self.control.reload()  # this process holds it now, not refresh_s later

    def close(self) -> None:
        if self._own is not None:
            self._own.close()


def _tenant(mesh: MeshParts, tenant: str | None) -> str | None:
    if tenant is None:
        return None
    declared = list(mesh.config.tenants)
    if not tenant or tenant != tenant.strip() or tenant == ALL_TENANTS:
        raise InvalidInput(f"{tenant!r} is not a tenant name",
                           hint="give a declared tenant with --tenant, or leave it out to "
                                "pause for every tenant")
    if tenant not in mesh.config.tenants:
        close = difflib.get_close_matches(tenant, declared, n=1)
        raise UnknownTenant(f"tenant {tenant!r} is not declared",
                            hint=(f"did you mean {close[0]!r}? " if close else "")
                            + f"declared tenants: {', '.join(declared)}")
    return tenant


def _spec(mesh: MeshParts, capability: str) -> CapabilitySpec:
    return mesh.capability(capability)  # UnknownCapability with a "did you mean"


async def pause(mesh: MeshParts, capability: str, *, tenant: str | None = None,
                mode: str = "human", reason: str = "", actor: str = "unknown") -> Pause:
    """Pause ``capability`` for ``tenant`` (default: every tenant): its calls go to human
    review (``mode="human"``) or its declared fallback chain (``mode="fallback"``) until
    :func:`resume`. Pausing again replaces the pause (new mode, reason). Audited.

    Raises :class:`~aios_mesh.errors.UnknownCapability` / ``UnknownTenant`` (with a "did
    you mean"), and :class:`~aios_mesh.errors.InvalidInput` for another mode, a ``fallback``
    pause of a capability that declares no fallback, or a reason over 500 characters.

    Example::

        await pause(mesh, "extract-invoice", mode="fallback", reason="INC-42", actor="ana")
    """
    spec = _spec(mesh, capability)
    who = _tenant(mesh, tenant)
    if mode not in _MODES:
        raise InvalidInput(f"cannot pause to {mode!r}",
                           hint="pause to 'human' (the review queue) or 'fallback' (the "
                                "capability's declared fallback chain)")
    if mode == "fallback" and not spec.fallbacks:
        raise InvalidInput(f"{spec.name} declares no fallback to pause to",
                           hint="pause it to 'human', or declare fallbacks = [...] on the "
                                "capability (a model, a function or 'human')")
    if len(reason) > _MAX_REASON:
        raise InvalidInput(f"the reason is {len(reason)} characters long",
                           hint=f"keep it under {_MAX_REASON}: a ticket id and a few words")
    scrub = mesh.recorder.scrubber  # an operator's words reach records and the audit log
    new = Pause(spec.name, who, "fallback" if mode == "fallback" else "human",
                scrub.text(reason.strip()), scrub.text(actor), _now())
    stores = _Stores(mesh)
    try:
        before = await asyncio.to_thread(stores.store.put, new)
        try:
            await mesh.ports.audit.append(new.document())
        except BaseException:  # not audited: not in force either
            await asyncio.to_thread(_restore, stores.store, new, before)
            raise
        stores.changed()
    finally:
        stores.close()
    return new


def _restore(store: PauseStore, new: Pause, before: Pause | None) -> None:
    if before is None:
        store.remove(new.capability, new.tenant)
    else:
        store.put(before)


async def resume(mesh: MeshParts, capability: str, *, tenant: str | None = None,
                 actor: str = "unknown", reason: str = "") -> Pause | None:
    """Lift the pause of ``capability`` for ``tenant`` (default: the every-tenant pause; a
    pause of one tenant is lifted with that tenant). Returns the lifted pause, or ``None``
    when there was none (nothing changes, nothing is audited). Audited.

    Example::

        lifted = await resume(mesh, "extract-invoice", actor="ana")
    """
    spec = _spec(mesh, capability)
    who = _tenant(mesh, tenant)
    scrub = mesh.recorder.scrubber
    stores = _Stores(mesh)
    try:
        lifted = await asyncio.to_thread(stores.store.remove, spec.name, who)
        if lifted is None:
            return None
        try:
            await mesh.ports.audit.append(lifted.document(
                "resume", actor=scrub.text(actor), reason=scrub.text(reason.strip())))
        except BaseException:  # not audited: still paused
            await asyncio.to_thread(stores.store.put, lifted)
            raise
        stores.changed()
    finally:
        stores.close()
    return lifted


async def list_pauses(mesh: MeshParts, capability: str | None = None) -> list[Pause]:
    """The pauses in force now (read from the store, not a snapshot), of one capability or
    all."""
    name = None if capability is None else _spec(mesh, capability).name
    stores = _Stores(mesh)
    try:
        found = await asyncio.to_thread(stores.store.all)
    finally:
        stores.close()
    return [p for p in found if name is None or p.capability == name]
