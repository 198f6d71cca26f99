"""Durable, tenant-scoped conversation history on the shared-state seam.

A *session* belongs to one tenant; its *turns* are numbered 1, 2, 3, ... per session (the
number is taken under the session row's lock, and ``(tenant, session_id, seq)`` is the
primary key, so appends from several processes or replicas keep one order and lose
nothing). The embedded default is a sqlite file in the state folder; ``[backends] state =
"postgresql://..."`` puts every replica's sessions in one database.

    store = ConversationStore.for_mesh(mesh)
    session = store.create("acme", metadata={"channel": "chat"}, ttl_s=86_400)
    store.append(session.id, tenant="acme", role="user", content="Where is A-17?")
    result = mesh.invoke("support-chat", {"messages": ...}, tenant="acme")
    store.append_result(session.id, result, tenant="acme")   # the answer + its record id
    store.history(session.id, tenant="acme")

**Redacted text only.** What a session keeps is what the pipeline saw after redaction:
:meth:`ConversationStore.append` runs every turn's text through the store's
:class:`~aios_mesh.redaction.Redactor` (``for_mesh`` uses the mesh's own) before it is
written, and :meth:`ConversationStore.append_result` stores a call's answer as its
:class:`~aios_mesh.result.Result` holds it (after the output guard), with the call's
``record_id``. A handler (an agent) receives its input already redacted by the pipeline and
may append it as it is.
"""

from __future__ import annotations

import math
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Final, Literal

import orjson
from pydantic import BaseModel

from aios_mesh.errors import InvalidInput, NotFound
from aios_mesh.generation.tokens import estimate_tokens
from aios_mesh.state import Database, Migration, SharedState

if TYPE_CHECKING:
    from aios_mesh.mesh import Mesh
    from aios_mesh.redaction import Redactor
    from aios_mesh.result import Result

__all__ = ["MIGRATIONS", "ROLES", "ConversationStore", "Role", "Session", "Turn", "TurnKind",
           "message_tokens", "output_text", "summary_message"]

#: Who said a turn (the chat roles of :class:`~aios_mesh.generation.ChatMessage`).
Role = Literal["system", "user", "assistant", "tool"]
ROLES: Final = frozenset({"system", "user", "assistant", "tool"})
#: ``message``: a turn as said; ``summary``: an LLM's summary of the turns up to
#: ``covers_through`` (it stands for them in a context window).
TurnKind = Literal["message", "summary"]

#: The store's schema (the same SQL on sqlite and PostgreSQL: TEXT, INTEGER, DOUBLE
#: PRECISION). Sessions are keyed by (tenant, id): the same id under two tenants is two
#: sessions, so no id can tell one tenant anything about another's.
MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, (
        """CREATE TABLE IF NOT EXISTS conversation_sessions (
              tenant TEXT NOT NULL, id TEXT NOT NULL, created_at TEXT NOT NULL,
              metadata TEXT NOT NULL, last_seq INTEGER NOT NULL DEFAULT 0,
              ttl_s DOUBLE PRECISION, expires_at DOUBLE PRECISION,
              PRIMARY KEY (tenant, id))""",
        "CREATE INDEX IF NOT EXISTS conversation_sessions_expiry "
        "ON conversation_sessions(expires_at)",
        """CREATE TABLE IF NOT EXISTS conversation_turns (
              tenant TEXT NOT NULL, session_id TEXT NOT NULL, seq INTEGER NOT NULL,
              role TEXT NOT NULL, kind TEXT NOT NULL, content TEXT NOT NULL,
              tokens INTEGER NOT NULL, record_id TEXT, covers_through INTEGER,
              created_at TEXT NOT NULL,
              PRIMARY KEY (tenant, session_id, seq))""",
    )),
)

_SESSION_COLUMNS = "tenant, id, created_at, metadata, last_seq, ttl_s, expires_at"
_TURN_COLUMNS = ("session_id, seq, role, kind, content, tokens, record_id, covers_through, "
                 "created_at")
_MAX_ID = 128


@dataclass(frozen=True, slots=True)
class Session:
    """One conversation of one tenant.

    ``turns`` is how many turns it holds (the last sequence number); ``expires_at`` (epoch
    seconds) moves ``ttl_s`` ahead on every append, ``None`` for a session that never
    expires.
    """

    id: str
    tenant: str
    created_at: str
    metadata: dict[str, Any] = field(default_factory=dict)
    turns: int = 0
    ttl_s: float | None = None
    expires_at: float | None = None


