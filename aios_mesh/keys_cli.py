"""``aios-mesh keys``: API keys of the gateway — create (the key is printed once), list,
revoke.

    aios-mesh keys create acme billing-bot --scope extract-invoice-fields \\
        --limit calls_per_minute=60 --expires-in 90d
    aios-mesh keys create acme ann --role reviewer
    aios-mesh keys list [acme] [--all] [--json]
    aios-mesh keys revoke amk_3f9c1a7e52d0

The keys live in the ``api_keys`` store of the mesh's shared state (see
``docs/guides/identity.md``); only their SHA-256 digests are stored.
"""

import re
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Optional, get_args

import orjson
import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from aios_mesh.errors import ConfigError, MeshError

if TYPE_CHECKING:
    from aios_mesh.gateway.auth.store import KeyRecord, KeyStore

__all__ = ["keys_app", "parse_duration"]

_console = Console()
_notes = Console(stderr=True)
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_DURATION = re.compile(r"(\d+(?:\.\d+)?)([smhdw])")


def parse_duration(text: str) -> float:
    """Seconds in ``90d``, ``12h``, ``30m``, ``45s``, ``2w`` (a number and one unit)."""
    match = _DURATION.fullmatch(text.strip())
    seconds = float(match.group(1)) * _UNITS[match.group(2)] if match else 0.0
    if seconds <= 0:
        raise ConfigError(f"{text!r} is not a duration",
                          hint="write a number and a unit: 45s, 30m, 12h, 90d or 2w")
    return seconds


def _limits(pairs: list[str]) -> Any:
    from aios_mesh.ports.quota import QuotaLimits

    if not pairs:
        return None
    mapping: dict[str, str] = {}
    for pair in pairs:
        name, eq, value = pair.partition("=")
        if not eq:
            raise ConfigError(f"--limit {pair!r} is not NAME=VALUE",
                              hint="write e.g. --limit calls_per_minute=60")
        mapping[name.strip()] = value.strip()
    return QuotaLimits.from_mapping(mapping, "--limit").check()


def _when(at: float | None) -> str:
    return "-" if at is None else datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%d %H:%M")


def _table(records: "list[KeyRecord]") -> Table:
    table = Table(title="API keys")
    for col in ("id", "tenant", "caller", "scopes", "roles", "limits", "created (UTC)",
                "expires (UTC)", "status"):
        table.add_column(col, no_wrap=col in ("id", "status"))
    now = time.time()
    for r in records:
        limits = r.to_dict()["limits"] or {}
        table.add_row(r.name, escape(r.tenant), escape(r.caller),
                      "all" if r.scopes is None else escape(", ".join(sorted(r.scopes))),
                      ", ".join(sorted(r.roles)) or "-",
                      ", ".join(f"{k}={v:g}" for k, v in limits.items()) or "-",
                      _when(r.created_at), _when(r.expires_at), r.status(now))
    return table


