"""PostgreSQL shared state of aios-mesh: the :class:`~aios_mesh.state.SharedState` that lets
replicas share the stores (review queue, outbox, ...) of one database.

URL::

    postgresql://user[:password]@host:port/db?connect_timeout_s=5

Other query options (``sslmode=require``, ``options=-c lock_timeout=10s`` ...) go to libpq
unchanged. The password never appears in a message, ``repr()`` or log line (it is masked by
:func:`aios_mesh.backends.redact_url`, and scrubbed from the driver's error text).

Versions: one row per store in the table ``aios_mesh_schema`` (created on first use, in the
connection's current schema)::

    store   text PRIMARY KEY      -- the store's name ("review", "outbox" ...)
    version int  NOT NULL         -- the last migration applied

Migrating: each step runs in **its own transaction** that first takes
``pg_advisory_xact_lock(hashtext('aios_mesh:' || store))``, reads the version, applies that
one step's statements and writes the new version, then commits (which releases the lock);
the next step starts over (lock, read, apply). So two replicas migrating the same store at
once never apply a step twice (the second waits, then reads the version the first wrote),
different stores never wait for each other, and a failing step rolls back whole (PostgreSQL
DDL is transactional) and leaves the store at the previous version with the steps before it
kept, as the :class:`~aios_mesh.state.SharedState` protocol says. (One transaction for all
steps would also be atomic, but would throw away the good steps before a broken one and
hold the lock for the whole run.) A statement therefore cannot be one that refuses to run
inside a transaction (``CREATE INDEX CONCURRENTLY``, ``VACUUM``).

Namespace: the stores' tables live side by side in the database (there is no file per store
as with :class:`~aios_mesh.state.SqliteState`), so a store names its tables after itself
(``review``, ``review_events``).

Errors: a connection failure raises ``BackendUnavailable`` (retryable, with a hint); a
migration statement that fails raises ``IntegrityError`` naming the store, the version and
the statement; a store newer than the code raises ``IntegrityError``; misnumbered
migrations raise ``ConfigError`` before anything is touched.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final, Self
from urllib.parse import parse_qsl, quote, unquote, urlsplit

import psycopg
from psycopg.rows import TupleRow

from aios_mesh.backends import MASK, BackendURL, is_secret_option, redact_url
from aios_mesh.errors import BackendUnavailable, ConfigError, IntegrityError
from aios_mesh.state import Migration, check_migrations

__all__ = ["VERSION_TABLE", "PostgresState"]

#: The table of applied versions (one row per store).
VERSION_TABLE: Final = "aios_mesh_schema"
_OPTIONS: Final = frozenset({"connect_timeout_s"})
_SCHEMES: Final = ("postgresql://", "postgres://")
_STORE: Final = re.compile(r"^[A-Za-z0-9_-]+$")
# the key that serialises creating the version table ('/' never occurs in a store name)
_TABLE_LOCK: Final = "aios_mesh:/" + VERSION_TABLE
_HINT_DOWN: Final = ("start PostgreSQL or fix the state URL (check with `aios-mesh doctor`); "
                     "then try again")

_CREATE: Final = (f"CREATE TABLE IF NOT EXISTS {VERSION_TABLE} "
                  "(store TEXT PRIMARY KEY, version INT NOT NULL)")
_EXISTS: Final = f"SELECT to_regclass('{VERSION_TABLE}') IS NOT NULL"
_READ: Final = f"SELECT version FROM {VERSION_TABLE} WHERE store = %s"
_WRITE: Final = (f"INSERT INTO {VERSION_TABLE} (store, version) VALUES (%s, %s) "
                 "ON CONFLICT (store) DO UPDATE SET version = EXCLUDED.version")
_LOCK: Final = "SELECT pg_advisory_xact_lock(hashtext(%s))"


def _check_store(store: str) -> None:
    # the rule of SqliteState.path, so a store named for one backend works on the other
    if not isinstance(store, str) or not _STORE.match(store):
        raise ConfigError(f"store name {store!r} is not a plain name",
                          hint="use letters, digits, '-' and '_'")


def _secrets(url: str) -> list[str]:
    """The secret values written in ``url`` (the userinfo password, secret query options),
    as written and decoded, longest first, to scrub from driver messages."""
    found: set[str] = set()
    try:
        parts = urlsplit(url)
        raw_password = parts.netloc.rpartition("@")[0].partition(":")[2]
        if raw_password:
            found |= {raw_password, unquote(raw_password)}
        for name, value in parse_qsl(parts.query, keep_blank_values=True):
            if value and is_secret_option(name):
                found |= {value, quote(value, safe="")}
    except ValueError:
        pass
    return sorted((s for s in found if s), key=len, reverse=True)


class PostgresState:
    """Shared state in a PostgreSQL database; see the module docstring.

    Args:
        url: a ``postgresql://`` (or ``postgres://``) URL; its query options other than
            aios-mesh's go to libpq.
        connect_timeout_s: how long to wait for a connection.

    The object keeps one connection for :meth:`version` and :meth:`migrate` (reopened after
    a failure, released by :meth:`close`); :meth:`connect` opens a new one for the caller.
    It may be shared between threads (they take turns on that connection).
    """

    #: The SQL dialect of its connections (``%s`` placeholders, ``BYTEA``): a store meant
    #: for several backends picks its statements by it.
    dialect = "postgresql"

    def __init__(self, url: str, *, connect_timeout_s: float = 5.0) -> None:
        if not isinstance(url, str) or not url.startswith(_SCHEMES):
            shown = redact_url(url) if isinstance(url, str) and "://" in url else "it"
            raise ConfigError(f"the PostgreSQL state needs a postgresql:// URL, not {shown}",
                              hint="write postgresql://user:password@host:5432/db")
        if connect_timeout_s <= 0:
            raise ConfigError(f"connect_timeout_s={connect_timeout_s!r} must be > 0",
                              hint="write connect_timeout_s=5")
        self.url = url
        self.connect_timeout_s = connect_timeout_s
        self._shown = redact_url(url)
        self._secrets = _secrets(url)
        self._lock = threading.Lock()
        self._conn: psycopg.Connection[TupleRow] | None = None
        self._table_ready = False

    @classmethod
    def from_url(cls, url: BackendURL, *, base_dir: Path | None = None,
                 **options: Any) -> Self:
        """``postgresql://user@host:port/db?connect_timeout_s=5``; a keyword with that name
        wins; other query options go to libpq."""
        del base_dir
        unknown = sorted(set(options) - _OPTIONS)
        if unknown:
            raise ConfigError(f"unknown option {unknown[0]!r} for {url.redacted()}",
                              hint=f"the postgresql:// state takes: {', '.join(sorted(_OPTIONS))}"
                                   " (and libpq options in the URL)")
        url = url.with_options(options)
        return cls(url.without_options(_OPTIONS),
                   connect_timeout_s=url.seconds_option("connect_timeout_s", 5.0, min=0.001))

    def __repr__(self) -> str:
        return f"PostgresState({self._shown!r})"

    # -- connections ---------------------------------------------------------------------

    def _scrub(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, MASK)
        return text

    def _describe(self, exc: BaseException) -> str:
        return self._scrub(f"{type(exc).__name__}: {exc}".strip())

    def _unavailable(self, what: str, exc: BaseException) -> BackendUnavailable:
        return BackendUnavailable(f"cannot {what} the shared state {self._shown}: "
                                  f"{self._describe(exc)}", hint=_HINT_DOWN, url=self._shown)

    def _open(self) -> psycopg.Connection[TupleRow]:
        """A new autocommit connection; driver errors become mesh errors."""
        try:
            return psycopg.connect(self.url, autocommit=True, client_encoding="utf8",
                                   connect_timeout=max(1, round(self.connect_timeout_s)))
        except psycopg.ProgrammingError as exc:  # libpq refused the URL itself
            raise ConfigError(f"the state URL {self._shown} is not one libpq accepts: "
                              f"{self._describe(exc)}",
                              hint="check its query options (libpq's, e.g. sslmode=require, "
                                   "or connect_timeout_s)", url=self._shown) from exc
        except (psycopg.Error, OSError) as exc:
            raise self._unavailable("connect to", exc) from exc

    def _admin(self) -> psycopg.Connection[TupleRow]:
        """The kept connection (call with ``self._lock`` held)."""
        if self._conn is None or self._conn.closed or self._conn.broken:
            self._conn = self._open()
        return self._conn

    def _drop(self) -> None:
        """Close the kept connection after a failure (call with ``self._lock`` held)."""
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.close()
            except psycopg.Error:
                pass

    def _ensure_table(self, conn: psycopg.Connection[TupleRow]) -> None:
        if self._table_ready:
            return
        row = conn.execute(_EXISTS).fetchone()
        if not (row and row[0]):  # create it once, even when replicas start together
            with conn.transaction():
                conn.execute(_LOCK, (_TABLE_LOCK,))
                conn.execute(_CREATE)
        self._table_ready = True

    @staticmethod
    def _read(conn: psycopg.Connection[TupleRow], store: str) -> int:
        row = conn.execute(_READ, (store,)).fetchone()
        return int(row[0]) if row else 0

    # -- SharedState ---------------------------------------------------------------------

    def version(self, store: str) -> int:
        """The schema version of ``store`` (0 before its first migration)."""
        _check_store(store)
        with self._lock:
            try:
                conn = self._admin()
                if not self._table_ready:
                    row = conn.execute(_EXISTS).fetchone()
                    if not (row and row[0]):
                        return 0
                    self._table_ready = True
                return self._read(conn, store)
            except psycopg.Error as exc:
                self._drop()
                raise self._unavailable("read", exc) from exc

    def migrate(self, store: str, migrations: Sequence[Migration]) -> int:
        """Apply the migrations of ``store`` not applied yet, one transaction per step under
        the store's advisory lock; returns the version."""
        _check_store(store)
        check_migrations(store, migrations)
        target = len(migrations)
        with self._lock:
            conn = self._admin()
            running: tuple[int, int, str] | None = None  # (version, statement no., text)
            try:
                self._ensure_table(conn)
                while True:
                    with conn.transaction():
                        conn.execute(_LOCK, (f"aios_mesh:{store}",))
                        current = self._read(conn, store)
                        if current > target:
                            raise IntegrityError(
                                f"store {store!r} is at schema version {current}, newer "
                                f"than this aios-mesh knows ({target})",
                                hint="upgrade aios-mesh, or point it at another database",
                                store=store, version=current)
                        if current == target:
                            return current
                        step = migrations[current]
                        for number, statement in enumerate(step.statements, 1):
                            running = (step.version, number, statement)
                            conn.execute(statement)
                        running = None
                        conn.execute(_WRITE, (store, step.version))
            except psycopg.Error as exc:
                broken = conn.closed or conn.broken
                self._drop()
                if running is None or broken:
                    raise self._unavailable(f"migrate store {store!r} in", exc) from exc
                version, number, statement = running
                short = " ".join(statement.split())
                short = short if len(short) <= 200 else short[:197] + "..."
                raise IntegrityError(
                    f"migration {version} of store {store!r} failed at statement {number} "
                    f"({short}): {self._describe(exc)}",
                    hint=f"the store stays at version {version - 1}; fix the migration "
                         "(a released migration never changes: add a new one) and start again",
                    store=store, version=version - 1, sqlstate=exc.sqlstate) from exc

    def connect(self, store: str, migrations: Sequence[Migration]
                ) -> psycopg.Connection[TupleRow]:
        """A new connection (autocommit; the caller closes it) to the database, with the
        schema of ``store`` migrated to the latest version."""
        self.migrate(store, migrations)
        return self._open()

    def close(self) -> None:
        """Release the kept connection (the object reconnects if used again)."""
        with self._lock:
            self._drop()
