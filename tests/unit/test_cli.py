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
