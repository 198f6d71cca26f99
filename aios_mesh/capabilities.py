"""Capability specs: what business code asks for, by intent.

A capability is declared once — in Python or in the config file, with the same result::

    class Ticket(BaseModel):
        text: str

    class Triage(BaseModel):
        queue: str
        confidence: float

    @capability("classify-ticket", version="2", model="ticket-clf@champion",
                policy="mesh/tickets", slo=SLO(timeout_s=2), review_threshold=0.6)
    def classify_ticket(payload: Ticket) -> Triage: ...

    # config file (aios-mesh.toml), equivalent:
    # [[capabilities]]
    # name = "classify-ticket"
    # version = "2"
    # input = "myapp.models:Ticket"
    # output = "myapp.models:Triage"
    # model = "ticket-clf@champion"
    # ...

A decorated function whose body is not ``...`` becomes the capability's in-process
implementation (used when ``model`` is not set, e.g. deterministic rules).
"""

from __future__ import annotations

import ast
import hashlib
import importlib
import inspect
import re
import textwrap
from collections.abc import Callable, Mapping
from typing import Any, Literal, get_type_hints

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from aios_mesh.errors import ConfigError
from aios_mesh.generation.messages import ChatInput
from aios_mesh.generation.spec import Generation
from aios_mesh.lifecycle.gates import PromotionGates
from aios_mesh.lifecycle.versions import VERSION_PATTERN, major_of
from aios_mesh.ports.registry import parse_model_spec
from aios_mesh.ports.serving import Usage

__all__ = ["SLO", "BatchPolicy", "Canary", "Candidate", "CapabilitySpec", "Fallback",
           "Generation", "Price", "capability", "import_object"]

_NAME = re.compile(r"^[a-z][a-z0-9]*(-[a-z0-9]+)*$")


def import_object(path: str) -> Any:
    """Import ``"package.module:attr"``; raise :class:`ConfigError` saying what is wrong."""
    module_name, sep, attr = path.partition(":")
    if not sep or not module_name or not attr:
        raise ConfigError(f"{path!r} is not an import path",
                          hint="write 'package.module:Name', e.g. 'myapp.models:Invoice'")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(f"cannot import module {module_name!r} ({exc})",
                          hint="check the spelling and that the package is installed") from exc
    obj = module
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError as exc:
            raise ConfigError(f"module {module_name!r} has no {attr!r}",
                              hint=f"check the name after ':' in {path!r}") from exc
    return obj


class SLO(BaseModel):
    """Service level: the per-attempt timeout, and the contract the SLO router keeps for a
    capability with ``candidates`` (:mod:`aios_mesh.lifecycle.slo`): p95 latency, cost per
    call, the answering model version's reviewed accuracy (``min_quality``), the share of good
    calls (``objective``: the error budget is ``1 - objective``), and what to do when no
    candidate meets it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    timeout_s: float = Field(10.0, gt=0, le=3600)
    p95_ms: float | None = Field(None, gt=0)
    max_cost: float | None = Field(None, ge=0, description="most a call may cost (per call)")
    objective: float = Field(0.95, gt=0, lt=1, description="share of calls that must be good "
                                                           "(answered within p95_ms)")
    min_quality: float | None = Field(None, ge=0, le=1, description="reviewed accuracy the "
                                                                    "answering model version "
                                                                    "must keep")
    on_unmet: Literal["best_effort", "reject"] = "best_effort"


class Price(BaseModel):
    """How a call is charged: per call, per 1k tokens, per GPU-second."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    per_call: float = Field(0.0, ge=0)
    per_1k_tokens: float = Field(0.0, ge=0)
    #: a generation's prompt and completion tokens, priced apart (as LLM providers do)
    per_1k_input_tokens: float = Field(0.0, ge=0)
    per_1k_output_tokens: float = Field(0.0, ge=0)
    per_gpu_second: float = Field(0.0, ge=0)
    currency: str = "USD"

    def cost(self, usage: Usage) -> float:
        return (self.per_call * usage.calls + self.per_1k_tokens * usage.tokens / 1000.0
                + self.per_1k_input_tokens * usage.input_tokens / 1000.0
                + self.per_1k_output_tokens * usage.output_tokens / 1000.0
                + self.per_gpu_second * usage.gpu_seconds)


