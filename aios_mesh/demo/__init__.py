"""``aios-mesh demo``: a first end-to-end automation on the embedded defaults.

Support tickets from three tenants are routed by a scikit-learn model registered in MLflow
(sqlite) under ``ticket-classifier@champion``, gated by Rego policies (regopy), charged
against in-process quotas, redacted where the policy demands, answered with help articles
from a tenant-scoped Qdrant Edge index, and every call leaves one decision record in the
hash-chained audit log. Nothing here needs a server.
"""

from __future__ import annotations

import shutil
import statistics
import time
from collections import Counter, defaultdict
from importlib.resources import files
from pathlib import Path
from typing import Any

import orjson
from rich.console import Console
from rich.panel import Panel
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from aios_mesh.errors import MeshError

__all__ = ["build_demo_mesh", "run_demo"]


def _copy_policies(state: Path) -> None:
    target = state / "policies"
    target.mkdir(parents=True, exist_ok=True)
    for item in files("aios_mesh.demo").joinpath("policies").iterdir():
        if item.name.endswith(".rego"):
            (target / item.name).write_text(item.read_text())


def build_demo_mesh(state: Path) -> Any:
    """The demo mesh: embedded defaults, three tenants, globex capped at 12 classifications."""
    from aios_mesh.config import config_from_mapping
    from aios_mesh.demo.capabilities import CLASSIFY, RETRIEVE
    from aios_mesh.mesh import Mesh

    _copy_policies(state)
    config = config_from_mapping({
        "state_dir": str(state),
        "lock_file": str(state / "aios-mesh.lock"),
        "tenants": {"acme": {}, "initech": {},
                    "globex": {"capabilities": {"classify-ticket": {"calls": 12}}}},
    }, source="demo")
    return Mesh(config, capabilities=[CLASSIFY, RETRIEVE])


