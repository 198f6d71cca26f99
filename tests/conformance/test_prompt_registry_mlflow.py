"""The MLflow adapter passes the prompt-registry conformance suite on a local sqlite file (the
embedded default, ``mlflow+sqlite://``) and against a real ``mlflow server``."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aios_mesh_mlflow import MlflowRegistry
from aios_mesh_mlflow.testing import shared_mlflow_servers, stop_shared_mlflow_servers

from aios_mesh.backends import load_adapter
from aios_mesh.errors import InvalidInput
from aios_mesh.testing.conformance.prompts import (
    PromptRegistryAliases,
    PromptRegistryBasic,
    PromptRegistryListing,
)


@pytest.fixture(scope="module")
def sqlite_base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One database file for the module (a fresh file costs seconds of migrations)."""
    return tmp_path_factory.mktemp("mlflow-prompts")


@pytest.fixture(scope="module")
def server_url(request: pytest.FixtureRequest) -> str:
    """A real ``mlflow server`` on a sqlite store, shared with other modules of the run."""
    request.session.addfinalizer(stop_shared_mlflow_servers)
    return shared_mlflow_servers("sqlite")["sqlite"]


@pytest.mark.integration
class TestMlflowSqlitePrompts(PromptRegistryBasic, PromptRegistryAliases,
                              PromptRegistryListing):
    @pytest.fixture
    async def adapter(self, sqlite_base: Path) -> AsyncIterator[MlflowRegistry]:
        registry = load_adapter("registry", "mlflow+sqlite:///registry/mlflow.db",
                                base_dir=sqlite_base)
        assert isinstance(registry, MlflowRegistry)
        yield registry
        await registry.aclose()

    async def test_a_name_is_a_model_or_a_prompt(self, adapter: MlflowRegistry) -> None:
        await adapter.register("conf-model-not-prompt", "s3://b/m")
        with pytest.raises(InvalidInput) as info:
            await adapter.register_prompt("conf-model-not-prompt", "x")
        assert info.value.hint
        with pytest.raises(InvalidInput):
            await adapter.resolve_prompt("conf-model-not-prompt/1")


@pytest.mark.integration
class TestMlflowServerPrompts(PromptRegistryBasic, PromptRegistryAliases,
                              PromptRegistryListing):
    @pytest.fixture
    async def adapter(self, server_url: str, tmp_path: Path) -> AsyncIterator[MlflowRegistry]:
        registry = load_adapter("registry", f"mlflow+{server_url}", base_dir=tmp_path)
        assert isinstance(registry, MlflowRegistry)
        yield registry
        await registry.aclose()
