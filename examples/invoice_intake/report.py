"""One self-contained HTML report of an invoice intake run (inline SVG + CSS, no JS/CDN).

:func:`write_report` renders its sections — the run (date, profile, every model, prompt and
index version used and the lock file's pins), summary, latency per capability, cost per
tenant, automation rate, why invoices went to humans or were denied (reason codes per
tenant), sample record ids per route, review briefs, quality from reviewers (accuracy,
override and automation rates and the reliability curve per model version; labelled by a
simulated reviewer in the main job), drift (alarms and per-feature statistics, or "drift
monitor off"), and the OpenLineage graph of one workflow run — with the standard library
only; every value drawn is HTML-escaped (see :mod:`.svg`).
"""

from __future__ import annotations

import math
import os
import tempfile
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import svg
from .capabilities import ROUTES
from .svg import esc

__all__ = ["percentile", "render_report", "write_report"]

_ROUTE_COLOURS = {"auto": "#009E73", "human": "#56B4E9", "denied": "#D55E00",
                  "exception": "#E69F00"}
_STATE_COLOURS = {"COMPLETE": "#2e9e44", "FAIL": "#d03b3b", "ABORT": "#d08a3b",
                  "MIXED": "#d9a21b"}
_MAX_CALL_NODES = 40  # capabilities drawn in the lineage graph
_MAX_POINTS = 300  # dots drawn per capability in the strip plot

