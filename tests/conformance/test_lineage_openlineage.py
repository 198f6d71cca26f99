"""The OpenLineage emitter against a real folder and a real HTTP endpoint."""

from __future__ import annotations

import json
import sys
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from aios_mesh.backends import load_adapter
from aios_mesh.testing import free_port
from aios_mesh.testing.conformance.lineage import LineageBasic, LineageUnavailable

ADAPTERS = str(Path(__file__).resolve().parents[2] / "adapters")

Received = Callable[[], list[dict[str, Any]]]


class _LineageServer(ThreadingHTTPServer):
    """A tiny OpenLineage endpoint: collects POST /api/v1/lineage bodies."""

    daemon_threads = True

    def __init__(self, port: int) -> None:
        self.events: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        super().__init__(("127.0.0.1", port), _Handler)


class _Handler(BaseHTTPRequestHandler):
    server: _LineageServer

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        if self.path != "/api/v1/lineage" or self.headers.get("Content-Type") != "application/json":
            self.send_response(404)
        else:
            with self.server.lock:
                self.server.events.append(json.loads(body))
            self.send_response(201)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def lineage_server() -> Iterator[_LineageServer]:
    server = _LineageServer(free_port())
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join(5)


class TestOpenLineageFile(LineageBasic, LineageUnavailable):
    @pytest.fixture
    async def adapter(self, tmp_path: Path) -> AsyncIterator[Any]:
        emitter = load_adapter("lineage", "openlineage+file:///lineage", base_dir=tmp_path)
        yield emitter
        await emitter.aclose()

    @pytest.fixture
    def lineage_received(self, tmp_path: Path) -> Received:
        def read() -> list[dict[str, Any]]:
            path = tmp_path / "lineage" / "events.jsonl"
            return [json.loads(line) for line in path.read_text().splitlines()]
        return read

    @pytest.fixture
    async def unavailable_adapter(self, tmp_path: Path) -> AsyncIterator[Any]:
        (tmp_path / "not-a-folder").write_text("a file where the folder should be")
        emitter = load_adapter("lineage", "openlineage+file:///not-a-folder", base_dir=tmp_path)
        yield emitter
        await emitter.aclose()

    async def test_one_json_line_per_event(self, adapter: Any, lineage_received: Received,
                                           tmp_path: Path) -> None:
        from aios_mesh.lineage import run_events_for
        from aios_mesh.testing.conformance.lineage import sample_record

        for event in run_events_for(sample_record()):
            await adapter.emit(event)
        lines = (tmp_path / "lineage" / "events.jsonl").read_text().splitlines()
        assert len(lines) == 2
        assert sorted(p.name for p in (tmp_path / "lineage").iterdir()) == ["events.jsonl"]


class TestOpenLineageHttp(LineageBasic, LineageUnavailable):
    @pytest.fixture
    async def adapter(self, tmp_path: Path,
                      lineage_server: _LineageServer) -> AsyncIterator[Any]:
        port = lineage_server.server_address[1]
        emitter = load_adapter("lineage", f"openlineage+http://127.0.0.1:{port}",
                               base_dir=tmp_path)
        yield emitter
        await emitter.aclose()

    @pytest.fixture
    def lineage_received(self, lineage_server: _LineageServer) -> Received:
        def read() -> list[dict[str, Any]]:
            with lineage_server.lock:
                return list(lineage_server.events)
        return read

    @pytest.fixture
    async def unavailable_adapter(self, tmp_path: Path) -> AsyncIterator[Any]:
        url = f"openlineage+http://127.0.0.1:{free_port()}?retries=0&timeout=2"
        emitter = load_adapter("lineage", url, base_dir=tmp_path)
        yield emitter
        await emitter.aclose()


class TestOpenLineageKafkaUnavailable(LineageUnavailable):
    """No broker here (tansu is not installed); the failure path is still real."""

    @pytest.fixture
    async def unavailable_adapter(self, tmp_path: Path) -> AsyncIterator[Any]:
        url = f"openlineage+kafka://127.0.0.1:{free_port()}?topic=lineage&timeout=1"
        emitter = load_adapter("lineage", url, base_dir=tmp_path)
        yield emitter
        await emitter.aclose()


def test_adapter_import_does_not_import_openlineage() -> None:
    import os
    import subprocess

    code = ("import sys; from pathlib import Path; from aios_mesh.backends import load_adapter; "
            "load_adapter('lineage', 'openlineage+file:///x', base_dir=Path('/tmp')); "
            "print(any(m == 'openlineage' or m.startswith('openlineage.') for m in sys.modules))")
    env = {**os.environ, "PYTHONPATH": ADAPTERS}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, env=env)
    assert out.stdout.strip() == "False"


async def test_file_lines_are_what_openlineage_file_transport_writes(tmp_path: Path) -> None:
    """The file emitter writes with one open handle; its lines must hold exactly the
    documents openlineage-python's own FileTransport (append mode) writes for the same
    events, in the same order."""
    from openlineage.client.transport.file import FileConfig, FileTransport

    from aios_mesh.backends import load_adapter
    from aios_mesh.lineage import run_events_for

    record = {"record_id": "r-1", "capability": {"name": "extract", "version": "2"},
              "outcome": "ok", "tenant": "acme", "started_at": "2026-01-01T00:00:00+00:00",
              "ended_at": "2026-01-01T00:00:01+00:00", "model": {"name": "m", "version": "3"},
              "cost": 0.25, "confidence": None, "index_snapshots": {"kb": "s-1"}}
    events = run_events_for(record)
    ours = load_adapter("lineage", "openlineage+file:///ours", base_dir=tmp_path)
    await ours.emit_many(events)
    await ours.aclose()
    theirs = FileTransport(FileConfig(log_file_path=str(tmp_path / "theirs.jsonl"),
                                      append=True))
    for event in events:
        theirs.emit(event)
    mine = (tmp_path / "ours" / "events.jsonl").read_text().splitlines()
    reference = (tmp_path / "theirs.jsonl").read_text().splitlines()
    assert [json.loads(line) for line in mine] == [json.loads(line) for line in reference]
