"""The bulk job ledger: jobs and one row per input line, on the shared-state seam.

The same SQL runs on :class:`~aios_mesh.state.SqliteState` (embedded) and
``aios_mesh_postgres.PostgresState`` (replicas share one database). A row moves through::

    pending -> running -> answered -> done | failed        (cancelled: never started)

``running`` is written before the row's call and holds the row's record id (derived from the
job and the row, see :func:`row_record_id`); ``answered`` is written by the call's
before-record hook with the answer (or problem) and the state it ends in, *before* the
record goes to the audit log; after the append the row settles. A runner that dies leaves
rows ``running`` or ``answered``: the next runner looks their record ids up in the audit
log (see :mod:`aios_mesh.gateway.jobs.runner`), so a row is never called twice.

Every change of a row by a runner is conditional on that runner owning the row, and a job is
run by the one runner holding its lease, so two replicas never run the same row at once.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Literal

import orjson

from aios_mesh.errors import NotFound
from aios_mesh.record import utc_now_iso
from aios_mesh.state import Database, Migration, SharedState

__all__ = ["JOBS_MIGRATIONS", "Job", "JobNotFound", "JobStore", "NewRow", "RowResult",
           "RowState", "row_record_id"]

RowState = Literal["pending", "running", "answered", "done", "failed", "cancelled"]
JobStatus = Literal["queued", "running", "completed", "cancelled"]

JOBS_MIGRATIONS: Final = (
    Migration(1, (
        """CREATE TABLE jobs (
            id TEXT PRIMARY KEY,
            tenant TEXT NOT NULL,
            caller TEXT NOT NULL,
            capability TEXT NOT NULL,
            status TEXT NOT NULL,
            total INTEGER NOT NULL,
            created_at TEXT NOT NULL,
            started_at TEXT,
            finished_at TEXT,
            lease_owner TEXT,
            lease_until DOUBLE PRECISION)""",
        "CREATE INDEX jobs_by_tenant ON jobs (tenant, created_at)",
        "CREATE INDEX jobs_open ON jobs (finished_at, created_at)",
        """CREATE TABLE jobs_rows (
            job_id TEXT NOT NULL,
            idx INTEGER NOT NULL,
            line INTEGER NOT NULL,
            state TEXT NOT NULL,
            input TEXT,
            record_id TEXT,
            owner TEXT,
            final TEXT,
            result TEXT,
            PRIMARY KEY (job_id, idx))""",
        "CREATE INDEX jobs_rows_state ON jobs_rows (job_id, state, idx)",
    )),
)

# Row ids are uuid5 under this namespace: the same job and row give the same record id.
_RECORD_NS: Final = uuid.UUID("6f0f7e8e-3b53-5c4c-9a3e-6a1d4e0b6a11")


def row_record_id(job_id: str, index: int) -> str:
    """The decision record id of row ``index`` of job ``job_id`` (deterministic, so a row
    that a dead runner started can be found in the audit log)."""
    return str(uuid.uuid5(_RECORD_NS, f"{job_id}/{index}"))


class JobNotFound(NotFound):
    """No job with that id for this tenant (another tenant's job is not found either)."""

    code = "job_not_found"


@dataclass(frozen=True, slots=True)
class NewRow:
    """One input line of a new job: its JSON text, or the problem that kept it from being
    a row (then it is stored failed and never called)."""

    line: int
    input: str | None
    problem: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class Job:
    """A job as the API shows it: what, whose, how far."""

    id: str
    tenant: str
    caller: str
    capability: str
    status: JobStatus
    total: int
    created_at: str
    started_at: str | None
    finished_at: str | None
    counts: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The JSON document of ``GET /v1/jobs/{id}``."""
        c = self.counts
        return {"id": self.id, "capability": self.capability, "status": self.status,
                "created_at": self.created_at, "started_at": self.started_at,
                "finished_at": self.finished_at,
                "counts": {"total": self.total, "done": c.get("done", 0),
                           "failed": c.get("failed", 0), "cancelled": c.get("cancelled", 0),
                           "running": c.get("running", 0) + c.get("answered", 0),
                           "pending": c.get("pending", 0)},
                "links": {"self": f"/v1/jobs/{self.id}",
                          "results": f"/v1/jobs/{self.id}/results"}}


@dataclass(frozen=True, slots=True)
class RowResult:
    """One line of a job's results."""

    index: int
    line: int
    state: RowState
    record_id: str | None
    result: dict[str, Any] | None

    def to_dict(self) -> dict[str, Any]:
        """The JSON line of ``GET /v1/jobs/{id}/results`` (answer or problem + record id)."""
        settled = self.state in ("done", "failed")
        shown = {"running": "running", "answered": "running"}.get(self.state, self.state)
        doc: dict[str, Any] = {"row": self.index, "line": self.line, "status": shown,
                               "record_id": self.record_id if settled else None}
        if settled and self.result:
            doc.update(self.result)
        return doc


_JOB_COLUMNS: Final = ("id, tenant, caller, capability, status, total, created_at, "
                       "started_at, finished_at")


class JobStore:
    """The ledger of bulk jobs on a shared state (sqlite or PostgreSQL); thread-safe, sync
    (the runner and routes call it through ``asyncio.to_thread``)."""

    def __init__(self, state: SharedState) -> None:
        self._db = Database(state, "jobs", JOBS_MIGRATIONS, what="the bulk job store")
        self._db.execute("SELECT 1 FROM jobs WHERE 1 = 0").fetchall()  # migrate now

    def close(self) -> None:
        """Release the connection."""
        self._db.close()

    # -- the API's side ---------------------------------------------------------------------

    def create(self, *, tenant: str, caller: str, capability: str,
               rows: Sequence[NewRow]) -> Job:
        """Store a new job and its rows (all or none); rows with a problem start failed."""
        job_id = str(uuid.uuid4())
        now = utc_now_iso()
        values = [(job_id, i, r.line, "failed" if r.problem else "pending", r.input,
                   orjson.dumps({"problem": r.problem}).decode() if r.problem else None)
                  for i, r in enumerate(rows)]
        with self._db.transaction() as db:
            db.execute(f"INSERT INTO jobs ({_JOB_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                       (job_id, tenant, caller, capability, "queued", len(rows), now, None,
                        None))
            db.executemany("INSERT INTO jobs_rows (job_id, idx, line, state, input, result) "
                           "VALUES (?, ?, ?, ?, ?, ?)", values)
        return self.get(tenant, job_id)

    def get(self, tenant: str, job_id: str) -> Job:
        """The job ``job_id`` of ``tenant`` with its counts; :class:`JobNotFound` otherwise."""
        row = self._db.execute(f"SELECT {_JOB_COLUMNS} FROM jobs WHERE id = ? AND tenant = ?",
                               (job_id, tenant)).fetchone()
        if row is None:
            raise JobNotFound(f"no job {job_id!r}",
                              hint="use the id POST /v1/jobs returned, with the same "
                                   "credential's tenant")
        counts = dict(self._db.execute(
            "SELECT state, COUNT(*) FROM jobs_rows WHERE job_id = ? GROUP BY state",
            (job_id,)).fetchall())
        job_id, tenant, caller, capability, status, total, created, started, finished = row
        return Job(str(job_id), str(tenant), str(caller), str(capability), status, int(total),
                   str(created), started, finished,
                   counts={str(k): int(v) for k, v in counts.items()})

    def recent(self, tenant: str, *, limit: int = 100) -> list[Job]:
        """The tenant's newest jobs, newest first."""
        ids = self._db.execute("SELECT id FROM jobs WHERE tenant = ? ORDER BY created_at DESC "
                               "LIMIT ?", (tenant, limit)).fetchall()
        return [self.get(tenant, job_id) for (job_id,) in ids]

    def results(self, tenant: str, job_id: str, *, after: int = -1,
                limit: int = 1000) -> list[RowResult]:
        """Rows with index > ``after`` in input order, at most ``limit``."""
        self.get(tenant, job_id)  # 404 for another tenant's job
        rows = self._db.execute(
            "SELECT idx, line, state, record_id, result FROM jobs_rows WHERE job_id = ? "
            "AND idx > ? ORDER BY idx LIMIT ?", (job_id, after, limit)).fetchall()
        return [RowResult(int(i), int(n), s, rid, orjson.loads(res) if res else None)
                for i, n, s, rid, res in rows]

    def cancel(self, tenant: str, job_id: str) -> Job:
        """Stop a job: rows not started are cancelled (they get no call and no record); rows
        running finish. A finished job is left as it is."""
        with self._db.transaction() as db:
            self.get(tenant, job_id)
            db.execute("UPDATE jobs SET status = 'cancelled' WHERE id = ? AND "
                       "finished_at IS NULL", (job_id,))
            db.execute("UPDATE jobs_rows SET state = 'cancelled' WHERE job_id = ? AND "
                       "state = 'pending'", (job_id,))
            self._finish_if_idle(job_id)
        return self.get(tenant, job_id)

    # -- the runner's side ------------------------------------------------------------------

    def claim(self, owner: str, lease_s: float) -> tuple[str, str, str, str] | None:
        """Take the lease of the oldest unfinished job nobody holds (or whose holder let it
        expire); returns ``(job_id, tenant, caller, capability)``."""
        now = time.time()
        candidates = self._db.execute(
            "SELECT id, tenant, caller, capability FROM jobs WHERE finished_at IS NULL AND "
            "(lease_until IS NULL OR lease_until < ?) ORDER BY created_at LIMIT 8",
            (now,)).fetchall()
        for job_id, tenant, caller, capability in candidates:
            taken = self._db.execute(
                "UPDATE jobs SET lease_owner = ?, lease_until = ?, started_at = "
                "COALESCE(started_at, ?), status = CASE WHEN status = 'queued' THEN "
                "'running' ELSE status END WHERE id = ? AND finished_at IS NULL AND "
                "(lease_until IS NULL OR lease_until < ?)",
                (owner, now + lease_s, utc_now_iso(), job_id, now)).rowcount
            if taken == 1:
                return str(job_id), str(tenant), str(caller), str(capability)
        return None

    def renew(self, job_id: str, owner: str, lease_s: float) -> bool:
        """Extend the lease; False when this owner no longer holds it."""
        return bool(self._db.execute(
            "UPDATE jobs SET lease_until = ? WHERE id = ? AND lease_owner = ?",
            (time.time() + lease_s, job_id, owner)).rowcount == 1)

    def release(self, job_id: str, owner: str) -> None:
        """Give the lease up (another runner may take the job at once)."""
        self._db.execute("UPDATE jobs SET lease_owner = NULL, lease_until = NULL "
                         "WHERE id = ? AND lease_owner = ?", (job_id, owner))

    def in_flight(self, job_id: str) -> list[tuple[int, str, str | None]]:
        """Rows a runner started and did not settle: ``(index, state, record_id)``."""
        rows = self._db.execute(
            "SELECT idx, state, record_id FROM jobs_rows WHERE job_id = ? AND state IN "
            "('running', 'answered') ORDER BY idx", (job_id,)).fetchall()
        return [(int(i), str(s), rid) for i, s, rid in rows]

    def pending(self, job_id: str, *, limit: int) -> list[tuple[int, str]]:
        """The next rows to run, in input order: ``(index, input JSON text)``."""
        rows = self._db.execute(
            "SELECT idx, input FROM jobs_rows WHERE job_id = ? AND state = 'pending' "
            "ORDER BY idx LIMIT ?", (job_id, limit)).fetchall()
        return [(int(i), str(text)) for i, text in rows]

    def start_row(self, job_id: str, index: int, owner: str) -> str | None:
        """Mark a pending row running for ``owner`` (before its call); returns its record id,
        or None when it is no longer pending (cancelled) or the lease was lost."""
        record_id = row_record_id(job_id, index)
        started = self._db.execute(
            "UPDATE jobs_rows SET state = 'running', owner = ?, record_id = ? WHERE "
            "job_id = ? AND idx = ? AND state = 'pending' AND EXISTS (SELECT 1 FROM jobs "
            "WHERE id = ? AND lease_owner = ?)",
            (owner, record_id, job_id, index, job_id, owner)).rowcount
        return record_id if started == 1 else None

    def answer_row(self, job_id: str, index: int, owner: str, *, final: RowState,
                   result: dict[str, Any]) -> None:
        """Write the row's answer (or problem) ahead of its record."""
        self._db.execute(
            "UPDATE jobs_rows SET state = 'answered', final = ?, result = ? WHERE "
            "job_id = ? AND idx = ? AND owner = ? AND state IN ('running', 'answered')",
            (final, orjson.dumps(result).decode(), job_id, index, owner))

    def settle_row(self, job_id: str, index: int, owner: str | None) -> None:
        """The row's record is in the audit log: it ends as the answer said."""
        query = ("UPDATE jobs_rows SET state = final WHERE job_id = ? AND idx = ? AND "
                 "state = 'answered'")
        if owner is None:  # reconciling a dead runner's row
            self._db.execute(query, (job_id, index))
        else:
            self._db.execute(query + " AND owner = ?", (job_id, index, owner))

    def fail_row(self, job_id: str, index: int, problem: dict[str, Any]) -> None:
        """End an in-flight row as failed with ``problem`` (its record exists, its answer
        was lost)."""
        self._db.execute(
            "UPDATE jobs_rows SET state = 'failed', result = ? WHERE job_id = ? AND idx = ? "
            "AND state IN ('running', 'answered')",
            (orjson.dumps({"problem": problem}).decode(), job_id, index))

    def reset_row(self, job_id: str, index: int) -> None:
        """Put an in-flight row with no record back to pending (it runs again, with the same
        record id)."""
        self._db.execute(
            "UPDATE jobs_rows SET state = 'pending', owner = NULL, final = NULL, "
            "result = NULL WHERE job_id = ? AND idx = ? AND state IN ('running', 'answered')",
            (job_id, index))

    def finish_if_idle(self, job_id: str) -> bool:
        """Mark the job finished when no row is pending or in flight; True if it is."""
        with self._db.transaction():
            return self._finish_if_idle(job_id)

    def _finish_if_idle(self, job_id: str) -> bool:
        busy = self._db.execute(
            "SELECT COUNT(*) FROM jobs_rows WHERE job_id = ? AND state IN "
            "('pending', 'running', 'answered')", (job_id,))[0][0]
        if busy:
            return False
        self._db.execute(
            "UPDATE jobs SET finished_at = COALESCE(finished_at, ?), lease_owner = NULL, "
            "lease_until = NULL, status = CASE WHEN status = 'cancelled' THEN 'cancelled' "
            "ELSE 'completed' END WHERE id = ?", (utc_now_iso(), job_id))
        return True
