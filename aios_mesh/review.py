"""The human-review queue: durable (sqlite), so an escalated call survives a restart.

Calls land here when their confidence is below the capability's ``review_threshold``, when a
policy obligation says ``require_human``, or when the fallback chain ends in ``human``. A
reviewer approves (optionally correcting the output) or rejects; each decision is kept.
"""

from __future__ import annotations

import builtins
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import orjson
from pydantic import ValidationError

from aios_mesh.catalog import Catalog
from aios_mesh.errors import InvalidInput, NotFound
from aios_mesh.pipeline.validate import digest, validation_message
from aios_mesh.ports.audit import AuditLog
from aios_mesh.ports.events import Event
from aios_mesh.state import Migration, SqliteState

__all__ = ["ReviewItem", "ReviewQueue", "ReviewStatus", "resolve_review"]

ReviewStatus = Literal["pending", "approved", "rejected"]

#: The review store's schema, as migrations of the shared-state seam (version 1 is the table
#: as it first shipped, so a review.db made before the seam existed migrates cleanly).
MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, (
        """CREATE TABLE IF NOT EXISTS review (
          id TEXT PRIMARY KEY, record_id TEXT NOT NULL, tenant TEXT NOT NULL,
          capability TEXT NOT NULL, reason TEXT NOT NULL, status TEXT NOT NULL,
          created_at TEXT NOT NULL, payload BLOB NOT NULL, proposed BLOB,
          decided_by TEXT, decided_at TEXT, final_output BLOB, note TEXT, resume BLOB
        )""",
        "CREATE INDEX IF NOT EXISTS review_status ON review(status, created_at)",
    )),
)


@dataclass(frozen=True, slots=True)
class ReviewItem:
    id: str
    record_id: str
    tenant: str
    capability: str
    reason: str
    status: ReviewStatus
    created_at: str
    payload: dict[str, Any]
    proposed: dict[str, Any] | None
    decided_by: str | None = None
    decided_at: str | None = None
    final_output: dict[str, Any] | None = None
    note: str | None = None
    resume: dict[str, Any] | None = None


def _load(blob: bytes | None) -> Any:
    return None if blob is None else orjson.loads(blob)


