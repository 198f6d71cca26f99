"""The embedded shared state (one sqlite file per store) passes the state conformance suite."""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from aios_mesh.state import SqliteState
from aios_mesh.testing.conformance.state import StateBasic, StateConcurrency, StateFailures


class TestSqliteState(StateBasic, StateFailures, StateConcurrency):
    @pytest.fixture
    def adapter(self, tmp_path: Path) -> Iterator[SqliteState]:
        state = SqliteState(tmp_path)
        yield state
        state.close()

    @pytest.fixture
    def make_state(self, tmp_path: Path) -> Callable[[], SqliteState]:
        return lambda: SqliteState(tmp_path)

    @pytest.fixture
    def count_rows(self, adapter: SqliteState) -> Callable[[str, str], int]:
        def count(store: str, table: str) -> int:
            with contextlib.closing(sqlite3.connect(adapter.path(store))) as db:
                return int(db.execute(f"SELECT count(*) FROM {table}").fetchone()[0])
        return count
