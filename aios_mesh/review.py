"""The human-review queue: durable (on the shared-state seam: a sqlite file embedded,
PostgreSQL for replicas), so an escalated call survives a restart.

Calls land here when their confidence is below the capability's ``review_threshold``, when a
policy obligation says ``require_human``, or when the fallback chain ends in ``human``. A
reviewer approves (optionally correcting the output) or rejects; each decision is kept,
and kept again as a :class:`Label` (approved, corrected or rejected) for quality tracking.
"""

from __future__ import annotations

import builtins
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
from aios_mesh.errors import ConfigError, InvalidInput, NotFound
from aios_mesh.pipeline.validate import digest, validation_message
from aios_mesh.ports.audit import AuditLog
from aios_mesh.ports.events import Event
from aios_mesh.state import Database, Migration, SharedState, SqliteState

__all__ = ["MIGRATIONS", "POSTGRES_MIGRATIONS", "Label", "ReviewItem", "ReviewQueue",
           "ReviewStatus", "Verdict", "resolve_review"]

ReviewStatus = Literal["pending", "approved", "rejected"]

_V1_TABLE = """CREATE TABLE IF NOT EXISTS review (
          id TEXT PRIMARY KEY, record_id TEXT NOT NULL, tenant TEXT NOT NULL,
          capability TEXT NOT NULL, reason TEXT NOT NULL, status TEXT NOT NULL,
          created_at TEXT NOT NULL, payload BLOB NOT NULL, proposed BLOB,
          decided_by TEXT, decided_at TEXT, final_output BLOB, note TEXT, resume BLOB
        )"""
_V1_INDEX = "CREATE INDEX IF NOT EXISTS review_status ON review(status, created_at)"
# Version 2 is written in the SQL both backends share (TEXT, DOUBLE PRECISION).
_V2 = Migration(2, (
    "ALTER TABLE review ADD COLUMN confidence DOUBLE PRECISION",
    "CREATE INDEX IF NOT EXISTS review_tenant ON review(tenant, status, created_at)",
    """CREATE TABLE IF NOT EXISTS review_labels (
          id TEXT PRIMARY KEY, review_id TEXT NOT NULL, record_id TEXT NOT NULL,
          tenant TEXT NOT NULL, capability TEXT NOT NULL, verdict TEXT NOT NULL,
          proposed TEXT, output TEXT, labelled_by TEXT NOT NULL, created_at TEXT NOT NULL
        )""",
    "CREATE INDEX IF NOT EXISTS review_labels_cap ON review_labels(tenant, capability, "
    "created_at)",
))

# Version 3: notes others attach to an item for the reviewer (an LLM's review brief).
_V3 = Migration(3, ("ALTER TABLE review ADD COLUMN notes TEXT",))

#: The review store's schema, as migrations of the shared-state seam (version 1 is the table
#: as it first shipped, so a review.db made before the seam existed migrates cleanly;
#: version 2 adds the model's confidence and the ``review_labels`` table; version 3 the
#: notes attached for the reviewer).
MIGRATIONS: tuple[Migration, ...] = (Migration(1, (_V1_TABLE, _V1_INDEX)), _V2, _V3)

#: The same schema on PostgreSQL (the blobs are ``BYTEA``; a released migration never
#: changes, so version 1 keeps its sqlite text above and gets its own text here).
POSTGRES_MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, (_V1_TABLE.replace(" BLOB", " BYTEA"), _V1_INDEX)), _V2, _V3)

#: The schema of a store per SQL dialect of the shared state (``state.dialect``).
_SCHEMAS: Mapping[str, tuple[Migration, ...]] = {"sqlite": MIGRATIONS,
                                                 "postgresql": POSTGRES_MIGRATIONS}

#: How a human labelled a proposed output: kept as it was, replaced, or thrown out.
Verdict = Literal["approved", "corrected", "rejected"]


@dataclass(frozen=True, slots=True)
class ReviewItem:
    """One parked call: its (redacted) input, the model's proposal and why a human sees it
    (``reason``: a policy obligation, a confidence below the threshold, or a fallback chain
    that ended in human review); after the decision, who decided what."""

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
    confidence: float | None = None
    #: what others attached for the reviewer, by name (``{"brief": {...}}``: an LLM's draft)
    notes: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class Label:
    """A human's verdict on a proposed output, kept for quality tracking: ``output`` is
    what the answer should have been (the proposal when approved, the correction when
    corrected, ``None`` when rejected)."""

    id: str
    review_id: str
    record_id: str
    tenant: str
    capability: str
    verdict: Verdict
    proposed: dict[str, Any] | None
    output: dict[str, Any] | None
    labelled_by: str
    created_at: str

    @property
    def proposal_kept(self) -> bool:
        """Whether the reviewer kept the model's proposal: approved as it was, or
        "corrected" to exactly the proposal (a correction that changes nothing is an
        approval)."""
        return self.verdict == "approved" or (self.verdict == "corrected"
                                              and self.output == self.proposed)


