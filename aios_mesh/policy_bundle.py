"""What a policy bundle folder is, for every policy adapter: which files belong to it, the
hash that names its contents (the ``bundle_hash`` in decision records and cache keys), and
the input schemas its packages declare.

A folder holds ``*.rego`` modules, ``data.json`` documents and ``*.schema.json`` input schemas
at any depth; names starting with ``.`` (``.manifest``, ``.git``, editor swap files) are not
part of it. The same folder has the same hash on the embedded (regopy) and OPA adapters.

Input schemas
    ``route.schema.json`` beside ``route.rego`` is the JSON Schema of the ``input`` document
    of the package ``route.rego`` declares. The mesh validates the input against it before
    the policy is evaluated (see :mod:`aios_mesh.pipeline.policy`). A schema that names a
    ``payload`` property declares that the policy reads the call's (redacted) payload. Each
    schema is checked against its metaschema and compiled once, when the bundle is read.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import jsonschema  # type: ignore[import-untyped]
import jsonschema.exceptions  # type: ignore[import-untyped]

from aios_mesh.errors import ConfigError, NotFound

__all__ = ["SCHEMA_SUFFIX", "InputSchemas", "bundle_files", "hash_files", "parse_package",
           "parse_policy_path", "read_input_schemas"]

#: A compiled ``jsonschema`` validator (the library ships no type information).
Validator = Any

#: The suffix of an input-schema file (``route.schema.json`` beside ``route.rego``).
SCHEMA_SUFFIX: Final = ".schema.json"

_IDENT = r"[A-Za-z_][A-Za-z0-9_]*"
_STRING = r'"(?:[^"\\\n]|\\.)*"'
_REF_TAIL = rf"[ \t]*(?:\.[ \t]*{_IDENT}|\[[ \t]*{_STRING}[ \t]*\])"
_PACKAGE_RE = re.compile(rf"^[ \t]*package[ \t]+(?P<ref>{_IDENT}(?:{_REF_TAIL})*)", re.MULTILINE)
_SEGMENT_RE = re.compile(rf"\.?(?P<ident>{_IDENT})|\[[ \t]*(?P<string>{_STRING})[ \t]*\]")


def bundle_files(root: Path) -> list[Path]:
    """The bundle's files under ``root``, sorted."""
    found: list[Path] = []
    for path in sorted(root.rglob("*")):
        if any(part.startswith(".") for part in path.relative_to(root).parts):
            continue
        if path.is_file() and (path.suffix == ".rego" or path.name == "data.json"
                               or path.name.endswith(SCHEMA_SUFFIX)):
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


def parse_policy_path(path: str) -> tuple[str, ...]:
    """``mesh/invoices``, ``mesh.invoices``, ``data.mesh.invoices`` → ``("mesh", "invoices")``."""
    if not isinstance(path, str) or not path.strip("/. "):
        raise NotFound(f"{path!r} is not a policy package path",
                       hint="name a package, e.g. 'mesh/invoices' or 'mesh.invoices'")
    text = path.strip().strip("/")
    segments = text.split("/") if "/" in text else text.split(".")
    if segments and segments[0] == "data" and len(segments) > 1:
        segments = segments[1:]
    return tuple(segments)


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


@dataclass(frozen=True, slots=True)
class InputSchemas:
    """The input schemas of one bundle: package (dotted) → compiled validator.

    ``files`` names the schema file of each package, ``missing`` the packages that declare
    none (with the ``.rego`` files that make them), for strict mode's error message.
    """

    validators: Mapping[str, Validator] = field(default_factory=dict)
    files: Mapping[str, str] = field(default_factory=dict)
    missing: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    reads_payload: frozenset[str] = frozenset()

    def for_path(self, path: str) -> Validator | None:
        """The validator of the package ``path`` names (``invoices/route``), or None."""
        return self.validators.get(".".join(parse_policy_path(path)))

    def reads(self, path: str) -> bool:
        """Whether the package ``path`` names declares that it reads the payload."""
        return bool(self.reads_payload) and ".".join(parse_policy_path(path)) in self.reads_payload


def read_input_schemas(root: Path,
                       modules: Iterable[tuple[str, tuple[str, ...]]]) -> InputSchemas:
    """The schemas beside ``modules`` (``(relative path, package)`` pairs) under ``root``.

    A schema that is not JSON, not an object or not a valid JSON Schema, a schema file with
    no ``.rego`` beside it, and two different schemas for one package are each a
    :class:`ConfigError` naming the file.
    """
    by_package: dict[str, list[str]] = {}
    schema_of: dict[str, tuple[str, dict[str, Any]]] = {}
    claimed: set[str] = set()
    for relpath, package in modules:
        name = ".".join(package)
        by_package.setdefault(name, []).append(relpath)
        schema_rel = relpath[: -len(".rego")] + SCHEMA_SUFFIX
        path = root / schema_rel
        if not path.is_file():
            continue
        claimed.add(schema_rel)
        schema = _read_schema(path)
        seen = schema_of.get(name)
        if seen is not None and seen[1] != schema:
            raise ConfigError(f"package {name} has two different input schemas: {seen[0]} and "
                              f"{schema_rel}", hint="keep one schema per package (delete "
                              "one file or make them identical)", file=str(path))
        schema_of[name] = (schema_rel, schema)
    for path in bundle_files(root):
        rel = path.relative_to(root).as_posix()
        if rel.endswith(SCHEMA_SUFFIX) and rel not in claimed:
            rego = rel[: -len(SCHEMA_SUFFIX)] + ".rego"
            raise ConfigError(f"{path} has no policy beside it ({rego} is missing)",
                              hint=f"name the schema after the .rego file it describes, e.g. "
                                   f"{Path(rego).stem}{SCHEMA_SUFFIX} beside {Path(rego).name}",
                              file=str(path))
    validators: dict[str, Validator] = {}
    reads_payload = set()
    for name, (_, schema) in schema_of.items():
        validators[name] = jsonschema.validators.validator_for(schema)(schema)
        if "payload" in (schema.get("properties") or {}):
            reads_payload.add(name)
    return InputSchemas(validators=validators,
                        files={n: str(root / rel) for n, (rel, _) in schema_of.items()},
                        missing={n: tuple(files) for n, files in sorted(by_package.items())
                                 if n not in schema_of},
                        reads_payload=frozenset(reads_payload))


def _read_schema(path: Path) -> dict[str, Any]:
    try:
        schema = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}",
                          hint="check the file's permissions", file=str(path)) from exc
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{path} is not a JSON document: {exc}",
                          hint="fix the JSON syntax of the schema", file=str(path)) from exc
    if not isinstance(schema, dict):
        raise ConfigError(f"{path} must hold a JSON Schema object, not "
                          f"{type(schema).__name__}",
                          hint='start from {"type": "object", "properties": {...}}',
                          file=str(path))
    try:
        jsonschema.validators.validator_for(schema).check_schema(schema)
    except jsonschema.exceptions.SchemaError as exc:
        where = "/".join(str(p) for p in exc.path) or "(top level)"
        raise ConfigError(f"{path} is not a valid JSON Schema at {where}: {exc.message}",
                          hint="check the keyword against the JSON Schema draft named by "
                               "$schema (2020-12 when none)", file=str(path)) from exc
    return schema
