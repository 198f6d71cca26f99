"""Shared state: the one seam through which every store that keeps state (review queue, outbox,
shadow comparisons, and later API keys, the token vault, bulk jobs) gets its connection and
its schema.

A store declares its schema as numbered :class:`Migration` s and asks the state for a
connection; the state applies the migrations it has not applied yet, once, under a lock, and
remembers the version per store. The embedded default is :class:`SqliteState` (one sqlite
file per store under the mesh's state folder); a server backend (PostgreSQL) implements the
same :class:`SharedState` protocol in its adapter package, so replicas share one state.

    REVIEW = (Migration(1, ("CREATE TABLE review (...)",)),
              Migration(2, ("ALTER TABLE review ADD COLUMN note TEXT",)))
    db = state.connect("review", REVIEW)      # migrated to version 2, ready to use
"""

from __future__ import annotations

import contextlib
import difflib
import importlib
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Protocol, runtime_checkable

from aios_mesh.errors import BackendUnavailable, ConfigError, IntegrityError, MeshError
from aios_mesh.redaction import describe_exception

__all__ = ["STATE_BACKENDS", "Database", "Migration", "Rows", "SharedState", "SqliteState",
           "check_migrations", "open_state"]


@dataclass(frozen=True, slots=True)
class Migration:
    """Version ``version`` of a store's schema: the statements that take it there from the
    previous version. Versions start at 1 and have no gaps; a released migration never
    changes (add a new one instead)."""

    version: int
    statements: tuple[str, ...]


def check_migrations(store: str, migrations: Sequence[Migration]) -> None:
    """Refuse a migration list that is not 1, 2, 3, ... (a gap or a repeat is a bug that
    would otherwise apply a schema half-way)."""
    versions = [m.version for m in migrations]
    if versions != list(range(1, len(versions) + 1)):
        raise ConfigError(f"the migrations of store {store!r} are numbered {versions}",
                          hint="number them 1, 2, 3, ... with no gap or repeat")


@runtime_checkable
class SharedState(Protocol):
    """Where stores keep state: connections and schema migrations, per store name.

    ``dialect`` names the SQL of its connections (``sqlite``: ``?`` placeholders, ``BLOB``;
    ``postgresql``: ``%s``, ``BYTEA``); a store talks to it through :class:`Database`, which
    holds the differences in one place.
    """

    dialect: str

    def connect(self, store: str, migrations: Sequence[Migration]) -> Any:
        """A DB-API connection (autocommit) to ``store`` with its schema migrated."""
        ...

    def version(self, store: str) -> int:
        """The schema version of ``store`` (0 before its first migration)."""
        ...

    def migrate(self, store: str, migrations: Sequence[Migration]) -> int:
        """Apply the migrations of ``store`` not applied yet (each in one transaction, all
        under a lock so two processes never apply the same one); returns the version."""
        ...

    def close(self) -> None:
        """Release connections."""
        ...


