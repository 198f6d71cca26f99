"""The lock file pins every model alias (and index) to a version for reproducible runs.

``aios-mesh lock`` writes it; when present, alias resolution reads versions from it instead of
asking the registry, so a run next month answers with the same models as today::

    {"lock_version": 1, "created_at": "...",
     "models": {"invoice-extractor@champion": {"name": "invoice-extractor", "version": "3",
                                               "source": "models:/m-1", "run_id": "..."}},
     "indexes": {"vendors": "snapshot-id"}}
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from aios_mesh.errors import ConfigError
from aios_mesh.ports.registry import ModelRef

__all__ = ["LOCK_VERSION", "LockFile"]

LOCK_VERSION = 1


@dataclass
class LockFile:
    models: dict[str, ModelRef] = field(default_factory=dict)
    indexes: dict[str, str] = field(default_factory=dict)
    created_at: str = ""

    @classmethod
    def read(cls, path: Path) -> LockFile | None:
        """The lock at ``path``, or None when there is none; a corrupt one is a ConfigError."""
        try:
            doc = orjson.loads(path.read_bytes())
        except FileNotFoundError:
            return None
        except orjson.JSONDecodeError as exc:
            raise ConfigError(f"lock file {path} is not valid JSON",
                              hint="delete it and run `aios-mesh lock` again") from exc
        if not isinstance(doc, dict) or doc.get("lock_version") != LOCK_VERSION:
            raise ConfigError(f"lock file {path} has an unknown format",
                              hint="run `aios-mesh lock` to rewrite it")
        models = {}
        for spec, m in doc.get("models", {}).items():
            try:
                models[spec] = ModelRef(name=m["name"], version=str(m["version"]),
                                        source=m.get("source", ""), run_id=m.get("run_id"),
                                        alias=m.get("alias"), tags=dict(m.get("tags") or {}))
            except (KeyError, TypeError) as exc:
                raise ConfigError(f"lock file {path}: bad entry for {spec!r}",
                                  hint="run `aios-mesh lock` to rewrite it") from exc
        return cls(models, dict(doc.get("indexes", {})), doc.get("created_at", ""))

    def to_document(self) -> dict[str, Any]:
        return {
            "lock_version": LOCK_VERSION,
            "created_at": self.created_at or datetime.now(UTC).isoformat(),
            # tags carry what a fresh process needs to load the model (e.g. the tracking URI)
            "models": {spec: {"name": r.name, "version": r.version, "source": r.source,
                              "run_id": r.run_id, "alias": r.alias, "tags": dict(r.tags)}
                       for spec, r in sorted(self.models.items())},
            "indexes": dict(sorted(self.indexes.items())),
        }

    def write(self, path: Path) -> None:
        """Write atomically (temp file + rename), so a crash never leaves half a lock."""
        path.parent.mkdir(parents=True, exist_ok=True)
        data = orjson.dumps(self.to_document(), option=orjson.OPT_INDENT_2)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".lock-")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data + b"\n")
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
