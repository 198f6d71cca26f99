"""Telemetry leaves the caller's path: a loop callback when a loop runs, never lost."""

from __future__ import annotations

import asyncio
import io

import orjson
import pytest

from aios_mesh.record import DecisionRecord
from aios_mesh.telemetry import Telemetry


def _record(n: int) -> DecisionRecord:
    return DecisionRecord(record_id=f"r-{n}", started_at="2026-01-01T00:00:00+00:00",
                          ended_at="2026-01-01T00:00:01+00:00", latency_ms=1.0,
                          tenant="acme", caller="t", capability="c", capability_version="1",
                          outcome="ok")


def _lines(stream: io.StringIO) -> list[str]:
    return [orjson.loads(line)["record_id"] for line in stream.getvalue().splitlines()]


async def test_export_runs_once_the_calling_task_yields() -> None:
    stream = io.StringIO()
    tel = Telemetry(log=stream, enabled_otel=False)
    record = _record(1)
    tel.export(record, record.to_dict(), None)
    assert _lines(stream) == []  # not on the caller's path
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert _lines(stream) == ["r-1"]


async def test_export_waits_for_work_queued_after_it() -> None:
    """The next call's request (grpc.aio sends it from a task created after the export was
    queued) goes out before the export runs: telemetry never delays a backend request."""
    stream = io.StringIO()
    tel = Telemetry(log=stream, enabled_otel=False)
    record = _record(1)
    seen: list[list[str]] = []

    async def next_request() -> None:
        seen.append(_lines(stream))

    tel.export(record, record.to_dict(), None)
    task = asyncio.get_running_loop().create_task(next_request())
    await task
    assert seen == [[]]  # the request's first step ran before the export
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert _lines(stream) == ["r-1"]


def test_flush_exports_what_a_stopped_loop_left_behind() -> None:
    stream = io.StringIO()
    tel = Telemetry(log=stream, enabled_otel=False)

    async def call(n: int) -> None:
        record = _record(n)
        tel.export(record, record.to_dict(), None)

    loop = asyncio.new_event_loop()
    task = loop.create_task(call(1))
    loop.run_until_complete(task)  # the export callback may or may not have run yet
    loop.close()
    asyncio.run(call(2))
    assert tel.flush()
    assert sorted(_lines(stream)) == ["r-1", "r-2"]  # each exactly once


def test_without_a_loop_a_worker_thread_exports() -> None:
    stream = io.StringIO()
    tel = Telemetry(log=stream, enabled_otel=False)
    record = _record(3)
    tel.export(record, record.to_dict(), None)
    assert tel.flush()
    assert _lines(stream) == ["r-3"]
    tel.close()


async def test_a_caller_that_never_yields_does_not_pile_up_records() -> None:
    from aios_mesh import telemetry

    stream = io.StringIO()
    tel = Telemetry(log=stream, enabled_otel=False)
    limit = telemetry._MAX_PENDING
    for n in range(limit * 2 + 5):  # no await in between: the loop never gets a turn
        record = _record(n)
        tel.export(record, record.to_dict(), None)
    assert len(tel._pending) < limit
    assert _lines(stream) == [f"r-{n}" for n in range(limit * 2)]
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert _lines(stream) == [f"r-{n}" for n in range(limit * 2 + 5)]


def test_an_sdk_installed_after_start_is_found_within_a_second(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider

    import aios_mesh.telemetry as telemetry

    now = [100.0]
    monkeypatch.setattr(telemetry.time, "monotonic", lambda: now[0])
    tel = Telemetry(log=None)
    monkeypatch.setattr(trace, "get_tracer_provider", lambda: trace.NoOpTracerProvider())
    assert tel._no_sdk()
    monkeypatch.setattr(trace, "get_tracer_provider", lambda: TracerProvider())
    now[0] += 0.5
    assert tel._no_sdk()  # not looked at again yet
    now[0] += 0.6
    assert not tel._no_sdk()  # found
    monkeypatch.setattr(trace, "get_tracer_provider", lambda: trace.NoOpTracerProvider())
    now[0] += 5
    assert not tel._no_sdk()  # an SDK, once seen, stays