class ReviewQueue:
    """A durable queue of calls awaiting a human decision."""

    def __init__(self, path: Path, *, state: SqliteState | None = None) -> None:
        self.path = path
        self._lock = threading.Lock()
        store = state or SqliteState(path.parent)
        self._db = store.connect(path.stem, MIGRATIONS)

    def enqueue(self, *, record_id: str, tenant: str, capability: str, reason: str,
                payload: dict[str, Any], proposed: dict[str, Any] | None,
                resume: dict[str, Any] | None = None) -> str:
        """Park a call; ``resume`` says where the final answer is to be published."""
        item_id = uuid.uuid4().hex[:12]
        with self._lock:
            self._db.execute(
                "INSERT INTO review (id, record_id, tenant, capability, reason, status, "
                "created_at, payload, proposed, resume) VALUES (?,?,?,?,?,?,?,?,?,?)",
                (item_id, record_id, tenant, capability, reason, "pending",
                 datetime.now(UTC).isoformat(), orjson.dumps(payload),
                 None if proposed is None else orjson.dumps(proposed),
                 None if resume is None else orjson.dumps(resume)))
        return item_id

    def _row(self, row: tuple[Any, ...]) -> ReviewItem:
        return ReviewItem(row[0], row[1], row[2], row[3], row[4], row[5], row[6],
                          _load(row[7]), _load(row[8]), row[9], row[10], _load(row[11]),
                          row[12], _load(row[13]))

    def get(self, item_id: str) -> ReviewItem:
        with self._lock:
            row = self._db.execute("SELECT * FROM review WHERE id = ?", (item_id,)).fetchone()
        if row is None:
            raise NotFound(f"no review item {item_id!r}",
                           hint="`aios-mesh review list` shows the open ones")
        return self._row(row)

    def list(self, status: ReviewStatus | None = "pending", tenant: str | None = None
             ) -> list[ReviewItem]:
        sql, args = "SELECT * FROM review WHERE 1=1", list[str]()
        if status is not None:
            sql += " AND status = ?"
            args.append(str(status))
        if tenant is not None:
            sql += " AND tenant = ?"
            args.append(tenant)
        with self._lock:
            rows = self._db.execute(sql + " ORDER BY created_at, id", args).fetchall()
        return [self._row(r) for r in rows]

    def resolve(self, item_id: str, *, approve: bool, reviewer: str,
                output: dict[str, Any] | None = None, note: str = "") -> ReviewItem:
        """Record the human decision; approving without ``output`` accepts the proposal."""
        item = self.get(item_id)
        if item.status != "pending":
            raise InvalidInput(f"review item {item_id} is already {item.status}")
        final = (output if output is not None else item.proposed) if approve else None
        with self._lock:
            self._db.execute(
                "UPDATE review SET status=?, decided_by=?, decided_at=?, final_output=?, note=? "
                "WHERE id=? AND status='pending'",
                ("approved" if approve else "rejected", reviewer, datetime.now(UTC).isoformat(),
                 None if final is None else orjson.dumps(final), note, item_id))
        return self.get(item_id)

    def wait(self, item_ids: Sequence[str], *, timeout: float,
             poll_s: float = 0.25) -> builtins.list[ReviewItem]:
        """Block until every item in ``item_ids`` is decided, or ``timeout`` seconds pass;
        returns the items as they stand then (in the order given). A reviewer in another
        process (``aios-mesh review approve``) is seen on the next poll: the queue is the
        shared sqlite file, so this is how a waiting workflow step resumes.

        Example::

            items = queue.wait([result.review_id], timeout=3600)
            if items[0].status == "approved":
                answer = items[0].final_output
        """
        deadline = time.monotonic() + timeout
        while True:
            items = [self.get(item_id) for item_id in item_ids]
            left = deadline - time.monotonic()
            if all(item.status != "pending" for item in items) or left <= 0:
                return items
            time.sleep(min(poll_s, left))

    def close(self) -> None:
        with self._lock:
            self._db.close()


async def resolve_review(queue: ReviewQueue, catalog: Catalog, audit: AuditLog,
                         publish: Callable[[str, Event], Awaitable[None]], review_id: str, *,
                         approve: bool, reviewer: str,
                         output: Mapping[str, Any] | None = None,
                         note: str = "") -> ReviewItem:
    """Record a human decision and resume what waits on it.

    The decision goes into the review queue and the audit log (``kind:
    "review_decision"``). If the call came from an event route, the final answer (or the
    rejection) is published to that route's result topic through ``publish`` (the mesh's
    durable outbox), so a bus outage delays it but never loses it. An approved ``output`` is
    validated against the capability's output model first.
    """
    item = queue.get(review_id)
    if output is not None:
        spec = catalog.get(item.capability.split("@", 1)[0])
        try:
            output = spec.output.model_validate(dict(output)).model_dump(mode="json")
        except ValidationError as exc:
            raise InvalidInput(f"the corrected output does not match "
                               f"{spec.output.__name__}: {validation_message(exc)}"
                               ) from None
    item = queue.resolve(review_id, approve=approve, reviewer=reviewer,
                         output=dict(output) if output is not None else None, note=note)
    await audit.append({"kind": "review_decision", "review_id": item.id,
                        "record_id": item.record_id, "capability": item.capability,
                        "tenant": item.tenant, "decision": item.status,
                        "reviewer": reviewer, "at": item.decided_at,
                        "output_sha256": digest(item.final_output)
                        if item.final_output is not None else None})
    if item.resume and item.resume.get("topic"):
        cap = item.resume.get("capability", item.capability)
        kind = "result" if approve else "rejected"
        event = Event(type=f"{cap}.{kind}", source="aios-mesh/review", tenant=item.tenant,
                      key=item.resume.get("key"),
                      idempotency_key=f"{item.resume.get('idempotency_key', item.id)}:{cap}",
                      data={"output": item.final_output, "record_id": item.record_id,
                            "review_id": item.id, "reviewed_by": reviewer},
                      headers={"causationid": str(item.resume.get("causation_id", ""))})
        await publish(item.resume["topic"], event)
    return item
