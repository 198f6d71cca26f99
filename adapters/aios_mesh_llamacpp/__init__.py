"""llama.cpp in process: the embedded LLM engine (``llamacpp://gemma3-270m``).

* :class:`LlamaCppServing` — the Serving adapter (generation, streaming, token counting).
* :mod:`.engine` — the model in one worker thread, stopped between tokens when asked.
* :mod:`.model` — assembles the default model, Gemma 3 270M.
* :mod:`.testing` — starts llama.cpp's OpenAI-compatible server for tests.
"""

from aios_mesh_llamacpp.model import DEFAULT_MODEL, gemma_model_path
from aios_mesh_llamacpp.serving import LlamaCppServing, llama_request

__all__ = ["DEFAULT_MODEL", "LlamaCppServing", "gemma_model_path", "llama_request"]
