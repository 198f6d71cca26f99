"""The second main job: support triage end to end, on one config profile.

    python -m examples.support_triage [--profile embedded|servers] [--tickets 30]

1. start the profile's servers (``servers``: an MLflow server, a llama.cpp server, NATS,
   Redis, PostgreSQL — the invoice job's :func:`examples.invoice_intake.servers.local_stack`);
2. train the ticket classifier and the knowledge-base embedder on generated tickets, log and
   register both in the profile's MLflow registry as ``champion``; name the LLM there too;
3. index each tenant's knowledge base in its own scope of the vector store;
4. pin models and index snapshots in the lock file, load the models;
5. triage every ticket (:mod:`.triage`): classify, draft a grounded answer or run the
   exception agent, route by policy; one event per ticket through the outbox;
6. a **simulated** reviewer decides a sample of the review queue (:mod:`.reviewer`);
7. verify the audit chain, print the summary, write ``summary.json`` and ``report.html``.

The exit code is 0 when every ticket reached a route, every event left the outbox and the
audit chain verifies.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
import statistics
import time
import tomllib
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from aios_mesh.lifecycle.stats import p95
from aios_mesh.record import DecisionRecord

__all__ = ["LLM_MODEL", "PROFILES", "RunResult", "record_tree", "run", "tree_shape"]

HERE = Path(__file__).parent
PROFILES = HERE / "profiles"
POLICIES = HERE / "policies"
#: The registry entry the LLM capabilities ask for (``support-writer@champion``).
LLM_MODEL = "support-writer"
#: Drafted answers below this groundedness go to a human (``support/route``'s lowest).
GROUNDEDNESS_THRESHOLD = 0.5


@dataclass
class RunResult:
    """What :func:`run` did; ``summary.json`` holds the same."""

    exit_code: int
    state: Path
    report: Path
    summary: dict[str, Any]
    items: list[dict[str, Any]] = field(default_factory=list)
    trees: list[dict[str, Any]] = field(default_factory=list)


def record_tree(records: Sequence[DecisionRecord], root: str) -> dict[str, Any]:
    """The tree of records under the record ``root`` (children: records naming it as their
    parent run), each node ``{"capability", "outcome", "record_id", "cost", "children"}``."""
    children: dict[str, list[DecisionRecord]] = defaultdict(list)
    by_id = {r.record_id: r for r in records}
    for record in records:
        parent = (record.parent or {}).get("run_id")
        if parent is not None:
            children[str(parent)].append(record)

    def node(record_id: str) -> dict[str, Any]:
        record = by_id[record_id]
        return {"capability": record.capability, "outcome": str(record.outcome),
                "record_id": record_id, "cost": record.cost,
                "children": [node(c.record_id) for c in sorted(
                    children[record_id], key=lambda r: r.started_at)]}

    return node(root)


def tree_shape(tree: Mapping[str, Any]) -> tuple[str, int]:
    """What stays the same in an agent run's record tree when the two engines' LLM outputs
    differ (which tool a step picks, how many steps): the root's capability and the depth
    (the run, then its LLM steps and tool calls as leaves: 2).

    >>> tree_shape({"capability": "a", "children": [{"capability": "p", "children": []},
    ...     {"capability": "t", "children": []}]})
    ('a', 2)
    """
    def depth(node: Mapping[str, Any]) -> int:
        return 1 + max((depth(c) for c in node.get("children") or []), default=0)

    return (str(tree["capability"]), depth(tree))


def _size(tree: Mapping[str, Any]) -> int:
    return 1 + sum(_size(child) for child in tree.get("children") or [])


def run(*, profile: Path, state: Path, tickets: int = 30, private_servers: bool = False,
        reviewer_sample: int | None = None, console: Console | None = None) -> RunResult:
    """Run the whole job on ``profile`` with all state under ``state`` (recreated)."""
    from examples.invoice_intake.run import effective_config
    from examples.support_triage.reviewer import DEFAULT_SAMPLE

    started = datetime.now(UTC)
    out = console or Console()
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "ERROR")
    logging.getLogger("mlflow").setLevel(logging.ERROR)
    state = state.resolve()
    if state.exists():
        shutil.rmtree(state)
    state.mkdir(parents=True)
    # the mesh-wide default policy is the invoice job's (caller named, cost ceiling)
    shutil.copytree(HERE.parent / "invoice_intake" / "policies" / "mesh",
                    state / "policies" / "mesh")
    shutil.copytree(POLICIES / "support", state / "policies" / "support")
    doc = tomllib.loads(profile.read_text())
    timings: dict[str, float] = {}
    out.rule(f"[bold]support triage[/] — profile [cyan]{profile.stem}[/]")
    with ExitStack() as stack:
        backends = doc.get("backends", {})
        if backends.keys() - {"serving_named"}:
            from examples.invoice_intake.servers import local_stack

            with out.status("starting the profile's servers..."):
                t0 = time.perf_counter()
                live = stack.enter_context(local_stack(backends, state / "servers",
                                                       private=private_servers))
                timings["servers"] = time.perf_counter() - t0
            for line in live.started:
                out.print(f"  [green]✓[/] {line}")
            backends = live.backends
        config = effective_config(profile, state, backends)
        return _run_job(out, config, state, tickets, timings,
                        DEFAULT_SAMPLE if reviewer_sample is None else reviewer_sample,
                        {"date": started.isoformat(timespec="seconds"),
                         "profile": profile.stem, "tickets": tickets, "state": str(state)})


def _publish_all(mesh: Any, trained: Any) -> dict[str, Any]:
    from examples.invoice_intake.briefs import LLM_SOURCE
    from examples.support_triage import models

    async def go() -> dict[str, Any]:
        registry = mesh.port("registry")
        refs: dict[str, Any] = await models.publish(registry, trained)
        ref = await registry.register(LLM_MODEL, LLM_SOURCE, tags={"engine": "llama.cpp"})
        await registry.set_alias(LLM_MODEL, "champion", ref.version)
        refs[LLM_MODEL] = ref
        return refs

    return asyncio.run(go())


def _index(mesh: Any, trained: Any) -> int:
    from examples.support_triage.capabilities import index_articles
    from examples.support_triage.corpus import TENANTS, knowledge_base

    articles = {t: [(a.id, a.text) for a in knowledge_base(t)] for t in TENANTS}
    vectors = {t: trained.embedder.embed([text for _, text in rows])
               for t, rows in articles.items()}
    return asyncio.run(index_articles(mesh.port("retrieval"), articles, vectors))


def _run_job(out: Console, config: Path, state: Path, n: int, timings: dict[str, float],
             reviewer_sample: int, info: dict[str, Any]) -> RunResult:
    from aios_mesh import Mesh
    from aios_mesh.rag import GroundednessGate, install_groundedness_gate
    from examples.support_triage import models
    from examples.support_triage.capabilities import ALL, ROUTES
    from examples.support_triage.corpus import make_tickets
    from examples.support_triage.reviewer import simulate_reviews
    from examples.support_triage.triage import publish, resume_approved, triage

    records: list[DecisionRecord] = []
    with Mesh.from_config(config, capabilities=ALL) as mesh:
        # the RAG answer's policy is asked again with its groundedness (deny / human / send)
        install_groundedness_gate(mesh.pipeline, GroundednessGate(lambda: mesh.ports.policy,
                                                                   mesh.review_queue))
        mesh.sinks.append(lambda record, _doc: records.append(record))
        t0 = time.perf_counter()
        with out.status("training the ticket classifier and the knowledge-base embedder..."):
            trained = models.train()
        timings["train"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        with out.status("logging and registering them in MLflow as champion..."):
            refs = _publish_all(mesh, trained)
        timings["register"] = time.perf_counter() - t0
        with out.status("indexing each tenant's knowledge base..."):
            indexed = _index(mesh, trained)
        lock = mesh.lock()
        t0 = time.perf_counter()
        with out.status("loading the models and the LLM..."):
            mesh.prepare()
        timings["load"] = time.perf_counter() - t0
        out.print(" · ".join(f"model [cyan]{k}[/] v{r.version}@champion"
                             for k, r in refs.items())
                  + f" · {indexed} articles indexed · lock {lock.name}", soft_wrap=True)
        out.print(f"classifier holdout accuracy: {trained.holdout_accuracy:.1%}")

        generated = make_tickets(n)
        truth = {t.id: t.truth for t in generated}
        items: list[dict[str, Any]] = []
        progress = Progress(TextColumn("[progress.description]{task.description}"),
                            BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                            console=out)
        t0 = time.perf_counter()
        with progress:
            task = progress.add_task("triaging tickets", total=len(generated))
            for ticket in generated:
                items.append(triage(mesh, ticket))
                progress.advance(task)
        timings["triage"] = time.perf_counter() - t0
        publish(mesh, items)
        t0 = time.perf_counter()
        reviewer = simulate_reviews(mesh, items, truth, reviewer_sample)
        timings["reviewer"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        with out.status("resuming the agent runs a reviewer decided..."):
            reviewer["resumed"] = resume_approved(mesh, items)
        timings["resume"] = time.perf_counter() - t0
        mesh.flush()
        audit = mesh.run_sync(mesh.port("audit").verify())
        review_reasons = {r.id: r.reason for r in mesh.review_queue().list(None)}
        pending = mesh.outbox().pending()
        signals = mesh.relay.stats if mesh.relay is not None else None
        versions = {name: {"version": ref.version, "alias": "champion"}
                    for name, ref in refs.items()}

    known = {r.record_id for r in records}
    trees = [record_tree(records, run_id) for i in items
             for run_id in (i.get("agent_run"), (i.get("resumed") or {}).get("record_id"))
             if run_id in known]
    summary = _summarise(items, records, truth, reviewer, timings, trained.holdout_accuracy)
    summary["reasons"] = _reasons(records, review_reasons)
    summary["run"] = info
    summary["versions"] = versions
    summary["reviewer"] = reviewer
    summary["audit_ok"] = bool(audit.ok)
    summary["outbox_pending"] = pending
    summary["decision_events"] = signals.decision_events if signals else 0
    summary["table"].append(("audit chain", f"verified ({audit.records} records)" if audit.ok
                             else f"BROKEN: {list(audit.problems[:3])}"))
    summary["table"].append(("events delivered", f"{len(items) - pending} ticket events"
                             + (f", {pending} still in the outbox" if pending else "")))
    summary["table"].append(("time", " · ".join(f"{k} {v:.1f}s" for k, v in timings.items())))
    tree = max(trees, key=_size) if trees else None  # the run with the most records
    summary["agent_tree"] = tree
    from examples.support_triage.report import tree_lines, write_report

    report = write_report(state / "report.html", title="aios-mesh · support triage",
                          summary=summary["table"], tickets=items,
                          cost=summary["cost_per_tenant"], threshold=GROUNDEDNESS_THRESHOLD,
                          reasons=summary["reasons"], tree=tree,
                          run={**info, **{f"model {k}": f"v{v['version']}@champion"
                                          for k, v in versions.items()}})
    (state / "summary.json").write_text(json.dumps(
        {**summary, "decisions": {i["ticket"]: _decision(i) for i in items}}, indent=1,
        default=str))
    _print(out, summary, state, report, tree_lines(tree) if tree else [])
    ok = bool(audit.ok) and pending == 0 and len(items) == n and \
        all(i.get("route") in ROUTES for i in items)
    return RunResult(0 if ok else 1, state, report, summary, items, trees)


def _decision(item: Mapping[str, Any]) -> dict[str, Any]:
    """What the job decided for one ticket (the e2e test compares these across profiles)."""
    return {k: item.get(k) for k in ("tenant", "category", "confidence", "handled_by",
                                      "route", "groundedness", "citations", "agent_status")}


def _reasons(records: Sequence[DecisionRecord], review_reasons: Mapping[str, str]
             ) -> dict[str, dict[str, dict[str, int]]]:
    """Reason codes behind reviews and denials, per tenant (the invoice job's rule for a
    review without a policy code: :func:`examples.invoice_intake.run.review_reason_code`)."""
    from examples.invoice_intake.run import review_reason_code

    out: dict[str, dict[str, Counter[str]]] = {"review": defaultdict(Counter),
                                                 "denied": defaultdict(Counter)}
    for record in records:
        policy = record.policy or {}
        # the output check's code first (the RAG gate's: not_grounded), then the call's own
        checks = [c for c in reversed(policy.get("checks") or [])
                  if isinstance(c, Mapping) and c.get("reason_code")]
        code = checks[0]["reason_code"] if checks else policy.get("reason_code")
        if record.outcome == "review":
            out["review"][record.tenant][str(code or review_reason_code(
                review_reasons.get(record.review_id or "", "")))] += 1
        elif record.outcome == "denied":
            out["denied"][record.tenant][str(code or "denied")] += 1
    return {kind: {t: dict(sorted(c.items())) for t, c in sorted(by.items())}
            for kind, by in out.items()}


def _summarise(items: list[dict[str, Any]], records: list[DecisionRecord],
               truth: Mapping[str, Any], reviewer: Mapping[str, Any],
               timings: Mapping[str, float], holdout: float) -> dict[str, Any]:
    n = max(1, len(items))
    routes = Counter(i["route"] for i in items)
    correct = sum(i["category"] == truth[i["ticket"]].category for i in items)
    # every draft the writer produced: sent on, or parked by the answer's policy
    drafted = [i for i in items if i.get("handled_by") == "draft"
               and (i.get("answer") is not None or i.get("draft_review"))]
    grounded = [float(i["groundedness"]) for i in drafted]
    cites_truth = sum(truth[i["ticket"]].article in (i.get("citations") or [])
                      for i in drafted if i.get("answer") is not None)
    passed = sum(1 for i in drafted if i.get("answer") is not None)
    agents = [i for i in items if i.get("handled_by") == "agent"]
    agent_status = Counter(i["agent_status"] for i in agents)
    tool_calls = Counter(r.capability for r in records
                         if r.capability in ("lookup-order", "open-refund"))
    cost_tenant: dict[str, float] = defaultdict(float)
    latency: dict[str, list[float]] = defaultdict(list)
    tokens = [0, 0]
    for record in records:
        cost_tenant[record.tenant] += record.cost
        latency[record.capability].append(record.latency_ms)
        tokens[0] += int(record.usage.get("input_tokens", 0))
        tokens[1] += int(record.usage.get("output_tokens", 0))
    tenants = Counter(i["tenant"] for i in items)
    total = sum(cost_tenant.values())
    pii = [i for i in items if truth[i["ticket"]].pii]
    redacted = sum(1 for r in records if r.capability == "classify-ticket"
                   and r.redaction.get("applied"))
    turnaround = list(reviewer["turnaround_s"])
    escalations = routes["human"]
    above = sum(g >= GROUNDEDNESS_THRESHOLD for g in grounded)
    table: list[tuple[str, str]] = [
        ("tickets triaged", f"{len(items)} from {len(tenants)} tenants"),
        ("classifier accuracy", f"{correct / n:.1%} on this run · holdout {holdout:.1%}"),
        ("first-response automation rate", f"{routes['auto'] / n:.1%} ({routes['auto']} sent "
                                           "without a human)"),
        ("groundedness of drafted answers",
         (f"mean {statistics.mean(grounded):.2f} · {above}"
          f" of {len(grounded)} at or above {GROUNDEDNESS_THRESHOLD} (the weakest sentence's "
          f"overlap) · the drafts that passed cite the right article "
          f"{cites_truth / max(1, passed):.0%}") if drafted else "no drafts"),
        ("escalations to humans", f"{escalations} ({escalations / n:.1%})"),
        ("policy denials (spam)", str(routes["denied"])),
        ("exception agent runs", f"{len(agents)} (+{reviewer.get('resumed', 0)} resumed "
                                 "after a review): " + ", ".join(
            f"{k} {v}" for k, v in sorted(agent_status.items())) + " · tool calls "
         + (", ".join(f"{k} {v}" for k, v in sorted(tool_calls.items())) or "none")),
        ("personal data", f"{len(pii)} tickets carried some · classify calls redacted: "
                          f"{redacted}"),
        ("review turnaround (simulated reviewer)",
         f"{reviewer['decided']} of {reviewer['waiting']} decided · p50 "
         f"{statistics.median(turnaround):.1f} s · max {max(turnaround):.1f} s"
         if turnaround else f"none decided of {reviewer['waiting']} waiting"),
    ]
    for capability, values in sorted(latency.items()):
        table.append((f"latency {capability}", f"p50 {statistics.median(values):.1f} ms · "
                                               f"p95 {p95(values) or 0.0:.1f} ms · "
                                               f"{len(values)} calls"))
    table.append(("LLM tokens", f"{tokens[0]} in / {tokens[1]} out"))
    table.append(("cost per ticket", f"${total / n:.5f}"))
    for tenant, amount in sorted(cost_tenant.items()):
        table.append((f"cost {tenant}", f"${amount:.4f} · "
                                        f"${amount / max(1, tenants[tenant]):.5f} per ticket"))
    return {"table": table, "routes": dict(routes), "records": len(records),
            "automation_rate": routes["auto"] / n, "classifier_accuracy": correct / n,
            "groundedness_mean": statistics.mean(grounded) if grounded else None,
            "escalations": escalations, "agent_runs": len(agents),
            "agent_status": dict(agent_status), "tool_calls": dict(tool_calls),
            "cost_per_ticket": total / n, "cost_per_tenant": dict(cost_tenant),
            "tokens": {"input": tokens[0], "output": tokens[1]}, "timings": dict(timings)}


def _print(out: Console, summary: Mapping[str, Any], state: Path, report: Path,
           tree: list[str]) -> None:
    table = Table(title="support triage — summary", show_header=False)
    table.add_column("what", style="bold")
    table.add_column("value")
    for label, value in summary["table"]:
        table.add_row(label, value)
    out.print(table)
    if tree:
        out.print("record tree of one agent run:")
        for line in tree:
            out.print(f"  {line}", soft_wrap=True, markup=False)
    out.print(f"report: {report}", soft_wrap=True)
    out.print(f"state (audit log, review queue, config): {state}", soft_wrap=True)
