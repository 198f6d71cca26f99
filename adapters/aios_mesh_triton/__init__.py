"""Triton adapter of aios-mesh: the Serving port over NVIDIA Triton Inference Server
(``triton+http://HOST:8000``, ``triton+grpc://HOST:8001``) with tritonclient's asyncio clients.

The server side (a PyTriton app serving registered MLflow scikit-learn models) lives in
``serving/triton/server.py`` and runs in its own environment; ``aios-mesh serve triton
NAME@ALIAS`` starts it (:func:`aios_mesh.serve_triton.serve_triton`). See
``docs/adapters/triton.md``.
"""

from aios_mesh_triton.serving import TritonServing
from aios_mesh_triton.tensors import TensorMap, TensorSpec

__all__ = ["TensorMap", "TensorSpec", "TritonServing"]
