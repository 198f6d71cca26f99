"""Record ids and timestamps: uuid4-shaped, unique across threads and forked children; the
cached ISO timestamp is exactly what ``datetime.isoformat`` writes."""

from __future__ import annotations

import os
import threading
import uuid
from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from aios_mesh.record import _iso, new_record_id, utc_now_iso

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def test_ids_are_version_4_uuids() -> None:
    for _ in range(200):
        text = new_record_id()
        parsed = uuid.UUID(text)
        assert parsed.version == 4 and parsed.variant == uuid.RFC_4122 and str(parsed) == text


def test_ids_are_unique_across_threads() -> None:
    seen: list[list[str]] = [[] for _ in range(8)]

    def take(mine: list[str]) -> None:
        mine.extend(new_record_id() for _ in range(2_000))

    threads = [threading.Thread(target=take, args=(mine,)) for mine in seen]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    every = [i for mine in seen for i in mine]
    assert len(set(every)) == len(every) == 16_000


def test_a_forked_child_never_repeats_the_parents_ids() -> None:
    new_record_id()  # the pool now holds ids the parent will hand out next
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        os.write(write, "\n".join(new_record_id() for _ in range(100)).encode())
        os._exit(0)
    os.close(write)
    with os.fdopen(read) as pipe:
        child = set(pipe.read().split("\n"))
    os.waitpid(pid, 0)
    parent = {new_record_id() for _ in range(100)}
    assert len(child) == 100 and not child & parent


@given(st.integers(min_value=0, max_value=4_102_444_800 * 10**9))  # up to 2100
def test_cached_iso_timestamp_matches_datetime_isoformat(ns: int) -> None:
    expected = (EPOCH + timedelta(microseconds=ns // 1000)).isoformat()
    assert _iso(ns) == expected
    assert _iso(ns - ns % 10**9) == (EPOCH + timedelta(seconds=ns // 10**9)).isoformat()


def test_utc_now_iso_is_now() -> None:
    before = datetime.now(UTC)
    stamp = datetime.fromisoformat(utc_now_iso())
    tick = timedelta(microseconds=1)  # datetime.now rounds, utc_now_iso truncates
    assert before - tick <= stamp <= datetime.now(UTC) + tick
