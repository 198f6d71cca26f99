"""The PostgreSQL shared state passes the state conformance suite against a real server, in
a throw-away database per module (the ``postgres`` launcher of the adapter package)."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator

import psycopg
import pytest
from aios_mesh_postgres import PostgresState
from aios_mesh_postgres.state import VERSION_TABLE
from aios_mesh_postgres.testing import postgres_database
from psycopg import sql

from aios_mesh.backends import parse_url
from aios_mesh.errors import BackendUnavailable, ConfigError, IntegrityError
from aios_mesh.state import Migration, SharedState
from aios_mesh.testing.conformance.state import StateBasic, StateConcurrency, StateFailures
from aios_mesh.testing.processes import free_port

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def database() -> Iterator[str]:
    with postgres_database(prefix="aios_mesh_state") as url:
        yield url


def _count(url: str, table: str) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(
            sql.Identifier(table))).fetchone()
        assert row is not None
        return int(row[0])


class TestPostgresState(StateBasic, StateFailures, StateConcurrency):
    @pytest.fixture
    def adapter(self, database: str) -> Iterator[PostgresState]:
        state = PostgresState(database)
        yield state
        state.close()

    @pytest.fixture
    def make_state(self, database: str) -> Callable[[], PostgresState]:
        return lambda: PostgresState(database)

    @pytest.fixture
    def count_rows(self, database: str) -> Callable[[str, str], int]:
        return lambda store, table: _count(database, table)


class TestPostgresStateSpecifics:
    """The URL, the version table, error translation and the lock."""

    def test_a_fresh_database_is_at_version_zero_and_untouched(self) -> None:
        with postgres_database(prefix="aios_mesh_state") as url:
            state = PostgresState(url)
            assert state.version("review") == 0
            with psycopg.connect(url) as conn:
                row = conn.execute("SELECT to_regclass(%s)", (VERSION_TABLE,)).fetchone()
                assert row == (None,)  # reading created nothing
            assert state.migrate("review", [Migration(1, ())]) == 1
            with psycopg.connect(url) as conn:
                rows = conn.execute(f"SELECT store, version FROM {VERSION_TABLE}").fetchall()
            assert rows == [("review", 1)]
            state.close()

    def test_from_url_and_export(self, database: str) -> None:
        import aios_mesh_postgres

        assert "PostgresState" in aios_mesh_postgres.__all__
        state = PostgresState.from_url(parse_url(f"{database}?connect_timeout_s=2"))
        assert isinstance(state, SharedState)
        assert state.connect_timeout_s == 2.0
        assert "connect_timeout_s" not in state.url
        assert state.version("jobs_from_url") == 0
        state.close()
        with pytest.raises(ConfigError, match="unknown option"):
            PostgresState.from_url(parse_url(database), table="x")

    @pytest.mark.parametrize("url", ["sqlite:///x.db", "host=127.0.0.1 password=hunter2"])
    def test_only_postgresql_urls(self, url: str) -> None:
        with pytest.raises(ConfigError) as info:
            PostgresState(url)
        assert "hunter2" not in str(info.value)

    def test_store_names_are_plain(self, database: str) -> None:
        state = PostgresState(database)
        for bad in ["", "../x", "a b", "x'; DROP TABLE y; --"]:
            with pytest.raises(ConfigError):
                state.migrate(bad, [])
            with pytest.raises(ConfigError):
                state.version(bad)
        state.close()

    def test_unreachable_server_never_shows_the_password(self) -> None:
        url = f"postgresql://mesh:s3cr%40t-pw@127.0.0.1:{free_port()}/db?connect_timeout_s=1"
        state = PostgresState.from_url(parse_url(url))
        assert "s3cr" not in repr(state)
        for call in (lambda: state.version("jobs"),
                     lambda: state.migrate("jobs", [Migration(1, ())]),
                     lambda: state.connect("jobs", [])):
            with pytest.raises(BackendUnavailable) as info:
                call()
            err = info.value
            text = f"{err} {err.hint} {err.details} {err.to_dict()}"
            assert "s3cr" not in text
            assert "***" in text
            assert err.hint and "PostgreSQL" in err.hint
            assert err.retryable
        state.close()

    def test_a_failing_statement_is_an_integrity_error(self, database: str) -> None:
        state = PostgresState(database)
        steps = [Migration(1, ("CREATE TABLE pg_fail (id INT PRIMARY KEY)",)),
                 Migration(2, ("ALTER TABLE pg_fail ADD COLUMN x INT",
                               "INSERT INTO pg_fail (id) VALUES (1)",
                               "INSERT INTO pg_fail (id) VALUES (1)"))]
        with pytest.raises(IntegrityError) as info:
            state.migrate("pg_fail", steps)
        err = info.value
        assert "migration 2 of store 'pg_fail' failed at statement 3" in str(err)
        assert "stays at version 1" in (err.hint or "")
        assert err.details["sqlstate"] == "23505"  # unique_violation
        assert isinstance(err.__cause__, psycopg.Error)
        # the good step before the broken one is kept (one transaction per step)
        assert state.version("pg_fail") == 1
        assert _count(database, "pg_fail") == 0
        state.close()

    def test_statements_may_hold_several_commands_and_percent_signs(self, database: str
                                                                    ) -> None:
        state = PostgresState(database)
        db = state.connect("pg_multi", [Migration(1, (
            "CREATE TABLE pg_multi (note TEXT); INSERT INTO pg_multi VALUES ('50%')",))])
        try:
            assert db.autocommit
            assert db.execute("SELECT note FROM pg_multi").fetchall() == [("50%",)]
        finally:
            db.close()
            state.close()

    def test_a_migration_waits_for_the_lock_of_its_store_only(self, database: str) -> None:
        state, other = PostgresState(database), PostgresState(database)
        with psycopg.connect(database) as holder:  # another replica, mid-migration
            holder.execute("SELECT pg_advisory_xact_lock(hashtext(%s))",
                           ("aios_mesh:pg_locked",))
            assert other.migrate("pg_free", [Migration(1, ())]) == 1  # not blocked
            done = threading.Event()

            def migrate() -> None:
                state.migrate("pg_locked", [Migration(1, ())])
                done.set()

            worker = threading.Thread(target=migrate)
            worker.start()
            time.sleep(0.5)
            assert not done.is_set()  # waits for the holder's transaction
            holder.rollback()
        worker.join(timeout=30)
        assert done.is_set()
        assert state.version("pg_locked") == 1
        state.close()
        other.close()

    def test_close_releases_and_the_state_reconnects(self, database: str) -> None:
        state = PostgresState(database)
        state.migrate("pg_close", [Migration(1, ())])
        state.close()
        assert state.version("pg_close") == 1
        state.close()

    def test_a_dropped_connection_is_reopened(self, database: str) -> None:
        state = PostgresState(database)
        assert state.version("pg_drop") == 0
        with psycopg.connect(database, autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                          "WHERE datname = current_database() AND pid <> pg_backend_pid()")
        with contextlib.suppress(BackendUnavailable):  # the kept connection died
            state.version("pg_drop")
        assert state.migrate("pg_drop", [Migration(1, ())]) == 1
        state.close()
