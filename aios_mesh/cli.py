"""The ``aios-mesh`` command line.

    aios-mesh demo                                   # first end-to-end run, embedded defaults
    aios-mesh capabilities                           # what can be invoked, with schemas
    aios-mesh invoke classify-ticket --tenant acme --json '{"text": "..."}'
    aios-mesh lock                                   # pin every model alias to a version
    aios-mesh audit verify                           # check the audit hash chain (and anchors)
    aios-mesh audit anchor | rebaseline | keygen     # signed checkpoints of the log's head
    aios-mesh doctor                                 # check every configured backend
    aios-mesh capabilities --app myapp.caps:mesh     # capabilities declared in Python

The config file comes from ``--config``, else ``$AIOS_MESH_CONFIG``, else ``./aios-mesh.toml``
when it exists, else the embedded defaults under ``./.aios-mesh``. ``--app module:attr`` (or
``$AIOS_MESH_APP``) names capabilities declared in Python: a :class:`~aios_mesh.Mesh`, a
capability spec or a list of them; the current directory is on the import path.

Every text the CLI prints that it did not write itself (messages, hints, names, URLs) goes
through :func:`rich.markup.escape`, so ``[tenants.acme]`` in a hint is printed as written.
"""

import os
import sys
from pathlib import Path
from typing import Annotated, Any, Optional

import orjson
import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from typer.core import TyperGroup

from aios_mesh.errors import ConfigError, MeshError
from aios_mesh.gateway_cli import gateway_command
from aios_mesh.keys_cli import keys_app
from aios_mesh.lifecycle_cli import lifecycle_commands
from aios_mesh.mcp_cli import mcp_command
from aios_mesh.prompts_cli import prompts_app
from aios_mesh.quality_cli import quality_command
from aios_mesh.quota_cli import quota_app
from aios_mesh.vault_cli import vault_app

__all__ = ["app", "main"]

app = typer.Typer(
    name="aios-mesh",
    help="Intent-first AI capabilities with policy, quotas, redaction, resilience and one "
         "decision record per call.",
    no_args_is_help=True,
    rich_markup_mode="rich",
    pretty_exceptions_enable=False,
)
audit_app = typer.Typer(help="Inspect and verify the tamper-evident audit log.",
                        no_args_is_help=True)
app.add_typer(audit_app, name="audit")

console = Console()
err_console = Console(stderr=True)

ConfigOpt = Annotated[Optional[Path], typer.Option(  # noqa: UP045 - typer needs Optional
    "--config", "-c", help="Mesh config file (TOML). Default: $AIOS_MESH_CONFIG or "
                           "./aios-mesh.toml, else the embedded defaults.",
    envvar="AIOS_MESH_CONFIG", show_default=False)]
AppOpt = Annotated[Optional[str], typer.Option(  # noqa: UP045 - typer needs Optional
    "--app", "-a", help="Capabilities declared in Python: 'module:attr' naming a Mesh, a "
                        "capability or a list of capabilities (the current directory is on "
                        "the import path).", envvar="AIOS_MESH_APP", show_default=False)]


def _mesh(config: Path | None, app_ref: str | None = None) -> Any:
    from aios_mesh.apps import load_mesh

    return load_mesh(config, app_ref)


def _fail(exc: MeshError) -> None:
    # escape: messages and hints hold brackets (pip install "aios-mesh[mlflow]")
    err_console.print(f"[bold red]error[/] [red]{type(exc).__name__}[/]: {escape(exc.message)}",
                      soft_wrap=True)
    if exc.hint:
        err_console.print(f"[yellow]hint[/]: {escape(exc.hint)}", soft_wrap=True)
    raise typer.Exit(code=2)


