"""``aios-mesh quota``: see and reset what tenants have drawn, window by window.

    aios-mesh quota show                      # every tenant of the config, every limit
    aios-mesh quota show acme --json          # one tenant, machine-readable
    aios-mesh quota reset acme --window day   # forget today's settled usage of acme

The usage comes from the configured quota store. ``redis://`` keeps it for every process, so
this shows what the running services drew; ``memory://`` counts inside one process only, so
a fresh CLI process has drawn nothing (the command says so).
"""

from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Optional, get_args

import orjson
import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from aios_mesh.backends import parse_url
from aios_mesh.errors import MeshError
from aios_mesh.ports.quota import QuotaStatus, QuotaStore

__all__ = ["quota_app"]

_console = Console()


def _scopes(mesh: Any, tenant: str | None, capability: str | None) -> list[tuple[str, str | None]]:
    """``(tenant, capability or None)`` pairs to show: the tenant-wide scope and every
    capability the config limits, for the tenant asked or every configured one."""
    tenants = mesh.config.tenants
    names = [tenant] if tenant is not None else list(tenants)
    if capability is not None:
        return [(name, capability) for name in names]
    out: list[tuple[str, str | None]] = []
    for name in names:
        out.append((name, None))
        conf = tenants.get(name)
        out.extend((name, cap) for cap in (conf.capabilities if conf is not None else {}))
    return out


def _as_json(status: QuotaStatus) -> dict[str, Any]:
    return {"tenant": status.tenant, "capability": status.capability, "at": status.at,
            "limits": status.rows(),
            "usage": {w.window or "total": {"calls": w.usage.calls, "tokens": w.usage.tokens,
                                            "gpu_seconds": w.usage.gpu_seconds,
                                            "cost": w.cost, "start": w.start, "end": w.end}
                      for w in status.windows}}


def _table(statuses: list[QuotaStatus]) -> Table:
    table = Table(title="quota (calendar windows in UTC)")
    for col in ("scope", "limit", "value", "used", "left", "resets (UTC)"):
        table.add_column(col, no_wrap=col in ("limit", "resets (UTC)"))
    for status in statuses:
        scope = escape(status.tenant if status.capability is None
                       else f"{status.tenant}/{status.capability}")
        rows = status.rows()
        for row in rows:
            name = row["metric"] if row["window"] == "total" else \
                f"{row['metric']}_per_{row['window']}"
            resets = "never" if row["resets_at"] is None else \
                row["resets_at"][:16].replace("T", " ")
            table.add_row(scope, name, f"{row['limit']:g}", f"{row['used']:g}",
                          f"{row['left']:g}", resets)
        if not rows:
            total = status.window(None)
            table.add_row(scope, "unlimited", "-", f"{total.usage.calls} calls", "-", "-")
    return table


def quota_app(open_mesh: Callable[[Path | None], Any], fail: Callable[[MeshError], None],
              config_option: Any) -> typer.Typer:
    """The ``quota`` command group; ``open_mesh``, ``fail`` and ``config_option`` (the
    ``--config`` option's ``Annotated`` type) are the main CLI's, so every command finds and
    reports the config the same way."""
    config_opt = get_args(config_option)[1]
    app = typer.Typer(help="Quota usage per tenant and window: show, reset.",
                      no_args_is_help=True)

    @app.command("show")
    def show(
        tenant: Annotated[Optional[str], typer.Argument(  # noqa: UP045 - typer needs Optional
            help="Only this tenant (default: every tenant of the config).")] = None,
        capability: Annotated[Optional[str], typer.Option(  # noqa: UP045
            help="Only this capability's own limits and usage.")] = None,
        as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")
                           ] = False,
        config: Annotated[Optional[Path], config_opt] = None,  # noqa: UP045
    ) -> None:
        """Limits, usage and when each window resets, per tenant (and capability)."""
        try:
            with open_mesh(config) as mesh:
                store: QuotaStore = mesh.ports.quota
                statuses = [mesh.run_sync(store.status(t, c))
                            for t, c in _scopes(mesh, tenant, capability)]
                url, _ = mesh.ports.url("quota")
        except MeshError as exc:
            fail(exc)
            return
        if as_json:
            typer.echo(orjson.dumps([_as_json(s) for s in statuses]).decode())
            return
        _console.print(_table(statuses))
        if parse_url(url).scheme == "memory":
            _console.print("[yellow]note[/]: the quota store is memory://, which counts inside "
                           "one process only; this fresh process has drawn nothing. Use "
                           "redis:// to share and inspect usage.")

    @app.command("reset")
    def reset(
        tenant: Annotated[str, typer.Argument(help="The tenant whose usage to forget.")],
        window: Annotated[Optional[str], typer.Option(  # noqa: UP045
            help="Only the current minute, hour, day or month (default: every window and "
                 "the lifetime counters).")] = None,
        yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask.")] = False,
        config: Annotated[Optional[Path], config_opt] = None,  # noqa: UP045
    ) -> None:
        """Forget a tenant's settled usage (every capability); running calls stay counted."""
        what = f"the current {window} window" if window else "every window and the total"
        if not yes and not typer.confirm(f"Reset {what} of tenant {tenant!r}?"):
            raise typer.Exit(code=1)
        try:
            with open_mesh(config) as mesh:
                mesh.run_sync(mesh.ports.quota.reset(tenant, window=window))
        except MeshError as exc:
            fail(exc)
            return
        _console.print(f"[green]reset[/]: {escape(what)} of tenant {escape(repr(tenant))}")

    return app
