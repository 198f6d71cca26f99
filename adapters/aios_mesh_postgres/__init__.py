"""PostgreSQL audit log of aios-mesh (scheme ``postgresql://``): the hash chain in a table.

URL::

    postgresql://user[:password]@host:port/db?table=audit_log&pool_size=4&connect_timeout_s=5

Other query options (``sslmode=require`` ...) go to libpq unchanged. The table (``table=``,
optionally ``schema.table``; default ``audit_log``) is created on first use::

    seq        bigint PRIMARY KEY     -- 1, 2, 3 ... without gaps
    prev_hash  text NOT NULL          -- hash of entry seq-1 (64 zeros for the first)
    hash       text NOT NULL          -- chain_hash(prev_hash, seq, record)
    record     json NOT NULL          -- the record, byte-for-byte as hashed
    written_at timestamptz NOT NULL DEFAULT clock_timestamp()

The chain is the one of the embedded JSONL log (:func:`aios_mesh.ports.audit_chain.chain_hash`,
same canonical encoding), so :meth:`PostgresAuditLog.export_jsonl` writes a file that
``JsonlAuditLog``/``verify_file`` accept. ``record`` is ``json``, not ``jsonb``: ``json`` keeps
the exact text that was hashed, while ``jsonb`` rewrites numbers (``1e16`` comes back as the
integer ``10000000000000000``), which would make honest entries fail verification. It still
answers ``record->>'tenant'``, and ``record::jsonb`` gives containment queries.

Appends are serialised across every process and host by a transaction-scoped advisory lock
(``pg_advisory_xact_lock`` on a key derived from the table name): read the head, insert the
next entry, commit, then return. A failed write raises ``IntegrityError`` (the call fails
rather than lose its record); the primary key on ``seq`` refuses a fork even if a writer
bypassed the lock.

:meth:`~PostgresAuditLog.verify` reads the table in one snapshot and reports ``changed``,
``deleted``, ``inserted`` and ``reordered`` entries like the JSONL verifier. A row's place
is its ``seq`` key; the seq an entry was *written* with is recovered from the hash links
(an entry that links to entry *n* was written as *n+1*), so renumbered or swapped rows show
up as ``inserted``/``reordered`` instead of a cascade of ``changed``. Make the table
append-only for the application role (see docs/adapters/postgres.md)::

    REVOKE UPDATE, DELETE, TRUNCATE ON audit_log FROM mesh_app;
    GRANT SELECT, INSERT ON audit_log TO mesh_app;

Connections: psycopg 3 ``AsyncConnection``s in a small pool per running event loop (the mesh
may call from several threads, each with its own loop).

The package also holds :class:`PostgresState` (:mod:`aios_mesh_postgres.state`): the shared
state (connections and schema migrations of the stores) on the same server.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import re
import tempfile
import threading
from collections import deque
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any, ClassVar, Final, Self

import orjson
import psycopg
from psycopg import sql
from psycopg.pq import TransactionStatus

from aios_mesh.backends import BackendURL, redact_url
from aios_mesh.errors import BackendUnavailable, ConfigError, IntegrityError
from aios_mesh.ports.audit import AuditEntry, VerifyReport
from aios_mesh.ports.audit_chain import GENESIS_HASH, canonical_record, chain_hash, verify_file
from aios_mesh.ports.base import Feature
from aios_mesh_postgres.state import PostgresState

__all__ = ["PostgresAuditLog", "PostgresState"]

_OPTIONS: Final = frozenset({"table", "pool_size", "connect_timeout_s", "create"})
_IDENT: Final = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
_BATCH: Final = 2000
_HINT_DOWN: Final = ("start PostgreSQL or fix the audit URL (check with `aios-mesh doctor`); "
                     "the call fails rather than lose its record")


def _line(seq: int, prev: str, hash_: str, record_text: bytes) -> bytes:
    """An entry in the JSONL audit format (see :mod:`aios_mesh.ports.audit_chain`)."""
    if b"\n" in record_text or b"\r" in record_text:
        # not canonical anyway (canonical JSON has no raw newline): keep it on one line,
        # marked so the verifier sees the entry does not match its bytes
        record_text = b" " + orjson.dumps(orjson.loads(record_text), option=orjson.OPT_SORT_KEYS)
    return (b'{"seq":' + str(seq).encode() + b',"prev_hash":' + orjson.dumps(prev)
            + b',"hash":' + orjson.dumps(hash_) + b',"record":' + record_text + b"}\n")


def _written_seqs(rows: list[tuple[int, str, str]]) -> list[int]:
    """The seq each row was written with, recovered from the hash links.

    ``rows`` are ``(key, prev_hash, hash)`` in key order. An entry linking to the genesis
    hash was entry 1, one linking to entry *n* was *n+1*; rows reached by no chain of links
    (their predecessor was deleted or altered) keep their key.
    """
    children: dict[str, list[int]] = {}
    for i, (_, prev, _h) in enumerate(rows):
        children.setdefault(prev, []).append(i)
    seqs = [0] * len(rows)  # 0: not known yet

    def spread(start: deque[int]) -> None:
        while start:
            i = start.popleft()
            for j in children.get(rows[i][2], ()):
                if seqs[j] == 0:
                    seqs[j] = seqs[i] + 1
                    start.append(j)

    first = deque(children.get(GENESIS_HASH, ()))
    for i in first:
        seqs[i] = 1
    spread(first)
    for i, (key, _, _) in enumerate(rows):
        if seqs[i] == 0:
            seqs[i] = key if key > 0 else -1
            spread(deque([i]))
    return seqs


class _Pool:
    """A few connections of one event loop, handed out one operation at a time."""

    def __init__(self, conninfo: str, size: int, connect_timeout_s: float) -> None:
        self.conninfo = conninfo
        self.connect_timeout_s = connect_timeout_s
        self.idle: list[psycopg.AsyncConnection[Any]] = []
        self.slots = asyncio.Semaphore(size)

    @contextlib.asynccontextmanager
    async def connection(self) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
        async with self.slots:
            conn = self.idle.pop() if self.idle else None
            if conn is None or conn.closed:
                conn = await psycopg.AsyncConnection.connect(
                    self.conninfo, autocommit=True,
                    connect_timeout=max(1, round(self.connect_timeout_s)),
                    client_encoding="utf8")
            try:
                yield conn
            except BaseException:
                await conn.close()
                raise
            if conn.closed or conn.info.transaction_status != TransactionStatus.IDLE:
                await conn.close()
            else:
                self.idle.append(conn)

    async def close(self) -> None:
        idle, self.idle = self.idle, []
        for conn in idle:
            with contextlib.suppress(Exception):
                await conn.close()

    def discard(self) -> None:
        """Close the sockets of a pool whose event loop has ended (no loop needed)."""
        idle, self.idle = self.idle, []
        for conn in idle:
            with contextlib.suppress(Exception):
                conn.pgconn.finish()


class PostgresAuditLog:
    """Tamper-evident audit log in a PostgreSQL table; see the module docstring.

    Args:
        conninfo: a libpq URL or connection string (no aios-mesh options in it).
        table: ``name`` or ``schema.name`` of the table.
        pool_size: connections per event loop.
        connect_timeout_s: how long to wait for a connection.
        create: create the table if it is missing (else it must exist).
    """

    features: ClassVar[frozenset[Feature]] = frozenset({Feature.FSYNC})

    def __init__(self, conninfo: str, *, table: str = "audit_log", pool_size: int = 4,
                 connect_timeout_s: float = 5.0, create: bool = True) -> None:
        parts = table.split(".")
        if len(parts) > 2 or not all(_IDENT.match(p) for p in parts):
            raise ConfigError(f"audit table name {table!r} is not an identifier",
                              hint="write table=audit_log or table=schema.audit_log "
                                   "(letters, digits, underscores)")
        if pool_size < 1:
            raise ConfigError(f"audit option pool_size={pool_size!r} must be >= 1",
                              hint="write pool_size=4")
        self.conninfo = conninfo
        self.table = table
        self._shown = redact_url(conninfo)
        self._ident = sql.Identifier(*parts)
        self._lock_key = int.from_bytes(
            hashlib.sha256(f"aios-mesh-audit:{table}".encode()).digest()[:8], "big",
            signed=True)
        self._pool_size = pool_size
        self._connect_timeout_s = connect_timeout_s
        self._create = create
        self._ready = False
        self._lock = threading.Lock()
        # strong keys: a pool outlives its loop until the next call closes its sockets
        self._pools: dict[asyncio.AbstractEventLoop, _Pool] = {}
        self._closed = False

    @classmethod
    def from_url(cls, url: BackendURL, *, base_dir: Path | None = None,
                 **options: Any) -> Self:
        """``postgresql://user@host:port/db?table=audit_log&pool_size=4&connect_timeout_s=5
        &create=true``; keywords with those names win; other query options go to libpq."""
        del base_dir
        unknown = sorted(set(options) - _OPTIONS)
        if unknown:
            raise ConfigError(f"unknown option {unknown[0]!r} for {url.redacted()}",
                              hint=f"the postgresql:// audit log takes: "
                                   f"{', '.join(sorted(_OPTIONS))} (and libpq options in "
                                   "the URL)")
        url = url.with_options(options)
        return cls(url.without_options(_OPTIONS), table=url.option("table") or "audit_log",
                   pool_size=url.int_option("pool_size", 4, min=1),
                   connect_timeout_s=url.seconds_option("connect_timeout_s", 5.0),
                   create=url.flag("create", True))

    # -- connections ---------------------------------------------------------------------

    def _pool(self) -> _Pool:
        loop = asyncio.get_running_loop()
        with self._lock:
            if self._closed:
                raise IntegrityError(f"the audit log {self._shown} ({self.table}) is closed",
                                     hint="append before aclose(), or open a new log")
            for old in [lp for lp in self._pools if lp.is_closed()]:
                self._pools.pop(old).discard()
            pool = self._pools.get(loop)
            if pool is None:
                pool = self._pools[loop] = _Pool(self.conninfo, self._pool_size,
                                                 self._connect_timeout_s)
            return pool

    async def _ensure_table(self, conn: psycopg.AsyncConnection[Any]) -> None:
        if self._ready:
            return
        if self._create:
            async with conn.transaction():
                await conn.execute("SELECT pg_advisory_xact_lock(%s)", (self._lock_key,))
                await conn.execute(sql.SQL(
                    "CREATE TABLE IF NOT EXISTS {} ("
                    " seq bigint PRIMARY KEY,"
                    " prev_hash text NOT NULL,"
                    " hash text NOT NULL,"
                    " record json NOT NULL,"
                    " written_at timestamptz NOT NULL DEFAULT clock_timestamp())"
                ).format(self._ident))
        else:
            await conn.execute(sql.SQL("SELECT 1 FROM {} LIMIT 0").format(self._ident))
        self._ready = True

    # -- writing -------------------------------------------------------------------------

    async def append(self, record: Mapping[str, Any]) -> AuditEntry:
        """Chain the record onto the head and commit it before returning.

        Raises ``IntegrityError`` when the record is not JSON or the write fails.
        """
        try:
            record_bytes = canonical_record(record)
        except (TypeError, ValueError) as exc:
            raise IntegrityError(f"the audit record cannot be written as JSON: {exc}",
                                 hint="records must hold JSON values with string keys "
                                      "(str, int, float, bool, None, lists, dicts)") from exc
        copy = dict(record)
        text = record_bytes.decode()
        head = sql.SQL("SELECT seq, hash FROM {} ORDER BY seq DESC LIMIT 1").format(self._ident)
        insert = sql.SQL("INSERT INTO {} (seq, prev_hash, hash, record) "
                         "VALUES (%s, %s, %s, %s::json)").format(self._ident)
        try:
            async with self._pool().connection() as conn:
                await self._ensure_table(conn)
                async with conn.transaction():
                    await conn.execute("SELECT pg_advisory_xact_lock(%s)", (self._lock_key,))
                    row = await (await conn.execute(head)).fetchone()
                    seq, prev = (int(row[0]) + 1, str(row[1])) if row else (1, GENESIS_HASH)
                    hash_ = chain_hash(prev, seq, copy)
                    await conn.execute(insert, (seq, prev, hash_, text))
        except IntegrityError:
            raise
        except (psycopg.Error, OSError) as exc:
            raise IntegrityError(
                f"could not append to the audit log {self._shown} ({self.table}): "
                f"{type(exc).__name__}: {exc}".strip(), hint=_HINT_DOWN,
                url=self._shown, table=self.table) from exc
        return AuditEntry(seq, hash_, prev, copy)

    # -- reading -------------------------------------------------------------------------

    def _unavailable(self, what: str, exc: BaseException) -> BackendUnavailable:
        return BackendUnavailable(
            f"cannot {what} the audit log {self._shown} ({self.table}): "
            f"{type(exc).__name__}: {exc}".strip(),
            hint="start PostgreSQL or fix the audit URL (check with `aios-mesh doctor`)",
            url=self._shown, table=self.table)

    async def read(self, since: int = 0, limit: int | None = None) -> list[AuditEntry]:
        """Entries with ``seq > since`` in seq order, at most ``limit``."""
        if limit is not None and limit <= 0:
            return []
        query = sql.SQL("SELECT seq, prev_hash, hash, record::text FROM {} WHERE seq > %s "
                        "ORDER BY seq").format(self._ident)
        if limit is not None:
            query = query + sql.SQL(" LIMIT %s")
        params: tuple[Any, ...] = (since,) if limit is None else (since, limit)
        try:
            async with self._pool().connection() as conn:
                await self._ensure_table(conn)
                rows = await (await conn.execute(query, params)).fetchall()
        except psycopg.Error as exc:
            raise self._unavailable("read", exc) from exc
        out: list[AuditEntry] = []
        for seq, prev, hash_, text in rows:
            record = orjson.loads(text)
            if isinstance(record, dict):
                out.append(AuditEntry(int(seq), str(hash_), str(prev), record))
        return out

    async def _dump(self, path: Path, *, written_seqs: bool) -> None:
        """Write the table (one snapshot) as a JSONL audit file at ``path``."""
        links = sql.SQL("SELECT seq, prev_hash, hash FROM {} ORDER BY seq").format(self._ident)
        full = sql.SQL("SELECT seq, prev_hash, hash, record::text FROM {} "
                       "ORDER BY seq").format(self._ident)
        try:
            async with self._pool().connection() as conn:
                await self._ensure_table(conn)
                async with conn.transaction():
                    await conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, "
                                       "READ ONLY")
                    seqs: list[int] | None = None
                    if written_seqs:
                        rows = await (await conn.execute(links)).fetchall()
                        seqs = _written_seqs([(int(k), str(p), str(h)) for k, p, h in rows])
                    with open(path, "wb") as f:  # noqa: ASYNC230 — a local temp file
                        i = 0
                        async with conn.cursor(name="aios_mesh_audit_dump") as cur:
                            cur.itersize = _BATCH
                            await cur.execute(full)
                            async for key, prev, hash_, text in cur:
                                seq = seqs[i] if seqs is not None else int(key)
                                i += 1
                                f.write(_line(seq, str(prev), str(hash_), text.encode()))
        except psycopg.Error as exc:
            raise self._unavailable("read", exc) from exc

    async def export_jsonl(self, path: str | os.PathLike[str]) -> int:
        """Write the table as a JSONL audit file (the embedded log's format, one snapshot);
        ``verify_file(path)`` checks it offline. Returns the number of entries."""
        target = Path(path)
        await self._dump(target, written_seqs=False)
        with open(target, "rb") as f:  # noqa: ASYNC230
            return sum(1 for _ in f)

    async def verify(self) -> VerifyReport:
        """Walk the chain (one snapshot) and report every problem with its seq and kind."""
        fd, name = tempfile.mkstemp(prefix="aios-mesh-audit-", suffix=".jsonl")
        os.close(fd)
        try:
            await self._dump(Path(name), written_seqs=True)
            return await asyncio.to_thread(verify_file, name)
        finally:
            with contextlib.suppress(OSError):
                os.unlink(name)

    async def health(self) -> None:
        """Connect and ``SELECT 1`` (and create the table if asked); raise
        ``BackendUnavailable`` with a hint when PostgreSQL does not answer."""
        try:
            async with self._pool().connection() as conn:
                await conn.execute("SELECT 1")
                await self._ensure_table(conn)
        except psycopg.Error as exc:
            raise self._unavailable("reach", exc) from exc

    async def aclose(self) -> None:
        """Close the connections of this event loop; later appends raise
        ``IntegrityError``."""
        with self._lock:
            self._closed = True
            pools, self._pools = self._pools, {}
        loop = asyncio.get_running_loop()
        for owner, pool in pools.items():
            if owner is loop:
                await pool.close()
            elif owner.is_closed():
                pool.discard()