def keys_app(open_mesh: Callable[[Path | None], Any], fail: Callable[[MeshError], None],
             config_option: Any) -> typer.Typer:
    """The ``keys`` command group; ``open_mesh``, ``fail`` and ``config_option`` are the
    main CLI's, so every command finds and reports the config the same way."""
    config_opt = get_args(config_option)[1]
    app = typer.Typer(help="API keys of the gateway: create, list, revoke.",
                      no_args_is_help=True)

    def with_store(config: Path | None, work: "Callable[[Any, KeyStore], Any]") -> Any:
        from aios_mesh.gateway.auth.store import KeyStore

        try:
            with open_mesh(config) as mesh:
                store = KeyStore(mesh.state)
                try:
                    return work(mesh, store)
                finally:
                    store.close()
        except MeshError as exc:
            fail(exc)

    @app.command("create")
    def create(
        tenant: Annotated[str, typer.Argument(help="The tenant every call with the key is "
                                                   "made for.")],
        caller: Annotated[str, typer.Argument(help="Who uses the key (recorded as the "
                                                   "caller of each call).")],
        scope: Annotated[Optional[list[str]], typer.Option(  # noqa: UP045 - typer needs Optional
            "--scope", "-s", help="A capability the key may call (repeat it); default: "
                                  "every capability.")] = None,
        role: Annotated[Optional[list[str]], typer.Option(  # noqa: UP045
            "--role", "-r", help="reviewer (review queue and console) or admin (also every "
                                 "tenant's records).")] = None,
        limit: Annotated[Optional[list[str]], typer.Option(  # noqa: UP045
            "--limit", "-l", help="The key's own quota limit NAME=VALUE (repeat it), e.g. "
                                  "calls_per_minute=60, calls_per_day=10000.")] = None,
        expires_in: Annotated[Optional[str], typer.Option(  # noqa: UP045
            help="Expire after this long (45s, 30m, 12h, 90d, 2w); default: never.")] = None,
        as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")
                           ] = False,
        config: Annotated[Optional[Path], config_opt] = None,  # noqa: UP045
    ) -> None:
        """Create a key and print it once (only its digest is kept)."""

        def work(mesh: Any, store: "KeyStore") -> "tuple[KeyRecord, str]":
            if tenant not in mesh.config.tenants:
                raise ConfigError(f"tenant {tenant!r} is not declared",
                                  hint="declare it under [tenants] in the config, or pick "
                                       f"one of: {', '.join(sorted(mesh.config.tenants))}")
            # capabilities declared in Python (--app) are not in the config's catalog: a
            # scope it does not know is only pointed out
            known = {spec.name for spec in mesh.catalog}
            for name in sorted(set(scope or ()) - known):
                _notes.print(f"[yellow]note[/]: {escape(repr(name))} is not a capability "
                               "of this config (fine if it is declared in Python)")
            expires_at = None if expires_in is None else time.time() + \
                parse_duration(expires_in)
            return store.create(tenant, caller, scopes=scope or None, roles=role or (),
                                limits=_limits(limit or []), expires_at=expires_at)

        made = with_store(config, work)
        if made is None:
            return
        record, key = made
        if as_json:
            typer.echo(orjson.dumps({**record.to_dict(), "key": key}).decode())
            return
        _console.print(f"[green]created[/] {record.name} for tenant {escape(repr(tenant))}, "
                       f"caller {escape(repr(caller))}")
        _console.print("The key (shown only now; store it in your secret manager):")
        typer.echo(key)

    @app.command("list")
    def list_keys(
        tenant: Annotated[Optional[str], typer.Argument(  # noqa: UP045
            help="Only this tenant's keys.")] = None,
        show_all: Annotated[bool, typer.Option("--all", help="Revoked and expired keys "
                                                             "too.")] = False,
        as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")
                           ] = False,
        config: Annotated[Optional[Path], config_opt] = None,  # noqa: UP045
    ) -> None:
        """List keys (never their secrets)."""
        records = with_store(config, lambda mesh, store: store.find(
            tenant, include_inactive=show_all))
        if records is None:
            return
        if as_json:
            typer.echo(orjson.dumps([r.to_dict() for r in records]).decode())
        elif records:
            _console.print(_table(records))
        else:
            _console.print("no keys" + ("" if show_all else " (--all shows revoked and "
                                                             "expired ones)"))

    @app.command("revoke")
    def revoke(
        key_id: Annotated[str, typer.Argument(help="The key's id (amk_<12 hex digits>, as "
                                                   "`keys list` shows it).")],
        config: Annotated[Optional[Path], config_opt] = None,  # noqa: UP045
    ) -> None:
        """Revoke a key: refused from now on (every gateway replica within its key cache
        time, [gateway.auth] key_cache_s)."""
        record = with_store(config, lambda mesh, store: store.revoke(key_id))
        if record is None:
            return
        _console.print(f"[green]revoked[/] {record.name} (tenant {escape(repr(record.tenant))}"
                       f", caller {escape(repr(record.caller))}) at "
                       f"{_when(record.revoked_at)} UTC")

    return app
