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

import sqlite3
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

from aios_mesh.errors import ConfigError, IntegrityError

__all__ = ["Migration", "SharedState", "SqliteState", "check_migrations"]


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
    """Where stores keep state: connections and schema migrations, per store name."""

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
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(f"PRAGMA busy_timeout={int(self.busy_timeout_s * 1000)}")
        return conn

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
