"""A small mesh for scale-out tests and examples, buildable in any Ray worker
(``MeshFactory(build="aios_mesh.scale.testing:demo_mesh", args=(state_dir,))``).

Capability ``upper``: ``{"text": t, "n": n}`` → ``{"text": t.upper(), "n": 2 n}``, answered
in process by a handler, so a job exercises the whole pipeline (validation, policy, records)
and nothing else. A row whose text is ``"crash-once"`` kills the worker process the first
time it is seen (``<state_dir>/crashed`` marks it), for worker-killed-mid-batch tests.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

from pydantic import BaseModel

from aios_mesh.capabilities import capability
from aios_mesh.config import config_from_mapping
from aios_mesh.mesh import Mesh

__all__ = ["Text", "Upper", "demo_mesh", "upper"]

_STATE: dict[str, Path] = {}


class Text(BaseModel):
    """The input of ``upper`` (``delay``: seconds the handler sleeps, to make jobs last)."""

    text: str
    n: int
    delay: float = 0.0


class Upper(BaseModel):
    """The output of ``upper``; ``node``: the Ray node that answered ("" outside Ray)."""

    text: str
    n: int
    node: str = ""


@capability("upper")
def upper(item: Text) -> Upper:
    """Upper-case the text, double the number (``crash-once``: see the module docstring)."""
    if item.text == "crash-once" and "state" in _STATE:
        marker = _STATE["state"] / "crashed"
        if not marker.exists():
            marker.write_text(str(os.getpid()))
            os.kill(os.getpid(), signal.SIGKILL)
    if item.delay > 0:
        time.sleep(item.delay)
    return Upper(text=item.text.upper(), n=item.n * 2, node=_node())


def _node() -> str:
    import sys

    ray = sys.modules.get("ray")  # only where Ray runs this: never imported here
    if ray is None or not ray.is_initialized():
        return ""
    return str(ray.get_runtime_context().get_node_id())


def demo_mesh(state_dir: str, version: str = "1", quota: str | None = None,
              calls_per_day: int | None = None) -> Mesh:
    """A mesh with ``upper`` (as capability version ``version``) and tenants ``acme`` and
    ``beta`` on ``state_dir``; ``quota`` (e.g. ``redis://...``) and ``calls_per_day`` give
    acme a budget that every worker shares (beta has none)."""
    _STATE["state"] = Path(state_dir)
    tenant: dict[str, object] = ({} if calls_per_day is None else
                                 {"quota": {"calls_per_day": calls_per_day}})
    config = config_from_mapping({
        "state_dir": state_dir, "tenants": {"acme": tenant, "beta": {}},
        "backends": {"quota": quota} if quota else {},
        "telemetry": {"lineage": False, "decision_events": False, "otel": False},
    })
    return Mesh(config, capabilities=[upper.model_copy(update={"version": version})])