class Candidate(BaseModel):
    """A serving backend that can answer a capability (the same model version deployed on
    it), for SLO routing: ``serving`` names one of ``[backends.serving_named]`` (None: the
    default backend); ``price`` is a call's price there (default: the capability's)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    serving: str | None = None
    price: Price | None = None

    @property
    def label(self) -> str:
        return self.serving or "default"


class Fallback(BaseModel):
    """One step of the fallback chain, tried in order after the primary fails.

    Written in config as a string: ``"model:invoice-extractor@challenger"``,
    ``"function:myapp.rules:extract_fields"`` or ``"human"``.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: Literal["model", "function", "human"]
    target: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _from_string(cls, value: Any) -> Any:
        if isinstance(value, str):
            kind, _, target = value.partition(":")
            return {"kind": kind, "target": target or None}
        return value

    @model_validator(mode="after")
    def _check_target(self) -> Fallback:
        if self.kind == "human" and self.target is not None:
            raise ValueError("a 'human' fallback takes no target")
        if self.kind == "model":
            if not self.target:
                raise ValueError("a 'model' fallback needs a target like 'model:name@alias'")
            parse_model_spec(self.target)
        if self.kind == "function" and (not self.target or ":" not in self.target):
            raise ValueError("a 'function' fallback needs 'function:package.module:callable'")
        return self

    def __str__(self) -> str:
        return self.kind if self.target is None else f"{self.kind}:{self.target}"


class BatchPolicy(BaseModel):
    """Client-side micro-batching: coalesce up to ``max_size`` concurrent calls, waiting at
    most ``max_wait_ms`` for the batch to fill."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_size: int = Field(32, ge=1, le=4096)
    max_wait_ms: float = Field(2.0, ge=0, le=1000)


class Canary(BaseModel):
    """Send ``percent`` of calls to the candidate (canary) or mirror them there (shadow).

    The candidate is a ``model`` (``name@alias``), a ``prompt`` (``prompts:/NAME@ALIAS``, for
    a generation with a registered prompt: the canary variant renders it instead), or both.
    The canary split is sticky: it hashes tenant + normalised input, so one question always
    meets the same version (consistent answers, cache hits, deterministic replays), and
    ``percent`` is the share of distinct questions that go to the candidate.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    model: str | None = None
    prompt: str | None = None
    percent: float = Field(0.0, ge=0, le=100)
    shadow: bool = False

    @model_validator(mode="after")
    def _candidate(self) -> Canary:
        if self.model is None and self.prompt is None:
            raise ValueError("a canary names its candidate: model = 'name@alias', "
                             "prompt = 'prompts:/NAME@ALIAS', or both")
        if self.prompt is not None:
            from aios_mesh.generation.prompt import is_prompt_uri, parse_prompt_uri

            if not is_prompt_uri(self.prompt):
                raise ValueError("canary.prompt names a registered prompt: "
                                 "'prompts:/NAME@ALIAS'")
            parse_prompt_uri(self.prompt)
        return self


