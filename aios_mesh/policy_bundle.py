"""What a policy bundle folder is, for every policy adapter: which files belong to it and
the hash that names its contents (the ``bundle_hash`` in decision records and cache keys).

A folder holds ``*.rego`` modules and ``data.json`` documents at any depth; names starting
with ``.`` (``.manifest``, ``.git``, editor swap files) are not part of it. The same folder
has the same hash on the embedded (regopy) and OPA adapters.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from pathlib import Path

__all__ = ["bundle_files", "hash_files"]


def bundle_files(root: Path) -> list[Path]:
    """The bundle's files under ``root``, sorted."""
    found: list[Path] = []
    for path in sorted(root.rglob("*")):
        if any(part.startswith(".") for part in path.relative_to(root).parts):
            continue
        if path.is_file() and (path.suffix == ".rego" or path.name == "data.json"):
            found.append(path)
    return found


def hash_files(files: Iterable[tuple[str, bytes]]) -> str:
    """sha256 hex over the sorted ``(relative path, content)`` pairs, length-prefixed.

    Each pair feeds ``len(path) path len(content) content`` (lengths as 8-byte big-endian),
    so no two different bundles can produce the same byte stream.
    """
    digest = hashlib.sha256()
    for rel, content in sorted(files):
        encoded = rel.encode("utf-8")
        digest.update(len(encoded).to_bytes(8, "big"))
        digest.update(encoded)
        digest.update(len(content).to_bytes(8, "big"))
        digest.update(content)
    return digest.hexdigest()
