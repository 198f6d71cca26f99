"""The embedded in-process quota store passes the quota conformance suite."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from aios_mesh.backends import load_adapter
from aios_mesh.embedded.quota import InProcessQuota
from aios_mesh.testing.conformance.quota import (
    ManualClock,
    QuotaBasic,
    QuotaConcurrency,
    QuotaRateLimit,
    QuotaThreadConcurrency,
    QuotaWindows,
)


class TestInProcessQuota(QuotaBasic, QuotaConcurrency, QuotaThreadConcurrency, QuotaRateLimit,
                         QuotaWindows):
    @pytest.fixture
    async def adapter(self, tmp_path: Path,
                      quota_clock: ManualClock) -> AsyncIterator[InProcessQuota]:
        store = load_adapter("quota", "memory://", base_dir=tmp_path, wall_clock=quota_clock)
        assert isinstance(store, InProcessQuota)
        yield store
        await store.aclose()
