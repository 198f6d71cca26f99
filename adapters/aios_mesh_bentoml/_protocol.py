"""The BentoML side of the aios-mesh serving wire protocol (:mod:`aios_mesh.ports.serving_protocol`,
shared with the Ray Serve adapter): the service's endpoints and the hints a client gives in
BentoML's words. Free of ``bentoml`` and ``httpx``.

The service's batched API (``POST /predict``) receives the items of many concurrent requests
as one list (BentoML adaptive batching concatenates the lists), which is why every item names
its model version.
"""

from __future__ import annotations

from typing import Final

from aios_mesh.ports.serving_protocol import AnswerHints

__all__ = ["DEFAULT_ENDPOINT", "HINTS", "MODELS_ENDPOINT"]

DEFAULT_ENDPOINT: Final = "/predict"
MODELS_ENDPOINT: Final = "/models"

#: How :class:`~aios_mesh_bentoml.BentoMLServing` words an answer that went wrong.
HINTS: Final = AnswerHints(
    protocol="point ?endpoint= at the aios-mesh BentoML service's predict API",
    version="the service must serve exactly the requested version; restart it with the "
            "version the registry resolves",
    log="see the BentoML service's log",
    malformed="the service does not speak the aios-mesh protocol")
