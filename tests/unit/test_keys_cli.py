"""``aios-mesh keys create|list|revoke`` on the embedded state of a config folder."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from typer.testing import CliRunner

from aios_mesh.cli import app
from aios_mesh.errors import ConfigError
from aios_mesh.keys_cli import parse_duration

runner = CliRunner()


@given(st.integers(1, 10_000), st.sampled_from(list("smhdw")))
def test_durations(n: int, unit: str) -> None:
    seconds = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}[unit]
    assert parse_duration(f"{n}{unit}") == n * seconds


@given(st.text(max_size=12))
def test_anything_else_is_not_a_duration(text: str) -> None:
    if re.fullmatch(r"\s*\d+(\.\d+)?[smhdw]\s*", text) and float(text.strip()[:-1]) > 0:
        assert parse_duration(text) > 0
        return
    with pytest.raises(ConfigError) as info:
        parse_duration(text)
    assert info.value.hint and "90d" in info.value.hint


@pytest.fixture
def config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "aios-mesh.toml"
    path.write_text('state_dir = "state"\n[tenants.acme]\n[tenants.globex]\n')
    return path


def keys(config: Path, *args: str) -> tuple[int, str]:
    result = runner.invoke(app, ["keys", *args, "--config", str(config)])
    return result.exit_code, result.output


def test_create_list_revoke(config: Path) -> None:
    code, out = keys(config, "create", "acme", "bot", "--role", "reviewer", "--limit",
                     "calls_per_minute=5", "--expires-in", "90d", "--scope", "extract")
    assert code == 0, out
    key = out.strip().splitlines()[-1]
    assert key.startswith("amk_") and "shown only now" in out
    code, out = keys(config, "list", "--json")
    listed = json.loads(out)
    assert code == 0 and key not in out and len(listed) == 1
    row = listed[0]
    assert row["id"] == key[:16] and row["roles"] == ["reviewer"]
    assert row["limits"] == {"calls_per_minute": 5} and row["scopes"] == ["extract"]
    assert row["expires_at"] - row["created_at"] == pytest.approx(90 * 86400, abs=5)
    code, out = keys(config, "list")
    assert code == 0 and key[:16] in out
    code, out = keys(config, "revoke", key[:16])
    assert code == 0 and "revoked" in out
    assert json.loads(keys(config, "list", "--json")[1]) == []
    assert len(json.loads(keys(config, "list", "--all", "--json")[1])) == 1
    code, out = keys(config, "list", "globex")
    assert code == 0 and "no keys" in out


@pytest.mark.parametrize(("args", "says"), [
    (["create", "initech", "bot"], "not declared"),
    (["create", "acme", "bot", "--limit", "calls_per_minit=5"], "calls_per_minute"),
    (["create", "acme", "bot", "--limit", "calls_per_minute"], "NAME=VALUE"),
    (["create", "acme", "bot", "--role", "root"], "unknown role"),
    (["create", "acme", "bot", "--expires-in", "soon"], "not a duration"),
    (["revoke", "amk_000000000000"], "no API key"),
    (["revoke", "hunter2"], "not an API key id"),
])
def test_bad_input_is_a_typed_error_with_a_hint(config: Path, args: list[str], says: str
                                                ) -> None:
    code, out = keys(config, *args)
    assert code == 2 and says in out and "hint" in out
    assert "Traceback" not in out
