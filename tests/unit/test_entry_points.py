"""Adapters plug into the core through entry points: CLI subcommands (``aios_mesh.cli``),
model loaders (``aios_mesh.model_loaders``) and test launchers (``aios_mesh.testing.launchers``),
each found lazily, with a clear error and install hint when an adapter's extra is missing."""

from __future__ import annotations

import importlib.metadata
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from aios_mesh.cli import app
from aios_mesh.embedded import serving as serving_module
from aios_mesh.embedded.serving import InProcessServing, model_loader
from aios_mesh.errors import ConfigError, NotFound
from aios_mesh.ports import entry_points
from aios_mesh.ports.entry_points import (
    CLI_GROUP,
    LAUNCHERS_GROUP,
    MODEL_LOADERS_GROUP,
    find_entry_points,
    load_entry_point,
)
from aios_mesh.ports.model_loader import source_scheme
from aios_mesh.ports.registry import ModelRef
from aios_mesh.testing import launcher, launcher_names
from aios_mesh.testing import servers as servers_module

HERE = __name__
runner = CliRunner()


def _ep(name: str, value: str, group: str) -> importlib.metadata.EntryPoint:
    return importlib.metadata.EntryPoint(name=name, value=value, group=group)


def _fake_group(monkeypatch: pytest.MonkeyPatch, group: str,
                entries: dict[str, str]) -> None:
    """Make ``find_entry_points(group)`` answer ``entries`` (other groups unchanged)."""
    real = entry_points.find_entry_points

    def fake(wanted: str) -> dict[str, importlib.metadata.EntryPoint]:
        if wanted != group:
            return real(wanted)
        return {name: _ep(name, value, group) for name, value in entries.items()}

    monkeypatch.setattr(entry_points, "find_entry_points", fake)
    monkeypatch.setattr(serving_module, "find_entry_points", fake)
    monkeypatch.setattr(servers_module, "find_entry_points", fake)


# --- the metadata of this distribution ------------------------------------------------------
def test_this_distribution_registers_its_adapters() -> None:
    assert {"serve.bentoml", "serve.triton"} <= set(find_entry_points(CLI_GROUP))
    assert "*" in find_entry_points(MODEL_LOADERS_GROUP)
    assert {"kafka", "s3", "nats", "redis", "postgres", "mlflow", "bentoml", "triton"} \
        <= set(launcher_names())


def test_two_objects_under_one_name_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    eps = [_ep("x", "a.b:c", "g"), _ep("x", "a.b:c", "g"), _ep("x", "d.e:f", "g")]
    monkeypatch.setattr(importlib.metadata, "entry_points", lambda group: eps)
    with pytest.raises(ConfigError) as info:
        find_entry_points("g")
    assert "a.b:c and d.e:f" in info.value.message
    assert info.value.hint


def test_a_missing_extra_names_what_to_install() -> None:
    ep = _ep("x", "aios_mesh_not_installed.mod:obj [fancy]", "g")
    with pytest.raises(ConfigError) as info:
        load_entry_point(ep, what="the fancy thing")
    assert "the fancy thing is not available" in info.value.message
    assert "aios_mesh_not_installed" in info.value.message
    assert info.value.hint == 'pip install "aios-mesh[fancy]"'


# --- CLI subcommands ------------------------------------------------------------------------
def test_serve_help_lists_the_adapters_commands() -> None:
    result = runner.invoke(app, ["serve", "--help"])
    assert result.exit_code == 0, result.output
    assert "bentoml" in result.output
    assert "triton" in result.output
    options = runner.invoke(app, ["serve", "triton", "--help"])
    assert options.exit_code == 0, options.output
    for option in ("--registry", "--http-port", "--grpc-port", "--python"):
        assert option in options.output


