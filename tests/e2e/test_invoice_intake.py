"""The main job, end to end: the invoice intake on the embedded defaults, on real servers and
through the gateway.

The server profile starts a real MLflow server, two `bentoml serve` processes, a tansu broker,
a private nats-server and redis-server and a throw-away PostgreSQL database (SERVICES.md); the
gateway profile a private redis-server, a throw-away PostgreSQL database and `aios-mesh gateway
--workers 2`. Both must reach exactly the decisions the embedded profile reaches: same routes,
same extracted fields, same vendors — only the config profile differs.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import tomllib
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import pytest

from aios_mesh.review import ReviewQueue
from examples.invoice_intake.run import PROFILES, RunResult, run

pytestmark = pytest.mark.e2e

N = 90


@pytest.fixture(scope="module", autouse=True)
def _forget_invoice_capabilities() -> Iterator[None]:
    """workflow.py registers the invoice capabilities for every mesh of this process; the
    other suites in this pytest process build meshes of their own."""
    yield
    from aios_mesh_flyte import close_meshes, unregister_capabilities

    from examples.invoice_intake.capabilities import ALL

    unregister_capabilities(*(spec.name for spec in ALL))
    close_meshes()


@pytest.fixture(scope="module")
def embedded(tmp_path_factory: pytest.TempPathFactory) -> RunResult:
    return run(profile=PROFILES / "embedded.toml", state=tmp_path_factory.mktemp("embedded"),
               n=N, batch=30)


def test_embedded_run_ends_with_summary_and_report(embedded: RunResult) -> None:
    summary = embedded.summary
    # an LLM drafted review briefs for a sample of the invoices waiting for a human, each
    # attached to its review item (what the console shows) and charged in tokens
    briefs = summary["briefs"]
    assert briefs["briefed"] == min(6, briefs["waiting"]) and briefs["failed"] == 0
    briefed = [i for i in embedded.items if "reason" in (i.get("brief") or {})]
    assert len(briefed) == briefs["briefed"]
    queue = ReviewQueue(embedded.state / "review.db")
    try:
        for item in briefed:
            note = queue.get(item["review"]["id"]).notes or {}
            assert set(note["brief"]) == {"reason", "missing_fields", "question_to_vendor"}
    finally:
        queue.close()
    assert all(t["output"] > 0 for t in briefs["tokens"].values())
    assert embedded.exit_code == 0
    assert sum(summary["routes"].values()) == N
    assert summary["routes"].get("auto", 0) > N // 3, summary["routes"]
    assert summary["routes"].get("human", 0) > 0
    assert summary["audit_ok"] and summary["outbox_pending"] == 0
    # 3 runs of 30 invoices: every call and every workflow run has START + COMPLETE/FAIL
    assert summary["lineage_events"] == 2 * summary["records"] + 2 * 3
    assert summary["decision_events"] == summary["records"]
    assert min(summary["accuracy"][f] for f in ("invoice_number", "total", "currency")) > 0.8
    labels = [label for label, _ in summary["table"]]
    for wanted in ("invoices processed", "automation rate (auto-approved)", "routed to humans",
                   "policy denials", "audit chain", "events delivered",
                   "lineage events emitted", "cost per invoice"):
        assert wanted in labels
    assert any(label.startswith("latency extract-invoice-fields") for label in labels)


def test_report_holds_every_plot(embedded: RunResult) -> None:
    html = embedded.report.read_text()
    svgs = [chunk.split("</svg>")[0] + "</svg>" for chunk in html.split("<svg")[1:]]
    assert len(svgs) >= 4
    for svg in svgs:
        ET.fromstring("<svg" + svg)  # well-formed
    assert 'data-kind="workflow"' in html  # the lineage graph of one run
    # one node per capability of the run, each with the number of its calls
    assert html.count('data-kind="call"') == 4
    assert 'data-job="extract-invoice-fields" data-runs="30"' in html


def test_every_invoice_has_an_event_and_a_record(embedded: RunResult) -> None:
    decisions = json.loads((embedded.state / "summary.json").read_text())["decisions"]
    assert len(decisions) == N
    audit = [json.loads(line)["record"]
             for line in (embedded.state / "audit.jsonl").read_text().splitlines()]
    calls = [r for r in audit if "kind" not in r]  # the rest: the simulated reviewer's
    assert len(calls) == embedded.summary["records"]
    decided = [r for r in audit if r.get("kind") == "review_decision"]
    assert len(decided) == embedded.summary["reviewer"]["decided"] > 0
    assert len(audit) == len(calls) + len(decided)
    for item in embedded.items:
        assert item["published"] and item["records"], item


def test_pii_never_reaches_the_extractor(embedded: RunResult) -> None:
    records = [json.loads(line)["record"]
               for line in (embedded.state / "audit.jsonl").read_text().splitlines()]
    extract = [r for r in records if "kind" not in r  # a call, not a reviewer's decision
               and r["capability"]["name"] == "extract-invoice-fields"]
    assert extract and all(r["policy"]["obligations"]["redact"] for r in extract
                           if r["outcome"] != "denied")
    assert any(r["redaction"]["applied"] for r in extract)


@pytest.mark.timeout(900)  # six servers, two BentoML, an LLM: minutes on a busy 2-core host
def test_server_profile_reaches_the_same_decisions(embedded: RunResult,
                                                   tmp_path: Path) -> None:
    servers = run(profile=PROFILES / "servers.toml", state=tmp_path / "servers", n=N,
                  batch=30, private_servers=True, briefs=2)
    assert servers.exit_code == 0
    config = tomllib.loads((servers.state / "aios-mesh.toml").read_text())["backends"]
    assert config["registry"].startswith("mlflow+http://")
    assert config["serving"].startswith("bentoml+http://")
    assert config["events"].startswith("nats://")
    assert config["lineage"].startswith("openlineage+kafka://")
    assert config["quota"].startswith("redis://")
    assert config["audit"].startswith("postgresql://")
    assert set(servers.summary["served_by"]) >= {"bentoml", "llm"}, servers.summary["served_by"]
    # the review briefs came from a real llama.cpp server, through the openai+http adapter
    assert config["serving_named"]["llm"].startswith("openai+http://")
    assert servers.summary["briefs"]["briefed"] == 2
    assert servers.summary["audit_ok"] and servers.summary["outbox_pending"] == 0
    left = json.loads((embedded.state / "summary.json").read_text())["decisions"]
    right = json.loads((servers.state / "summary.json").read_text())["decisions"]
    assert left == right


def test_gateway_profile_reaches_the_same_decisions(embedded: RunResult,
                                                    tmp_path: Path) -> None:
    """The workflow's tasks call through `aios-mesh gateway --workers 2` (MeshClient, one API
    key per tenant) on a private redis-server and a throw-away PostgreSQL database holding the
    audit log and the shared state; the business code is the embedded profile's."""
    gateway = run(profile=PROFILES / "gateway.toml", state=tmp_path / "gateway", n=N,
                  batch=30, private_servers=True, briefs=0)
    assert gateway.exit_code == 0
    config = tomllib.loads((gateway.state / "aios-mesh.toml").read_text())["backends"]
    assert config["quota"].startswith("redis://")
    assert config["audit"].startswith("postgresql://") and config["state"] == config["audit"]
    summary = gateway.summary
    assert summary["audit_ok"] and summary["outbox_pending"] == 0
    # the calls were the gateway's: a call made in this process would be counted twice (the
    # job's own record sink and the audit log it reads the gateway's records back from)
    # (this run drafted no review briefs: the embedded run's brief calls are left out)
    assert summary["records"] == embedded.summary["records"] - \
        embedded.summary["briefs"]["briefed"]
    assert summary["lineage_events"] == 2 * summary["records"] + 2 * 3  # parents crossed HTTP
    assert len(list((gateway.state / "gateway" / "replicas").iterdir())) == 2  # two workers
    left = json.loads((embedded.state / "summary.json").read_text())["decisions"]
    right = json.loads((gateway.state / "summary.json").read_text())["decisions"]
    assert left == right
    # the review items can be worked in the console: where it is, and a key to log in with
    front = summary["gateway"]
    assert front["workers"] == 2 and front["console"] == front["url"] + "/console"
    keys = Path(front["reviewer_keys"])
    assert keys.stat().st_mode & 0o077 == 0
    assert set(json.loads(keys.read_text())) == {"acme", "globex", "initech"}
    assert "--app examples.invoice_intake.replica:mesh --workers 2" in front["command"]