def _load(blob: bytes | str | None) -> Any:
    return None if blob is None else orjson.loads(blob)


def _versions(capability: str) -> list[Any]:
    # ``name`` or any ``name@version``; a prefix compare, not LIKE, which sqlite runs
    # case-insensitively and which would need its wildcards escaped
    return [capability, len(capability) + 1, f"{capability}@"]


_COLUMNS = ("id, record_id, tenant, capability, reason, status, created_at, payload, "
            "proposed, decided_by, decided_at, final_output, note, resume, confidence, notes")
_LABEL_COLUMNS = ("id, review_id, record_id, tenant, capability, verdict, proposed, output, "
                  "labelled_by, created_at")
_CAPABILITY = " AND (capability = ? OR substr(capability, 1, ?) = ?)"


class ReviewQueue:
    """A durable queue of calls awaiting a human decision, on the shared-state seam: a
    sqlite file by default (``path``), or the database of ``state`` (PostgreSQL), so every
    gateway replica sees one queue.

    Example::

        queue = ReviewQueue(state=PostgresState("postgresql://app@db:5432/mesh"))
        for item in queue.list(tenant="acme", capability="extract_invoice"):
            print(item.id, item.reason, item.confidence)
    """

    def __init__(self, path: Path | None = None, *, state: SharedState | None = None,
                 store: str | None = None) -> None:
        if path is None and state is None:
            raise ConfigError("the review queue needs a path or a shared state",
                              hint="pass ReviewQueue(path) or ReviewQueue(state=...)")
        self.path = path
        backend: SharedState = state if state is not None else SqliteState(
            path.parent if path is not None else Path("."))
        self.dialect = backend.dialect
        name = store or (path.stem if path is not None else "review")
        self._db = Database(backend, name, _SCHEMAS, what="the review queue")
        self._db.execute("SELECT 1")  # open and migrate now: a bad state fails here

    def enqueue(self, *, record_id: str, tenant: str, capability: str, reason: str,
                payload: dict[str, Any], proposed: dict[str, Any] | None,
                resume: dict[str, Any] | None = None,
                confidence: float | None = None) -> str:
        """Park a call; ``resume`` says where the final answer is to be published."""
        item_id = uuid.uuid4().hex[:12]
        self._db.execute(
            "INSERT INTO review (id, record_id, tenant, capability, reason, status, "
            "created_at, payload, proposed, resume, confidence) "
            "VALUES (?,?,?,?,?,?,?,?,?,?,?)",
            (item_id, record_id, tenant, capability, reason, "pending",
             datetime.now(UTC).isoformat(), orjson.dumps(payload), _blob(proposed),
             _blob(resume), confidence))
        return item_id

    @staticmethod
    def _row(row: Sequence[Any]) -> ReviewItem:
        return ReviewItem(row[0], row[1], row[2], row[3], row[4], row[5], row[6],
                          _load(row[7]), _load(row[8]), row[9], row[10], _load(row[11]),
                          row[12], _load(row[13]),
                          None if row[14] is None else float(row[14]), _load(row[15]))

    def get(self, item_id: str) -> ReviewItem:
        rows = self._db.execute(f"SELECT {_COLUMNS} FROM review WHERE id = ?", (item_id,))
        row = rows[0] if rows else None
        if row is None:
            raise NotFound(f"no review item {item_id!r}",
                           hint="`aios-mesh review list` shows the open ones")
        return self._row(row)

    def list(self, status: ReviewStatus | None = "pending", tenant: str | None = None,
             capability: str | None = None, *, limit: int | None = None
             ) -> builtins.list[ReviewItem]:
        """Items, oldest first; ``capability`` matches ``name`` or ``name@version``."""
        sql, args = f"SELECT {_COLUMNS} FROM review WHERE 1=1", builtins.list[Any]()
        if status is not None:
            sql += " AND status = ?"
            args.append(str(status))
        if tenant is not None:
            sql += " AND tenant = ?"
            args.append(tenant)
        if capability:
            sql += _CAPABILITY
            args += _versions(capability)
        sql += " ORDER BY created_at, id"
        if limit is not None:
            sql += " LIMIT ?"
            args.append(int(limit))
        return [self._row(r) for r in self._db.execute(sql, args)]

    def annotate(self, item_id: str, name: str, note: dict[str, Any]) -> ReviewItem:
        """Attach ``note`` under ``name`` for the reviewer (the console shows it; a second
        note under the same name replaces the first). Notes advise: they never decide."""
        with self._db.transaction() as db:
            rows = db.execute("SELECT notes FROM review WHERE id = ?", (item_id,))
            if not rows:
                raise NotFound(f"no review item {item_id!r}",
                               hint="`aios-mesh review list` shows the open ones")
            notes = dict(_load(rows[0][0]) or {})
            notes[name] = note
            db.execute("UPDATE review SET notes = ? WHERE id = ?", (_text(notes), item_id))
        return self.get(item_id)

    def resolve(self, item_id: str, *, approve: bool, reviewer: str,
                output: dict[str, Any] | None = None, note: str = "") -> ReviewItem:
        """Record the human decision; approving without ``output`` accepts the proposal.

        The decision and its :class:`Label` are written in one transaction, and only while
        the item is still pending: of two reviewers (or replicas) deciding at once, one
        wins and the other gets ``InvalidInput``."""
        item = self.get(item_id)
        if item.status != "pending":
            raise InvalidInput(f"review item {item_id} is already {item.status}",
                               hint="reload the queue; someone decided it first")
        final = (output if output is not None else item.proposed) if approve else None
        verdict: Verdict = ("rejected" if not approve else
                            "corrected" if output is not None and output != item.proposed
                            else "approved")
        now = datetime.now(UTC).isoformat()
        with self._db.transaction() as db:
            changed = db.execute(
                "UPDATE review SET status=?, decided_by=?, decided_at=?, final_output=?, "
                "note=? WHERE id=? AND status='pending'",
                ("approved" if approve else "rejected", reviewer, now, _blob(final),
                 note, item_id)).rowcount
            if changed != 1:
                raise InvalidInput(f"review item {item_id} was decided meanwhile",
                                   hint="reload the queue; someone decided it first")
            db.execute(f"INSERT INTO review_labels ({_LABEL_COLUMNS}) "
                       "VALUES (?,?,?,?,?,?,?,?,?,?)",
                       (uuid.uuid4().hex[:12], item.id, item.record_id, item.tenant,
                        item.capability, verdict, _text(item.proposed), _text(final),
                        reviewer, now))
        return self.get(item_id)

    def labels(self, *, tenant: str | None = None, capability: str | None = None,
               since: str | None = None) -> builtins.list[Label]:
        """The human verdicts, oldest first (what quality tracking reads), by tenant,
        capability (``name`` or ``name@version``) and from ``since`` (an ISO time)."""
        sql, args = f"SELECT {_LABEL_COLUMNS} FROM review_labels WHERE 1=1", builtins.list[Any]()
        if tenant is not None:
            sql += " AND tenant = ?"
            args.append(tenant)
        if capability:
            sql += _CAPABILITY
            args += _versions(capability)
        if since is not None:
            sql += " AND created_at >= ?"
            args.append(since)
        rows = self._db.execute(sql + " ORDER BY created_at, id", args)
        return [Label(r[0], r[1], r[2], r[3], r[4], r[5], _load(r[6]), _load(r[7]), r[8],
                      r[9]) for r in rows]

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
        self._db.close()


def _text(value: Any) -> str | None:
    return None if value is None else orjson.dumps(value).decode()


def _blob(value: Any) -> bytes | None:
    return None if value is None else orjson.dumps(value)


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
        tool = (item.resume or {}).get("tool")
        if tool:  # an agent's tool call waiting for approval: a correction is its input
            model = catalog.get(tool).input
        else:
            # the version that proposed it, or the one now serving its major (same promise)
            name, _, version = item.capability.partition("@")
            model = catalog.get(f"{name}@{version.split('.', 1)[0]}" if version
                                else name).output
        try:
            output = model.model_validate(dict(output)).model_dump(mode="json")
        except ValidationError as exc:
            raise InvalidInput(f"the corrected output does not match "
                               f"{model.__name__}: {validation_message(exc)}"
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
