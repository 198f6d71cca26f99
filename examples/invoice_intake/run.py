"""The main job: invoice intake end to end, on one config profile.

    python -m examples.invoice_intake [--profile embedded|servers|gateway] [--n 540]

1. start the profile's servers (``servers`` and ``gateway`` profiles, see :mod:`.servers`);
2. train the extractor and the vendor embedder on generated data, log and register both in
   the profile's MLflow registry as ``champion``;
3. index each tenant's vendor master in its own scope of the vector store;
4. pin models and index snapshots in the lock file, load the models;
5. run the Flyte workflow (:mod:`.workflow`) batch by batch over the generated invoices; with
   ``[intake.gateway]`` (the ``gateway`` profile) its tasks call the capabilities through
   ``aios-mesh gateway --workers N`` (:mod:`.gateway`, :mod:`.calls`), not in process;
6. a **simulated** reviewer decides a fixed sample of the review queue against the corpus's
   ground truth (:mod:`.reviewer`; ``--reviewer-sample``), so quality has labels;
7. verify the audit chain, print the summary, write ``summary.json`` and the HTML report
   (run date, profile, every model/prompt/index version, reason codes behind reviews and
   denials, sample record ids per route, drift, quality from reviewers).

The exit code is 0 when every invoice reached a route, every event left the outbox and the
audit chain verifies.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import os
import shutil
import statistics
import time
import tomllib
from collections import Counter, defaultdict
from collections.abc import Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from aios_mesh.record import DecisionRecord, Outcome

__all__ = ["PROFILES", "RunResult", "effective_config", "run"]

HERE = Path(__file__).parent
PROFILES = HERE / "profiles"
POLICIES = HERE / "policies"
WORKFLOW = "examples.invoice_intake.workflow.invoice_intake"


@dataclass
class RunResult:
    """What :func:`run` did; ``summary.json`` holds the same."""

    exit_code: int
    state: Path
    report: Path
    summary: dict[str, Any]
    items: list[dict[str, Any]] = field(default_factory=list)


def _toml_str(text: str) -> str:
    """A TOML basic string: only quotes, backslashes and control characters escaped."""
    out = []
    for ch in text:
        if ch in '"\\':
            out.append("\\" + ch)
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return _toml_str(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, Mapping):
        return "{ " + ", ".join(f"{_toml_str(str(k))} = {_toml_value(v)}"
                                for k, v in value.items()) + " }"
    raise TypeError(f"cannot write {type(value).__name__} to TOML")


def _toml(doc: Mapping[str, Any], prefix: str = "") -> str:
    """A TOML document for a config mapping (scalars, lists, nested tables)."""
    lines = [f"{_toml_str(str(k))} = {_toml_value(v)}" for k, v in doc.items()
             if not isinstance(v, Mapping) or not v]
    for key, value in doc.items():
        if isinstance(value, Mapping) and value:
            name = f"{prefix}.{_toml_str(str(key))}" if prefix else _toml_str(str(key))
            lines += ["", f"[{name}]", _toml(value, name)]
    return "\n".join(lines)


def effective_config(profile: Path, state: Path,
                     backends: Mapping[str, Any] | None = None) -> Path:
    """Write ``state/aios-mesh.toml``: the profile with its state under ``state`` and the
    backend URLs the servers really listen on; returns its path."""
    doc = tomllib.loads(profile.read_text())
    doc.pop("intake", None)  # the driver's own table, not mesh config
    doc["state_dir"] = str(state)
    doc["lock_file"] = str(state / "aios-mesh.lock")
    if backends is not None:
        doc["backends"] = dict(backends)
    path = state / "aios-mesh.toml"
    path.write_text(f"# written by examples.invoice_intake from {profile}\n" + _toml(doc)
                    + "\n")
    return path


def _batches(items: list[Any], size: int) -> Iterator[list[Any]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


def _p(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else 0.0


def _accuracy(items: list[dict[str, Any]], truth: Mapping[str, Any]) -> dict[str, float]:
    """Exact-match accuracy per field over the invoices the model answered for."""
    from examples.invoice_intake.extractor import FIELDS, field_correct

    read = [i for i in items if i.get("fields")]
    hits: Counter[str] = Counter()
    for item in read:
        expected = truth[item["invoice"]]
        for name in FIELDS:
            hits[name] += field_correct(name, item["fields"].get(name), getattr(expected, name))
    return {name: hits[name] / len(read) if read else 0.0 for name in FIELDS}


#: Record ids shown per route in the report and ``summary.json`` (``samples``).
SAMPLE_IDS = 5


def run(*, profile: Path, state: Path, n: int = 540, batch: int = 30,
        private_servers: bool = False, console: Console | None = None,
        briefs: int = 6, reviewer_sample: int | None = None) -> RunResult:
    """Run the whole job on ``profile`` with all state under ``state`` (recreated); an LLM
    drafts review briefs for up to ``briefs`` of the invoices routed to humans; a simulated
    reviewer decides up to ``reviewer_sample`` review items against the ground truth
    (default :data:`~examples.invoice_intake.reviewer.DEFAULT_SAMPLE`; 0: none)."""
    from examples.invoice_intake.reviewer import DEFAULT_SAMPLE

    started = datetime.now(UTC)
    out = console or Console()
    # MLflow logs every run URL and pickling advice at INFO/WARNING; the summary says it all
    # (the variable applies if mlflow is imported after this, the logger if it was before)
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "ERROR")
    logging.getLogger("mlflow").setLevel(logging.ERROR)
    state = state.resolve()
    if state.exists():
        shutil.rmtree(state)
    state.mkdir(parents=True)
    shutil.copytree(POLICIES, state / "policies")
    doc = tomllib.loads(profile.read_text())
    timings: dict[str, float] = {}
    out.rule(f"[bold]invoice intake[/] — profile [cyan]{profile.stem}[/]")
    with ExitStack() as stack:
        backends = doc.get("backends", {})
        live = None
        # [intake] start_servers: default true when the profile names any server at all;
        # false where something else runs them (compose.toml: docker compose up)
        if doc.get("intake", {}).get("start_servers", bool(backends.keys() - {"serving_named"})):
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
        # Flyte tasks find their mesh through this; set for the run only (a caller that runs
        # the job in process, like the tests, must not keep it)
        previous = os.environ.get("AIOS_MESH_CONFIG")
        os.environ["AIOS_MESH_CONFIG"] = str(config)
        stack.callback(_restore_env, "AIOS_MESH_CONFIG", previous)
        gateway = doc.get("intake", {}).get("gateway")
        result = _run_job(out, config, state, n, batch, live, timings, stack,
                          _Front(gateway, private_servers) if gateway is not None else None,
                          briefs=briefs, reviewer_sample=DEFAULT_SAMPLE
                          if reviewer_sample is None else reviewer_sample,
                          run_info={"date": started.isoformat(timespec="seconds"),
                                    "profile": profile.stem, "profile_file": str(profile),
                                    "invoices": n, "batch": batch})
    return result


def _restore_env(name: str, value: str | None) -> None:
    if value is None:
        os.environ.pop(name, None)
    else:
        os.environ[name] = value


@dataclass(frozen=True)
class _Front:
    """``[intake.gateway]``: the workflow calls through ``aios-mesh gateway``."""

    options: Mapping[str, Any]
    private: bool


def _start_gateway(out: Console, stack: ExitStack, front: _Front, mesh: Any, config: Path,
                   state: Path, timings: dict[str, float]) -> Any:
    from examples.invoice_intake.capabilities import EXTRACT, MATCH, ROUTE
    from examples.invoice_intake.gateway import local_gateway
    from examples.invoice_intake.intake import CALLER

    workers = int(front.options.get("workers", 2))
    # the job is done with the vendor index: release it, each worker opens a copy
    asyncio.run(mesh.port("retrieval").aclose())
    with out.status(f"starting aios-mesh gateway with {workers} workers..."):
        t0 = time.perf_counter()
        live = stack.enter_context(local_gateway(
            config, mesh.state, state / "gateway", tenants=sorted(mesh.config.tenants),
            caller=CALLER, capabilities=[s.name for s in (EXTRACT, MATCH, ROUTE)],
            workers=workers, port=front.options.get("port"), private=front.private))
        timings["gateway"] = time.perf_counter() - t0
    out.print(f"  [green]✓[/] aios-mesh gateway, {workers} workers on {live.url} · "
              f"review console {live.console}", soft_wrap=True)
    return live


def _run_job(out: Console, config: Path, state: Path, n: int, batch: int, live: Any,
             timings: dict[str, float], stack: ExitStack | None = None,
             front: _Front | None = None, briefs: int = 0, reviewer_sample: int = 0,
             run_info: dict[str, Any] | None = None) -> RunResult:
    from aios_mesh_flyte import close_meshes, current_mesh

    from examples.invoice_intake import models
    from examples.invoice_intake.briefs import LLM_MODEL, brief_reviews, publish_llm
    from examples.invoice_intake.capabilities import (
        ALL,
        BRIEF,
        EMBED,
        EXTRACT,
        ROUTES,
        index_vendors,
    )
    from examples.invoice_intake.corpus import make_corpus
    from examples.invoice_intake.reviewer import simulate_reviews
    from examples.invoice_intake.workflow import invoice_intake

    records: list[DecisionRecord] = []
    mesh = current_mesh(config)
    for spec in ALL:
        if spec.name not in mesh.capabilities:
            mesh.register(spec)
    mesh.sinks.append(lambda record, _doc: records.append(record))
    try:
        t0 = time.perf_counter()
        with out.status("training the invoice extractor and the vendor embedder..."):
            trained = models.train()
        timings["train"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        with out.status("logging and registering both in MLflow as champion..."):
            refs = asyncio.run(models.publish(mesh.port("registry"), trained))
        llm_url = mesh.config.backends.serving_named.get(BRIEF.serving or "")
        if llm_url is not None:  # the LLM is named in the registry like the models
            refs[LLM_MODEL] = asyncio.run(publish_llm(mesh.port("registry")))
        timings["register"] = time.perf_counter() - t0
        with out.status("indexing each tenant's vendor master..."):
            vectors = {t: trained.embedder.embed([name for _, name in rows])
                       for t, rows in trained.vendor_names.items()}
            indexed = asyncio.run(index_vendors(mesh.port("retrieval"), trained.vendor_names,
                                                vectors))
        if live is not None:
            before = len(live.started)
            with out.status("starting BentoML with the registered models..."):
                t0 = time.perf_counter()
                live.start_serving({"serving": EXTRACT.model, EMBED.serving: EMBED.model})
            if len(live.started) > before:  # a profile may serve in process
                timings["serving"] = time.perf_counter() - t0
            for line in live.started[before:]:
                out.print(f"  [green]✓[/] {line}")
        lock = mesh.lock()
        mesh.prepare()
        for name, ref in refs.items():
            out.print(f"model [cyan]{name}[/] v{ref.version}@champion · ", end="")
        out.print(f"{indexed} vendors indexed · lock {lock.name} · config {config}")
        out.print("extractor holdout accuracy: " + ", ".join(
            f"{k} {v:.1%}" for k, v in trained.holdout.items()))
        gateway = None
        since = 0
        if front is not None:
            assert stack is not None
            gateway = _start_gateway(out, stack, front, mesh, config, state, timings)
            since = asyncio.run(_verify(mesh))[1]  # this job's records come after these

        invoices = make_corpus(n)
        truth = {inv.id: inv.truth for inv in invoices}
        payloads = [{"id": inv.id, "tenant": inv.tenant, "text": inv.text} for inv in invoices]
        items: list[dict[str, Any]] = []
        progress = Progress(TextColumn("[progress.description]{task.description}"),
                            BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                            console=out)
        t0 = time.perf_counter()
        with progress, _calls_through(gateway):
            task = progress.add_task("processing invoices", total=len(payloads))
            for chunk in _batches(payloads, batch):
                items.extend(invoice_intake(invoices=chunk))
                progress.advance(task, len(chunk))
        timings["intake"] = time.perf_counter() - t0
        brief_summary = None
        if llm_url is not None and briefs > 0:
            t0 = time.perf_counter()
            with progress:
                task = progress.add_task("drafting review briefs (LLM)",
                                         total=min(briefs, sum(
                                             1 for i in items if i.get("route") == "human")))
                brief_summary = brief_reviews(mesh, items, briefs,
                                              advance=lambda: progress.advance(task))
            timings["briefs"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        reviewer = simulate_reviews(mesh, items, truth, reviewer_sample)
        timings["reviewer"] = time.perf_counter() - t0
        if gateway is not None:  # the gateway's workers made the calls and their records
            records.extend(asyncio.run(_recorded(mesh, since)))
        runs = list(dict.fromkeys(r for r in map(_workflow_run, records) if r is not None))
        mesh.flush()
        report_ok = asyncio.run(_verify(mesh))
        reviewed = _quality(mesh)
        review_reasons = {item.id: item.reason for item in mesh.review_queue().list(None)}
        drift = asyncio.run(_drift(mesh))
        pending = mesh.outbox().pending()
        signals = mesh.relay.stats if mesh.relay is not None else None
    finally:
        close_meshes()

    summary = _summarise(items, records, truth, report_ok, pending, signals, timings,
                         len(runs), n)
    summary["quality"] = reviewed
    summary["run"] = {**(run_info or {}), "state": str(state)}
    summary["versions"] = _versions(records, mesh.config.lock_path)
    summary["reasons"] = _reasons(records, review_reasons)
    summary["samples"] = _samples(items)
    summary["reviewer"] = reviewer
    summary["drift"] = drift
    summary["table"][:0] = _run_rows(summary["run"], summary["versions"])
    summary["table"][-1:-1] = _reviewer_rows(reviewer, drift)
    if brief_summary is not None:
        summary["briefs"] = brief_summary
        summary["table"][-1:-1] = _brief_rows(brief_summary)
    if gateway is not None:
        summary["gateway"] = {"url": gateway.url, "workers": gateway.workers,
                              "console": gateway.console,
                              "reviewer_keys": str(gateway.reviewer_keys),
                              "command": gateway.command}
    lineage = _lineage(state, records, runs[0] if runs else None)
    from examples.invoice_intake.report import write_report

    report = write_report(state / "report.html", title="aios-mesh · invoice intake",
                          summary=[(k, str(v)) for k, v in summary["table"]],
                          calls=[_call_row(r) for r in records],
                          invoices=[_invoice_row(i, truth) for i in items], lineage=lineage,
                          quality=reviewed, run=summary["run"],
                          versions=summary["versions"], reasons=summary["reasons"],
                          samples=summary["samples"], reviewer=reviewer, drift=drift)
    (state / "summary.json").write_text(json.dumps({**summary, "decisions": _decisions(items)},
                                                   indent=1, default=str))
    _print_summary(out, summary, state, report)
    ok = report_ok[0] and pending == 0 and len(items) == n and \
        all(i.get("route") in ROUTES for i in items)
    return RunResult(0 if ok else 1, state, report, summary, items)


@contextmanager
def _calls_through(gateway: Any) -> Iterator[None]:
    """Point the workflow's capability calls at ``gateway`` (None: keep them in process) —
    the environment :mod:`examples.invoice_intake.calls` reads; restored afterwards."""
    from examples.invoice_intake.calls import GATEWAY_ENV, KEYS_ENV, close_clients

    if gateway is None:
        yield
        return
    saved = {k: os.environ.get(k) for k in (GATEWAY_ENV, KEYS_ENV)}
    os.environ[GATEWAY_ENV] = gateway.url
    os.environ[KEYS_ENV] = str(gateway.keys)
    try:
        yield
    finally:
        close_clients()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


_RECORD_FIELDS = frozenset(f.name for f in dataclasses.fields(DecisionRecord))


def _record_of(doc: Mapping[str, Any]) -> DecisionRecord:
    """A decision record as the audit log holds it (``DecisionRecord.to_dict``), rebuilt."""
    flat = {k: v for k, v in doc.items() if k in _RECORD_FIELDS}
    flat.update(capability=doc["capability"]["name"],
                capability_version=doc["capability"]["version"],
                trace_id=(doc.get("trace") or {}).get("trace_id"),
                span_id=(doc.get("trace") or {}).get("span_id"),
                outcome=Outcome(doc["outcome"]))
    return DecisionRecord(**flat)


async def _recorded(mesh: Any, since: int) -> list[DecisionRecord]:
    """The call records appended to the audit log after entry ``since`` (a reviewer's
    decision is an entry too, with a ``kind``: not a call)."""
    entries = await mesh.port("audit").read(since)
    return [_record_of(e.record) for e in entries if "kind" not in e.record]


def _quality(mesh: Any) -> dict[str, Any]:
    """The reviewers' labels joined with the decision records, per capability and model
    version (:mod:`aios_mesh.lifecycle.quality`). The job decides no review itself: until a
    reviewer does (console, ``aios-mesh review``), there are no labels, and only the
    automation rates and interventions are filled."""
    from aios_mesh.lifecycle.quality import quality

    return asyncio.run(quality(mesh)).to_dict()


def _versions(records: Sequence[DecisionRecord], lock_path: Path | None) -> dict[str, Any]:
    """Every model, prompt and index snapshot the run's calls used (from the records, with
    their call counts) and what the lock file pins (name, version, alias: never a source
    URI or tag, which may name a server)."""
    models: Counter[tuple[str, str, str]] = Counter()
    prompts: Counter[tuple[str, str, str]] = Counter()
    indexes: Counter[tuple[str, str]] = Counter()
    for record in records:
        model, prompt = record.model or {}, record.prompt or {}
        if model.get("name"):
            models[(str(model["name"]), str(model.get("version")),
                    str(model.get("alias") or ""))] += 1
        if prompt.get("name"):
            prompts[(str(prompt["name"]), str(prompt.get("version")),
                     str(prompt.get("alias") or ""))] += 1
        for collection, snapshot in (record.index_snapshots or {}).items():
            indexes[(str(collection), str(snapshot))] += 1
    lock: dict[str, Any] = {}
    if lock_path is not None and lock_path.is_file():
        from aios_mesh.lockfile import LockFile

        pinned = LockFile.read(lock_path)
        if pinned is not None:
            lock = {"file": lock_path.name, "created_at": pinned.created_at,
                    "models": {spec: {"name": r.name, "version": r.version, "alias": r.alias}
                               for spec, r in sorted(pinned.models.items())},
                    "prompts": {spec: {"name": p.name, "version": p.version,
                                       "alias": p.alias}
                                for spec, p in sorted(pinned.prompts.items())},
                    "indexes": dict(sorted(pinned.indexes.items()))}
    return {"models": [{"name": n, "version": v, "alias": a or None, "calls": c}
                       for (n, v, a), c in sorted(models.items())],
            "prompts": [{"name": n, "version": v, "alias": a or None, "calls": c}
                        for (n, v, a), c in sorted(prompts.items())],
            "indexes": [{"collection": n, "snapshot": v, "calls": c}
                        for (n, v), c in sorted(indexes.items())],
            "lock": lock}


def review_reason_code(reason: str) -> str:
    """A review item's reason as a code: ``low_confidence`` (below the capability's
    threshold), ``policy_require_human`` (a policy obligation), ``paused`` (an operator
    paused the capability), ``fallback_to_human`` (a fallback chain ended in review).

    >>> review_reason_code("confidence 0.319 below 0.35")
    'low_confidence'
    """
    if reason.startswith("confidence"):
        return "low_confidence"
    if reason.startswith("policy"):
        return "policy_require_human"
    if reason.startswith("paused"):
        return "paused"
    return "fallback_to_human" if "fallback" in reason else "other"


def _policy_code(record: DecisionRecord) -> str | None:
    """The reason code the policy gave (its own, or the first of its checks')."""
    policy = record.policy or {}
    if policy.get("reason_code"):
        return str(policy["reason_code"])
    for check in policy.get("checks") or []:
        if isinstance(check, Mapping) and check.get("reason_code"):
            return str(check["reason_code"])
    return None


def _reasons(records: Sequence[DecisionRecord], review_reasons: Mapping[str, str]
             ) -> dict[str, dict[str, dict[str, int]]]:
    """Why calls went to humans and why they were denied: counts per reason code, per
    tenant (``{"review": {tenant: {code: n}}, "denied": {...}}``). A review's code is the
    policy's when it gave one, else its review item's reason as a code
    (:func:`review_reason_code`); a denial's is the policy's (or the error's code)."""
    out: dict[str, dict[str, Counter[str]]] = {"review": defaultdict(Counter),
                                                 "denied": defaultdict(Counter)}
    for record in records:
        if record.outcome == "review":
            code = _policy_code(record) or review_reason_code(
                review_reasons.get(record.review_id or "", ""))
            out["review"][record.tenant][code] += 1
        elif record.outcome == "denied":
            code = _policy_code(record) or str((record.error or {}).get("code") or "denied")
            out["denied"][record.tenant][code] += 1
    return {kind: {tenant: dict(sorted(codes.items())) for tenant, codes in sorted(
        by_tenant.items())} for kind, by_tenant in out.items()}


def _samples(items: Sequence[Mapping[str, Any]], k: int = SAMPLE_IDS
             ) -> dict[str, list[dict[str, str]]]:
    """Up to ``k`` invoices per route (in invoice order) with the record id of the call that
    decided the route (the last one), to look up with ``aios-mesh records show ID``."""
    out: dict[str, list[dict[str, str]]] = defaultdict(list)
    for item in sorted(items, key=lambda i: str(i["invoice"])):
        route = str(item.get("route"))
        if len(out[route]) < k and item.get("records"):
            out[route].append({"invoice": str(item["invoice"]), "tenant": str(item["tenant"]),
                               "record_id": str(item["records"][-1])})
    return dict(sorted(out.items()))


async def _drift(mesh: Any) -> dict[str, Any]:
    """The drift panel: whether a drift monitor watched this run's calls, and the alarms in
    the audit log with the statistics of each drifted feature."""
    monitor = any(p.name in ("drift", "deferred:drift") for p in mesh.recorder.processors)
    alarms = []
    for entry in await mesh.port("audit").read():
        rec = entry.record
        if rec.get("kind") != "drift_alarm":
            continue
        alarms.append({k: rec.get(k) for k in (
            "alarm_id", "at", "capability", "model", "model_version", "calls", "window",
            "per_test_alpha", "features_tested", "worst_feature", "worst_effect",
            "drifted")})
    return {"monitor": "on" if monitor else "off", "alarms": alarms}


def _run_rows(info: Mapping[str, Any], versions: Mapping[str, Any]) -> list[tuple[str, str]]:
    rows = [("run", f"{info.get('date', '?')} · profile {info.get('profile', '?')}")]
    rows.append(("models used", ", ".join(
        f"{m['name']} v{m['version']}" + (f"@{m['alias']}" if m["alias"] else "")
        for m in versions["models"]) or "—"))
    if versions["prompts"]:
        rows.append(("prompts used", ", ".join(f"{p['name']} v{p['version']}"
                                               for p in versions["prompts"])))
    if versions["indexes"]:
        rows.append(("index snapshots", ", ".join(f"{i['collection']} {i['snapshot']}"
                                                  for i in versions["indexes"])))
    return rows


def _reviewer_rows(reviewer: Mapping[str, Any], drift: Mapping[str, Any]
                   ) -> list[tuple[str, str]]:
    verdicts: Counter[str] = Counter()
    for per in reviewer["by_capability"].values():
        verdicts.update(per)
    detail = ", ".join(f"{v} {n}" for v, n in sorted(verdicts.items()))
    rows = [("simulated reviewer (not a person)",
             f"{reviewer['decided']} of {reviewer['waiting']} review items decided against "
             f"the ground truth" + (f" ({detail})" if detail else "")
             + f" · --reviewer-sample {reviewer['sample']}")]
    rows.append(("drift monitor", "off" if drift["monitor"] == "off" else
                 f"on · {len(drift['alarms'])} alarms"))
    return rows


async def _verify(mesh: Any) -> tuple[bool, int, list[Any]]:
    report = await mesh.port("audit").verify()
    return bool(report.ok), int(report.records), list(report.problems[:3])


def _call_row(record: DecisionRecord) -> dict[str, Any]:
    return {"capability": record.capability, "tenant": record.tenant,
            "latency_ms": record.latency_ms, "cost": record.cost, "outcome": record.outcome}


def _invoice_row(item: Mapping[str, Any], truth: Mapping[str, Any]) -> dict[str, Any]:
    from examples.invoice_intake.extractor import FIELDS, field_correct

    fields = item.get("fields") or {}
    expected = truth[item["invoice"]]
    correct = all(field_correct(k, fields.get(k), getattr(expected, k)) for k in FIELDS) \
        if fields else None
    brief = item.get("brief") or {}
    return {"invoice": item["invoice"], "tenant": item["tenant"], "route": item["route"],
            "amount": fields.get("total"), "currency": fields.get("currency"),
            "correct": correct,
            "brief": {k: brief[k] for k in ("reason", "missing_fields", "question_to_vendor")}
            if "reason" in brief else None}


def _decisions(items: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per invoice, what the job decided (the e2e test compares these across profiles)."""
    return {i["invoice"]: {"route": i["route"], "stage": i["stage"],
                           "fields": i.get("fields"),
                           "vendor_id": (i.get("vendor") or {}).get("vendor_id"),
                           "amount_usd": i.get("amount_usd")} for i in items}


def _summarise(items: list[dict[str, Any]], records: list[DecisionRecord],
               truth: Mapping[str, Any], audit: tuple[bool, int, list[Any]], pending: int,
               signals: Any, timings: dict[str, float], runs: int, n: int) -> dict[str, Any]:
    routes = Counter(i["route"] for i in items)
    accuracy = _accuracy(items, truth)
    latency: dict[str, list[float]] = defaultdict(list)
    cost_tenant: dict[str, float] = defaultdict(float)
    for record in records:
        latency[record.capability].append(record.latency_ms)
        cost_tenant[record.tenant] += record.cost
    invoices_tenant = Counter(i["tenant"] for i in items)
    total_cost = sum(cost_tenant.values())
    denials = sum(1 for r in records if r.outcome == "denied")
    vendor_ok = [i for i in items if i.get("vendor")]
    vendor_acc = sum(i["vendor"]["vendor_id"] == truth[i["invoice"]].vendor_id
                     for i in vendor_ok) / max(1, len(vendor_ok))
    table: list[tuple[str, str]] = [
        ("invoices processed", f"{len(items)} of {n} in {runs} workflow runs"),
        ("extraction accuracy (exact match vs ground truth)",
         ", ".join(f"{k} {v:.1%}" for k, v in accuracy.items())),
        ("vendor match accuracy", f"{vendor_acc:.1%} of {len(vendor_ok)} matched"),
        ("automation rate (auto-approved)", f"{routes['auto'] / max(1, len(items)):.1%} "
                                            f"({routes['auto']})"),
        ("routed to humans", str(routes["human"])),
        ("policy denials", f"{routes['denied']} invoices ({denials} denied calls)"),
        ("exceptions (unusable invoices)", str(routes["exception"])),
    ]
    for capability, values in sorted(latency.items()):
        table.append((f"latency {capability}",
                      f"p50 {statistics.median(values):.2f} ms · p95 {_p(values, 0.95):.2f} ms"
                      f" · {len(values)} calls"))
    table.append(("served by", ", ".join(f"{k} ({v} calls)" for k, v in sorted(Counter(
        str(r.serving) for r in records if r.serving).items()))))
    table.append(("cost per invoice", f"${total_cost / max(1, len(items)):.5f}"))
    for tenant, amount in sorted(cost_tenant.items()):
        per_invoice = amount / max(1, invoices_tenant[tenant])
        table.append((f"cost {tenant}", f"${amount:.4f} · ${per_invoice:.5f} per invoice"))
    ok, count, problems = audit
    table.append(("audit chain", f"verified ({count} records)" if ok
                  else f"BROKEN: {problems}"))
    published = len(items) - pending
    table.append(("events delivered", f"{published} invoice events"
                  + (f", {pending} still in the outbox" if pending else "")
                  + (f" · {signals.decision_events} decision events" if signals else "")))
    call_events = signals.lineage_events if signals else 0
    lineage_events = call_events + 2 * runs  # each workflow run: START + COMPLETE/FAIL
    table.append(("lineage events emitted", f"{lineage_events} ({call_events} for calls, "
                                            f"{2 * runs} for {runs} workflow runs)"))
    table.append(("time", " · ".join(f"{k} {v:.1f}s" for k, v in timings.items())))
    served_by = Counter(str(r.serving).split("+")[0] for r in records if r.serving)
    return {"table": table, "routes": dict(routes), "served_by": dict(served_by),
            "accuracy": accuracy,
            "vendor_accuracy": vendor_acc, "records": len(records),
            "audit_ok": ok, "outbox_pending": pending,
            "lineage_events": lineage_events,
            "decision_events": signals.decision_events if signals else 0,
            "cost_per_tenant": dict(cost_tenant), "timings": timings}


def _brief_rows(b: Mapping[str, Any]) -> list[tuple[str, str]]:
    p50 = b["latency_ms_p50"]
    rows = [("review briefs (LLM, advice only)",
             f"{b['briefed']} of {b['waiting']} invoices waiting for a human"
             + (f" (a sample: --briefs {b['limit']})" if b["waiting"] > b["limit"] else "")
             + (f" · {b['failed']} failed" if b["failed"] else "")
             + (f" · p50 {p50 / 1000:.1f} s" if p50 is not None else ""))]
    for tenant, used in b["tokens"].items():
        rows.append((f"brief tokens {tenant}",
                     f"{used['input']} in / {used['output']} out · "
                     f"${b['cost'].get(tenant, 0.0):.5f}"))
    return rows


def _workflow_run(record: DecisionRecord) -> str | None:
    """The workflow run a call belongs to: its parent, or for a nested call (whose parent is
    the capability run that made it) the root of its chain."""
    parent = record.parent or {}
    run_id = (parent.get("root") or parent).get("run_id")
    return None if run_id is None else str(run_id)


def _lineage(state: Path, records: list[DecisionRecord], run_id: str | None
             ) -> list[dict[str, Any]]:
    """The OpenLineage events of one workflow run: read back from the file transport when the
    profile writes one, else derived from the decision records as the relay derived them."""
    from aios_mesh.lineage import run_events_for, run_uuid, workflow_run_events

    if run_id is None:
        return []
    mine = [r for r in records if _workflow_run(r) == run_id]
    wanted = run_uuid(run_id, namespace="flyte")
    path = state / "lineage" / "events.jsonl"
    if path.exists():
        events = [json.loads(line) for line in path.read_text().splitlines() if line]
        return [e for e in events if e["run"]["runId"] == wanted or wanted in (
                e["run"].get("facets", {}).get("parent", {}).get("run", {}).get("runId"),
                e["run"].get("facets", {}).get("parent", {}).get("root", {}).get("run", {})
                .get("runId"))]
    events = workflow_run_events(run_id, WORKFLOW, status="succeeded",
                                 started_at=mine[0].started_at if mine else None,
                                 ended_at=mine[-1].ended_at if mine else None)
    for record in mine:
        events.extend(run_events_for(record.to_dict()))
    return events


def _print_summary(out: Console, summary: dict[str, Any], state: Path, report: Path) -> None:
    table = Table(title="invoice intake — summary", show_header=False)
    table.add_column("what", style="bold")
    table.add_column("value")
    for label, value in summary["table"]:
        table.add_row(label, value)
    out.print(table)
    # on lines of their own: a table column would fold long paths
    out.print(f"report: [link=file://{report}]{report}[/link]", soft_wrap=True)
    out.print(f"state (audit log, lineage, review queue, config): {state}", soft_wrap=True)
    gateway = summary.get("gateway")
    if gateway:
        out.print(f"review console: {gateway['console']} · log in with your tenant's reviewer "
                  f"key from {gateway['reviewer_keys']} (readable by you only)",
                  soft_wrap=True)
        out.print(f"the job has stopped its gateway; to work the review queue, start it "
                  f"again: {gateway['command']}", soft_wrap=True)
