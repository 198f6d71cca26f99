"""What each worker of ``aios-mesh gateway`` serves on the ``gateway`` profile:
``--app examples.invoice_intake.replica:mesh``, the intake's capabilities on the job's config
(``$INVOICE_INTAKE_CONFIG``), with a read replica of the vendor index of its own.

Why a replica: Qdrant Edge, the embedded retrieval default, is an engine inside one process
(one process opens a folder). The vendor master is read-only while invoices flow, so each
worker copies the job's index into a folder of its own when it starts and answers from it.
The copy keeps the index's snapshot digest, so every worker's records name the snapshot the
lock file pins. Where retrieval is a Qdrant server (the ``compose`` profile), the workers share
it and nothing is copied.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from aios_mesh.backends import parse_url
from aios_mesh.config import load_config
from aios_mesh.errors import ConfigError
from aios_mesh.mesh import Mesh
from examples.invoice_intake.capabilities import ALL
from examples.invoice_intake.gateway import CONFIG_ENV

__all__ = ["CONFIG_ENV", "mesh", "replica_mesh"]



def replica_mesh(config_path: Path) -> Mesh:
    """The mesh on ``config_path`` with a private copy of an embedded (Qdrant Edge) index."""
    config = load_config(config_path)
    url, _ = config.backend_url("retrieval")
    if url.startswith("qdrant-edge:"):
        source = parse_url(url).resolve_path(config.state_path)
        copy = config.state_path / "gateway" / "replicas" / str(os.getpid())
        shutil.rmtree(copy, ignore_errors=True)
        shutil.copytree(source, copy)
        # the URL for this process only: the workers share the rest of the config
        os.environ["AIOS_MESH_RETRIEVAL_URL"] = f"qdrant-edge:///{copy}"
    return Mesh.from_config(config_path, capabilities=list(ALL))


def _from_env() -> Mesh:
    path = os.environ.get(CONFIG_ENV)
    if not path:
        raise ConfigError(f"{CONFIG_ENV} is not set",
                          hint=f"export {CONFIG_ENV}=STATE/aios-mesh.toml (the job's config)")
    return replica_mesh(Path(path))


mesh = _from_env()
