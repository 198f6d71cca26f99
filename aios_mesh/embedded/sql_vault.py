"""The vault store on the shared state (sqlite or PostgreSQL), see :mod:`aios_mesh.ports.vault`.

:class:`SqlVaultStore` keeps one table on the shared-state seam
(:class:`aios_mesh.state.Database`)::

    token_vault (tenant TEXT, token TEXT, blob BLOB/BYTEA, PRIMARY KEY (tenant, token))

so ``[backends] state = "postgresql://..."`` gives every replica the same vault, and the
default state folder keeps it across restarts of one machine's processes.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Collection, Mapping, Sequence
from typing import Final

from aios_mesh.ports.vault import VaultEntry
from aios_mesh.state import Database, Migration, SharedState

__all__ = ["VAULT_MIGRATIONS", "SqlVaultStore"]

#: The schema of the ``token_vault`` store, per SQL dialect (released migrations never change).
VAULT_MIGRATIONS: Final[Mapping[str, tuple[Migration, ...]]] = {
    dialect: (Migration(1, (
        "CREATE TABLE IF NOT EXISTS token_vault (tenant TEXT NOT NULL, token TEXT NOT NULL, "
        f"blob {blob} NOT NULL, PRIMARY KEY (tenant, token))",)),)
    for dialect, blob in (("sqlite", "BLOB"), ("postgresql", "BYTEA"))
}
_CHUNK: Final = 500  # tokens per IN (...) list: far below both engines' parameter limits


class SqlVaultStore:
    """Entries in the ``token_vault`` table of a shared state (the state folder's sqlite, or
    PostgreSQL shared by every replica). Blocking SQL runs in a worker thread.

    ``owned``: the state was opened for this store alone, and closes with it.
    """

    def __init__(self, state: SharedState, *, owned: bool = False) -> None:
        self.db = Database(state, "token_vault", VAULT_MIGRATIONS, what="the token vault")
        self.owned = owned

    async def put(self, tenant: str, blobs: Mapping[str, bytes]) -> None:
        if blobs:
            rows = [(tenant, token, blob) for token, blob in blobs.items()]
            await asyncio.to_thread(self._put, rows)

    def _put(self, rows: Sequence[tuple[str, str, bytes]]) -> None:
        # One multi-row statement: one round trip and one commit for a call's tokens (a
        # transaction around executemany costs a round trip per row on PostgreSQL).
        if len(rows) <= _CHUNK:
            self._insert(rows)
            return
        with self.db.transaction():
            for start in range(0, len(rows), _CHUNK):
                self._insert(rows[start:start + _CHUNK])

    def _insert(self, rows: Sequence[tuple[str, str, bytes]]) -> None:
        self.db.execute(
            "INSERT INTO token_vault (tenant, token, blob) VALUES "
            f"{', '.join(['(?, ?, ?)'] * len(rows))} "
            "ON CONFLICT (tenant, token) DO UPDATE SET blob = excluded.blob",
            [part for row in rows for part in row])

    async def get(self, tenant: str, tokens: Collection[str]) -> dict[str, bytes]:
        wanted = sorted(set(tokens))
        return await asyncio.to_thread(self._get, tenant, wanted) if wanted else {}

    def _get(self, tenant: str, tokens: list[str]) -> dict[str, bytes]:
        found: dict[str, bytes] = {}
        for start in range(0, len(tokens), _CHUNK):
            chunk = tokens[start:start + _CHUNK]
            rows = self.db.execute(
                "SELECT token, blob FROM token_vault WHERE tenant = ? AND token IN "
                f"({', '.join('?' * len(chunk))})", (tenant, *chunk))
            found.update((str(token), bytes(blob)) for token, blob in rows)
        return found

    async def delete(self, tenant: str, tokens: Collection[str]) -> int:
        wanted = sorted(set(tokens))
        return await asyncio.to_thread(self._delete, tenant, wanted) if wanted else 0

    def _delete(self, tenant: str, tokens: list[str]) -> int:
        gone = 0
        with self.db.transaction():
            for start in range(0, len(tokens), _CHUNK):
                chunk = tokens[start:start + _CHUNK]
                gone += self.db.execute(
                    "DELETE FROM token_vault WHERE tenant = ? AND token IN "
                    f"({', '.join('?' * len(chunk))})", (tenant, *chunk)).rowcount
        return gone

    async def replace(self, tenant: str, changes: Mapping[str, tuple[bytes, bytes]]) -> int:
        return await asyncio.to_thread(self._replace, tenant, dict(changes)) if changes else 0

    def _replace(self, tenant: str, changes: dict[str, tuple[bytes, bytes]]) -> int:
        written = 0
        with self.db.transaction():
            for token, (old, new) in changes.items():
                written += self.db.execute(
                    "UPDATE token_vault SET blob = ? WHERE tenant = ? AND token = ? "
                    "AND blob = ?", (new, tenant, token, old)).rowcount
        return written

    async def entries(self, *, batch: int = 500) -> AsyncIterator[list[VaultEntry]]:
        after: tuple[str, str] | None = None
        while True:
            page = await asyncio.to_thread(self._page, after, batch)
            if not page:
                return
            yield page
            after = (page[-1].tenant, page[-1].token)

    def _page(self, after: tuple[str, str] | None, batch: int) -> list[VaultEntry]:
        # Keyset pages: rows written while a rotation walks the table are seen or not, but
        # no row is seen twice and none is skipped.
        if after is None:
            rows = self.db.execute("SELECT tenant, token, blob FROM token_vault "
                                   "ORDER BY tenant, token LIMIT ?", (batch,))
        else:
            rows = self.db.execute(
                "SELECT tenant, token, blob FROM token_vault WHERE tenant > ? OR "
                "(tenant = ? AND token > ?) ORDER BY tenant, token LIMIT ?",
                (after[0], after[0], after[1], batch))
        return [VaultEntry(str(t), str(k), bytes(b)) for t, k, b in rows]

    async def aclose(self) -> None:
        await asyncio.to_thread(self.db.close)
        if self.owned:
            await asyncio.to_thread(self.db.state.close)
