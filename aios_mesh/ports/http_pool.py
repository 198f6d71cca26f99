"""HTTP client plumbing the server-backed adapters share: one connection pool per running
event loop, and one request straight to an httpx transport with transport failures mapped to
:class:`~aios_mesh.errors.BackendTimeout` / :class:`~aios_mesh.errors.BackendUnavailable`.

``httpx`` is imported only when a request is sent (the core does not depend on it; the
adapters that use this bring it with their extra).

A pool (an ``httpx`` transport or client) belongs to the event loop that opened it: the mesh's
sync facade and ``asyncio.run`` callers each get their own, through :class:`PerLoop`.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

from aios_mesh.errors import BackendTimeout, BackendUnavailable

if TYPE_CHECKING:
    import httpx

__all__ = ["AsyncClosable", "PerLoop", "send"]


class AsyncClosable(Protocol):
    """Anything with ``async def aclose()`` (an httpx transport or client)."""

    async def aclose(self) -> None:
        """Release the connections."""


T = TypeVar("T", bound=AsyncClosable)


class PerLoop(Generic[T]):
    """One ``T`` per running event loop, made on first use by ``factory``; thread-safe."""

    def __init__(self, factory: Callable[[], T]) -> None:
        self._factory = factory
        self._items: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, T] = \
            weakref.WeakKeyDictionary()
        self._lock = threading.Lock()

    def get(self) -> T:
        """The running loop's ``T`` (made now if it has none)."""
        loop = asyncio.get_running_loop()
        with self._lock:
            item = self._items.get(loop)
            if item is None:
                item = self._items[loop] = self._factory()
            return item

    async def aclose(self) -> None:
        """Close this loop's ``T`` here and the others on their own loops; idempotent. The
        owner stays usable: a later :meth:`get` makes a new one."""
        try:
            current: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            current = None
        with self._lock:
            items = list(self._items.items())
            self._items.clear()
        for loop, item in items:
            if loop is current:
                await item.aclose()
            elif not loop.is_closed() and loop.is_running():
                with contextlib.suppress(RuntimeError):
                    asyncio.run_coroutine_threadsafe(item.aclose(), loop)


async def send(transport: httpx.AsyncBaseTransport, method: str, url: httpx.URL | str, *,
               content: bytes | None, headers: dict[str, str], wait: float, what: str,
               timeout_hint: str, start_hint: str) -> httpx.Response:
    """One request straight to ``transport`` (httpx's connection pool, without the
    per-request work of ``httpx.AsyncClient`` that these protocols do not use), its body
    read. ``wait`` seconds bound each phase; no answer in time is :class:`BackendTimeout`
    (``timeout_hint``), a transport failure :class:`BackendUnavailable` (``start_hint``);
    ``what`` names the server (``"BentoML service"``)."""
    import httpx

    extensions: dict[str, Any] = {"timeout": {"connect": wait, "read": wait, "write": wait,
                                              "pool": wait}}
    request = httpx.Request(method, url, content=content, headers=headers,
                            extensions=extensions)
    try:
        response = await transport.handle_async_request(request)
        try:
            await response.aread()
        finally:
            await response.aclose()
        return response
    except httpx.TimeoutException as exc:
        raise BackendTimeout(f"{what} {request.url} did not answer within {wait}s "
                             f"({type(exc).__name__})", hint=timeout_hint) from exc
    except httpx.TransportError as exc:
        raise BackendUnavailable(f"{what} {request.url} is unreachable: "
                                 f"{type(exc).__name__}: {exc}", hint=start_hint) from exc