@dataclass(frozen=True, slots=True)
class Turn:
    """One turn of a session, as stored.

    Args:
        session_id: the session.
        seq: its place in the session (1, 2, 3, ... with no gap).
        role: who said it.
        content: the text (redacted before it was stored).
        tokens: the estimate of what it costs in a prompt (:func:`message_tokens`).
        record_id: the decision record of the call that produced it (an LLM answer, a
            summary), or of the call it was the input of; ``None`` when no call made it.
        kind: ``message`` or ``summary``.
        covers_through: for a summary, the last ``seq`` it stands for.
        created_at: when it was stored (ISO 8601, UTC).
    """

    session_id: str
    seq: int
    role: Role
    content: str
    tokens: int
    record_id: str | None = None
    kind: TurnKind = "message"
    covers_through: int | None = None
    created_at: str = ""

    def as_message(self) -> dict[str, str]:
        """The turn as an OpenAI-style chat message (a summary is a system message)."""
        if self.kind == "summary":
            return {"role": "system", "content": summary_message(self.content)}
        return {"role": self.role, "content": self.content}


def summary_message(text: str) -> str:
    """How a stored summary reads in a prompt."""
    return f"Summary of the earlier conversation: {text}"


def message_tokens(role: str, content: str) -> int:
    """What one message adds to :func:`~aios_mesh.generation.estimate_tokens` (the
    estimate is additive: a list costs the sum of its messages plus 2)."""
    return estimate_tokens([{"role": role, "content": content}]) - estimate_tokens([])


def output_text(output: BaseModel) -> str:
    """A call's answer as conversation text: a ``text`` field where the output has one
    (:class:`~aios_mesh.generation.TextOutput`), an ``answer`` field (an agent's), else the
    output as compact JSON."""
    for name in ("text", "answer"):
        value = getattr(output, name, None)
        if isinstance(value, str):
            return value
    return output.model_dump_json()


def _now_iso() -> str:
    return datetime.now(UTC).isoformat()


def _check_id(what: str, value: str) -> str:
    if not value or len(value) > _MAX_ID or not value.isprintable():
        raise InvalidInput(f"{what} must be 1 to {_MAX_ID} printable characters",
                           hint=f"pass another {what}")
    return value


