"""Pause and resume (issue 19, item 7) on a real in-process mesh: a paused capability's calls
go to the review queue or the fallback chain and the record says why; a pause of one tenant
leaves the others alone; resume restores the primary; another process's pause is honoured
within the controller's ``refresh_s`` (its clock is moved by hand: no sleeping); every pause
and resume is in the audit log; bad input is refused with a hint."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
import typer
from pydantic import BaseModel
from typer.testing import CliRunner

from aios_mesh import Mesh
from aios_mesh.capabilities import CapabilitySpec
from aios_mesh.config import config_from_mapping
from aios_mesh.errors import BackendUnavailable, InvalidInput, UnknownCapability, UnknownTenant
from aios_mesh.lifecycle.pause import (
    CapabilityPaused,
    Pause,
    PauseControl,
    PauseStore,
    list_pauses,
    pause,
    pause_control,
    resume,
)
from aios_mesh.lifecycle_cli import lifecycle_commands
from aios_mesh.pipeline.call import Call
from aios_mesh.state import SqliteState

REPO = Path(__file__).resolve().parents[2]


class Ticket(BaseModel):
    text: str


class Triage(BaseModel):
    label: str


PRIMARY_CALLS: list[str] = []


def primary(ticket: Ticket) -> Triage:
    PRIMARY_CALLS.append(ticket.text)
    return Triage(label="primary")


def rules(ticket: Ticket) -> Triage:
    return Triage(label="rules")


FALLBACK = f"function:{__name__}:rules"


def triage() -> CapabilitySpec:
    return CapabilitySpec(name="triage", input=Ticket, output=Triage, handler=primary,
                          fallbacks=(FALLBACK,))


def plain() -> CapabilitySpec:
    return CapabilitySpec(name="plain", input=Ticket, output=Triage, handler=primary)


#: what ``--app`` loads in the CLI tests (and the other process imports)
CAPABILITIES = [triage(), plain()]


def local(folder: Path, *, clock: list[float] | None = None) -> Mesh:
    """A mesh on the state folder ``folder``; with ``clock``, its pause controller reads
    the time there (the test moves it)."""
    config = config_from_mapping({"state_dir": str(folder.resolve()),
                                  "tenants": {"acme": {}, "globex": {}}})
    admission = [] if clock is None else [PauseControl(clock=lambda: clock[0])]
    return Mesh(config, capabilities=CAPABILITIES, admission=admission)


def audit(folder: Path) -> list[dict[str, Any]]:
    lines = (folder / "audit.jsonl").read_text().splitlines()
    return [json.loads(line)["record"] for line in lines]


def ask(mesh: Mesh, tenant: str = "acme", text: str = "printer on fire") -> Any:
    return mesh.invoke("triage", {"text": text}, tenant=tenant)


def test_paused_to_human_calls_wait_in_the_review_queue_and_say_why(tmp_path: Path) -> None:
    PRIMARY_CALLS.clear()
    with local(tmp_path) as mesh:
        done = mesh.run_sync(pause(mesh, "triage", mode="human", reason="INC-42 labels off",
                                   actor="ana"))
        assert (done.capability, done.tenant, done.mode) == ("triage", None, "human")
        parked = ask(mesh)
        assert parked.output is None and parked.needs_review
        assert PRIMARY_CALLS == []  # the primary was never called
        rec = parked.record
        assert rec.outcome == "review" and rec.attempts == 0
        assert rec.error is not None and rec.error["code"] == "capability_paused"
        assert "INC-42 labels off" in rec.error["message"] and "ana" in rec.error["message"]
        [item] = mesh.review_queue().list(tenant="acme")
        assert item.id == rec.review_id and item.record_id == rec.record_id
        assert item.reason == "paused: INC-42 labels off" and item.proposed is None
        assert item.payload == {"text": "printer on fire"}
        # resumed: the primary answers again, at once in this process
        lifted = mesh.run_sync(resume(mesh, "triage", actor="bo", reason="fixed"))
        assert lifted == done
        back = ask(mesh)
        assert back.output == Triage(label="primary") and back.record.outcome == "ok"
        assert back.record.error is None and PRIMARY_CALLS == ["printer on fire"]
    entries = [e for e in audit(tmp_path) if e.get("kind") in ("pause", "resume")]
    assert [(e["kind"], e["capability"], e["tenant"], e["mode"], e["actor"], e["reason"])
            for e in entries] == [("pause", "triage", None, "human", "ana", "INC-42 labels off"),
                                  ("resume", "triage", None, "human", "bo", "fixed")]
    assert entries[1]["paused_at"] == entries[0]["at"]


def test_paused_to_fallback_the_chain_answers_and_the_record_is_degraded(
        tmp_path: Path) -> None:
    PRIMARY_CALLS.clear()
    with local(tmp_path) as mesh:
        mesh.run_sync(pause(mesh, "triage", mode="fallback", reason="GPU pool down"))
        answered = ask(mesh)
        assert answered.output == Triage(label="rules") and PRIMARY_CALLS == []
        rec = answered.record
        assert rec.outcome == "degraded" and rec.fallback == FALLBACK
        assert rec.error is not None and rec.error["type"] == "CapabilityPaused"
        assert "GPU pool down" in rec.error["message"]
        assert rec.serving == "function" and rec.review_id is None
        # many at once (bulk mode) are held the same way
        rows = mesh.invoke_many("triage", [{"text": f"t{i}"} for i in range(5)],
                                tenant="globex")
        assert {r.record.outcome for r in rows if not isinstance(r, Exception)} == {"degraded"}
        assert PRIMARY_CALLS == []


def test_a_tenants_pause_leaves_the_others_alone_and_wins_over_an_every_tenant_one(
        tmp_path: Path) -> None:
    with local(tmp_path) as mesh:
        mesh.run_sync(pause(mesh, "triage", tenant="acme", mode="human", reason="acme audit"))
        assert ask(mesh, "acme").record.outcome == "review"
        assert ask(mesh, "globex").record.outcome == "ok"
        # the every-tenant pause does not touch acme's own (more specific) one
        mesh.run_sync(pause(mesh, "triage", mode="fallback", reason="all"))
        assert ask(mesh, "acme").record.outcome == "review"
        assert ask(mesh, "globex").record.outcome == "degraded"
        # resuming the every-tenant pause leaves acme's; resuming acme's ends it
        mesh.run_sync(resume(mesh, "triage"))
        assert ask(mesh, "globex").record.outcome == "ok"
        assert ask(mesh, "acme").record.outcome == "review"
        assert [(p.tenant, p.mode) for p in mesh.run_sync(list_pauses(mesh))] == [
            ("acme", "human")]
        mesh.run_sync(resume(mesh, "triage", tenant="acme"))
        assert ask(mesh, "acme").record.outcome == "ok"
        assert mesh.run_sync(list_pauses(mesh)) == []


def test_pausing_again_replaces_the_pause(tmp_path: Path) -> None:
    with local(tmp_path) as mesh:
        mesh.run_sync(pause(mesh, "triage", mode="human", reason="first"))
        mesh.run_sync(pause(mesh, "triage", mode="fallback", reason="second"))
        [only] = mesh.run_sync(list_pauses(mesh, "triage"))
        assert (only.mode, only.reason) == ("fallback", "second")
        assert ask(mesh).record.outcome == "degraded"


def test_resuming_what_is_not_paused_changes_nothing(tmp_path: Path) -> None:
    with local(tmp_path) as mesh:
        assert mesh.run_sync(resume(mesh, "triage")) is None
        mesh.run_sync(pause(mesh, "triage", tenant="acme"))
        assert mesh.run_sync(resume(mesh, "triage", tenant="globex")) is None
        assert mesh.run_sync(resume(mesh, "triage")) is None  # acme's is not every tenant's
        assert ask(mesh, "acme").record.outcome == "review"
    assert [e["kind"] for e in audit(tmp_path) if "kind" in e] == ["pause"]


_OTHER_PROCESS = """
import sys
from pathlib import Path
from aios_mesh import Mesh
from aios_mesh.lifecycle.pause import pause, resume
from tests.unit.test_pause import CAPABILITIES
action, folder = sys.argv[1], Path(sys.argv[2])
with Mesh.local(folder, capabilities=CAPABILITIES, tenants=("acme", "globex")) as mesh:
    if action == "pause":
        mesh.run_sync(pause(mesh, "triage", tenant="acme", reason="from afar", actor="cron"))
    else:
        mesh.run_sync(resume(mesh, "triage", tenant="acme", actor="cron"))
