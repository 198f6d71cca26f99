"""The Redis vault store passes the vault conformance suite against a real redis-server."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from aios_mesh.backends import parse_url
from aios_mesh.errors import BackendUnavailable, ConfigError
from aios_mesh.testing import launcher
from aios_mesh.testing.conformance.vault import (
    VaultBasic,
    VaultRotation,
    VaultSealing,
    VaultTenancy,
)
from aios_mesh.testing.processes import free_port

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with launcher("redis")(tmp_path_factory.mktemp("redis")) as server:
        yield f"redis://{server.address}/0"


class TestRedisVault(VaultBasic, VaultTenancy, VaultSealing, VaultRotation):
    @pytest.fixture
    async def adapter(self, redis_url: str, tmp_path: Path) -> AsyncIterator[object]:
        from aios_mesh_redis.vault import RedisVaultStore

        # a prefix per test: an empty vault on the shared server
        url = parse_url(f"{redis_url}?prefix=v{uuid.uuid4().hex[:8]}*")
        store = RedisVaultStore.from_url(url, base_dir=tmp_path)
        yield store
        await store.aclose()


async def test_bad_options_and_a_server_that_is_down(redis_url: str, tmp_path: Path) -> None:
    from aios_mesh_redis.vault import RedisVaultStore

    with pytest.raises(ConfigError, match="unknown option"):
        RedisVaultStore.from_url(parse_url(f"{redis_url}?prefx=x"), base_dir=tmp_path)
    with pytest.raises(ConfigError, match="prefix"):
        RedisVaultStore.from_url(parse_url(f"{redis_url}?prefix=a{{b}}"), base_dir=tmp_path)
    down = RedisVaultStore.from_url(
        parse_url(f"redis://:hunter2@127.0.0.1:{free_port()}/0?connect_timeout_s=0.2"),
        base_dir=tmp_path)
    with pytest.raises(BackendUnavailable) as info:
        await down.get("t", ["<A_0000000000000001>"])
    assert "hunter2" not in str(info.value) and info.value.hint
    await down.aclose()