class ConversationStore:
    """Sessions and their turns, per tenant, on a :class:`~aios_mesh.state.SharedState`.

    Args:
        state: the shared state (``mesh.state``: the state folder's sqlite, or PostgreSQL).
        redactor: run over every appended turn's text before it is written (``for_mesh``
            passes the mesh's); ``None`` stores the text as given (the caller has redacted
            it already, e.g. a handler's input).
        store: the store's name on the state (one sqlite file, or the tables' database).
        clock: epoch seconds, for expiry (a test gives its own).

    The methods block (a sqlite or PostgreSQL round trip): async code calls them in
    ``asyncio.to_thread``. One store object may be shared by threads.

    Example::

        store = ConversationStore(mesh.state)
        s = store.create("acme")
        store.append(s.id, tenant="acme", role="user", content="hello")
        [t.content for t in store.history(s.id, tenant="acme")]   # ['hello']
    """

    def __init__(self, state: SharedState, *, redactor: Redactor | None = None,
                 store: str = "conversations",
                 clock: Callable[[], float] = time.time) -> None:
        self.state = state
        self.redactor = redactor
        self._clock = clock
        self._db = Database(state, store, MIGRATIONS, what="the conversation store")
        self._db.execute("SELECT 1")  # open and migrate now: a bad state fails here

    @classmethod
    def for_mesh(cls, mesh: Mesh, *, store: str = "conversations") -> ConversationStore:
        """The store on ``mesh``'s shared state, redacting with the mesh's redactor."""
        return cls(mesh.state, redactor=mesh.parts.redactor, store=store)

    # -- sessions ---------------------------------------------------------------------------

    def create(self, tenant: str, *, session_id: str | None = None,
               metadata: Mapping[str, Any] | None = None,
               ttl_s: float | None = None) -> Session:
        """Open a session for ``tenant`` (``session_id``: the caller's own id, else a new
        one). ``ttl_s``: it expires that long after its last append. An id the tenant uses
        already is :class:`~aios_mesh.errors.IntegrityError`."""
        _check_id("tenant", tenant)
        sid = _check_id("session id", session_id) if session_id else uuid.uuid4().hex
        if ttl_s is not None and not (math.isfinite(ttl_s) and ttl_s > 0):
            raise InvalidInput("ttl_s must be a positive number of seconds",
                               hint="pass None for a session that never expires")
        meta = dict(metadata or {})
        try:
            blob = orjson.dumps(meta).decode()
        except TypeError as exc:
            raise InvalidInput("session metadata must be JSON values",
                               hint="pass strings, numbers, lists and dicts") from exc
        expires = None if ttl_s is None else self._clock() + ttl_s
        created = _now_iso()
        self._db.execute(
            f"INSERT INTO conversation_sessions ({_SESSION_COLUMNS}) VALUES (?,?,?,?,?,?,?)",
            (tenant, sid, created, blob, 0, ttl_s, expires))
        return Session(sid, tenant, created, meta, 0,
                       None if ttl_s is None else float(ttl_s), expires)

    def get(self, session_id: str, *, tenant: str) -> Session:
        """The session, or :class:`~aios_mesh.errors.NotFound` — also for another tenant's
        id and for an expired session (the same message either way)."""
        rows = self._db.execute(
            f"SELECT {_SESSION_COLUMNS} FROM conversation_sessions "
            "WHERE tenant = ? AND id = ?", (tenant, session_id))
        if not rows or self._expired(rows[0][6]):
            raise self._missing(session_id)
        return self._session(rows[0])

    def sessions(self, tenant: str, *, limit: int = 100) -> list[Session]:
        """The tenant's live sessions, newest first."""
        rows = self._db.execute(
            f"SELECT {_SESSION_COLUMNS} FROM conversation_sessions WHERE tenant = ? "
            "AND (expires_at IS NULL OR expires_at > ?) ORDER BY created_at DESC, id LIMIT ?",
            (tenant, self._clock(), max(1, int(limit))))
        return [self._session(r) for r in rows]

    def delete(self, session_id: str, *, tenant: str) -> None:
        """Remove the session and every turn of it (:class:`NotFound` if the tenant has no
        such session)."""
        with self._db.transaction() as db:
            gone = db.execute("DELETE FROM conversation_sessions WHERE tenant = ? AND id = ?",
                              (tenant, session_id))
            if gone.rowcount == 0:
                raise self._missing(session_id)
            db.execute("DELETE FROM conversation_turns WHERE tenant = ? AND session_id = ?",
                       (tenant, session_id))

    def expire(self, *, tenant: str | None = None) -> int:
        """Remove the sessions (of ``tenant``, or of every tenant) whose time has run out,
        with their turns; returns how many. An expired session is already invisible
        (:meth:`get` says NotFound); this frees its space."""
        now = self._clock()
        scope, params = ("", [now]) if tenant is None else (" AND tenant = ?", [now, tenant])
        with self._db.transaction() as db:
            rows = db.execute("SELECT tenant, id FROM conversation_sessions "
                              f"WHERE expires_at IS NOT NULL AND expires_at <= ?{scope}",
                              params)
            for owner, sid in rows:
                db.execute("DELETE FROM conversation_turns WHERE tenant = ? "
                           "AND session_id = ?", (owner, sid))
                db.execute("DELETE FROM conversation_sessions WHERE tenant = ? AND id = ?",
                           (owner, sid))
        return len(rows)

    # -- turns ------------------------------------------------------------------------------

    def append(self, session_id: str, *, tenant: str, role: str, content: str,
               record_id: str | None = None, kind: TurnKind = "message",
               covers_through: int | None = None) -> Turn:
        """Add a turn at the end of the session; its text is redacted first (when the store
        has a redactor). Safe under concurrent appends from any number of processes: each
        gets the next number, none is lost."""
        if role not in ROLES:
            raise InvalidInput(f"role must be one of {sorted(ROLES)}",
                               hint="use the chat roles: system, user, assistant, tool")
        if kind not in ("message", "summary"):
            raise InvalidInput("kind must be 'message' or 'summary'", hint="pass one of them")
        if kind == "summary" and (covers_through is None or covers_through < 1):
            raise InvalidInput("a summary turn names the last turn it covers",
                               hint="pass covers_through=<seq>")
        if self.redactor is not None:
            content = self.redactor.redact({"content": content},
                                           tenant=tenant).payload["content"]
        tokens = message_tokens("system" if kind == "summary" else role,
                                summary_message(content) if kind == "summary" else content)
        now = self._clock()
        created = _now_iso()
        with self._db.transaction() as db:
            # the UPDATE locks the session row (PostgreSQL) / the file (sqlite's BEGIN
            # IMMEDIATE): the next number is taken by one appender at a time
            bumped = db.execute(
                "UPDATE conversation_sessions SET last_seq = last_seq + 1, "
                "expires_at = CASE WHEN ttl_s IS NULL THEN NULL ELSE ? + ttl_s END "
                "WHERE tenant = ? AND id = ? AND (expires_at IS NULL OR expires_at > ?)",
                (now, tenant, session_id, now))
            if bumped.rowcount == 0:
                raise self._missing(session_id)
            seq = int(db.execute("SELECT last_seq FROM conversation_sessions "
                                 "WHERE tenant = ? AND id = ?", (tenant, session_id))[0][0])
            if covers_through is not None and covers_through >= seq:
                raise InvalidInput(f"a summary at turn {seq} cannot cover turn "
                                   f"{covers_through}", hint="summarise earlier turns")
            db.execute(
                f"INSERT INTO conversation_turns (tenant, {_TURN_COLUMNS}) "
                "VALUES (?,?,?,?,?,?,?,?,?,?)",
                (tenant, session_id, seq, role, kind, content, tokens, record_id,
                 covers_through, created))
        return Turn(session_id, seq, role, content, tokens,  # type: ignore[arg-type]
                    record_id, kind, covers_through, created)  # (role checked above)

    def append_result(self, session_id: str, result: Result[Any], *, tenant: str,
                      role: str = "assistant") -> Turn:
        """Add a call's answer: the text of ``result.output`` (:func:`output_text`, as the
        pipeline returned it after the output guard) with ``result.record.record_id``.
        A result of another tenant, or one still waiting for review, is refused."""
        record = result.record
        if record.tenant != tenant:
            raise InvalidInput("the call's record belongs to another tenant",
                               hint="append a result to a session of the tenant that made "
                                    "the call")
        if result.output is None:
            raise InvalidInput("the call has no answer yet (it waits for review)",
                               hint=f"append it after review {record.review_id} is decided")
        return self.append(session_id, tenant=tenant, role=role,
                           content=output_text(result.output), record_id=record.record_id)

    def history(self, session_id: str, *, tenant: str, after: int = 0,
                limit: int | None = None) -> list[Turn]:
        """The session's turns in order (those after ``after``; at most ``limit``).
        :class:`NotFound` for another tenant's or an expired session."""
        self.get(session_id, tenant=tenant)
        sql = (f"SELECT {_TURN_COLUMNS} FROM conversation_turns WHERE tenant = ? "
               "AND session_id = ? AND seq > ? ORDER BY seq")
        params: list[Any] = [tenant, session_id, int(after)]
        if limit is not None:
            sql += " LIMIT ?"
            params.append(max(0, int(limit)))
        return [Turn(session_id=r[0], seq=int(r[1]), role=r[2], kind=r[3], content=r[4],
                     tokens=int(r[5]), record_id=r[6],
                     covers_through=None if r[7] is None else int(r[7]), created_at=r[8])
                for r in self._db.execute(sql, params)]

    def close(self) -> None:
        """Release the connection."""
        self._db.close()

    def __enter__(self) -> ConversationStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- helpers ----------------------------------------------------------------------------

    def _expired(self, expires_at: float | None) -> bool:
        return expires_at is not None and float(expires_at) <= self._clock()

    @staticmethod
    def _session(row: Sequence[Any]) -> Session:
        return Session(id=row[1], tenant=row[0], created_at=row[2],
                       metadata=orjson.loads(row[3]), turns=int(row[4]),
                       ttl_s=None if row[5] is None else float(row[5]),
                       expires_at=None if row[6] is None else float(row[6]))

    @staticmethod
    def _missing(session_id: str) -> NotFound:
        return NotFound(f"no conversation session {session_id[:_MAX_ID]!r}",
                        hint="create it first; sessions are per tenant and expire after "
                             "their ttl")
