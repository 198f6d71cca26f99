"""The gateway over HTTP, against a real ``aios-mesh gateway`` process (uvicorn): every
endpoint of the core (health, catalog, OpenAPI, invoke, stream, records, metrics) and each
bad input with its documented status and problem body.

The mesh it serves is ``tests/integration/gateway_app.py`` on the embedded backends; the
credentials are real API keys (``[gateway.auth]``, stored hashed in the state folder).
"""

from __future__ import annotations

import json
import re
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from openapi_spec_validator import validate

from aios_mesh.gateway.auth import KeyStore
from aios_mesh.gateway.testing import RunningGateway, running_gateway
from aios_mesh.state import SqliteState

REPO = Path(__file__).resolve().parents[2]
APP = "tests.integration.gateway_app:mesh"
#: name -> (tenant, caller, scopes); each becomes a real API key
KEYS: dict[str, tuple[str, str, list[str] | None]] = {
    "acme": ("acme", "acme-app", None), "acme-echo": ("acme", "echo-only", ["echo"]),
    "globex": ("globex", "globex-app", None), "initech": ("initech", "initech-app", None)}
TOKENS: dict[str, str] = {}
CONFIG = """
state_dir = "state"
max_payload_bytes = 4096
[backends]
registry = "memory://"
[retry]
max_attempts = 1
[breaker]
failure_threshold = 2
min_failing_tenants = 1
reset_timeout_s = 60
[tenants.acme]
[tenants.globex.quota]
calls_per_day = 3
[tenants.initech.quota]
calls_per_day = 100
"""


def gateway_env(tmp: Path, config: str = CONFIG) -> tuple[Path, dict[str, str]]:
    """A config under ``tmp``, API keys in its state folder (into :data:`TOKENS`) and the
    environment the test app reads."""
    path = tmp / "mesh.toml"
    path.write_text(config)
    policies = tmp / "state" / "policies" / "gateway"
    policies.mkdir(parents=True, exist_ok=True)
    (policies / "open.rego").write_text("package gateway.open\n\nimport rego.v1\n\n"
                                         "default allow := true\n")
    store = KeyStore(SqliteState(tmp / "state"))
    for name, (tenant, caller, scopes) in KEYS.items():
        TOKENS[name] = store.create(tenant, caller, scopes=scopes)[1]
    store.close()
    return path, {"GATEWAY_TEST_CONFIG": str(path)}


@pytest.fixture(scope="module")
def gw_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("gateway")


@pytest.fixture(scope="module")
def gw(gw_dir: Path) -> Iterator[RunningGateway]:
    _, env = gateway_env(gw_dir)
    with running_gateway(None, app=APP, env=env, cwd=REPO,
                         args=["--head-timeout", "1"]) as running:
        yield running


