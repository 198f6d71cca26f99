"""The embedded JSONL audit log passes the audit conformance suite."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from aios_mesh.backends import load_adapter
from aios_mesh.embedded.audit import JsonlAuditLog
from aios_mesh.testing.conformance.audit import AuditBasic, AuditTamper, JsonlTamperer


class TestJsonlAudit(AuditBasic, AuditTamper):
    @pytest.fixture
    async def adapter(self, tmp_path: Path) -> AsyncIterator[JsonlAuditLog]:
        log = load_adapter("audit", "jsonl:///audit/log.jsonl", base_dir=tmp_path)
        assert isinstance(log, JsonlAuditLog)
        yield log
        await log.aclose()

    @pytest.fixture
    def tamper(self, adapter: JsonlAuditLog) -> JsonlTamperer:
        return JsonlTamperer(adapter.path)


class TestJsonlAuditFsync(AuditBasic):
    @pytest.fixture
    async def adapter(self, tmp_path: Path) -> AsyncIterator[JsonlAuditLog]:
        log = load_adapter("audit", "jsonl:///audit.jsonl?durability=fsync", base_dir=tmp_path)
        assert log.durability == "fsync"
        yield log
        await log.aclose()
