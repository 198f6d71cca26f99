"""The second main job, end to end: support triage on the embedded profile (llama.cpp in
process) and on the server profile (an MLflow server, a llama.cpp server on the same GGUF
file, a private nats-server and redis-server, a throw-away PostgreSQL database).

Both run at temperature 0. The classical half (the classifier's categories, who handles a
ticket, spam denials) must match exactly. The LLM half must reach the same routes — or, where
the two engines' outputs differ, the ticket's classical decisions must still match and every
agent run must have the same shape of record tree (the issue's rule: llama.cpp in process and
its server are not bit-identical across requests even at temperature 0).
"""

from __future__ import annotations

import json
import subprocess
import sys
import tomllib
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest

from examples.support_triage.run import PROFILES, RunResult, run, tree_shape

# an LLM call takes seconds on 2 CPU cores, much longer when the machine is busy
pytestmark = [pytest.mark.e2e, pytest.mark.timeout(1800)]

N = 12  # four per tenant: spam, an order ticket, drafts (the LLM sets the pace)


@pytest.fixture(scope="module")
def embedded(tmp_path_factory: pytest.TempPathFactory) -> RunResult:
    return run(profile=PROFILES / "embedded.toml", state=tmp_path_factory.mktemp("embedded"),
               tickets=N)


def _audit(state: Path) -> list[dict[str, Any]]:
    return [json.loads(line)["record"] for line in (state / "audit.jsonl").read_text()
            .splitlines()]


def test_embedded_run_ends_with_summary_and_report(embedded: RunResult) -> None:
    summary = embedded.summary
    assert embedded.exit_code == 0
    assert sum(summary["routes"].values()) == N
    assert summary["audit_ok"] and summary["outbox_pending"] == 0
    assert summary["classifier_accuracy"] > 0.8
    assert summary["routes"].get("denied", 0) >= 1  # spam is refused by policy
    assert summary["agent_runs"] >= 1
    labels = [label for label, _ in summary["table"]]
    for wanted in ("first-response automation rate", "groundedness of drafted answers",
                   "escalations to humans", "review turnaround (simulated reviewer)",
                   "cost per ticket", "exception agent runs", "audit chain"):
        assert wanted in labels
    assert {label for label in labels if label.startswith("cost ")} >= {
        "cost acme", "cost globex", "cost initech"}
    html = embedded.report.read_text()
    for svg in [c.split("</svg>")[0] + "</svg>" for c in html.split("<svg")[1:]]:
        ET.fromstring("<svg" + svg)  # well-formed
    assert 'data-kind="record-tree"' in html and "exception-agent" in html


def test_every_drafted_answer_cites_only_retrieved_chunks_of_its_tenant(
        embedded: RunResult) -> None:
    drafted = [i for i in embedded.items if i.get("answer") and i["handled_by"] == "draft"]
    assert drafted
    for item in drafted:
        assert set(item["citations"]) <= set(item["retrieved"])
        assert all(c.startswith(item["tenant"] + "/") for c in item["retrieved"]), item


def test_personal_data_never_reaches_a_model(embedded: RunResult) -> None:
    audit = [r for r in _audit(embedded.state) if "kind" not in r]
    models = {"classify-ticket", "write-answer", "exception-planner"}
    calls = [r for r in audit if r["capability"]["name"] in models
             and r["outcome"] != "denied"]
    assert calls
    for record in calls:
        assert set(record["policy"]["obligations"]["redact"]) >= {
            "email", "phone", "card"}
    assert any(r["redaction"]["applied"] for r in calls)


def test_an_agent_run_is_a_record_tree(embedded: RunResult) -> None:
    assert embedded.trees
    audit = {r["record_id"]: r for r in _audit(embedded.state) if "kind" not in r}
    for tree in embedded.trees:
        assert tree["capability"] == "exception-agent"
        for child in tree["children"]:
            assert audit[child["record_id"]]["parent"]["run_id"] == tree["record_id"]
            assert child["capability"] in ("exception-planner", "lookup-order", "open-refund")
    # exactly one record per tool call the runs report
    tools = [c for i in embedded.items for c in i.get("tools") or [] if c["record_id"]]
    assert len({c["record_id"] for c in tools}) == len(tools)


def test_help_teaches_the_profiles() -> None:
    out = subprocess.run([sys.executable, "-m", "examples.support_triage", "--help"],
                         capture_output=True, text=True, check=True).stdout
    assert "--profile" in out and "servers" in out and "--tickets" in out


def test_server_profile_reaches_the_same_routes(embedded: RunResult, tmp_path: Path) -> None:
    servers = run(profile=PROFILES / "servers.toml", state=tmp_path / "servers", tickets=N,
                  private_servers=True)
    assert servers.exit_code == 0
    backends = tomllib.loads((servers.state / "aios-mesh.toml").read_text())["backends"]
    assert backends["serving_named"]["llm"].startswith("openai+http://127.0.0.1:")
    assert backends["registry"].startswith("mlflow+http://")
    left = json.loads((embedded.state / "summary.json").read_text())["decisions"]
    right = json.loads((servers.state / "summary.json").read_text())["decisions"]
    assert left.keys() == right.keys()
    differ = []
    for ticket, mine in left.items():
        theirs = right[ticket]
        # the classical half is the same on both profiles
        for key in ("tenant", "category", "handled_by"):
            assert mine[key] == theirs[key], (ticket, key, mine, theirs)
        assert mine["confidence"] == pytest.approx(theirs["confidence"], abs=1e-6)
        if mine["category"] == "spam":
            assert mine["route"] == theirs["route"] == "denied"
        if mine["route"] != theirs["route"]:
            # only where an LLM's output decided: a draft's groundedness, an agent's status
            assert mine["handled_by"] in ("draft", "agent"), (ticket, mine, theirs)
            assert (mine["groundedness"], mine["agent_status"]) != (
                theirs["groundedness"], theirs["agent_status"]), (ticket, mine, theirs)
            differ.append(ticket)
    # every ticket's agent run has the same shape of record tree on both profiles (a run
    # that parked for approval is resumed as a further run: only where an LLM chose the tool)
    def shapes(result: RunResult) -> dict[str, tuple[str, int]]:
        trees = {t["record_id"]: t for t in result.trees}
        return {i["ticket"]: tree_shape(trees[i["agent_run"]]) for i in result.items
                if i.get("agent_run") in trees}

    assert shapes(servers) == shapes(embedded)
    assert shapes(embedded) and all(d <= 2 for _, d in shapes(embedded).values())
    print(f"routes differ on {len(differ)} of {N} tickets (LLM outputs): {differ}")
