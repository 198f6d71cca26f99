"""The mesh on a multi-node Ray cluster (``ray.cluster_utils.Cluster``: a head and a worker
node on this machine, one CPU each): a Ray Data job places mesh workers on both nodes, the
worker node is killed mid-job, and the job still completes with every row answered exactly
once and every record present, once, in a verifiable audit chain.
"""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import ray
from ray.cluster_utils import Cluster

from aios_mesh.scale import MeshFactory, map_dataset, write_results
from aios_mesh.scale.testing import demo_mesh

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    old = os.environ.get("PYTHONPATH")
    # every node's workers import this checkout's packages
    os.environ["PYTHONPATH"] = os.pathsep.join([str(ROOT), *([old] if old else [])])
    running = None
    try:
        running = Cluster(initialize_head=True,
                          head_node_args={"num_cpus": 1, "include_dashboard": False})
        running.add_node(num_cpus=1)
        ray.init(address=running.address, log_to_driver=False)
        ray.data.DataContext.get_current().enable_progress_bars = False
        yield running
    finally:
        if old is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = old
        ray.shutdown()
        if running is not None:
            running.shutdown()


def _done_rows(state: Path, job_id: str) -> int:
    try:
        db = sqlite3.connect(state / "scale.db", timeout=5)
        try:
            return int(db.execute("SELECT COUNT(*) FROM scale_rows WHERE job_id = ? AND "
                                  "state = 'done'", (job_id,)).fetchone()[0])
        finally:
            db.close()
    except sqlite3.Error:
        return 0


def test_a_node_killed_mid_job_loses_and_duplicates_nothing(cluster: Cluster,
                                                            tmp_path: Path) -> None:
    state = tmp_path / "state"
    total = 400
    rows = [{"id": f"inv-{i}", "text": f"invoice {i}", "n": i, "delay": 0.01}
            for i in range(total)]
    factory = MeshFactory(build="aios_mesh.scale.testing:demo_mesh", args=(str(state),))
    results = map_dataset(ray.data.from_items(rows, override_num_blocks=16), factory, "upper",
                          job_id="cluster-job", tenant="acme", batch_size=25, workers=2,
                          num_cpus=0.5, ray_remote_args={"scheduling_strategy": "SPREAD"})
    (worker_node,) = [n for n in cluster.worker_nodes]
    killed: dict[str, Any] = {}

    def kill_mid_job() -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            done = _done_rows(state, "cluster-job")
            if done >= total // 4:
                killed["done_before"] = done
                cluster.remove_node(worker_node, allow_graceful=False)
                killed["at"] = time.monotonic()
                return
            time.sleep(0.05)

    killer = threading.Thread(target=kill_mid_job)
    killer.start()
    files = write_results(results, tmp_path / "out")
    killer.join()
    out = [json.loads(line) for f in files for line in f.read_text().splitlines() if line]

    assert "at" in killed, "the job ended before the node could be killed"
    assert killed["done_before"] < total  # killed mid-job
    per_id = Counter(r["id"] for r in out)
    lost = [r["id"] for r in rows if per_id[r["id"]] == 0]
    duplicated = [i for i, n in per_id.items() if n > 1]
    assert (lost, duplicated) == ([], [])
    assert all(r["outcome"] == "ok" for r in out)
    nodes = Counter(json.loads(r["output"])["node"] for r in out)
    assert len(nodes) == 2, f"rows were answered on {dict(nodes)}"  # both nodes worked

    async def audit() -> tuple[list[dict[str, Any]], Any]:
        async with demo_mesh(str(state)) as mesh:
            log = mesh.port("audit")
            return [e.record for e in await log.read(0, 100_000)], await log.verify()

    records, report = asyncio.run(audit())
    counts = Counter(r["record_id"] for r in records)
    assert len(records) == total and max(counts.values()) == 1
    assert set(counts) == {r["record_id"] for r in out}
    assert report.ok, report
    print(f"node killed after {killed['done_before']} of {total} rows; rows per node "
          f"{sorted(nodes.values())}; lost 0, duplicated 0, {len(records)} records verified")
