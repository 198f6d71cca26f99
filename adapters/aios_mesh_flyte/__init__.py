"""Flyte for aios-mesh: orchestrators, and capabilities callable from Flyte tasks.

* ``flyte-local://`` — :class:`FlyteLocalOrchestrator`: flytekit local execution in this
  process (the embedded default; no cluster);
* ``flyte://host:port?project=..&domain=..`` — :class:`FlyteRemoteOrchestrator`: FlyteRemote
  against a Flyte cluster (``flytectl demo`` or a real one);
* :mod:`aios_mesh_flyte.tasks` — :func:`capability_task`, :func:`invoke`,
  :func:`current_mesh`, :func:`mesh_workflow`, :func:`workflow_lineage` ... for workflow code.

``flytekit`` is imported on first use, not when this package is imported: the names of
:mod:`aios_mesh_flyte.tasks` load it when first touched. See docs/adapters/flyte.md.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from aios_mesh_flyte.local import FlyteLocalOrchestrator
from aios_mesh_flyte.remote import FlyteRemoteOrchestrator

if TYPE_CHECKING:
    from aios_mesh_flyte.tasks import (
        CONFIG_ENV,
        FlyteRun,
        capability_task,
        close_meshes,
        current_mesh,
        current_run,
        emit_workflow_run,
        invoke,
        mesh_workflow,
        model_version_task,
        register_capabilities,
        resolve_model_version,
        unregister_capabilities,
        workflow_lineage,
    )

__all__ = [
    "CONFIG_ENV",
    "FlyteLocalOrchestrator",
    "FlyteRemoteOrchestrator",
    "FlyteRun",
    "capability_task",
    "close_meshes",
    "current_mesh",
    "current_run",
    "emit_workflow_run",
    "invoke",
    "mesh_workflow",
    "model_version_task",
    "register_capabilities",
    "resolve_model_version",
    "unregister_capabilities",
    "workflow_lineage",
]

_TASKS = frozenset(__all__) - {"FlyteLocalOrchestrator", "FlyteRemoteOrchestrator"}


def __getattr__(name: str) -> Any:
    """Load :mod:`aios_mesh_flyte.tasks` (and flytekit) only when one of its names is used."""
    if name in _TASKS:
        return getattr(importlib.import_module("aios_mesh_flyte.tasks"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
