"""Exactly once under kill -9: a real gateway (uvicorn) running a bulk job is killed again
and again mid-job and restarted; in the end every row has exactly one decision record in the
audit log, with the row's own record id, and its answer."""

from __future__ import annotations

import contextlib
import json
import random
import sqlite3
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from aios_mesh.gateway.jobs import row_record_id
from aios_mesh.processes import LocalProcess
from aios_mesh.testing.processes import free_port, start_process, wait_for_port

pytestmark = pytest.mark.integration

ACME = {"Authorization": "Bearer acme:batch"}
ROOT = Path(__file__).resolve().parents[2]


@contextlib.contextmanager
def gateway(port: int, env: dict[str, str]) -> Iterator[LocalProcess]:
    """One uvicorn process serving ``jobs_app`` (until gw-core's fixture serves any app)."""
    cmd = [sys.executable, "-m", "uvicorn", "--factory", "tests.integration.jobs_app:app",
           "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"]
    with start_process(cmd, name="jobs-gateway", cwd=ROOT, env={"PYTHONPATH": str(ROOT), **env},
                       ready=lambda: wait_for_port(port, timeout=60)) as proc:
        yield proc


def answered(ledger: Path) -> int:
    """Rows a killed gateway left answered but not settled: their record may be in the
    audit log already (the window a rerun would record twice)."""
    with contextlib.closing(sqlite3.connect(ledger)) as db:
        row = db.execute("SELECT COUNT(*) FROM jobs_rows WHERE state = 'answered'").fetchone()
    return int(row[0])


def progress(url: str, job_id: str) -> dict[str, Any]:
    answer = httpx.get(f"{url}/v1/jobs/{job_id}", headers=ACME, timeout=10)
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    return body


def test_rows_run_exactly_once_when_the_gateway_is_killed_mid_job(tmp_path: Path) -> None:
    rows = 3000  # enough that the job outlives several gateway lives on a quiet host
    env = {"JOBS_STATE": str(tmp_path / "state"), "JOBS_LEASE_S": "1"}
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    body = "\n".join(json.dumps({"n": i}) for i in range(rows))
    chance = random.Random(16)
    kills = 0
    with gateway(port, env):
        answer = httpx.post(f"{url}/v1/jobs?capability=double", content=body, timeout=10,
                            headers={**ACME, "Content-Type": "application/x-ndjson"})
        assert answer.status_code == 202, answer.text
        job_id = answer.json()["id"]
    seen_done = left_answered = 0
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        with gateway(port, env) as proc:
            # a killed runner's lease (1 s) runs out before this one resumes: kill after that
            moved_at = time.monotonic() + chance.uniform(1.1, 2.0)
            while time.monotonic() < moved_at:
                state = progress(url, job_id)
                if state["status"] == "completed":
                    break
                time.sleep(0.05)
            state = progress(url, job_id)
            if state["status"] == "completed" or kills >= 8:
                while progress(url, job_id)["status"] != "completed":
                    assert time.monotonic() < deadline, "the job did not finish"
                    time.sleep(0.2)
                break
            proc.kill()
            kills += 1
            seen_done = max(seen_done, state["counts"]["done"])
            left_answered += answered(tmp_path / "state" / "jobs.db")
    assert kills >= 3, "the job ended before the gateway was killed mid-job"
    assert 0 < seen_done < rows
    # Whether a kill lands between a row's answer and its settlement is chance (it missed in
    # CI once), so it is reported, not asserted: test_jobs_store's
    # test_a_takeover_settles_what_a_dead_runner_left builds each of those states on purpose.
    print(f"kills={kills} rows left answered-but-unsettled={left_answered}")
    with gateway(port, env):
        state = progress(url, job_id)
        lines = [json.loads(x) for x in httpx.get(f"{url}/v1/jobs/{job_id}/results",
                                                  headers=ACME, timeout=10).text.splitlines()]
    assert state["status"] == "completed"
    assert state["counts"] == {"total": rows, "done": rows, "failed": 0, "cancelled": 0,
                               "running": 0, "pending": 0}
    assert [line["row"] for line in lines] == list(range(rows))
    assert all(line["output"] == {"n": i, "double": 2 * i} for i, line in enumerate(lines))
    audit = [json.loads(x)["record"] for x in
             (tmp_path / "state" / "audit.jsonl").read_text().splitlines()]
    ids = [r["record_id"] for r in audit]
    expected = [row_record_id(job_id, i) for i in range(rows)]
    assert sorted(ids) == sorted(expected)  # none lost, none twice
    assert all(line["record_id"] == expected[line["row"]] for line in lines)
