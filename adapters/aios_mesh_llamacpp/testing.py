"""Start a real llama.cpp OpenAI-compatible server for tests, benchmarks and examples:
``python -m llama_cpp.server`` (llama-cpp-python's server) on 127.0.0.1, a free port, the
Gemma 3 270M model, always stopped. Registered as the ``llamacpp`` launcher
(:func:`aios_mesh.testing.launcher`)::

    with llama_server(tmp_path) as llm:
        serving = load_adapter("serving", f"openai+http://{llm.address}/v1", base_dir=tmp_path)

The server runs one generation at a time (it cannot pre-empt one for another).
"""

from __future__ import annotations

import contextlib
import json
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from aios_mesh.testing.processes import free_port, start_process, wait_until
from aios_mesh.testing.servers import Server
from aios_mesh_llamacpp.model import GEMMA_CHAT_FORMAT, gemma_model_path

__all__ = ["SERVED_MODEL", "llama_server"]

#: The model name the server answers to (``"model"`` in requests, ``/v1/models``).
SERVED_MODEL = "gemma-3-270m"


def _ready(port: int) -> bool:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models", timeout=2) as answer:
        return bool(json.load(answer).get("data"))


@contextlib.contextmanager
def llama_server(log_dir: Path, *, port: int | None = None, n_ctx: int = 2048,
                 model_dir: Path | None = None, api_key: str | None = None,
                 threads: int | None = None) -> Iterator[Server]:
    """A llama.cpp server for Gemma 3 270M; ``api_key`` makes it demand ``Authorization:
    Bearer <key>`` (the readiness probe then only waits for the port)."""
    model = gemma_model_path(model_dir or log_dir / "models")
    port = port or free_port()
    log_dir.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "llama_cpp.server", "--model", str(model),
           "--model_alias", SERVED_MODEL, "--host", "127.0.0.1", "--port", str(port),
           "--n_ctx", str(n_ctx), "--chat_format", GEMMA_CHAT_FORMAT]
    if threads is not None:
        cmd += ["--n_threads", str(threads)]
    if api_key is not None:
        cmd += ["--api_key", api_key]

    def ready() -> None:
        if api_key is None:
            wait_until(lambda: _probe(port), timeout=120.0, what=f"llama.cpp on :{port}")
        else:
            from aios_mesh.testing.processes import wait_for_port

            wait_for_port(port, timeout=120.0)

    with start_process(cmd, ready=ready, name="llama-server", log_dir=log_dir) as proc:
        yield Server(f"127.0.0.1:{port}", port, proc)


def _probe(port: int) -> bool:
    try:
        return _ready(port)
    except OSError:
        return False
