"""Flyte orchestrators for aios-mesh.

* ``flyte-local://`` — :class:`FlyteLocalOrchestrator`: flytekit local execution in this
  process (the embedded default; no cluster);
* ``flyte://host:port?project=..&domain=..`` — :class:`FlyteRemoteOrchestrator`: FlyteRemote
  against a Flyte cluster (``flytectl demo`` or a real one).

``flytekit`` is imported on first use, not when this package is imported.
See docs/adapters/flyte.md.
"""

from aios_mesh_flyte.local import FlyteLocalOrchestrator
from aios_mesh_flyte.remote import FlyteRemoteOrchestrator

__all__ = ["FlyteLocalOrchestrator", "FlyteRemoteOrchestrator"]