class SqliteState:
    """The embedded shared state: one sqlite file per store in ``folder`` (shared by the
    processes of one machine, WAL mode), the applied version in ``PRAGMA user_version``."""

    #: The SQL dialect of its connections (``?`` placeholders, ``BLOB``): a store meant for
    #: several backends picks its statements by it.
    dialect = "sqlite"

    def __init__(self, folder: Path, *, busy_timeout_s: float = 5.0) -> None:
        self.folder = folder
        self.busy_timeout_s = busy_timeout_s
        self._lock = threading.Lock()

    def path(self, store: str) -> Path:
        if not store.replace("_", "").replace("-", "").isalnum():
            raise ConfigError(f"store name {store!r} is not a plain name",
                              hint="use letters, digits, '-' and '_'")
        return self.folder / f"{store}.db"

    def connect(self, store: str, migrations: Sequence[Migration]) -> sqlite3.Connection:
        """A connection to ``store`` with its schema migrated to the latest version
        (autocommit mode, WAL, a busy timeout; usable from any thread)."""
        self.migrate(store, migrations)
        return self._open(store)

    def _open(self, store: str) -> sqlite3.Connection:
        path = self.path(store)
        path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False,
                               timeout=self.busy_timeout_s)
        conn.execute(f"PRAGMA busy_timeout={int(self.busy_timeout_s * 1000)}")
        self._wal(conn, store)
        return conn

    def _wal(self, conn: sqlite3.Connection, store: str) -> None:
        """Switch the file to WAL (it stays so). Switching takes an exclusive lock and does
        not wait on the busy timeout: several processes opening a new store at once get
        "database is locked" straight away, so the switch is retried until the timeout."""
        deadline = time.monotonic() + self.busy_timeout_s
        delay = 0.005
        while True:
            try:
                if conn.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
                    conn.execute("PRAGMA journal_mode=WAL")
                return
            except sqlite3.OperationalError as exc:
                if time.monotonic() + delay > deadline:
                    conn.close()
                    raise BackendUnavailable(
                        f"the state store {store!r} stayed locked for "
                        f"{self.busy_timeout_s:g} s ({describe_exception(exc)})",
                        hint="another process holds it; retry, or raise busy_timeout_s"
                    ) from exc
                time.sleep(delay)
                delay = min(delay * 2, 0.1)

    def version(self, store: str) -> int:
        conn = self._open(store)
        try:
            return int(conn.execute("PRAGMA user_version").fetchone()[0])
        finally:
            conn.close()

    def migrate(self, store: str, migrations: Sequence[Migration]) -> int:
        check_migrations(store, migrations)
        with self._lock:
            conn = self._open(store)
            try:
                version = 0
                for migration in [Migration(0, ()), *migrations]:
                    version = self._step(conn, store, migration, len(migrations))
                return version
            finally:
                conn.close()

    @staticmethod
    def _step(conn: sqlite3.Connection, store: str, migration: Migration, known: int) -> int:
        """One migration in its own transaction (as PostgresState does): a failing step
        leaves the steps before it applied. Migration 0 only checks the version."""
        # BEGIN IMMEDIATE takes sqlite's write lock: another process migrating the same file
        # waits, then sees the version this one wrote.
        conn.execute("BEGIN IMMEDIATE")
        try:
            current = int(conn.execute("PRAGMA user_version").fetchone()[0])
            if current > known:
                raise IntegrityError(
                    f"store {store!r} is at schema version {current}, newer than this "
                    f"aios-mesh knows ({known})",
                    hint="upgrade aios-mesh, or point it at another state folder")
            if migration.version > current:
                for n, statement in enumerate(migration.statements, 1):
                    try:
                        conn.execute(statement)
                    except sqlite3.Error as exc:
                        raise IntegrityError(
                            f"migration {migration.version} of store {store!r} failed at "
                            f"statement {n}: {type(exc).__name__}",
                            hint="fix the migration; the store stays at version "
                                 f"{current}") from exc
                conn.execute(f"PRAGMA user_version={migration.version}")
                current = migration.version
            conn.execute("COMMIT")
            return current
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    def close(self) -> None:
        return None


#: Where a shared state lives, by URL scheme ("module:Class" with ``from_url``, imported on
#: first use so the core never imports an adapter package).
STATE_BACKENDS: Final[Mapping[str, str]] = {
    "sqlite": "aios_mesh.state:SqliteState",
    "postgresql": "aios_mesh_postgres:PostgresState",
    "postgres": "aios_mesh_postgres:PostgresState",
}


def check_state_url(url: str) -> str:
    """The scheme of a ``[backends] state`` URL, or a :class:`ConfigError` naming the
    closest known one (nothing is imported)."""
    scheme = url.split("://", 1)[0].lower() if "://" in url else ""
    if scheme not in STATE_BACKENDS:
        close = difflib.get_close_matches(scheme, list(STATE_BACKENDS), n=1)
        raise ConfigError(f"no shared state for scheme {scheme or url!r}",
                          hint=(f"did you mean {close[0]}://? " if close else "")
                          + "use sqlite:// (the state folder) or postgresql://user@host/db")
    return scheme


def open_state(url: str | None, *, folder: Path) -> SharedState:
    """The shared state a config names: ``None`` or ``sqlite://`` is the state ``folder``
    (one sqlite file per store), ``postgresql://...`` one database for every replica."""
    if url is None:
        return SqliteState(folder)
    scheme = check_state_url(url)
    if scheme == "sqlite":
        rest = url.split("://", 1)[1].lstrip("/")
        return SqliteState(folder / rest if rest else folder)
    module_name, _, attr = STATE_BACKENDS[scheme].partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(f"the {scheme} shared state is not installed ({exc.name})",
                          hint='pip install "aios-mesh[postgres]"') from exc
    from aios_mesh.backends import parse_url

    state: SharedState = getattr(module, attr).from_url(parse_url(url), base_dir=folder)
    return state


#: Modules whose exceptions are a store's failures (the rest pass through untouched).
_DRIVERS: Final = frozenset({"sqlite3", "psycopg"})


class Rows(list[tuple[Any, ...]]):
    """What :meth:`Database.execute` returns: the rows, plus the DB-API's ``rowcount`` and
    ``fetchone``/``fetchall`` for code written against a cursor."""

    def __init__(self, rows: Iterable[tuple[Any, ...]] = (), rowcount: int = -1) -> None:
        super().__init__(rows)
        self.rowcount = rowcount

    def fetchone(self) -> tuple[Any, ...] | None:
        return self[0] if self else None

    def fetchall(self) -> list[tuple[Any, ...]]:
        return list(self)


