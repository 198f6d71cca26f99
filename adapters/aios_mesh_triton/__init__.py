"""Triton adapter of aios-mesh: the Serving port over NVIDIA Triton Inference Server
(``triton+http://HOST:8000``, ``triton+grpc://HOST:8001``) with tritonclient's asyncio clients.

The server side (a PyTriton app serving registered MLflow scikit-learn models) ships in
``aios_mesh_triton/app/pytriton_app.py`` and runs in its own environment
(:mod:`aios_mesh_triton.launch`); ``aios-mesh serve triton NAME@ALIAS`` starts it
(:mod:`aios_mesh_triton.serve`), tests start it with :mod:`aios_mesh_triton.testing`. See
``docs/adapters/triton.md``.
"""

from aios_mesh_triton.serving import TritonServing
from aios_mesh_triton.tensors import TensorMap, TensorSpec

__all__ = ["TensorMap", "TensorSpec", "TritonServing"]
