"""The CLI end to end on function capabilities declared in a config file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import BaseModel
from typer.testing import CliRunner

from aios_mesh.cli import app

runner = CliRunner()


class Ticket(BaseModel):
    text: str


class Route(BaseModel):
    label: str


def route(payload: Ticket) -> Route:
    return Route(label="billing" if "invoice" in payload.text else "general")


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "aios-mesh.toml"
    path.write_text(f"""
state_dir = "state"
[tenants.acme]
[telemetry]
lineage = false
decision_events = false
[[capabilities]]
name = "route-ticket"
input = "{__name__}:Ticket"
output = "{__name__}:Route"
handler = "{__name__}:route"
""")
    return path


def test_help_teaches() -> None:
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for command in ("capabilities", "invoke", "lock", "audit", "doctor", "demo"):
        assert command in result.output


def test_capabilities_lists_and_shows_schema(config: Path) -> None:
    result = runner.invoke(app, ["capabilities", "--config", str(config), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)[0]["name"] == "route-ticket"
    schema = runner.invoke(app, ["capabilities", "--config", str(config), "--schema",
                                 "route-ticket"])
    assert json.loads(schema.output)["input"]["required"] == ["text"]


def test_invoke_prints_output_and_record_then_audit_verifies(config: Path) -> None:
    result = runner.invoke(app, ["invoke", "route-ticket", "--tenant", "acme", "--config",
                                 str(config), "--json", '{"text": "invoice 7"}'])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.output)
    assert doc["output"] == {"label": "billing"}
    assert doc["record"]["outcome"] == "ok"
    audit = config.parent / "state" / "audit.jsonl"
    verify = runner.invoke(app, ["audit", "verify", str(audit)])
    assert verify.exit_code == 0 and "chain intact" in verify.output


def test_audit_verify_reports_a_tampered_record(config: Path) -> None:
    for text in ("a", "b", "c"):
        runner.invoke(app, ["invoke", "route-ticket", "--tenant", "acme", "--config",
                            str(config), "--json", json.dumps({"text": text})])
    audit = config.parent / "state" / "audit.jsonl"
    lines = audit.read_text().splitlines()
    lines[1] = lines[1].replace('"acme"', '"evil"')
    audit.write_text("\n".join(lines) + "\n")
    verify = runner.invoke(app, ["audit", "verify", str(audit)])
    assert verify.exit_code == 1
    assert "changed" in verify.output


@pytest.mark.parametrize(("args", "message"), [
    (["invoke", "route-tickt", "--tenant", "acme", "--json", "{}"], "did you mean"),
    (["invoke", "route-ticket", "--tenant", "nobody", "--json", '{"text": "x"}'],
     "UnknownTenant"),
    (["invoke", "route-ticket", "--tenant", "acme", "--json", "{not json"], "InvalidInput"),
])
def test_errors_are_typed_with_hints(config: Path, args: list[str], message: str) -> None:
    result = runner.invoke(app, [*args, "--config", str(config)])
    assert result.exit_code == 2
    assert message in result.output


def test_malformed_config_is_a_clear_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[backends]\nserving = 'trition+grpc://x:1'\n")
    result = runner.invoke(app, ["doctor", "--config", str(bad)])
    assert result.exit_code in (1, 2)
    assert "did you mean 'triton+grpc'" in result.output


def test_doctor_checks_every_port(config: Path) -> None:
    policies = config.parent / "state" / "policies"
    policies.mkdir(parents=True)
    (policies / "p.rego").write_text("package p\n\ndefault allow := true\n")
    result = runner.invoke(app, ["doctor", "--config", str(config)])
    for port in ("serving", "registry", "retrieval", "policy", "events", "quota", "audit"):
        assert port in result.output
    assert result.exit_code == 0, result.output


def test_doctor_says_how_to_fix_a_missing_policy_folder(config: Path) -> None:
    result = runner.invoke(app, ["doctor", "--config", str(config)])
    assert result.exit_code == 1
    assert "policy" in result.output and "mkdir -p" in result.output


APP_MODULE = '''
from pydantic import BaseModel

from aios_mesh import capability


class Text(BaseModel):
    text: str


class Shout(BaseModel):
    text: str


@capability("shout")
def shout(payload: Text) -> Shout:
    return Shout(text=payload.text.upper() + " [ok]")


capabilities = [shout]
'''


@pytest.fixture
def app_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A project folder with capabilities declared in Python (``shoutapp.py``), as cwd."""
    (tmp_path / "shoutapp.py").write_text(APP_MODULE)
    monkeypatch.chdir(tmp_path)
    monkeypatch.delitem(__import__("sys").modules, "shoutapp", raising=False)
    return tmp_path


