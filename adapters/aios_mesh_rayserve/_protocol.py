"""The wire protocol between :class:`~aios_mesh_rayserve.RayServeServing` and the aios-mesh
Ray Serve deployment, and the table of model versions a replica serves — free of ``ray``
and ``httpx``, so both sides (and unit tests) import it.

The JSON shapes, the per-item error mapping and the table of served versions are the
core's :mod:`aios_mesh.ports.serving_protocol` (the BentoML adapter speaks the same one);
here are only the Ray Serve words for them. An item naming a version the deployment does
not serve fails the whole request with 404 (JSON body) before any item joins a
``@serve.batch`` batch; a body that does not parse is 400. In handle mode the same item and
answer lists travel as Python objects.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Final

from aios_mesh.ports.registry import ModelRef
from aios_mesh.ports.serving import BatchPredictor
from aios_mesh.ports.serving_protocol import AnswerHints, ServedModel, parse_python_models
from aios_mesh.ports.serving_protocol import ServedModels as ServedModelsBase

__all__ = ["HINTS", "ServedModels", "parse_python_models"]

log = logging.getLogger("aios_mesh_rayserve.deployment")

#: How :class:`~aios_mesh_rayserve.RayServeServing` words an answer that went wrong.
HINTS: Final = AnswerHints(
    protocol="point the URL's route at an aios-mesh Ray Serve application",
    version="the deployment must serve exactly the requested version",
    log="see the Ray Serve replica's log")


class ServedModels(ServedModelsBase):
    """The model versions one replica serves, and how it answers a batch of items (see
    :class:`aios_mesh.ports.serving_protocol.ServedModels`)."""

    unit = "deployment"
    restart = "redeploy it with the version the registry resolves (aios-mesh serve rayserve " \
              "{name}@ALIAS)"
    log_hint = "see the Ray Serve replica's log"
    logger = log

    @classmethod
    def load(cls, python_models: Mapping[str, str] | None = None,
             registered: Sequence[ModelRef] = (),
             loader: Callable[[ModelRef], BatchPredictor] | None = None) -> ServedModels:
        """Import the Python batch predictors (``name/version`` → ``module:callable``) and
        load each registered model version with ``loader`` (the MLflow loader by default)."""
        table = cls()
        table.add_python(python_models or {},
                         example="echo-upper/1=aios_mesh_rayserve.testing:echo_upper")
        if registered:
            load = loader
            if load is None:
                from aios_mesh_mlflow.loading import load_predictor

                load = load_predictor
            for ref in registered:
                table.add(ServedModel(ref, load(ref)))
                log.info("serving %s/%s from %s", ref.name, ref.version, ref.source)
        return table
