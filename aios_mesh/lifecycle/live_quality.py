"""Live quality per capability and model version, from the reviewers' verdicts on recent
calls: what an SLO's ``min_quality`` is held to.

:class:`LiveQuality` is a record processor: for capabilities whose SLO declares
``min_quality`` it keeps the record ids of the latest calls per model version and, every
``refresh_every`` of them (off the caller's path), joins them with the review queue's labels
(a proposal kept counts as right). The SLO router asks :meth:`LiveQuality.accuracy` — a dict
read — before it routes a call.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING

from aios_mesh.recorder.processor import Recorded

if TYPE_CHECKING:
    from aios_mesh.review import ReviewQueue

__all__ = ["LiveQuality"]

_log = logging.getLogger("aios_mesh.lifecycle")


class LiveQuality:
    """Reviewed accuracy of each capability × model version over its latest ``window`` calls.

    Args:
        review: the review queue whose labels are read (``mesh.review_queue``).
        window: calls per version whose verdicts count.
        refresh_every: recompute after this many new calls of a capability.
    """

    name = "live-quality"

    def __init__(self, review: Callable[[], ReviewQueue], *, window: int = 2000,
                 refresh_every: int = 50) -> None:
        self._review = review
        self.window = window
        self.refresh_every = refresh_every
        self._ids: dict[tuple[str, str], deque[str]] = {}
        self._since: dict[str, int] = {}
        self._first: dict[str, str] = {}  # when each capability's first call was watched
        self._accuracy: dict[tuple[str, str], tuple[float, int]] = {}
        self._lock = threading.Lock()
        self._busy: set[str] = set()
        self._threads: list[threading.Thread] = []

    def accuracy(self, capability: str, version: str) -> tuple[float, int] | None:
        """(share of reviewed proposals kept, how many were reviewed) for ``version`` of
        ``capability``'s latest calls, or ``None`` before any verdict."""
        return self._accuracy.get((capability, version))

    def process(self, item: Recorded) -> None:
        call = item.call
        if call is None or call.spec.slo.min_quality is None:
            return
        version = str((item.record.model or {}).get("version", ""))
        key = (call.spec.name, version)
        ids = self._ids.get(key)
        if ids is None:
            with self._lock:
                ids = self._ids.setdefault(key, deque(maxlen=self.window))
        ids.append(item.record.record_id)
        name = call.spec.name
        self._first.setdefault(name, item.record.started_at)
        self._since[name] = self._since.get(name, 0) + 1
        if self._since[name] >= self.refresh_every and name not in self._busy:
            self._since[name] = 0
            self._busy.add(name)
            thread = threading.Thread(target=self._refresh, args=(name,), daemon=True,
                                      name="aios-mesh-live-quality")
            self._threads = [t for t in self._threads if t.is_alive()] + [thread]
            thread.start()

    def refresh(self, capability: str) -> None:
        """Recompute ``capability``'s accuracies now (what the background refresh does)."""
        versions = {v: set(ids) for (c, v), ids in list(self._ids.items()) if c == capability}
        kept = {v: 0 for v in versions}
        seen = {v: 0 for v in versions}
        # labels older than the first watched call judge none of them: not read
        for label in self._review().labels(capability=capability,
                                           since=self._first.get(capability)):
            if label.proposed is None:
                continue
            for version, ids in versions.items():
                if label.record_id in ids:
                    seen[version] += 1
                    kept[version] += label.proposal_kept
                    break
        for version, n in seen.items():
            if n:
                self._accuracy[(capability, version)] = (kept[version] / n, n)

    def _refresh(self, capability: str) -> None:
        try:
            self.refresh(capability)
        except Exception:  # a failed refresh keeps the last numbers
            _log.warning("live quality of %s could not be read", capability, exc_info=True)
        finally:
            self._busy.discard(capability)

    def flush(self, timeout: float) -> bool:
        for thread in list(self._threads):
            thread.join(timeout)
        return not any(t.is_alive() for t in self._threads)

    def close(self) -> None:
        self.flush(10.0)
