"""Client-side micro-batching: concurrent calls of one model coalesce into one
``infer_batch`` (up to ``max_size`` items or ``max_wait_s``), and each caller gets its own
answer back — the same idea as Triton's dynamic batcher and BentoML's adaptive batching, done
before the network so one request carries the whole batch.

Batchers are per event loop (futures belong to a loop): asyncio callers on one loop share
them (``ainvoke`` from many tasks, ``invoke_many``); threads using the sync facade each have
their own loop and batch only among their own calls.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Mapping
from typing import Any

from aios_mesh.errors import InvalidOutput
from aios_mesh.ports.registry import ModelRef
from aios_mesh.ports.serving import Prediction, Serving

__all__ = ["BatcherPool", "MicroBatcher"]


class MicroBatcher:
    def __init__(self, serving: Serving, model: ModelRef, *, max_size: int,
                 max_wait_s: float, timeout: float | None) -> None:
        self.serving = serving
        self.model = model
        self.max_size = max_size
        self.max_wait_s = max_wait_s
        self.timeout = timeout
        self._pending: list[tuple[Mapping[str, Any], asyncio.Future[Prediction]]] = []
        self._timer: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.batches = 0
        self.items = 0

    async def infer(self, payload: Mapping[str, Any]) -> Prediction:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Prediction] = loop.create_future()
        self._pending.append((payload, future))
        if len(self._pending) >= self.max_size:
            self._flush()
        elif self._timer is None:
            self._timer = loop.call_later(self.max_wait_s, self._flush)
        return await future

    def _flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        batch, self._pending = self._pending, []
        batch = [(p, f) for p, f in batch if not f.done()]  # callers that gave up
        if batch:
            task = asyncio.ensure_future(self._run(batch))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _run(self, batch: list[tuple[Mapping[str, Any], asyncio.Future[Prediction]]]
                   ) -> None:
        self.batches += 1
        self.items += len(batch)
        try:
            answers = await self.serving.infer_batch(self.model, [p for p, _ in batch],
                                                     timeout=self.timeout)
            if len(answers) != len(batch):
                raise InvalidOutput(f"{self.model.name}/{self.model.version} returned "
                                    f"{len(answers)} answers for a batch of {len(batch)}")
        except BaseException as exc:  # every waiting caller gets the failure
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            if not isinstance(exc, Exception):
                raise
            return
        for (_, future), answer in zip(batch, answers, strict=True):
            if not future.done():
                future.set_result(answer)


class BatcherPool:
    """One :class:`MicroBatcher` per (event loop, backend, model version)."""

    def __init__(self) -> None:
        self._by_loop: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop,
                                                 dict[tuple[str, str, str], MicroBatcher]]
        self._by_loop = weakref.WeakKeyDictionary()
        # The last loop's batchers: a WeakKeyDictionary lookup makes a new weakref each time.
        self._last: tuple[weakref.ref[asyncio.AbstractEventLoop],
                          dict[tuple[str, str, str], MicroBatcher]] | None = None

    def get(self, label: str, serving: Serving, model: ModelRef, *, max_size: int,
            max_wait_s: float, timeout: float | None) -> MicroBatcher:
        loop = asyncio.get_running_loop()
        last = self._last
        if last is not None and last[0]() is loop:
            batchers = last[1]
        else:
            batchers = self._by_loop.setdefault(loop, {})
            self._last = (weakref.ref(loop), batchers)
        key = (label, model.name, model.version)
        found = batchers.get(key)
        if found is None:
            found = batchers[key] = MicroBatcher(serving, model, max_size=max_size,
                                                 max_wait_s=max_wait_s, timeout=timeout)
        return found