"""


def _other_process(action: str, folder: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(_OTHER_PROCESS), action,
                           str(folder)], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=120, check=False)
    assert done.returncode == 0, done.stderr


def test_another_process_pause_is_honoured_within_refresh_s(tmp_path: Path) -> None:
    clock = [0.0]
    with local(tmp_path, clock=clock) as mesh:
        control = pause_control(mesh)
        assert control is not None and control.refresh_s == 1.0
        assert ask(mesh).record.outcome == "ok"  # the first call reads the (empty) table
        _other_process("pause", tmp_path)
        # the snapshot is not read again on each call: not yet seen...
        clock[0] = 0.5
        assert ask(mesh).record.outcome == "ok"
        # ...and seen once refresh_s has passed
        clock[0] = 1.01
        held = ask(mesh)
        assert held.record.outcome == "review" and "cron" in held.record.error["message"]
        assert ask(mesh, "globex").record.outcome == "ok"
        _other_process("resume", tmp_path)
        clock[0] = 2.02
        assert ask(mesh).record.outcome == "ok"
    kinds = [(e["kind"], e["actor"]) for e in audit(tmp_path) if "kind" in e]
    assert kinds == [("pause", "cron"), ("resume", "cron")]


def test_a_second_mesh_on_the_same_folder_shares_the_pause(tmp_path: Path) -> None:
    clock = [0.0]
    with local(tmp_path) as one, local(tmp_path, clock=clock) as two:
        assert ask(two).record.outcome == "ok"
        one.run_sync(pause(one, "triage", mode="fallback", reason="shared"))
        clock[0] = 5.0
        assert ask(two).record.outcome == "degraded"
        assert [p.reason for p in two.run_sync(list_pauses(two))] == ["shared"]


def test_bad_input_is_refused_with_a_hint(tmp_path: Path) -> None:
    with local(tmp_path) as mesh:
        with pytest.raises(UnknownCapability) as unknown:
            mesh.run_sync(pause(mesh, "triag"))
        assert "did you mean 'triage'" in (unknown.value.hint or "")
        with pytest.raises(InvalidInput, match="declares no fallback") as nofb:
            mesh.run_sync(pause(mesh, "plain", mode="fallback"))
        assert "human" in (nofb.value.hint or "")
        with pytest.raises(InvalidInput, match="cannot pause to 'robots'"):
            mesh.run_sync(pause(mesh, "triage", mode="robots"))
        for bad in ("", " acme", "*"):
            with pytest.raises(InvalidInput, match="not a tenant name"):
                mesh.run_sync(pause(mesh, "triage", tenant=bad))
        with pytest.raises(UnknownTenant) as tenant:
            mesh.run_sync(pause(mesh, "triage", tenant="acmee"))
        assert "did you mean 'acme'" in (tenant.value.hint or "")
        with pytest.raises(InvalidInput, match="characters long"):
            mesh.run_sync(pause(mesh, "triage", reason="x" * 501))
        with pytest.raises(UnknownCapability):
            mesh.run_sync(resume(mesh, "nope"))
        assert mesh.run_sync(list_pauses(mesh)) == []  # nothing was paused by any of it
        assert ask(mesh, "acme").record.outcome == "ok"


def test_personal_data_in_a_reason_is_masked_everywhere(tmp_path: Path) -> None:
    with local(tmp_path) as mesh:
        done = mesh.run_sync(pause(mesh, "triage", reason="ask bob@example.com"))
        assert "bob@example.com" not in done.reason
        ask(mesh)
    assert "bob@example.com" not in (tmp_path / "audit.jsonl").read_text()


def test_a_pause_that_cannot_be_audited_is_not_in_force(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    with local(tmp_path) as mesh:
        async def broken(record: dict[str, Any]) -> None:
            raise BackendUnavailable("audit log down", hint="-")

        monkeypatch.setattr(mesh.ports.audit, "append", broken)
        with pytest.raises(BackendUnavailable):
            mesh.run_sync(pause(mesh, "triage", reason="unaudited"))
        monkeypatch.undo()
        assert mesh.run_sync(list_pauses(mesh)) == []
        assert ask(mesh).record.outcome == "ok"


# -- the controller alone -------------------------------------------------------------------


def _call(mode: str = "invoke", tenant: str = "acme") -> Call:
    return Call(spec=triage(), tenant=tenant, caller="t", raw={}, record_id="r",
                mode=mode)  # type: ignore[arg-type]


def _pause(mode: str = "fallback", tenant: str | None = None) -> Pause:
    return Pause("triage", tenant, mode, "why", "ana", "2026-12-07T00:00:00+00:00")  # type: ignore[arg-type]


async def test_a_stream_of_a_capability_paused_to_fallback_is_refused(tmp_path: Path) -> None:
    store = PauseStore(SqliteState(tmp_path))
    store.put(_pause("fallback"))
    control = PauseControl(store)
    with pytest.raises(CapabilityPaused, match="paused for every tenant"):
        await control.admit(_call("stream"))
    call = _call("invoke")
    await control.admit(call)
    assert call.paused == "fallback" and isinstance(call.primary_error, CapabilityPaused)
    control.close()


async def test_an_unreadable_store_keeps_the_pauses_known(tmp_path: Path) -> None:
    class Flaky(PauseStore):
        down = False

        def all(self) -> list[Pause]:
            if self.down:
                raise BackendUnavailable("the pause store is not available", hint="-")
            return super().all()

    store = Flaky(SqliteState(tmp_path))
    store.put(_pause("human", "acme"))
    clock = [0.0]
    control = PauseControl(store, refresh_s=1.0, clock=lambda: clock[0])
    first = _call()
    await control.admit(first)
    assert first.paused == "human" and first.review_reason == "paused: why"
    store.down, clock[0] = True, 10.0
    second = _call()
    await control.admit(second)  # read failed: the known pause still holds
    assert second.paused == "human"
    other = _call(tenant="globex")
    await control.admit(other)
    assert other.paused is None
    control.close()


def test_refresh_s_must_be_a_duration() -> None:
    for bad in (-1.0, float("nan"), float("inf")):
        with pytest.raises(Exception, match="refresh_s"):
            PauseControl(refresh_s=bad)


# -- the CLI -------------------------------------------------------------------------------

runner = CliRunner()


def _cli() -> typer.Typer:
    """The lifecycle commands on the main CLI's options (as ``aios_mesh.cli`` registers
    them)."""
    from aios_mesh import cli

    app = typer.Typer()
    for name, command in lifecycle_commands(cli._mesh, cli._fail, cli.ConfigOpt,
                                            cli.AppOpt).items():
        app.command(name)(command)
    return app


def test_the_cli_pauses_lists_resumes_and_reverts(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    app = _cli()
    monkeypatch.chdir(tmp_path)
    (tmp_path / "aios-mesh.toml").write_text(
        "state_dir = 'state'\n[tenants.acme]\n[tenants.globex]\n")
    app_ref = ["--app", f"{__name__}:CAPABILITIES"]
    done = runner.invoke(app, ["pause", "triage", "--tenant", "acme", "--to", "fallback",
                               "--reason", "INC-7", "--actor", "ana", *app_ref])
    assert done.exit_code == 0, done.output
    assert "paused" in done.output and "fallback chain" in done.output
    listed = runner.invoke(app, ["paused", "--json", *app_ref])
    assert listed.exit_code == 0, listed.output
    [row] = json.loads(listed.output)
    assert (row["capability"], row["tenant"], row["mode"], row["actor"], row["reason"]) == (
        "triage", "acme", "fallback", "ana", "INC-7")
    table = runner.invoke(app, ["paused", *app_ref])
    assert "INC-7" in table.output
    # a mesh on the same state honours what the CLI paused
    with Mesh.local(tmp_path / "state", capabilities=CAPABILITIES,
                    tenants=("acme", "globex")) as mesh:
        assert ask(mesh, "acme").record.outcome == "degraded"
        assert ask(mesh, "globex").record.outcome == "ok"
    resumed = runner.invoke(app, ["resume", "triage", "--tenant", "acme", *app_ref])
    assert resumed.exit_code == 0 and "resumed" in resumed.output
    again = runner.invoke(app, ["resume", "triage", "--tenant", "acme", *app_ref])
    assert again.exit_code == 0 and "not paused" in again.output
    assert runner.invoke(app, ["paused", *app_ref]).output.strip() == "nothing is paused"
    # bad input: a typed error and exit code 2
    unknown = runner.invoke(app, ["pause", "triag", *app_ref])
    assert unknown.exit_code == 2 and "did you mean 'triage'" in unknown.output
    nofb = runner.invoke(app, ["pause", "plain", "--to", "fallback", *app_ref])
    assert nofb.exit_code == 2 and "declares no fallback" in nofb.output
    # revert is rollback: with no promote in the audit log there is nothing to undo
    revert = runner.invoke(app, ["revert", "triage", *app_ref])
    assert revert.exit_code == 2 and "no promote of triage" in revert.output
    prompt = runner.invoke(app, ["revert", "triage", "--prompt", *app_ref])
    assert prompt.exit_code == 2 and "no prompt promote" in prompt.output