@app.command()
def capabilities(
    config: ConfigOpt = None,
    app_ref: AppOpt = None,
    schema: Annotated[Optional[str], typer.Option(  # noqa: UP045
        help="Print the input and output JSON schema of this capability.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """List the registered capabilities (name, version, model, policy, SLO, price); a
    name served in two majors is listed once per version (call one as NAME@MAJOR)."""
    try:
        mesh = _mesh(config, app_ref)
        specs = list(mesh.catalog)
        if schema is not None:
            spec = mesh.capability(schema)
            doc = {"input": spec.input.model_json_schema(),
                   "output": spec.output.model_json_schema()}
            console.print_json(orjson.dumps(doc).decode())
            return
        if as_json:
            console.print_json(orjson.dumps([
                {"name": s.name, "version": s.version, "deprecated": s.deprecated,
                 "model": s.model, "policy": s.policy,
                 "timeout_s": s.slo.timeout_s, "fallbacks": [str(f) for f in s.fallbacks]}
                for s in specs]).decode())
            return
        table = Table(title="capabilities")
        for col in ("name", "version", "model", "policy", "timeout", "fallbacks", "review <"):
            table.add_column(col)
        for s in specs:
            version = s.version if s.deprecated is None else f"{s.version} (deprecated)"
            table.add_row(*map(escape, (
                s.name, version, s.model or "(function)", s.policy or "-",
                f"{s.slo.timeout_s}s", ", ".join(str(f) for f in s.fallbacks) or "-",
                "-" if s.review_threshold is None else str(s.review_threshold))))
        console.print(table)
        if not specs:
            console.print(escape("no capabilities registered — declare [[capabilities]] in "
                                 "the config, or pass --app module:attr"))
    except MeshError as exc:
        _fail(exc)


@app.command()
def invoke(
    name: Annotated[str, typer.Argument(help="Capability name, e.g. classify-ticket, or "
                                             "NAME@MAJOR for one version.")],
    tenant: Annotated[str, typer.Option(help="Tenant the call is made for.")],
    payload: Annotated[Optional[str], typer.Option(  # noqa: UP045
        "--json", help="Payload as a JSON object; '-' reads standard input.")] = None,
    caller: Annotated[str, typer.Option(help="Caller identity recorded in the audit log.")
                      ] = "cli",
    config: ConfigOpt = None,
    app_ref: AppOpt = None,
) -> None:
    """Invoke a capability once and print its output and decision record."""
    raw = sys.stdin.read() if payload in (None, "-") else payload
    try:
        with _mesh(config, app_ref) as mesh:
            result = mesh.invoke(name, raw, tenant=tenant, caller=caller)
            out = None if result.output is None else result.output.model_dump(mode="json")
            console.print_json(orjson.dumps({"output": out,
                                             "record": result.record.to_dict()}).decode())
    except MeshError as exc:
        _fail(exc)


@app.command()
def lock(config: ConfigOpt = None, app_ref: AppOpt = None) -> None:
    """Pin every capability's model alias to its current registry version (the lock file)."""
    try:
        with _mesh(config, app_ref) as mesh:
            path = mesh.lock()
            lockfile = mesh.resolver.lock
            table = Table(title=escape(f"locked → {path}"))
            table.add_column("alias")
            table.add_column("version")
            for spec, ref in (lockfile.models.items() if lockfile else []):
                table.add_row(escape(spec), escape(ref.version))
            console.print(table)
    except MeshError as exc:
        _fail(exc)


def _anchoring(mesh: Any) -> tuple[Any, Any] | None:
    """(anchor store, [anchors] config) of a mesh, or None when it has no anchors."""
    from aios_mesh.anchoring.stores import store_for

    conf = mesh.config.anchors
    if conf is None:
        return None
    conf = conf.resolved(mesh.config.base_dir)
    return store_for(conf, mesh.config.state_path,
                     lambda: (mesh.port("events"), False)), conf


def _anchorer(mesh: Any) -> Any:
    from aios_mesh.anchoring.check import Anchorer
    from aios_mesh.anchoring.keys import signer_for, verifier_for

    found = _anchoring(mesh)
    if found is None:
        raise ConfigError("this mesh has no [anchors] table",
                          hint='add [anchors] with store = "file:////other/disk/anchors.jsonl" '
                               "and key_file (see docs/governance/anchoring.md)")
    store, conf = found
    return Anchorer(mesh.port("audit"), store, signer_for(conf), verifier_for(conf))


@audit_app.command("verify")
def audit_verify(
    path: Annotated[Optional[Path], typer.Argument(  # noqa: UP045
        help="Audit JSONL file. Default: the configured mesh's audit log.")] = None,
    config: ConfigOpt = None,
    strict: Annotated[bool, typer.Option(
        help="Fail (exit 1) when records after the last anchor are not vouched for.")
                      ] = False,
) -> None:
    """Check the hash chain: report every changed, deleted, inserted or reordered record.

    With [anchors] configured, also check the log against the latest signed anchor: a cut,
    emptied or rewritten tail fails, and records after the anchor are listed as unanchored.
    A log that does not exist or holds no record (and no anchor) fails (exit 1).
    """
    from aios_mesh.backends import redact_url
    from aios_mesh.errors import NotFound

    anchored: Any = None
    try:
        if path is not None and config is None:
            from aios_mesh.embedded.audit import verify_file

            if not path.is_file():
                raise NotFound(f"no audit log at {path}",
                               hint="pass the audit.jsonl of a mesh's state folder, or "
                                    "--config FILE to verify that mesh's log")
            where = str(path)
            report = verify_file(path)
        else:
            with _mesh(config) as mesh:
                audit = mesh.port("audit")
                where = redact_url(mesh.backend_url("audit")[0])
                if path is not None:
                    from aios_mesh.embedded.audit import JsonlAuditLog

                    audit, where = JsonlAuditLog(path), str(path)
                found = _anchoring(mesh)
                if found is None:
                    report = mesh.run_sync(audit.verify())
                else:
                    from aios_mesh.anchoring.check import verify_anchored
                    from aios_mesh.anchoring.keys import verifier_for

                    store, conf = found
                    try:
                        anchored = mesh.run_sync(verify_anchored(audit, store,
                                                                 verifier_for(conf)))
                    finally:
                        mesh.run_sync(store.aclose())
                    report = anchored.chain
    except MeshError as exc:
        _fail(exc)
        return
    problems = [(p.seq, p.kind, p.message) for p in report.problems]
    if anchored is not None:
        problems += [(p.seq, p.kind, p.message) for p in anchored.problems]
    if not problems and report.records == 0 and (anchored is None or anchored.anchor is None):
        err_console.print(f"[bold red]error[/]: no audit records in {escape(where)}: nothing "
                          "to verify", soft_wrap=True)
        err_console.print("[yellow]hint[/]: check --config (or the file) names the mesh whose "
                          "calls you want to verify; a mesh writes its log on its first call",
                          soft_wrap=True)
        raise typer.Exit(code=1)
    if problems:
        table = Table(title=f"[red]audit log tampered[/] ({report.records} records read)")
        table.add_column("seq")
        table.add_column("problem")
        table.add_column("detail")
        for seq, kind, message in sorted(problems):
            table.add_row(str(seq), escape(kind), escape(message))
        console.print(table)
        raise typer.Exit(code=1)
    console.print(f"[green]ok[/]: {report.records} records, chain intact", soft_wrap=True)
    if anchored is None:
        return
    if anchored.anchor is not None:
        a = anchored.anchor
        console.print(f"[green]anchored[/]: records 1..{anchored.anchored} match the "
                      f"{escape(a.kind)} signed {escape(a.at)} by key {escape(a.key_id)}",
                      soft_wrap=True)
    if anchored.unanchored is not None:
        first, last = anchored.unanchored
        console.print(f"[yellow]unanchored[/]: records {first}..{last} came after the last "
                      "anchor: not verified (written since, or forged); `aios-mesh audit "
                      "anchor` vouches for them", soft_wrap=True)
        if strict:
            raise typer.Exit(code=1)


@audit_app.command("anchor")
def audit_anchor(config: ConfigOpt = None) -> None:
    """Sign a checkpoint of the log's head now, into the [anchors] store."""
    try:
        with _mesh(config) as mesh:
            anchorer = _anchorer(mesh)
            try:
                anchor = mesh.run_sync(anchorer.checkpoint(force=True))
            finally:
                mesh.run_sync(anchorer.store.aclose())
    except MeshError as exc:
        _fail(exc)
        return
    if anchor is None:
        err_console.print("[bold red]error[/]: the audit log is empty: nothing to anchor")
        raise typer.Exit(code=1)
    console.print(f"[green]anchored[/]: seq {anchor.seq}, head {anchor.head[:16]}…, key "
                  f"{anchor.key_id}")


@audit_app.command("rebaseline")
def audit_rebaseline(
    reason: Annotated[str, typer.Option(help="Why the log was restored (kept, signed).")],
    config: ConfigOpt = None,
) -> None:
    """Record, signed, that the log now ends at its current head (after restoring it from an
    older copy on purpose); the previous anchor is superseded and the relay follows."""
    try:
        with _mesh(config) as mesh:
            anchorer = _anchorer(mesh)
            try:
                anchor = mesh.run_sync(anchorer.rebaseline(reason))
            finally:
                mesh.run_sync(anchorer.store.aclose())
    except MeshError as exc:
        _fail(exc)
        return
    console.print(f"[green]re-baselined[/]: the log ends at seq {anchor.seq} (head "
                  f"{anchor.head[:16]}…); superseded: seq {anchor.supersedes_seq}",
                  soft_wrap=True)


@audit_app.command("keygen")
def audit_keygen(
    folder: Annotated[Path, typer.Argument(help="Where anchor.key and anchor.pub go.")],
) -> None:
    """Make an Ed25519 key pair for anchors (anchor.key mode 0600, anchor.pub)."""
    from aios_mesh.anchoring.keys import generate_keypair

    try:
        private, public = generate_keypair(folder)
    except MeshError as exc:
        _fail(exc)
        return
    console.print(f"signing key: {escape(str(private))} (keep it with the relay)\n"
                  f"public key:  {escape(str(public))} (give it to whoever verifies)",
                  soft_wrap=True)


class _PluginGroup(TyperGroup):
    """A command group whose subcommands come from the adapters: the entry points of the
    ``aios_mesh.cli`` group named ``<this group>.<command>`` (``serve.bentoml`` is
    ``aios-mesh serve bentoml``). Nothing is looked up until the group is used, and an
    adapter is imported only when its command runs or the group's help lists it."""

    def _entries(self) -> dict[str, Any]:
        from aios_mesh.ports.entry_points import CLI_GROUP, find_entry_points

        prefix = f"{self.name}."
        try:
            found = find_entry_points(CLI_GROUP)
        except MeshError as exc:
            _fail(exc)
        return {name.removeprefix(prefix): ep for name, ep in found.items()
                if name.startswith(prefix)}

    def list_commands(self, ctx: Any) -> list[str]:
        return sorted({*self.commands, *self._entries()})

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        if cmd_name not in self.commands:
            ep = self._entries().get(cmd_name)
            if ep is None:
                return None
            self.commands[cmd_name] = _plugin_command(f"{self.name} {cmd_name}", cmd_name, ep)
        return self.commands[cmd_name]

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except MeshError as exc:  # an adapter's command lets typed errors through
            _fail(exc)


def _plugin_command(label: str, name: str, ep: Any) -> Any:
    """The click command of entry point ``ep``: its object is a typer-annotated function
    (its docstring is the help) or a :class:`typer.Typer`. An adapter whose extra is missing
    gives a command that says what to install."""
    from aios_mesh.ports.entry_points import load_entry_point

    try:
        obj = load_entry_point(ep, what=f"`aios-mesh {label}`")
    except MeshError as exc:
        return _unavailable(name, exc)
    if isinstance(obj, typer.Typer):
        sub = obj
    else:
        sub = typer.Typer(add_completion=False, pretty_exceptions_enable=False,
                          rich_markup_mode="rich")
        sub.command(name)(obj)
    command = typer.main.get_command(sub)
    command.name = name
    return command


def _unavailable(name: str, error: MeshError) -> Any:
    sub = typer.Typer(add_completion=False, pretty_exceptions_enable=False)

    @sub.command(name, help=escape(f"(not installed) {error.message}. Fix: {error.hint}"),
                 short_help=escape(f"(not installed) {error.hint}"),
                 context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
    def missing(ctx: typer.Context) -> None:
        _fail(error)

    command = typer.main.get_command(sub)
    command.name = name
    return command


serve_app = typer.Typer(cls=_PluginGroup, no_args_is_help=True,
                        help="Serve a registered model on a real model server.")
app.add_typer(serve_app, name="serve")


@app.command()
def compare(
    capability: Annotated[str, typer.Argument(help="Capability with a canary or shadow.")],
    config: ConfigOpt = None,
    app_ref: AppOpt = None,
) -> None:
    """Candidate vs primary: shadow agreement, latency and cost; canary outcomes."""
    from aios_mesh.rollout import compare as run_compare

    try:
        with _mesh(config, app_ref) as mesh:
            report = mesh.run_sync(run_compare(mesh, capability))
    except MeshError as exc:
        _fail(exc)
        return
    table = Table(title=escape(f"{capability}: {report['candidate']} vs {report['primary']}"))
    table.add_column("measure")
    table.add_column("value")
    for key, value in report["shadow"].items():
        table.add_row(escape(f"shadow {key}"), escape("-" if value is None else str(value)))
    for variant, stats in report["canary"].items():
        for key, value in stats.items():
            table.add_row(escape(f"{variant} {key}"), escape(str(value)))
    console.print(table)


def _alias_change(action: str, capability: str, version: str | None, actor: str,
                  config: Path | None, app_ref: str | None, *,
                  examples: Path | None = None, force: bool = False) -> None:
    from aios_mesh import rollout
    from aios_mesh.lifecycle.evaluation import examples_from_jsonl

    try:
        with _mesh(config, app_ref) as mesh:
            if action == "promote":
                change = mesh.run_sync(rollout.promote(
                    mesh, capability, version=version, actor=actor, force=force,
                    examples=None if examples is None else examples_from_jsonl(examples)))
            else:
                change = mesh.run_sync(rollout.rollback(mesh, capability, actor=actor))
    except MeshError as exc:
        _fail(exc)
        return
    console.print(f"[green]{action}[/]: " + escape(
        f"{change.model}@{change.alias} v{change.from_version} → v{change.to_version} "
        "(recorded in the audit log)"))


@app.command()
def promote(
    capability: Annotated[str, typer.Argument(help="Capability whose model alias moves.")],
    version: Annotated[Optional[str], typer.Option(  # noqa: UP045
        help="Version to promote. Default: the capability's canary/shadow candidate.")] = None,
    actor: Annotated[str, typer.Option(help="Who is promoting (recorded).")] = "cli",
    eval_set: Annotated[Optional[Path], typer.Option(  # noqa: UP045
        "--eval", help="Labelled set for the gates: a JSONL file of "
                       '{"input": {...}, "expected": {...}}. Default: the reviewers\' '
                       "verdicts.")] = None,
    force: Annotated[bool, typer.Option(
        "--force", help="Promote even if a declared gate fails (recorded as forced).")
    ] = False,
    config: ConfigOpt = None,
    app_ref: AppOpt = None,
) -> None:
    """Move the capability's MLflow alias to the candidate version (recorded).

    A capability that declares gates is promoted only when they pass: both versions are
    evaluated on the labelled set and the candidate's shadow agreement is read; the gate
    report goes to the audit log and onto the candidate's model version either way.

    Example: aios-mesh promote extract-invoice-fields --version 4 --eval golden.jsonl
    """
    _alias_change("promote", capability, version, actor, config, app_ref,
                  examples=eval_set, force=force)


@app.command()
def rollback(
    capability: Annotated[str, typer.Argument(help="Capability to roll back.")],
    actor: Annotated[str, typer.Option(help="Who is rolling back (recorded).")] = "cli",
    config: ConfigOpt = None,
    app_ref: AppOpt = None,
) -> None:
    """Move the alias back to where the last promote found it (recorded)."""
    _alias_change("rollback", capability, None, actor, config, app_ref)


review_app = typer.Typer(help="The human-review queue: list, show, approve, reject.",
                         no_args_is_help=True)
app.add_typer(review_app, name="review")
app.add_typer(quota_app(_mesh, _fail, ConfigOpt), name="quota")
app.add_typer(keys_app(_mesh, _fail, ConfigOpt), name="keys")
app.add_typer(vault_app(_mesh, _fail, ConfigOpt), name="vault")
app.add_typer(prompts_app(_mesh, _fail, ConfigOpt, AppOpt), name="prompts")
app.command("gateway")(gateway_command(_fail, ConfigOpt, AppOpt))
app.command("quality")(quality_command(_mesh, _fail, ConfigOpt, AppOpt))
app.command("mcp")(mcp_command(_mesh, _fail, ConfigOpt, AppOpt))
for _name, _command in lifecycle_commands(_mesh, _fail, ConfigOpt, AppOpt).items():
    app.command(_name)(_command)  # pause, resume, paused, revert


@review_app.command("list")
def review_list(
    status: Annotated[str, typer.Option(help="pending, approved, rejected or all.")
                      ] = "pending",
    tenant: Annotated[Optional[str], typer.Option(help="Only this tenant.")] = None,  # noqa: UP045
    config: ConfigOpt = None,
) -> None:
    """List review items (default: the pending ones)."""
    with _mesh(config) as mesh:
        items = mesh.review_queue().list(None if status == "all" else status,
                                         tenant=tenant)
    table = Table(title=escape(f"review queue ({status})"))
    for col in ("id", "tenant", "capability", "reason", "status", "created"):
        table.add_column(col)
    for it in items:
        table.add_row(*map(escape, (it.id, it.tenant, it.capability, it.reason, it.status,
                                    it.created_at[:19])))
    console.print(table)


@review_app.command("show")
def review_show(item_id: Annotated[str, typer.Argument(help="Review item id.")],
                config: ConfigOpt = None) -> None:
    """Show one item: its input, the proposed answer, the decision."""
    try:
        with _mesh(config) as mesh:
            item = mesh.review_queue().get(item_id)
    except MeshError as exc:
        _fail(exc)
        return
    from dataclasses import asdict

    console.print_json(orjson.dumps(asdict(item)).decode())


def _decide(item_id: str, approve: bool, reviewer: str, output: str | None, note: str,
            config: Path | None) -> None:
    try:
        corrected = orjson.loads(output) if output else None
    except orjson.JSONDecodeError as exc:
        _fail(MeshError(f"--output is not valid JSON: {exc}"))
        return
    try:
        with _mesh(config) as mesh:
            item = mesh.resolve_review(item_id, approve=approve, reviewer=reviewer,
                                       output=corrected, note=note)
    except MeshError as exc:
        _fail(exc)
        return
    resume = item.resume or {}
    resumed = (f" → published to {resume['topic']}" if resume.get("topic") else
               f" → the agent run goes on with {{\"resume\": \"{item.id}\"}}"
               if resume.get("agent_run") else "")
    console.print(f"[green]{escape(item.status)}[/] " + escape(f"{item.id} by {reviewer}{resumed}"))


@review_app.command("approve")
def review_approve(
    item_id: Annotated[str, typer.Argument(help="Review item id.")],
    reviewer: Annotated[str, typer.Option(help="Who decides (recorded).")],
    output: Annotated[Optional[str], typer.Option(  # noqa: UP045
        help="Corrected output as JSON; default: accept the proposed answer.")] = None,
    note: Annotated[str, typer.Option(help="Why.")] = "",
    config: ConfigOpt = None,
) -> None:
    """Approve (optionally correcting the output); resumes the waiting event chain."""
    _decide(item_id, True, reviewer, output, note, config)


@review_app.command("reject")
def review_reject(
    item_id: Annotated[str, typer.Argument(help="Review item id.")],
    reviewer: Annotated[str, typer.Option(help="Who decides (recorded).")],
    note: Annotated[str, typer.Option(help="Why.")] = "",
    config: ConfigOpt = None,
) -> None:
    """Reject; a rejection event goes to the waiting event chain."""
    _decide(item_id, False, reviewer, None, note, config)


@app.command()
def worker(
    config: ConfigOpt = None,
    concurrency: Annotated[int, typer.Option(min=1, help="Calls in flight at most.")] = 8,
    app_ref: AppOpt = None,
) -> None:
    """Consume the config's [[routes]] events, invoke capabilities, publish results.

    SIGTERM or Ctrl-C stops fetching, finishes and acks in-flight calls, then exits.
    """
    import asyncio
    import signal

    from aios_mesh.worker import Worker

    async def main() -> None:
        mesh = _mesh(config, app_ref)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        runner = Worker(mesh, concurrency=concurrency)
        await mesh.flush_outbox()  # ship what an earlier run left pending
        routes = ", ".join(f"{r.topic}→{r.capability}" for r in runner.routes)
        err_console.print(escape(f"worker: {routes} (concurrency {concurrency})"))
        try:
            stats = await runner.run(stop)
        finally:
            runner.close()
            await mesh.aclose()
        err_console.print(escape(f"worker stopped: {stats}"))

    try:
        asyncio.run(main())
    except MeshError as exc:
        _fail(exc)


@app.command()
def doctor(
    config: ConfigOpt = None,
    app_ref: AppOpt = None,
    timeout: Annotated[float, typer.Option(
        min=0.1, max=60, help="Seconds each backend may take to answer.")] = 3.0,
) -> None:
    """Probe each configured backend for real (a connection or request, under --timeout);
    say how to fix each one that is down, and exit 1 if any is."""
    from aios_mesh.doctor import run_checks

    try:
        mesh = _mesh(config, app_ref)
    except MeshError as exc:
        _fail(exc)
        return
    with mesh:
        checks = run_checks(mesh, timeout=timeout)
    table = Table(title="aios-mesh doctor")
    for col in ("port", "url", "from", "status", "detail"):
        table.add_column(col)
    for c in checks:
        table.add_row(escape(c.port), escape(c.url), escape(c.source),
                      "[green]ok[/]" if c.ok else "[red]down[/]",
                      escape(c.detail) if c.ok else "see below")
    console.print(table)
    for c in checks:  # the full text, unwrapped: hints are meant to be copied
        if not c.ok:
            console.print(f"[red]{escape(c.port)}[/]: {escape(c.detail)}", soft_wrap=True)
            if c.hint:
                console.print(f"  [yellow]fix[/]: {escape(c.hint)}", soft_wrap=True)
    if any(not c.ok for c in checks):
        raise typer.Exit(code=1)


@app.command()
def demo(
    state_dir: Annotated[Path, typer.Option(help="Where the demo keeps its files.")] = Path(
        ".aios-mesh/demo"),
    invoices: Annotated[int, typer.Option(help="How many synthetic calls to make.")] = 60,
) -> None:
    """Run a first end-to-end automation on the embedded defaults and print its records."""
    from aios_mesh.demo import run_demo

    try:
        code = run_demo(state_dir, n=invoices, console=console)
    except MeshError as exc:
        _fail(exc)
        return
    raise typer.Exit(code=code)


def main() -> None:
    """Console-script entry point."""
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    app()


if __name__ == "__main__":
    main()
