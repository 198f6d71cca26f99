"""Reading a policy folder for upload: ``*.rego`` modules, ``data.json`` documents, the hash.

File selection and ``bundle_hash`` come from :mod:`aios_mesh.policy_bundle`, which the embedded
adapter uses too, so a folder has the same ``bundle_hash`` on both policy adapters.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aios_mesh.errors import ConfigError
from aios_mesh.policy_bundle import (
    SCHEMA_SUFFIX,
    InputSchemas,
    bundle_files,
    hash_files,
    parse_package,
    read_input_schemas,
)

__all__ = ["BundleFolder", "DataDocument", "hash_files", "read_bundle"]


@dataclass(frozen=True, slots=True)
class DataDocument:
    """One ``data.json``: its document and the data path of its folder."""

    relpath: str
    path: tuple[str, ...]
    document: dict[str, Any]


@dataclass(frozen=True, slots=True)
class BundleFolder:
    """The files of a policy folder, read and checked, ready for upload."""

    root: Path
    modules: tuple[tuple[str, str], ...]  # (relative path, source)
    data: tuple[DataDocument, ...]
    bundle_hash: str
    schemas: InputSchemas


def read_bundle(root: Path) -> BundleFolder:
    """Read ``root``; a missing folder, unreadable file, bad UTF-8 or JSON is a ConfigError.

    The Rego itself is checked by the OPA server when the adapter uploads it; the
    ``*.schema.json`` input schemas are read (and checked) here: they stay with the mesh.
    """
    if not root.is_dir():
        raise ConfigError(f"policy folder {root} does not exist or is not a folder",
                          hint=f"create it and put your *.rego files there (mkdir -p {root})",
                          path=str(root))
    hashed: list[tuple[str, bytes]] = []
    modules: list[tuple[str, str]] = []
    data: list[DataDocument] = []
    for path in bundle_files(root):
        rel = path.relative_to(root).as_posix()
        try:
            content = path.read_bytes()
            text = content.decode("utf-8")
        except OSError as exc:
            raise ConfigError(f"cannot read {path}: {exc.strerror}",
                              hint="check the file's permissions", file=str(path)) from exc
        except UnicodeDecodeError as exc:
            raise ConfigError(f"{path}: not valid UTF-8", hint="save the file as UTF-8",
                              file=str(path)) from exc
        hashed.append((rel, content))
        if path.suffix == ".rego":
            modules.append((rel, text))
            continue
        if path.name.endswith(SCHEMA_SUFFIX):
            continue  # input schemas stay with the mesh: read_input_schemas below
        try:
            document = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{path}:{exc.lineno}:{exc.colno}: invalid JSON: {exc.msg}",
                              hint="fix the JSON syntax of the data file",
                              file=str(path)) from exc
        if not isinstance(document, dict):
            raise ConfigError(f"{path} must hold a JSON object, not {type(document).__name__}",
                              hint='wrap the value in an object, e.g. {"tenants": [...]}',
                              file=str(path))
        data.append(DataDocument(rel, tuple(path.parent.relative_to(root).parts), document))
    if not modules:
        raise ConfigError(f"policy folder {root} holds no .rego files",
                          hint="add at least one policy, e.g. policies/mesh/default.rego",
                          path=str(root))
    data.sort(key=lambda d: (len(d.path), d.path))  # parents first: children overwrite
    # the package of each module only to pair it with its schema; OPA checks the Rego itself
    schemas = read_input_schemas(root, ((rel, parse_package(text, where=str(root / rel)))
                                        for rel, text in modules))
    return BundleFolder(root=root, modules=tuple(modules), data=tuple(data),
                        bundle_hash=hash_files(hashed), schemas=schemas)
