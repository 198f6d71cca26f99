"""Backend lookup: a URL's scheme picks the adapter.

``"triton+grpc://127.0.0.1:8001"`` → the Triton adapter, ``"rego:///policies"`` → in-process
Rego. Adapters come from the entry-point group ``aios_mesh.adapters`` (names are
``"<port>:<scheme>"``, values ``"module:Class"``) and from the built-in lazy table below, which
also knows the extra to install. Nothing is imported until an adapter is asked for.

Paths follow SQLAlchemy's rule: ``scheme:///rel/path`` is relative to the config file's
folder, ``scheme:////abs/path`` is absolute.

Options: every adapter reads its query options (and the keyword options given to
``from_url``, which win) through the typed accessors of :class:`BackendURL` —
:meth:`~BackendURL.option` (text), :meth:`~BackendURL.int_option`,
:meth:`~BackendURL.float_option`, :meth:`~BackendURL.seconds_option`,
:meth:`~BackendURL.flag` and :meth:`~BackendURL.choice_option` — so a bad value is always a
:class:`ConfigError` naming the option and the (masked) URL, with a hint saying how to write
it. An empty value (``?timeout=``) or a keyword given as ``None`` counts as not given.

Secrets: :data:`SECRET_OPTIONS` is the one list of option names whose values are secrets
and :func:`redact_url` the one function that masks a URL (the userinfo password and every
secret option, in the query and the fragment); :meth:`BackendURL.redacted`, ``repr()``,
error messages and ``aios-mesh doctor`` all go through it.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib
import math
import re
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from functools import cache
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, Final, Literal, TypeVar, get_args, overload
from urllib.parse import parse_qsl, unquote, unquote_plus, urlencode, urlsplit, urlunsplit

from aios_mesh.errors import ConfigError

__all__ = [
    "BUILTIN_ADAPTERS",
    "DEFAULT_URLS",
    "ENTRY_POINT_GROUP",
    "MASK",
    "PORTS",
    "SECOND_UNITS",
    "SECRET_OPTIONS",
    "AdapterTarget",
    "BackendURL",
    "PortName",
    "adapter_class",
    "is_secret_option",
    "known_schemes",
    "load_adapter",
    "parse_port_url",
    "parse_url",
    "redact_url",
]

ENTRY_POINT_GROUP: Final = "aios_mesh.adapters"
PortName = Literal["serving", "registry", "retrieval", "policy", "events", "orchestrator",
                   "lineage", "quota", "audit"]
PORTS: Final[tuple[PortName, ...]] = get_args(PortName)


@dataclass(frozen=True, slots=True)
class AdapterTarget:
    """Where an adapter class lives and which extra installs what it needs."""

    target: str  # "module:Class"
    extra: str | None = None


def _t(target: str, extra: str | None = None) -> AdapterTarget:
    return AdapterTarget(target, extra)


BUILTIN_ADAPTERS: Final[Mapping[str, Mapping[str, AdapterTarget]]] = {
    "serving": {
        "inprocess": _t("aios_mesh.embedded.serving:InProcessServing"),
        "bentoml+http": _t("aios_mesh_bentoml:BentoMLServing", "bentoml"),
        "bentoml+https": _t("aios_mesh_bentoml:BentoMLServing", "bentoml"),
        "triton+http": _t("aios_mesh_triton:TritonServing", "triton"),
        "triton+grpc": _t("aios_mesh_triton:TritonServing", "triton"),
        "rayserve+http": _t("aios_mesh_rayserve:RayServeServing", "ray"),
        "rayserve+https": _t("aios_mesh_rayserve:RayServeServing", "ray"),
        "rayserve+handle": _t("aios_mesh_rayserve:RayServeServing", "ray"),
        "llamacpp": _t("aios_mesh_llamacpp:LlamaCppServing", "llm"),
        "openai+http": _t("aios_mesh_openai:OpenAIServing", "llm"),
        "openai+https": _t("aios_mesh_openai:OpenAIServing", "llm"),
    },
    "registry": {
        "memory": _t("aios_mesh.embedded.registry:MemoryRegistry"),
        "mlflow+sqlite": _t("aios_mesh_mlflow:MlflowRegistry", "mlflow"),
        "mlflow+http": _t("aios_mesh_mlflow:MlflowRegistry", "mlflow"),
        "mlflow+https": _t("aios_mesh_mlflow:MlflowRegistry", "mlflow"),
    },
    "retrieval": {
        "qdrant-edge": _t("aios_mesh_qdrant_edge:EdgeRetrieval", "retrieval-embedded"),
        "qdrant": _t("aios_mesh_qdrant:QdrantRetrieval", "qdrant"),
        "qdrant+local": _t("aios_mesh_qdrant:QdrantRetrieval", "qdrant"),
    },
    "policy": {
        "rego": _t("aios_mesh_regopy:RegoPolicy", "policy-embedded"),
        "opa+http": _t("aios_mesh_opa:OpaPolicy", "opa"),
    },
    "events": {
        "sqlite": _t("aios_mesh.embedded.events:SqliteEventBus"),
        "kafka": _t("aios_mesh_kafka:KafkaEventBus", "kafka"),
        "nats": _t("aios_mesh_nats:NatsEventBus", "nats"),
    },
    "orchestrator": {
        "flyte-local": _t("aios_mesh_flyte:FlyteLocalOrchestrator", "flyte"),
        "flyte": _t("aios_mesh_flyte:FlyteRemoteOrchestrator", "flyte"),
    },
    "lineage": {
        "openlineage+file": _t("aios_mesh_openlineage:OpenLineageEmitter", "openlineage"),
        "openlineage+http": _t("aios_mesh_openlineage:OpenLineageEmitter", "openlineage"),
        "openlineage+kafka": _t("aios_mesh_openlineage:OpenLineageEmitter", "openlineage"),
    },
    "quota": {
        "memory": _t("aios_mesh.embedded.quota:InProcessQuota"),
        "redis": _t("aios_mesh_redis:RedisQuota", "redis"),
    },
    "audit": {
        "jsonl": _t("aios_mesh.embedded.audit:JsonlAuditLog"),
        "postgresql": _t("aios_mesh_postgres:PostgresAuditLog", "postgres"),
    },
}

#: The embedded default of every port: no server, relative to the mesh's state folder.
DEFAULT_URLS: Final[Mapping[PortName, str]] = {
    "serving": "inprocess://",
    "registry": "mlflow+sqlite:///registry/mlflow.db",
    "retrieval": "qdrant-edge:///qdrant",
    "policy": "rego:///policies",
    "events": "sqlite:///events.db",
    "orchestrator": "flyte-local://",
    "lineage": "openlineage+file:///lineage",
    "quota": "memory://",
    "audit": "jsonl:///audit.jsonl",
}


#: Option names whose values are secrets, compared without case and with ``-`` read as
#: ``_``. A name is secret when it is one of these or ends in ``_`` plus one of them
#: (``nats_token``, ``aws_secret_access_key``, ``x-api-key``). The one list: every place that
#: shows a URL masks these options through :func:`redact_url`.
SECRET_OPTIONS: Final[frozenset[str]] = frozenset({
    "password", "passwd", "pwd", "pass", "sslpassword",
    "secret", "client_secret", "secret_key", "secret_access_key",
    "token", "access_token", "auth_token", "refresh_token", "id_token", "bearer",
    "api_key", "apikey", "api_token", "access_key", "private_key", "sslkey_password",
    "credential", "credentials", "sas", "sig", "signature",
})
#: What a masked value reads as.
MASK: Final = "***"

_SECRET_SUFFIXES: Final = tuple(f"_{name}" for name in SECRET_OPTIONS)


def is_secret_option(name: str) -> bool:
    """Whether an option called ``name`` holds a secret (see :data:`SECRET_OPTIONS`)."""
    key = name.strip().lower().replace("-", "_")
    return key in SECRET_OPTIONS or key.endswith(_SECRET_SUFFIXES)


def _mask_pairs(text: str) -> str:
    """``a=1&token=x`` with the values of secret keys masked (``&`` or ``;`` separated)."""
    parts = re.split(r"([&;])", text)
    for i in range(0, len(parts), 2):
        key, eq, value = parts[i].partition("=")
        if eq and value and is_secret_option(unquote_plus(key)):
            parts[i] = f"{key}={MASK}"
    return "".join(parts)


def redact_url(raw: str) -> str:
    """``raw`` with its secrets masked: the password of the userinfo
    (``redis://user:***@host``) and the value of every secret option
    (:data:`SECRET_OPTIONS`) in the query and the fragment. Never raises; anything that is
    not a secret is kept as written, so the result still names the backend."""
    scheme, sep, rest = raw.partition("://")
    if not sep:
        scheme, rest = "", raw
    # the authority ends where urlsplit ends it: at the first '/', '?' or '#'
    end = min((i for i in (rest.find(c) for c in "/?#") if i != -1), default=len(rest))
    netloc, tail = rest[:end], rest[end:]
    userinfo, at, hostport = netloc.rpartition("@")
    if at:
        user, colon, password = userinfo.partition(":")
        if colon and password:
            netloc = f"{user}:{MASK}@{hostport}"
    path, qmark, query = tail.partition("?")
    if qmark:
        query, hash_, fragment = query.partition("#")
        tail = f"{path}?{_mask_pairs(query)}{hash_}{_mask_pairs(fragment)}"
    else:
        path, hash_, fragment = tail.partition("#")
        tail = f"{path}{hash_}{_mask_pairs(fragment)}"
    return f"{scheme}{sep}{netloc}{tail}"


_TRUE: Final = frozenset({"1", "true", "yes", "on"})
_FALSE: Final = frozenset({"0", "false", "no", "off"})
#: Units of :meth:`BackendURL.seconds_option`; a bare number is seconds.
SECOND_UNITS: Final[Mapping[str, float]] = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
_DURATION: Final = re.compile(
    r"([-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?)\s*(ms|s|m|h)?", re.IGNORECASE)
_N = TypeVar("_N", int, float)


@dataclass(frozen=True, slots=True, repr=False)
class BackendURL:
    """A parsed backend URL. ``options`` holds the query string (``?timeout=2&external=true``)."""

    raw: str
    scheme: str
    host: str | None = None
    port: int | None = None
    path: str = ""
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    options: dict[str, str] = field(default_factory=dict)
    #: keyword options given to ``from_url`` (see :meth:`with_options`); they win over
    #: ``options`` and may be typed values (``timeout=2.5``, ``tls=True``, a ``SecretStr``)
    given: Mapping[str, Any] = field(default_factory=dict, compare=False)

    @property
    def driver(self) -> str | None:
        """The part after ``+`` in ``dialect+driver``, e.g. ``grpc`` in ``triton+grpc``."""
        return self.scheme.split("+", 1)[1] if "+" in self.scheme else None

    @property
    def address(self) -> str:
        """``host:port`` of a server URL."""
        if not self.host:
            raise ConfigError(f"{self.redacted()} names no host",
                              hint="write scheme://HOST:PORT, e.g. qdrant://127.0.0.1:6333")
        return f"{self.host}:{self.port}" if self.port else self.host

    def resolve_path(self, base_dir: Path) -> Path:
        """The URL's path as a filesystem path (relative paths are under ``base_dir``)."""
        if not self.path:
            raise ConfigError(f"{self.redacted()} names no path",
                              hint=f"write {self.scheme}:///relative/path or "
                                   f"{self.scheme}:////absolute/path")
        if self.path.startswith("//"):
            return Path(self.path[1:])
        return base_dir / self.path.lstrip("/")

    # -- options ---------------------------------------------------------------------------

    def with_options(self, given: Mapping[str, Any]) -> BackendURL:
        """This URL with ``given`` (``from_url``'s keyword options) layered over its query
        options: every accessor then reads a keyword first. ``None`` means not given."""
        if not given:
            return self
        return dataclasses.replace(self, given={**self.given, **given})

    @property
    def option_names(self) -> frozenset[str]:
        """Every option set, in the query or as a keyword."""
        return frozenset(self.options) | frozenset(self.given)

    def check_options(self, known: Iterable[str], *, what: str = "") -> None:
        """Raise :class:`ConfigError` naming the first unknown option (with the closest known
        name) unless every option set is in ``known``. ``what`` names the adapter."""
        allowed = sorted(set(known))
        unknown = sorted(self.option_names - set(allowed))
        if not unknown:
            return
        names = ", ".join(repr(n) for n in unknown)
        close = difflib.get_close_matches(unknown[0], allowed, n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        owner = f"the {what} adapter's" if what else "its"
        hint += (f"{owner} options are: {', '.join(allowed)}" if allowed
                 else f"the {what or self.scheme} adapter takes no options")
        raise ConfigError(f"unknown option{'s' if len(unknown) > 1 else ''} {names} for "
                          f"{self.redacted()}", hint=hint)

    def value(self, name: str) -> Any:
        """The option as given, untyped: a keyword's value, else the query's text, else
        ``None`` (an empty query value counts as not given)."""
        found = self.given.get(name)
        if found is None:
            found = self.options.get(name) or None
        return found

    def option(self, name: str, default: str | None = None) -> str | None:
        """The option as text (a ``SecretStr`` keyword is revealed), or ``default``."""
        value = self.value(name)
        if value is None:
            return default
        if hasattr(value, "get_secret_value"):
            value = value.get_secret_value()
        return value if isinstance(value, str) else str(value)

    def _bad(self, name: str, value: object, problem: str, example: object,
             note: str = "") -> ConfigError:
        shown = MASK if is_secret_option(name) else repr(value)
        return ConfigError(f"option {name}={shown} for {self.redacted()} {problem}",
                           hint=f"write {name}={example}{note}", option=name)

    def _bounded(self, name: str, value: object, number: _N, lo: _N | None,
                 hi: _N | None, example: object) -> _N:
        if lo is not None and number < lo:
            raise self._bad(name, value, f"is below the minimum {lo}", example)
        if hi is not None and number > hi:
            raise self._bad(name, value, f"is above the maximum {hi}", example)
        return number

    @overload
    def int_option(self, name: str, default: int, *, min: int | None = None,
                   max: int | None = None) -> int: ...
    @overload
    def int_option(self, name: str, default: None = None, *, min: int | None = None,
                   max: int | None = None) -> int | None: ...

    def int_option(self, name: str, default: int | None = None, *, min: int | None = None,
                   max: int | None = None) -> int | None:
        """The option as an integer within ``[min, max]``, or ``default`` when not given.

        Accepts ``42``, ``-3``, ``1_000`` (as Python writes ints); a keyword may be an ``int``
        or an integral ``float``. A bool, a fraction or text is a :class:`ConfigError`."""
        value = self.value(name)
        if value is None:
            return default
        example = default if default is not None else (min if min is not None else 1)
        number: int
        if isinstance(value, bool):
            raise self._bad(name, value, "is not an integer", example)
        if isinstance(value, int):
            number = value
        elif isinstance(value, float) and value.is_integer():
            number = int(value)
        elif isinstance(value, str) and re.fullmatch(r"\s*[-+]?\d[\d_]*\s*", value):
            try:
                number = int(value)
            except ValueError as exc:  # '1__0'
                raise self._bad(name, value, "is not an integer", example) from exc
        else:
            raise self._bad(name, value, "is not an integer", example)
        return self._bounded(name, value, number, min, max, example)

    @overload
    def float_option(self, name: str, default: float, *, min: float | None = None,
                     max: float | None = None) -> float: ...
    @overload
    def float_option(self, name: str, default: None = None, *, min: float | None = None,
                     max: float | None = None) -> float | None: ...

    def float_option(self, name: str, default: float | None = None, *,
                     min: float | None = None, max: float | None = None) -> float | None:
        """The option as a finite number within ``[min, max]``, or ``default``.

        NaN and infinity are refused (no option of this SDK means anything by them)."""
        value = self.value(name)
        if value is None:
            return default
        example = default if default is not None else (min if min is not None else 1)
        number: float
        if isinstance(value, bool):
            raise self._bad(name, value, "is not a number", example)
        if isinstance(value, int | float):
            number = float(value)
        elif isinstance(value, str):
            try:
                number = float(value)
            except ValueError as exc:
                raise self._bad(name, value, "is not a number", example) from exc
        else:
            raise self._bad(name, value, "is not a number", example)
        if not math.isfinite(number):
            raise self._bad(name, value, "is not a finite number", example)
        return self._bounded(name, value, number, min, max, example)

    @overload
    def seconds_option(self, name: str, default: float, *, min: float | None = 0.0,
                       max: float | None = None) -> float: ...
    @overload
    def seconds_option(self, name: str, default: None = None, *, min: float | None = 0.0,
                       max: float | None = None) -> float | None: ...

    def seconds_option(self, name: str, default: float | None = None, *,
                       min: float | None = 0.0, max: float | None = None) -> float | None:
        """A duration in seconds within ``[min, max]`` (``min`` defaults to 0), or
        ``default``.

        Text is a number with an optional unit (:data:`SECOND_UNITS`): ``2`` and ``2s`` are
        two seconds, ``2.5`` two and a half, ``500ms`` half a second, ``1m`` a minute, ``1h``
        an hour. A keyword may be a number of seconds or a :class:`datetime.timedelta`."""
        value = self.value(name)
        if value is None:
            return default
        example = f"{default:g}" if default is not None else "2"
        note = " (seconds; or with a unit: 500ms, 2s, 1m, 1h)"
        seconds: float
        if isinstance(value, bool):
            raise self._bad(name, value, "is not a duration", example, note)
        if isinstance(value, timedelta):
            seconds = value.total_seconds()
        elif isinstance(value, int | float):
            seconds = float(value)
        elif isinstance(value, str) and (match := _DURATION.fullmatch(value.strip())):
            unit = (match.group(2) or "s").lower()
            seconds = float(match.group(1)) * SECOND_UNITS[unit]
        else:
            raise self._bad(name, value, "is not a duration", example, note)
        if not math.isfinite(seconds):
            raise self._bad(name, value, "is not a finite duration", example, note)
        return self._bounded(name, value, seconds, min, max, example)

    def flag(self, name: str, default: bool = False) -> bool:
        """The option as a boolean: ``true/false``, ``1/0``, ``yes/no``, ``on/off`` (any
        case), or a ``bool`` keyword; ``default`` when not given."""
        value = self.value(name)
        if value is None:
            return default
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower() if isinstance(value, str | int) else None
        if text in _TRUE:
            return True
        if text in _FALSE:
            return False
        raise self._bad(name, value, "is not a boolean", f"true or {name}=false")

    def choice_option(self, name: str, choices: Collection[str], default: str) -> str:
        """The option as one of ``choices`` (compared without case), or ``default``."""
        value = self.value(name)
        if value is None:
            return default
        text = str(value).strip().lower()
        known = {c.lower(): c for c in choices}
        if text in known:
            return known[text]
        close = difflib.get_close_matches(text, list(known), n=1)
        listed = " or ".join(f"{name}={c}" for c in choices)
        hint = f"did you mean {known[close[0]]!r}? " if close else ""
        raise ConfigError(f"option {name}={value!r} for {self.redacted()} is not one of "
                          f"{', '.join(choices)}", hint=f"{hint}write {listed}", option=name)

    def path_option(self, name: str, base_dir: Path) -> Path | None:
        """The option as a filesystem path, by the rule of :meth:`resolve_path`: ``//abs``
        is absolute, anything else is under ``base_dir``; a :class:`~pathlib.Path` keyword
        that is absolute stays so. ``None`` when not given."""
        value = self.value(name)
        if value is None:
            return None
        if isinstance(value, Path):
            return value if value.is_absolute() else base_dir / value
        text = str(value)
        return Path(text[1:]) if text.startswith("//") else base_dir / text.lstrip("/")

    def without_options(self, names: Iterable[str]) -> str:
        """The raw URL minus the query options in ``names`` (and the fragment): what an
        adapter hands its SDK once it has read its own options."""
        drop = set(names)
        parts = urlsplit(self.raw)
        kept = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True)
                if k not in drop]
        return urlunsplit((parts.scheme, parts.netloc, parts.path, urlencode(kept), ""))

    # -- showing ---------------------------------------------------------------------------

    def __repr__(self) -> str:
        return f"BackendURL({self.redacted()!r})"

    def redacted(self) -> str:
        """The URL with its secrets masked (:func:`redact_url`), for messages and logs."""
        return redact_url(self.raw)


