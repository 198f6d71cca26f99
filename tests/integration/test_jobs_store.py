"""The bulk job ledger and its runner on the shared-state seam: sqlite (embedded) and a real
PostgreSQL server, driven through a real embedded mesh (JSONL audit log)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aios_mesh_postgres import PostgresState
from aios_mesh_postgres.testing import postgres_database

from aios_mesh import Mesh
from aios_mesh.gateway.jobs import (
    JobNotFound,
    JobRunner,
    JobStore,
    parse_jsonl,
    recorded_ids,
    row_record_id,
)
from aios_mesh.state import SqliteState
from tests.integration.jobs_app import make_mesh

pytestmark = pytest.mark.integration


@pytest.fixture
def database() -> Iterator[str]:  # one per test: a runner works every job it finds
    with postgres_database(prefix="aios_mesh_jobs") as url:
        yield url


@pytest.fixture(params=["sqlite", "postgresql"])
def state(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    if request.param == "sqlite":
        yield SqliteState(tmp_path / "state")
        return
    state = PostgresState(request.getfixturevalue("database"))
    yield state
    state.close()


@pytest.fixture
def mesh(tmp_path: Path) -> Iterator[Mesh]:
    mesh = make_mesh(tmp_path / "mesh")
    yield mesh
    mesh.close()


def rows(*payloads: Any) -> bytes:
    return b"\n".join(p if isinstance(p, bytes) else json.dumps(p).encode()
                      for p in payloads)


def audit(mesh: Mesh) -> list[dict[str, Any]]:
    path = mesh.config.state_path / "audit.jsonl"
    return [json.loads(line)["record"] for line in path.read_text().splitlines()]


def test_a_job_belongs_to_its_tenant(state: Any) -> None:
    store = JobStore(state)
    job = store.create(tenant="acme", caller="svc", capability="double",
                       rows=parse_jsonl(rows({"n": 1}, {"n": 2})))
    assert store.get("acme", job.id).to_dict()["counts"] == {
        "total": 2, "done": 0, "failed": 0, "cancelled": 0, "running": 0, "pending": 2}
    assert job.id in [j.id for j in store.recent("acme")]
    assert job.id not in [j.id for j in store.recent("globex")]
    for call in (lambda: store.get("globex", job.id), lambda: store.cancel("globex", job.id),
                 lambda: store.results("globex", job.id), lambda: store.get("acme", "nope")):
        with pytest.raises(JobNotFound) as err:
            call()
        assert err.value.hint and "acme" not in err.value.message  # no leak of the owner
    store.close()


def test_one_runner_holds_a_job_until_its_lease_runs_out(state: Any) -> None:
    store = JobStore(state)
    job = store.create(tenant="acme", caller="svc", capability="double",
                       rows=parse_jsonl(rows({"n": 1})))
    claimed = store.claim("a", 60)
    assert claimed == (job.id, "acme", "svc", "double")
    assert store.claim("b", 60) is None
    assert store.start_row(job.id, 0, "b") is None  # not b's job
    assert store.start_row(job.id, 0, "a") == row_record_id(job.id, 0)
    assert store.start_row(job.id, 0, "a") is None  # already running
    assert store.renew(job.id, "a", 0.0) and not store.renew(job.id, "b", 60)
    assert store.in_flight(job.id) == [(0, "running", row_record_id(job.id, 0))]
    store.close()


async def test_a_job_runs_every_row_once_in_order(state: Any, mesh: Mesh) -> None:
    store = JobStore(state)
    data = rows({"n": 1}, b"{not json", b"", {"n": -3}, {"text": "no n"}, {"n": 4})
    job = store.create(tenant="acme", caller="svc", capability="double",
                       rows=parse_jsonl(data))
    runner = JobRunner(mesh, store, lease_s=10)
    async with runner.running():
        runner.poke()
        for _ in range(200):
            if store.get("acme", job.id).finished_at:
                break
            await asyncio.sleep(0.05)
    done = store.get("acme", job.id)
    assert done.status == "completed" and done.started_at and done.finished_at
    assert done.to_dict()["counts"] == {"total": 5, "done": 2, "failed": 3, "cancelled": 0,
                                        "running": 0, "pending": 0}
    lines = [r.to_dict() for r in store.results("acme", job.id)]
    assert [(r["row"], r["line"], r["status"]) for r in lines] == [
        (0, 1, "done"), (1, 2, "failed"), (2, 4, "failed"), (3, 5, "failed"), (4, 6, "done")]
    assert lines[0]["output"] == {"n": 1, "double": 2}
    assert lines[4]["output"] == {"n": 4, "double": 8}
    assert lines[1]["problem"]["code"] == "invalid_input" and lines[1]["record_id"] is None
    assert "line 2" in lines[1]["problem"]["detail"]
    assert lines[2]["problem"]["code"] == "invalid_input"  # the handler's ValueError
    assert lines[3]["problem"]["status"] == 422
    records = {r["record_id"]: r for r in audit(mesh)}
    for line in (lines[0], lines[2], lines[3], lines[4]):
        assert line["record_id"] == row_record_id(job.id, line["row"])
        assert records[line["record_id"]]["mode"] == "bulk"
        assert line["problem" if line["status"] == "failed" else "output"]
    assert len(records) == 4 == len(audit(mesh))  # one record per row that reached the mesh
    store.close()


async def test_cancel_stops_rows_not_started(state: Any, mesh: Mesh) -> None:
    store = JobStore(state)
    job = store.create(tenant="acme", caller="svc", capability="double",
                       rows=parse_jsonl(rows(*({"n": i} for i in range(6)))))
    cancelled = store.cancel("acme", job.id)
    assert cancelled.status == "cancelled" and cancelled.finished_at
    assert cancelled.to_dict()["counts"]["cancelled"] == 6
    assert store.claim("x", 10) is None
    assert {r.to_dict()["status"] for r in store.results("acme", job.id)} == {"cancelled"}
    store.close()


async def test_a_takeover_settles_what_a_dead_runner_left(state: Any, mesh: Mesh) -> None:
    """The three states a killed runner can leave a row in, reconciled by the next one."""
    store = JobStore(state)
    job = store.create(tenant="acme", caller="svc", capability="double",
                       rows=parse_jsonl(rows({"n": 1}, {"n": 2}, {"n": 3})))
    assert store.claim("dead", 0.0) == (job.id, "acme", "svc", "double")
    ids = [store.start_row(job.id, i, "dead") for i in range(3)]
    assert None not in ids
    # row 0: answered and recorded; row 1: recorded, answer not written; row 2: nothing.
    store.answer_row(job.id, 0, "dead", final="done", result={"outcome": "ok",
                                                              "output": {"n": 1, "double": 2}})
    for i in (0, 1):
        await mesh.ainvoke_row("double", {"n": i + 1}, tenant="acme", record_id=ids[i] or "")
    assert set(await recorded_ids(mesh.ports.audit, [*ids, "missing"])) == {ids[0], ids[1]}
    runner = JobRunner(mesh, store)
    assert store.claim(runner.owner, 10) == (job.id, "acme", "svc", "double")  # lease was 0 s
    await runner.run_job(job.id, "acme", "svc", "double")
    lines = [r.to_dict() for r in store.results("acme", job.id)]
    assert [line["status"] for line in lines] == ["done", "failed", "done"]
    assert lines[0]["output"] == {"n": 1, "double": 2}
    assert "answer was lost" in lines[1]["problem"]["detail"]
    assert lines[1]["problem"]["record_id"] == ids[1]
    assert lines[2]["output"] == {"n": 3, "double": 6}
    counted = [r["record_id"] for r in audit(mesh)]
    assert sorted(counted) == sorted(ids)  # each row exactly once
    assert store.get("acme", job.id).status == "completed"
    store.close()