def test_app_option_makes_python_capabilities_visible(app_dir: Path) -> None:
    listed = runner.invoke(app, ["capabilities", "--app", "shoutapp:capabilities", "--json"])
    assert listed.exit_code == 0, listed.output
    assert [c["name"] for c in json.loads(listed.output)] == ["shout"]
    done = runner.invoke(app, ["invoke", "shout", "--tenant", "default", "--app",
                               "shoutapp:shout", "--json", '{"text": "hi"}'])
    assert done.exit_code == 0, done.output
    assert json.loads(done.output)["output"] == {"text": "HI [ok]"}


def test_app_from_the_environment_through_the_real_entry_point(app_dir: Path) -> None:
    import os
    import subprocess
    import sys

    cli = Path(sys.executable).parent / "aios-mesh"
    done = subprocess.run([str(cli), "capabilities", "--json"], cwd=app_dir, text=True,
                          capture_output=True, timeout=120,
                          env={**os.environ, "AIOS_MESH_APP": "shoutapp:capabilities"})
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)[0]["name"] == "shout"


def test_app_that_names_something_else_is_a_typed_error(app_dir: Path) -> None:
    result = runner.invoke(app, ["capabilities", "--app", "shoutapp:Text"])
    assert result.exit_code == 2
    assert "ConfigError" in result.output and "not a Mesh or capabilities" in result.output
    missing = runner.invoke(app, ["capabilities", "--app", "nosuchmodule:x"])
    assert missing.exit_code == 2 and "cannot import module" in missing.output


def test_a_capability_in_code_and_in_config_is_an_error(app_dir: Path) -> None:
    config = app_dir / "aios-mesh.toml"
    config.write_text("""
state_dir = "state"
[[capabilities]]
name = "shout"
input = "shoutapp:Text"
output = "shoutapp:Shout"
handler = "shoutapp:shout"
""")
    result = runner.invoke(app, ["capabilities", "--app", "shoutapp:capabilities"])
    assert result.exit_code == 2
    assert "ConfigError" in result.output
    assert "'shout' is declared in the config file and in code" in result.output


def test_the_same_major_twice_in_config_is_an_error(app_dir: Path) -> None:
    """Two majors of one name are served side by side (test_capability_versions); two
    tables for the same major would let one silently win."""
    from aios_mesh.config import config_from_mapping
    from aios_mesh.errors import ConfigError
    from aios_mesh.mesh import Mesh

    table = {"name": "shout", "input": "shoutapp:Text", "output": "shoutapp:Shout",
             "handler": "shoutapp:shout"}
    with pytest.raises(ConfigError, match="declared twice in the config file") as err:
        Mesh(config_from_mapping({"state_dir": str(app_dir / "s"),
                                  "capabilities": [table, {**table, "version": "1.1"}]}))
    assert err.value.hint


def test_brackets_in_messages_survive(config: Path) -> None:
    result = runner.invoke(app, ["invoke", "route-ticket", "--tenant", "nobody", "--config",
                                 str(config), "--json", '{"text": "x"}'])
    assert "[tenants]" in result.output


def test_fail_prints_square_brackets_verbatim(capsys: pytest.CaptureFixture[str]) -> None:
    import typer

    from aios_mesh.cli import _fail
    from aios_mesh.errors import UnknownTenant

    with pytest.raises(typer.Exit):
        _fail(UnknownTenant("tenant 'x' [bold]is[/bold] unknown",
                            hint="add it under [tenants.x] in the config"))
    err = capsys.readouterr().err
    assert "add it under [tenants.x] in the config" in err
    assert "[bold]is[/bold]" in err


def test_audit_verify_without_a_log_fails(tmp_path: Path, config: Path) -> None:
    missing = runner.invoke(app, ["audit", "verify", str(tmp_path / "nope.jsonl")])
    assert missing.exit_code == 2
    assert "no audit log at" in missing.output
    fresh = runner.invoke(app, ["audit", "verify", "--config", str(config)])
    assert fresh.exit_code == 1, fresh.output
    assert "no audit records" in fresh.output


def test_doctor_prints_a_misspelled_key_with_its_suggestion(tmp_path: Path) -> None:
    bad = tmp_path / "aios-mesh.toml"
    bad.write_text("[telemetri]\nlog = false\n")
    result = runner.invoke(app, ["doctor", "--config", str(bad)])
    assert result.exit_code == 2
    assert "did you mean 'telemetry'" in result.output
    assert str(bad) in result.output.replace("\n", "")
