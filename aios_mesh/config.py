"""Typed mesh configuration, validated before any backend SDK is imported.

A config file is TOML (``aios-mesh.toml``)::

    state_dir = ".aios-mesh"          # embedded defaults keep their files here
    max_payload_bytes = 1048576

    [tenants.acme]
    quota = { calls_per_minute = 60, cost_per_month = 50.0 }
    [tenants.acme.capabilities.extract-invoice-fields]
    rate_per_s = 20
    burst = 40

    [backends]                         # omitted ports use their embedded default
    serving = "triton+grpc://127.0.0.1:8001"
    policy = "rego:///policies"

    [[capabilities]]
    name = "extract-invoice-fields"
    input = "myapp.models:InvoiceText"
    output = "myapp.models:InvoiceFields"
    model = "invoice-extractor@champion"

Backend URL precedence, per port: explicit argument > ``AIOS_MESH_<PORT>_URL`` > config file >
embedded default (:data:`aios_mesh.backends.DEFAULT_URLS`).
"""

from __future__ import annotations

import difflib
import os
import tomllib
import types
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Annotated, Any, Final, Literal, Union, cast, get_args, get_origin

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
)

from aios_mesh.anchoring.config import AnchorConfig
from aios_mesh.backends import DEFAULT_URLS, PORTS, PortName, parse_port_url, redact_url
from aios_mesh.errors import ConfigError
from aios_mesh.ports.quota import QuotaLimits
from aios_mesh.state import check_state_url

__all__ = [
    "JWT_ALGORITHMS",
    "AuthConfig",
    "BackendsConfig",
    "BreakerConfig",
    "CacheConfig",
    "DriftConfig",
    "GatewayConfig",
    "JwtConfig",
    "LimitsConfig",
    "MeshConfig",
    "PolicyConfig",
    "RetryConfig",
    "SchedulerConfig",
    "TelemetryConfig",
    "TenantConfig",
    "load_config",
]

