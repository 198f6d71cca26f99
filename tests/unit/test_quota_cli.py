"""``aios-mesh quota`` on the embedded store: it says that a fresh process drew nothing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from aios_mesh.cli import app

runner = CliRunner()


def test_show_on_memory_says_what_it_cannot_see(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "aios-mesh.toml").write_text(
        "state_dir = 'state'\n[tenants.acme.quota]\ncost_per_month = 10.0\n[tenants.beta]\n")
    result = runner.invoke(app, ["quota", "show"])
    assert result.exit_code == 0, result.output
    assert "cost_per_month" in result.output and "unlimited" in result.output
    assert "memory://" in result.output and "one process" in result.output
    doc = json.loads(runner.invoke(app, ["quota", "show", "beta", "--json"]).output)
    assert [(d["tenant"], d["limits"], d["usage"]["total"]["calls"]) for d in doc] == [
        ("beta", [], 0)]
    result = runner.invoke(app, ["quota", "reset", "acme", "--window", "month", "-y"])
    assert result.exit_code == 0 and "current month window" in result.output
