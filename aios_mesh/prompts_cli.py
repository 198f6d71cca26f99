"""``aios-mesh prompts``: versioned prompts in the configured registry, and their rollouts.

    aios-mesh prompts register ticket-triage --template-file triage.txt --alias production
    aios-mesh prompts alias ticket-triage production 3      # move (or create) an alias
    aios-mesh prompts show ticket-triage@production          # version, variables, digest, text
    aios-mesh prompts list                                   # prompts, aliases, who uses them
    aios-mesh prompts promote triage-ticket --version 3      # move a capability's prompt alias
    aios-mesh prompts rollback triage-ticket                 # undo the last prompt promote

A template file holds text (one user message) or a JSON list of ``{"role", "content"}`` chat
messages, with ``{{ variable }}`` placeholders named after the capability's input fields.
The registry is the config's ``[backends] registry`` (by default MLflow on sqlite in the
state folder; an ``mlflow+http://`` server for a team). ``promote`` and ``rollback`` are
recorded in the audit log like model alias moves (``kind: "alias_change"``, ``target:
"prompt"``), and follow a lock file that pins the prompt.
"""

from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Optional, get_args

import orjson
import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from aios_mesh.errors import ConfigError, FeatureNotSupported, MeshError
from aios_mesh.generation.prompt import PromptTemplate, parse_prompt_uri
from aios_mesh.ports.prompts import ListsPrompts, template_sha256
from aios_mesh.ports.registry import PromptRef, PromptRegistry, parse_model_spec
from aios_mesh.resolver import prompt_specs

__all__ = ["prompts_app"]

_console = Console()


def _registry(mesh: Any) -> PromptRegistry:
    registry = mesh.ports.registry
    if not isinstance(registry, PromptRegistry):
        raise FeatureNotSupported(f"the configured registry ({type(registry).__name__}) keeps "
                                  "no prompts", hint="set [backends] registry to an mlflow+ "
                                                     "URL (or memory:// for tests)")
    return registry


