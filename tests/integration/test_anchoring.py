"""The anchored audit log against real stores: a JSONL file and a PostgreSQL table (the
machine's server) as the audit log; a file, a PostgreSQL table, a sqlite table and the
embedded event bus as the anchor store.

After an anchor, every tail tampering the chain alone cannot see is reported: truncation by
1, 10 and 100 records, emptying, a re-hashed last record, a forged append (unanchored).
"""

from __future__ import annotations

import inspect
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from aios_mesh.anchoring.check import Anchorer, verify_anchored
from aios_mesh.anchoring.keys import AnchorSigner, AnchorVerifier
from aios_mesh.anchoring.stores import BusAnchorStore, FileAnchorStore, SqlAnchorStore
from aios_mesh.backends import load_adapter
from aios_mesh.embedded.events import SqliteEventBus
from aios_mesh.errors import IntegrityError, InvalidInput
from aios_mesh.ports.anchor import (
    Anchor,
    AnchorAheadError,
    AnchorFormatError,
    AnchorMismatchError,
    AnchorSignatureError,
)
from aios_mesh.testing.conformance.audit import JsonlTamperer

pytestmark = pytest.mark.integration

SERVER = "postgresql://postgres@127.0.0.1:5432"
N = 120


@pytest.fixture(scope="module")
def database() -> Iterator[str]:
    from aios_mesh_postgres.testing import postgres_database

    with postgres_database(f"{SERVER}/postgres", prefix="aios_mesh_anchor") as url:
        yield url


async def _do(result: Any) -> None:
    if inspect.isawaitable(result):
        await result


