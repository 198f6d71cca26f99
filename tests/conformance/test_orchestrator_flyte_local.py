"""flytekit local execution passes the Orchestrator conformance suite."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from aios_mesh.backends import load_adapter
from aios_mesh.errors import InvalidInput, NotFound
from aios_mesh.ports.orchestrator import ExecutionStatus
from aios_mesh.testing.conformance.orchestrator import OrchestratorBasic

ADAPTERS = str(Path(__file__).resolve().parents[2] / "adapters")

WF = "aios_mesh.testing.conformance.workflows"


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """flytekit must never touch the real ~/.flyte in tests."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    return home


class TestFlyteLocal(OrchestratorBasic):
    @pytest.fixture
    async def adapter(self, tmp_path: Path, home: Path) -> AsyncIterator[Any]:
        orchestrator = load_adapter("orchestrator", "flyte-local://", base_dir=tmp_path / "state")
        yield orchestrator
        await orchestrator.aclose()

    async def test_local_cache_lives_under_base_dir(self, adapter: Any, tmp_path: Path,
                                                    home: Path) -> None:
        first = await adapter.run(f"{WF}:cached_square_wf", {"x": 12})
        again = await adapter.run(f"{WF}:cached_square_wf", {"x": 12})
        assert first.outputs == again.outputs == {"o0": 144}
        cache = tmp_path / "state" / "flyte-local-cache"
        assert cache.is_dir()
        assert any(cache.iterdir())
        assert not (home / ".flyte" / "local-cache").exists()

    async def test_concurrent_runs_all_finish(self, adapter: Any) -> None:
        runs = await asyncio.gather(*(adapter.run(f"{WF}:add_wf", {"a": i, "b": i})
                                      for i in range(4)))
        assert [r.outputs["o0"] for r in runs] == [0, 2, 4, 6]
        assert len({r.id for r in runs}) == 4

    async def test_unknown_input_name_is_invalid_input(self, adapter: Any) -> None:
        with pytest.raises(InvalidInput, match="no input"):
            await adapter.run(f"{WF}:add_wf", {"a": 1, "c": 2})

    async def test_bad_input_type_fails_the_execution(self, adapter: Any) -> None:
        execution = await adapter.run(f"{WF}:add_wf", {"a": "one", "b": 2})
        assert execution.status is ExecutionStatus.FAILED
        assert execution.error

    async def test_missing_module_and_bad_reference(self, adapter: Any) -> None:
        with pytest.raises(NotFound, match="no module"):
            await adapter.run("no_such_module_xyz:wf", {})
        with pytest.raises(InvalidInput, match="module:workflow"):
            await adapter.run("add_wf", {})
        with pytest.raises(InvalidInput, match="not a flytekit"):
            await adapter.run(f"{WF}:DivMod", {})


def test_custom_cache_folder_from_url(tmp_path: Path) -> None:
    orchestrator = load_adapter("orchestrator", "flyte-local:///my-cache?cache=false",
                                base_dir=tmp_path)
    assert orchestrator.cache_dir == tmp_path / "my-cache"
    assert orchestrator.cache is False


def test_loading_the_adapter_does_not_import_flytekit(tmp_path: Path) -> None:
    code = ("import sys; from pathlib import Path; from aios_mesh.backends import load_adapter; "
            "load_adapter('orchestrator', 'flyte-local://', base_dir=Path('.')); "
            "load_adapter('orchestrator', 'flyte://127.0.0.1:30080', base_dir=Path('.')); "
            "print(any(m == 'flytekit' or m.startswith('flytekit.') for m in sys.modules))")
    env = {**os.environ, "PYTHONPATH": ADAPTERS, "HOME": str(tmp_path)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, env=env, cwd=tmp_path)
    assert out.stdout.strip() == "False"
