"""Vault store port: where the token vault keeps its sealed entries.

A store maps ``(tenant, token)`` to an opaque byte string. It never sees a value in clear:
:class:`aios_mesh.redaction.vault.TokenVault` seals every value (AES-GCM, the tenant and the
token bound as associated data) before ``put`` and opens it after ``get``, so a store only
has to keep bytes, scoped by tenant. Every method is batched: one round trip per call.

Stores: :class:`~aios_mesh.embedded.vault.MemoryVaultStore` (the embedded default, one
process), :class:`~aios_mesh.embedded.vault.SqlVaultStore` (the shared state: the state
folder's sqlite or one PostgreSQL database for every replica) and
``aios_mesh_redis.vault.RedisVaultStore``. The conformance suite
(:mod:`aios_mesh.testing.conformance.vault`) runs on each.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Collection, Mapping
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

__all__ = ["VaultEntry", "VaultStore"]


@dataclass(frozen=True, slots=True)
class VaultEntry:
    """One sealed entry as a store keeps it (``blob`` is ciphertext, never the value)."""

    tenant: str
    token: str
    blob: bytes


@runtime_checkable
class VaultStore(Protocol):
    """Sealed token entries by tenant. A method for tenant A never reads or changes an
    entry of tenant B."""

    async def put(self, tenant: str, blobs: Mapping[str, bytes]) -> None:
        """Write ``{token: blob}`` for ``tenant`` (an existing entry is replaced)."""
        ...

    async def get(self, tenant: str, tokens: Collection[str]) -> dict[str, bytes]:
        """The blobs of those of ``tokens`` that ``tenant`` has (unknown ones are left out)."""
        ...

    async def delete(self, tenant: str, tokens: Collection[str]) -> int:
        """Forget ``tokens`` of ``tenant``; returns how many existed."""
        ...

    async def replace(self, tenant: str, changes: Mapping[str, tuple[bytes, bytes]]) -> int:
        """Compare-and-set: ``{token: (old, new)}`` writes ``new`` only where the entry still
        holds ``old`` (so a key rotation never revives a deleted entry nor overwrites a newer
        one); returns how many were written."""
        ...

    def entries(self, *, batch: int = 500) -> AsyncIterator[list[VaultEntry]]:
        """Every entry of every tenant, ``batch`` at a time (for key rotation)."""
        ...

    async def aclose(self) -> None:
        """Release connections."""
        ...
