"""Prompts as versioned artifacts end to end, on the real things: the prompts live in a real
``mlflow server``'s prompt registry, the LLM is Gemma 3 270M on llama.cpp in process, and
every step goes through the ``aios-mesh prompts`` CLI or a Mesh built from a config file.

register (text, then a chat) → show → a call whose record names the version and the usage
the engine reported → lock (the pin holds while the alias moves) → promote and rollback (the
server's alias moves, the lock follows, both in the audit log) → list; and an unknown alias is
a recorded NotFound."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest
from aios_mesh_mlflow.testing import shared_mlflow_servers, stop_shared_mlflow_servers
from pydantic import BaseModel
from typer.testing import CliRunner

from aios_mesh import Mesh, NotFound, TextOutput
from aios_mesh.cli import app
from aios_mesh.resolver import prompt_specs

pytestmark = pytest.mark.integration

HERE = "tests.integration.test_prompts_mlflow"
CHAT = [{"role": "system", "content": "Answer with one word."},
        {"role": "user", "content": "Which team handles this ticket: {{ text }}"}]


class Ticket(BaseModel):
    """The input of the capability under test (its fields are the template's variables)."""

    text: str


@pytest.fixture(scope="module")
def server_url(request: pytest.FixtureRequest) -> str:
    request.session.addfinalizer(stop_shared_mlflow_servers)
    return shared_mlflow_servers("sqlite")["sqlite"]


@pytest.fixture(scope="module")
def config(server_url: str, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    tmp = tmp_path_factory.mktemp("prompts-mlflow")
    name = f"triage-{uuid.uuid4().hex[:8]}"
    path = tmp / "aios-mesh.toml"
    path.write_text(f"""
state_dir = "{tmp / 'state'}"
lock_file = "{tmp / 'aios-mesh.lock'}"
[tenants.acme]
[backends]
registry = "mlflow+{server_url}"
[backends.serving_named]
llm = "llamacpp://gemma3-270m?n_ctx=512"
[telemetry]
lineage = false
decision_events = false
[cache]
alias_ttl_s = 0
[[capabilities]]
name = "triage"
input = "{HERE}:Ticket"
output = "aios_mesh.generation:TextOutput"
model = "{name}-llm@champion"
serving = "llm"
generate = {{ prompt = "prompts:/{name}@production", max_tokens = 4 }}
[[capabilities]]
name = "triage-staging"
input = "{HERE}:Ticket"
output = "aios_mesh.generation:TextOutput"
model = "{name}-llm@champion"
serving = "llm"
generate = {{ prompt = "prompts:/{name}@staging", max_tokens = 4 }}
""")
    return path, name


def _cli(*args: str) -> str:
    result = CliRunner().invoke(app, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def _ask(path: Path, capability: str = "triage") -> tuple[str, dict[str, object]]:
    with Mesh.from_config(path) as mesh:
        result = mesh.invoke(capability, {"text": "my invoice was charged twice"},
                             tenant="acme")
    assert isinstance(result.output, TextOutput)
    return result.output.text, result.record.to_dict()


def test_register_lock_promote_rollback_on_a_real_server(config: tuple[Path, str],
                                                         tmp_path: Path) -> None:
    path, name = config
    (tmp_path / "v1.txt").write_text("Which team handles this ticket: {{ text }}")
    (tmp_path / "v2.json").write_text(json.dumps(CHAT, indent=2))
    conf = ("--config", str(path))
    assert f"prompts:/{name}/1 ({name}@production)" in _cli(
        "prompts", "register", name, "--template-file", str(tmp_path / "v1.txt"),
        "--alias", "production", "-m", "first", *conf)
    assert f"prompts:/{name}/2" in _cli("prompts", "register", name, "-f",
                                        str(tmp_path / "v2.json"), *conf)
    shown = json.loads(_cli("prompts", "show", f"prompts:/{name}@production", "--json", *conf))
    assert (shown["version"], shown["variables"], shown["pinned_version"]) == ("1", ["text"],
                                                                              None)
    with Mesh.from_config(path) as mesh:  # the LLM, registered like a model
        # the engine serves what its serving URL names; the source only has to pass the
        # server's check (an empty path, as in llamacpp://gemma3-270m, is refused there)
        ref = mesh.run_sync(mesh.ports.registry.register(f"{name}-llm",
                                                         "llamacpp:///gemma3-270m"))
        mesh.run_sync(mesh.ports.registry.set_alias(f"{name}-llm", "champion", ref.version))

    # A call: Gemma answers, the record names prompt version 1 and the engine's usage.
    text, record = _ask(path)
    assert isinstance(text, str)
    assert record["prompt"] == {"name": name, "version": "1", "alias": "production"}
    usage = record["usage"]
    assert isinstance(usage, dict) and usage["input_tokens"] > 5 and not usage["estimated"]

    # Lock: the pin holds while the alias moves on the server behind the mesh's back.
    with Mesh.from_config(path) as mesh:
        specs = prompt_specs(mesh.capabilities.values())
        assert f"{name}@production" in specs
        mesh.run_sync(mesh.resolver.lock_all([f"{name}-llm@champion"],
                                             prompts=[f"{name}@production"]))
    _cli("prompts", "alias", name, "production", "2", *conf)
    assert _ask(path)[1]["prompt"] == {"name": name, "version": "1", "alias": "production"}
    assert json.loads(_cli("prompts", "show", f"{name}@production", "--json", *conf))[
        "pinned_version"] == "1"
    _cli("prompts", "alias", name, "production", "1", *conf)

    # Promote and roll back through the CLI: the server's alias moves, the pin follows.
    assert "v1 → v2" in _cli("prompts", "promote", "triage", "--version", "2", "--actor",
                             "ana", *conf)
    assert _ask(path)[1]["prompt"] == {"name": name, "version": "2", "alias": "production"}
    lock = json.loads(path.with_name("aios-mesh.lock").read_text())
    assert lock["prompts"][f"{name}@production"]["version"] == "2"
    assert "v2 → v1" in _cli("prompts", "rollback", "triage", "--actor", "ben", *conf)
    assert _ask(path)[1]["prompt"]["version"] == "1"

    listed = {p["name"]: p for p in json.loads(_cli("prompts", "list", "--json", *conf))}
    assert listed[name]["latest_version"] == "2"
    assert listed[name]["aliases"] == {"production": "1"}
    assert f"triage ({name}@production, pinned v1)" in listed[name]["used_by"]

    lines = [json.loads(x) for x in (path.parent / "state" / "audit.jsonl").read_text()
             .splitlines()]
    moves = [e["record"] for e in lines if e["record"].get("kind") == "alias_change"]
    assert [(m["action"], m["target"], m["prompt"], m["from_version"], m["to_version"],
             m["actor"]) for m in moves] == [("promote", "prompt", name, "1", "2", "ana"),
                                            ("rollback", "prompt", name, "2", "1", "ben")]
    _cli("audit", "verify", *conf)


def test_an_unknown_prompt_alias_is_a_recorded_not_found(config: tuple[Path, str],
                                                         tmp_path: Path) -> None:
    path, name = config
    with Mesh.from_config(path) as mesh:
        with pytest.raises(NotFound) as info:
            mesh.invoke("triage-staging", {"text": "x"}, tenant="acme")
        assert info.value.hint and "staging" in info.value.message and name in info.value.message
    lines = [json.loads(x)["record"] for x in
             (path.parent / "state" / "audit.jsonl").read_text().splitlines()]
    failed = [r for r in lines if isinstance(r.get("capability"), dict)
              and r["capability"]["name"] == "triage-staging"]
    assert failed and failed[-1]["error"]["code"] == NotFound.code
    assert failed[-1]["outcome"] == NotFound.outcome


def test_bad_template_files_and_names_are_typed_cli_errors(config: tuple[Path, str],
                                                          tmp_path: Path) -> None:
    path, _ = config
    conf = ("--config", str(path))
    runner = CliRunner()
    missing = runner.invoke(app, ["prompts", "register", "p", "-f",
                                  str(tmp_path / "nope.txt"), *conf])
    assert missing.exit_code == 2 and "ConfigError" in missing.output
    (tmp_path / "bad.json").write_text('[{"role": "user"}]')
    bad = runner.invoke(app, ["prompts", "register", f"p-{uuid.uuid4().hex[:6]}", "-f",
                              str(tmp_path / "bad.json"), *conf])
    assert bad.exit_code == 2 and "InvalidInput" in bad.output and "hint" in bad.output
    reserved = runner.invoke(app, ["prompts", "alias", "p", "latest", "1", *conf])
    assert reserved.exit_code == 2 and "reserved" in reserved.output
