"""The embedded vault store: in this process's memory (the default; see
:mod:`aios_mesh.ports.vault`). The durable one on the shared state is
:mod:`aios_mesh.embedded.sql_vault`.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import AsyncIterator, Collection, Mapping

from aios_mesh.ports.vault import VaultEntry

__all__ = ["MemoryVaultStore"]


class MemoryVaultStore:
    """Entries in this process's memory, bounded (least recently written go first); gone
    with the process. Thread-safe."""

    def __init__(self, max_entries: int = 100_000) -> None:
        self.max_entries = max_entries
        self._data: OrderedDict[tuple[str, str], bytes] = OrderedDict()
        self._lock = threading.Lock()

    async def put(self, tenant: str, blobs: Mapping[str, bytes]) -> None:
        with self._lock:
            for token, blob in blobs.items():
                self._data[(tenant, token)] = blob
                self._data.move_to_end((tenant, token))
            while len(self._data) > self.max_entries:
                self._data.popitem(last=False)

    async def get(self, tenant: str, tokens: Collection[str]) -> dict[str, bytes]:
        with self._lock:
            return {t: b for t in tokens if (b := self._data.get((tenant, t))) is not None}

    async def delete(self, tenant: str, tokens: Collection[str]) -> int:
        with self._lock:
            return sum(self._data.pop((tenant, t), None) is not None for t in set(tokens))

    async def replace(self, tenant: str, changes: Mapping[str, tuple[bytes, bytes]]) -> int:
        with self._lock:
            written = 0
            for token, (old, new) in changes.items():
                if self._data.get((tenant, token)) == old:
                    self._data[(tenant, token)] = new
                    written += 1
            return written

    async def entries(self, *, batch: int = 500) -> AsyncIterator[list[VaultEntry]]:
        with self._lock:
            snapshot = [VaultEntry(t, k, b) for (t, k), b in self._data.items()]
        for start in range(0, len(snapshot), batch):
            yield snapshot[start:start + batch]

    async def aclose(self) -> None:
        return None