def test_the_cli_starts_without_importing_adapters() -> None:
    code = ("import sys; from typer.testing import CliRunner; from aios_mesh.cli import app; "
            "r = CliRunner().invoke(app, ['--help']); assert r.exit_code == 0, r.output; "
            "print(sorted(m for m in sys.modules if m.startswith('aios_mesh_')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=Path(__file__).resolve().parents[2])
    assert out.stdout.strip() == "[]"


def hello(name: str) -> None:
    """Say hello (a plugin command)."""
    print(f"hello {name}")


def broken(name: str) -> None:
    """Raise a typed error."""
    raise NotFound(f"no model {name}", hint="register it first")


def test_a_plugin_command_runs_and_its_errors_are_typed(
        monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_group(monkeypatch, CLI_GROUP, {"serve.hello": f"{HERE}:hello",
                                         "serve.broken": f"{HERE}:broken",
                                         "other.ignored": f"{HERE}:hello"})
    listed = runner.invoke(app, ["serve", "--help"])
    assert "hello" in listed.output
    assert "ignored" not in listed.output
    ok = runner.invoke(app, ["serve", "hello", "world"])
    assert ok.exit_code == 0, ok.output
    assert "hello world" in ok.output
    failed = runner.invoke(app, ["serve", "broken", "m@champion"])
    assert failed.exit_code == 2
    assert "NotFound" in failed.output
    assert "register it first" in failed.output


def test_a_command_whose_extra_is_missing_says_what_to_install(
        monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_group(monkeypatch, CLI_GROUP,
                {"serve.ray": "aios_mesh_not_installed.serve:command [ray]"})
    listed = runner.invoke(app, ["serve", "--help"])
    assert listed.exit_code == 0, listed.output
    assert "ray" in listed.output
    assert "not installed" in listed.output
    run = runner.invoke(app, ["serve", "ray", "m@champion", "--port", "9000"])
    assert run.exit_code == 2
    assert 'pip install "aios-mesh[ray]"' in run.output


# --- model loaders --------------------------------------------------------------------------
@pytest.mark.parametrize(("source", "scheme"), [
    ("models:/m/1", "models"), ("runs:/abc/model", "runs"), ("S3://bucket/m", "s3"),
    ("mlflow-artifacts:/1/m", "mlflow-artifacts"), ("/abs/folder", "file"),
    ("relative/folder", "file"), ("file:///abs/folder", "file"), ("C:\\models\\m", "file"),
])
def test_source_scheme(source: str, scheme: str) -> None:
    assert source_scheme(source) == scheme


def onnx_loader(ref: ModelRef) -> Any:
    return lambda batch: [{"loader": "onnx", "model": ref.name, **item} for item in batch]


def any_loader(ref: ModelRef) -> Any:
    return lambda batch: [{"loader": "any", **item} for item in batch]


async def test_a_source_goes_to_the_loader_of_its_scheme(
        monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_group(monkeypatch, MODEL_LOADERS_GROUP, {"onnx": f"{HERE}:onnx_loader",
                                                   "*": f"{HERE}:any_loader"})
    assert model_loader("onnx://m.onnx") is onnx_loader
    assert model_loader("models:/m/1") is any_loader
    serving = InProcessServing()
    pred = await serving.infer(ModelRef("m", "1", source="onnx://m.onnx"), {"x": 1})
    assert pred.output == {"loader": "onnx", "model": "m", "x": 1}


def test_no_loader_for_a_source_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_group(monkeypatch, MODEL_LOADERS_GROUP, {"onnx": f"{HERE}:onnx_loader"})
    with pytest.raises(ConfigError) as info:
        model_loader("models:/m/1")
    assert "no model loader for models:" in info.value.message
    assert 'pip install "aios-mesh[mlflow]"' in (info.value.hint or "")


def test_the_mlflow_loader_takes_any_scheme() -> None:
    from aios_mesh_mlflow.loading import load_predictor

    assert model_loader("models:/m/1") is load_predictor
    assert model_loader("/some/folder") is load_predictor


# --- test launchers -------------------------------------------------------------------------
def test_launcher_finds_the_adapters_launcher() -> None:
    from aios_mesh_kafka.testing import moto_server, tansu_broker
    from aios_mesh_postgres.testing import postgres_database

    assert launcher("kafka") is tansu_broker
    assert launcher("s3") is moto_server
    assert launcher("postgres") is postgres_database


def test_an_unknown_launcher_lists_the_installed_ones() -> None:
    with pytest.raises(ConfigError) as info:
        launcher("cassandra")
    assert "cassandra" in info.value.message
    assert "kafka" in (info.value.hint or "")
    assert LAUNCHERS_GROUP in (info.value.hint or "")


def test_a_launcher_whose_extra_is_missing_says_what_to_install(
        monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_group(monkeypatch, LAUNCHERS_GROUP,
                {"ray": "aios_mesh_not_installed.testing:ray_cluster [ray]"})
    with pytest.raises(ConfigError) as info:
        launcher("ray")
    assert info.value.hint == 'pip install "aios-mesh[ray]"'
