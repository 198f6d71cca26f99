"""OpenAI-compatible serving: one adapter for llama.cpp's server, vLLM, Ollama and hosted
APIs (``openai+http://host:port/v1``, ``openai+https://...``), on httpx.

* :class:`OpenAIServing` — chat completions, streamed (SSE) or not; keys from the
  environment or a file, never shown.
* :class:`CountingOpenAIServing` — the same, counting prompts with a llama.cpp server's
  tokenizer (``?tokenize=llamacpp``).
"""

from aios_mesh_openai.client import DIALECTS, OpenAIServing, read_api_key
from aios_mesh_openai.tokens import CountingOpenAIServing, LlamaCppTokenizer

__all__ = ["DIALECTS", "CountingOpenAIServing", "LlamaCppTokenizer", "OpenAIServing",
           "read_api_key"]
