"""Input and prediction drift per capability and model version, against a reference window
logged with the model.

* :class:`DriftReference` — feature values of known-good traffic (:mod:`.features`), with
  the capability, schema digest and model version they were taken for; JSON round trip;
  :func:`log_reference` / :func:`load_reference` keep it with the model version in the
  registry (``Feature.DOCUMENTS``: MLflow keeps it as a run artifact).
* :class:`DriftDetector` — a sliding window of the latest calls compared with the reference
  every ``check_every`` calls: Kolmogorov–Smirnov (:func:`scipy.stats.ks_2samp`) for numeric
  features, chi-square (:func:`scipy.stats.chi2_contingency`) for categorical ones, and the
  Jensen–Shannon distance (:func:`scipy.spatial.distance.jensenshannon`, base 2, 0..1) as the
  effect size beside each p-value.
* :class:`~aios_mesh.lifecycle.drift_monitor.DriftMonitor` (in :mod:`.drift_monitor`) — a
  record processor (keep it behind
  :class:`~aios_mesh.recorder.processors.Deferred`: ``install_drift_monitor`` does) keyed
  per capability × model version; an alarm is an event on :data:`DRIFT_TOPIC`, an
  OpenTelemetry counter and gauges, an audit entry (numbers and feature names only) and an
  optional ``on_alarm`` hook (``RetrainWorkflow`` starts a Flyte workflow).

**Repeated testing.** A monitor tests ``F`` features at every check, and checks again every
``check_every`` calls for as long as it runs; at a plain 5 % per test it would raise a false
alarm within minutes. The detector fixes one per-test level up front::

    per_test_alpha = alpha / (F * horizon / check_every)

— Bonferroni over the features *and* over every check in ``horizon`` calls. By the union
bound the chance of any false alarm in ``horizon`` calls of unchanged traffic is at most
``alpha``, whatever the correlation between features and between overlapping windows (they
are strongly correlated, so the real rate is far lower). Alpha spending (``alpha / k²`` at the
k-th check) was the other candidate; it makes a monitor blinder the longer it runs, whereas a
fixed level keeps the same detection power on day 100 as on day 1 and bounds the false alarms
per ``horizon`` calls instead. On top of significance, a feature counts only when its effect
(Jensen–Shannon distance) reaches ``min_effect``: with large windows every trivial difference
becomes significant, and an operator should not be paged for one.

Example::

    reference = DriftReference.build(EXTRACT, known_good_calls, model_version="3")
    await log_reference(mesh, "invoice-extractor/3", reference)
    install_drift_monitor(mesh, DriftSettings(window=300, check_every=50))
"""

from __future__ import annotations

import json
import logging
import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal, Protocol

import numpy as np
from pydantic import BaseModel
from scipy.spatial.distance import jensenshannon
from scipy.stats import chi2_contingency, ks_2samp

from aios_mesh.errors import ConfigError, InvalidInput
from aios_mesh.lifecycle.features import Features, call_features, capability_schema
from aios_mesh.ports.base import Feature, require_feature
from aios_mesh.ports.registry import ModelDocuments, ModelRef, ModelRegistry

if TYPE_CHECKING:

    from aios_mesh.capabilities import CapabilitySpec

__all__ = [
    "DOCUMENT_KEY",
    "DRIFT_EVENT_TYPE",
    "DRIFT_TOPIC",
    "DriftDetector",
    "DriftReference",
    "DriftReport",
    "DriftSettings",
    "FeatureTest",
    "load_reference",
    "log_reference",
    "schema_digest",
]

_log = logging.getLogger("aios_mesh.lifecycle.drift")

#: Where drift alarms are published (through the mesh's outbox).
DRIFT_TOPIC = "aios.mesh.drift"
DRIFT_EVENT_TYPE = "aios.mesh.drift.alarm"
#: The registry document key a reference window is kept under.
DOCUMENT_KEY = "drift.reference"
_FORMAT = "aios.drift.reference/1"
_RARE = "<rare>"  # categories too rare for chi-square's approximation, pooled


# --------------------------------------------------------------------------- settings


