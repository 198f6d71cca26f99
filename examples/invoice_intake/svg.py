"""Tiny inline-SVG primitives for the invoice intake report (standard library only).

Every function returns markup as a ``str``; every text or attribute value passes through
:func:`esc`, so names such as ``"<script>"`` are drawn, never executed, and each ``<svg>``
element is well-formed XML on its own.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from html import escape

__all__ = [
    "PALETTE",
    "Scale",
    "axis_x",
    "axis_y",
    "circle",
    "document",
    "esc",
    "line",
    "log_ticks",
    "nice_ticks",
    "path",
    "rect",
    "text",
    "truncate",
]

#: Colour-blind friendly qualitative palette (Okabe-Ito).
PALETTE: tuple[str, ...] = (
    "#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#000000",
)

AttrValue = str | int | float | None


def esc(value: object) -> str:
    """HTML/XML-escape ``value`` (quotes included)."""
    return escape(str(value), quote=True)


def truncate(value: str, limit: int) -> str:
    """``value`` cut to ``limit`` characters with an ellipsis (escape afterwards)."""
    return value if len(value) <= limit else value[: max(limit - 1, 0)] + "…"


def _num(value: float) -> str:
    return f"{value:.2f}".rstrip("0").rstrip(".") if math.isfinite(value) else "0"


def _attrs(attrs: Mapping[str, AttrValue]) -> str:
    parts = []
    for key, value in attrs.items():
        if value is None:
            continue
        shown = _num(value) if isinstance(value, float) else str(value)
        parts.append(f' {key.rstrip("_").replace("_", "-")}="{esc(shown)}"')
    return "".join(parts)


def _titled(tag: str, attrs: Mapping[str, AttrValue], title: str | None) -> str:
    if title is None:
        return f"<{tag}{_attrs(attrs)}/>"
    return f"<{tag}{_attrs(attrs)}><title>{esc(title)}</title></{tag}>"


def document(width: float, height: float, body: Iterable[str], *, label: str,
             cls: str = "chart") -> str:
    """A standalone ``<svg>`` element (``role="img"`` with an accessible label)."""
    head = _attrs({"xmlns": "http://www.w3.org/2000/svg", "class": cls, "role": "img",
                   "aria-label": label, "width": float(width), "height": float(height),
                   "viewBox": f"0 0 {_num(width)} {_num(height)}"})
    return f"<svg{head}><title>{esc(label)}</title>{''.join(body)}</svg>"


def text(x: float, y: float, value: object, *, anchor: str = "start", cls: str | None = None,
         size: float | None = None, fill: str | None = None, title: str | None = None,
         **attrs: AttrValue) -> str:
    """A ``<text>`` element; ``title`` adds a hover tooltip (e.g. the untruncated value)."""
    head = _attrs({"x": float(x), "y": float(y), "text-anchor": anchor, "class": cls,
                   "font-size": None if size is None else float(size), "fill": fill, **attrs})
    tip = "" if title is None else f"<title>{esc(title)}</title>"
    return f"<text{head}>{tip}{esc(value)}</text>"


def rect(x: float, y: float, width: float, height: float, *, fill: str | None = None,
         cls: str | None = None, title: str | None = None, **attrs: AttrValue) -> str:
    """A ``<rect>`` (negative sizes are clamped to zero)."""
    base: dict[str, AttrValue] = {"x": float(x), "y": float(y), "width": float(max(width, 0.0)),
                                  "height": float(max(height, 0.0)), "fill": fill, "class": cls}
    return _titled("rect", {**base, **attrs}, title)


def line(x1: float, y1: float, x2: float, y2: float, *, stroke: str = "#444",
         width: float = 1.0, cls: str | None = None, dash: str | None = None,
         title: str | None = None) -> str:
    """A ``<line>``."""
    return _titled("line", {"x1": float(x1), "y1": float(y1), "x2": float(x2), "y2": float(y2),
                            "stroke": stroke, "stroke-width": float(width), "class": cls,
                            "stroke-dasharray": dash}, title)


def circle(cx: float, cy: float, r: float, *, fill: str, cls: str | None = None,
           opacity: float | None = None, title: str | None = None) -> str:
    """A ``<circle>``."""
    return _titled("circle", {"cx": float(cx), "cy": float(cy), "r": float(r), "fill": fill,
                              "class": cls, "fill-opacity": opacity}, title)


def path(d: str, *, stroke: str = "#888", width: float = 1.0, cls: str | None = None,
         **attrs: AttrValue) -> str:
    """An unfilled ``<path>``."""
    return _titled("path", {"d": d, "fill": "none", "stroke": stroke,
                            "stroke-width": float(width), "class": cls, **attrs}, None)


class Scale:
    """Maps a data domain onto pixels, linearly or (``log=True``) logarithmically."""

    def __init__(self, lo: float, hi: float, start: float, stop: float, *,
                 log: bool = False) -> None:
        if log:
            lo, hi = math.log10(max(lo, 1e-9)), math.log10(max(hi, 1e-9))
        if hi <= lo:
            hi = lo + 1.0
        self.lo, self.hi, self.start, self.stop, self.log = lo, hi, start, stop, log

    def __call__(self, value: float) -> float:
        v = math.log10(max(value, 1e-9)) if self.log else value
        v = min(max(v, self.lo), self.hi)
        return self.start + (v - self.lo) / (self.hi - self.lo) * (self.stop - self.start)


def nice_ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    """Round tick values covering ``[lo, hi]`` (1/2/5 × 10^k steps)."""
    if hi <= lo:
        hi = lo + 1.0
    raw = (hi - lo) / max(count, 1)
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 5, 10) if m * mag >= raw)
    first = math.floor(lo / step) * step
    ticks, k = [], 0
    while first + k * step <= hi + step * 1e-9:
        ticks.append(round(first + k * step, 12))
        k += 1
    return ticks


def log_ticks(lo: float, hi: float) -> list[float]:
    """Ticks at 1, 2, 5 × 10^k within ``[lo, hi]`` (``lo > 0``); decades only if many."""
    lo, hi = max(lo, 1e-9), max(hi, 1e-9)
    decades = range(math.floor(math.log10(lo)), math.ceil(math.log10(hi)) + 1)
    mults = (1,) if len(decades) > 4 else (1, 2, 5)
    return [m * 10.0 ** d for d in decades for m in mults if lo <= m * 10.0 ** d <= hi]


def axis_x(scale: Scale, ticks: Iterable[float], y: float, *, fmt: str = "{:g}",
           label: str | None = None, grid_to: float | None = None) -> list[str]:
    """A horizontal axis at ``y``: baseline, tick marks, tick labels, optional grid/label."""
    out = [line(scale.start, y, scale.stop, y, cls="axis")]
    for tick in ticks:
        x = scale(tick)
        if grid_to is not None:
            out.append(line(x, grid_to, x, y, stroke="#e3e3e3", cls="grid"))
        out.append(line(x, y, x, y + 4, cls="tick"))
        out.append(text(x, y + 16, fmt.format(tick), anchor="middle", size=11, cls="tick-label"))
    if label:
        out.append(text((scale.start + scale.stop) / 2, y + 32, label, anchor="middle",
                        size=12, cls="axis-label"))
    return out


def axis_y(scale: Scale, ticks: Iterable[float], x: float, *, fmt: str = "{:g}",
           label: str | None = None, grid_to: float | None = None) -> list[str]:
    """A vertical axis at ``x`` (``scale`` maps values to y pixels): baseline, tick marks,
    tick labels, optional grid lines reaching ``grid_to`` and a rotated label."""
    out = [line(x, scale.start, x, scale.stop, cls="axis")]
    for tick in ticks:
        y = scale(tick)
        if grid_to is not None:
            out.append(line(x, y, grid_to, y, stroke="#e3e3e3", cls="grid"))
        out.append(line(x - 4, y, x, y, cls="tick"))
        out.append(text(x - 7, y + 4, fmt.format(tick), anchor="end", size=11,
                        cls="tick-label"))
    if label:
        mid = (scale.start + scale.stop) / 2
        out.append(text(x - 36, mid, label, anchor="middle", size=12, cls="axis-label",
                        transform=f"rotate(-90 {_num(x - 36)} {_num(mid)})"))
    return out
