"""Shadow, compare, promote and rollback end to end: the CLI moves a real MLflow server's alias,
the next mesh answers from the version it now names, and both moves are in the audit log."""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from pathlib import Path

import mlflow.pyfunc
import pytest
from aios_mesh_mlflow.testing import shared_mlflow_servers, stop_shared_mlflow_servers
from mlflow.tracking._tracking_service.utils import _use_tracking_uri
from typer.testing import CliRunner

from aios_mesh import Mesh
from aios_mesh.backends import load_adapter
from aios_mesh.cli import app
from tests.integration.rollout_models import Shout

pytestmark = pytest.mark.integration

MODELS = "tests.integration.rollout_models"
QUESTIONS = ["ab", "abc", "hello", "world"]  # v2 agrees with v1 on the short ones


@pytest.fixture(scope="module")
def server_url(request: pytest.FixtureRequest) -> str:
    request.session.addfinalizer(stop_shared_mlflow_servers)
    return shared_mlflow_servers("sqlite", "postgresql")["sqlite"]


def _champion(server_url: str, name: str, tmp: Path) -> str:
    async def read() -> str:
        registry = load_adapter("registry", f"mlflow+{server_url}", base_dir=tmp)
        try:
            return (await registry.resolve(f"{name}@champion")).version
        finally:
            await registry.aclose()
    return asyncio.run(read())


@pytest.fixture
def config(server_url: str, tmp_path: Path) -> tuple[Path, str]:
    name = f"rollout-{uuid.uuid4().hex[:8]}"

    async def register() -> None:
        registry = load_adapter("registry", f"mlflow+{server_url}", base_dir=tmp_path)
        try:
            experiment = await registry.ensure_experiment("rollout-tests")
            # log_model only speaks to the global tracking URI: scoped to this block.
            with _use_tracking_uri(server_url), mlflow.start_run(experiment_id=experiment):
                for only_short in (False, True):
                    info = mlflow.pyfunc.log_model(name=f"shout-{int(only_short)}",
                                                   python_model=Shout(only_short),
                                                   pip_requirements=["pandas"])
                    await registry.register(name, info.model_uri)
            await registry.set_alias(name, "champion", "1")
            await registry.set_alias(name, "challenger", "2")
        finally:
            await registry.aclose()

    asyncio.run(register())
    path = tmp_path / "aios-mesh.toml"
    path.write_text(f"""
state_dir = "{tmp_path / 'state'}"
[tenants.acme]
[backends]
registry = "mlflow+{server_url}"
[telemetry]
lineage = false
decision_events = false
[cache]
alias_ttl_s = 0
[[capabilities]]
name = "shout"
input = "{MODELS}:Question"
output = "{MODELS}:Answer"
model = "{name}@champion"
canary = {{ model = "{name}@challenger", shadow = true }}
""")
    return path, name


def _cli(*args: str) -> str:
    result = CliRunner().invoke(app, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def test_shadow_compare_promote_rollback_move_the_mlflow_alias(
        config: tuple[Path, str], server_url: str, tmp_path: Path) -> None:
    path, name = config
    with Mesh.from_config(path) as mesh:
        answers = [mesh.invoke("shout", {"text": q}, tenant="acme") for q in QUESTIONS]
        assert mesh.flush()
    assert [a.output.text for a in answers] == [q.upper() for q in QUESTIONS]
    assert {a.record.model["version"] for a in answers} == {"1"}  # callers see the primary

    report = _cli("compare", "shout", "--config", str(path))
    rows = {m.group(1): m.group(2) for m in re.finditer(r"│ (shadow \w+)\s*│ (\S+)", report)}
    assert rows["shadow calls"] == "4" and rows["shadow errors"] == "0"
    assert rows["shadow agreement"] == "0.5"  # v2 agrees on two of the four questions

    for action, actor, moved, now in (("promote", "ana", "v1 → v2", "2"),
                                      ("rollback", "ben", "v2 → v1", "1")):
        assert moved in _cli(action, "shout", "--actor", actor, "--config", str(path))
        assert _champion(server_url, name, tmp_path) == now  # the server's alias moved
        with Mesh.from_config(path) as mesh:  # and a new mesh answers from that version
            answer = mesh.invoke("shout", {"text": "hello"}, tenant="acme")
        assert answer.record.model["version"] == now

    # Both moves are in the hash-chained audit log, with who made them.
    lines = [json.loads(x) for x in (tmp_path / "state" / "audit.jsonl").read_text().splitlines()]
    moves = [e["record"] for e in lines if e["record"].get("kind") == "alias_change"]
    assert [(m["action"], m["actor"], m["from_version"], m["to_version"]) for m in moves] == \
        [("promote", "ana", "1", "2"), ("rollback", "ben", "2", "1")]
    assert all(m["model"] == name and m["alias"] == "champion" for m in moves)
    _cli("audit", "verify", "--config", str(path))


def test_rollback_without_a_promote_is_a_typed_error(config: tuple[Path, str],
                                                      tmp_path: Path) -> None:
    path, _ = config
    result = CliRunner().invoke(app, ["rollback", "shout", "--config", str(path)])
    assert result.exit_code == 2
    assert "NotFound" in result.output and "no promote of shout" in result.output


def test_a_gated_promote_is_refused_on_evidence_and_the_report_is_on_the_version(
        config: tuple[Path, str], server_url: str, tmp_path: Path) -> None:
    """Gates on a real MLflow server: v2 is worse on the labelled set, so the promote is
    refused; the gate report is in the audit log and kept with version 2 in MLflow (an
    artifact of its run, tagged on the version); --force then promotes, recorded as forced."""
    path, name = config
    path.write_text(path.read_text() + "gates = { min_quality = 0.9, min_samples = 4 }\n")
    golden = tmp_path / "golden.jsonl"
    golden.write_text("".join(json.dumps({"input": {"text": q}, "expected": {"text": q.upper()}})
                              + "\n" for q in QUESTIONS))
    refused = CliRunner().invoke(app, ["promote", "shout", "--eval", str(golden), "--config",
                                       str(path)])
    assert refused.exit_code == 2, refused.output
    assert "GateFailed" in refused.output and "min_quality" in refused.output
    assert _champion(server_url, name, tmp_path) == "1"  # the alias did not move

    async def stored() -> dict[str, object] | None:
        registry = load_adapter("registry", f"mlflow+{server_url}", base_dir=tmp_path)
        try:
            return await registry.get_document(name, "2", "promotion.gate")
        finally:
            await registry.aclose()

    report = asyncio.run(stored())
    assert report is not None and report["passed"] is False
    assert report["candidate"]["quality"] == 0.5 and report["champion"]["quality"] == 1.0

    assert "v1 → v2" in _cli("promote", "shout", "--eval", str(golden), "--force",
                             "--actor", "ops", "--config", str(path))
    assert _champion(server_url, name, tmp_path) == "2"
    lines = [json.loads(x) for x in (tmp_path / "state" / "audit.jsonl").read_text().splitlines()]
    gates = [e["record"] for e in lines if e["record"].get("kind") == "promotion_gate"]
    assert [(g["passed"], g["forced"]) for g in gates] == [(False, False), (False, True)]