def parse_url(raw: str) -> BackendURL:
    """Parse a backend URL or raise :class:`ConfigError` saying how to write it."""
    if not isinstance(raw, str) or "://" not in raw:
        shown = redact_url(raw) if isinstance(raw, str) else raw
        raise ConfigError(f"{shown!r} is not a backend URL",
                          hint="write scheme://..., e.g. 'rego:///policies' or "
                               "'triton+grpc://127.0.0.1:8001'")
    try:
        parts = urlsplit(raw)
        port = parts.port
    except ValueError as exc:
        raise ConfigError(f"malformed backend URL {redact_url(raw)!r}: {exc}",
                          hint="check the host and port, e.g. qdrant://127.0.0.1:6333") from exc
    scheme = parts.scheme.lower()
    if not scheme:
        raise ConfigError(f"{redact_url(raw)!r} has no scheme",
                          hint="start it with e.g. 'qdrant://'")
    # urlsplit leaves 'scheme:///x' with netloc '' and path '/x'; we keep that leading slash
    # so resolve_path can tell relative ('/x') from absolute ('//x').
    path = raw.split("://", 1)[1]
    path = path[len(parts.netloc):].split("?", 1)[0].split("#", 1)[0]
    return BackendURL(
        raw=raw,
        scheme=scheme,
        host=parts.hostname,
        port=port,
        path=unquote(path),
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password else None,
        options=dict(parse_qsl(parts.query, keep_blank_values=True)),
    )