@pytest.fixture(params=["jsonl", "postgres"])
async def log(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[tuple[Any, Any]]:
    """(audit log, tamperer) on each audit store."""
    if request.param == "jsonl":
        audit = load_adapter("audit", "jsonl:///audit.jsonl", base_dir=tmp_path)
        yield audit, JsonlTamperer(audit.path)
    else:
        from aios_mesh_postgres.testing import PostgresTamperer

        url = request.getfixturevalue("database")
        audit = load_adapter("audit", f"{url}?table=audit_{uuid.uuid4().hex[:8]}",
                             base_dir=tmp_path)
        yield audit, PostgresTamperer(audit.conninfo, audit.table)
    await audit.aclose()


@pytest.fixture(params=["file", "postgres", "sqlite", "bus"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Any]:
    """Each anchor store, on another path or database than the log."""
    if request.param == "file":
        yield FileAnchorStore(tmp_path / "elsewhere" / "anchors.jsonl")
        return
    if request.param == "bus":
        bus = SqliteEventBus(tmp_path / "events.db")
        made = BusAnchorStore(bus, "aios.mesh.anchors", owned=True)
        yield made
        await made.aclose()
        return
    url = request.getfixturevalue("database") if request.param == "postgres" else "sqlite://"
    made = SqlAnchorStore.open(url, folder=tmp_path / "anchor-state")
    yield made
    await made.aclose()


@pytest.fixture
def signer() -> AnchorSigner:
    return AnchorSigner(Ed25519PrivateKey.generate())


async def _fill(audit: Any, n: int, start: int = 1) -> None:
    for i in range(start, start + n):
        await audit.append({"record_id": f"r-{i}", "tenant": "acme", "outcome": "ok", "i": i})


async def _anchored(audit: Any, store: Any, signer: AnchorSigner) -> Anchor:
    await _fill(audit, N)
    anchor = await Anchorer(audit, store, signer).checkpoint()
    assert anchor is not None and anchor.seq == N
    report = await verify_anchored(audit, store, AnchorVerifier(signer.public_key()))
    assert report.ok and report.fully_anchored and report.anchored == N
    return anchor


async def test_every_store_keeps_anchors_in_order(store: Any, tmp_path: Path,
                                                  signer: AnchorSigner) -> None:
    audit = load_adapter("audit", "jsonl:///audit.jsonl", base_dir=tmp_path)
    await _fill(audit, 3)
    anchorer = Anchorer(audit, store, signer)
    first = await anchorer.checkpoint()
    assert await anchorer.checkpoint() is None  # nothing new
    await _fill(audit, 2, start=4)
    second = await anchorer.checkpoint()
    assert first is not None and second is not None
    assert [a.seq for a in await store.list()] == [3, 5]
    assert (await store.list())[-1] == second
    report = await verify_anchored(audit, store, AnchorVerifier(signer.public_key()))
    assert report.fully_anchored and report.anchor == second


@pytest.mark.parametrize("cut", [1, 10, 100])
async def test_truncated_tail_is_reported(log: tuple[Any, Any], cut: int,
                                          tmp_path: Path, signer: AnchorSigner) -> None:
    audit, tamper = log
    store = FileAnchorStore(tmp_path / "anchors" / "a.jsonl")
    await _anchored(audit, store, signer)
    await _do(tamper.truncate(N - cut))
    report = await verify_anchored(audit, store, AnchorVerifier(signer.public_key()))
    assert report.chain.ok  # the chain alone cannot see it
    assert not report.ok
    assert [(p.seq, p.kind) for p in report.problems] == [(N, "truncated")]
    assert f"holds {N - cut} records" in report.problems[0].message
    with pytest.raises(AnchorAheadError) as caught:  # and no new anchor launders it
        await Anchorer(audit, store, signer).checkpoint(force=True)
    assert caught.value.hint and "rebaseline" in caught.value.hint


async def test_emptied_log_is_reported(log: tuple[Any, Any], tmp_path: Path,
                                       signer: AnchorSigner) -> None:
    audit, tamper = log
    store = FileAnchorStore(tmp_path / "anchors" / "a.jsonl")
    await _anchored(audit, store, signer)
    await _do(tamper.truncate(0))
    report = await verify_anchored(audit, store, AnchorVerifier(signer.public_key()))
    assert report.chain.ok and report.chain.records == 0
    assert [(p.seq, p.kind) for p in report.problems] == [(N, "emptied")]


async def test_rehashed_tail_is_reported(log: tuple[Any, Any], tmp_path: Path,
                                         signer: AnchorSigner) -> None:
    audit, tamper = log
    store = FileAnchorStore(tmp_path / "anchors" / "a.jsonl")
    anchorer = Anchorer(audit, store, signer)
    await _fill(audit, 50)
    await anchorer.checkpoint()
    await _fill(audit, N - 50, start=51)
    await anchorer.checkpoint()
    await _do(tamper.rehash(N))
    report = await verify_anchored(audit, store, AnchorVerifier(signer.public_key()))
    assert report.chain.ok
    assert [(p.seq, p.kind) for p in report.problems] == [(N, "rewritten")]
    assert "after seq 50" in report.problems[0].message  # the older anchor still matches
    with pytest.raises(AnchorMismatchError):
        await Anchorer(audit, store, signer).checkpoint(force=True)


async def test_forged_append_is_unanchored(log: tuple[Any, Any], tmp_path: Path,
                                           signer: AnchorSigner) -> None:
    audit, tamper = log
    store = FileAnchorStore(tmp_path / "anchors" / "a.jsonl")
    await _anchored(audit, store, signer)
    await _do(tamper.insert(N))
    report = await verify_anchored(audit, store, AnchorVerifier(signer.public_key()))
    assert report.chain.ok and report.ok  # nothing can tell it from an honest append ...
    assert report.anchored == N
    assert report.unanchored == (N + 1, N + 1)  # ... but nothing vouches for it either
    assert not report.fully_anchored


async def test_anchor_signed_by_another_key_is_refused(tmp_path: Path,
                                                       signer: AnchorSigner) -> None:
    audit = load_adapter("audit", "jsonl:///audit.jsonl", base_dir=tmp_path)
    store = FileAnchorStore(tmp_path / "anchors.jsonl")
    await _fill(audit, 5)
    await Anchorer(audit, store, signer).checkpoint()
    other = AnchorVerifier(Ed25519PrivateKey.generate().public_key())
    with pytest.raises(AnchorSignatureError) as caught:
        await verify_anchored(audit, store, other)
    assert signer.key_id in caught.value.message and caught.value.hint
    # a forged anchor among valid ones: reported, and the valid one is used
    intruder = AnchorSigner(Ed25519PrivateKey.generate())
    await store.put(intruder.sign("checkpoint", 5, (await audit.read())[-1].hash))
    report = await verify_anchored(audit, store, AnchorVerifier(signer.public_key()))
    assert [p.kind for p in report.problems] == ["bad-signature"]
    assert report.anchored == 5


async def test_edited_anchor_fails_its_signature(tmp_path: Path, signer: AnchorSigner) -> None:
    audit = load_adapter("audit", "jsonl:///audit.jsonl", base_dir=tmp_path)
    path = tmp_path / "anchors.jsonl"
    store = FileAnchorStore(path)
    await _fill(audit, 8)
    await Anchorer(audit, store, signer).checkpoint()
    doc = orjson.loads(path.read_bytes())
    doc["seq"] = 3  # make the anchor vouch for less, to hide a cut
    path.write_bytes(orjson.dumps(doc) + b"\n")
    with pytest.raises(AnchorSignatureError):
        await verify_anchored(audit, store, AnchorVerifier(signer.public_key()))
    path.write_bytes(b'{"not": "an anchor"}\n')
    with pytest.raises(AnchorFormatError):
        await verify_anchored(audit, store, AnchorVerifier(signer.public_key()))


async def test_rebaseline_accepts_a_restored_log(log: tuple[Any, Any], tmp_path: Path,
                                                 signer: AnchorSigner) -> None:
    audit, tamper = log
    store = FileAnchorStore(tmp_path / "anchors" / "a.jsonl")
    old = await _anchored(audit, store, signer)
    await _do(tamper.truncate(N - 10))  # "restored from an older copy"
    anchorer = Anchorer(audit, store, signer)
    with pytest.raises(InvalidInput):
        await anchorer.rebaseline("  ")
    rebase = await anchorer.rebaseline("restored from the 02:00 backup")
    assert (rebase.kind, rebase.seq, rebase.supersedes_seq, rebase.supersedes_head) == (
        "rebaseline", N - 10, N, old.head)
    verifier = AnchorVerifier(signer.public_key())
    report = await verify_anchored(audit, store, verifier)
    assert report.fully_anchored and report.anchored == N - 10
    await _fill(audit, 3, start=N - 9)
    assert (await Anchorer(audit, store, signer).checkpoint()) is not None
    assert (await verify_anchored(audit, store, verifier)).fully_anchored


async def test_rebaseline_refuses_a_broken_chain(tmp_path: Path, signer: AnchorSigner) -> None:
    audit = load_adapter("audit", "jsonl:///audit.jsonl", base_dir=tmp_path)
    await _fill(audit, 6)
    JsonlTamperer(audit.path).change(3)
    with pytest.raises(IntegrityError, match="chain is broken"):
        await Anchorer(audit, FileAnchorStore(tmp_path / "a.jsonl"), signer).rebaseline("x")
