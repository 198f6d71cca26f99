"""Anchoring in the background relay, and the relay following a signed rebaseline.

Real parts: the embedded JSONL audit log and event bus, the relay in its child process.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from aios_mesh.anchoring.check import Anchorer, verify_anchored
from aios_mesh.anchoring.config import AnchorConfig
from aios_mesh.anchoring.keys import AnchorSigner, AnchorVerifier, generate_keypair
from aios_mesh.anchoring.shipper import AnchorShipper, rebaselines
from aios_mesh.anchoring.stores import FileAnchorStore
from aios_mesh.embedded.audit import JsonlAuditLog
from aios_mesh.embedded.events import SqliteEventBus
from aios_mesh.recorder.relay import ALARM_TOPIC, RecordRelay
from aios_mesh.testing.conformance.events import receive
from tests.integration.test_relay import SPEC, _audit_records, mesh_on

pytestmark = pytest.mark.integration


def _relay(state: Path, config: AnchorConfig) -> RecordRelay:
    bus = SqliteEventBus(state / "events.db")
    return RecordRelay(audit=lambda: (JsonlAuditLog(state / "audit.jsonl"), True),
                       lineage=None, bus=lambda: (bus, True),
                       cursor_path=state / "signals.cursor",
                       rebaselines=rebaselines(config, state_dir=state))


async def _alarms(state: Path) -> list[object]:
    bus = SqliteEventBus(state / "events.db")
    sub = await bus.subscribe(ALARM_TOPIC, group="check")
    got = await receive(sub, 1, timeout=0.5)
    await bus.aclose()
    return got


def _setup(tmp_path: Path) -> tuple[AnchorConfig, AnchorSigner, Path]:
    key, pub = generate_keypair(tmp_path / "keys")
    config = AnchorConfig(store="file:///anchors/a.jsonl", key_file=key, public_key_file=pub)
    from aios_mesh.anchoring.keys import signer_for

    return config, signer_for(config), tmp_path / "anchors" / "a.jsonl"


def test_the_relay_follows_a_signed_rebaseline_quietly(tmp_path: Path,
                                                       caplog: pytest.LogCaptureFixture
                                                       ) -> None:
    config, signer, anchors = _setup(tmp_path)
    log = tmp_path / "audit.jsonl"
    _audit_records(JsonlAuditLog(log), 0, 10)
    old_copy = log.read_bytes()
    _audit_records(JsonlAuditLog(log), 10, 10)
    relay = _relay(tmp_path, config)
    assert asyncio.run(relay.ship()).shipped == 20
    asyncio.run(relay.aclose())
    time.sleep(0.01)  # the rebaseline is signed after the relay last moved
    log.write_bytes(old_copy)  # restored from the copy made after 10 records
    audit = JsonlAuditLog(log)
    asyncio.run(Anchorer(audit, FileAnchorStore(anchors), signer).rebaseline(
        "restored from the copy of 10 records"))
    _audit_records(audit, 0, 3)
    relay = _relay(tmp_path, config)
    with caplog.at_level(logging.INFO, logger="aios_mesh.recorder.relay"):
        result = asyncio.run(relay.ship())
    asyncio.run(relay.aclose())
    assert result.caught_up and relay.stats.rewinds == 1 and relay.stats.rebaselines == 1
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert any("re-baselined at seq 10" in r.getMessage() for r in caplog.records)
    assert asyncio.run(_alarms(tmp_path)) == []
    assert relay.stats.cursor == 13


def test_an_older_rebaseline_does_not_cover_a_later_cut(tmp_path: Path) -> None:
    config, signer, anchors = _setup(tmp_path)
    log = tmp_path / "audit.jsonl"
    _audit_records(JsonlAuditLog(log), 0, 5)
    asyncio.run(Anchorer(JsonlAuditLog(log), FileAnchorStore(anchors), signer).rebaseline(
        "a fresh start"))
    time.sleep(0.01)
    _audit_records(JsonlAuditLog(log), 5, 15)
    relay = _relay(tmp_path, config)
    assert asyncio.run(relay.ship()).shipped == 20
    asyncio.run(relay.aclose())
    lines = log.read_bytes().splitlines(keepends=True)
    log.write_bytes(b"".join(lines[:12]))  # cut after the rebaseline: tampering
    relay = _relay(tmp_path, config)
    asyncio.run(relay.ship())
    asyncio.run(relay.aclose())
    assert relay.stats.rewinds == 1 and relay.stats.rebaselines == 0
    assert len(asyncio.run(_alarms(tmp_path))) == 1


def test_a_rebaseline_by_another_key_is_not_followed(tmp_path: Path) -> None:
    config, _signer, anchors = _setup(tmp_path)
    log = tmp_path / "audit.jsonl"
    _audit_records(JsonlAuditLog(log), 0, 10)
    relay = _relay(tmp_path, config)
    asyncio.run(relay.ship())
    asyncio.run(relay.aclose())
    time.sleep(0.01)
    log.write_bytes(b"".join(log.read_bytes().splitlines(keepends=True)[:4]))
    intruder = AnchorSigner(Ed25519PrivateKey.generate())
    asyncio.run(Anchorer(JsonlAuditLog(log), FileAnchorStore(anchors), intruder).rebaseline(
        "trust me"))
    relay = _relay(tmp_path, config)
    asyncio.run(relay.ship())
    asyncio.run(relay.aclose())
    assert relay.stats.rebaselines == 0 and len(asyncio.run(_alarms(tmp_path))) == 1


async def test_the_shipper_anchors_by_count_and_by_time(tmp_path: Path) -> None:
    _config, signer, anchors = _setup(tmp_path)
    audit = JsonlAuditLog(tmp_path / "audit.jsonl")
    store = FileAnchorStore(anchors)
    now = [0.0]
    shipper = AnchorShipper(lambda: Anchorer(audit, store, signer), every_records=10,
                            every_s=30, clock=lambda: now[0])
    await asyncio.to_thread(_audit_records, audit, 0, 9)
    assert (await shipper.ship()).shipped == 0  # 9 < 10, and no time has passed
    await asyncio.to_thread(_audit_records, audit, 9, 1)
    assert (await shipper.ship()).shipped == 1  # 10 records
    await asyncio.to_thread(_audit_records, audit, 10, 2)
    assert (await shipper.ship()).shipped == 0
    now[0] = 31.0
    assert (await shipper.ship()).shipped == 1  # 30 s after the first unanchored one
    assert [a.seq for a in await store.list()] == [10, 12]
    assert (await shipper.ship()).shipped == 0  # nothing new
    await shipper.aclose()


def test_a_mesh_with_anchors_gets_them_from_its_relay_process(tmp_path: Path) -> None:
    key, pub = generate_keypair(tmp_path / "keys")
    state = tmp_path / "state"
    mesh = mesh_on(state, anchors={"store": f"file:///{tmp_path}/elsewhere/a.jsonl",
                                   "key_file": str(key), "every_records": 5})
    with mesh:
        assert mesh.relay.mode == "process"
        for i in range(12):
            mesh.invoke(SPEC.name, {"text": f"invoice {i}"}, tenant="acme")
        store = FileAnchorStore(tmp_path / "elsewhere" / "a.jsonl")
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and not asyncio.run(store.list()):
            time.sleep(0.1)
    seqs = [a.seq for a in asyncio.run(store.list())]
    # the relay walks what is there when it wakes: each checkpoint covers >= 5 new records
    assert seqs and seqs[0] >= 5 and all(b - a >= 5 for a, b in itertools.pairwise(seqs))
    from aios_mesh.anchoring.keys import load_public_key

    report = asyncio.run(verify_anchored(JsonlAuditLog(state / "audit.jsonl"), store,
                                         AnchorVerifier(load_public_key(pub))))
    assert report.ok and report.anchored == seqs[-1]
    assert report.unanchored == (None if seqs[-1] == 12 else (seqs[-1] + 1, 12))
