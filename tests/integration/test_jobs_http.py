"""The /v1/jobs endpoints against real gateway processes (uvicorn): one on sqlite with a job
folder, and two replicas sharing one PostgreSQL (ledger and audit log)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import pytest
from aios_mesh_postgres.testing import postgres_database

from aios_mesh.gateway.jobs import row_record_id
from aios_mesh.testing.processes import free_port
from tests.integration.test_jobs_kill import gateway

pytestmark = pytest.mark.integration

ACME = {"Authorization": "Bearer acme:batch"}
GLOBEX = {"Authorization": "Bearer globex:batch"}
NDJSON = {"Content-Type": "application/x-ndjson"}


def submit(url: str, body: str | bytes, *, headers: dict[str, str] = ACME,
           query: str = "?capability=double", ctype: dict[str, str] = NDJSON) -> httpx.Response:
    return httpx.post(f"{url}/v1/jobs{query}", content=body, headers={**headers, **ctype},
                      timeout=10)


def wait_finished(url: str, job_id: str, headers: dict[str, str] = ACME) -> dict[str, Any]:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        job: dict[str, Any] = httpx.get(f"{url}/v1/jobs/{job_id}", headers=headers,
                                        timeout=10).json()
        if job["finished_at"]:
            return job
        time.sleep(0.1)
    raise AssertionError(f"job {job_id} did not finish")


def results(url: str, job_id: str, headers: dict[str, str] = ACME) -> list[dict[str, Any]]:
    answer = httpx.get(f"{url}/v1/jobs/{job_id}/results", headers=headers, timeout=10)
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"].startswith("application/x-ndjson")
    return [json.loads(line) for line in answer.text.splitlines()]


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("job-files")
    (folder / "batch").mkdir()
    (folder / "batch" / "ok.jsonl").write_text('{"n": 5}\n{"n": 6}\n')
    (folder.parent / "secret.jsonl").write_text('{"n": 1}\n')
    return folder


@pytest.fixture(scope="module")
def url(tmp_path_factory: pytest.TempPathFactory, files: Path) -> Iterator[str]:
    port = free_port()
    env = {"JOBS_STATE": str(tmp_path_factory.mktemp("state")), "JOBS_FILES": str(files)}
    with gateway(port, env):
        yield f"http://127.0.0.1:{port}"


def test_submit_poll_and_fetch_results(url: str) -> None:
    body = '{"n": 1}\n{"n": 2\n\n{"n": -1}\n{"n": 3}\n'
    answer = submit(url, body)
    assert answer.status_code == 202, answer.text
    job = answer.json()
    assert answer.headers["location"] == f"/v1/jobs/{job['id']}"
    assert job["capability"] == "double" and job["counts"]["total"] == 4
    done = wait_finished(url, job["id"])
    assert done["status"] == "completed" and done["started_at"] <= done["finished_at"]
    assert done["counts"] == {"total": 4, "done": 2, "failed": 2, "cancelled": 0,
                              "running": 0, "pending": 0}
    lines = results(url, job["id"])
    assert [(x["row"], x["line"], x["status"]) for x in lines] == [
        (0, 1, "done"), (1, 2, "failed"), (2, 4, "failed"), (3, 5, "done")]
    assert lines[0]["output"] == {"n": 1, "double": 2}
    assert lines[0]["record_id"] == row_record_id(job["id"], 0)
    assert lines[1]["problem"]["code"] == "invalid_input" and lines[1]["record_id"] is None
    assert lines[2]["problem"]["record_id"] == lines[2]["record_id"] == \
        row_record_id(job["id"], 2)
    listed = httpx.get(f"{url}/v1/jobs", headers=ACME, timeout=10).json()["jobs"]
    assert job["id"] in [j["id"] for j in listed]


def test_another_tenant_sees_no_job(url: str) -> None:
    job_id = submit(url, '{"n": 1}').json()["id"]
    for path in (f"/v1/jobs/{job_id}", f"/v1/jobs/{job_id}/results"):
        theirs = httpx.get(f"{url}{path}", headers=GLOBEX, timeout=10)
        unknown = httpx.get(f"{url}/v1/jobs/no-such-job", headers=GLOBEX, timeout=10)
        assert theirs.status_code == unknown.status_code == 404
        assert theirs.headers["content-type"] == "application/problem+json"
        assert theirs.json()["code"] == "job_not_found" and theirs.json()["hint"]
        assert theirs.json()["detail"].replace(job_id, "X") == \
            unknown.json()["detail"].replace("no-such-job", "X")  # no leak of existence
    assert httpx.post(f"{url}/v1/jobs/{job_id}/cancel", headers=GLOBEX,
                      timeout=10).status_code == 404
    assert job_id not in [j["id"] for j in
                          httpx.get(f"{url}/v1/jobs", headers=GLOBEX, timeout=10).json()["jobs"]]


def test_cancel_over_http(url: str) -> None:
    body = "\n".join(json.dumps({"n": i, "sleep": 0.2}) for i in range(40))
    job_id = submit(url, body).json()["id"]
    answer = httpx.post(f"{url}/v1/jobs/{job_id}/cancel", headers=ACME, timeout=10)
    assert answer.status_code == 200 and answer.json()["status"] == "cancelled"
    done = wait_finished(url, job_id)
    counts = done["counts"]
    assert done["status"] == "cancelled" and counts["cancelled"] > 0
    assert counts["done"] + counts["cancelled"] == 40 and counts["failed"] == 0
    statuses = {x["status"] for x in results(url, job_id)}
    assert statuses <= {"done", "cancelled"}


def test_a_file_under_the_job_folder(url: str) -> None:
    ref = {"Content-Type": "application/json"}
    answer = submit(url, json.dumps({"capability": "double", "file": "batch/ok.jsonl"}),
                    query="", ctype=ref)
    assert answer.status_code == 202, answer.text
    wait_finished(url, answer.json()["id"])
    assert [x["output"]["double"] for x in results(url, answer.json()["id"])] == [10, 12]
    for name, status in (("../secret.jsonl", 403), ("/etc/passwd", 422),
                         ("batch/missing.jsonl", 422), ("batch", 422)):
        refused = submit(url, json.dumps({"capability": "double", "file": name}), query="",
                         ctype=ref)
        assert refused.status_code == status, (name, refused.text)
        assert refused.json()["hint"]
    wrong = submit(url, json.dumps({"capability": "double", "path": "x"}), query="", ctype=ref)
    assert wrong.status_code == 422


@pytest.mark.parametrize(("kwargs", "status", "code"), [
    ({"headers": {}}, 401, "unauthenticated"),
    ({"headers": {"Authorization": "Bearer acme:unscoped"}}, 403, "forbidden"),
    ({"query": ""}, 422, "invalid_input"),
    ({"query": "?capability=nope"}, 403, "forbidden"),  # outside the key's scopes
    ({"query": "?capability=nope", "headers": {"Authorization": "Bearer acme:all"}}, 404,
     "unknown_capability"),
    ({"ctype": {"Content-Type": "text/csv"}}, 415, "unsupported_media_type"),
    ({"body": "\n\n"}, 422, "invalid_input"),
    ({"body": '{"n": 1}\n' * 8000}, 413, "payload_too_large"),
])
def test_bad_submissions_get_their_problem(url: str, kwargs: dict[str, Any], status: int,
                                           code: str) -> None:
    body = kwargs.pop("body", '{"n": 1}\n')
    before = len(httpx.get(f"{url}/v1/jobs", headers=ACME, timeout=10).json()["jobs"])
    answer = submit(url, body, **kwargs)
    assert answer.status_code == status, answer.text
    assert answer.headers["content-type"] == "application/problem+json"
    assert answer.json()["code"] == code and answer.json()["hint"]
    after = len(httpx.get(f"{url}/v1/jobs", headers=ACME, timeout=10).json()["jobs"])
    assert after == before  # nothing half-written


def test_two_replicas_share_jobs_on_postgresql(tmp_path: Path) -> None:
    with postgres_database(prefix="aios_mesh_jobs_http") as database, ExitStack() as stack:
        urls = []
        for name in ("a", "b"):
            port = free_port()
            stack.enter_context(gateway(port, {"JOBS_STATE": str(tmp_path / name),
                                               "JOBS_PG": database}))
            urls.append(f"http://127.0.0.1:{port}")
        a, b = urls
        body = "\n".join(json.dumps({"n": i, "sleep": 0.02}) for i in range(60))
        job_ids = [submit(a, body).json()["id"], submit(b, body).json()["id"]]
        for job_id in job_ids:  # each visible from the other replica, and finished there
            done = wait_finished(b if job_id == job_ids[0] else a, job_id)
            assert done["counts"]["done"] == 60
            lines = results(a, job_id)
            assert [x["output"]["double"] for x in lines] == [2 * i for i in range(60)]
            assert httpx.get(f"{b}/v1/jobs/{job_id}", headers=GLOBEX,
                             timeout=10).status_code == 404
        import psycopg

        with psycopg.connect(database) as conn:
            ids = [r[0] for r in conn.execute(
                "SELECT record->>'record_id' FROM audit_log").fetchall()]
        expected = [row_record_id(j, i) for j in job_ids for i in range(60)]
        assert sorted(ids) == sorted(expected)  # one record per row across both replicas
