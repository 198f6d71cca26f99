"""``aios-mesh doctor``: probe every configured backend for real, with a short deadline.

Each port's adapter (and each backend under ``[backends.serving_named]``) is built fresh and,
when it offers the health seam (:class:`aios_mesh.ports.health.HealthCheck`), asked to make one
real round trip to its backend. All probes run at once, each under ``timeout`` seconds, so a
run with every backend down takes about ``timeout`` seconds, not their sum. A failure carries
the adapter's fix-it hint plus where the URL came from, so the reader knows what to change.

    checks = run_checks(mesh, timeout=3.0)
    [c for c in checks if not c.ok]
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Literal

from aios_mesh.backends import PORTS, PortName, load_adapter, parse_url, redact_url
from aios_mesh.errors import MeshError
from aios_mesh.ports.health import HealthCheck

if TYPE_CHECKING:
    from aios_mesh.mesh import Mesh

__all__ = ["DEFAULT_TIMEOUT_S", "LOAD_TIMEOUT_S", "Check", "run_checks"]

#: Seconds each backend may take to answer its probe.
DEFAULT_TIMEOUT_S = 3.0
#: Seconds building an adapter may take: local work (importing an SDK such as MLflow takes
#: seconds on a busy host), so it is not held to the probe's deadline.
LOAD_TIMEOUT_S = 60.0

Status = Literal["ok", "down"]


@dataclass(frozen=True, slots=True)
class Check:
    """The verdict on one backend.

    Attributes:
        port: the port (``serving:NAME`` for a named serving backend).
        url: its URL, secrets masked.
        source: where the URL came from (argument, environment, config, default).
        status: ``ok`` (it answered, or it is embedded and loaded) or ``down``.
        detail: what answered (the adapter and the time taken), or what went wrong.
        hint: how to fix it (``None`` when ok).
    """

    port: str
    url: str
    source: str
    status: Status
    detail: str
    hint: str | None = None

    @property
    def ok(self) -> bool:
        """Whether the backend is usable."""
        return self.status == "ok"


def _where(port: str, source: str) -> str:
    """Where to change the URL that was used, by where it came from."""
    if source == "environment":
        return f"or fix AIOS_MESH_{port.upper()}_URL"
    if port.startswith("serving:"):
        return f"or fix {port.split(':', 1)[1]} under [backends.serving_named] in the config"
    if source == "config":
        return f"or fix {port} under [backends] in the config"
    return f"or set {port} under [backends] in the config"


async def _probe(port: str, shown: str, source: str, load: Callable[[], object],
                 timeout: float, *, owned: bool = True) -> Check:
    started = time.perf_counter()
    adapter: object = None
    try:
        async with asyncio.timeout(LOAD_TIMEOUT_S):
            adapter = await asyncio.to_thread(load)
        answered = isinstance(adapter, HealthCheck)
        if isinstance(adapter, HealthCheck):
            async with asyncio.timeout(timeout):
                await adapter.health()
    except MeshError as exc:
        return Check(port, shown, source, "down", exc.message,
                     f"{exc.hint} ({_where(port, source)})" if exc.hint
                     else _where(port, source).removeprefix("or ").capitalize())
    except TimeoutError:
        if adapter is None:
            return Check(port, shown, source, "down",
                         f"its adapter took over {LOAD_TIMEOUT_S:g}s to load",
                         "see what its from_url() waits for")
        return Check(port, shown, source, "down", f"no answer within {timeout:g}s",
                     f"start the backend at {shown} {_where(port, source)}")
    except Exception as exc:  # the doctor reports, it never crashes
        return Check(port, shown, source, "down", f"{type(exc).__name__}: {exc}",
                     f"see the backend's log {_where(port, source)}")
    finally:
        if owned:
            await _close(adapter)
    took = (time.perf_counter() - started) * 1000
    what = "answered" if answered else "loaded (nothing to reach)"
    return Check(port, shown, source, "ok", f"{type(adapter).__name__} {what} in {took:.0f} ms")


async def _close(adapter: object) -> None:
    close: Callable[[], Awaitable[None]] | None = getattr(adapter, "aclose", None)
    if close is None:
        return
    try:
        async with asyncio.timeout(1.0):
            await close()
    except Exception:  # a probe's adapter that fails to close changes no verdict
        return


def _same(adapter: object) -> object:
    return adapter


def _fresh(mesh: Mesh, port: PortName) -> object:
    return mesh.ports.fresh(port)[0]


async def _checks(mesh: Mesh, timeout: float) -> list[Check]:
    probes = []
    for port in PORTS:
        try:
            url, source = mesh.backend_url(port)
            shown = parse_url(url).redacted()
        except MeshError as exc:
            probes.append(asyncio.sleep(0, Check(port, "?", "?", "down", exc.message, exc.hint)))
            continue
        given = mesh.ports.given(port)
        if given is not None:  # an instance handed to the Mesh: probe it, never close it
            probes.append(_probe(port, f"(given {type(given).__name__})", source,
                                 partial(_same, given), timeout, owned=False))
            continue
        probes.append(_probe(port, shown, source, partial(_fresh, mesh, port), timeout))
    base = mesh.config.state_path
    for name, url in mesh.config.backends.serving_named.items():
        probes.append(_probe(f"serving:{name}", redact_url(url), "config",
                             partial(load_adapter, "serving", url, base_dir=base), timeout))
    return list(await asyncio.gather(*probes))


def run_checks(mesh: Mesh, *, timeout: float = DEFAULT_TIMEOUT_S) -> list[Check]:
    """Probe every port's backend (and every named serving backend) of ``mesh`` at once,
    each within ``timeout`` seconds; one :class:`Check` per backend, in port order."""
    return mesh.run_sync(_checks(mesh, timeout))
