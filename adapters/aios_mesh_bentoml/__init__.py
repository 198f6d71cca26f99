"""BentoML adapter of aios-mesh: the Serving port over a BentoML service.

* :class:`BentoMLServing` — the client (``bentoml+http://host:port``), pure httpx; it never
  imports ``bentoml``.
* :mod:`aios_mesh_bentoml.service` — the BentoML service it talks to, with adaptive batching
  (imported only by ``bentoml serve``, in the BentoML environment).
* :mod:`aios_mesh_bentoml.serve` — ``aios-mesh serve bentoml NAME@ALIAS`` (a CLI subcommand
  this package contributes through the ``aios_mesh.cli`` entry-point group).
* :mod:`aios_mesh_bentoml.testing` — start a real ``bentoml serve`` in tests (the ``bentoml``
  launcher of :func:`aios_mesh.testing.launcher`).
"""

from aios_mesh_bentoml.client import BentoMLServing

__all__ = ["BentoMLServing"]