@dataclass(frozen=True, slots=True)
class DriftSettings:
    """The detector's and the monitor's thresholds (the ``[drift]`` config section).

    Args:
        window: calls in the sliding current window.
        check_every: calls between two checks (once the window is full).
        alpha: chance of any false alarm within ``horizon`` calls of unchanged traffic.
        horizon: calls over which ``alpha`` holds (see the module docstring).
        min_effect: Jensen–Shannon distance (0..1) a feature must reach to count.
        min_count: values a feature needs in each window to be tested.
        bins: quantile bins of the reference for a numeric feature's effect size.
        max_categories: a categorical feature with more distinct values in the reference is
            not tested (an identifier, not a class); its text statistics still are.
        reference: where the monitor finds references: ``"registry"`` (the model version's
            document, see :func:`log_reference`) or a folder of ``<capability>.json`` /
            ``<capability>@<version>.json`` files.
    """

    window: int = 200
    check_every: int = 25
    alpha: float = 0.01
    horizon: int = 100_000
    min_effect: float = 0.15
    min_count: int = 30
    bins: int = 10
    max_categories: int = 20
    reference: str = "registry"

    def __post_init__(self) -> None:
        checks: list[tuple[str, bool, str]] = [
            ("window", self.window >= 20, ">= 20"),
            ("check_every", 1 <= self.check_every <= self.window, "1..window"),
            ("alpha", 0 < self.alpha < 1, "in (0, 1)"),
            ("horizon", self.horizon >= self.check_every, ">= check_every"),
            ("min_effect", 0 <= self.min_effect < 1, "in [0, 1)"),
            ("min_count", 5 <= self.min_count <= self.window, "5..window"),
            ("bins", 2 <= self.bins <= 100, "2..100"),
            ("max_categories", self.max_categories >= 2, ">= 2"),
            ("reference", bool(self.reference), "'registry' or a folder"),
        ]
        for name, ok, rule in checks:
            if not ok:
                raise ConfigError(f"drift setting {name}={getattr(self, name)!r} is out of range",
                                  hint=f"[drift] {name} must be {rule}")

    @classmethod
    def from_config(cls, section: Any) -> DriftSettings:
        """From the ``[drift]`` config section (any object with these attributes, or a
        mapping); missing ones keep their defaults."""
        names = cls.__dataclass_fields__
        if isinstance(section, Mapping):
            values = {k: v for k, v in section.items() if k in names}
        else:
            values = {k: getattr(section, k) for k in names if hasattr(section, k)}
        return cls(**values)


def schema_digest(spec_input: type[BaseModel] | None,
                  spec_output: type[BaseModel] | None) -> str:
    """The digest of a capability's feature plan (input and output): a reference is only
    comparable with traffic of the same digest."""
    schema_in, schema_out = capability_schema(spec_input, spec_output)
    return f"{schema_in.digest}{schema_out.digest}"


# --------------------------------------------------------------------------- reference


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _rounded(values: np.ndarray[Any, np.dtype[np.float64]]
             ) -> np.ndarray[Any, np.dtype[np.float64]]:
    # Shares such as 2/3 reach the detector through JSON (the reference) and straight from
    # the features (the window); one rounding for both keeps equal values equal for KS.
    return np.round(values, 9)


