"""What ``--config`` and ``--app`` name: the :class:`~aios_mesh.Mesh` a command works on.

The CLI's commands and every gateway worker process build their mesh here, so a config file
and an ``--app module:attr`` mean the same thing everywhere:

* ``config``: a TOML file; without one, ``./aios-mesh.toml`` when it exists, else the
  embedded defaults under ``./.aios-mesh``;
* ``app_ref``: capabilities declared in Python, ``module:attr`` naming a Mesh (which brings
  its own config), a capability spec or a list of them. The current directory is on the
  import path, like ``python -m``.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aios_mesh.errors import ConfigError

if TYPE_CHECKING:
    from aios_mesh.mesh import Mesh

__all__ = ["load_mesh"]


def load_mesh(config: Path | None, app_ref: str | None = None) -> Mesh:
    """The mesh that ``--config`` and ``--app`` name (raises :class:`ConfigError`)."""
    from aios_mesh.mesh import Mesh

    here = os.getcwd()
    if here not in sys.path:
        sys.path.insert(0, here)
    if config is None and Path("aios-mesh.toml").exists():
        config = Path("aios-mesh.toml")
    declared = _app(app_ref) if app_ref else []
    if isinstance(declared, Mesh):
        if config is not None:
            raise ConfigError(f"--app {app_ref} names a Mesh, which has its own config",
                              hint="drop --config, or point --app at its capabilities")
        return declared
    if config is not None:
        return Mesh.from_config(config, capabilities=declared)
    return Mesh.local(".aios-mesh", capabilities=declared)


def _app(ref: str) -> Any:
    """What ``--app module:attr`` names: a Mesh, or the capability specs it holds."""
    from aios_mesh.capabilities import CapabilitySpec, import_object
    from aios_mesh.mesh import Mesh

    found = import_object(ref)
    if isinstance(found, Mesh):
        return found
    if isinstance(found, CapabilitySpec):
        return [found]
    if isinstance(found, list | tuple) and all(isinstance(s, CapabilitySpec) for s in found):
        return list(found)
    raise ConfigError(f"--app {ref} is a {type(found).__name__}, not a Mesh or capabilities",
                      hint="point it at a Mesh, a @capability function or a list of them, "
                           "e.g. --app myapp.caps:mesh")
