"""Qdrant Edge (the embedded default) against the Retrieval conformance suite."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from aios_mesh.backends import DEFAULT_URLS, load_adapter
from aios_mesh.testing.conformance.retrieval import (
    RetrievalBasic,
    RetrievalErrors,
    RetrievalFiltering,
    RetrievalPersistence,
    RetrievalTenancy,
)

URL = DEFAULT_URLS["retrieval"]  # qdrant-edge:///qdrant


class TestQdrantEdge(RetrievalBasic, RetrievalFiltering, RetrievalTenancy, RetrievalErrors,
                     RetrievalPersistence):
    @pytest.fixture
    async def adapter(self, tmp_path: Path) -> AsyncIterator[Any]:
        a = load_adapter("retrieval", URL, base_dir=tmp_path)
        yield a
        await a.aclose()

    @pytest.fixture
    def reopen(self, tmp_path: Path) -> Callable[[], Any]:
        return lambda: load_adapter("retrieval", URL, base_dir=tmp_path)
