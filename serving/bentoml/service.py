"""Entry point for ``bentoml serve`` from a checkout of the repository::

    bentoml serve serving.bentoml.service:MeshModelService --host 127.0.0.1 --port 3000

The service itself lives in the installed package (:mod:`aios_mesh_bentoml.service`), so an
installed aios-mesh serves it from anywhere as ``aios_mesh_bentoml.service:MeshModelService``
(what ``aios-mesh serve bentoml`` runs). Run it from the BentoML environment built from
``requirements.txt`` beside this file; see ``docs/adapters/bentoml.md``.
"""

from aios_mesh_bentoml.service import MeshModelService

__all__ = ["MeshModelService"]
