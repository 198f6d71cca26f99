"""The in-memory vault store (the embedded default) passes the vault conformance suite."""

from __future__ import annotations

import pytest

from aios_mesh.embedded.vault import MemoryVaultStore
from aios_mesh.testing.conformance.vault import (
    VaultBasic,
    VaultRotation,
    VaultSealing,
    VaultTenancy,
)


class TestMemoryVault(VaultBasic, VaultTenancy, VaultSealing, VaultRotation):
    @pytest.fixture
    def adapter(self) -> MemoryVaultStore:
        return MemoryVaultStore()


async def test_the_oldest_entries_go_first_when_full() -> None:
    store = MemoryVaultStore(max_entries=3)
    for i in range(5):
        await store.put("t", {f"<A_{i:016x}>": b"x"})
    assert sorted(await store.get("t", [f"<A_{i:016x}>" for i in range(5)])) == [
        f"<A_{i:016x}>" for i in (2, 3, 4)]