@cache
def _entry_point_targets() -> dict[str, dict[str, AdapterTarget]]:
    table: dict[str, dict[str, AdapterTarget]] = {}
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        port, _, scheme = ep.name.partition(":")
        if port in PORTS and scheme:
            table.setdefault(port, {})[scheme.lower()] = AdapterTarget(ep.value)
    return table


def known_schemes(port: PortName) -> list[str]:
    """Every scheme that resolves for ``port`` (built-in and entry points)."""
    return sorted({*BUILTIN_ADAPTERS.get(port, {}), *_entry_point_targets().get(port, {})})


def _lookup(port: PortName, scheme: str) -> AdapterTarget:
    if port not in PORTS:
        raise ConfigError(f"unknown port {port!r}", hint=f"ports are: {', '.join(PORTS)}")
    found = _entry_point_targets().get(port, {}).get(scheme)
    if found is None:
        found = BUILTIN_ADAPTERS.get(port, {}).get(scheme)
    if found is None:
        schemes = known_schemes(port)
        close = difflib.get_close_matches(scheme, schemes, n=1, cutoff=0.6)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise ConfigError(f"no {port} adapter for scheme {scheme!r}",
                          hint=f"{hint}known {port} schemes: {', '.join(schemes)}",
                          port=port, scheme=scheme)
    return found


