"""Embedded Retrieval adapter on Qdrant Edge (``qdrant-edge-py``, the Rust engine in-process).

Selected by the URL scheme ``qdrant-edge`` (the embedded default ``qdrant-edge:///qdrant``)::

    from aios_mesh.backends import load_adapter
    index = load_adapter("retrieval", "qdrant-edge:///qdrant?dim=384", base_dir=state_dir)
"""

from aios_mesh_qdrant_edge.retrieval import ID_KEY, TENANT_KEY, EdgeRetrieval

__all__ = ["ID_KEY", "TENANT_KEY", "EdgeRetrieval"]
