"""The MLflow registry adapter passes the registry conformance suite on a local sqlite file,
against a real ``mlflow server`` (sqlite store) and against one on PostgreSQL."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aios_mesh_mlflow import TRACKING_URI_TAG, MlflowRegistry
from aios_mesh_mlflow.testing import (
    prestart_mlflow_servers,
    shared_mlflow_servers,
    stop_shared_mlflow_servers,
)

from aios_mesh.backends import load_adapter, parse_url
from aios_mesh.errors import BackendUnavailable, ConfigError, InvalidInput, NotFound
from aios_mesh.testing.conformance.registry import (
    RegistryAliases,
    RegistryBasic,
    RegistryDocuments,
)
from aios_mesh.testing.processes import free_port

SERVER_FIXTURES = frozenset({"server_url", "pg_server_url"})


def prestart_servers_if_selected(request: pytest.FixtureRequest) -> None:
    """Let the servers boot while the sqlite tests run, if this session will need them."""
    if any(SERVER_FIXTURES & set(getattr(item, "fixturenames", ()))
           for item in request.session.items):
        prestart_mlflow_servers("sqlite", "postgresql")
        request.session.addfinalizer(stop_shared_mlflow_servers)


@pytest.fixture(scope="module")
def sqlite_url(tmp_path_factory: pytest.TempPathFactory,
               request: pytest.FixtureRequest) -> tuple[str, Path]:
    """One database file for the module (a fresh file costs ~3 s of migrations)."""
    prestart_servers_if_selected(request)
    return "mlflow+sqlite:///registry/mlflow.db", tmp_path_factory.mktemp("mlflow-sqlite")


@pytest.fixture(scope="module")
def server_url(request: pytest.FixtureRequest) -> str:
    """A real ``mlflow server`` on a sqlite store (shared with other modules of the run;
    both servers start concurrently on first use; stopped when the session ends)."""
    request.session.addfinalizer(stop_shared_mlflow_servers)
    return shared_mlflow_servers("sqlite", "postgresql")["sqlite"]


@pytest.fixture(scope="module")
def pg_server_url(request: pytest.FixtureRequest) -> str:
    """A real ``mlflow server`` on a fresh PostgreSQL database (127.0.0.1:5432, dropped when
    the session ends)."""
    request.session.addfinalizer(stop_shared_mlflow_servers)
    return shared_mlflow_servers("sqlite", "postgresql")["postgresql"]


@pytest.mark.integration
class TestMlflowSqlite(RegistryBasic, RegistryAliases, RegistryDocuments):
    @pytest.fixture
    async def adapter(self, sqlite_url: tuple[str, Path]) -> AsyncIterator[MlflowRegistry]:
        url, base = sqlite_url
        registry = load_adapter("registry", url, base_dir=base)
        assert isinstance(registry, MlflowRegistry)
        yield registry
        await registry.aclose()

    async def test_database_and_artifact_root_live_under_base_dir(
            self, adapter: MlflowRegistry, sqlite_url: tuple[str, Path]) -> None:
        _, base = sqlite_url
        ref = await adapter.register(f"m-{uuid.uuid4().hex[:8]}", "s3://b/m")
        assert (base / "registry" / "mlflow.db").is_file()
        assert adapter.artifact_root == base / "registry" / "artifacts"
        assert ref.tags[TRACKING_URI_TAG] == f"sqlite:///{base / 'registry' / 'mlflow.db'}"
        exp = await adapter.ensure_experiment("conformance")
        assert exp == await adapter.ensure_experiment("conformance")
        assert (base / "registry" / "artifacts").is_dir()


@pytest.mark.integration
class TestMlflowServer(RegistryBasic, RegistryAliases, RegistryDocuments):
    @pytest.fixture
    async def adapter(self, server_url: str, tmp_path: Path) -> AsyncIterator[MlflowRegistry]:
        registry = load_adapter("registry", f"mlflow+{server_url}", base_dir=tmp_path)
        assert isinstance(registry, MlflowRegistry)
        yield registry
        await registry.aclose()


@pytest.mark.integration
class TestMlflowServerPostgres:
    """The PostgreSQL store behind a server: the store-specific paths only (numbering,
    latest, aliases, NotFound); the sqlite server runs the whole suite over the same REST API.
    """

    test_register = RegistryBasic.test_register_numbers_versions_from_one_as_str
    test_latest = RegistryBasic.test_resolve_bare_name_is_latest_version
    test_unknown_version = RegistryBasic.test_unknown_version_is_not_found
    test_move_alias = RegistryAliases.test_move_alias
    test_unknown_alias = RegistryAliases.test_unknown_alias_is_not_found
    test_reserved_latest = RegistryAliases.test_latest_is_a_reserved_alias

    @pytest.fixture
    async def adapter(self, pg_server_url: str, tmp_path: Path
                      ) -> AsyncIterator[MlflowRegistry]:
        registry = load_adapter("registry", f"mlflow+{pg_server_url}", base_dir=tmp_path)
        assert isinstance(registry, MlflowRegistry)
        yield registry
        await registry.aclose()


@pytest.mark.integration
async def test_server_down_is_backend_unavailable_and_fast(tmp_path: Path) -> None:
    import time

    registry = MlflowRegistry.from_url(parse_url(f"mlflow+http://127.0.0.1:{free_port()}"),
                                       base_dir=tmp_path)
    started = time.monotonic()
    with pytest.raises(BackendUnavailable) as info:
        await registry.resolve("anything@champion")
    assert info.value.retryable
    assert info.value.__cause__ is not None  # raised from MLflow's own error
    assert time.monotonic() - started < 10  # no 4-minute back-off
    await registry.aclose()


@pytest.mark.parametrize("url", [
    "mlflow+sqlite://host/x.db",          # a host where a file is meant
    "mlflow+sqlite://",                   # no path
    "mlflow+sqlite:///folder/",           # a folder
    "mlflow+http://",                     # no host
    "mlflow+http://u:secret@127.0.0.1:5000",  # credentials in the URL
    "mlflow+http://127.0.0.1:5000?artifacts=x",  # sqlite-only option
    "mlflow+sqlite:///m.db?bogus=1",      # unknown option
    "mlflow+ftp://127.0.0.1",             # unknown scheme
])
def test_bad_urls_are_config_errors(url: str, tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_adapter("registry", url, base_dir=tmp_path)
    assert info.value.hint
    assert "secret" not in str(info.value)


def test_urls_map_to_tracking_uris(tmp_path: Path) -> None:
    rel = MlflowRegistry.from_url(parse_url("mlflow+sqlite:///reg/m.db"), base_dir=tmp_path)
    assert rel.tracking_uri == f"sqlite:///{tmp_path / 'reg' / 'm.db'}"
    assert rel.artifact_root == tmp_path / "reg" / "artifacts"
    absolute = MlflowRegistry.from_url(
        parse_url(f"mlflow+sqlite:///{tmp_path}/abs.db?artifacts=arts"), base_dir=Path("/x"))
    assert absolute.tracking_uri == f"sqlite:///{tmp_path / 'abs.db'}"
    assert absolute.artifact_root == tmp_path / "arts"
    http = MlflowRegistry.from_url(parse_url("mlflow+https://mlflow.example.com:8443/p/"),
                                   base_dir=tmp_path)
    assert http.tracking_uri == "https://mlflow.example.com:8443/p"
    assert not (tmp_path / "reg").exists()  # nothing touched before first use


@pytest.mark.integration
async def test_register_rejects_bad_names_and_sources(sqlite_url: tuple[str, Path]) -> None:
    url, base = sqlite_url
    registry = load_adapter("registry", url, base_dir=base)
    for bad in ("a@b", "a/1", "", "has space"):
        with pytest.raises(InvalidInput):
            await registry.register(bad, "s3://b/m")
    with pytest.raises(InvalidInput):
        await registry.register("fine", "")
    name = f"m-{uuid.uuid4().hex[:8]}"
    await registry.register(name, "s3://b/m")
    with pytest.raises(InvalidInput):  # MLflow reserves 'latest' and 'v<n>'
        await registry.set_alias(name, "latest", "1")
    assert (await registry.resolve(f"{name}@latest")).version == "1"  # MLflow's own rule
    with pytest.raises(NotFound):
        await registry.resolve(f"{name}/2")
    await registry.aclose()
    with pytest.raises(ConfigError):
        await registry.resolve(name)