def run_demo(state_dir: Path, *, n: int = 60, console: Console | None = None,
             fresh: bool = True) -> int:
    """Run the demo; returns the process exit code (0 when the audit chain verifies)."""
    from aios_mesh.demo.capabilities import index_kb
    from aios_mesh.demo.data import make_tickets, training_set
    from aios_mesh.demo.model import register_model, train_classifier

    out = console or Console()
    state = state_dir.resolve()
    if fresh and state.exists():
        shutil.rmtree(state)
    state.mkdir(parents=True, exist_ok=True)
    out.rule("[bold]aios-mesh demo[/] — support-ticket routing on the embedded defaults")
    timings: dict[str, float] = {}
    with build_demo_mesh(state) as mesh:
        t0 = time.perf_counter()
        with out.status("training the ticket classifier on generated tickets..."):
            texts, labels = training_set()
            pipeline, holdout_acc = train_classifier(texts, labels)
        timings["train"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        with out.status("registering it in MLflow (sqlite) as ticket-classifier@champion..."):
            ref = mesh.run_sync(register_model(mesh.port("registry"), pipeline,
                                                name="ticket-classifier", alias="champion",
                                                sample=texts[:20]))
        timings["register"] = time.perf_counter() - t0
        with out.status("indexing help articles per tenant in Qdrant Edge..."):
            mesh.run_sync(index_kb(mesh.port("retrieval")))
        lock = mesh.lock()
        mesh.prepare()  # load the model before the first ticket, not during it
        out.print(f"model [cyan]ticket-classifier[/] v{ref.version} (holdout accuracy "
                  f"{holdout_acc:.1%}) · policies {state / 'policies'} · lock {lock.name}")

        tickets = make_tickets(n)
        rows: list[dict[str, Any]] = []
        progress = Progress(TextColumn("[progress.description]{task.description}"),
                            BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                            console=out, transient=False)
        with progress:
            task = progress.add_task("processing tickets", total=len(tickets))
            for ticket in tickets:
                rows.append(_process(mesh, ticket))
                progress.advance(task)
        mesh.flush()
        report = mesh.run_sync(mesh.port("audit").verify())
        signals = mesh.relay.stats if mesh.relay is not None else None

    _print_calls(out, rows)
    _print_record(out, state)
    _print_summary(out, rows, report, state, timings, signals)
    return 0 if report.ok else 1


def _process(mesh: Any, ticket: Any) -> dict[str, Any]:
    row: dict[str, Any] = {"ticket": ticket.id, "tenant": ticket.tenant, "truth": ticket.queue,
                           "pii": ticket.has_pii}
    try:
        result = mesh.invoke("classify-ticket", {"text": ticket.text}, tenant=ticket.tenant,
                             caller="demo-intake")
        rec = result.record
        row.update(outcome=rec.outcome, record=rec, label=(result.output.label
                                                           if result.output else None))
        if result.output is not None and rec.outcome == "ok":
            ctx = mesh.invoke("retrieve-context", {"text": ticket.text, "top_k": 2},
                              tenant=ticket.tenant, caller="demo-intake")
            row["article"] = ctx.output.titles[0] if ctx.output.titles else None
            row["retrieve_record"] = ctx.record
    except MeshError as exc:
        row.update(outcome=type(exc).__name__, error=exc.message)
    return row


def _print_calls(out: Console, rows: list[dict[str, Any]]) -> None:
    table = Table(title="first calls (classify-ticket → retrieve-context)", show_lines=False)
    for col in ("ticket", "tenant", "outcome", "queue", "truth", "conf", "model", "redacted",
                "ms", "article"):
        table.add_column(col)
    for row in rows[:14]:
        rec = row.get("record")
        table.add_row(
            row["ticket"], row["tenant"], str(row["outcome"]), str(row.get("label") or "-"),
            row["truth"],
            f"{rec.confidence:.2f}" if rec and rec.confidence is not None else "-",
            f"v{rec.model['version']}" if rec and rec.model else "-",
            ",".join(f"{k}×{v}" for k, v in rec.redaction["counts"].items()) if rec else "-",
            f"{rec.latency_ms:.1f}" if rec else "-", str(row.get("article") or "-"))
    out.print(table)


def _print_record(out: Console, state: Path) -> None:
    # Show one full decision record — preferably one where the policy demanded redaction.
    lines = (state / "audit.jsonl").read_bytes().splitlines()
    chosen = None
    for line in lines:
        entry = orjson.loads(line)
        if entry["record"]["redaction"]["applied"]:
            chosen = entry
            break
    chosen = chosen or orjson.loads(lines[0])
    text = orjson.dumps(chosen["record"], option=orjson.OPT_INDENT_2).decode()
    out.print(Panel(text, title=f"decision record #{chosen['seq']} (hash "
                                f"{chosen['hash'][:12]}…)", expand=False))


def _print_summary(out: Console, rows: list[dict[str, Any]], report: Any, state: Path,
                   timings: dict[str, float], signals: Any) -> None:
    outcomes = Counter(str(r["outcome"]) for r in rows)
    auto = [r for r in rows if r["outcome"] == "ok"]
    correct = sum(r.get("label") == r["truth"] for r in auto)
    latency: dict[str, list[float]] = defaultdict(list)
    cost: dict[str, float] = defaultdict(float)
    for r in rows:
        for key in ("record", "retrieve_record"):
            rec = r.get(key)
            if rec is not None:
                latency[rec.capability].append(rec.latency_ms)
                cost[rec.tenant] += rec.cost
    table = Table(title="summary", show_header=False)
    table.add_column("what")
    table.add_column("value")
    table.add_row("tickets processed", str(len(rows)))
    table.add_row("automated (ok)", f"{len(auto)} ({len(auto) / max(1, len(rows)):.0%})")
    table.add_row("routing accuracy (automated vs ground truth)",
                  f"{correct / max(1, len(auto)):.1%}")
    table.add_row("routed to human review", str(outcomes.get("review", 0)))
    table.add_row("policy denials", str(outcomes.get("PolicyDenied", 0)))
    table.add_row("quota rejections", str(outcomes.get("QuotaExceeded", 0)))
    for cap, values in sorted(latency.items()):
        values.sort()
        p95 = values[min(len(values) - 1, int(0.95 * len(values)))]
        table.add_row(f"latency {cap}", f"p50 {statistics.median(values):.2f} ms · "
                                        f"p95 {p95:.2f} ms")
    for tenant, amount in sorted(cost.items()):
        table.add_row(f"cost {tenant}", f"${amount:.4f}")
    table.add_row("audit chain", f"[green]verified[/] ({report.records} records)"
                  if report.ok else f"[red]BROKEN[/]: {report.problems[:3]}")
    if signals is not None:
        table.add_row("lineage events emitted", f"{signals.lineage_events} "
                                                f"(OpenLineage, {state / 'lineage'})")
        table.add_row("decision events delivered", f"{signals.decision_events} "
                                                   "(aios.mesh.decisions on the bus)")
    table.add_row("decision log", str(state / "decisions.log"))
    table.add_row("setup", f"train {timings['train']:.1f}s · register "
                           f"{timings['register']:.1f}s")
    out.print(table)
