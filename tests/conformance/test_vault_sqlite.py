"""The vault on the embedded shared state (the state folder's sqlite) passes the vault
conformance suite, and keeps its entries across a reopen (a process restart)."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from aios_mesh.embedded.sql_vault import SqlVaultStore
from aios_mesh.redaction.vault import KeyRing, TokenVault
from aios_mesh.state import SqliteState
from aios_mesh.testing.conformance.vault import (
    VaultBasic,
    VaultRotation,
    VaultSealing,
    VaultTenancy,
)


class TestSqliteVault(VaultBasic, VaultTenancy, VaultSealing, VaultRotation):
    @pytest.fixture
    async def adapter(self, tmp_path: Path) -> AsyncIterator[SqlVaultStore]:
        store = SqlVaultStore(SqliteState(tmp_path))
        yield store
        await store.aclose()


async def test_entries_outlive_the_store_and_are_never_in_clear(tmp_path: Path) -> None:
    ring = KeyRing([b"k" * 32])
    first = TokenVault(SqlVaultStore(SqliteState(tmp_path)), ring)
    await first.put("acme", {"<EMAIL_0123456789abcdef>": "ann@acme.example"})
    await first.aclose()
    again = TokenVault(SqlVaultStore(SqliteState(tmp_path)), ring)
    assert await again.get("acme", ["<EMAIL_0123456789abcdef>"]) == {
        "<EMAIL_0123456789abcdef>": "ann@acme.example"}
    await again.aclose()
    raw = (tmp_path / "token_vault.db").read_bytes()
    assert b"ann@acme.example" not in raw and b"acme.example" not in raw
    with sqlite3.connect(tmp_path / "token_vault.db") as conn:
        assert conn.execute("SELECT count(*) FROM token_vault").fetchone() == (1,)
