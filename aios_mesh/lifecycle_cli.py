"""``aios-mesh pause / resume / paused / revert``: stop an automation, start it again, see what
is stopped, and roll its model (or prompt) back.

    aios-mesh pause extract-invoice --tenant acme --to human --reason "INC-42 totals off"
    aios-mesh pause extract-invoice --to fallback --reason "GPU pool down"   # every tenant
    aios-mesh paused                                  # what is paused, for whom, since when
    aios-mesh resume extract-invoice --tenant acme
    aios-mesh revert extract-invoice                  # the model alias back (= rollback)
    aios-mesh revert triage-ticket --prompt           # the prompt alias back

A pause is kept in the shared state (the state folder, or the PostgreSQL that ``[backends]
state`` names), so every process on that state honours it — within its pause controller's
``refresh_s`` (1 s by default). Pause and resume are appended to the audit log (``kind:
"pause"`` / ``"resume"``); ``revert`` is :func:`aios_mesh.rollout.rollback` under its
operator-facing name (an ``alias_change`` entry with ``action: "rollback"``). Resuming
what is not paused says so and exits 0.
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
from aios_mesh.lifecycle.pause import Pause, list_pauses, pause, resume

__all__ = ["lifecycle_commands"]

_console = Console()


def _scope(tenant: str | None) -> str:
    return "every tenant" if tenant is None else f"tenant {tenant}"


def lifecycle_commands(open_mesh: Callable[[Path | None, str | None], Any],
                       fail: Callable[[MeshError], None], config_option: Any,
                       app_option: Any) -> dict[str, Callable[..., None]]:
    """The top-level ``pause``, ``resume``, ``paused`` and ``revert`` commands, by name, for
    ``app.command(name)(fn)``; ``open_mesh``, ``fail`` and the ``--config`` / ``--app``
    options' ``Annotated`` types are the main CLI's."""
    config_opt = get_args(config_option)[1]
    app_opt = get_args(app_option)[1]
    tenant_help = "Only this tenant's calls. Default: every tenant."

    def pause_command(
        capability: Annotated[str, typer.Argument(help="Capability to pause.")],
        tenant: Annotated[Optional[str], typer.Option(  # noqa: UP045 - typer needs Optional
            help=tenant_help)] = None,
        to: Annotated[str, typer.Option(
            "--to", help="Where its calls go: human (the review queue) or fallback (its "
                         "declared fallback chain).")] = "human",
        reason: Annotated[str, typer.Option(help="Why (recorded; a ticket id and a few "
                                                 "words).")] = "",
        actor: Annotated[str, typer.Option(help="Who is pausing (recorded).")] = "cli",
        config: Annotated[Optional[Path], config_opt] = None,  # noqa: UP045
        app_ref: Annotated[Optional[str], app_opt] = None,  # noqa: UP045
    ) -> None:
        """Send every call of CAPABILITY to human review or its fallback chain until
        `resume` (recorded; honoured by every process sharing the state)."""
        try:
            with open_mesh(config, app_ref) as mesh:
                done: Pause = mesh.run_sync(pause(mesh, capability, tenant=tenant, mode=to,
                                                  reason=reason, actor=actor))
        except MeshError as exc:
            fail(exc)
            return
        where = "human review" if done.mode == "human" else "the fallback chain"
        _console.print("[green]paused[/]: " + escape(
            f"{done.capability} for {done.scope}; its calls go to {where} until `aios-mesh "
            f"resume {done.capability}"
            + ("" if done.tenant is None else f" --tenant {done.tenant}")
            + "` (recorded in the audit log)"))

    def resume_command(
        capability: Annotated[str, typer.Argument(help="Capability to resume.")],
        tenant: Annotated[Optional[str], typer.Option(  # noqa: UP045
            help="Lift this tenant's pause. Default: the every-tenant pause.")] = None,
        reason: Annotated[str, typer.Option(help="Why (recorded).")] = "",
        actor: Annotated[str, typer.Option(help="Who is resuming (recorded).")] = "cli",
        config: Annotated[Optional[Path], config_opt] = None,  # noqa: UP045
        app_ref: Annotated[Optional[str], app_opt] = None,  # noqa: UP045
    ) -> None:
        """Lift a pause: calls go to the primary again. Resuming what is not paused changes
        nothing and exits 0."""
        try:
            with open_mesh(config, app_ref) as mesh:
                lifted = mesh.run_sync(resume(mesh, capability, tenant=tenant, actor=actor,
                                              reason=reason))
                left = mesh.run_sync(list_pauses(mesh, capability))
        except MeshError as exc:
            fail(exc)
            return
        if lifted is None:
            _console.print("[yellow]not paused[/]: " + escape(
                f"{capability} has no pause for {_scope(tenant)}; nothing changed"))
        else:
            _console.print("[green]resumed[/]: " + escape(
                f"{lifted.capability} for {lifted.scope} (recorded in the audit log)"))
        for other in left:  # the pauses that still hold its calls
            _console.print("[yellow]still paused[/]: " + escape(
                f"{other.capability} for {other.scope} (to {other.mode})"))

    def paused_command(
        capability: Annotated[Optional[str], typer.Argument(  # noqa: UP045
            help="Only this capability.")] = None,
        as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")
                           ] = False,
        config: Annotated[Optional[Path], config_opt] = None,  # noqa: UP045
        app_ref: Annotated[Optional[str], app_opt] = None,  # noqa: UP045
    ) -> None:
        """List the pauses in force (capability, tenant, where calls go, who, why, since)."""
        try:
            with open_mesh(config, app_ref) as mesh:
                found = mesh.run_sync(list_pauses(mesh, capability))
        except MeshError as exc:
            fail(exc)
            return
        if as_json:
            typer.echo(orjson.dumps([p.to_dict() for p in found]).decode())
            return
        if not found:
            _console.print("nothing is paused")
            return
        table = Table(title="paused")
        for col in ("capability", "tenant", "to", "by", "since", "reason"):
            table.add_column(col)
        for p in found:
            table.add_row(*map(escape, (p.capability, p.tenant or "(every tenant)", p.mode,
                                        p.actor, p.at, p.reason or "-")))
        _console.print(table)

    def revert_command(
        capability: Annotated[str, typer.Argument(help="Capability to revert.")],
        prompt: Annotated[bool, typer.Option(
            "--prompt", help="Revert its registered prompt's alias instead of its model's.")
                          ] = False,
        actor: Annotated[str, typer.Option(help="Who is reverting (recorded).")] = "cli",
        config: Annotated[Optional[Path], config_opt] = None,  # noqa: UP045
        app_ref: Annotated[Optional[str], app_opt] = None,  # noqa: UP045
    ) -> None:
        """Move the model (or --prompt: prompt) alias back to where the last promote found
        it — `rollback` under its operator name (recorded)."""
        from aios_mesh import rollout

        try:
            with open_mesh(config, app_ref) as mesh:
                change = mesh.run_sync(rollout.rollback(mesh, capability, actor=actor,
                                                        prompt=prompt))
        except MeshError as exc:
            fail(exc)
            return
        what = "prompt " if change.target == "prompt" else ""
        _console.print("[green]reverted[/]: " + escape(
            f"{what}{change.model}@{change.alias} v{change.from_version} → "
            f"v{change.to_version} (recorded in the audit log as a rollback)"))

    return {"pause": pause_command, "resume": resume_command, "paused": paused_command,
            "revert": revert_command}
