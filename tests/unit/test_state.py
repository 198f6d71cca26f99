"""The shared-state seam on its embedded default: migrations applied once, in order, under a
lock; a numbering mistake or a store newer than the code is refused."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import pytest

from aios_mesh.errors import ConfigError, IntegrityError
from aios_mesh.review import MIGRATIONS, ReviewQueue
from aios_mesh.state import Migration, SharedState, SqliteState

V1 = Migration(1, ("CREATE TABLE t (id INTEGER PRIMARY KEY)",))
V2 = Migration(2, ("ALTER TABLE t ADD COLUMN name TEXT",
                   "INSERT INTO t (id, name) VALUES (1, 'seed')"))


def test_migrations_run_once_and_in_order(tmp_path: Path) -> None:
    state = SqliteState(tmp_path)
    assert isinstance(state, SharedState)
    assert state.version("jobs") == 0
    assert state.migrate("jobs", [V1]) == 1
    db = state.connect("jobs", [V1, V2])
    assert db.execute("SELECT id, name FROM t").fetchall() == [(1, "seed")]
    assert state.migrate("jobs", [V1, V2]) == 2  # again: nothing re-applied
    assert db.execute("SELECT count(*) FROM t").fetchone() == (1,)
    assert state.version("jobs") == 2


def test_concurrent_migrations_apply_each_step_once(tmp_path: Path) -> None:
    errors: list[BaseException] = []

    def migrate() -> None:
        try:  # a state object per thread, like separate processes on one folder
            SqliteState(tmp_path).migrate("jobs", [V1, V2])
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=migrate) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    db = sqlite3.connect(tmp_path / "jobs.db")
    assert db.execute("SELECT count(*) FROM t").fetchone() == (1,)


def test_a_failed_migration_leaves_the_previous_version(tmp_path: Path) -> None:
    state = SqliteState(tmp_path)
    broken = Migration(2, ("ALTER TABLE t ADD COLUMN name TEXT", "NOT SQL AT ALL"))
    state.migrate("jobs", [V1])
    with pytest.raises(IntegrityError, match="statement 2"):
        state.migrate("jobs", [V1, broken])
    assert state.version("jobs") == 1
    assert state.migrate("jobs", [V1, V2]) == 2  # the fixed migration applies cleanly


@pytest.mark.parametrize("versions", [[2], [1, 1], [1, 3], [0, 1]])
def test_misnumbered_migrations_are_refused(tmp_path: Path, versions: list[int]) -> None:
    with pytest.raises(ConfigError, match="numbered"):
        SqliteState(tmp_path).migrate("jobs", [Migration(v, ()) for v in versions])


def test_a_store_newer_than_the_code_is_refused(tmp_path: Path) -> None:
    state = SqliteState(tmp_path)
    state.migrate("jobs", [V1, V2])
    with pytest.raises(IntegrityError, match="newer"):
        state.migrate("jobs", [V1])


def test_store_names_are_plain(tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        SqliteState(tmp_path).migrate("../escape", [V1])


def test_a_review_db_from_before_the_seam_migrates_in_place(tmp_path: Path) -> None:
    old = sqlite3.connect(tmp_path / "review.db")
    for statement in MIGRATIONS[0].statements:  # the schema as it first shipped
        old.execute(statement)
    old.commit()
    old.close()
    queue = ReviewQueue(tmp_path / "review.db")
    item = queue.enqueue(record_id="r", tenant="acme", capability="c", reason="why",
                         payload={}, proposed=None)
    assert queue.get(item).status == "pending"
    assert SqliteState(tmp_path).version("review") == len(MIGRATIONS)
    queue.close()
