"""A deterministic text embedder that needs no model file: hashed words and character
trigrams, L2-normalised. Good enough to index a small knowledge base in tests, examples and
the support-triage job; use a learned embedder (an embedding capability) for real corpora.

    embed = hashing_embedder(dim=256)
    vector = embed("How do refunds work?")   # 256 floats, unit length
"""

from __future__ import annotations

import hashlib
import math
import unicodedata
from collections.abc import Callable

from aios_mesh.rag.groundedness import content_words

__all__ = ["hashing_embedder"]


def _bucket(feature: str, dim: int) -> tuple[int, float]:
    digest = hashlib.blake2b(feature.encode(), digest_size=8).digest()
    value = int.from_bytes(digest, "big")
    return value % dim, (1.0 if value >> 63 else -1.0)


def hashing_embedder(dim: int = 256) -> Callable[[str], list[float]]:
    """An embedder of ``dim`` floats: each content word (weight 1) and each character
    trigram of the words (weight 0.5) is hashed (BLAKE2b, so the same on every machine and
    process) to a signed bucket; the vector is L2-normalised (a text with no word gets the
    first unit vector).

    Example::

        embed = hashing_embedder(64)
        assert len(embed("refund policy")) == 64
    """
    if dim < 8:
        raise ValueError("dim must be at least 8")

    def embed(text: str) -> list[float]:
        vector = [0.0] * dim
        words = sorted(content_words(unicodedata.normalize("NFKC", text)))
        for word in words:
            i, sign = _bucket("w:" + word, dim)
            vector[i] += sign
            padded = f"#{word}#"
            for j in range(len(padded) - 2):
                i, sign = _bucket("c:" + padded[j:j + 3], dim)
                vector[i] += 0.5 * sign
        norm = math.sqrt(sum(v * v for v in vector))
        if not norm:  # no word at all: a fixed unit vector (a zero vector has no direction)
            vector[0] = 1.0
            return vector
        return [v / norm for v in vector]

    return embed
