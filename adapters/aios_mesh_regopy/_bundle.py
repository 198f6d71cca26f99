"""Reading a policy bundle folder: ``*.rego`` modules, ``data.json`` documents, the hash.

Pure Python (no regopy here), so every check on the folder runs before the engine is touched
and can be tested on its own.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aios_mesh.errors import ConfigError
from aios_mesh.policy_bundle import bundle_files, hash_files

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

_IDENT = r"[A-Za-z_][A-Za-z0-9_]*"
_STRING = r'"(?:[^"\\\n]|\\.)*"'
_REF_TAIL = rf"[ \t]*(?:\.[ \t]*{_IDENT}|\[[ \t]*{_STRING}[ \t]*\])"
_PACKAGE_RE = re.compile(rf"^[ \t]*package[ \t]+(?P<ref>{_IDENT}(?:{_REF_TAIL})*)", re.MULTILINE)
_SEGMENT_RE = re.compile(rf"\.?(?P<ident>{_IDENT})|\[[ \t]*(?P<string>{_STRING})[ \t]*\]")


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
    """The package path a module declares (``package a.b["c-d"]`` → ``("a", "b", "c-d")``)."""
    match = _PACKAGE_RE.search(_strip_comments(source))
    if match is None:
        raise ConfigError(f"{where} declares no package",
                          hint="start the file with a line like 'package mesh.invoices'",
                          file=where)
    segments: list[str] = []
    for part in _SEGMENT_RE.finditer(match["ref"].replace(" ", "").replace("\t", "")):
        if part["ident"] is not None:
            segments.append(part["ident"])
        else:
            segments.append(json.loads(part["string"]))
    if any("/" in s or not s for s in segments):
        raise ConfigError(f"{where}: package {match['ref']!r} has an empty segment or a '/'",
                          hint="use plain identifiers in package names", file=where)
    if segments[0] == INTERNAL_PACKAGE:
        raise ConfigError(f"{where}: package {match['ref']!r} uses the reserved name "
                          f"{INTERNAL_PACKAGE!r}", hint="rename the package", file=where)
    return tuple(segments)


def _strip_comments(source: str) -> str:
    # '#' starts a comment except inside a string; package lines rarely hold strings with '#',
    # so a line-wise cut before the first '#' outside double quotes is enough here.
    out = []
    for line in source.splitlines():
        in_str = False
        cut = len(line)
        i = 0
        while i < len(line):
            ch = line[i]
            if ch == "\\" and in_str:
                i += 2
                continue
            if ch == '"':
                in_str = not in_str
            elif ch == "#" and not in_str:
                cut = i
                break
            i += 1
        out.append(line[:cut])
    return "\n".join(out)


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
                         data_files=tuple(data_files), bundle_hash=hash_files(hashed))
    packages = bundle.packages
    _check_data_vs_packages(data, packages, packages, origin)
    return bundle