@dataclass(frozen=True, slots=True)
class DriftReference:
    """A window of feature values from known-good traffic of one capability and model
    version. ``numeric`` holds each numeric feature's values, ``categorical`` each
    categorical feature's counts per category; ``calls`` is the window's size.

    Build one with :meth:`build` (from payloads and outputs) or :meth:`from_features`; keep
    it with the model with :func:`log_reference`.

        >>> from pydantic import BaseModel
        >>> class In(BaseModel):
        ...     text: str
        >>> class Out(BaseModel):
        ...     label: str
        >>> ref = DriftReference.build("classify", In, Out, [({"text": "hello"},
        ...                            {"label": "A"})], model_version="1")
        >>> DriftReference.from_json(ref.to_json()) == ref
        True
    """

    capability: str
    model_version: str | None
    schema_digest: str
    calls: int
    numeric: dict[str, tuple[float, ...]]
    categorical: dict[str, dict[str, int]]
    model: str | None = None
    created_at: str = field(default_factory=_now)

    def __post_init__(self) -> None:
        if self.calls < 1 or not (self.numeric or self.categorical):
            raise InvalidInput(f"the drift reference of {self.capability!r} is empty",
                               hint="take it from at least a few hundred known-good calls "
                                    "(DriftReference.build(...)); an empty window has "
                                    "nothing to compare with")

    # -- construction ------------------------------------------------------------------------

    @classmethod
    def from_features(cls, capability: str, features: Sequence[Features], *,
                      schema_digest: str, model_version: str | None,
                      model: str | None = None, max_categories: int = 20) -> DriftReference:
        """A reference from features already extracted (:func:`call_features`).
        Categorical features with more than ``max_categories`` distinct values are left out
        (identifiers: neither testable nor worth storing)."""
        numeric: dict[str, list[float]] = {}
        categorical: dict[str, Counter[str]] = {}
        for one in features:
            for name, value in one.numeric.items():
                numeric.setdefault(name, []).append(value)
            for name, cat in one.categorical.items():
                categorical.setdefault(name, Counter())[cat] += 1
        return cls(capability=capability, model_version=model_version,
                   schema_digest=schema_digest, calls=len(features),
                   numeric={k: tuple(v) for k, v in sorted(numeric.items())},
                   categorical={k: dict(sorted(c.items())) for k, c in sorted(categorical.items())
                                if len(c) <= max_categories},
                   model=model)

    @classmethod
    def build(cls, capability: str | CapabilitySpec,
              spec_input: type[BaseModel] | None = None,
              spec_output: type[BaseModel] | None = None,
              calls: Iterable[tuple[Any, Any]] = (), *, model_version: str | None,
              model: str | None = None, max_categories: int = 20) -> DriftReference:
        """A reference from known-good ``(payload, output)`` pairs of a capability (its spec,
        or its name plus input and output models). Payloads should be what the mesh sees
        after redaction (the monitor sees nothing else)."""
        name, spec_input, spec_output = _spec_parts(capability, spec_input, spec_output)
        feats = [call_features(spec_input, payload, spec_output, output)
                 for payload, output in calls]
        return cls.from_features(name, feats, schema_digest=schema_digest(spec_input,
                                                                          spec_output),
                                 model_version=model_version, model=model,
                                 max_categories=max_categories)

    # -- JSON --------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """A JSON object (what the registry keeps)."""
        return {"format": _FORMAT, "capability": self.capability, "model": self.model,
                "model_version": self.model_version, "schema_digest": self.schema_digest,
                "calls": self.calls, "created_at": self.created_at,
                "numeric": {k: list(v) for k, v in self.numeric.items()},
                "categorical": {k: dict(v) for k, v in self.categorical.items()}}

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any]) -> DriftReference:
        """Read :meth:`to_dict`'s shape back; anything else is ``InvalidInput``."""
        hint = "log the reference again with log_reference(...) from DriftReference.build(...)"
        if not isinstance(doc, Mapping) or doc.get("format") != _FORMAT:
            raise InvalidInput("not a drift reference document",
                               hint=f"expected format {_FORMAT!r}; {hint}")
        try:
            numeric = {str(k): tuple(float(x) for x in v) for k, v in doc["numeric"].items()}
            if not all(math.isfinite(x) for v in numeric.values() for x in v):
                raise ValueError("non-finite value")
            categorical = {str(k): {str(c): int(n) for c, n in v.items()}
                           for k, v in doc["categorical"].items()}
            version = doc.get("model_version")
            return cls(capability=str(doc["capability"]),
                       model_version=None if version is None else str(version),
                       schema_digest=str(doc["schema_digest"]), calls=int(doc["calls"]),
                       numeric=numeric, categorical=categorical,
                       model=None if doc.get("model") is None else str(doc["model"]),
                       created_at=str(doc.get("created_at") or _now()))
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise InvalidInput(f"malformed drift reference document: {exc}",
                               hint=hint) from None

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), separators=(",", ":"), ensure_ascii=False)

    @classmethod
    def from_json(cls, text: str | bytes) -> DriftReference:
        try:
            doc = json.loads(text)
        except ValueError as exc:
            raise InvalidInput(f"a drift reference must be JSON: {exc}",
                               hint="pass what DriftReference.to_json() wrote") from None
        return cls.from_dict(doc)

    def require(self, capability: str, digest: str) -> None:
        """Raise ``InvalidInput`` unless this reference was taken for ``capability`` with the
        schema whose digest is ``digest``."""
        if self.capability != capability:
            raise InvalidInput(f"the drift reference was taken for {self.capability!r}, not "
                               f"{capability!r}",
                               hint=f"log a reference built from {capability!r}'s calls")
        if self.schema_digest != digest:
            raise InvalidInput(f"the drift reference of {capability!r} was taken for another "
                               f"schema ({self.schema_digest} != {digest})",
                               hint="the capability's input or output model changed: build "
                                    "and log a new reference from calls of this schema")


