"""Quota windows end to end on a real redis-server: the pipeline refuses a call over a
window limit with the window and its reset, and ``aios-mesh quota show|reset`` reads and
clears what the services drew."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import BaseModel
from typer.testing import CliRunner

from aios_mesh import Mesh, QuotaExceeded
from aios_mesh.capabilities import capability
from aios_mesh.cli import app
from aios_mesh.testing import launcher

pytestmark = pytest.mark.integration
runner = CliRunner()


class Text(BaseModel):
    text: str


class Echo(BaseModel):
    text: str


@capability("echo")
def echo(payload: Text) -> Echo:
    return Echo(text=payload.text)


@pytest.fixture
def config(tmp_path: Path) -> Iterator[Path]:
    with launcher("redis")(tmp_path / "redis") as redis:
        path = tmp_path / "aios-mesh.toml"
        path.write_text(f"""
state_dir = "state"
[backends]
quota = "redis://{redis.address}/0?prefix=win"
[tenants.acme.quota]
calls_per_hour = 3
calls = 100
[tenants.acme.capabilities.echo]
calls_per_day = 50
[tenants.beta]
[telemetry]
lineage = false
decision_events = false
""")
        yield path


def _show(config: Path, *args: str) -> list[dict[str, object]]:
    result = runner.invoke(app, ["quota", "show", *args, "--json", "--config", str(config)])
    assert result.exit_code == 0, result.output
    doc: list[dict[str, object]] = json.loads(result.output)
    return doc


def test_pipeline_refuses_with_the_window_and_the_cli_shows_and_resets(config: Path) -> None:
    with Mesh.from_config(config, capabilities=[echo]) as mesh:
        for i in range(3):
            mesh.invoke("echo", {"text": str(i)}, tenant="acme")
        with pytest.raises(QuotaExceeded) as info:
            mesh.invoke("echo", {"text": "over"}, tenant="acme")
        err = info.value
        assert err.window == "hour"
        assert err.retry_after_s is not None and 0 < err.retry_after_s <= 3600
        assert err.resets_at is not None and err.resets_at.minute == 0
        assert "calls_per_hour" in err.message and "resets at" in err.message

    shown = {(d["tenant"], d["capability"]): d for d in _show(config)}  # another process' view
    assert set(shown) == {("acme", None), ("acme", "echo"), ("beta", None)}
    acme = shown[("acme", None)]
    rows = {(r["metric"], r["window"]): r for r in acme["limits"]}  # type: ignore[union-attr]
    assert rows[("calls", "hour")]["used"] == 3 and rows[("calls", "hour")]["left"] == 0
    assert rows[("calls", "total")] == {"metric": "calls", "window": "total", "limit": 100,
                                        "used": 3, "left": 97, "resets_at": None}
    assert acme["usage"]["day"]["calls"] == 3  # type: ignore[index]
    echo_rows = shown[("acme", "echo")]["limits"]
    assert [(r["metric"], r["window"], r["used"]) for r in echo_rows] == [  # type: ignore[union-attr]
        ("calls", "day", 3)]

    table = runner.invoke(app, ["quota", "show", "acme", "--config", str(config)])
    assert table.exit_code == 0, table.output
    assert "calls_per_hour" in table.output and "never" in table.output
    assert "memory://" not in table.output

    result = runner.invoke(app, ["quota", "reset", "acme", "--window", "hour", "--yes",
                                 "--config", str(config)])
    assert result.exit_code == 0, result.output
    acme = next(d for d in _show(config, "acme") if d["capability"] is None)
    assert acme["usage"]["hour"]["calls"] == 0  # type: ignore[index]
    assert acme["usage"]["total"]["calls"] == 3  # type: ignore[index]
    with Mesh.from_config(config, capabilities=[echo]) as mesh:
        mesh.invoke("echo", {"text": "again"}, tenant="acme")  # the hour has room again

    result = runner.invoke(app, ["quota", "reset", "acme", "--yes", "--config", str(config)])
    assert result.exit_code == 0, result.output
    assert all(w["calls"] == 0 for d in _show(config, "acme")
               for w in d["usage"].values())  # type: ignore[union-attr]


def test_cli_errors_are_typed_and_hinted(config: Path) -> None:
    result = runner.invoke(app, ["quota", "reset", "acme", "--window", "week", "--yes",
                                 "--config", str(config)])
    assert result.exit_code == 2
    assert "unknown quota window 'week'" in result.output
    assert "minute, hour, day, month" in result.output
    result = runner.invoke(app, ["quota", "reset", "acme", "--config", str(config)],
                           input="n\n")
    assert result.exit_code == 1  # not confirmed: nothing reset
