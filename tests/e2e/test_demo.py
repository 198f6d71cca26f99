"""The README's first command, end to end on the embedded defaults (a fresh state folder)."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from aios_mesh.embedded.audit import verify_file
from aios_mesh.testing.conformance.lineage import OpenLineageSchemas

PII = [b"@example.com", b"4111 1111 1111 1111", b"DE89 3704", b"+49 30"]


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    state = tmp_path_factory.mktemp("demo")
    env = {**os.environ, "HOME": str(state), "COLUMNS": "120"}
    run = subprocess.run([sys.executable, "-m", "aios_mesh.cli", "demo", "--invoices", "45",
                          "--state-dir", str(state)], capture_output=True, text=True,
                         env=env, timeout=600)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    return state, run.stdout


def test_demo_prints_calls_records_and_summary(demo: tuple[Path, str]) -> None:
    _, out = demo
    for text in ("first calls", "decision record #", "summary", "tickets processed",
                 "routing accuracy", "audit chain", "verified"):
        assert text in out


def test_every_call_has_exactly_one_record_and_the_chain_verifies(
        demo: tuple[Path, str]) -> None:
    state, _ = demo
    report = verify_file(state / "audit.jsonl")
    assert report.ok
    records = [orjson.loads(line)["record"]
               for line in (state / "audit.jsonl").read_bytes().splitlines()]
    ids = [r["record_id"] for r in records]
    assert len(ids) == len(set(ids)) == report.records
    outcomes = {r["outcome"] for r in records}
    assert {"ok", "denied"} <= outcomes
    denied = [r for r in records if r["outcome"] == "denied"]
    assert all(r["tenant"] == "initech" for r in denied)
    globex = [r for r in records if r["tenant"] == "globex"
              and r["capability"]["name"] == "classify-ticket" and r["policy"]]
    assert all(r["policy"]["obligations"]["redact"] == ["email", "phone"] for r in globex)
    ok = [r for r in records if r["outcome"] == "ok" and
          r["capability"]["name"] == "classify-ticket"]
    assert all(r["model"]["name"] == "ticket-classifier" and r["model"]["version"] == "1"
               for r in ok)
    retrieve = [r for r in records if r["capability"]["name"] == "retrieve-context"]
    assert retrieve and all(r["index_snapshots"].get("kb") for r in retrieve)


def test_no_pii_value_reaches_any_log_record_or_event(demo: tuple[Path, str]) -> None:
    state, _ = demo
    for name in ("audit.jsonl", "decisions.log", "lineage/events.jsonl"):
        data = (state / name).read_bytes()
        for value in PII:
            assert value not in data, f"{value!r} leaked into {name}"


def test_lineage_events_are_valid_openlineage(demo: tuple[Path, str]) -> None:
    state, _ = demo
    schemas = OpenLineageSchemas()
    events = [orjson.loads(line)
              for line in (state / "lineage" / "events.jsonl").read_bytes().splitlines()]
    records = (state / "audit.jsonl").read_bytes().count(b"\n")
    assert len(events) == 2 * records  # START + COMPLETE/FAIL per call
    for event in events:
        schemas.validate(event)


def test_decision_events_reached_the_bus(demo: tuple[Path, str]) -> None:
    state, _ = demo
    records = (state / "audit.jsonl").read_bytes().count(b"\n")
    with sqlite3.connect(state / "events.db") as db:
        tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        assert tables
        rows = 0
        for table in tables:
            cols = [c[1] for c in db.execute(f"PRAGMA table_info({table})")]
            if "topic" in cols:
                rows = db.execute(f"SELECT COUNT(*) FROM {table} WHERE topic = ?",
                                  ("aios.mesh.decisions",)).fetchone()[0]
                break
    assert rows == records
