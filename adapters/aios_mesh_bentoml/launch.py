"""How to start the aios-mesh BentoML service: which interpreter, which command, which
environment. Used by ``aios-mesh serve bentoml`` (:mod:`aios_mesh_bentoml.serve`) and by
:mod:`aios_mesh_bentoml.testing`; imports neither ``bentoml`` nor ``httpx``.

BentoML runs from its own virtualenv (its dependency tree is heavy and pins what mlflow and
flytekit also pin). The interpreter is, in order: ``$AIOS_MESH_BENTOML_PYTHON``;
``<checkout>/.nox/bentoml/bin/python`` when it exists; this interpreter when it can import
``bentoml``. Create the environment with::

    python3 -m venv .nox/bentoml
    .nox/bentoml/bin/pip install -r serving/bentoml/requirements.txt
    .nox/bentoml/bin/pip install -e . --no-deps
"""

from __future__ import annotations

import importlib.util
import os
import sys
from collections.abc import Mapping
from pathlib import Path

from aios_mesh.errors import ConfigError

__all__ = ["CREATE_ENV_HINT", "SERVICE", "bentoml_command", "bentoml_python", "server_env"]

#: The import path ``bentoml serve`` loads.
SERVICE = "aios_mesh_bentoml.service:MeshModelService"

CREATE_ENV_HINT = ("create it: python3 -m venv .nox/bentoml && .nox/bentoml/bin/pip install "
                   "-r serving/bentoml/requirements.txt && .nox/bentoml/bin/pip install -e . "
                   "--no-deps  (or point AIOS_MESH_BENTOML_PYTHON at an interpreter that has "
                   "bentoml and aios-mesh)")

_CHECKOUT = Path(__file__).resolve().parents[2]


def bentoml_python(explicit: str | os.PathLike[str] | None = None) -> Path:
    """The interpreter that runs ``bentoml serve`` (see the module docstring), or a
    :class:`ConfigError` saying how to create one."""
    given = explicit or os.environ.get("AIOS_MESH_BENTOML_PYTHON")
    if given:
        path = Path(given)
        if not path.exists():
            raise ConfigError(f"no Python interpreter at {path}", hint=CREATE_ENV_HINT)
        return path
    local = _CHECKOUT / ".nox" / "bentoml" / "bin" / "python"
    if local.exists():
        return local
    if importlib.util.find_spec("bentoml") is not None:
        return Path(sys.executable)
    raise ConfigError("no BentoML environment found", hint=CREATE_ENV_HINT)


def bentoml_command(python: str | os.PathLike[str], port: int, *, host: str = "127.0.0.1",
                    service: str = SERVICE) -> list[str]:
    """``PYTHON -m bentoml serve SERVICE --host HOST --port PORT``."""
    return [str(python), "-m", "bentoml", "serve", service, "--host", host, "--port", str(port)]


def server_env(*, home: Path | None = None, model: str | None = None,
               registry: str | None = None, base_dir: Path | None = None,
               python_models: Mapping[str, str] | None = None) -> dict[str, str]:
    """Environment variables for the service process (merged over the caller's by the
    launcher). The aios-mesh variables are always set, so nothing leaks in from the caller's
    environment: ``AIOS_MESH_MODEL``, ``AIOS_MESH_REGISTRY``, ``AIOS_MESH_BASE_DIR``,
    ``AIOS_MESH_PYTHON_MODELS`` (``{"echo-upper/1": "pkg.mod:fn"}``)."""
    env = {"BENTOML_DO_NOT_TRACK": "True", "MLFLOW_DISABLE_TELEMETRY": "true",
           "PYTHONUNBUFFERED": "1",
           "AIOS_MESH_MODEL": model or "",
           "AIOS_MESH_REGISTRY": registry or "",
           "AIOS_MESH_BASE_DIR": str((base_dir or Path(".aios-mesh")).absolute()),
           "AIOS_MESH_PYTHON_MODELS": ",".join(f"{k}={v}"
                                               for k, v in (python_models or {}).items())}
    if home is not None:
        env["BENTOML_HOME"] = str(home)
    return env