class CapabilitySpec(BaseModel):
    """Everything the mesh needs to serve one intent. Immutable; build it with
    :func:`capability` or from config (:meth:`from_config`)."""

    model_config = ConfigDict(frozen=True, extra="forbid", arbitrary_types_allowed=True)

    name: str
    #: ``MAJOR[.MINOR[.PATCH]]``; callers pin a major (``name@2``), see
    #: :mod:`aios_mesh.lifecycle.versions`
    version: str = "1"
    description: str = ""
    input: type[BaseModel]
    output: type[BaseModel]
    model: str | None = None
    serving: str | None = Field(None, description="named serving backend; default 'serving'")
    policy: str | None = None
    slo: SLO = SLO()
    fallbacks: tuple[Fallback, ...] = ()
    price: Price = Price()
    review_threshold: float | None = Field(None, ge=0, le=1)
    data_classification: Literal["public", "internal", "confidential", "restricted"] = "internal"
    external: bool = Field(False, description="the backend is outside the trust boundary: "
                                              "redact PII before sending")
    estimate: Usage = Usage()
    max_payload_bytes: int | None = Field(None, gt=0)
    canary: Canary | None = None
    batch: BatchPolicy | None = None
    indexes: tuple[str, ...] = Field((), description="retrieval collections it reads; "
                                                     "`aios-mesh lock` pins their snapshots")
    cache_ttl_s: float | None = Field(None, gt=0, description="cache answers this long")
    generate: Generation | None = Field(None, description="an LLM answers: its prompt, "
                                                          "max_tokens, temperature")
    candidates: tuple[Candidate, ...] = Field((), description="backends the SLO router "
                                                              "chooses among, per call")
    agreement: str | None = Field(None, description="'module:function' deciding whether two "
                                                   "answers agree (shadow, compare, gates); "
                                                   "default: equal")
    gates: PromotionGates | None = Field(None, description="what a candidate model must show "
                                                           "before `promote` moves the alias")
    deprecated: str | None = Field(None, description="why and until when this version is "
                                                    "served, e.g. 'use @2; removed 2027-06'")
    definition: str | None = Field(None, description="what defines a handler-served "
                                                    "capability beyond its code, as canonical "
                                                    "JSON (an agent's instructions, tools, "
                                                    "budgets); `aios-mesh lock` pins it")
    handler: Callable[..., Any] | None = Field(None, exclude=True)

    @field_validator("name")
    @classmethod
    def _kebab(cls, value: str) -> str:
        if not _NAME.match(value):
            raise ValueError(f"capability name {value!r} must be kebab-case, "
                             "e.g. 'extract-invoice-fields'")
        return value

    @field_validator("version", mode="before")
    @classmethod
    def _version(cls, value: Any) -> Any:
        if isinstance(value, int) and not isinstance(value, bool):
            value = str(value)  # ``version = 2`` in TOML
        if not isinstance(value, str) or not VERSION_PATTERN.match(value):
            raise ValueError(f"capability version {value!r} must be MAJOR[.MINOR[.PATCH]] "
                             "in numbers, e.g. '2' or '2.1'")
        return value

    @field_validator("model")
    @classmethod
    def _model_spec(cls, value: str | None) -> str | None:
        if value is not None:
            parse_model_spec(value)
        return value

    @field_validator("generate", mode="before")
    @classmethod
    def _generation(cls, value: Any) -> Any:
        return Generation(**value) if isinstance(value, Mapping) else value

    @field_validator("agreement")
    @classmethod
    def _agreement(cls, value: str | None) -> str | None:
        if value is not None and ":" not in value:
            raise ValueError(f"agreement {value!r} is not an import path: write "
                             "'package.module:function'")
        return value

    @field_validator("estimate", mode="before")
    @classmethod
    def _usage(cls, value: Any) -> Any:
        return Usage(**value) if isinstance(value, Mapping) else value

    @model_validator(mode="after")
    def _has_implementation(self) -> CapabilitySpec:
        if self.model is None and self.handler is None:
            raise ValueError(f"capability {self.name!r} needs a 'model' (name@alias) or a "
                             "handler function")
        gen = self.generate
        if self.canary is not None and self.canary.prompt is not None \
                and (gen is None or not gen.registered):
            raise ValueError(f"capability {self.name!r} has a canary prompt but no registered "
                             "prompt of its own (generate.prompt = 'prompts:/NAME@ALIAS')")
        if gen is not None:
            if gen.prompt is None and not issubclass(self.input, ChatInput):
                raise ValueError(f"capability {self.name!r} generates without a prompt, so "
                                 "its input must be ChatInput (the caller's messages); "
                                 "or give generate.prompt")
            if gen.prompt is not None and not gen.registered:
                from aios_mesh.generation.prompt import PromptTemplate

                try:
                    PromptTemplate.parse(gen.prompt).check_variables(self.input,
                                                                     where=self.name)
                except ConfigError as exc:
                    raise ValueError(exc.message) from None
        return self

    @property
    def key(self) -> str:
        """``name@version``, as it appears in records and the lock file."""
        return f"{self.name}@{self.version}"

    @property
    def definition_sha256(self) -> str | None:
        """The digest of :attr:`definition` the lock file pins (None: no definition)."""
        if self.definition is None:
            return None
        return hashlib.sha256(self.definition.encode()).hexdigest()

    @property
    def major(self) -> str:
        """The major version callers pin (``name@major``)."""
        return major_of(self.version)

    @classmethod
    def from_config(cls, doc: Mapping[str, Any]) -> CapabilitySpec:
        """Build from a config-file table; ``input``/``output``/``handler`` are import paths."""
        data = dict(doc)
        for key in ("input", "output", "handler"):
            if isinstance(data.get(key), str):
                data[key] = import_object(data[key])
        if isinstance(data.get("handler"), CapabilitySpec):  # a @capability-decorated function
            data["handler"] = data["handler"].handler
        try:
            return cls(**data)
        except ValidationError as exc:
            where = "; ".join(f"{'.'.join(map(str, e['loc'])) or '(root)'}: {e['msg']}"
                              for e in exc.errors()[:5])
            raise ConfigError(f"capability {data.get('name', '?')!r} is invalid: {where}",
                              hint="fix its [[capabilities]] table in the config") from None


