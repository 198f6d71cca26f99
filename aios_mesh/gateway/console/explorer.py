"""The decision explorer: search decision records in the audit log by tenant, capability,
outcome and time, and follow one record's lineage parents.

It reads the audit port page by page (``AuditLog.read``), so a search costs one pass over the
log: fine for a console, not for analytics (ship the records to a warehouse for that; the
relay's decision events carry them). Entries that are not call records (a review decision)
are skipped.
"""

from __future__ import annotations

from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from aios_mesh.errors import InvalidInput
from aios_mesh.ports.audit import AuditLog
from aios_mesh.record import Outcome

__all__ = ["RecordQuery", "find_record", "lineage", "search_records"]

_PAGE: Final = 1000
#: How far up a chain of parents the explorer follows (a cycle cannot loop it).
MAX_DEPTH: Final = 32


def _when(value: str | None, what: str) -> str | None:
    if not value:
        return None
    try:
        datetime.fromisoformat(value)
    except ValueError:
        raise InvalidInput(f"{what}={value!r} is not an ISO date or time",
                           hint="write e.g. 2026-12-07 or 2026-12-07T10:30") from None
    return value


@dataclass(frozen=True, slots=True)
class RecordQuery:
    """What to look for; empty fields match everything. ``since``/``until`` are ISO times
    compared with the record's ``started_at`` (UTC), ``until`` exclusive."""

    tenant: str | None = None
    capability: str | None = None
    outcome: str | None = None
    since: str | None = None
    until: str | None = None
    limit: int = 100

    def __post_init__(self) -> None:
        if self.outcome and self.outcome not in {str(o) for o in Outcome}:
            raise InvalidInput(f"unknown outcome {self.outcome!r}",
                               hint=f"use one of {', '.join(str(o) for o in Outcome)}")
        _when(self.since, "since")
        _when(self.until, "until")
        if not 1 <= self.limit <= 1000:
            raise InvalidInput(f"limit={self.limit} is not from 1 to 1000",
                               hint="use e.g. limit=100")

    def matches(self, record: dict[str, Any]) -> bool:
        cap = record.get("capability")
        if not isinstance(cap, dict) or "record_id" not in record:
            return False  # not a call record
        started = str(record.get("started_at", ""))
        return ((not self.tenant or record.get("tenant") == self.tenant)
                and (not self.capability or self.capability in
                     (cap.get("name"), f"{cap.get('name')}@{cap.get('version')}"))
                and (not self.outcome or record.get("outcome") == self.outcome)
                and (not self.since or started >= self.since)
                and (not self.until or started < self.until))


async def _records(audit: AuditLog) -> AsyncIterator[dict[str, Any]]:
    since = 0
    while True:
        entries = await audit.read(since, _PAGE)
        for entry in entries:
            yield entry.record
        if len(entries) < _PAGE:
            return
        since = entries[-1].seq


async def search_records(audit: AuditLog, query: RecordQuery) -> list[dict[str, Any]]:
    """The newest ``query.limit`` records that match, newest first."""
    found: deque[dict[str, Any]] = deque(maxlen=query.limit)
    async for record in _records(audit):
        if query.matches(record):
            found.append(record)
    return list(reversed(found))


async def find_record(audit: AuditLog, record_id: str) -> dict[str, Any] | None:
    """The call record with ``record_id``, or ``None``."""
    async for record in _records(audit):
        if record.get("record_id") == record_id and "capability" in record:
            return record
    return None


async def lineage(audit: AuditLog, record: dict[str, Any]) -> list[dict[str, Any]]:
    """The record's lineage parents, nearest first: the call that made it (its
    ``parent.run_id``), that call's parent, and so on up to the root. A parent missing from
    the log ends the chain."""
    chain: list[dict[str, Any]] = []
    seen = {record.get("record_id")}
    current = record
    while len(chain) < MAX_DEPTH:
        parent = current.get("parent") or {}
        run_id = parent.get("run_id") if isinstance(parent, dict) else None
        if not run_id or run_id in seen:
            break
        found = await find_record(audit, str(run_id))
        if found is None:
            break
        chain.append(found)
        seen.add(run_id)
        current = found
    return chain
