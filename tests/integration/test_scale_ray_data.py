"""Bulk enrichment on Ray Data against a real Ray instance (one per module, 2 CPUs): every
row of a Dataset through a capability in Ray workers, exactly one result and one decision
record per row — across a re-executed job, a block re-executed after its worker was
SIGKILLed mid-batch, and rows a dead worker left in flight; malformed rows fail alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sqlite3
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
import ray

from aios_mesh.scale import MeshFactory, RowLedger, map_dataset, write_results
from aios_mesh.scale.testing import demo_mesh

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module", autouse=True)
def ray_instance() -> Iterator[None]:
    old = os.environ.get("PYTHONPATH")
    # Ray workers import this checkout's packages
    os.environ["PYTHONPATH"] = os.pathsep.join([str(ROOT), *([old] if old else [])])
    try:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    finally:
        if old is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = old
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    try:
        yield
    finally:
        ray.shutdown()


def _rows(count: int) -> list[dict[str, Any]]:
    return [{"id": f"r{i}", "text": f"invoice {i}", "n": i} for i in range(count)]


def _records(state: Path) -> list[dict[str, Any]]:
    async def read() -> list[dict[str, Any]]:
        async with demo_mesh(str(state)) as mesh:
            return [e.record for e in await mesh.port("audit").read(0, 100_000)]
    return asyncio.run(read())


def _read_jsonl(files: list[Path]) -> list[dict[str, Any]]:
    return [json.loads(line) for f in files for line in f.read_text().splitlines() if line]


def test_every_row_once_with_its_record_and_a_rerun_calls_nothing(tmp_path: Path) -> None:
    state = tmp_path / "state"
    rows = _rows(300)
    rows[17] = {"text": "no id", "n": 1}                  # malformed: no id
    rows[42] = {"id": "r42", "text": "bad n", "n": "x"}   # malformed: n is no integer
    factory = MeshFactory(build="aios_mesh.scale.testing:demo_mesh", args=(str(state),))
    results = map_dataset(ray.data.from_items(rows, override_num_blocks=4), factory, "upper",
                          job_id="job-1", tenant="acme", batch_size=64, workers=1)
    first = _read_jsonl(write_results(results, tmp_path / "jsonl"))  # runs the job
    second_files = write_results(results, tmp_path / "parquet", format="parquet")  # again
    second = [r for f in second_files for r in pq.read_table(f).to_pylist()]

    assert len(first) == len(second) == 300
    by_id = {r["id"]: r for r in first if r["id"] is not None}
    assert len(by_id) == 299
    ok = [r for r in first if r["outcome"] == "ok"]
    assert len(ok) == 298
    assert all(json.loads(r["output"])["text"] == f"INVOICE {r['id'][1:]}" for r in ok)
    assert json.loads(by_id["r42"]["error"])["type"] == "InvalidInput"
    assert by_id["r42"]["outcome"] == "rejected" and by_id["r42"]["record_id"]
    (no_id,) = [r for r in first if r["id"] is None]
    assert no_id["record_id"] is None and json.loads(no_id["error"])["type"] == "InvalidInput"
    # the second execution answered every row from the ledger: same record ids and outputs
    assert sorted(map(str, second), key=str) == sorted(map(str, first), key=str)

    records = _records(state)
    counts = Counter(r["record_id"] for r in records)
    assert len(records) == 299 and max(counts.values()) == 1  # exactly one record per row
    assert set(counts) == {r["record_id"] for r in by_id.values()}
    rejected = [r for r in records if r["outcome"] == "rejected"]
    assert [r["record_id"] for r in rejected] == [by_id["r42"]["record_id"]]


def test_worker_killed_mid_batch_and_rows_left_in_flight(tmp_path: Path) -> None:
    state = tmp_path / "state"
    rows = _rows(200)
    rows[130] = {"id": "r130", "text": "crash-once", "n": 130}  # SIGKILLs its worker once
    factory = MeshFactory(build="aios_mesh.scale.testing:demo_mesh", args=(str(state),))
    results = map_dataset(ray.data.from_items(rows, override_num_blocks=4), factory, "upper",
                          job_id="job-2", tenant="acme", batch_size=50, workers=1)
    out = _read_jsonl(write_results(results, tmp_path / "out"))
    assert (state / "crashed").exists()  # the worker did die mid-batch
    assert sorted(r["id"] for r in out) == sorted(r["id"] for r in rows)
    assert all(r["outcome"] == "ok" for r in out)
    records = _records(state)
    counts = Counter(r["record_id"] for r in records)
    assert len(records) == 200 and max(counts.values()) == 1

    # a worker that died between its record and the row's settle: two rows left in flight,
    # one with its answer written ahead (answered), one without (running) -> the next
    # execution settles the first from the ledger and reports the second's answer as lost;
    # neither is called again
    db = sqlite3.connect(state / "scale.db")
    with contextlib.closing(db), db:
        db.execute("UPDATE scale_rows SET state = 'answered' WHERE job_id = 'job-2' AND "
                   "row_id = 'r5'")
        db.execute("UPDATE scale_rows SET state = 'running', result = NULL WHERE "
                   "job_id = 'job-2' AND row_id = 'r6'")
    again = {r["id"]: r for r in _read_jsonl(write_results(results, tmp_path / "again"))}
    assert again["r5"]["outcome"] == "ok"
    assert again["r6"]["output"] is None
    assert json.loads(again["r6"]["error"])["type"] == "IntegrityError"
    assert again["r6"]["record_id"] == next(r["record_id"] for r in out if r["id"] == "r6")
    assert len(_records(state)) == 200  # neither row was called again
    ledger = RowLedger(demo_mesh(str(state)).state)
    assert ledger.count("job-2") == {"done": 200}
    ledger.close()


def test_a_job_resumed_with_another_capability_version_is_refused_unless_forced(
        tmp_path: Path) -> None:
    from aios_mesh.scale import JobVersionChanged, MeshRows

    state = str(tmp_path / "state")
    v1 = MeshFactory(build="aios_mesh.scale.testing:demo_mesh", args=(state, "1"))
    v2 = MeshFactory(build="aios_mesh.scale.testing:demo_mesh", args=(state, "2"))
    results = map_dataset(ray.data.from_items(_rows(20)), v1, "upper", job_id="job-3",
                          tenant="acme")
    assert len(_read_jsonl(write_results(results, tmp_path / "v1"))) == 20
    with pytest.raises(JobVersionChanged) as info:  # what each Ray worker does first
        MeshRows(v2, "upper", "job-3", "acme", "id", 4)
    assert "upper@1" in info.value.message and "upper@2" in info.value.message
    assert info.value.hint
    forced = MeshRows(v2, "upper", "job-3", "acme", "id", 4, force=True)
    (change,) = forced.ledger.begin("job-3", "upper@2")
    assert change.endswith("upper@1 -> upper@2")  # recorded on the job
    del forced


def test_a_redis_quota_is_exact_across_workers_and_a_rerun_spends_nothing(
        tmp_path: Path) -> None:
    """One job, two tenants (the rows name theirs): acme's budget is exact across the
    workers, and acme running out does not stop beta's rows."""
    from aios_mesh_redis.testing import redis_server

    state = str(tmp_path / "state")
    with redis_server(tmp_path / "redis") as server:
        factory = MeshFactory(build="aios_mesh.scale.testing:demo_mesh",
                              args=(state, "1", f"redis://{server.address}/0", 50))
        rows = [*_rows(120), *({"id": f"b{i}", "text": f"beta {i}", "n": i,
                                "tenant": "beta"} for i in range(30))]
        results = map_dataset(ray.data.from_items(rows, override_num_blocks=6),
                              factory, "upper", job_id="job-4", tenant="acme", batch_size=25,
                              workers=2, num_cpus=0.5, tenant_field="tenant")
        first = _read_jsonl(write_results(results, tmp_path / "first"))
        again = _read_jsonl(write_results(results, tmp_path / "again"))  # ledger: no calls
    acme = Counter(r["outcome"] for r in first if r["id"].startswith("r"))
    assert acme == {"ok": 50, "rejected": 70}  # two workers, one budget: not one over
    beta = [r for r in first if r["id"].startswith("b")]
    assert len(beta) == 30 and all(r["outcome"] == "ok" for r in beta)
    refused = [json.loads(r["error"]) for r in first if r["outcome"] == "rejected"]
    assert {e["type"] for e in refused} == {"QuotaExceeded"}
    assert sorted(map(str, again)) == sorted(map(str, first))
    records = _records(Path(state))
    assert len(records) == 150  # every row its own record, the refused ones too
    assert Counter((r["tenant"], r["outcome"]) for r in records) == {
        ("acme", "ok"): 50, ("acme", "rejected"): 70, ("beta", "ok"): 30}