def auth(name: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {TOKENS.get(name, name)}"}


def post(gw: RunningGateway, capability: str, body: Any, token: str = "acme",
         path: str = "invoke", **kw: Any) -> httpx.Response:
    return httpx.post(f"{gw.url}/v1/capabilities/{capability}/{path}", json=body,
                      headers=auth(token), timeout=30, **kw)


def assert_problem(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body: dict[str, Any] = response.json()
    assert body["status"] == status and body["code"] == code
    assert body["type"] == f"urn:aios-mesh:error:{code}" and body["hint"]
    return body


def metric(gw: RunningGateway, name: str, **labels: str) -> float:
    """The sum of the samples of ``name`` whose labels include ``labels``."""
    text = httpx.get(f"{gw.url}/metrics", timeout=10).text
    total = 0.0
    for line in text.splitlines():
        match = re.match(r"^(\w+)(?:\{(.*)\})? (\S+)$", line)
        if not match or match.group(1) != name:
            continue
        got = dict(re.findall(r'(\w+)="([^"]*)"', match.group(2) or ""))
        if all(got.get(k) == v for k, v in labels.items()):
            total += float(match.group(3))
    return total


# ------------------------------------------------------------------ health and catalog
def test_health_and_readiness(gw: RunningGateway) -> None:
    assert httpx.get(f"{gw.url}/healthz").json() == {"status": "ok"}
    ready = httpx.get(f"{gw.url}/readyz", timeout=60)
    assert ready.status_code == 200, ready.text
    body = ready.json()
    assert body["status"] == "ready"
    assert {c["port"] for c in body["checks"]} >= {"serving", "policy", "quota", "audit"}
    assert "url" not in ready.text  # nothing about where the backends are


def test_catalog_lists_what_the_credential_may_call(gw: RunningGateway) -> None:
    full = httpx.get(f"{gw.url}/v1/capabilities", headers=auth("acme")).json()
    by_name = {c["name"]: c for c in full}
    assert set(by_name) == {"echo", "slow", "down", "words"}
    echo = by_name["echo"]
    assert echo["input_schema"]["properties"]["text"]["type"] == "string"
    assert echo["output_schema"]["title"] == "Echo"
    assert echo["price"]["per_call"] == 0.25 and echo["slo"]["timeout_s"] == 10.0
    assert by_name["words"]["streams"] and not echo["streams"]
    scoped = httpx.get(f"{gw.url}/v1/capabilities", headers=auth("acme-echo")).json()
    assert [c["name"] for c in scoped] == ["echo"]
    one = httpx.get(f"{gw.url}/v1/capabilities/slow", headers=auth("acme-echo"))
    assert_problem(one, 404, "not_found")  # outside the scopes: as if it did not exist


def test_openapi_document_is_valid_3_1_with_every_schema(gw: RunningGateway) -> None:
    doc = httpx.get(f"{gw.url}/v1/openapi.json", headers=auth("acme")).json()
    assert doc["openapi"] == "3.1.0"
    validate(doc)  # a valid OpenAPI 3.1 document
    invoke = doc["paths"]["/v1/capabilities/echo/invoke"]["post"]
    ref = invoke["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    schema = doc["components"]["schemas"][ref.rsplit("/", 1)[1]]
    assert schema["properties"]["text"]["type"] == "string"
    assert "/v1/capabilities/words/stream" in doc["paths"]
    assert "/v1/capabilities/echo/stream" not in doc["paths"]  # a function never streams
    assert "429" in invoke["responses"] and "503" in invoke["responses"]


# ------------------------------------------------------------------ calls and records
def test_invoke_answers_with_record_trace_and_cost(gw: RunningGateway) -> None:
    r = post(gw, "echo", {"text": "hello"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["output"] == {"text": "HELLO", "confidence": 0.9}
    assert body["outcome"] == "ok" and body["cost"] == 0.25 and body["currency"] == "USD"
    assert "trace_id" in body
    record = httpx.get(f"{gw.url}/v1/records/{body['record_id']}", headers=auth("acme"))
    assert record.status_code == 200
    doc = record.json()
    assert doc["tenant"] == "acme" and doc["caller"] == "acme-app"  # from the credential
    assert doc["capability"]["name"] == "echo" and doc["outcome"] == "ok"


def test_another_tenants_record_is_not_found_like_a_missing_one(gw: RunningGateway) -> None:
    record_id = post(gw, "echo", {"text": "secret"}).json()["record_id"]
    theirs = httpx.get(f"{gw.url}/v1/records/{record_id}", headers=auth("globex"))
    missing_id = "00000000-0000-4000-8000-000000000000"
    missing = httpx.get(f"{gw.url}/v1/records/{missing_id}", headers=auth("globex"))
    a, b = assert_problem(theirs, 404, "not_found"), assert_problem(missing, 404, "not_found")
    assert a["detail"].replace(record_id, "X") == b["detail"].replace(missing_id, "X")
    assert {**a, "detail": "", "instance": ""} == {**b, "detail": "", "instance": ""}
    assert "record_id" not in a  # the other tenant's call is not named


def test_the_tenant_comes_from_the_credential_not_the_body(gw: RunningGateway) -> None:
    r = post(gw, "echo", {"text": "x", "tenant": "globex"}, token="acme")
    record = httpx.get(f"{gw.url}/v1/records/{r.json()['record_id']}", headers=auth("acme"))
    assert record.json()["tenant"] == "acme"  # a tenant in the body is never obeyed


def test_stream_sends_chunks_then_done_with_the_record(gw: RunningGateway) -> None:
    with httpx.stream("POST", f"{gw.url}/v1/capabilities/words/stream", timeout=30,
                      json={"text": "one two three"}, headers=auth("acme")) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        events = _events(r.iter_lines())
    assert [e for e, _ in events] == ["chunk", "chunk", "chunk", "done"]
    assert [d["word"] for _, d in events[:3]] == ["one", "two", "three"]
    done = events[-1][1]
    assert done["outcome"] == "ok" and done["cost"] == 0.5
    record = httpx.get(f"{gw.url}/v1/records/{done['record_id']}", headers=auth("acme")).json()
    assert record["mode"] == "stream" and record["outcome"] == "ok"


def test_a_call_refused_before_its_first_chunk_gets_its_status(gw: RunningGateway) -> None:
    r = post(gw, "echo", {"text": "x"}, path="stream")  # a function does not stream
    body = assert_problem(r, 501, "capability_not_supported")
    assert body["record_id"]  # recorded, and the client can find the record


def _events(lines: Iterator[str]) -> list[tuple[str, dict[str, Any]]]:
    out: list[tuple[str, dict[str, Any]]] = []
    event = ""
    for line in lines:
        if line.startswith("event: "):
            event = line[7:]
        elif line.startswith("data: "):
            out.append((event, orjson.loads(line[6:])))
    return out


def _audit(gw_state: Path) -> list[dict[str, Any]]:
    path = gw_state / "audit.jsonl"
    return [json.loads(line)["record"] for line in path.read_text().splitlines()]


def test_a_client_leaving_mid_stream_is_recorded_and_its_quota_given_back(
        gw: RunningGateway, gw_dir: Path) -> None:
    before = metric(gw, "aios_mesh_quota_used_calls", tenant="initech")
    text = " ".join(f"w{i}" for i in range(400))
    with httpx.stream("POST", f"{gw.url}/v1/capabilities/words/stream", timeout=30,
                      json={"text": text, "delay_s": 0.01}, headers=auth("initech")) as r:
        got = 0
        for line in r.iter_lines():
            got += line.startswith("event: chunk")
            if got == 3:
                break  # three chunks, then the client leaves
    assert got == 3
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        cancelled = metric(gw, "aios_mesh_gateway_calls_total", capability="words",
                           outcome="cancelled")
        if cancelled:
            break
        time.sleep(0.2)
    assert metric(gw, "aios_mesh_gateway_calls_total", capability="words",
                  outcome="cancelled") == 1
    assert metric(gw, "aios_mesh_quota_used_calls", tenant="initech") == before  # given back
    mine = [r for r in _audit(gw_dir / "state") if r["tenant"] == "initech"]
    assert [(r["mode"], r["outcome"]) for r in mine] == [("stream", "cancelled")]
    assert mine[0]["error"]["code"] == "call_cancelled"


# ------------------------------------------------------------------ errors as HTTP
def test_no_or_bad_credential_is_401(gw: RunningGateway) -> None:
    assert_problem(httpx.post(f"{gw.url}/v1/capabilities/echo/invoke", json={"text": "x"}),
                   401, "unauthenticated")
    assert_problem(post(gw, "echo", {"text": "x"}, token="wrong"), 401, "unauthenticated")
    assert_problem(httpx.get(f"{gw.url}/v1/records/x"), 401, "unauthenticated")


def test_a_capability_outside_the_scopes_is_403(gw: RunningGateway) -> None:
    body = assert_problem(post(gw, "slow", {"text": "x"}, token="acme-echo"), 403, "forbidden")
    assert "slow" in body["detail"]


def test_an_unknown_capability_is_404_with_its_record(gw: RunningGateway) -> None:
    body = assert_problem(post(gw, "nope", {"text": "x"}), 404, "unknown_capability")
    assert body["record_id"]


def test_a_body_over_the_limit_is_413(gw: RunningGateway) -> None:
    big = {"text": "x" * 5000}
    assert_problem(post(gw, "echo", big), 413, "payload_too_large")

    def chunked() -> Iterator[bytes]:  # no Content-Length: refused while it is read
        yield b'{"text": "'
        for _ in range(10):
            yield b"x" * 1000
        yield b'"}'

    r = httpx.post(f"{gw.url}/v1/capabilities/echo/invoke", content=chunked(),
                   headers={**auth("acme"), "Content-Type": "application/json"})
    assert_problem(r, 413, "payload_too_large")


def test_a_body_that_is_not_json_is_415(gw: RunningGateway) -> None:
    r = httpx.post(f"{gw.url}/v1/capabilities/echo/invoke", content=b"text=x",
                   headers={**auth("acme"), "Content-Type": "application/x-www-form-urlencoded"})
    assert_problem(r, 415, "unsupported_media_type")


def test_malformed_json_and_invalid_input_are_422(gw: RunningGateway) -> None:
    r = httpx.post(f"{gw.url}/v1/capabilities/echo/invoke", content=b'{"text": ',
                   headers={**auth("acme"), "Content-Type": "application/json"})
    assert "not valid JSON" in assert_problem(r, 422, "invalid_input")["detail"]
    bad = assert_problem(post(gw, "echo", {"txt": "x"}), 422, "invalid_input")
    assert bad["record_id"]  # the refused call is recorded


def test_quota_exhausted_is_429_with_retry_after(gw: RunningGateway) -> None:
    # globex has 3 calls a day (other tests spend some of them): the 4th is refused at the latest
    answers = [post(gw, "echo", {"text": "x"}, token="globex") for _ in range(4)]
    refused = answers[-1]
    body = assert_problem(refused, 429, "quota_exceeded")
    assert 1 <= int(refused.headers["Retry-After"]) <= 86400  # until the day's window ends
    assert body["record_id"]
    assert {a.status_code for a in answers} <= {200, 429}


def test_an_open_breaker_is_503(gw: RunningGateway) -> None:
    first = [post(gw, "down", {"text": "x"}).status_code for _ in range(2)]
    assert first == [502, 502]  # the backend's own failures
    body = assert_problem(post(gw, "down", {"text": "x"}), 503, "circuit_open")
    assert body["hint"]


# ------------------------------------------------------------------ metrics
def test_metrics_count_calls_errors_latency_cost_and_quota(gw: RunningGateway) -> None:
    before = metric(gw, "aios_mesh_gateway_calls_total", capability="echo", outcome="ok")
    cost = metric(gw, "aios_mesh_gateway_cost_total", tenant="acme", capability="echo")
    post(gw, "echo", {"text": "x"})
    post(gw, "down", {"text": "x"})
    assert metric(gw, "aios_mesh_gateway_calls_total", capability="echo",
                  outcome="ok") == before + 1
    assert metric(gw, "aios_mesh_gateway_cost_total", tenant="acme",
                  capability="echo") == cost + 0.25
    assert metric(gw, "aios_mesh_gateway_errors_total", capability="down") >= 1
    assert metric(gw, "aios_mesh_gateway_call_seconds_count", capability="echo") >= 1
    assert metric(gw, "aios_mesh_quota_used_calls", tenant="globex") >= 1
    text = httpx.get(f"{gw.url}/metrics").text
    assert "aios_mesh_review_queue_depth" in text and "aios_mesh_outbox_pending" in text


# ------------------------------------------------------------------ slow clients
def test_a_slowloris_client_is_cut_off_and_others_are_served(gw: RunningGateway) -> None:
    with socket.create_connection(("127.0.0.1", gw.port), timeout=10) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        started = time.monotonic()
        closed = False
        while time.monotonic() - started < 8:
            try:
                sock.sendall(b"X-Drip: 1\r\n")  # a header every 0.2 s, never the end
            except OSError:
                closed = True
                break
            assert httpx.get(f"{gw.url}/healthz").status_code == 200  # others still served
            sock.settimeout(0.2)
            try:
                if sock.recv(1024) == b"":
                    closed = True
                    break
            except TimeoutError:
                pass
        took = time.monotonic() - started
    assert closed and took < 4, f"closed={closed} after {took:.1f}s"  # --head-timeout 1


def test_an_oversized_head_is_refused(gw: RunningGateway) -> None:
    try:
        r = httpx.get(f"{gw.url}/healthz", headers={"X-Big": "y" * 200_000})
    except (httpx.ReadError, httpx.RemoteProtocolError, httpx.WriteError):
        return  # cut off while still sending: refused
    assert r.status_code == 400