def test_help_teaches_the_profiles() -> None:
    out = subprocess.run([sys.executable, "-m", "examples.invoice_intake", "--help"],
                         capture_output=True, text=True, check=True).stdout
    assert "--profile" in out and "servers" in out and "review list --config" in out
    assert "gateway" in out


def test_the_commands_the_help_prints_work_on_the_state(embedded: RunResult) -> None:
    cli = Path(sys.executable).with_name("aios-mesh")
    config = str(embedded.state / "aios-mesh.toml")
    wide = {**os.environ, "COLUMNS": "250"}
    listed = subprocess.run([str(cli), "review", "list", "--config", config],
                            capture_output=True, text=True, timeout=120, env=wide)
    assert listed.returncode == 0, listed.stderr[-2000:]
    assert "extract-invoice-fields" in listed.stdout or "route-invoice" in listed.stdout
    verified = subprocess.run([str(cli), "audit", "verify", "--config", config],
                              capture_output=True, text=True, timeout=120)
    assert verified.returncode == 0, verified.stdout[-2000:] + verified.stderr[-2000:]


def test_pyflyte_runs_the_workflow_on_the_prepared_state(embedded: RunResult,
                                                         tmp_path: Path) -> None:
    invoice = {"id": "manual-1", "tenant": "acme",
               "text": "Nordic Paper AB\nInvoice no: INV-7\nDate: 2024-03-05\n"
                       "Total due: EUR 1,440.00"}
    pyflyte = Path(sys.executable).with_name("pyflyte")
    done = subprocess.run(
        [str(pyflyte), "run", "examples/invoice_intake/workflow.py", "invoice_intake",
         "--invoices", json.dumps([invoice])],
        capture_output=True, text=True, timeout=300,
        env={**os.environ, "HOME": str(tmp_path),
             "AIOS_MESH_CONFIG": str(embedded.state / "aios-mesh.toml")})
    assert done.returncode == 0, done.stderr[-2000:]
    assert "'invoice': 'manual-1'" in done.stdout and "'route': " in done.stdout


