"""What the BentoML service serves, and how it answers a batch — without ``bentoml``.

:mod:`aios_mesh_bentoml.service` is a thin BentoML wrapper around :class:`ServedModels`, so
the logic here is importable (and testable) wherever aios-mesh is.

Environment (read by :meth:`ServedModels.from_env` when the service starts):

``AIOS_MESH_MODEL``
    ``name@alias`` or ``name/version``: a model of the registry, resolved once at start-up
    and loaded with :func:`aios_mesh_mlflow.loading.load_predictor`. The service then serves
    exactly that version (the alias is not followed afterwards).
``AIOS_MESH_REGISTRY``
    the registry URL (``mlflow+sqlite:////abs/mlflow.db``, ``mlflow+http://host:5000``);
    default: the embedded default (``mlflow+sqlite:///registry/mlflow.db``).
``AIOS_MESH_BASE_DIR``
    the folder relative registry URLs resolve against, like a mesh's state folder
    (default: ``./.aios-mesh``).
``AIOS_MESH_PYTHON_MODELS``
    extra Python batch predictors, ``name/version=package.module:callable`` separated by
    commas, e.g. ``echo-upper/1=aios_mesh_bentoml.testing:echo_upper``. When neither this
    nor ``AIOS_MESH_MODEL`` is set, the service serves ``echo-upper/1`` (the serving
    conformance contract) so a bare ``bentoml serve`` answers something.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path

from aios_mesh.ports.serving_protocol import ServedModel, parse_python_models
from aios_mesh.ports.serving_protocol import ServedModels as ServedModelsBase

__all__ = ["DEFAULT_PYTHON_MODELS", "ServedModel", "ServedModels", "parse_python_models"]

log = logging.getLogger("aios_mesh_bentoml.service")

#: What a bare ``bentoml serve aios_mesh_bentoml.service:MeshModelService`` serves.
DEFAULT_PYTHON_MODELS = "echo-upper/1=aios_mesh_bentoml.testing:echo_upper"


class ServedModels(ServedModelsBase):
    """The table of model versions one service process serves, and the batch function (see
    :class:`aios_mesh.ports.serving_protocol.ServedModels`)."""

    unit = "service"
    restart = "restart it with the version the registry resolves (aios-mesh serve bentoml " \
              "{name}@ALIAS)"
    log_hint = "see the BentoML service's log"
    logger = log

    # -- construction ------------------------------------------------------------------------

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> ServedModels:
        """Build the table from the environment (see the module docstring); loads models."""
        from aios_mesh.backends import DEFAULT_URLS

        env = os.environ if env is None else env
        table = cls()
        spec = env.get("AIOS_MESH_MODEL", "").strip()
        python = env.get("AIOS_MESH_PYTHON_MODELS")
        if python is None and not spec:
            python = DEFAULT_PYTHON_MODELS
        table.add_python(python or "", what="AIOS_MESH_PYTHON_MODELS entry",
                         example="echo-upper/1=aios_mesh_bentoml.testing:echo_upper")
        if spec:
            base = Path(env.get("AIOS_MESH_BASE_DIR") or Path.cwd() / ".aios-mesh")
            registry = env.get("AIOS_MESH_REGISTRY") or DEFAULT_URLS["registry"]
            from aios_mesh_mlflow.loading import load_predictor

            from aios_mesh.resolver import resolve_on

            ref = resolve_on(registry, spec, base_dir=base)

            table.add(ServedModel(ref, load_predictor(ref)))
            log.info("serving %s/%s (%s) from %s", ref.name, ref.version, spec, ref.source)
        return table
