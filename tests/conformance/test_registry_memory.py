"""The in-memory registry passes the registry conformance suite."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from aios_mesh.backends import load_adapter
from aios_mesh.embedded.registry import MemoryRegistry
from aios_mesh.testing.conformance.registry import (
    RegistryAliases,
    RegistryBasic,
    RegistryDocuments,
)


class TestMemoryRegistry(RegistryBasic, RegistryAliases, RegistryDocuments):
    @pytest.fixture
    async def adapter(self, tmp_path: Path) -> AsyncIterator[MemoryRegistry]:
        registry = load_adapter("registry", "memory://", base_dir=tmp_path)
        assert isinstance(registry, MemoryRegistry)
        yield registry
        await registry.aclose()
