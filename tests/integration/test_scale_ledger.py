"""The scale-out row ledger on both shared states: the state folder's sqlite and a real
PostgreSQL (what every node of a multi-machine Ray cluster shares). Claims race from many
threads and connections; exactly one wins each row."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from aios_mesh.scale import JobVersionChanged, RowLedger, row_record_id
from aios_mesh.state import open_state

pytestmark = pytest.mark.integration


@pytest.fixture(params=["sqlite", "postgresql"])
def state_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str | None]:
    if request.param == "sqlite":
        yield None
        return
    from aios_mesh_postgres.testing import postgres_database

    with postgres_database(prefix="aios_mesh_scale") as url:
        yield url


def test_rows_move_through_the_ledger_and_claims_race(state_url: str | None,
                                                      tmp_path: Path) -> None:
    ledgers = [RowLedger(open_state(state_url, folder=tmp_path)) for _ in range(4)]
    first = ledgers[0]
    assert first.begin("job", "upper@1") == []

    # 4 connections x 50 rows, every row claimed by all of them at once: one claim each
    def claim_all(ledger: RowLedger) -> list[str]:
        return [r for r in (ledger.claim("job", f"r{i}") for i in range(50)) if r]

    with ThreadPoolExecutor(4) as pool:
        won = [rid for part in pool.map(claim_all, ledgers) for rid in part]
    assert sorted(won) == sorted(row_record_id("job", f"r{i}") for i in range(50))
    assert first.count("job") == {"running": 50}

    first.answer("job", "r1", {"id": "r1", "outcome": "ok"})
    first.settle("job", "r1")
    first.reset("job", "r2")  # a dead worker's row without a record: runs again
    rows = first.rows("job", ["r1", "r2", "r3"])
    assert rows["r1"].state == "done" and rows["r1"].result == {"id": "r1", "outcome": "ok"}
    assert "r2" not in rows and rows["r3"].state == "running"
    assert first.claim("job", "r2") == row_record_id("job", "r2")  # same record id again
    assert row_record_id("job", "r2") != row_record_id("other-job", "r2")

    with pytest.raises(JobVersionChanged) as info:
        ledgers[1].begin("job", "upper@2")
    assert info.value.hint
    (change,) = ledgers[2].begin("job", "upper@2", force=True)
    assert change.endswith("upper@1 -> upper@2")
    assert ledgers[3].begin("job", "upper@2") == [change]  # every connection sees it
    for ledger in ledgers:
        ledger.close()
