"""``aios-mesh quality``: what the reviewers' verdicts say about each model version.

    aios-mesh quality                                   # every capability, every version
    aios-mesh quality extract-invoice --tenant acme     # one capability, one tenant
    aios-mesh quality extract-invoice --since 2026-12-01 --json

Per capability and model version: accuracy against reviewers, override rate, automation
rate, human interventions, time to resolution and the calibration of confidence (the
reliability curve as text bars, and the expected calibration error); see
:mod:`aios_mesh.lifecycle.quality`. Labels whose decision record is missing from the audit
log are counted as ``unmatched``.
"""

from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Optional, get_args

import orjson
import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from aios_mesh.errors import MeshError
from aios_mesh.lifecycle.quality import Calibration, QualityReport, VersionQuality, quality

__all__ = ["quality_command", "reliability_bars", "render_quality"]

_console = Console()
_BAR = 20  # characters of a full reliability bar


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def _secs(value: float | None) -> str:
    if value is None:
        return "-"
    if value < 1:
        return f"{value * 1000:.0f} ms"
    return f"{value:.1f} s" if value < 120 else f"{value / 60:.1f} min"


def reliability_bars(cal: Calibration, width: int = _BAR) -> list[str]:
    """The reliability curve as text: per non-empty bin, its confidence range, calls, and
    a bar of the reviewers' accuracy with ``|`` where a calibrated model would be (the
    bin's mean confidence)."""
    lines = []
    for b in cal.curve:
        filled = round(b.accuracy * width)
        bar = list("█" * filled + "·" * (width - filled))
        mark = min(int(b.mean_confidence * width), width - 1)
        bar[mark] = "|"
        lines.append(f"{b.lower:.1f}-{b.upper:.1f}  n={b.count:<4} conf {b.mean_confidence:.2f}"
                     f"  acc {b.accuracy:.2f} {''.join(bar)}")
    return lines


def _table(v: VersionQuality) -> Table:
    table = Table(title=escape(v.key), show_header=False, title_justify="left")
    table.add_column("measure")
    table.add_column("value", justify="right")
    rows = [
        ("answered calls", str(v.calls)),
        ("automation rate", _pct(v.automation_rate)),
        ("human interventions", str(v.interventions)),
        ("labelled", f"{v.labelled} (approved {v.approved}, corrected {v.corrected}, "
                     f"rejected {v.rejected})" + (f", {v.unscored} without a proposal"
                                                  if v.unscored else "")),
        ("accuracy vs reviewers", _pct(v.accuracy)),
        ("override rate", _pct(v.override_rate)),
        ("time to resolution p50 / p95",
         f"{_secs(v.resolution_p50_s)} / {_secs(v.resolution_p95_s)}"),
        ("expected calibration error",
         "-" if v.calibration is None else f"{v.calibration.ece:.3f} "
                                           f"(n={v.calibration.samples})"),
    ]
    for measure, value in rows:
        table.add_row(measure, escape(value))
    return table


def render_quality(report: QualityReport, console: Console) -> None:
    """Print ``report`` for people: a table per capability and version, then its
    reliability curve as text bars."""
    scope = ", ".join(part for part in (
        report.capability, report.tenant and f"tenant {report.tenant}",
        report.since and f"since {report.since}") if part) or "all capabilities"
    console.print(escape(f"quality from reviewers — {scope}: {report.labels} labels"))
    if report.unmatched:
        console.print("[yellow]unmatched[/]: " + escape(
            f"{report.unmatched} labels name a record that is not in the audit log "
            f"(e.g. {', '.join(report.unmatched_record_ids[:3])})"))
    if not report.versions:
        console.print("no calls or labels yet")
        return
    for v in report.versions:
        console.print(_table(v))
        if v.calibration is None:
            console.print("  reliability curve: no labelled calls with a confidence")
            continue
        console.print(f"  reliability curve ({v.calibration.bins} bins; bar = reviewers' "
                      "accuracy, | = confidence):")
        for line in reliability_bars(v.calibration):
            console.print("  " + escape(line), soft_wrap=True)


def quality_command(open_mesh: Callable[[Path | None, str | None], Any],
                    fail: Callable[[MeshError], None], config_option: Any,
                    app_option: Any) -> Callable[..., None]:
    """The ``quality`` command; ``open_mesh``, ``fail`` and the ``--config`` / ``--app``
    options' ``Annotated`` types are the main CLI's, so it finds and reports the config the
    same way as every other command::

        app.command("quality")(quality_command(_mesh, _fail, ConfigOpt, AppOpt))
    """
    config_opt = get_args(config_option)[1]
    app_opt = get_args(app_option)[1]

    def quality_(
        capability: Annotated[Optional[str], typer.Argument(  # noqa: UP045 - typer
            help="Capability (name or name@version). Default: all.", show_default=False)
                              ] = None,
        tenant: Annotated[Optional[str], typer.Option(  # noqa: UP045
            help="Only this tenant's calls and labels.", show_default=False)] = None,
        since: Annotated[Optional[str], typer.Option(  # noqa: UP045
            help="Calls and labels from this ISO 8601 time (UTC if no zone), e.g. "
                 "2026-12-01.", show_default=False)] = None,
        by_tenant: Annotated[bool, typer.Option(
            "--by-tenant", help="One entry per tenant too.")] = False,
        as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")
                           ] = False,
        config: Annotated[Optional[Path], config_opt] = None,  # noqa: UP045
        app_ref: Annotated[Optional[str], app_opt] = None,  # noqa: UP045
    ) -> None:
        """Accuracy against reviewers, override and automation rates, time to resolution
        and calibration of confidence, per capability and model version."""
        try:
            with open_mesh(config, app_ref) as mesh:
                report = mesh.run_sync(quality(mesh, capability, tenant=tenant, since=since,
                                               by_tenant=by_tenant))
        except MeshError as exc:
            fail(exc)
            return
        if as_json:
            typer.echo(orjson.dumps(report.to_dict()).decode())
            return
        render_quality(report, _console)

    return quality_