def test_a_waiting_workflow_resumes_when_a_reviewer_decides(embedded: RunResult,
                                                            tmp_path: Path) -> None:
    """pyflyte runs a batch that waits for its reviews; `aios-mesh review approve` from
    another process resumes it, and the published event carries the human decision."""
    from aios_mesh.review import ReviewQueue
    from examples.invoice_intake.corpus import make_corpus

    over_threshold = next(i for i in embedded.items
                          if i["route"] == "human" and i["stage"] == "route")
    automatic = next(i for i in embedded.items if i["route"] == "auto")
    texts = {inv.id: inv for inv in make_corpus(N)}
    batch = [{"id": f"again-{item['invoice']}", "tenant": item["tenant"],
              "text": texts[item["invoice"]].text} for item in (over_threshold, automatic)]
    config = str(embedded.state / "aios-mesh.toml")
    env = {**os.environ, "HOME": str(tmp_path), "AIOS_MESH_CONFIG": config, "COLUMNS": "250"}
    queue = ReviewQueue(embedded.state / "review.db")
    before = {item.id for item in queue.list(status=None)}
    pyflyte = Path(sys.executable).with_name("pyflyte")
    proc = subprocess.Popen(
        [str(pyflyte), "run", "examples/invoice_intake/workflow.py", "invoice_intake",
         "--invoices", json.dumps(batch), "--review_wait_s", "240"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        new: list = []
        for _ in range(480):  # the workflow parks its invoice in the queue, then waits
            new = [i for i in queue.list() if i.id not in before]
            if new or proc.poll() is not None:
                break
            time.sleep(0.25)
        assert len(new) == 1 and new[0].capability == "route-invoice@1", new
        cli = Path(sys.executable).with_name("aios-mesh")
        approved = subprocess.run([str(cli), "review", "approve", new[0].id, "--reviewer",
                                   "alice", "--config", config],
                                  capture_output=True, text=True, timeout=120, env=env)
        assert approved.returncode == 0, approved.stdout + approved.stderr
        out, err = proc.communicate(timeout=240)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err[-3000:]
    assert f"'id': '{new[0].id}', 'status': 'approved', 'reviewer': 'alice'" in out, out
    assert "'route': 'auto'" in out  # the other invoice did not wait for anyone
    audit = [json.loads(line) for line in
             (embedded.state / "audit.jsonl").read_text().splitlines()]
    assert any(e["record"].get("kind") == "review_decision"
               and e["record"]["review_id"] == new[0].id for e in audit)
