"""The support-triage HTML report: one self-contained file (inline SVG, no scripts).

Sections: the run (date, profile, versions), the summary table, routes per tenant, the
groundedness of drafted answers against the threshold, cost per tenant and per ticket, why
tickets went to humans or were denied, the record tree of one agent run, and sample tickets.

The SVG primitives are the invoice job's (:mod:`examples.invoice_intake.svg`: generic,
escaping every value), used through their public functions.
"""

from __future__ import annotations

import os
import tempfile
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from examples.invoice_intake.svg import PALETTE, Scale, document, esc, line, rect, text

__all__ = ["render_report", "tree_lines", "write_report"]

_ROUTE_COLOURS = {"auto": PALETTE[2], "human": PALETTE[1], "denied": PALETTE[5]}
_CSS = ("body{font-family:system-ui,sans-serif;max-width:1000px;margin:2em auto;color:#222}"
        "table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;"
        "padding:.25em .6em;text-align:left;vertical-align:top}th{background:#f3f3f3}"
        "section{margin:2em 0}pre{background:#f7f7f7;padding:1em;overflow-x:auto}"
        ".legend span{display:inline-block;margin-right:1em}.sw{display:inline-block;"
        "width:.9em;height:.9em;margin-right:.3em;vertical-align:middle}")


