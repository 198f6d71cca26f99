"""``aios-mesh doctor``: load each port's adapter and ask it whether it is healthy.

An adapter may offer ``async def health(self) -> None`` that raises a :class:`MeshError` when
its backend is unreachable; the error's hint becomes the fix shown to the user.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from aios_mesh.backends import PORTS, parse_url
from aios_mesh.errors import MeshError

if TYPE_CHECKING:
    from aios_mesh.mesh import Mesh

__all__ = ["Check", "run_checks"]


@dataclass(frozen=True, slots=True)
class Check:
    port: str
    url: str
    source: str
    ok: bool
    detail: str


def run_checks(mesh: Mesh) -> list[Check]:
    checks = []
    for port in PORTS:
        try:
            url, source = mesh.backend_url(port)
            shown = parse_url(url).redacted()
        except MeshError as exc:
            checks.append(Check(port, "?", "?", False, f"{exc.message}. {exc.hint or ''}"))
            continue
        try:
            adapter = mesh.port(port)
            health = getattr(adapter, "health", None)
            if health is not None:
                mesh.run_sync(health())
            checks.append(Check(port, shown, source, True, type(adapter).__name__))
        except MeshError as exc:
            checks.append(Check(port, shown, source, False,
                                f"{exc.message}" + (f" — fix: {exc.hint}" if exc.hint else "")))
        except Exception as exc:  # doctor reports, never crashes
            checks.append(Check(port, shown, source, False, f"{type(exc).__name__}: {exc}"))
    return checks