class Database:
    """One store's connection on a shared state, with what differs between SQL dialects in
    one place: statements are written with sqlite's ``?`` placeholders (turned into psycopg's
    ``%s`` on PostgreSQL; so no statement may hold a literal ``?``), a transaction is
    ``BEGIN IMMEDIATE`` on sqlite (its write lock) and the driver's transaction on PostgreSQL,
    and a driver error becomes a :class:`~aios_mesh.errors.MeshError` and drops the
    connection (the next statement reconnects).

    Args:
        state: the shared state (``SqliteState``, ``PostgresState``).
        store: the store's name.
        migrations: its schema, or one schema per dialect (``{"sqlite": ..., "postgresql":
            ...}``) where the two need different types.
        what: how errors name the store ("the API key store").

    One connection, used by one thread at a time (the methods block: async code calls
    them in ``asyncio.to_thread``).
    """

    def __init__(self, state: SharedState, store: str,
                 migrations: Sequence[Migration] | Mapping[str, Sequence[Migration]], *,
                 what: str | None = None) -> None:
        self.state = state
        self.store = store
        self.dialect = state.dialect
        if isinstance(migrations, Mapping):
            if self.dialect not in migrations:
                raise ConfigError(f"store {store!r} has no schema for SQL dialect "
                                  f"{self.dialect!r}",
                                  hint=f"use a state of one of: {', '.join(sorted(migrations))}")
            migrations = migrations[self.dialect]
        self.migrations = tuple(migrations)
        self.what = what or f"the {store} store"
        self._lock = threading.RLock()
        self._conn: Any = None
        self._in_tx = False

    def sql(self, statement: str) -> str:
        """``statement`` in this dialect's placeholders."""
        return statement if self.dialect == "sqlite" else statement.replace("?", "%s")

    def _connection(self) -> Any:
        if self._conn is None:
            self._conn = self.state.connect(self.store, self.migrations)
        return self._conn

    def execute(self, statement: str, params: Sequence[Any] = ()) -> Rows:
        """Run one statement: the rows it returns (read whole before the connection is
        handed to another thread) and, for a write, ``rowcount``."""
        with self._lock, self._errors():
            cursor = self._connection().execute(self.sql(statement), tuple(params))
            return Rows(cursor.fetchall() if cursor.description else (), cursor.rowcount)

    def executemany(self, statement: str, rows: Sequence[Sequence[Any]]) -> None:
        """Run one write for each of ``rows``."""
        with self._lock, self._errors():
            conn = self._connection()
            if self.dialect == "sqlite":
                conn.executemany(statement, rows)
            else:
                with conn.cursor() as cursor:
                    cursor.executemany(self.sql(statement), rows)

    @contextlib.contextmanager
    def transaction(self) -> Iterator[Database]:
        """Run the block's statements in one transaction (nested blocks join the outer
        one)."""
        with self._lock:
            if self._in_tx:
                yield self
                return
            with self._errors():
                conn = self._connection()
                self._in_tx = True
                try:
                    if self.dialect == "sqlite":
                        conn.execute("BEGIN IMMEDIATE")
                        try:
                            yield self
                        except BaseException:
                            conn.execute("ROLLBACK")
                            raise
                        conn.execute("COMMIT")
                    else:
                        with conn.transaction():
                            yield self
                finally:
                    self._in_tx = False

    @contextlib.contextmanager
    def _errors(self) -> Iterator[None]:
        try:
            yield
        except Exception as exc:
            # Only the drivers' own errors (sqlite3, psycopg) are the store's failures; a
            # MeshError or a bug in the caller passes through as it is.
            if type(exc).__module__.split(".")[0] not in _DRIVERS:
                raise
            if not self._in_tx:
                self._drop()  # the next statement reconnects
            raise _translate(exc, self.what) from exc

    def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):  # already broken: nothing to release
                conn.close()

    def close(self) -> None:
        """Release the connection (the store reconnects if used again)."""
        with self._lock:
            self._drop()


def _translate(exc: Exception, what: str) -> MeshError:
    name = type(exc).__name__
    text = describe_exception(exc)
    if "IntegrityError" in name or "UniqueViolation" in name:
        return IntegrityError(f"{what} refused a write ({text})",
                              hint="the row exists already or breaks a constraint")
    return BackendUnavailable(f"{what} is not available ({text})",
                              hint="check the shared state (the state folder is writable; "
                                   "the PostgreSQL server is up and reachable)")