def _table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    head = "".join(f"<th>{esc(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in row) + "</tr>"
                   for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _legend(colours: Mapping[str, str]) -> str:
    return '<p class="legend">' + "".join(
        f'<span><i class="sw" style="background:{c}"></i>{esc(k)}</span>'
        for k, c in colours.items()) + "</p>"


def _routes_chart(tickets: Sequence[Mapping[str, Any]]) -> str:
    counts: dict[str, Counter[str]] = defaultdict(Counter)
    for t in tickets:
        counts[str(t["tenant"])][str(t["route"])] += 1
    if not counts:
        return "<p>no tickets</p>"
    width, bar, gap, left = 640, 26, 12, 90
    most = max(sum(c.values()) for c in counts.values())
    scale = Scale(0, most, left, width - 20)
    body: list[str] = []
    for row, tenant in enumerate(sorted(counts)):
        y = 10 + row * (bar + gap)
        body.append(text(left - 8, y + bar * 0.65, tenant, anchor="end"))
        x = float(left)
        for route, colour in _ROUTE_COLOURS.items():
            n = counts[tenant][route]
            if n:
                w = scale(n) - left
                body.append(rect(x, y, w, bar, fill=colour, title=f"{tenant} {route}: {n}"))
                body.append(text(x + w / 2, y + bar * 0.65, n, anchor="middle", fill="#fff"))
                x += w
    height = 20 + len(counts) * (bar + gap)
    return _legend(_ROUTE_COLOURS) + document(width, height, body,
                                              label="tickets per route and tenant")


def _groundedness_chart(tickets: Sequence[Mapping[str, Any]], threshold: float) -> str:
    scores = [float(t["groundedness"]) for t in tickets if t.get("handled_by") == "draft"
              and (t.get("answer") is not None or t.get("draft_review"))]
    if not scores:
        return "<p>no drafted answers</p>"
    bins = [0] * 10
    for s in scores:
        bins[min(9, int(s * 10))] += 1
    width, height, left, bottom = 640, 200, 40, 170
    x = Scale(0, 1, left, width - 20)
    y = Scale(0, max(bins), bottom, 20)
    body = [line(left, bottom, width - 20, bottom)]
    for i, n in enumerate(bins):
        body.append(rect(x(i / 10) + 1, y(n), x((i + 1) / 10) - x(i / 10) - 2, bottom - y(n),
                         fill=PALETTE[0], title=f"{i / 10:.1f}–{(i + 1) / 10:.1f}: {n}"))
        body.append(text(x(i / 10), bottom + 14, f"{i / 10:.1f}", anchor="middle", size=10))
    body.append(line(x(threshold), 15, x(threshold), bottom, stroke=PALETTE[5], dash="4 3",
                     title=f"threshold {threshold}"))
    body.append(text(x(threshold) + 4, 26, f"threshold {threshold}", fill=PALETTE[5], size=11))
    return document(width, height + 10, body, label="groundedness of drafted answers")


def _cost_chart(cost: Mapping[str, float], tickets: Mapping[str, int]) -> str:
    if not cost:
        return "<p>no calls</p>"
    width, bar, gap, left = 640, 22, 10, 90
    scale = Scale(0, max(cost.values()) or 1.0, left, width - 160)
    body = []
    for row, tenant in enumerate(sorted(cost)):
        y = 10 + row * (bar + gap)
        per = cost[tenant] / max(1, tickets.get(tenant, 0))
        body.append(text(left - 8, y + bar * 0.7, tenant, anchor="end"))
        body.append(rect(left, y, scale(cost[tenant]) - left, bar, fill=PALETTE[4],
                         title=f"{tenant}: ${cost[tenant]:.4f}"))
        body.append(text(scale(cost[tenant]) + 6, y + bar * 0.7,
                         f"${cost[tenant]:.4f} · ${per:.5f}/ticket", size=11))
    return document(width, 20 + len(cost) * (bar + gap), body, label="cost per tenant")


def tree_lines(node: Mapping[str, Any], depth: int = 0) -> list[str]:
    """A record tree (``{"capability", "outcome", "record_id", "cost", "children"}``) as
    indented lines.

    >>> tree_lines({"capability": "a", "outcome": "ok", "record_id": "r1", "cost": 0.0,
    ...             "children": [{"capability": "b", "outcome": "ok", "record_id": "r2",
    ...                           "cost": 0.001, "children": []}]})
    ['a · ok · $0.00000 · r1', '  └─ b · ok · $0.00100 · r2']
    """
    head = "  " * depth + ("└─ " if depth else "")
    out = [f"{head}{node['capability']} · {node['outcome']} · ${float(node['cost']):.5f}"
           f" · {node['record_id']}"]
    for child in node.get("children") or []:
        out.extend(tree_lines(child, depth + 1))
    return out


def render_report(*, title: str, summary: Sequence[tuple[str, str]],
                  tickets: Sequence[Mapping[str, Any]], cost: Mapping[str, float],
                  threshold: float, reasons: Mapping[str, Any],
                  tree: Mapping[str, Any] | None, run: Mapping[str, Any]) -> str:
    """The report as one HTML string. ``tickets``: per ticket ``tenant``, ``route``,
    ``category``, ``handled_by``, ``groundedness``, ``answer``, ``citations``; ``cost``:
    per tenant; ``reasons``: ``{"review": {tenant: {code: n}}, "denied": {...}}``; ``tree``:
    one agent run's record tree (:func:`tree_lines`)."""
    per_tenant = Counter(str(t["tenant"]) for t in tickets)
    reason_rows = [(kind, tenant, code, n) for kind, by_tenant in sorted(reasons.items())
                   for tenant, codes in sorted(by_tenant.items())
                   for code, n in sorted(codes.items())]
    samples = [(t["ticket"], t["tenant"], t["category"], t["route"],
                f"{float(t.get('groundedness') or 0):.2f}", ", ".join(t.get("citations") or []),
                str(t.get("answer") or "")[:160]) for t in tickets[:12]]
    tree_html = ("<pre data-kind=\"record-tree\">" + esc("\n".join(tree_lines(tree)))
                 + "</pre>") if tree else "<p>no agent run in this job</p>"
    sections = (
        ("run", "Run", _table(["what", "value"], sorted(run.items()))),
        ("summary", "Summary", _table(["what", "value"], summary)),
        ("routes", "Routes per tenant", _routes_chart(tickets)),
        ("groundedness", "Groundedness of drafted answers", _groundedness_chart(tickets,
                                                                                 threshold)),
        ("cost", "Cost per tenant", _cost_chart(cost, per_tenant)),
        ("reasons", "Why humans, why denied", _table(["kind", "tenant", "reason code", "n"],
                                                     reason_rows)),
        ("tree", "Record tree of one agent run", tree_html),
        ("samples", "Sample tickets", _table(["ticket", "tenant", "category", "route",
                                              "groundedness", "citations", "answer"],
                                             samples)),
    )
    parts = "".join(f'<section id="{sid}"><h2>{esc(heading)}</h2>{content}</section>'
                    for sid, heading, content in sections)
    return ('<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f"<title>{esc(title)}</title><style>{_CSS}</style></head>"
            f"<body><h1>{esc(title)}</h1>{parts}</body></html>\n")


def write_report(path: Path, **content: Any) -> Path:
    """Write :func:`render_report` of ``content`` to ``path`` atomically; returns ``path``."""
    html = render_report(**content)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(html)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)
    return path
