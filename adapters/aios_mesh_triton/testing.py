"""Start a real Triton server (the PyTriton app of this package) for tests and benchmarks:
127.0.0.1, the ports you give, always stopped. Registered as the ``triton`` launcher
(:func:`aios_mesh.testing.launcher`)::

    with start_triton_server(http_port=free_port(), grpc_port=free_port()) as proc:
        serving = TritonServing(...)   # the echo-upper conformance model is served

Needs the Triton environment (:func:`triton_python`; ``make servers`` creates it).
"""

from __future__ import annotations

from aios_mesh_triton.launch import (
    TritonProcess,
    server_env,
    server_script,
    start_triton_server,
    triton_python,
    wait_triton_ready,
)

__all__ = ["TritonProcess", "server_env", "server_script", "start_triton_server",
           "triton_python", "wait_triton_ready"]
