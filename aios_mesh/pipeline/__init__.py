"""The call pipeline: small steps, each with one job, run in order.

``before`` runs front to back; ``after`` (on success) and ``on_error`` (on failure) run back to
front over the steps whose ``before`` ran — so a quota reserved early is settled or refunded
last, the way a ``try/finally`` nests. A step may set ``call.done`` to stop the forward pass
(a cache hit).
"""

from aios_mesh.pipeline.call import Call
from aios_mesh.pipeline.runner import Pipeline, Step

__all__ = ["Call", "Pipeline", "Step"]