UrlSource = Literal["argument", "environment", "config", "default"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


_Count = Annotated[int | None, Field(ge=0)]
_Amount = Annotated[float | None, Field(ge=0, allow_inf_nan=False)]


class LimitsConfig(_Strict):
    """Budgets of a tenant (``[tenants.NAME.quota]``) or of one capability of it
    (``[tenants.NAME.capabilities.CAP]``); omitted = unlimited. ``calls``, ``tokens``, ``cost``
    and ``gpu_seconds`` are lifetime budgets; ``<metric>_per_<minute|hour|day|month>`` are
    budgets per calendar window in UTC; ``rate_per_s``/``burst`` a token bucket on calls. The
    same names as :class:`aios_mesh.ports.quota.QuotaLimits` (a test keeps them equal)."""

    calls: _Count = None
    tokens: _Count = None
    cost: _Amount = None
    gpu_seconds: _Amount = None
    rate_per_s: float | None = Field(None, gt=0, allow_inf_nan=False)
    burst: int | None = Field(None, ge=1)
    calls_per_minute: _Count = None
    calls_per_hour: _Count = None
    calls_per_day: _Count = None
    calls_per_month: _Count = None
    tokens_per_minute: _Count = None
    tokens_per_hour: _Count = None
    tokens_per_day: _Count = None
    tokens_per_month: _Count = None
    cost_per_minute: _Amount = None
    cost_per_hour: _Amount = None
    cost_per_day: _Amount = None
    cost_per_month: _Amount = None
    gpu_seconds_per_minute: _Amount = None
    gpu_seconds_per_hour: _Amount = None
    gpu_seconds_per_day: _Amount = None
    gpu_seconds_per_month: _Amount = None

    def to_limits(self) -> QuotaLimits:
        """The limits the quota store enforces."""
        return QuotaLimits(**self.model_dump())


class TenantConfig(_Strict):
    quota: LimitsConfig | None = None
    capabilities: dict[str, LimitsConfig] = Field(default_factory=dict)


class RetryConfig(_Strict):
    """Retries per call, and the budget that keeps retries below a fraction of calls so an
    outage cannot turn into a retry storm (Finagle's retry budget)."""

    max_attempts: int = Field(3, ge=1, le=10)
    budget_ratio: float = Field(0.2, ge=0, le=1)
    min_retries_per_s: float = Field(5.0, ge=0)
    backoff_s: float = Field(0.02, ge=0)
    max_backoff_s: float = Field(1.0, ge=0)


class SchedulerConfig(_Strict):
    """The fair scheduler in front of every serving backend (:mod:`aios_mesh.pipeline.fair`):
    a concurrency limit per backend, weighted fair queues per tenant, interactive calls
    before bulk ones, and early ``Overloaded`` refusals when the queue would break the SLO.
    Per process: each gateway worker schedules its own calls."""

    enabled: bool = False
    #: calls in flight at once on a backend not named under ``backends``
    default_concurrency: int = Field(4, ge=1, le=4096)
    #: serving backend name (``default`` or a ``[backends.serving_named]`` key) → calls in flight
    backends: dict[str, Annotated[int, Field(ge=1, le=4096)]] = Field(default_factory=dict)
    #: tenant → share of a busy backend (default 1): weight 2 gets twice the grants of weight 1
    weights: dict[str, Annotated[float, Field(gt=0, le=1000, allow_inf_nan=False)]] = Field(
        default_factory=dict)
    #: a bulk call waiting this long goes before interactive ones (bounds bulk starvation);
    #: None: bulk waits as long as any interactive call waits
    bulk_aging_s: float | None = Field(30.0, gt=0, allow_inf_nan=False)


class BreakerConfig(_Strict):
    """A breaker per (serving backend, model) with a compartment per tenant: a tenant's
    compartment opens after ``failure_threshold`` consecutive backend failures of its calls;
    the backend's shared breaker opens for every tenant once ``min_failing_tenants`` tenants'
    compartments opened with no successful call in between."""

    failure_threshold: int = Field(5, ge=1)
    reset_timeout_s: float = Field(10.0, gt=0)
    min_failing_tenants: int = Field(2, ge=1, description="1: one tenant's failures open the "
                                     "backend's breaker for every tenant")


class CacheConfig(_Strict):
    alias_ttl_s: float = Field(30.0, ge=0)
    policy_decisions: int = Field(10_000, ge=0, description="0 disables the decision cache")
    policy_ttl_s: float = Field(60.0, ge=0)


class PolicyConfig(_Strict):
    """Policy on every call (``[policy]``; see docs/governance/policy.md).

    ``default`` names a package every capability passes through, *in addition* to its own
    ``policy=`` (both must allow; the obligations of both apply). ``mode = "deny-by-default"``
    denies a capability that has neither (reason code ``no_policy``); the default,
    ``allow-by-default``, lets it run unchecked. A package may declare the JSON Schema of its
    input (``<name>.schema.json`` beside ``<name>.rego``); an input that does not match is
    denied (``on_schema_mismatch = "deny"``) or still evaluated and, when allowed, sent to
    human review (``"review"``). ``require_schema = true`` refuses a bundle with a package
    that declares no schema.
    """

    default: str | None = Field(None, min_length=1, description="e.g. 'mesh/default'")
    mode: Literal["allow-by-default", "deny-by-default"] = "allow-by-default"
    on_schema_mismatch: Literal["deny", "review"] = "deny"
    require_schema: bool = False


class RedactionConfig(_Strict):
    """``mask`` replaces PII by ``[EMAIL]``-style masks; ``tokenize`` by reversible tokens
    that are mapped back in the answer for the same tenant.

    ``vault``: where tokens map back (docs/governance/vault.md): ``memory`` (this process),
    ``state`` (the shared state), ``postgresql://...`` or ``redis://...``; sealed with the
    keys of ``vault_key_file`` (relative to the config file) or, without one, of the
    environment variable ``vault_key_env`` — never of the config text.
    """

    mode: Literal["mask", "tokenize"] = "mask"
    #: opt-in names and postal addresses in every record: an *installed* spaCy pipeline
    #: (package name or folder; nothing is downloaded), see docs/governance/scrubbing.md
    names_model: str | None = None
    vault: str = "memory"
    vault_key_file: Path | None = None
    vault_key_env: str = Field("AIOS_MESH_VAULT_KEYS", min_length=1)

    @field_validator("vault")
    @classmethod
    def _vault_url(cls, value: str) -> str:
        from aios_mesh.redaction.vault import check_vault_url

        try:
            return check_vault_url(value)
        except ConfigError as exc:
            raise ValueError(f"{exc.message} ({exc.hint})") from None


class TelemetryConfig(_Strict):
    """Signals derived from decision records. ``lineage`` and ``decision_events`` are shipped
    from the audit log by a background relay (see :mod:`aios_mesh.recorder.relay`)."""

    log: bool = True
    otel: bool = True
    lineage: bool = True
    decision_events: bool = True
    #: deprecated: use ``[relay] interval_s`` (kept for one release; wins when set)
    relay_interval_s: float | None = Field(None, gt=0)
    #: deprecated: use ``[relay] linger_s`` (kept for one release; wins when set)
    relay_linger_s: float | None = Field(None, ge=0, le=5)
    service_name: str = "aios-mesh"


class RelayConfig(_Strict):
    """The background relay that ships the outboxes (decision records to lineage and the
    bus, ``mesh.publish`` events to the bus); see :mod:`aios_mesh.relay`.

    ``mode``: ``process`` runs it in a child process (off the caller's GIL), ``thread`` on a
    thread of this process, ``auto`` (default) picks ``process`` unless the audit, lineage
    or events adapter was given as a Python object (a child process cannot share it).
    """

    mode: Literal["auto", "process", "thread"] = "auto"
    #: how often an idle relay looks anyway (records written by other processes)
    interval_s: float = Field(0.5, gt=0, le=60)
    #: after a call wakes the relay, wait this long so a burst ships as one batch
    linger_s: float = Field(0.05, ge=0, le=5)
    #: a sink that keeps failing is retried at most this far apart
    max_backoff_s: float = Field(10.0, gt=0, le=600)


class DriftConfig(_Strict):
    """Drift monitoring (docs/guides/lifecycle.md#drift): every answered call of a model
    version is compared with the reference window logged with that version
    (:func:`aios_mesh.lifecycle.drift.log_reference`); an alarm is an event on
    ``aios.mesh.drift``, a metric, an audit entry and, with ``retrain_workflow``, a workflow
    run through the orchestrator port. The statistics and the correction for testing again
    and again: :mod:`aios_mesh.lifecycle.drift`."""

    #: calls in the sliding window compared with the reference
    window: int = Field(200, ge=20, le=1_000_000)
    #: calls between two checks (once the window is full)
    check_every: int = Field(25, ge=1)
    #: chance of any false alarm within ``horizon`` calls of unchanged traffic
    alpha: float = Field(0.01, gt=0, lt=1)
    horizon: int = Field(100_000, ge=1)
    #: Jensen-Shannon distance (0..1) a feature must reach to count
    min_effect: float = Field(0.15, ge=0, lt=1)
    #: values a feature needs in each window to be tested
    min_count: int = Field(30, ge=5)
    #: quantile bins of the reference for a numeric feature's effect size
    bins: int = Field(10, ge=2, le=100)
    #: more distinct values than this in the reference: an identifier, not tested
    max_categories: int = Field(20, ge=2)
    #: "registry" (the document kept with each model version) or a folder of
    #: <capability>.json / <capability>@<version>.json references
    reference: str = Field("registry", min_length=1)
    #: "module:workflow" started with the alarm's numbers (capability, model_version,
    #: worst_feature) on every alarm
    retrain_workflow: str | None = Field(None, min_length=3, pattern=r"^[\w.]+:\w+$")

    @field_validator("check_every")
    @classmethod
    def _within_window(cls, value: int, info: ValidationInfo) -> int:
        window = info.data.get("window")
        if window is not None and value > window:
            raise ValueError(f"check_every ({value}) must not exceed window ({window})")
        return value


class BackendsConfig(_Strict):
    """One URL per port; ``serving_named`` adds extra serving backends capabilities can pick."""

    serving: str | None = None
    registry: str | None = None
    retrieval: str | None = None
    policy: str | None = None
    events: str | None = None
    orchestrator: str | None = None
    lineage: str | None = None
    quota: str | None = None
    audit: str | None = None
    #: where the mesh's stores (review queue, API keys, bulk jobs, ...) keep state: the
    #: state folder by default (``sqlite://``), or ``postgresql://...`` shared by replicas
    state: str | None = None
    serving_named: dict[str, str] = Field(default_factory=dict)

    @field_validator("state")
    @classmethod
    def _valid_state(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                check_state_url(value)
            except ConfigError as exc:
                raise ValueError(f"{exc.message} ({exc.hint})") from None
        return value

    @field_validator("*")
    @classmethod
    def _valid_url(cls, value: Any, info: ValidationInfo) -> Any:
        if info.field_name == "state":
            return value  # not a port: checked above
        # a scheme no adapter serves is an error now, for every port alike, not when the
        # port is first used (then a background relay would only log it)
        port = cast(PortName, "serving" if info.field_name == "serving_named"
                    else info.field_name)
        urls = [value] if isinstance(value, str) else list(value.values()) \
            if isinstance(value, dict) else []
        for url in urls:
            try:
                parse_port_url(port, url)
            except ConfigError as exc:  # pydantic reports ValueErrors with their location
                raise ValueError(f"{exc.message} ({exc.hint})") from None
        return value

    def __repr_args__(self) -> Iterable[tuple[str | None, Any]]:
        """``repr()`` shows each URL masked (:func:`aios_mesh.backends.redact_url`)."""
        for name, value in super().__repr_args__():
            if isinstance(value, str):
                yield name, redact_url(value)
            elif isinstance(value, dict):
                yield name, {k: redact_url(v) for k, v in value.items()}
            else:
                yield name, value


#: JWT algorithms a JWKS may sign with: asymmetric only. ``none`` and the HMAC family
#: (``HS*``) are refused, so a public key can never be used as an HMAC secret.
JWT_ALGORITHMS: Final = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512",
                         "ES256", "ES384", "ES512", "EdDSA")


class JwtConfig(_Strict):
    """JWT bearer tokens (``[gateway.auth.jwt]``): signed by a key of the JWKS at ``jwks``
    (a file path, relative to the config's folder, or an ``http(s)://`` URL), issued by
    ``issuer`` for ``audience``. Claims are named by dotted paths (``org.id``)."""

    jwks: str = Field(min_length=1)
    issuer: str = Field(min_length=1)
    audience: tuple[str, ...] = Field(min_length=1)
    algorithms: tuple[str, ...] = ("RS256", "ES256")
    #: the claim that names the tenant; ``tenants`` maps its values to tenant names
    #: (empty: the value is the tenant name)
    tenant_claim: str = "tenant"
    tenants: dict[str, str] = Field(default_factory=dict)
    caller_claim: str = "sub"
    #: a list or a space-separated string; ``roles`` maps its values to mesh roles
    #: (empty: the values are the role names)
    roles_claim: str | None = "roles"
    roles: dict[str, str] = Field(default_factory=dict)
    #: the capabilities the token may call (a list or a space-separated string);
    #: ``None``: every capability of the tenant
    scopes_claim: str | None = None
    leeway_s: float = Field(30.0, ge=0, le=300)
    #: how long a fetched JWKS is used before it is fetched again
    jwks_ttl_s: float = Field(300.0, gt=0, le=86400)
    jwks_timeout_s: float = Field(5.0, gt=0, le=60)

    @field_validator("audience", mode="before")
    @classmethod
    def _one_or_more(cls, value: Any) -> Any:
        return (value,) if isinstance(value, str) else value

    @field_validator("algorithms")
    @classmethod
    def _asymmetric(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        bad = [a for a in value if a not in JWT_ALGORITHMS]
        if bad or not value:
            raise ValueError(f"algorithm {bad[0] if bad else 'list'!r} is not allowed: use "
                             f"some of {', '.join(JWT_ALGORITHMS)} (a JWKS holds public "
                             "keys; none and HS* are refused)")
        return value


class AuthConfig(_Strict):
    """Who may call the gateway (``[gateway.auth]``); see docs/guides/identity.md."""

    #: accept API keys (``aios-mesh keys create``) from the shared state
    api_keys: bool = True
    #: a verified key is trusted this long before it is read again (so a revocation
    #: reaches every replica within this time); 0 reads the store on every request
    key_cache_s: float = Field(5.0, ge=0, le=300)
    jwt: JwtConfig | None = None


class GatewayConfig(_Strict):
    """The HTTP gateway (``aios-mesh gateway``)."""

    auth: AuthConfig = AuthConfig()


class RouteConfig(_Strict):
    """An event route for ``aios-mesh worker``: events on ``topic`` → ``capability``."""

    topic: str
    capability: str
    result_topic: str | None = None
    group: str | None = None


class MeshConfig(_Strict):
    """The whole configuration. ``base_dir`` is the config file's folder (relative paths and
    ``scheme:///relative`` URLs resolve against it)."""

    base_dir: Path = Field(default_factory=Path.cwd, exclude=True)
    state_dir: Path = Path(".aios-mesh")
    max_payload_bytes: int = Field(1 << 20, gt=0)
    tenants: dict[str, TenantConfig] = Field(default_factory=lambda: {"default": TenantConfig()})
    backends: BackendsConfig = BackendsConfig()
    capabilities: tuple[dict[str, Any], ...] = ()
    retry: RetryConfig = RetryConfig()
    breaker: BreakerConfig = BreakerConfig()
    cache: CacheConfig = CacheConfig()
    telemetry: TelemetryConfig = TelemetryConfig()
    relay: RelayConfig = RelayConfig()
    redaction: RedactionConfig = RedactionConfig()
    policy: PolicyConfig = PolicyConfig()
    lock_file: Path | None = Path("aios-mesh.lock")
    invoke_many_concurrency: int = Field(16, ge=1, le=4096)
    routes: tuple[RouteConfig, ...] = ()
    gateway: GatewayConfig = GatewayConfig()
    #: fair scheduling in front of the serving backends (docs/guides/fair-scheduling.md)
    scheduler: SchedulerConfig = SchedulerConfig()
    #: signed checkpoints of the audit log in a store apart from it (docs/governance/anchoring.md)
    anchors: AnchorConfig | None = None
    #: drift monitoring per capability and model version (docs/guides/lifecycle.md#drift)
    drift: DriftConfig | None = None

    @field_validator("tenants")
    @classmethod
    def _some_tenant(cls, value: dict[str, TenantConfig]) -> dict[str, TenantConfig]:
        if not value:
            raise ValueError("declare at least one tenant, e.g. [tenants.default]")
        return value

    @property
    def state_path(self) -> Path:
        return self.state_dir if self.state_dir.is_absolute() else self.base_dir / self.state_dir

    @property
    def lock_path(self) -> Path | None:
        if self.lock_file is None:
            return None
        return self.lock_file if self.lock_file.is_absolute() else self.base_dir / self.lock_file

    def backend_url(self, port: PortName, explicit: str | None = None) -> tuple[str, UrlSource]:
        """The URL for ``port`` and where it came from, by precedence."""
        if port not in PORTS:
            raise ConfigError(f"unknown port {port!r}", hint=f"ports are: {', '.join(PORTS)}")
        if explicit:
            parse_port_url(port, explicit)
            return explicit, "argument"
        env = os.environ.get(f"AIOS_MESH_{port.upper()}_URL")
        if env:
            try:
                parse_port_url(port, env)
            except ConfigError as exc:
                raise ConfigError(f"AIOS_MESH_{port.upper()}_URL: {exc.message}",
                                  hint=exc.hint) from exc
            return env, "environment"
        configured = getattr(self.backends, port)
        if configured:
            return str(configured), "config"
        return DEFAULT_URLS[port], "default"


def _model_at(loc: tuple[int | str, ...]) -> type[BaseModel] | None:
    """The config model that holds the key at ``loc`` (``("tenants", "acme", "quota",
    "cals")`` → :class:`LimitsConfig`), following dict values, tuple items and ``X | None``."""
    current: Any = MeshConfig
    for part in loc[:-1]:
        if isinstance(current, type) and issubclass(current, BaseModel):
            field = current.model_fields.get(str(part))
            if field is None:
                return None
            current = field.annotation
        else:  # a dict key or a tuple index: step into the value type
            args = [a for a in get_args(current) if a is not Ellipsis]
            if not args:
                return None
            current = args[-1]
        while get_origin(current) in (Union, types.UnionType):
            current = next(a for a in get_args(current) if a is not type(None))
    return current if isinstance(current, type) and issubclass(current, BaseModel) else None


def _unknown_key(loc: tuple[int | str, ...]) -> tuple[str, str | None, list[str]]:
    """``(key, closest valid key or None, valid keys)`` for an ``extra_forbidden`` error."""
    key = str(loc[-1])
    model = _model_at(loc)
    valid = sorted(n for n in (model.model_fields if model else {}) if n != "base_dir")
    close = difflib.get_close_matches(key, valid, n=1, cutoff=0.6)
    return key, (close[0] if close else None), valid


def _format_validation(exc: ValidationError, source: str) -> ConfigError:
    lines = []
    hints = []
    first_unknown: dict[str, str] = {}
    for err in exc.errors():
        loc = tuple(err["loc"])
        where = ".".join(str(p) for p in loc) or "(top level)"
        if err["type"] == "extra_forbidden":
            key, close, valid = _unknown_key(loc)
            guess = f" (did you mean {close!r}?)" if close else ""
            lines.append(f"  {where}: unknown key {key!r}{guess}")
            if not first_unknown:
                first_unknown = {"key": where, **({"suggestion": close} if close else {})}
                hints.append(f"did you mean {close!r}? " if close
                             else f"valid keys here: {', '.join(valid)}; " if valid else "")
        else:
            lines.append(f"  {where}: {err['msg']}")
    return ConfigError(f"invalid configuration in {source}:\n" + "\n".join(lines),
                       hint="".join(hints) + "fix the keys above; "
                            "`aios-mesh doctor --config FILE` re-checks",
                       source=source, **first_unknown)


def config_from_mapping(doc: Mapping[str, Any], *, base_dir: Path | None = None,
                        source: str = "<mapping>") -> MeshConfig:
    """Validate a config document (already parsed) into :class:`MeshConfig`."""
    try:
        return MeshConfig(**{**doc, "base_dir": base_dir or Path.cwd()})
    except ValidationError as exc:
        raise _format_validation(exc, source) from None
    except TypeError as exc:
        raise ConfigError(f"invalid configuration in {source}: {exc}") from None


def load_config(path: str | Path) -> MeshConfig:
    """Read and validate a TOML config file; every problem is a :class:`ConfigError`."""
    file = Path(path)
    try:
        raw = file.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"config file {file} does not exist",
                          hint="create it (see docs/configuration.md) or pass another --config"
                          ) from None
    except OSError as exc:
        raise ConfigError(f"cannot read config file {file}: {exc.strerror}") from None
    try:
        doc = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise ConfigError(f"{file} is not UTF-8 text") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{file} is not valid TOML: {exc}",
                          hint="check quoting and brackets at the line shown") from None
    return config_from_mapping(doc, base_dir=file.resolve().parent, source=str(file))