_CSS = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2rem auto;
max-width:1000px;padding:0 1rem;color:#222;background:#fff}
h1{font-size:1.6rem;margin-bottom:.2rem}h2{font-size:1.2rem;margin-top:2.2rem;
border-bottom:1px solid #ddd;padding-bottom:.2rem}
table{border-collapse:collapse;margin:.6rem 0}th,td{padding:.25rem .7rem;
border-bottom:1px solid #eee;text-align:left}td.num,th.num{text-align:right;
font-variant-numeric:tabular-nums}
svg{display:block;max-width:100%;height:auto;margin:.6rem 0;font-family:inherit}
svg .axis,svg .tick{stroke:#444}.note{color:#666;font-size:.9rem}
.legend{display:flex;gap:1rem;flex-wrap:wrap;font-size:.9rem}
.swatch{display:inline-block;width:.8rem;height:.8rem;margin-right:.3rem;vertical-align:-1px}
""".strip()


# --------------------------------------------------------------------------- helpers


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0..100) with linear interpolation (numpy's default)."""
    if not values:
        return math.nan
    ordered = sorted(values)
    pos = (len(ordered) - 1) * min(max(q, 0.0), 100.0) / 100.0
    low = math.floor(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


def _money(value: float) -> str:
    return f"${value:,.4f}"


def _ms(value: float) -> str:
    if not math.isfinite(value):
        return "—"
    return f"{value:,.1f} ms" if value < 1000 else f"{value / 1000:,.2f} s"


def _float(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _table(headers: Sequence[str], rows: Sequence[Sequence[object]], *, cls: str,
           numeric: Sequence[int] = ()) -> str:
    def cell(tag: str, i: int, value: object) -> str:
        kind = ' class="num"' if i in numeric else ""
        return f"<{tag}{kind}>{esc(value)}</{tag}>"

    head = "".join(cell("th", i, h) for i, h in enumerate(headers))
    body = "".join("<tr>" + "".join(cell("td", i, v) for i, v in enumerate(row)) + "</tr>"
                   for row in rows)
    return f'<table class="{esc(cls)}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def _legend(items: Sequence[tuple[str, str]]) -> str:
    spans = "".join(f'<span><span class="swatch" style="background:{esc(colour)}"></span>'
                    f"{esc(name)}</span>" for name, colour in items)
    return f'<div class="legend">{spans}</div>'


def _empty(message: str) -> str:
    return f'<p class="note empty">{esc(message)}</p>'


# --------------------------------------------------------------------------- sections


def _summary_section(summary: Sequence[tuple[str, str]]) -> str:
    if not summary:
        return _empty("no summary")
    return _table(("Metric", "Value"), [(label, value) for label, value in summary],
                  cls="summary")


def _latency_section(calls: Sequence[Mapping[str, Any]]) -> str:
    series: dict[str, list[float]] = defaultdict(list)
    for call in calls:
        latency = _float(call.get("latency_ms"))
        if latency is not None:
            series[str(call.get("capability", "?"))].append(max(latency, 0.0))
    if not series:
        return _empty("no calls recorded")
    names = sorted(series)
    colours = {name: svg.PALETTE[i % len(svg.PALETTE)] for i, name in enumerate(names)}
    positive = [v for values in series.values() for v in values if v > 0]
    lo = min(positive) if positive else 0.1
    hi = max(positive) if positive else 1.0
    lo, hi = 10 ** math.floor(math.log10(lo)), 10 ** math.ceil(math.log10(hi))
    if hi <= lo:
        hi = lo * 10
    left, right, row_h, top = 190.0, 880.0, 34.0, 16.0
    width = right + 30
    height = top + row_h * len(names) + 52
    scale = svg.Scale(lo, hi, left, right, log=True)
    body = svg.axis_x(scale, svg.log_ticks(lo, hi), top + row_h * len(names) + 6,
                      fmt="{:g}", label="latency (ms, log scale)", grid_to=top)
    rows = []
    for i, name in enumerate(names):
        values = sorted(series[name])
        mid = top + row_h * i + row_h / 2
        p50, p95 = percentile(values, 50), percentile(values, 95)
        body.append(svg.text(left - 8, mid + 4, svg.truncate(name, 26), anchor="end",
                             size=12, title=name, cls="series-label"))
        stride = max(1, math.ceil(len(values) / _MAX_POINTS))
        for j, value in enumerate(values[::stride]):
            jitter = ((j * 7919) % 17 - 8) / 8 * (row_h * 0.28)
            body.append(svg.circle(scale(max(value, lo)), mid + jitter, 2.4,
                                   fill=colours[name], opacity=0.45, cls="point"))
        body.append(svg.line(scale(max(p50, lo)), mid - row_h * 0.42, scale(max(p50, lo)),
                             mid + row_h * 0.42, stroke="#111", width=2.5, cls="p50",
                             title=f"{name} p50 {_ms(p50)}"))
        body.append(svg.line(scale(max(p95, lo)), mid - row_h * 0.42, scale(max(p95, lo)),
                             mid + row_h * 0.42, stroke="#111", width=1.5, dash="4 3",
                             cls="p95", title=f"{name} p95 {_ms(p95)}"))
        rows.append((name, len(values), _ms(p50), _ms(p95), _ms(values[-1])))
    legend = _legend([(name, colours[name]) for name in names])
    marks = (f'<p class="note">Each dot is one call (at most {_MAX_POINTS} per capability, '
             "evenly sampled); solid line = p50, dashed line = p95.</p>")
    chart = svg.document(width, height, body, label="Latency per capability",
                         cls="chart latency")
    table = _table(("Capability", "Calls", "p50", "p95", "max"), rows, cls="latency",
                   numeric=(1, 2, 3, 4))
    return legend + chart + marks + table


def _tenants(calls: Sequence[Mapping[str, Any]],
             invoices: Sequence[Mapping[str, Any]]) -> list[str]:
    return sorted({str(c.get("tenant", "?")) for c in calls}
                  | {str(i.get("tenant", "?")) for i in invoices})


def _cost_section(calls: Sequence[Mapping[str, Any]],
                  invoices: Sequence[Mapping[str, Any]]) -> str:
    tenants = _tenants(calls, invoices)
    if not tenants:
        return _empty("no calls recorded")
    cost: dict[str, float] = dict.fromkeys(tenants, 0.0)
    n_calls: Counter[str] = Counter()
    for call in calls:
        tenant = str(call.get("tenant", "?"))
        cost[tenant] += _float(call.get("cost")) or 0.0
        n_calls[tenant] += 1
    n_invoices = Counter(str(i.get("tenant", "?")) for i in invoices)
    left, right, row_h, top = 150.0, 760.0, 30.0, 10.0
    peak = max(max(cost.values()), 1e-12)
    scale = svg.Scale(0.0, peak, left, right)
    body: list[str] = []
    for i, tenant in enumerate(tenants):
        y = top + row_h * i
        x_end = scale(cost[tenant])
        body.append(svg.text(left - 8, y + row_h / 2 + 4, svg.truncate(tenant, 20),
                             anchor="end", size=12, title=tenant))
        body.append(svg.rect(left, y + 5, x_end - left, row_h - 10, fill="#0072B2",
                             cls="bar cost-bar", title=f"{tenant}: {_money(cost[tenant])}",
                             data_tenant=tenant))
        body.append(svg.text(x_end + 6, y + row_h / 2 + 4, _money(cost[tenant]), size=12,
                             cls="value"))
    body.append(svg.line(left, top, left, top + row_h * len(tenants), cls="axis"))
    chart = svg.document(right + 120, top * 2 + row_h * len(tenants), body,
                         label="Cost per tenant", cls="chart cost")
    rows = []
    for tenant in tenants:
        per = _money(cost[tenant] / n_invoices[tenant]) if n_invoices[tenant] else "—"
        rows.append((tenant, n_calls[tenant], _money(cost[tenant]), n_invoices[tenant], per))
    total_cost, total_inv = sum(cost.values()), sum(n_invoices.values())
    rows.append(("all", sum(n_calls.values()), _money(total_cost), total_inv,
                 _money(total_cost / total_inv) if total_inv else "—"))
    table = _table(("Tenant", "Calls", "Cost", "Invoices", "Cost / invoice"), rows,
                   cls="cost", numeric=(1, 2, 3, 4))
    return chart + table


def _automation_section(invoices: Sequence[Mapping[str, Any]]) -> str:
    if not invoices:
        return _empty("no invoices processed")
    counts: dict[str, Counter[str]] = defaultdict(Counter)
    for invoice in invoices:
        counts[str(invoice.get("tenant", "?"))][str(invoice.get("route", "exception"))] += 1
    extra = sorted({r for c in counts.values() for r in c} - set(ROUTES))
    routes = (*ROUTES, *extra)
    colours = {r: _ROUTE_COLOURS.get(r, "#999999") for r in routes}
    tenants = sorted(counts)
    left, right, row_h, top = 150.0, 850.0, 34.0, 10.0
    body: list[str] = []
    for i, tenant in enumerate(tenants):
        y = top + row_h * i
        total = sum(counts[tenant].values())
        body.append(svg.text(left - 8, y + row_h / 2 + 4, svg.truncate(tenant, 20),
                             anchor="end", size=12, title=tenant))
        x = left
        for route in routes:
            n = counts[tenant][route]
            if not n:
                continue
            w = (right - left) * n / total
            share = f"{100 * n / total:.1f}%"
            body.append(svg.rect(x, y + 4, w, row_h - 8, fill=colours[route],
                                 cls="bar route-seg", title=f"{tenant} {route}: {n} ({share})",
                                 data_tenant=tenant, data_route=route))
            if w >= 44:
                body.append(svg.text(x + w / 2, y + row_h / 2 + 4, share, anchor="middle",
                                     size=11, fill="#fff", cls="value"))
            x += w
    chart = svg.document(right + 20, top * 2 + row_h * len(tenants), body,
                         label="Invoice routes per tenant", cls="chart automation")
    total_all = sum(sum(c.values()) for c in counts.values())
    auto_all = sum(c["auto"] for c in counts.values())
    overall = (f'<p class="overall">Overall automation rate: <strong>'
               f"{100 * auto_all / total_all:.1f}%</strong> ({auto_all} of {total_all} "
               "invoices routed automatically)</p>")
    rows = []
    for tenant in tenants:
        total = sum(counts[tenant].values())
        rows.append((tenant, total, *(counts[tenant][r] for r in routes),
                     f"{100 * counts[tenant]['auto'] / total:.1f}%"))
    table = _table(("Tenant", "Invoices", *routes, "Automation"), rows, cls="automation",
                   numeric=tuple(range(1, len(routes) + 3)))
    return overall + _legend([(r, colours[r]) for r in routes]) + chart + table


# --------------------------------------------------------------------------- quality


def _share(value: Any) -> str:
    number = _float(value)
    return "—" if number is None else f"{100 * number:.1f}%"


def _seconds(value: Any) -> str:
    number = _float(value)
    return "—" if number is None else _ms(1000 * number)


def _reliability_chart(versions: Sequence[Mapping[str, Any]]) -> str:
    """Mean confidence (x) against the reviewers' accuracy (y) per confidence bin, one
    line per model version; the dashed diagonal is a perfectly calibrated model."""
    left, right, top, bottom = 60.0, 400.0, 14.0, 354.0
    x, y = svg.Scale(0.0, 1.0, left, right), svg.Scale(0.0, 1.0, bottom, top)
    ticks = [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]
    body = [*svg.axis_x(x, ticks, bottom, label="confidence (mean per bin)", grid_to=top),
            *svg.axis_y(y, ticks, left, label="accuracy against reviewers", grid_to=right),
            svg.line(x(0), y(0), x(1), y(1), stroke="#888", dash="5 4", cls="diagonal",
                     title="perfectly calibrated")]
    peak = max((int(b["count"]) for v in versions for b in v["calibration"]["curve"]),
               default=1)
    legend = []
    for i, v in enumerate(versions):
        colour = svg.PALETTE[i % len(svg.PALETTE)]
        name = f"{v['capability']} {v['model']} v{v['model_version']}"
        legend.append((f"{name} (ECE {float(v['calibration']['ece']):.3f})", colour))
        curve = sorted(v["calibration"]["curve"], key=lambda b: float(b["mean_confidence"]))
        points = [(x(float(b["mean_confidence"])), y(float(b["accuracy"]))) for b in curve]
        if len(points) > 1:
            body.append(svg.path("M" + " L".join(f"{px:.1f},{py:.1f}" for px, py in points),
                                 stroke=colour, width=2.0, cls="reliability-line"))
        for (px, py), b in zip(points, curve, strict=True):
            body.append(svg.circle(px, py, 3 + 5 * math.sqrt(int(b["count"]) / peak),
                                   fill=colour, opacity=0.8, cls="reliability-point",
                                   title=f"{name}: confidence {float(b['mean_confidence']):.2f}"
                                         f", accuracy {float(b['accuracy']):.2f}, "
                                         f"{int(b['count'])} labels"))
    chart = svg.document(right + 20, bottom + 40, body, label="Reliability curve",
                         cls="chart reliability")
    return _legend(legend) + chart


def _quality_section(quality: Mapping[str, Any] | None,
                     reviewer: Mapping[str, Any] | None = None) -> str:
    if quality is None:
        return _empty("quality from reviewers was not computed")
    note = ""  # labels a simulation gave must say so wherever the section shows numbers
    if reviewer is not None and reviewer.get("simulated"):
        note = ('<p class="note simulated"><strong>Simulated reviewer.</strong> '
                f"{esc(reviewer['decided'])} of {esc(reviewer['waiting'])} review items were "
                f"decided by {esc(reviewer['reviewer'])}, a step of this job that compares "
                "each proposal with the generated corpus's ground truth (approve when it "
                "matches, correct it otherwise) — not a person. Real labels come from "
                "people in the review console or <code>aios-mesh review</code>.</p>")
    versions = list(quality.get("versions") or [])
    if not versions:
        return note + _empty("no calls of a capability with a model version recorded")
    rows = [(f"{v['capability']}@{v['capability_version']}",
             f"{v['model']} v{v['model_version']}", v["calls"], _share(v["automation_rate"]),
             v["interventions"], v["labelled"], _share(v["accuracy"]),
             _share(v["override_rate"]),
             "—" if v["calibration"] is None else f"{float(v['calibration']['ece']):.3f}",
             _seconds(v["resolution_p50_s"])) for v in versions]
    table = _table(("Capability", "Model version", "Answered", "Automation", "To a human",
                    "Labelled", "Accuracy", "Override", "ECE", "Resolution p50"), rows,
                   cls="quality", numeric=tuple(range(2, 10)))
    parts = []
    if not quality.get("labels"):
        waiting = sum(int(v["interventions"]) for v in versions)
        parts.append(_empty(
            f"no labels yet: no reviewer has decided a review item of this run ({waiting} "
            "calls wait in the review queue). Decide some in the review console or with "
            "`aios-mesh review approve|reject`; `aios-mesh quality` then shows accuracy, "
            "override rate and the calibration of confidence."))
    else:
        parts.append('<p class="note">Reviewers\' verdicts as labels: accuracy = proposals '
                     "kept, override = corrected or rejected; only reviewed calls have "
                     "labels, and calls go to review when the model is unsure, so these "
                     "describe the low-confidence slice. ECE = expected calibration error "
                     "(10 bins).</p>")
    parts.append(table)
    if quality.get("unmatched"):
        parts.append(_empty(f"{quality['unmatched']} labels name a call that is not in this "
                            "audit log; they count in no version"))
    calibrated = [v for v in versions if v.get("calibration")]
    if calibrated:
        parts.append(_reliability_chart(calibrated))
    return note + "".join(parts)


# --------------------------------------------------------------------------- run facts


def _run_section(run: Mapping[str, Any] | None, versions: Mapping[str, Any] | None) -> str:
    if run is None and versions is None:
        return _empty("no run information")
    parts = []
    if run is not None:
        parts.append(_table(("What", "Value"), [
            ("run date (UTC)", run.get("date", "—")), ("profile", run.get("profile", "—")),
            ("invoices", run.get("invoices", "—")), ("state folder", run.get("state", "—"))],
            cls="run"))
    if versions is not None:
        used = [("model", m["name"], m["version"], m.get("alias") or "—", m["calls"])
                for m in versions.get("models", [])]
        used += [("prompt", p["name"], p["version"], p.get("alias") or "—", p["calls"])
                 for p in versions.get("prompts", [])]
        used += [("index", i["collection"], i["snapshot"], "—", i["calls"])
                 for i in versions.get("indexes", [])]
        parts.append("<h3>Versions the calls used (from the decision records)</h3>")
        parts.append(_table(("Kind", "Name", "Version", "Alias", "Calls"), used,
                            cls="versions", numeric=(4,)) if used
                     else _empty("no call named a model, prompt or index"))
        lock = versions.get("lock") or {}
        pins = [("model", spec, p["version"]) for spec, p in lock.get("models", {}).items()]
        pins += [("prompt", spec, p["version"]) for spec, p in lock.get("prompts", {}).items()]
        pins += [("index", name, snap) for name, snap in lock.get("indexes", {}).items()]
        parts.append(f"<h3>Pinned by the lock file {esc(lock.get('file', ''))} "
                     f"({esc(lock.get('created_at', '—'))})</h3>")
        parts.append(_table(("Kind", "Spec", "Version"), pins, cls="lock") if pins
                     else _empty("no lock file"))
    return "".join(parts)


def _reasons_section(reasons: Mapping[str, Any] | None) -> str:
    if reasons is None:
        return _empty("reason codes were not collected")
    parts = ['<p class="note">Reason codes of the calls that went to a human (the policy\'s '
             "code, else the review item's reason: <code>low_confidence</code>, "
             "<code>policy_require_human</code>, <code>paused</code>, "
             "<code>fallback_to_human</code>) and of the denied calls (the policy's "
             "code), per tenant.</p>"]
    for kind, heading in (("review", "Sent to a human"), ("denied", "Denied")):
        by_tenant: Mapping[str, Mapping[str, int]] = reasons.get(kind) or {}
        rows = [(tenant, code, n) for tenant, codes in by_tenant.items()
                for code, n in codes.items()]
        parts.append(f"<h3>{esc(heading)}</h3>")
        parts.append(_table(("Tenant", "Reason code", "Calls"), rows, cls=f"reasons {kind}",
                            numeric=(2,)) if rows else _empty(f"no {kind} calls"))
    return "".join(parts)


def _samples_section(samples: Mapping[str, Sequence[Mapping[str, str]]] | None) -> str:
    if not samples:
        return _empty("no sample records")
    rows = [(route, s["invoice"], s["tenant"], s["record_id"])
            for route, picked in samples.items() for s in picked]
    return ('<p class="note">A few invoices per route with the record of the call that '
            "decided it: <code>aios-mesh records show RECORD_ID</code> shows the whole "
            "decision (policy, model version, redaction, cost).</p>"
            + _table(("Route", "Invoice", "Tenant", "Record id"), rows, cls="samples"))


def _effect_chart(features: Sequence[Mapping[str, Any]]) -> str:
    """Effect size (Jensen–Shannon distance, 0..1) of each drifted feature, as bars."""
    left, width, row = 230.0, 300.0, 22.0
    x = svg.Scale(0.0, 1.0, left, left + width)
    top = 10.0
    bottom = top + row * len(features)
    body = list(svg.axis_x(x, [0.0, 0.25, 0.5, 0.75, 1.0], bottom,
                           label="effect (Jensen–Shannon distance)", grid_to=top))
    for i, f in enumerate(features):
        y = top + i * row
        effect = _float(f.get("effect")) or 0.0
        body.append(svg.text(left - 6, y + row * 0.65, svg.truncate(str(f["feature"]), 34),
                             anchor="end"))
        body.append(svg.rect(left, y + 3, x(effect) - left, row - 6, fill="#D55E00",
                             cls="drift-bar",
                             title=f"{f['feature']}: effect {effect:.3f}, "
                                   f"p {f.get('p_value')}"))
    return svg.document(left + width + 30, bottom + 40, body, label="Drifted features",
                        cls="chart drift")


def _drift_section(drift: Mapping[str, Any] | None) -> str:
    if drift is None or drift.get("monitor") == "off":
        return _empty("drift monitor off: no drift monitor watched this run's calls, so there "
                      "are no drift statistics (install_drift_monitor, see the lifecycle "
                      "guide)")
    alarms = list(drift.get("alarms") or [])
    if not alarms:
        return _empty("drift monitor on: no alarm in this run")
    parts = [_table(("At", "Capability", "Model version", "Calls", "Features tested",
                     "Worst feature", "Effect"),
                    [(a.get("at"), a.get("capability"), a.get("model_version"), a.get("calls"),
                      a.get("features_tested"), a.get("worst_feature"),
                      f"{_float(a.get('worst_effect')) or 0.0:.3f}") for a in alarms],
                    cls="drift-alarms", numeric=(3, 4, 6))]
    last = alarms[-1]
    features = sorted(last.get("drifted") or [], key=lambda f: -(_float(f.get("effect")) or 0))
    if features:
        parts.append(f"<h3>Drifted features of the last alarm ({esc(last.get('capability'))} "
                     f"v{esc(last.get('model_version'))})</h3>")
        parts.append(_table(("Feature", "Test", "Statistic", "p-value", "Effect"),
                            [(f.get("feature"), f.get("test"), f.get("statistic"),
                              f.get("p_value"), f.get("effect")) for f in features],
                            cls="drift-features", numeric=(2, 3, 4)))
        parts.append(_effect_chart(features))
    return "".join(parts)


# --------------------------------------------------------------------------- lineage


@dataclass
class _Run:
    run_id: str
    job: str
    parent: str | None = None
    root: str | None = None  # the workflow run of a nested call (its parent is a capability)
    types: list[str] = field(default_factory=list)
    first_time: str = ""
    inputs: dict[tuple[str, str], None] = field(default_factory=dict)
    outputs: dict[tuple[str, str], None] = field(default_factory=dict)

    @property
    def state(self) -> str:
        for kind in ("FAIL", "ABORT", "COMPLETE", "RUNNING", "START"):
            if kind in self.types:
                return kind
        return self.types[-1] if self.types else "OTHER"


def _datasets(items: Any) -> list[tuple[str, str]]:
    out = []
    for item in items or []:
        if isinstance(item, Mapping) and item.get("name") is not None:
            out.append((str(item.get("namespace", "")), str(item["name"])))
    return out


def _collect_runs(events: Sequence[Mapping[str, Any]]) -> dict[str, _Run]:
    runs: dict[str, _Run] = {}
    for event in events:
        run = event.get("run") or {}
        run_id = str(run.get("runId", ""))
        job = event.get("job") or {}
        entry = runs.setdefault(run_id, _Run(run_id, str(job.get("name", "?"))))
        entry.types.append(str(event.get("eventType", "OTHER")))
        time = str(event.get("eventTime", ""))
        entry.first_time = min(entry.first_time, time) if entry.first_time else time
        parent = ((run.get("facets") or {}).get("parent") or {}).get("run") or {}
        if parent.get("runId") and entry.parent is None:
            entry.parent = str(parent["runId"])
        root = ((run.get("facets") or {}).get("parent") or {}).get("root") or {}
        if (root.get("run") or {}).get("runId") and entry.root is None:
            entry.root = str(root["run"]["runId"])
        for key in _datasets(event.get("inputs")):
            entry.inputs[key] = None
        for key in _datasets(event.get("outputs")):
            entry.outputs[key] = None
    return runs


def _pick_workflow(runs: Mapping[str, _Run]) -> _Run:
    children = Counter(r.parent for r in runs.values() if r.parent in runs)
    if children:
        best = max(children.items(), key=lambda kv: (kv[1], -list(runs).index(str(kv[0]))))
        return runs[str(best[0])]
    roots = [r for r in runs.values() if r.parent is None]
    return roots[0] if roots else next(iter(runs.values()))


@dataclass
class _Job:
    """The calls of one capability (one OpenLineage job) inside the workflow run."""

    name: str
    runs: list[_Run] = field(default_factory=list)

    @property
    def states(self) -> Counter[str]:
        return Counter(r.state for r in self.runs)

    @property
    def state(self) -> str:
        states = self.states
        return next(iter(states)) if len(states) == 1 else "MIXED"

    @property
    def inputs(self) -> dict[tuple[str, str], None]:
        return {key: None for run in self.runs for key in run.inputs}

    @property
    def outputs(self) -> dict[tuple[str, str], None]:
        return {key: None for run in self.runs for key in run.outputs}


def _lineage_section(events: Sequence[Mapping[str, Any]]) -> str:
    runs = _collect_runs([e for e in events if isinstance(e, Mapping)])
    if not runs:
        return _empty("no lineage events")
    workflow = _pick_workflow(runs)
    all_calls = sorted((r for r in runs.values()
                        if workflow.run_id in (r.parent, r.root)),
                       key=lambda r: (r.first_time, r.job, r.run_id))
    # One node per capability: a run of 30 invoices makes ~120 calls of 4 capabilities.
    jobs: dict[str, _Job] = {}
    for run in all_calls:
        jobs.setdefault(run.job, _Job(run.job)).runs.append(run)
    ordered = list(jobs.values())
    shown, hidden = ordered[:_MAX_CALL_NODES], ordered[_MAX_CALL_NODES:]
    dataset_keys: set[tuple[str, str]] = set()
    for item in (workflow, *shown):
        dataset_keys.update(item.inputs)
        dataset_keys.update(item.outputs)
    datasets = sorted(dataset_keys)

    row_h, node_h, top = 28.0, 20.0, 24.0
    col_w = (200.0, 260.0, 260.0)
    col_x = (10.0, 290.0, 660.0)
    n_rows = max(len(shown) + (1 if hidden else 0), len(datasets), 1)
    height = top + row_h * n_rows + 16
    width = col_x[2] + col_w[2] + 10
    body = [svg.text(col_x[i] + col_w[i] / 2, 14, head, anchor="middle", size=12,
                     cls="column-head")
            for i, head in enumerate(("workflow run", "capability calls", "datasets"))]

    call_off = (n_rows - len(shown) - (1 if hidden else 0)) / 2  # centre the shorter column
    data_off = (n_rows - len(datasets)) / 2
    call_y = {job.name: top + row_h * (call_off + i) for i, job in enumerate(shown)}
    data_y = {key: top + row_h * (data_off + i) for i, key in enumerate(datasets)}
    wf_y = top + row_h * (n_rows - 1) / 2

    def edge(x1: float, y1: float, x2: float, y2: float, cls: str) -> str:
        y1, y2 = y1 + node_h / 2, y2 + node_h / 2
        mid = (x1 + x2) / 2
        return svg.path(f"M{x1:.1f},{y1:.1f} C{mid:.1f},{y1:.1f} {mid:.1f},{y2:.1f} "
                        f"{x2:.1f},{y2:.1f}", stroke="#b5b5b5", cls=f"edge {cls}",
                        opacity="0.8", marker_end="url(#arrow)")

    edges = ['<defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" '
             'markerWidth="6" markerHeight="6" orient="auto-start-reverse">'
             '<path d="M0,0 L10,5 L0,10 z" fill="#999"/></marker></defs>']
    wf_right = col_x[0] + col_w[0]
    call_right = col_x[1] + col_w[1]
    for job in shown:
        edges.append(edge(wf_right, wf_y, col_x[1], call_y[job.name], "edge-parent"))
        for key in job.inputs:
            edges.append(edge(col_x[2], data_y[key], call_right, call_y[job.name],
                              "edge-input"))
        for key in job.outputs:
            edges.append(edge(call_right, call_y[job.name], col_x[2], data_y[key],
                              "edge-output"))
    for key in (*workflow.inputs, *workflow.outputs):
        edges.append(edge(wf_right, wf_y, col_x[2], data_y[key], "edge-workflow-data"))
    body.extend(edges)

    def node(x: float, y: float, w: float, label: str, tip: str, fill: str, cls: str,
             **data: str) -> None:
        body.append(svg.rect(x, y, w, node_h, fill=fill, cls=f"lineage-node {cls}", title=tip,
                             rx="4", stroke="#555", stroke_width="0.6", **data))
        body.append(svg.text(x + 6, y + 14, svg.truncate(label, int(w / 7)), size=11,
                             fill="#fff" if cls == "lineage-run" else "#222", title=tip))

    node(col_x[0], wf_y, col_w[0], workflow.job,
         f"{workflow.job} run {workflow.run_id} ({workflow.state})",
         _STATE_COLOURS.get(workflow.state, "#555"), "lineage-run", data_kind="workflow",
         data_state=workflow.state, data_run_id=workflow.run_id)
    for job in shown:
        states = ", ".join(f"{k} {v}" for k, v in sorted(job.states.items()))
        node(col_x[1], call_y[job.name], col_w[1], f"{job.name} ×{len(job.runs)}",
             f"{job.name}: {len(job.runs)} runs ({states})",
             _STATE_COLOURS.get(job.state, "#777"), "lineage-run", data_kind="call",
             data_state=job.state, data_job=job.name, data_runs=str(len(job.runs)))
    if hidden:
        body.append(svg.text(col_x[1] + 6, top + row_h * (call_off + len(shown)) + 14,
                             f"+{len(hidden)} more capabilities", size=12, cls="more"))
    for namespace, name in datasets:
        node(col_x[2], data_y[(namespace, name)], col_w[2], f"{namespace}/{name}",
             f"dataset {namespace}/{name}", "#eef3f8", "lineage-dataset",
             data_namespace=namespace, data_name=name)

    states = Counter(r.state for r in all_calls)
    note = (f'<p class="note">Workflow <code>{esc(workflow.job)}</code> run '
            f"<code>{esc(workflow.run_id)}</code>: {len(all_calls)} capability calls of "
            f"{len(jobs)} capabilities ("
            + ", ".join(f"{esc(k)} {v}" for k, v in sorted(states.items()))
            + f"), {len(datasets)} datasets (model versions, index collections)"
            + (f"; first {len(shown)} capabilities drawn" if hidden else "")
            + ". Green = every call COMPLETE, red = every call FAIL, amber = both.</p>")
    chart = svg.document(width, height, body, label="Lineage graph of one workflow run",
                         cls="chart lineage")
    return note + chart


def _briefs_section(invoices: Sequence[Mapping[str, Any]]) -> str:
    briefed = [i for i in invoices if i.get("brief")]
    if not briefed:
        return _empty("no review briefs drafted (no LLM backend, or --briefs 0)")
    rows = [(str(i["invoice"]), str(i["tenant"]), str(i["brief"]["reason"]),
             ", ".join(i["brief"]["missing_fields"]) or "—",
             str(i["brief"]["question_to_vendor"])) for i in briefed]
    return ("<p>Advice for the reviewer, shown in the review console beside the invoice; "
            "the decision stays with the human. Gemma 3 270M is a tiny model: read these "
            "as a demonstration of the plumbing (constrained JSON, tokens, cost), not of "
            "judgement.</p>"
            + _table(("Invoice", "Tenant", "Why a human", "Missing", "Question for the vendor"),
                     rows, cls="briefs"))


# --------------------------------------------------------------------------- entry points


def render_report(*, title: str, summary: Sequence[tuple[str, str]],
                  calls: Sequence[Mapping[str, Any]], invoices: Sequence[Mapping[str, Any]],
                  lineage: Sequence[Mapping[str, Any]],
                  quality: Mapping[str, Any] | None = None,
                  run: Mapping[str, Any] | None = None,
                  versions: Mapping[str, Any] | None = None,
                  reasons: Mapping[str, Any] | None = None,
                  samples: Mapping[str, Sequence[Mapping[str, str]]] | None = None,
                  reviewer: Mapping[str, Any] | None = None,
                  drift: Mapping[str, Any] | None = None) -> str:
    """The report as one HTML string (:func:`write_report` writes it to a file).

    Args:
        title: page title.
        summary: ``(label, value)`` rows, shown in order.
        calls: ``{"capability", "tenant", "latency_ms", "cost", "outcome"}`` per call.
        invoices: ``{"invoice", "tenant", "route", "amount", "currency", "correct"}``, and
            ``"brief"`` (``{"reason", "missing_fields", "question_to_vendor"}``) where the
            LLM drafted one.
        lineage: OpenLineage RunEvent dicts of one workflow run and its capability calls.
        quality: ``QualityReport.to_dict()`` of :mod:`aios_mesh.lifecycle.quality` (the
            reviewers' labels per model version), or ``None`` where it was not computed.
        run: ``{"date", "profile", "invoices", "state"}`` of the run.
        versions: ``{"models", "prompts", "indexes", "lock"}``: what the records used (with
            call counts) and what the lock file pins.
        reasons: ``{"review": {tenant: {code: n}}, "denied": {...}}``.
        samples: route → ``[{"invoice", "tenant", "record_id"}, ...]``.
        reviewer: the simulated reviewer's summary (the quality section says the labels
            are simulated), or ``None``.
        drift: ``{"monitor": "on"|"off", "alarms": [...]}``: the alarms (audit entries) with
            their drifted features' statistics.

    """
    sections = (
        ("run", "Run", _run_section(run, versions)),
        ("summary", "Summary", _summary_section(summary)),
        ("latency", "Latency per capability", _latency_section(calls)),
        ("cost", "Cost per tenant", _cost_section(calls, invoices)),
        ("automation", "Automation rate", _automation_section(invoices)),
        ("reasons", "Why humans, why denied", _reasons_section(reasons)),
        ("samples", "Sample records per route", _samples_section(samples)),
        ("briefs", "Review briefs drafted by the LLM", _briefs_section(invoices)),
        ("quality", "Quality from reviewers", _quality_section(quality, reviewer)),
        ("drift", "Drift", _drift_section(drift)),
        ("lineage", "Lineage of one workflow run", _lineage_section(lineage)),
    )
    parts = "".join(f'<section id="{sid}"><h2>{esc(heading)}</h2>{content}</section>'
                    for sid, heading, content in sections)
    return ('<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            '<meta name="viewport" content="width=device-width,initial-scale=1">'
            f"<title>{esc(title)}</title><style>{_CSS}</style></head>"
            f"<body><h1>{esc(title)}</h1>{parts}</body></html>\n")


def write_report(path: Path, **content: Any) -> Path:
    """Write the HTML report (:func:`render_report` of ``content``) to ``path`` atomically
    (temp file + ``os.replace``); parent directories are created.

    Returns:
        ``path``.
    """
    path = Path(path)
    html = render_report(**content)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(html)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; a report is meant to be shared
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
