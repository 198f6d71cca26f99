"""Reading a policy bundle folder: ``*.rego`` modules, ``data.json`` documents, the hash.

Pure Python (no regopy here), so every check on the folder runs before the engine is touched
and can be tested on its own.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aios_mesh.errors import ConfigError
from aios_mesh.policy_bundle import (
    SCHEMA_SUFFIX,
    InputSchemas,
    bundle_files,
    hash_files,
    read_input_schemas,
)
from aios_mesh.policy_bundle import parse_package as _parse_package

__all__ = [
    "INTERNAL_PACKAGE",
    "BundleFiles",
    "RegoModule",
    "hash_files",
    "line_col",
    "load_bundle_files",
    "package_key",
    "parse_package",
]

#: Namespace of the small wrapper modules the adapter compiles next to the user's policies.
INTERNAL_PACKAGE = "aios_mesh_internal"

@dataclass(frozen=True, slots=True)
class RegoModule:
    """One ``.rego`` file of the bundle."""

    relpath: str  # posix path relative to the bundle root; also the module name in the engine
    path: Path
    source: str
    package: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class BundleFiles:
    """Everything read from a bundle folder, checked, before compilation."""

    root: Path
    modules: tuple[RegoModule, ...]
    data: dict[str, Any]
    data_files: tuple[str, ...]
    bundle_hash: str
    schemas: InputSchemas

    @property
    def packages(self) -> dict[tuple[str, ...], tuple[str, ...]]:
        """Package → the bundle-relative files that declare it."""
        out: dict[tuple[str, ...], list[str]] = {}
        for module in self.modules:
            out.setdefault(module.package, []).append(module.relpath)
        return {pkg: tuple(files) for pkg, files in out.items()}


def package_key(segments: Iterable[str]) -> str:
    """The dotted name of a package (``mesh.invoices``), as used in messages."""
    return ".".join(segments)


def line_col(source: str, offset: int) -> tuple[int, int]:
    """1-based line and column of a UTF-8 byte ``offset`` into ``source``."""
    raw = source.encode("utf-8")[: max(offset, 0)]
    line = raw.count(b"\n") + 1
    col = len(raw) - (raw.rfind(b"\n") + 1) + 1
    return line, col


def parse_package(source: str, *, where: str) -> tuple[str, ...]:
    """The package path a module declares; the adapter's own namespace is refused."""
    segments = _parse_package(source, where=where)
    if segments[0] == INTERNAL_PACKAGE:
        raise ConfigError(f"{where}: package {'.'.join(segments)!r} uses the reserved name "
                          f"{INTERNAL_PACKAGE!r}", hint="rename the package", file=where)
    return segments


def _owner(origin: Mapping[tuple[str, ...], str], path: tuple[str, ...]) -> str:
    """The data.json that defined ``path`` (or the closest enclosing / enclosed key)."""
    for size in range(len(path), 0, -1):
        if path[:size] in origin:
            return origin[path[:size]]
    inner = sorted(key for key in origin if key[: len(path)] == path)
    return origin[inner[0]] if inner else "a data.json"


def _merge(target: dict[str, Any], source: Mapping[str, Any], *, at: tuple[str, ...],
           origin: dict[tuple[str, ...], str], rel: str) -> None:
    for key, value in source.items():
        here = (*at, key)
        if key in target:
            if isinstance(target[key], dict) and isinstance(value, dict):
                _merge(target[key], value, at=here, origin=origin, rel=rel)
                continue
            first = _owner(origin, here)
            raise ConfigError(
                f"data.{package_key(here)} is defined by both {first} and {rel}",
                hint="keep each data key in one data.json file", file=rel)
        target[key] = value
        origin[here] = rel


def _check_data_vs_packages(data: Mapping[str, Any], packages: Iterable[tuple[str, ...]],
                            files: Mapping[tuple[str, ...], tuple[str, ...]],
                            origin: Mapping[tuple[str, ...], str]) -> None:
    # rego-cpp lets a base document silently shadow a package's rules (data wins); OPA
    # refuses such bundles. We refuse them too: a data.json must never override a decision.
    for package in packages:
        node: Any = data
        for depth, segment in enumerate(package):
            if not isinstance(node, dict):
                break
            if segment not in node:
                break
            node = node[segment]
            prefix = package[: depth + 1]
            if depth == len(package) - 1 or not isinstance(node, dict):
                owner = _owner(origin, prefix)
                raise ConfigError(
                    f"data.{package_key(prefix)} from {owner} overlaps package "
                    f"{package_key(package)} ({', '.join(files[package])})",
                    hint="move that data under a path that is not a Rego package",
                    file=owner)


def load_bundle_files(root: Path) -> BundleFiles:
    """Read and check a bundle folder; every problem is a :class:`ConfigError`."""
    if not root.exists():
        raise ConfigError(f"policy folder {root} does not exist",
                          hint=f"create it and put your *.rego files there (mkdir -p {root})",
                          path=str(root))
    if not root.is_dir():
        raise ConfigError(f"policy path {root} is not a folder",
                          hint="point the policy URL at a folder of *.rego files",
                          path=str(root))
    hashed: list[tuple[str, bytes]] = []
    modules: list[RegoModule] = []
    data: dict[str, Any] = {}
    origin: dict[tuple[str, ...], str] = {}
    data_files: list[str] = []
    for path in bundle_files(root):
        rel = path.relative_to(root).as_posix()
        try:
            content = path.read_bytes()
        except OSError as exc:
            raise ConfigError(f"cannot read {path}: {exc.strerror}",
                              hint="check the file's permissions", file=str(path)) from exc
        hashed.append((rel, content))
        try:
            text = content.decode("utf-8")
        except UnicodeDecodeError as exc:
            line = content[: exc.start].count(b"\n") + 1
            raise ConfigError(f"{path}:{line}: not valid UTF-8",
                              hint="save the file as UTF-8", file=str(path)) from exc
        if path.suffix == ".rego":
            modules.append(RegoModule(rel, path, text, parse_package(text, where=str(path))))
            continue
        if path.name.endswith(SCHEMA_SUFFIX):
            continue  # input schemas: read_input_schemas below
        try:
            document = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{path}:{exc.lineno}:{exc.colno}: invalid JSON: {exc.msg}",
                              hint="fix the JSON syntax of the data file",
                              file=str(path), line=exc.lineno) from exc
        if not isinstance(document, dict):
            raise ConfigError(f"{path} must hold a JSON object, not {type(document).__name__}",
                              hint='wrap the value in an object, e.g. {"tenants": [...]}',
                              file=str(path))
        at = tuple(path.parent.relative_to(root).parts)
        nested: dict[str, Any] = document
        for segment in reversed(at):
            nested = {segment: nested}
        _merge(data, nested, at=(), origin=origin, rel=rel)
        data_files.append(rel)
    if not modules:
        raise ConfigError(f"policy folder {root} holds no .rego files",
                          hint="add at least one policy, e.g. policies/mesh/default.rego",
                          path=str(root))
    bundle = BundleFiles(root=root, modules=tuple(modules), data=data,
                         data_files=tuple(data_files), bundle_hash=hash_files(hashed),
                         schemas=read_input_schemas(root, ((m.relpath, m.package)
                                                           for m in modules)))
    packages = bundle.packages
    _check_data_vs_packages(data, packages, packages, origin)
    return bundle
