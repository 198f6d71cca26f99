"""qdrant-client against the Retrieval conformance suite.

* ``TestQdrantLocalFolder`` / ``TestQdrantLocalMemory``: qdrant-client's local mode (runs
  everywhere, no server);
* ``TestQdrantServer``: a real Qdrant server, reached at ``QDRANT_URL`` or started as a
  container with testcontainers (tests/containers.py) when a Docker engine answers; otherwise
  it skips ("needs a Docker engine (Qdrant server)").

Plus the adapter's own promises: the folder lock is a ConfigError, aliases show in snapshot
ids, the tenant scoping matches the Edge adapter's ids.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from aios_mesh_qdrant import QdrantRetrieval
from qdrant_client import models

from aios_mesh.backends import load_adapter
from aios_mesh.errors import ConfigError, InvalidInput
from aios_mesh.ports.base import Feature
from aios_mesh.ports.retrieval import Point
from aios_mesh.ports.retrieval_scope import ID_NAMESPACE, internal_id
from aios_mesh.testing.conformance.retrieval import (
    RetrievalBasic,
    RetrievalErrors,
    RetrievalFiltering,
    RetrievalPersistence,
    RetrievalTenancy,
)
from tests.containers import http_container

#: Pinned like compose/docker-compose.yml.
QDRANT_IMAGE = "qdrant/qdrant:v1.20.0"
LOCAL_URL = "qdrant+local:///qdrant-local"


class TestQdrantLocalFolder(RetrievalBasic, RetrievalFiltering, RetrievalTenancy,
                            RetrievalErrors, RetrievalPersistence):
    @pytest.fixture
    async def adapter(self, tmp_path: Path) -> AsyncIterator[Any]:
        a = load_adapter("retrieval", LOCAL_URL, base_dir=tmp_path)
        yield a
        await a.aclose()

    @pytest.fixture
    def reopen(self, tmp_path: Path) -> Callable[[], Any]:
        return lambda: load_adapter("retrieval", LOCAL_URL, base_dir=tmp_path)


class TestQdrantLocalMemory(RetrievalBasic, RetrievalFiltering, RetrievalTenancy):
    """Memory mode runs the same code as folder mode; the suites that differ by storage."""

    @pytest.fixture
    async def adapter(self, tmp_path: Path) -> AsyncIterator[Any]:
        a = load_adapter("retrieval", "qdrant+local:///:memory:", base_dir=tmp_path)
        assert Feature.DURABLE not in a.features
        yield a
        await a.aclose()


# --------------------------------------------------------------------------- real server


def _wait_ready(url: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if httpx.get(f"{url}/readyz", timeout=2.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"Qdrant at {url} did not become ready in {timeout:.0f} s")
        time.sleep(0.3)


@pytest.fixture(scope="module")
def qdrant_server() -> Iterator[str]:
    """``QDRANT_URL`` when set, else a container; skips only when no Docker engine answers."""
    given = os.environ.get("QDRANT_URL")
    if given:
        _wait_ready(given.rstrip("/"), timeout=10)
        yield given.rstrip("/")
        return
    with http_container(QDRANT_IMAGE, 6333, what="Qdrant server", health="/readyz") as url:
        yield url


def _server_url(http_url: str) -> str:
    parsed = httpx.URL(http_url)
    key = os.environ.get("QDRANT_API_KEY")
    query = f"?api_key={key}" if key else ""
    https = "&https=true" if parsed.scheme == "https" and key else (
        "?https=true" if parsed.scheme == "https" else "")
    return f"qdrant://{parsed.host}:{parsed.port or 6333}{query}{https}"


@pytest.mark.docker
class TestQdrantServer(RetrievalBasic, RetrievalFiltering, RetrievalTenancy, RetrievalErrors,
                       RetrievalPersistence):
    @pytest.fixture
    async def adapter(self, qdrant_server: str, tmp_path: Path) -> AsyncIterator[Any]:
        a = load_adapter("retrieval", _server_url(qdrant_server), base_dir=tmp_path)
        yield a
        await a.aclose()

    @pytest.fixture
    def reopen(self, qdrant_server: str, tmp_path: Path) -> Callable[[], Any]:
        return lambda: load_adapter("retrieval", _server_url(qdrant_server), base_dir=tmp_path)


# --------------------------------------------------------------------------- adapter's own


def _vec(*xs: float, dim: int = 4) -> list[float]:
    return [*xs, *([0.0] * (dim - len(xs)))]


async def test_second_local_client_on_one_folder_is_a_config_error(tmp_path: Path) -> None:
    first = load_adapter("retrieval", LOCAL_URL, base_dir=tmp_path)
    try:
        with pytest.raises(ConfigError) as info:
            load_adapter("retrieval", LOCAL_URL, base_dir=tmp_path)
        assert "already open" in info.value.message
        assert info.value.hint and "aclose" in info.value.hint
    finally:
        await first.aclose()
    again = load_adapter("retrieval", LOCAL_URL, base_dir=tmp_path)  # released by aclose
    await again.aclose()


async def test_snapshot_id_names_the_collection_behind_an_alias(tmp_path: Path) -> None:
    index: QdrantRetrieval = load_adapter("retrieval", LOCAL_URL, base_dir=tmp_path)
    try:
        await index.upsert("kb_v1", [Point(1, _vec(1.0), {"v": 1})], tenant="acme")
        await index.upsert("kb_v2", [Point(1, _vec(1.0), {"v": 2})], tenant="acme")
        local = index._local
        assert local is not None
        local.update_collection_aliases([models.CreateAliasOperation(
            create_alias=models.CreateAlias(collection_name="kb_v1", alias_name="kb"))])
        v1 = await index.snapshot("kb_v1")
        assert await index.snapshot("kb") == f"kb_v1:{v1}"
        hits = await index.query("kb", _vec(1.0), tenant="acme")
        assert [h.payload for h in hits] == [{"v": 1}]
        local.update_collection_aliases([
            models.DeleteAliasOperation(delete_alias=models.DeleteAlias(alias_name="kb")),
            models.CreateAliasOperation(create_alias=models.CreateAlias(
                collection_name="kb_v2", alias_name="kb"))])
        index._collections.clear()  # the adapter caches dims per name, not alias targets
        assert await index.snapshot("kb") == f"kb_v2:{await index.snapshot('kb_v2')}"
    finally:
        await index.aclose()


async def test_stored_points_carry_the_reserved_keys(tmp_path: Path) -> None:
    index: QdrantRetrieval = load_adapter("retrieval", LOCAL_URL, base_dir=tmp_path)
    try:
        await index.upsert("c", [Point("doc-1", _vec(1.0), {"k": "v"})], tenant="acme")
        local = index._local
        assert local is not None
        records, _ = local.scroll("c", with_payload=True)
        assert [(r.id, r.payload) for r in records] == [
            (str(internal_id("acme", "doc-1")), {"k": "v", "_tenant": "acme",
                                                  "_mesh_id": "doc-1"})]
        meta = local.get_collection("c").config.metadata or {}
        assert meta["aios_mesh"]["writes"] == 1
    finally:
        await index.aclose()


def test_url_options(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="did you mean 'distance'"):
        load_adapter("retrieval", "qdrant+local:///x?distanse=dot", base_dir=tmp_path)
    with pytest.raises(ConfigError, match="options are"):
        load_adapter("retrieval", "qdrant+local:///x?api_key=k", base_dir=tmp_path)
    with pytest.raises(ConfigError, match="unknown payload index type"):
        load_adapter("retrieval", "qdrant://127.0.0.1:1?index=a:keywrd", base_dir=tmp_path)
    with pytest.raises(ConfigError, match="reserved"):
        load_adapter("retrieval", "qdrant://127.0.0.1:1?index=_tenant:keyword",
                     base_dir=tmp_path)
    server = load_adapter("retrieval", "qdrant://:s3cret@127.0.0.1:6333?timeout=3",
                          base_dir=tmp_path)
    assert not server.is_local
    assert server._server_kwargs["api_key"] == "s3cret"
    assert "s3cret" not in repr(server)
    assert Feature.DURABLE not in server.features


async def test_unreachable_server_is_backend_unavailable(tmp_path: Path) -> None:
    from aios_mesh.errors import BackendUnavailable
    from aios_mesh.testing.processes import free_port

    index = load_adapter("retrieval", f"qdrant://127.0.0.1:{free_port()}?timeout=2",
                         base_dir=tmp_path)
    try:
        with pytest.raises(BackendUnavailable) as info:
            await index.query("c", _vec(1.0), tenant="acme")
        assert info.value.retryable
        assert info.value.hint
        with pytest.raises(InvalidInput):  # validation never needs the server
            await index.query("c", _vec(1.0), tenant="")
    finally:
        await index.aclose()


def test_uuid_namespace_is_stable() -> None:
    assert uuid.UUID("6f1c3c2e-3d1a-5b7e-9a55-0a105e5a0001") == ID_NAMESPACE


async def test_health(tmp_path: Path) -> None:
    from aios_mesh.errors import BackendUnavailable
    from aios_mesh.testing.processes import free_port

    local = load_adapter("retrieval", LOCAL_URL, base_dir=tmp_path)
    try:
        await local.health()
    finally:
        await local.aclose()
    down = load_adapter("retrieval", f"qdrant://127.0.0.1:{free_port()}?timeout=2",
                        base_dir=tmp_path)
    try:
        with pytest.raises(BackendUnavailable):
            await down.health()
    finally:
        await down.aclose()