def _read_template(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise ConfigError(f"cannot read the template file {path}: {reason}",
                          hint="pass --template-file with a readable UTF-8 text file",
                          path=str(path)) from exc


def _describe(ref: PromptRef, pinned: str | None) -> dict[str, Any]:
    return {"name": ref.name, "version": ref.version, "alias": ref.alias, "uri": ref.uri,
            "variables": sorted(PromptTemplate.parse(ref.template).variables),
            "sha256": template_sha256(ref.template), "pinned_version": pinned,
            "template": ref.template}


def prompts_app(open_mesh: Callable[[Path | None, str | None], Any],
                fail: Callable[[MeshError], None], config_option: Any,
                app_option: Any) -> typer.Typer:
    """The ``prompts`` command group; ``open_mesh``, ``fail`` and the ``--config`` / ``--app``
    options' ``Annotated`` types are the main CLI's, so every command finds and reports the
    config the same way."""
    config_opt = get_args(config_option)[1]
    app_opt = get_args(app_option)[1]
    app = typer.Typer(help="Versioned prompts: register, alias, show, list, promote, "
                           "rollback.", no_args_is_help=True)

    @app.command("register")
    def register(
        name: Annotated[str, typer.Argument(help="Prompt name, e.g. ticket-triage.")],
        template_file: Annotated[Path, typer.Option(
            "--template-file", "-f", help="The template: text, or a JSON list of chat "
                                          "messages.")],
        alias: Annotated[Optional[str], typer.Option(  # noqa: UP045 - typer needs Optional
            help="Point this alias at the new version.")] = None,
        message: Annotated[Optional[str], typer.Option(  # noqa: UP045
            "--message", "-m", help="Commit message kept with the version.")] = None,
        config: Annotated[Optional[Path], config_opt] = None,  # noqa: UP045
    ) -> None:
        """Register a new version of a prompt (the prompt is created if needed)."""
        try:
            template = _read_template(template_file)
            with open_mesh(config, None) as mesh:
                registry = _registry(mesh)
                ref = mesh.run_sync(registry.register_prompt(name, template,
                                                             commit_message=message))
                if alias is not None:
                    mesh.run_sync(registry.set_prompt_alias(name, alias, ref.version))
        except MeshError as exc:
            fail(exc)
            return
        where = f" ({name}@{alias})" if alias else ""
        _console.print("[green]registered[/]: " + escape(f"{ref.uri}{where}"))

    @app.command("alias")
    def alias(
        name: Annotated[str, typer.Argument(help="Prompt name.")],
        alias: Annotated[str, typer.Argument(help="Alias to set or move, e.g. production.")],
        version: Annotated[str, typer.Argument(help="Version the alias names.")],
        config: Annotated[Optional[Path], config_opt] = None,  # noqa: UP045
    ) -> None:
        """Point NAME@ALIAS at VERSION. Not recorded: to move a capability's prompt with an
        audit entry, use `prompts promote`."""
        try:
            with open_mesh(config, None) as mesh:
                mesh.run_sync(_registry(mesh).set_prompt_alias(name, alias, version))
        except MeshError as exc:
            fail(exc)
            return
        _console.print("[green]alias[/]: " + escape(f"{name}@{alias} → v{version}"))

    @app.command("show")
    def show(
        spec: Annotated[str, typer.Argument(help="NAME@ALIAS, NAME/VERSION, NAME (latest) "
                                                 "or prompts:/...")],
        as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")
                           ] = False,
        config: Annotated[Optional[Path], config_opt] = None,  # noqa: UP045
    ) -> None:
        """What a prompt reference names in the registry now, and what the lock pins."""
        try:
            spec = parse_prompt_uri(spec)
            with open_mesh(config, None) as mesh:
                ref = mesh.run_sync(_registry(mesh).resolve_prompt(spec))
                lock = mesh.resolver.lock
                pin = lock.prompts.get(spec) if lock is not None else None
        except MeshError as exc:
            fail(exc)
            return
        doc = _describe(ref, None if pin is None else pin.version)
        if as_json:
            typer.echo(orjson.dumps(doc).decode())
            return
        for key in ("uri", "alias", "variables", "sha256", "pinned_version"):
            value = doc[key]
            text = ", ".join(value) if isinstance(value, list) else value
            _console.print(f"[bold]{key}[/]: " + escape("-" if text in (None, "") else str(text)))
        _console.print("[bold]template[/]:")
        _console.print(escape(ref.template), soft_wrap=True)

    @app.command("list")
    def list_(
        as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")
                           ] = False,
        config: Annotated[Optional[Path], config_opt] = None,  # noqa: UP045
        app_ref: Annotated[Optional[str], app_opt] = None,  # noqa: UP045
    ) -> None:
        """Every prompt in the registry (newest version, aliases) and the capabilities that
        use each, with the version the lock file pins."""
        try:
            with open_mesh(config, app_ref) as mesh:
                registry = _registry(mesh)
                listed = (mesh.run_sync(registry.list_prompts())
                          if isinstance(registry, ListsPrompts) else [])
                lock = mesh.resolver.lock
                users: dict[str, list[str]] = {}
                for spec in mesh.capabilities.values():
                    for used in prompt_specs([spec]):
                        users.setdefault(parse_model_spec(used)[0], []).append(
                            f"{spec.name} ({used}"
                            + (f", pinned v{lock.prompts[used].version})"
                               if lock is not None and used in lock.prompts else ")"))
        except MeshError as exc:
            fail(exc)
            return
        rows = [{"name": p.name, "latest_version": p.latest_version, "aliases": p.aliases,
                 "used_by": users.get(p.name, [])} for p in listed]
        if as_json:
            typer.echo(orjson.dumps(rows).decode())
            return
        table = Table(title="prompts")
        for col in ("name", "latest", "aliases", "used by"):
            table.add_column(col)
        for row in rows:
            table.add_row(escape(row["name"]), row["latest_version"],
                          escape(", ".join(f"{a}→v{v}" for a, v in row["aliases"].items())
                                 or "-"),
                          escape("; ".join(row["used_by"]) or "-"))
        _console.print(table)
        if not isinstance(registry, ListsPrompts):
            _console.print("[yellow]note[/]: this registry cannot list its prompts")

    def _move(action: str, capability: str, version: str | None, actor: str,
              config: Path | None, app_ref: str | None) -> None:
        from aios_mesh import rollout

        try:
            with open_mesh(config, app_ref) as mesh:
                if action == "promote":
                    change = mesh.run_sync(rollout.promote(mesh, capability, version=version,
                                                            actor=actor, prompt=True))
                else:
                    change = mesh.run_sync(rollout.rollback(mesh, capability, actor=actor,
                                                             prompt=True))
        except MeshError as exc:
            fail(exc)
            return
        _console.print(f"[green]{action}[/]: " + escape(
            f"prompt {change.model}@{change.alias} v{change.from_version} → "
            f"v{change.to_version} (recorded in the audit log)"))

    @app.command("promote")
    def promote(
        capability: Annotated[str, typer.Argument(help="Capability whose prompt alias moves.")],
        version: Annotated[Optional[str], typer.Option(  # noqa: UP045
            help="Prompt version to promote. Default: the canary's candidate prompt.")
                           ] = None,
        actor: Annotated[str, typer.Option(help="Who is promoting (recorded).")] = "cli",
        config: Annotated[Optional[Path], config_opt] = None,  # noqa: UP045
        app_ref: Annotated[Optional[str], app_opt] = None,  # noqa: UP045
    ) -> None:
        """Move the alias of the capability's registered prompt (recorded)."""
        _move("promote", capability, version, actor, config, app_ref)

    @app.command("rollback")
    def rollback(
        capability: Annotated[str, typer.Argument(help="Capability to roll back.")],
        actor: Annotated[str, typer.Option(help="Who is rolling back (recorded).")] = "cli",
        config: Annotated[Optional[Path], config_opt] = None,  # noqa: UP045
        app_ref: Annotated[Optional[str], app_opt] = None,  # noqa: UP045
    ) -> None:
        """Move the prompt alias back to where the last prompt promote found it."""
        _move("rollback", capability, None, actor, config, app_ref)

    return app

