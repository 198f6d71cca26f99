"""The one sync/async strategy: an async core, and this thin sync facade over it.

Each thread keeps one event loop and reuses it (creating a loop per call would cost more than
the whole pipeline). Calling the sync API from inside a running loop is a mistake we name
instead of deadlocking on.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from typing import Any, Self, TypeVar

from aios_mesh.errors import MeshError

__all__ = ["SyncFacade", "SyncRunner"]

T = TypeVar("T")


class SyncRunner:
    def __init__(self) -> None:
        self._local = threading.local()
        self._all: list[asyncio.AbstractEventLoop] = []
        self._lock = threading.Lock()

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            pass
        else:
            coro.close()
            raise MeshError("the sync API was called from inside a running event loop",
                            hint="await the async twin instead (ainvoke, ainvoke_many, "
                                 "aresolve_review, aprepare, aclose)")
        loop: asyncio.AbstractEventLoop | None = getattr(self._local, "loop", None)
        if loop is None or loop.is_closed():
            loop = asyncio.new_event_loop()
            self._local.loop = loop
            with self._lock:
                self._all.append(loop)
        return loop.run_until_complete(coro)

    def close(self) -> None:
        """Close the loops this runner made (call from the owning threads' exit, or at end)."""
        with self._lock:
            loops, self._all = self._all, []
        for loop in loops:
            if not loop.is_running() and not loop.is_closed():
                loop.run_until_complete(loop.shutdown_asyncgens())
                loop.close()


class SyncFacade:
    """The sync half of an object with an async core (the mesh, the gateway client):
    :meth:`run_sync`, :meth:`close` and both context managers, over the subclass's
    ``aclose``. One loop per thread, from a :class:`SyncRunner` the subclass sets up."""

    _sync: SyncRunner

    async def aclose(self) -> None:
        """Release what the object holds (the subclass says what)."""
        raise NotImplementedError

    def run_sync(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` to completion on this thread's event loop (the sync facade every sync
        method uses; for scripts and CLIs that hold an async call)::

            report = mesh.run_sync(mesh.ports.audit.verify())
        """
        return self._sync.run(coro)

    def close(self) -> None:
        self.run_sync(self.aclose())
        self._sync.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