def parse_port_url(port: PortName, raw: str) -> BackendURL:
    """Parse ``raw`` as the URL of ``port``'s backend: like :func:`parse_url`, and its scheme
    must name an adapter of that port (built-in or entry point), else a :class:`ConfigError`
    with the closest known scheme. Nothing is imported."""
    parsed = parse_url(raw)
    _lookup(port, parsed.scheme)
    return parsed


def adapter_class(port: PortName, scheme: str) -> type[Any]:
    """Import and return the adapter class for ``port`` and ``scheme``."""
    target = _lookup(port, scheme.lower())
    module_name, _, attr = target.target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        extra = target.extra
        how = (f'pip install "aios-mesh[{extra}]"' if extra
               else f"install the package that provides {module_name}")
        raise ConfigError(f"the {port} adapter for {scheme!r} is not installed ({exc.name})",
                          hint=how, port=port, scheme=scheme) from exc
    try:
        cls: type[Any] = getattr(module, attr)
    except AttributeError as exc:
        raise ConfigError(f"{target.target} names no class {attr!r}",
                          hint="fix the entry point of the adapter's package") from exc
    return cls


def load_adapter(port: PortName, url: str, *, base_dir: Path,
                 **options: Any) -> Any:
    """Instantiate the adapter for ``url`` via its ``from_url(url, base_dir=..., **options)``."""
    parsed = parse_url(url)
    cls = adapter_class(port, parsed.scheme)
    return cls.from_url(parsed, base_dir=base_dir, **options)