def _spec_parts(capability: str | CapabilitySpec, spec_input: type[BaseModel] | None,
                spec_output: type[BaseModel] | None
                ) -> tuple[str, type[BaseModel] | None, type[BaseModel] | None]:
    if isinstance(capability, str):
        return capability, spec_input, spec_output
    return capability.name, capability.input, capability.output


# --------------------------------------------------------------------------- detector


@dataclass(frozen=True, slots=True)
class FeatureTest:
    """One feature at one check. ``effect`` is the Jensen–Shannon distance (base 2, 0 = same
    distribution, 1 = disjoint) between the reference's and the window's histograms (numeric
    features: the reference's quantile bins plus one open bin at each end). ``statistic`` and
    ``p_value`` are the KS or chi-square test's; they are ``None`` when the effect is below
    ``min_effect`` — such a feature cannot count, so its test is not run. ``significant``
    means ``p_value`` is below the per-test level *and* ``effect`` reaches ``min_effect``."""

    feature: str
    kind: Literal["numeric", "categorical"]
    test: Literal["ks", "chi2"]
    statistic: float | None
    p_value: float | None
    effect: float
    n_reference: int
    n_current: int
    significant: bool

    def to_dict(self) -> dict[str, Any]:
        """Numbers and the feature's name (no value of any call)."""
        return {"feature": self.feature, "kind": self.kind, "test": self.test,
                "statistic": None if self.statistic is None else round(self.statistic, 6),
                "p_value": None if self.p_value is None else float(f"{self.p_value:.6g}"),
                "effect": round(self.effect, 6), "n_reference": self.n_reference,
                "n_current": self.n_current}


@dataclass(frozen=True, slots=True)
class DriftReport:
    """One check: every feature with enough values, and whether any drifted."""

    calls: int
    window: int
    per_test_alpha: float
    tests: tuple[FeatureTest, ...]

    @property
    def drifted(self) -> bool:
        return any(t.significant for t in self.tests)

    @property
    def significant(self) -> tuple[FeatureTest, ...]:
        return tuple(t for t in self.tests if t.significant)

    @property
    def max_effect(self) -> float:
        return max((t.effect for t in self.tests), default=0.0)

    @property
    def min_p_value(self) -> float:
        return min((t.p_value for t in self.tests if t.p_value is not None), default=1.0)


@dataclass(slots=True)
class _Numeric:
    values: np.ndarray[Any, np.dtype[np.float64]]  # sorted, rounded
    edges: np.ndarray[Any, np.dtype[np.float64]]
    counts: np.ndarray[Any, np.dtype[np.float64]]


@dataclass(slots=True)
class _Categorical:
    codes: dict[str, int]  # category → column; categories new to the reference get new ones
    counts: list[int]  # the reference's count per code


def _js(p: np.ndarray[Any, Any], q: np.ndarray[Any, Any]) -> float:
    value = float(jensenshannon(p, q, base=2))
    return value if math.isfinite(value) else 0.0


