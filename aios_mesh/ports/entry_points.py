"""The entry-point groups through which adapter packages plug into the core.

The core names no adapter package: an adapter declares what it contributes in its
distribution's metadata (``pyproject.toml``), and the core finds it there when it is needed::

    [project.entry-points."aios_mesh.cli"]                 # CLI subcommands
    "serve.bentoml" = "aios_mesh_bentoml.serve:command [bentoml]"

    [project.entry-points."aios_mesh.model_loaders"]       # in-process model loaders
    "*" = "aios_mesh_mlflow.loading:load_predictor [mlflow]"

    [project.entry-points."aios_mesh.testing.launchers"]   # real servers for tests
    kafka = "aios_mesh_kafka.testing:tansu_broker [kafka]"

The ``[extra]`` after an object reference names the extra that installs what the object
needs; when it is missing the error says ``pip install "aios-mesh[extra]"``. Nothing is
imported until an entry point is loaded.
"""

from __future__ import annotations

import importlib.metadata
from typing import Any, Final

from aios_mesh.errors import ConfigError

__all__ = [
    "CLI_GROUP",
    "LAUNCHERS_GROUP",
    "MODEL_LOADERS_GROUP",
    "find_entry_points",
    "install_hint",
    "load_entry_point",
]

#: CLI subcommands, named ``GROUP.COMMAND`` (``serve.bentoml`` is ``aios-mesh serve bentoml``).
CLI_GROUP: Final = "aios_mesh.cli"
#: Model loaders of :class:`~aios_mesh.embedded.serving.InProcessServing`, named by the scheme
#: of ``ModelRef.source`` (``models``, ``runs``, ``file`` for a plain path ...; ``*`` for any
#: scheme no other loader names). See :mod:`aios_mesh.ports.model_loader`.
MODEL_LOADERS_GROUP: Final = "aios_mesh.model_loaders"
#: Context managers that start a real server for tests (``kafka``, ``nats``, ``redis`` ...);
#: :func:`aios_mesh.testing.launcher` finds them.
LAUNCHERS_GROUP: Final = "aios_mesh.testing.launchers"


def find_entry_points(group: str) -> dict[str, importlib.metadata.EntryPoint]:
    """The entry points of ``group`` by name, without loading any.

    The same distribution seen twice on ``sys.path`` counts once; two *different* objects
    under one name raise :class:`ConfigError` (which one wins would depend on the path).
    """
    found: dict[str, importlib.metadata.EntryPoint] = {}
    for ep in importlib.metadata.entry_points(group=group):
        seen = found.get(ep.name)
        if seen is None:
            found[ep.name] = ep
        elif seen.value != ep.value:
            raise ConfigError(f"two plugins claim {ep.name!r} in entry-point group {group!r}: "
                              f"{seen.value} and {ep.value}",
                              hint="uninstall one of the two packages, or pass the object "
                                   "you want explicitly")
    return found


def install_hint(ep: importlib.metadata.EntryPoint) -> str:
    """``pip install "aios-mesh[extra]"`` for the extras ``ep`` declares."""
    dist = ep.dist.name if ep.dist is not None else "aios-mesh"
    if ep.extras:
        return f'pip install "{dist}[{",".join(ep.extras)}]"'
    return f"install what {ep.module} imports (see the adapter's docs)"


def load_entry_point(ep: importlib.metadata.EntryPoint, *, what: str) -> Any:
    """Import the object ``ep`` names; a missing dependency becomes a :class:`ConfigError`
    that names it and the extra to install (``what`` says what needed it)."""
    try:
        return ep.load()
    except ImportError as exc:
        missing = f" ({exc.name} is not installed)" if exc.name else ""
        target = f"{ep.module}:{ep.attr}" if ep.attr else ep.module
        raise ConfigError(f"{what} is not available: {target} cannot be imported{missing}",
                          hint=install_hint(ep)) from exc
