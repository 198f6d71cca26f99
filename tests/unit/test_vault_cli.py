"""``aios-mesh vault keygen|rotate`` on the vault of a config folder's shared state (sqlite),
the documented rotation procedure end to end: new key first, rotate, drop the old key."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import BaseModel
from typer.testing import CliRunner

from aios_mesh import CapabilitySpec, Mesh
from aios_mesh.cli import app
from aios_mesh.redaction.vault import KeyRing

runner = CliRunner()


class Mail(BaseModel):
    text: str


def _echo(mail: Mail) -> Mail:
    return Mail(text=f"re: {mail.text}")


SPEC = CapabilitySpec(name="echo", input=Mail, output=Mail, handler=_echo, external=True)


@pytest.fixture
def config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("AIOS_MESH_VAULT_KEYS", raising=False)
    path = tmp_path / "aios-mesh.toml"
    path.write_text('[tenants.acme]\n[telemetry]\nlineage = false\ndecision_events = false\n'
                    '[redaction]\nmode = "tokenize"\nvault = "state"\n'
                    'vault_key_file = "vault.keys"\n')
    return path


def _tokens(config: Path, text: str) -> tuple[str, str]:
    """The token sent for ``text`` and the answer mapped back, by a fresh mesh."""
    with Mesh.from_config(config, capabilities=[SPEC]) as mesh:
        out = mesh.invoke("echo", {"text": text}, tenant="acme").output.text
        sent = mesh.run_sync(mesh.parts.redactor.tokenize({"t": text}, tenant="acme"))
    return sent.payload["t"], out


def test_keygen_prints_a_key_and_rotation_retires_the_old_one(config: Path) -> None:
    printed = runner.invoke(app, ["vault", "keygen"])
    assert printed.exit_code == 0, printed.output
    assert len(KeyRing.parse(printed.output, source="stdout").ids) == 1

    keys = config.parent / "vault.keys"
    first = runner.invoke(app, ["vault", "keygen", "--key-file", str(keys)])
    assert first.exit_code == 0, first.output
    assert keys.stat().st_mode & 0o077 == 0
    old_token, out = _tokens(config, "ann@acme.example")
    assert out == "re: ann@acme.example" and "ann" not in old_token

    added = runner.invoke(app, ["vault", "keygen", "--key-file", str(keys)])
    assert added.exit_code == 0 and "2 key(s)" in added.output
    new_token, _ = _tokens(config, "bob@acme.example")  # sealed under the new key
    done = runner.invoke(app, ["vault", "rotate", "--json"])
    assert done.exit_code == 0, done.output
    report = json.loads(done.output)
    assert (report["resealed"], report["current"], report["skipped"]) == (1, 1, 0)
    assert report["key"] == KeyRing.from_file(keys).ids[0]

    keys.write_text(keys.read_text().splitlines()[0] + "\n")  # drop the old key
    with Mesh.from_config(config, capabilities=[SPEC]) as mesh:
        back = mesh.run_sync(mesh.parts.redactor.restore(f"{old_token} {new_token}",
                                                         tenant="acme"))
    assert back == "ann@acme.example bob@acme.example"


def test_rotate_without_the_key_fails_with_a_hint(config: Path) -> None:
    result = runner.invoke(app, ["vault", "rotate"])
    assert result.exit_code == 2
    assert "VaultKeyError" in result.output and "vault keygen" in result.output