class DriftDetector:
    """Compares a sliding window of calls with a :class:`DriftReference`.

    Feed it each call's :class:`Features` with :meth:`add`; once the window is full it checks
    every ``check_every`` calls and returns the :class:`DriftReport` (``None`` between
    checks). The window is kept as columns (one row per call), so a check reads arrays, not
    dicts. Not thread-safe: one detector per monitored key, fed by one thread.

        detector = DriftDetector(reference, DriftSettings(window=200, check_every=25))
        for features in stream:
            report = detector.add(features)
            if report is not None and report.drifted:
                page_someone(report.significant)
    """

    def __init__(self, reference: DriftReference,
                 settings: DriftSettings | None = None) -> None:
        self.reference = reference
        self.settings = settings = settings or DriftSettings()
        self._numeric: dict[str, _Numeric] = {}
        for name, values in reference.numeric.items():
            if len(values) < settings.min_count:
                continue
            array = np.sort(_rounded(np.asarray(values, dtype=np.float64)))
            edges = np.unique(np.quantile(array, np.linspace(0, 1, settings.bins + 1)))
            # an open bin above the reference's maximum: values beyond it (or any other value
            # when the reference is constant) must not share the maximum's bin
            edges = np.append(edges, np.nextafter(edges[-1], np.inf))
            counts = np.bincount(np.searchsorted(edges, array, side="right"),
                                 minlength=len(edges) + 1).astype(np.float64)
            self._numeric[name] = _Numeric(array, edges, counts)
        self._categorical: dict[str, _Categorical] = {}
        for name, by_cat in reference.categorical.items():
            if sum(by_cat.values()) >= settings.min_count and \
                    len(by_cat) <= settings.max_categories:
                cats = sorted(by_cat)
                self._categorical[name] = _Categorical({c: i for i, c in enumerate(cats)},
                                                       [by_cat[c] for c in cats])
        self.features = len(self._numeric) + len(self._categorical)
        if self.features == 0:
            raise InvalidInput(f"the drift reference of {reference.capability!r} has no "
                               f"feature with {settings.min_count} values or more",
                               hint="take the reference from more calls (a few hundred)")
        checks = max(1, settings.horizon // settings.check_every)
        #: the level each single test must beat (see the module docstring)
        self.per_test_alpha = settings.alpha / (self.features * checks)
        self.calls = 0
        self._filled = 0
        self._names = list(self._numeric)
        self._cat_names = list(self._categorical)
        self._num = np.full((settings.window, len(self._names)), np.nan)
        self._cat = np.full((settings.window, len(self._cat_names)), -1, dtype=np.int64)

    @classmethod
    def for_capability(cls, spec: CapabilitySpec, reference: DriftReference,
                       settings: DriftSettings | None = None) -> DriftDetector:
        """A detector for ``spec``'s traffic; ``InvalidInput`` when the reference was taken
        for another capability or schema."""
        reference.require(spec.name, schema_digest(spec.input, spec.output))
        return cls(reference, settings)

    @property
    def window(self) -> int:
        """Calls in the current window."""
        return self._filled

    def add(self, features: Features) -> DriftReport | None:
        """Take one call; the report when this call completes a check, else ``None``."""
        row = self.calls % self.settings.window
        numeric, categorical = features.numeric, features.categorical
        nan = math.nan
        self._num[row] = [numeric.get(name, nan) for name in self._names]
        cats = self._cat[row]
        for j, name in enumerate(self._cat_names):
            value = categorical.get(name)
            if value is None:
                cats[j] = -1
                continue
            codes = self._categorical[name].codes
            code = codes.get(value)
            if code is None:
                if len(codes) >= 4 * self.settings.max_categories:
                    value = _RARE  # a flood of new values: count them together
                code = codes.setdefault(value, len(codes))
            cats[j] = code
        self.calls += 1
        self._filled = min(self._filled + 1, self.settings.window)
        if self._filled < self.settings.window or self.calls % self.settings.check_every:
            return None
        return self.check()

    def check(self) -> DriftReport:
        """Test the current window against the reference now."""
        s = self.settings
        tests: list[FeatureTest] = []
        window = self._num[:self._filled]
        for j, name in enumerate(self._names):
            ref = self._numeric[name]
            column = window[:, j]
            current = _rounded(column[~np.isnan(column)])
            if len(current) < s.min_count:
                continue
            counts = np.bincount(np.searchsorted(ref.edges, current, side="right"),
                                 minlength=len(ref.edges) + 1)
            effect = _js(ref.counts, counts)
            statistic = p = None
            if effect >= s.min_effect:  # below it the feature cannot count: skip the test
                result = ks_2samp(ref.values, current, method="asymp")
                statistic, p = float(result.statistic), float(result.pvalue)
            tests.append(FeatureTest(name, "numeric", "ks", statistic, p, effect,
                                     len(ref.values), len(current),
                                     p is not None and p < self.per_test_alpha))
        codes = self._cat[:self._filled]
        for j, name in enumerate(self._cat_names):
            test = self._chi2(name, self._categorical[name], codes[:, j])
            if test is not None:
                tests.append(test)
        return DriftReport(self.calls, self._filled, self.per_test_alpha, tuple(tests))

    def _chi2(self, name: str, ref: _Categorical,
              column: np.ndarray[Any, np.dtype[np.int64]]) -> FeatureTest | None:
        present = column[column >= 0]
        n = len(present)
        if n < self.settings.min_count:
            return None
        current = np.bincount(present, minlength=len(ref.codes))
        reference = np.zeros(len(current))
        reference[:len(ref.counts)] = ref.counts
        table = np.vstack([reference, current])
        # chi-square's approximation needs a few of each: pool the rare categories
        rare = table.sum(axis=0) < 5
        if rare.any():
            table = np.hstack([table[:, ~rare], table[:, rare].sum(axis=1, keepdims=True)])
        table = table[:, table.sum(axis=0) > 0]
        if table.shape[1] < 2:  # one category on both sides: nothing to compare
            return None
        effect = _js(table[0], table[1])
        statistic = p = None
        if effect >= self.settings.min_effect:
            result = chi2_contingency(table)
            statistic, p = float(result.statistic), float(result.pvalue)
        return FeatureTest(name, "categorical", "chi2", statistic, p, effect,
                           int(table[0].sum()), n, p is not None and p < self.per_test_alpha)


# --------------------------------------------------------------------------- registry


class _HasPorts(Protocol):
    @property
    def ports(self) -> Any: ...


def _registry_of(target: ModelRegistry | _HasPorts) -> ModelRegistry:
    registry: Any = target.ports.registry if hasattr(target, "ports") else target
    require_feature(registry, Feature.DOCUMENTS, what="documents kept with a model version")
    return registry  # type: ignore[no-any-return]  # checked by the feature above


async def log_reference(target: ModelRegistry | _HasPorts, model: str,
                        reference: DriftReference) -> ModelRef:
    """Keep ``reference`` with a model version: ``model`` is ``"name@alias"``,
    ``"name/3"`` or ``"name"`` (the latest version); ``target`` a mesh or a registry that
    declares ``Feature.DOCUMENTS``. A reference without a model version gets the resolved
    one; one taken for another version is ``InvalidInput``. Returns the version it is kept
    with.

        ref = await log_reference(mesh, "invoice-extractor@champion", reference)
    """
    registry = _registry_of(target)
    ref = await registry.resolve(model)
    if reference.model_version is not None and reference.model_version != ref.version:
        raise InvalidInput(f"the drift reference was taken for version "
                           f"{reference.model_version} of {ref.name}, not {ref.version}",
                           hint=f"log it with '{ref.name}/{reference.model_version}', or build "
                                "it from calls the resolved version answered")
    reference = replace(reference, model_version=ref.version, model=ref.name)
    documents: ModelDocuments = registry  # type: ignore[assignment]  # Feature.DOCUMENTS
    await documents.put_document(ref.name, ref.version, DOCUMENT_KEY, reference.to_dict())
    return ref


async def load_reference(target: ModelRegistry | _HasPorts, model: str | ModelRef
                         ) -> DriftReference | None:
    """The reference kept with a model version (``"name@alias"``, ``"name/3"``, a
    :class:`ModelRef`), or ``None`` when none was logged."""
    registry = _registry_of(target)
    ref = model if isinstance(model, ModelRef) else await registry.resolve(model)
    documents: ModelDocuments = registry  # type: ignore[assignment]  # Feature.DOCUMENTS
    doc = await documents.get_document(ref.name, ref.version, DOCUMENT_KEY)
    return None if doc is None else DriftReference.from_dict(doc)