def capability(name: str, **options: Any) -> Callable[[Callable[..., Any]], CapabilitySpec]:
    """Declare a capability from a typed function signature.

    The first parameter's annotation is the input model, the return annotation the output
    model. If the body is only ``...`` the function is a stub; otherwise it is the in-process
    implementation (it receives the validated input model and returns the output model or a
    dict).
    """

    def wrap(fn: Callable[..., Any]) -> CapabilitySpec:
        params = list(inspect.signature(fn).parameters)
        hints = _hints(fn, [*params[:1], "return"])
        if not params or params[0] not in hints or "return" not in hints:
            raise ConfigError(f"@capability({name!r}) needs a typed function "
                              "'def f(payload: InModel) -> OutModel'")
        implemented = not _is_stub(fn)
        return CapabilitySpec(name=name, input=hints[params[0]], output=hints["return"],
                              description=options.pop("description", inspect.getdoc(fn) or ""),
                              handler=fn if implemented else None, **options)

    return wrap


def _hints(fn: Callable[..., Any], names: list[str]) -> dict[str, Any]:
    """Resolve only the annotations we need, so a handler may annotate its context parameter
    with a name that is not importable at module level."""
    try:
        return get_type_hints(fn)
    except NameError:
        pass
    found: dict[str, Any] = {}
    for key in names:
        value = fn.__annotations__.get(key)
        if isinstance(value, str):
            try:
                value = eval(value, fn.__globals__)
            except NameError as exc:
                raise ConfigError(f"cannot resolve the annotation {value!r} of "
                                  f"{fn.__qualname__}", hint="import it at module level") from exc
        if value is not None:
            found[key] = value
    return found


def _is_stub(fn: Callable[..., Any]) -> bool:
    """True when the body is only ``...``/``pass`` (after an optional docstring)."""
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(fn)))
    except (OSError, TypeError, SyntaxError):
        return False
    node = tree.body[0]
    if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
        return False
    body = node.body
    if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
            and isinstance(body[0].value.value, str):
        body = body[1:]
    return all(isinstance(stmt, ast.Pass) or (isinstance(stmt, ast.Expr)
               and isinstance(stmt.value, ast.Constant) and stmt.value.value is Ellipsis)
               for stmt in body)
