"""The lock file pins every model alias, prompt alias (and index) for reproducible runs.

``aios-mesh lock`` writes it; when present, alias resolution reads versions from it instead of
asking the registry, so a run next month answers with the same models and prompts as today::

    {"lock_version": 1, "created_at": "...",
     "models": {"invoice-extractor@champion": {"name": "invoice-extractor", "version": "3",
                                               "source": "models:/m-1", "run_id": "..."}},
     "prompts": {"review-brief@production": {"name": "review-brief", "version": "2",
                                             "alias": "production", "sha256": "9f2c..."}},
     "indexes": {"vendors": "snapshot-id"},
     "definitions": {"refund-agent@1": {"kind": "agent", "sha256": "41ab...",
                                        "names": {"llm": "refund-planner",
                                                  "tools": ["lookup-order", "open-refund"]}}}}

A prompt pin holds the version and the digest of its template, not the text: the registry
stays the one place prompts live (a second copy here could be edited by hand and drift), a
version is fetched once per process, and the digest proves it is the text that was locked
(a registry rebuilt with other text under the same number is refused, not used). A
definition pin does the same for a capability defined in code, an agent: its instructions,
tools, LLM and budgets are digested; the same ``name@version`` with another definition is
refused until its version is bumped or the lock rewritten.

Reading is strict: a lock that is empty, a directory, unreadable, not JSON, of another format
version or of the wrong shape is a :class:`~aios_mesh.errors.ConfigError` that names the file
and says how to fix it; never a half-applied pin. The shape is checked by pydantic models
(``_LockDocument``), in strict mode, so JSON types are never coerced (``"models": []`` is an
error, not an empty pin set). Unknown extra keys are ignored, so a newer aios-mesh may add
fields without bumping ``lock_version``. Writing is atomic (temp file, fsync, rename).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import stat
import tempfile
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import orjson
from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field
from pydantic import ValidationError as _ValidationError

from aios_mesh.errors import ConfigError, InvalidInput
from aios_mesh.ports.prompts import template_sha256
from aios_mesh.ports.registry import ModelRef, PromptRef, parse_model_spec

__all__ = ["LOCK_VERSION", "DefinitionPin", "LockFile", "PromptPin"]

LOCK_VERSION = 1

_REWRITE = "delete it and run `aios-mesh lock` to write a fresh one"
_SHAPE = ('{"lock_version": 1, "created_at": "<ISO time>", "models": {"<name>@<alias>": '
          '{"name": "<name>", "version": "<version>", "source": "<uri>", "run_id": null, '
          '"alias": "<alias>", "tags": {}}}, "prompts": {"<name>@<alias>": {"name": "<name>", '
          '"version": "<version>", "alias": "<alias>", "sha256": "<hex digest>"}}, '
          '"indexes": {"<index>": "<snapshot id>"}, "definitions": {"<name>@<version>": '
          '{"kind": "agent", "sha256": "<hex digest>", "names": {}}}}')
_MAX_PROBLEMS = 3


def _model_spec(value: str) -> str:
    try:
        parse_model_spec(value)
    except InvalidInput as exc:
        raise ValueError(exc.message) from None
    return value


def _version(value: Any) -> Any:
    # hand-written locks may say "version": 3; bool is not a version (strict mode rejects it)
    if type(value) is int and value >= 0:
        return str(value)
    return value


_Spec = Annotated[str, AfterValidator(_model_spec)]
_NonEmpty = Annotated[str, Field(min_length=1)]


class _ModelEntry(BaseModel):
    """One pinned model, as ``LockFile.to_document`` writes it."""

    model_config = ConfigDict(strict=True, frozen=True)

    name: _NonEmpty
    version: Annotated[_NonEmpty, BeforeValidator(_version)]
    source: str = ""
    run_id: str | None = None
    alias: str | None = None
    tags: dict[str, str] | None = None

    def ref(self) -> ModelRef:
        return ModelRef(name=self.name, version=self.version, source=self.source,
                        run_id=self.run_id, alias=self.alias, tags=dict(self.tags or {}))


@dataclass(frozen=True, slots=True)
class PromptPin:
    """One pinned prompt version: what a locked ``name@alias`` of a prompt resolves to."""

    name: str
    version: str
    sha256: str
    alias: str | None = None

    @classmethod
    def of(cls, ref: PromptRef, alias: str | None) -> PromptPin:
        """The pin of a resolved prompt version, reached through ``alias``."""
        return cls(ref.name, ref.version, template_sha256(ref.template), alias)


class _PromptEntry(BaseModel):
    """One pinned prompt, as ``LockFile.to_document`` writes it."""

    model_config = ConfigDict(strict=True, frozen=True)

    name: _NonEmpty
    version: Annotated[_NonEmpty, BeforeValidator(_version)]
    sha256: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
    alias: str | None = None

    def pin(self) -> PromptPin:
        return PromptPin(self.name, self.version, self.sha256, self.alias)


@dataclass(frozen=True, slots=True)
class DefinitionPin:
    """One pinned capability definition (an agent's instructions, tools, LLM, budgets): its
    digest, and what it names, for the reader of the lock."""

    kind: str
    sha256: str
    names: dict[str, Any] = field(default_factory=dict)

    #: what of a definition the lock shows its reader (the digest covers all of it)
    SHOWN = ("llm", "tools", "approval")

    @classmethod
    def of(cls, definition: str) -> DefinitionPin:
        """The pin of a capability's :attr:`~aios_mesh.capabilities.CapabilitySpec.definition`
        (canonical JSON with a ``kind``)."""
        doc = orjson.loads(definition)
        return cls(str(doc.get("kind", "definition")),
                   hashlib.sha256(definition.encode()).hexdigest(),
                   {k: doc[k] for k in cls.SHOWN if k in doc})


class _DefinitionEntry(BaseModel):
    """One pinned definition, as ``LockFile.to_document`` writes it."""

    model_config = ConfigDict(strict=True, frozen=True)

    kind: _NonEmpty
    sha256: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
    names: dict[str, Any] = Field(default_factory=dict)

    def pin(self) -> DefinitionPin:
        return DefinitionPin(self.kind, self.sha256, dict(self.names))


class _LockDocument(BaseModel):
    """The whole lock file (format version 1)."""

    model_config = ConfigDict(strict=True, frozen=True)

    lock_version: Annotated[int, Field(ge=LOCK_VERSION, le=LOCK_VERSION)]
    created_at: str = ""
    models: dict[_Spec, _ModelEntry] = Field(default_factory=dict)
    prompts: dict[_Spec, _PromptEntry] = Field(default_factory=dict)
    indexes: dict[str, str] = Field(default_factory=dict)
    definitions: dict[str, _DefinitionEntry] = Field(default_factory=dict)


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object" if isinstance(value, dict) else type(value).__name__


def _where(loc: tuple[int | str, ...]) -> str:
    """A pydantic error location as the reader would write it: ``models['m@a'].version``."""
    if len(loc) >= 2 and loc[-1] == "[key]":
        return f"the key {loc[-2]!r} in {_where(loc[:-2])}"
    text = ""
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
        elif not text:
            text = part
        elif part.isidentifier():
            text += f".{part}"
        else:
            text += f"[{part!r}]"
    return text or "the document"


_MESSAGES = {"dict_type": "should be a JSON object", "model_type": "should be a JSON object",
             "string_type": "should be a string", "int_type": "should be an integer",
             "string_too_short": "should not be empty", "missing": "is missing"}


def _problems(exc: _ValidationError) -> list[str]:
    out = []
    for err in exc.errors(include_url=False, include_context=False):
        loc = tuple(err["loc"])
        message = _MESSAGES.get(err["type"], err["msg"].removeprefix("Value error, "))
        problem = f"{_where(loc)} {message}" if err["type"] in _MESSAGES else \
            f"{_where(loc)}: {message}"
        if err["type"].endswith("_type"):
            problem += f" (got {_json_type(err['input'])})"
        out.append(problem)
    return out


@dataclass
class LockFile:
    """The pins of one lock file: model spec → :class:`ModelRef`, prompt spec →
    :class:`PromptPin`, index → snapshot id, capability key (``name@version``) →
    :class:`DefinitionPin` (an agent's definition).

    :meth:`read` loads (and validates) one, :meth:`write` stores one atomically.
    """

    models: dict[str, ModelRef] = field(default_factory=dict)
    indexes: dict[str, str] = field(default_factory=dict)
    created_at: str = ""
    prompts: dict[str, PromptPin] = field(default_factory=dict)
    definitions: dict[str, DefinitionPin] = field(default_factory=dict)

    @classmethod
    def read(cls, path: Path) -> LockFile | None:
        """The lock at ``path``, or None when there is none.

        Raises:
            ConfigError: the path is a directory or unreadable, or the file is empty, not
                JSON, of another format version or of the wrong shape. The message names the
                file; the hint says how to fix it.
        """
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return None
        except IsADirectoryError as exc:
            raise ConfigError(f"lock file {path} is a directory, not a file",
                              hint="remove the directory, or point `lock_file` in the config at "
                                   "a file (the default is lock_file = \"aios-mesh.lock\")",
                              path=str(path)) from exc
        except PermissionError as exc:
            raise ConfigError(f"lock file {path} cannot be read: permission denied",
                              hint=f"let this user read it (chmod u+r {path}), or {_REWRITE}",
                              path=str(path)) from exc
        except OSError as exc:
            raise ConfigError(f"lock file {path} cannot be read: {exc.strerror or exc}",
                              hint=f"check `lock_file` in the config, or {_REWRITE}",
                              path=str(path)) from exc
        return cls.from_bytes(data, path)

    @classmethod
    def from_bytes(cls, data: bytes, path: Path) -> LockFile:
        """Parse and validate a lock document; ``path`` is only named in errors."""
        if not data.strip():
            raise ConfigError(f"lock file {path} is empty",
                              hint=f"{_REWRITE} (or delete it to resolve aliases live)",
                              path=str(path))
        try:
            doc = orjson.loads(data)
        except orjson.JSONDecodeError as exc:
            raise ConfigError(f"lock file {path} is not valid JSON ({exc})",
                              hint=_REWRITE, path=str(path)) from exc
        try:
            lock = _LockDocument.model_validate(doc)
        except _ValidationError as exc:
            raise cls._shape_error(path, doc, exc) from None
        return cls({spec: entry.ref() for spec, entry in lock.models.items()},
                   dict(lock.indexes), lock.created_at,
                   {spec: entry.pin() for spec, entry in lock.prompts.items()},
                   {key: entry.pin() for key, entry in lock.definitions.items()})

    @staticmethod
    def _shape_error(path: Path, doc: Any, exc: _ValidationError) -> ConfigError:
        if isinstance(doc, dict) and any(tuple(e["loc"]) == ("lock_version",)
                                         for e in exc.errors()):
            if "lock_version" not in doc:
                return ConfigError(
                    f"lock file {path} has no lock_version: it is not an aios-mesh lock file",
                    hint=f"check that `lock_file` in the config names the lock, or {_REWRITE}",
                    path=str(path))
            found = orjson.dumps(doc["lock_version"]).decode()
            found = found if len(found) <= 40 else found[:37] + "..."
            return ConfigError(
                f"lock file {path} has format version {found}; this aios-mesh reads version "
                f"{LOCK_VERSION}",
                hint="use the aios-mesh release that wrote it, or " + _REWRITE,
                path=str(path), lock_version=found)
        problems = _problems(exc)
        shown = "; ".join(problems[:_MAX_PROBLEMS])
        if len(problems) > _MAX_PROBLEMS:
            shown += f" (and {len(problems) - _MAX_PROBLEMS} more)"
        return ConfigError(f"lock file {path} has the wrong shape: {shown}",
                           hint=f"{_REWRITE}; the expected shape is {_SHAPE}",
                           path=str(path), problems=problems)

    def to_document(self) -> dict[str, Any]:
        """The JSON document :meth:`write` stores (sorted, so diffs stay small)."""
        return {
            "lock_version": LOCK_VERSION,
            "created_at": self.created_at or datetime.now(UTC).isoformat(),
            # tags carry what a fresh process needs to load the model (e.g. the tracking URI)
            "models": {spec: {"name": r.name, "version": r.version, "source": r.source,
                              "run_id": r.run_id, "alias": r.alias, "tags": dict(r.tags)}
                       for spec, r in sorted(self.models.items())},
            "prompts": {spec: {"name": p.name, "version": p.version, "alias": p.alias,
                               "sha256": p.sha256}
                        for spec, p in sorted(self.prompts.items())},
            "indexes": dict(sorted(self.indexes.items())),
            "definitions": {key: {"kind": d.kind, "sha256": d.sha256, "names": dict(d.names)}
                            for key, d in sorted(self.definitions.items())},
        }

    def write(self, path: Path) -> None:
        """Write atomically (temp file in the same folder, fsync, ``os.replace``), so a crash
        or a concurrent reader never sees half a lock.

        The file keeps the mode of the lock it replaces (0644 for a new one: the temp file's
        0600 would hide it from other users of a shared checkout).

        Raises:
            ConfigError: the lock cannot be written (a directory in the way, no permission).
        """
        data = orjson.dumps(self.to_document(), option=orjson.OPT_INDENT_2) + b"\n"
        try:
            mode = stat.S_IMODE(path.stat().st_mode) if path.is_file() else 0o644
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}-", suffix=".tmp")
        except OSError as exc:
            raise ConfigError(f"cannot write lock file {path}: {exc.strerror or exc}",
                              hint="check `lock_file` in the config and that its folder is "
                                   "writable", path=str(path)) from exc
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fchmod(f.fileno(), mode)
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException as exc:
            Path(tmp).unlink(missing_ok=True)
            if isinstance(exc, OSError):
                raise ConfigError(f"cannot write lock file {path}: {exc.strerror or exc}",
                                  hint="check `lock_file` in the config: it must name a file "
                                       "in a writable folder", path=str(path)) from exc
            raise
        _fsync_dir(path.parent)


def _fsync_dir(folder: Path) -> None:
    """Make the rename itself durable (POSIX); a no-op where folders cannot be opened."""
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
