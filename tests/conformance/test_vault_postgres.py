"""The vault on PostgreSQL (through the shared-state seam) passes the vault conformance suite
against the machine's server, in a throw-away database per module."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import psycopg
import pytest
from aios_mesh_postgres import PostgresState
from aios_mesh_postgres.testing import postgres_database

from aios_mesh.embedded.sql_vault import SqlVaultStore
from aios_mesh.testing.conformance.vault import (
    VaultBasic,
    VaultRotation,
    VaultSealing,
    VaultTenancy,
)

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def database() -> Iterator[str]:
    with postgres_database(prefix="aios_mesh_vault") as url:
        yield url


class TestPostgresVault(VaultBasic, VaultTenancy, VaultSealing, VaultRotation):
    @pytest.fixture
    async def adapter(self, database: str) -> AsyncIterator[SqlVaultStore]:
        store = SqlVaultStore(PostgresState(database), owned=True)
        await store.get("t", ["<A_0000000000000000>"])  # creates the table
        with psycopg.connect(database, autocommit=True) as conn:
            conn.execute("TRUNCATE token_vault")  # each test starts from an empty vault
        yield store
        await store.aclose()
