"""The aios-mesh BentoML service — imported only by ``bentoml serve``, never by the client.

    bentoml serve aios_mesh_bentoml.service:MeshModelService --host 127.0.0.1 --port 3000

(``aios-mesh serve bentoml NAME@ALIAS`` runs exactly this with the environment set.) What it
serves comes from the environment, read once at start-up (see :mod:`aios_mesh_bentoml._server`):
``AIOS_MESH_MODEL`` + ``AIOS_MESH_REGISTRY`` for a registered model, ``AIOS_MESH_PYTHON_MODELS``
for Python batch predictors.

APIs (the wire protocol is in :mod:`aios_mesh_bentoml._protocol`):

``POST /predict``
    adaptive batching on (``batchable=True``): BentoML merges the ``inputs`` lists of
    concurrent requests into one call, up to ``AIOS_MESH_BENTOML_MAX_BATCH_SIZE`` items
    (default 128) and ``AIOS_MESH_BENTOML_MAX_LATENCY_MS`` (default 2000). Every item names
    its model version; a version this process does not serve is refused with 404 while the
    request is parsed — before it can join a batch — so no caller ever gets an answer from
    another version.
``POST /models``
    the model versions served (name, version, alias, source, run_id).
``GET /readyz``, ``GET /livez``, ``GET /metrics``
    BentoML's own; ready once every model is loaded.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import bentoml
from bentoml.exceptions import NotFound as BentoNotFound
from pydantic import BaseModel, ConfigDict, model_validator

from aios_mesh_bentoml._server import ServedModels

__all__ = ["Item", "MeshModelService", "ModelKey"]

log = logging.getLogger("aios_mesh_bentoml.service")

MAX_BATCH_SIZE = int(os.environ.get("AIOS_MESH_BENTOML_MAX_BATCH_SIZE") or 128)
MAX_LATENCY_MS = int(os.environ.get("AIOS_MESH_BENTOML_MAX_LATENCY_MS") or 2000)

# The table of the one service instance in this worker process; the request models check
# against it while BentoML parses a request, before the request is queued for batching.
_served: ServedModels | None = None


class ModelKey(BaseModel):
    """Which model version an item is for."""

    model_config = ConfigDict(extra="forbid")

    name: str
    version: str


class Item(BaseModel):
    """One input document and the model version it is for."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    model: ModelKey
    input: dict[str, Any]

    @model_validator(mode="after")
    def _served_here(self) -> Item:
        # Not a ValueError: pydantic lets it through, BentoML answers its status (404).
        if _served is not None and not _served.serves(self.model.name, self.model.version):
            err = _served.not_found(self.model.name, self.model.version)
            raise BentoNotFound(f"{err.message} — {err.hint}")
        return self


@bentoml.service(name="aios_mesh_model", workers=1, traffic={"timeout": 120})
class MeshModelService:
    """Serves the model versions named by the environment, with adaptive batching."""

    def __init__(self) -> None:
        global _served
        self.served = ServedModels.from_env()
        _served = self.served
        log.info("aios-mesh BentoML service ready: %s", self.served.describe())

    # bentoml.api is untyped where BentoML is installed (the serving environment) and missing
    # where mypy runs (unused there): both codes
    @bentoml.api(route="/predict", batchable=True, max_batch_size=MAX_BATCH_SIZE,
                 max_latency_ms=MAX_LATENCY_MS)  # type: ignore[untyped-decorator, unused-ignore]
    def predict(self, inputs: list[Item]) -> list[dict[str, Any]]:
        """One answer per item, in order (items of many requests arrive here as one list)."""
        return self.served.answer([(it.model.name, it.model.version, it.input)
                                   for it in inputs])

    @bentoml.api(route="/models")  # type: ignore[untyped-decorator, unused-ignore]
    def models(self) -> dict[str, Any]:
        """The model versions this process serves."""
        return {"models": self.served.describe(), "max_batch_size": MAX_BATCH_SIZE,
                "max_latency_ms": MAX_LATENCY_MS}
