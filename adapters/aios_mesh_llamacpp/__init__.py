"""llama.cpp in process: the embedded LLM engine (``llamacpp://gemma3-270m``).

The adapter itself (:class:`LlamaCppServing`) is being written; :mod:`.model` assembles the
model and :mod:`.testing` starts llama.cpp's OpenAI-compatible server for tests.
"""

from aios_mesh_llamacpp.model import DEFAULT_MODEL, gemma_model_path

__all__ = ["DEFAULT_MODEL", "gemma_model_path"]
