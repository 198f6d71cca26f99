"""Capability versions side by side, and the promise a version makes to its callers.

A capability's ``version`` is ``MAJOR[.MINOR[.PATCH]]``. The catalog keeps one version per
major and serves them side by side::

    mesh.invoke("extract-invoice-fields@1", ...)    # the newest 1.x
    mesh.invoke("extract-invoice-fields@2", ...)    # the newest 2.x
    mesh.invoke("extract-invoice-fields", ...)      # the newest version of all

A caller pins a major; within it, a new version may only add: registering ``1.1`` over
``1.0`` is refused (:class:`IncompatibleVersion`) when it would break a caller of ``1.0``
(:func:`breaking_changes`). Breaking changes get a new major, and the old one keeps serving,
announcing its ``deprecated`` notice in every record and once per process in the log.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Mapping
from typing import Any, Literal, Protocol

from pydantic import BaseModel

from aios_mesh.errors import ConfigError

__all__ = ["VERSION_PATTERN", "IncompatibleVersion", "Versioned", "announce_deprecation",
           "breaking_changes", "check_compatible", "major_of", "version_key"]

log = logging.getLogger("aios_mesh.lifecycle")

#: ``1``, ``2.1``, ``2.1.0``: numbers only, so versions order without guessing.
VERSION_PATTERN = re.compile(r"^(0|[1-9][0-9]{0,5})(\.(0|[1-9][0-9]{0,5})){0,2}$")

# Keys of a JSON schema that document a field and never change what a caller may send or
# will receive.
_DOC_KEYS = frozenset({"title", "description", "examples", "default", "deprecated"})


class Versioned(Protocol):
    """What this module reads of a capability spec (a :class:`~aios_mesh.capabilities.
    CapabilitySpec`; a protocol here, so the spec module can use this one)."""

    @property
    def name(self) -> str: ...
    @property
    def version(self) -> str: ...
    @property
    def key(self) -> str: ...
    @property
    def deprecated(self) -> str | None: ...
    @property
    def input(self) -> type[BaseModel]: ...
    @property
    def output(self) -> type[BaseModel]: ...


class IncompatibleVersion(ConfigError):
    """A new version of a capability breaks callers of the version of the same major that it
    would replace (an output field removed or retyped, a required input field added)."""

    code = "incompatible_version"


def major_of(version: str) -> str:
    """``"2.1.0"`` → ``"2"``."""
    return version.split(".", 1)[0]


def version_key(version: str) -> tuple[int, ...]:
    """Numeric order of versions: ``"1.10"`` after ``"1.9"``."""
    return tuple(int(part) for part in version.split("."))


def _resolve(schema: Any, defs: Mapping[str, Any], depth: int = 0) -> Any:
    """The schema with ``$ref`` s inlined and documentation keys dropped, so two schemas
    compare equal exactly when they accept and produce the same documents. Recursive models
    stop at a fixed depth (their ``$ref`` name stands in beyond it)."""
    if isinstance(schema, Mapping):
        ref = schema.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/$defs/"):
            name = ref.removeprefix("#/$defs/")
            if depth > 8 or name not in defs:
                return {"$ref": name}
            return _resolve(defs[name], defs, depth + 1)
        return {k: _resolve(v, defs, depth) for k, v in schema.items()
                if k not in _DOC_KEYS and k != "$defs"}
    if isinstance(schema, list):
        return [_resolve(item, defs, depth) for item in schema]
    return schema


def _fields(model: type[BaseModel], mode: Literal["validation", "serialization"]
            ) -> tuple[dict[str, Any], set[str], bool]:
    """(field → normalised schema, required names, whether other fields are refused)."""
    schema = model.model_json_schema(mode=mode)
    defs = schema.get("$defs", {})
    props = {name: _resolve(sub, defs) for name, sub in schema.get("properties", {}).items()}
    return props, set(schema.get("required", ())), schema.get("additionalProperties") is False


def breaking_changes(old: Versioned, new: Versioned) -> list[str]:
    """What in ``new`` would break a caller written against ``old`` (empty: compatible).

    * an output field removed, or retyped (any change to what the field may hold — a caller
      reading it may fail; a field that becomes optional is retyped: it may now be missing);
    * a required input field added (old callers do not send it);
    * an input field removed while the new input refuses unknown fields (old callers still
      send it).

    Adding optional input fields and new output fields is compatible.

    >>> from pydantic import BaseModel
    >>> from aios_mesh.capabilities import CapabilitySpec
    >>> class In(BaseModel):
    ...     text: str
    >>> class Out(BaseModel):
    ...     label: str
    >>> class Out2(BaseModel):
    ...     label: int
    >>> v1 = CapabilitySpec(name="tag", version="1.0", input=In, output=Out, model="m@a")
    >>> v2 = CapabilitySpec(name="tag", version="1.1", input=In, output=Out2, model="m@a")
    >>> breaking_changes(v1, v2)
    ["output field 'label' changed type"]
    """
    found: list[str] = []
    old_out, _, _ = _fields(old.output, "serialization")
    new_out, _, _ = _fields(new.output, "serialization")
    for name, schema in old_out.items():
        if name not in new_out:
            found.append(f"output field {name!r} was removed")
        elif new_out[name] != schema:
            found.append(f"output field {name!r} changed type")
    old_in, old_required, _ = _fields(old.input, "validation")
    new_in, new_required, closed = _fields(new.input, "validation")
    found.extend(f"input field {name!r} is newly required"
                 for name in sorted(new_required - old_required))
    if closed:
        found.extend(f"input field {name!r} was removed and unknown fields are refused"
                     for name in old_in if name not in new_in)
    return found


def check_compatible(old: Versioned, new: Versioned) -> None:
    """Refuse ``new`` in place of ``old`` (same name and major) if it breaks old callers."""
    problems = breaking_changes(old, new)
    if problems:
        raise IncompatibleVersion(
            f"{new.key} would replace {old.key} but breaks its callers: " + "; ".join(problems),
            hint=f"keep the change compatible, or publish it as a new major version "
                 f"(version = \"{int(major_of(old.version)) + 1}\") so callers of "
                 f"{old.name}@{major_of(old.version)} keep what they rely on",
            capability=new.name)


_announced: set[str] = set()
_announced_lock = threading.Lock()


def announce_deprecation(spec: Versioned) -> None:
    """Log a deprecated version's notice once per process (the record of every call to it
    carries the notice too)."""
    if spec.deprecated is None or spec.key in _announced:
        return
    with _announced_lock:
        if spec.key in _announced:
            return
        _announced.add(spec.key)
    log.warning("capability %s is deprecated: %s", spec.key, spec.deprecated,
                extra={"capability": spec.name, "capability_version": spec.version})
