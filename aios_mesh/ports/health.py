"""The health seam every server-backed adapter offers, and the probes adapters share.

An adapter whose backend is a server has ``async def health(self) -> None``: it makes one real
round trip (a request, a connection, a ``PING``) and raises a :class:`MeshError` — with a
``hint`` saying how to fix it — when the backend does not answer. ``aios-mesh doctor`` calls
it under its own deadline; nothing else depends on it.

    if isinstance(adapter, HealthCheck):
        await adapter.health()
"""

from __future__ import annotations

import asyncio
from typing import Protocol, runtime_checkable

from aios_mesh.errors import BackendUnavailable

__all__ = ["HealthCheck", "http_probe", "tcp_probe"]


@runtime_checkable
class HealthCheck(Protocol):
    """An adapter that can check its backend answers (see the module docs)."""

    async def health(self) -> None:
        """Raise a :class:`MeshError` with a hint unless the backend answers."""


async def tcp_probe(host: str, port: int, *, timeout: float, what: str, hint: str) -> None:
    """Open (and close) a TCP connection to ``host:port`` within ``timeout`` seconds, for
    backends whose protocol has no cheap request; :class:`BackendUnavailable` otherwise."""
    try:
        async with asyncio.timeout(timeout):
            _, writer = await asyncio.open_connection(host, port)
    except (OSError, TimeoutError) as exc:
        said = "no answer" if isinstance(exc, TimeoutError) else type(exc).__name__
        raise BackendUnavailable(f"{what} at {host}:{port} is unreachable ({said})",
                                 hint=hint) from exc
    writer.close()
    try:
        await writer.wait_closed()
    except OSError:
        pass


async def http_probe(url: str, *, timeout: float, what: str, hint: str,
                     healthy: tuple[int, ...] | None = (200,)) -> None:
    """``GET url`` within ``timeout`` seconds; :class:`BackendUnavailable` unless the answer's
    status is in ``healthy`` (``None``: any HTTP answer proves the server is up). ``url`` must
    hold no secret (it is shown in the message)."""
    import httpx

    try:
        async with httpx.AsyncClient(timeout=timeout) as client:
            response = await client.get(url)
    except httpx.HTTPError as exc:
        raise BackendUnavailable(f"{what} at {url} is unreachable ({type(exc).__name__})",
                                 hint=hint) from exc
    if healthy is not None and response.status_code not in healthy:
        raise BackendUnavailable(f"{what} at {url} is not healthy (HTTP "
                                 f"{response.status_code})", hint=hint)
