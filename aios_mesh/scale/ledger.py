"""The per-row ledger of a scale-out job, on the shared-state seam (sqlite in the state
folder, or the PostgreSQL that ``[backends] state`` names, shared by every Ray node).

A row, named by ``(job_id, row_id)`` — the row's own stable id, not its position — moves
through::

    (absent) -> running -> answered -> done

``running`` is claimed before the row's call and fixes its record id
(:func:`row_record_id`, the same for the same job and row); ``answered`` is written by the
call's before-record hook with the result, *before* the record is appended to the audit log;
after the append the row is ``done``. A re-executed Ray block finds its rows here:
``done`` rows are answered from the ledger without a call; rows left ``running`` or
``answered`` by a dead worker are decided by the audit log (see
:func:`aios_mesh.scale.rows.map_rows`), so a row never gets a second record.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal

import orjson

from aios_mesh.errors import ConfigError
from aios_mesh.record import utc_now_iso
from aios_mesh.state import Database, Migration, SharedState

__all__ = ["SCALE_MIGRATIONS", "JobVersionChanged", "LedgerRow", "RowLedger", "row_record_id"]

LedgerState = Literal["running", "answered", "done"]

SCALE_MIGRATIONS: Final = (
    Migration(1, (
        """CREATE TABLE scale_rows (
            job_id TEXT NOT NULL,
            row_id TEXT NOT NULL,
            state TEXT NOT NULL,
            record_id TEXT NOT NULL,
            result TEXT,
            PRIMARY KEY (job_id, row_id))""",
    )),
    Migration(2, (
        """CREATE TABLE scale_jobs (
            job_id TEXT PRIMARY KEY,
            capability TEXT NOT NULL,
            created_at TEXT NOT NULL,
            changes TEXT NOT NULL)""",
    )),
)

_RECORD_NS: Final = uuid.UUID("2b4d5c1e-8f53-5a0e-9c61-0d7e4a3b9f21")


def row_record_id(job_id: str, row_id: str) -> str:
    """The decision record id of a row: uuid5 of the job and the row's own id."""
    return str(uuid.uuid5(_RECORD_NS, f"{job_id}\x00{row_id}"))


class JobVersionChanged(ConfigError):
    """A job resumed with another capability version than it started with."""

    code = "scale_job_version_changed"


@dataclass(frozen=True, slots=True)
class LedgerRow:
    """What the ledger holds for one row."""

    row_id: str
    state: LedgerState
    record_id: str
    result: dict[str, Any] | None


class RowLedger:
    """Rows of scale-out jobs; thread-safe and sync (call it via ``asyncio.to_thread``)."""

    def __init__(self, state: SharedState) -> None:
        self._db = Database(state, "scale", SCALE_MIGRATIONS, what="the scale-out row ledger")
        self._db.execute("SELECT 1 FROM scale_rows WHERE 1 = 0").fetchall()  # migrate now

    def close(self) -> None:
        """Release the connection."""
        self._db.close()

    def begin(self, job_id: str, capability: str, *, force: bool = False) -> list[str]:
        """Start or resume ``job_id`` with ``capability`` (``name@version``). A resumed job
        whose capability version changed is refused with :class:`JobVersionChanged` unless
        ``force``, which records the change on the job; returns the job's changes
        (``"<when> <old> -> <new>"``)."""
        self._db.execute("INSERT INTO scale_jobs (job_id, capability, created_at, changes) "
                         "VALUES (?, ?, ?, '[]') ON CONFLICT (job_id) DO NOTHING",
                         (job_id, capability, utc_now_iso()))
        (old, changes), = self._db.execute(
            "SELECT capability, changes FROM scale_jobs WHERE job_id = ?", (job_id,)).fetchall()
        done: list[str] = orjson.loads(changes)
        if old == capability:
            return done
        if not force:
            raise JobVersionChanged(
                f"job {job_id} started with {old} and is resumed with {capability}: its rows "
                "would be answered by two versions", hint="resume it with the version it "
                "started with, start a new job id, or force the change (it is recorded on "
                "the job)", job_id=job_id, started=old, resumed=capability)
        done.append(f"{utc_now_iso()} {old} -> {capability}")
        self._db.execute("UPDATE scale_jobs SET capability = ?, changes = ? WHERE job_id = ?",
                         (capability, orjson.dumps(done).decode(), job_id))
        return done

    def rows(self, job_id: str, row_ids: Sequence[str]) -> dict[str, LedgerRow]:
        """The ledger entries among ``row_ids``, by row id."""
        found: dict[str, LedgerRow] = {}
        for start in range(0, len(row_ids), 500):
            part = list(row_ids[start:start + 500])
            marks = ", ".join("?" for _ in part)
            for row_id, state, record_id, result in self._db.execute(
                    f"SELECT row_id, state, record_id, result FROM scale_rows WHERE "
                    f"job_id = ? AND row_id IN ({marks})", (job_id, *part)).fetchall():
                found[str(row_id)] = LedgerRow(str(row_id), state, str(record_id),
                                               orjson.loads(result) if result else None)
        return found

    def claim(self, job_id: str, row_id: str) -> str | None:
        """Mark a row ``running`` before its call; its record id, or None when the row is
        already in the ledger (another execution has it)."""
        record_id = row_record_id(job_id, row_id)
        claimed = self._db.execute(
            "INSERT INTO scale_rows (job_id, row_id, state, record_id) VALUES (?, ?, "
            "'running', ?) ON CONFLICT (job_id, row_id) DO NOTHING",
            (job_id, row_id, record_id)).rowcount
        return record_id if claimed == 1 else None

    def answer(self, job_id: str, row_id: str, result: dict[str, Any]) -> None:
        """Write the row's result ahead of its record (the before-record hook)."""
        self._db.execute(
            "UPDATE scale_rows SET state = 'answered', result = ? WHERE job_id = ? AND "
            "row_id = ? AND state IN ('running', 'answered')",
            (orjson.dumps(result).decode(), job_id, row_id))

    def settle(self, job_id: str, row_id: str, result: dict[str, Any] | None = None) -> None:
        """The row's record is in the audit log: the row is ``done`` (with ``result`` when
        the answer written ahead was lost)."""
        if result is None:
            self._db.execute("UPDATE scale_rows SET state = 'done' WHERE job_id = ? AND "
                             "row_id = ? AND state = 'answered'", (job_id, row_id))
        else:
            self._db.execute("UPDATE scale_rows SET state = 'done', result = ? WHERE "
                             "job_id = ? AND row_id = ?",
                             (orjson.dumps(result).decode(), job_id, row_id))

    def reset(self, job_id: str, row_id: str) -> None:
        """Forget an in-flight row that has no record (it runs again, same record id)."""
        self._db.execute("DELETE FROM scale_rows WHERE job_id = ? AND row_id = ? AND "
                         "state IN ('running', 'answered')", (job_id, row_id))

    def count(self, job_id: str) -> dict[str, int]:
        """Rows of the job by state (progress)."""
        return {str(s): int(n) for s, n in self._db.execute(
            "SELECT state, COUNT(*) FROM scale_rows WHERE job_id = ? GROUP BY state",
            (job_id,)).fetchall()}
