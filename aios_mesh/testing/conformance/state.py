"""Conformance suite of the shared-state seam (:class:`aios_mesh.state.SharedState`).

Mixins expect a fixture ``adapter``: a shared state on a backend of its own (a temporary
folder, a throw-away database), and two more that the concrete class provides:

* ``make_state``: a callable returning *another* state object on the same backend (what a
  second process or replica would open); the suite closes what it gets;
* ``count_rows``: a callable ``count_rows(store, table) -> int`` that counts the rows of a
  table of a store, straight from the backend.

``migrations`` (a callable ``table -> SampleMigrations``) is provided here with portable SQL
(``CREATE TABLE``, ``ALTER TABLE ... ADD COLUMN``, ``INSERT``); a backend whose dialect
differs overrides it. ``migration_error`` is the exception type a failing migration
statement raises; it defaults to :class:`~aios_mesh.errors.MeshError` (an adapter
translates its driver's errors), and the embedded :class:`~aios_mesh.state.SqliteState`
overrides it with ``sqlite3.Error``::

    class TestSqliteState(StateBasic, StateConcurrency):
        @pytest.fixture
        def adapter(self, tmp_path):
            state = SqliteState(tmp_path)
            yield state
            state.close()

        @pytest.fixture
        def make_state(self, tmp_path):
            return lambda: SqliteState(tmp_path)

        @pytest.fixture
        def count_rows(self, adapter):
            def count(store, table):
                with contextlib.closing(sqlite3.connect(adapter.path(store))) as db:
                    return db.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
            return count

Every test uses its own store and table names, so a backend may be shared by the tests of a
module.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest

from aios_mesh.errors import ConfigError, IntegrityError, MeshError
from aios_mesh.state import Migration, SharedState

__all__ = [
    "SampleMigrations",
    "StateBasic",
    "StateConcurrency",
    "StateFailures",
    "StateFixtures",
    "portable_migrations",
]


@dataclass(frozen=True, slots=True)
class SampleMigrations:
    """The schema steps of one sample store, for one table.

    * ``v1`` creates the table (an ``id`` key);
    * ``v2`` adds a ``name`` column and inserts the seed row ``(1, 'seed')``;
    * ``v3`` inserts a second row ``(2, 'second')`` (it needs ``name``, so it runs after v2);
    * ``broken`` is a version 2 whose first statement is v2's and whose second is not SQL:
      if the first were kept after the failure, v2 would then fail on a duplicate column.
    """

    v1: Migration
    v2: Migration
    v3: Migration
    broken: Migration


def portable_migrations(table: str) -> SampleMigrations:
    """:class:`SampleMigrations` in SQL that sqlite and PostgreSQL both accept."""
    add_name = f"ALTER TABLE {table} ADD COLUMN name TEXT"
    return SampleMigrations(
        v1=Migration(1, (f"CREATE TABLE {table} (id INTEGER PRIMARY KEY)",)),
        v2=Migration(2, (add_name, f"INSERT INTO {table} (id, name) VALUES (1, 'seed')")),
        v3=Migration(3, (f"INSERT INTO {table} (id, name) VALUES (2, 'second')",)),
        broken=Migration(2, (add_name, "THIS IS NOT SQL AT ALL")),
    )


def _names() -> tuple[str, str]:
    """A fresh store name and table name."""
    tag = uuid.uuid4().hex[:10]
    return f"store_{tag}", f"t_{tag}"


class StateFixtures:
    """Fixtures of every mixin; the concrete class provides ``adapter``, ``make_state`` and
    ``count_rows`` and may override ``migrations`` and ``migration_error``."""

    @pytest.fixture
    def migrations(self) -> Callable[[str], SampleMigrations]:
        return portable_migrations

    @pytest.fixture
    def migration_error(self) -> type[BaseException] | tuple[type[BaseException], ...]:
        return MeshError


class StateBasic(StateFixtures):
    """Versions, migrations applied once and in order, connections of a migrated store."""

    def test_is_a_shared_state(self, adapter: Any) -> None:
        assert isinstance(adapter, SharedState)

    def test_version_is_zero_before_any_migration(self, adapter: Any) -> None:
        store, _ = _names()
        assert adapter.version(store) == 0
        assert adapter.version(store) == 0  # asking creates no version

    def test_migrations_apply_once_and_in_order(self, adapter: Any, migrations: Any,
                                                count_rows: Any) -> None:
        store, table = _names()
        m = migrations(table)
        assert adapter.migrate(store, [m.v1]) == 1
        assert adapter.version(store) == 1
        assert count_rows(store, table) == 0
        assert adapter.migrate(store, [m.v1, m.v2, m.v3]) == 3  # v2 needs v1, v3 needs v2
        assert adapter.version(store) == 3
        assert count_rows(store, table) == 2

    def test_remigrate_is_a_no_op(self, adapter: Any, migrations: Any,
                                  count_rows: Any) -> None:
        store, table = _names()
        m = migrations(table)
        steps = [m.v1, m.v2]
        assert adapter.migrate(store, steps) == 2
        for _ in range(3):
            assert adapter.migrate(store, steps) == 2  # v1 again would fail on CREATE TABLE
        assert adapter.version(store) == 2
        assert count_rows(store, table) == 1  # v2's insert ran once

    def test_an_empty_list_on_a_new_store_stays_at_zero(self, adapter: Any) -> None:
        store, _ = _names()
        assert adapter.migrate(store, []) == 0
        assert adapter.version(store) == 0

    def test_a_migration_without_statements_still_counts(self, adapter: Any,
                                                         migrations: Any) -> None:
        store, table = _names()
        m = migrations(table)
        assert adapter.migrate(store, [m.v1, Migration(2, ())]) == 2
        assert adapter.version(store) == 2

    def test_stores_keep_their_own_versions(self, adapter: Any, migrations: Any,
                                            count_rows: Any) -> None:
        (a, table_a), (b, table_b) = _names(), _names()
        ma, mb = migrations(table_a), migrations(table_b)
        assert adapter.migrate(a, [ma.v1, ma.v2]) == 2
        assert adapter.version(b) == 0
        assert adapter.migrate(b, [mb.v1]) == 1
        assert (adapter.version(a), adapter.version(b)) == (2, 1)
        assert count_rows(a, table_a) == 1

    def test_another_state_object_sees_the_version(self, adapter: Any, make_state: Any,
                                                   migrations: Any) -> None:
        store, table = _names()
        m = migrations(table)
        adapter.migrate(store, [m.v1, m.v2])
        other = make_state()
        try:
            assert other.version(store) == 2
            assert other.migrate(store, [m.v1, m.v2]) == 2
            assert other.migrate(store, [m.v1, m.v2, m.v3]) == 3
        finally:
            other.close()
        assert adapter.version(store) == 3

    def test_connect_returns_a_migrated_connection(self, adapter: Any, migrations: Any) -> None:
        store, table = _names()
        m = migrations(table)
        connect = getattr(adapter, "connect", None)
        if connect is None:
            pytest.skip("this shared state has no connect()")
        db = connect(store, [m.v1, m.v2])
        try:
            assert adapter.version(store) == 2
            row = db.execute(f"SELECT id, name FROM {table}").fetchone()
            assert tuple(row) == (1, "seed")
        finally:
            db.close()

    def test_close_is_idempotent(self, make_state: Any, migrations: Any) -> None:
        store, table = _names()
        state = make_state()
        state.migrate(store, [migrations(table).v1])
        state.close()
        state.close()


class StateFailures(StateFixtures):
    """Mistakes are refused and a failed step leaves the store where it was."""

    def test_a_failing_migration_leaves_the_previous_version(
            self, adapter: Any, migrations: Any, migration_error: Any,
            count_rows: Any) -> None:
        store, table = _names()
        m = migrations(table)
        assert adapter.migrate(store, [m.v1]) == 1
        with pytest.raises(migration_error):
            adapter.migrate(store, [m.v1, m.broken])
        assert adapter.version(store) == 1
        # nothing of the broken step was kept: the fixed v2 adds the same column again
        assert adapter.migrate(store, [m.v1, m.v2]) == 2
        assert count_rows(store, table) == 1

    @pytest.mark.parametrize("versions", [[2], [1, 1], [1, 3], [0, 1], [2, 1]])
    def test_misnumbered_migrations_are_refused(self, adapter: Any, versions: list[int]
                                                ) -> None:
        store, _ = _names()
        with pytest.raises(ConfigError, match="numbered"):
            adapter.migrate(store, [Migration(v, ()) for v in versions])
        assert adapter.version(store) == 0

    def test_misnumbered_migrations_are_refused_on_a_migrated_store(
            self, adapter: Any, migrations: Any) -> None:
        store, table = _names()
        m = migrations(table)
        adapter.migrate(store, [m.v1])
        with pytest.raises(ConfigError, match="numbered"):
            adapter.migrate(store, [m.v1, Migration(3, m.v2.statements)])
        assert adapter.version(store) == 1

    def test_a_store_newer_than_the_code_is_refused(self, adapter: Any,
                                                    migrations: Any) -> None:
        store, table = _names()
        m = migrations(table)
        adapter.migrate(store, [m.v1, m.v2])
        with pytest.raises(IntegrityError, match="newer"):
            adapter.migrate(store, [m.v1])
        with pytest.raises(IntegrityError, match="newer"):
            adapter.migrate(store, [])
        assert adapter.version(store) == 2


class StateConcurrency(StateFixtures):
    """Several state objects migrating one store at once apply each step once."""

    threads = 6

    def test_concurrent_migrate_applies_each_step_once(self, adapter: Any, make_state: Any,
                                                       migrations: Any,
                                                       count_rows: Any) -> None:
        store, table = _names()
        m = migrations(table)
        steps = [m.v1, m.v2, m.v3]
        start = threading.Barrier(self.threads)
        results: list[int] = []
        errors: list[BaseException] = []

        def migrate() -> None:
            state = make_state()  # one per thread, like separate processes on one backend
            try:
                start.wait(timeout=30)
                results.append(state.migrate(store, steps))
            except BaseException as exc:  # reported below
                errors.append(exc)
            finally:
                state.close()

        workers = [threading.Thread(target=migrate) for _ in range(self.threads)]
        for w in workers:
            w.start()
        for w in workers:
            w.join(timeout=120)
        assert not any(w.is_alive() for w in workers), "a migrate() never returned"
        assert errors == [], [repr(e) for e in errors]
        assert results == [3] * self.threads
        assert adapter.version(store) == 3
        assert count_rows(store, table) == 2  # each insert ran once

    def test_concurrent_migrate_of_different_stores(self, adapter: Any, make_state: Any,
                                                    migrations: Any,
                                                    count_rows: Any) -> None:
        names = [_names() for _ in range(4)]
        errors: list[BaseException] = []

        def migrate(store: str, table: str) -> None:
            state = make_state()
            try:
                m = migrations(table)
                state.migrate(store, [m.v1, m.v2])
            except BaseException as exc:  # reported below
                errors.append(exc)
            finally:
                state.close()

        workers = [threading.Thread(target=migrate, args=n) for n in names]
        for w in workers:
            w.start()
        for w in workers:
            w.join(timeout=120)
        assert errors == []
        for store, table in names:
            assert adapter.version(store) == 2
            assert count_rows(store, table) == 1
