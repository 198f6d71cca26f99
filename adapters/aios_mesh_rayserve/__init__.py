"""Ray Serve adapter of aios-mesh: the Serving port over a Ray Serve application.

* :class:`RayServeServing` — the client: ``rayserve+http://host:port/ROUTE`` (httpx, no
  ``ray`` import) or ``rayserve+handle://APP`` inside the Ray cluster.
* :mod:`aios_mesh_rayserve.deployment` — the Ray Serve deployment it talks to
  (``@serve.batch`` batching, replicas or autoscaling).
* :mod:`aios_mesh_rayserve.serve` — ``aios-mesh serve rayserve NAME@ALIAS``.
* :mod:`aios_mesh_rayserve.testing` — a Ray instance with Serve for tests (the ``rayserve``
  launcher of :func:`aios_mesh.testing.launcher`).
"""

from aios_mesh_rayserve.client import RayServeServing

__all__ = ["RayServeServing"]
