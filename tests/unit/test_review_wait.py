"""ReviewQueue.wait: a step that waits for humans resumes when another writer decides."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from aios_mesh.review import ReviewQueue


def _park(queue: ReviewQueue, n: int) -> list[str]:
    return [queue.enqueue(record_id=f"r-{i}", tenant="acme", capability="route-invoice@1",
                          reason="policy obligation require_human", payload={"i": i},
                          proposed={"action": "approve"}) for i in range(n)]


def test_wait_returns_pending_items_at_the_timeout(tmp_path: Path) -> None:
    queue = ReviewQueue(tmp_path / "review.db")
    ids = _park(queue, 2)
    started = time.monotonic()
    items = queue.wait(ids, timeout=0.3, poll_s=0.05)
    assert 0.25 <= time.monotonic() - started < 2
    assert [i.status for i in items] == ["pending", "pending"]


def test_wait_resumes_once_every_item_is_decided_by_another_connection(tmp_path: Path) -> None:
    waiting = ReviewQueue(tmp_path / "review.db")
    ids = _park(waiting, 2)
    reviewer = ReviewQueue(tmp_path / "review.db")  # as the CLI would open it

    def decide() -> None:
        time.sleep(0.2)
        reviewer.resolve(ids[0], approve=True, reviewer="alice")
        time.sleep(0.2)
        reviewer.resolve(ids[1], approve=False, reviewer="bob", note="wrong vendor")

    thread = threading.Thread(target=decide)
    thread.start()
    items = waiting.wait(ids, timeout=30, poll_s=0.05)
    thread.join()
    assert [(i.status, i.decided_by) for i in items] == [("approved", "alice"),
                                                         ("rejected", "bob")]
    assert items[0].final_output == {"action": "approve"} and items[1].final_output is None
