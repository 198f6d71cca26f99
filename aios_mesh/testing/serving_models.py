"""Python batch predictors for testing model servers built for the mesh (the BentoML service,
the Ray Serve deployment): one definition the server adapters' ``testing`` modules re-export,
so ``aios_mesh_bentoml.testing:echo_upper`` and ``aios_mesh_rayserve.testing:echo_upper`` name
the same model.

Imports no ``pytest`` and no server SDK: the server processes load these too.
"""

from __future__ import annotations

from typing import Any

from aios_mesh.errors import InvalidInput

__all__ = ["batch_probe", "echo_upper", "garbage"]


def echo_upper(batch: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The **echo-upper** contract of :mod:`aios_mesh.testing.conformance.serving` (whose
    reference implementation needs pytest, which a server environment does not have):
    ``{"text": t, "n": n}`` → ``{"text": t.upper(), "n": n * 2, "confidence": 1.0}``."""
    out = []
    for item in batch:
        text, n = item.get("text"), item.get("n")
        if not isinstance(text, str):
            raise InvalidInput("echo-upper needs 'text', a string",
                               hint='send {"text": "...", "n": 1}')
        if isinstance(n, bool) or not isinstance(n, int):
            raise InvalidInput("echo-upper needs 'n', an integer",
                               hint='send {"text": "...", "n": 1}')
        out.append({"text": text.upper(), "n": n * 2, "confidence": 1.0})
    return out


def garbage(batch: list[dict[str, Any]]) -> list[Any]:
    """A broken model: answers strings instead of documents (→ ``InvalidOutput``)."""
    return [f"garbage {i}" for i in range(len(batch))]


def batch_probe(batch: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Answers each item with the size of the batch it was predicted in (adaptive batching
    or ``@serve.batch`` merges concurrent requests into one call)."""
    return [{"batch": len(batch), "i": item.get("i")} for item in batch]
