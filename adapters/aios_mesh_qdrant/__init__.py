"""Retrieval adapter on qdrant-client: a Qdrant server or qdrant-client's local mode.

Selected by the URL schemes ``qdrant`` (a server) and ``qdrant+local`` (local mode)::

    from aios_mesh.backends import load_adapter
    index = load_adapter("retrieval", "qdrant://127.0.0.1:6333", base_dir=state_dir)
    local = load_adapter("retrieval", "qdrant+local:///qdrant-local", base_dir=state_dir)

Install with ``pip install "aios-mesh[qdrant]"``. See docs/adapters/qdrant.md.
"""

from aios_mesh.ports.retrieval_scope import ID_KEY, TENANT_KEY
from aios_mesh_qdrant.retrieval import META_KEY, QdrantRetrieval

__all__ = ["ID_KEY", "META_KEY", "TENANT_KEY", "QdrantRetrieval"]
