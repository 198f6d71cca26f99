"""Quality from humans: reviewers' verdicts as labels, per capability and model version.

Every call a human reviewed left two traces: its decision record in the audit log (which
capability and model version answered, with what confidence, and how the call ended) and a
:class:`~aios_mesh.review.Label` in the review queue (approved, corrected or rejected). This
module joins them and reports, per capability and model version (and per tenant when asked):

* **accuracy against reviewers** — the share of reviewed proposals a human kept (approved, or
  "corrected" to exactly the proposal); corrected or rejected means the model was wrong;
* **override rate** — corrected + rejected over labelled (``1 - accuracy``);
* **automation rate** — calls answered ``ok`` (no human) over all answered calls of that
  version (``ok``, ``degraded`` and ``review`` records);
* **human interventions** — calls of that version that went to a human (``review`` records);
* **time to resolution** — review created → labelled, p50 and p95 in seconds;
* **calibration** — the reliability curve of the model's confidence against the reviewers'
  verdicts (``sklearn.calibration.calibration_curve``, fixed uniform bins) and the expected
  calibration error, over labelled calls that carry a confidence.

Only reviewed calls have labels, and calls go to review *because* the model was unsure, so
accuracy and calibration describe the reviewed slice (mostly low confidence), not all
traffic. Quantities that have no data are ``None``, never zero.

Example::

    report = await quality(mesh, "extract-invoice", since="2026-12-01")
    for v in report.versions:
        print(v.model_version, v.accuracy, v.override_rate, v.automation_rate,
              v.calibration.ece if v.calibration else None)

:class:`QualityMetrics` exports the latest report as OpenTelemetry observable gauges.
"""

from __future__ import annotations

import difflib
import logging
import math
import threading
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from opentelemetry import metrics
from opentelemetry.metrics import CallbackOptions, Observation

from aios_mesh.errors import FeatureNotSupported, InvalidInput, MeshError, UnknownCapability
from aios_mesh.review import Label

if TYPE_CHECKING:
    from aios_mesh.mesh import Mesh

__all__ = ["BINS", "Calibration", "CalibrationBin", "QualityMetrics", "QualityReport",
           "VersionQuality", "calibration", "proposal_kept", "quality"]

_log = logging.getLogger("aios_mesh.lifecycle.quality")

#: Fixed, uniform confidence bins of the reliability curve: fixed so curves of two versions
#: (or two weeks) are comparable bin by bin.
BINS = 10
#: Outcomes of a call the model answered (a fallback's answer and a proposal parked for a
#: human included); the automation rate's denominator.
_ANSWERED = frozenset({"ok", "degraded", "review"})
_PAGE = 5_000  # audit entries read per page: one pass, bounded memory
_UNMATCHED_SHOWN = 20  # record ids of unmatched labels kept in the report
_UNKNOWN = "unknown"  # model name/version of a record that names none


@dataclass(frozen=True, slots=True)
class CalibrationBin:
    """One non-empty bin of the reliability curve: calls whose confidence fell in
    ``[lower, upper)`` (the last bin includes 1.0)."""

    lower: float
    upper: float
    count: int
    mean_confidence: float
    accuracy: float


@dataclass(frozen=True, slots=True)
class Calibration:
    """How well confidence predicts the reviewers' verdicts: the reliability curve (its
    non-empty bins, of ``bins`` uniform bins over [0, 1]) and the expected calibration error
    (0 = perfectly calibrated, at most 1)."""

    bins: int
    samples: int
    ece: float
    curve: tuple[CalibrationBin, ...]


@dataclass(frozen=True, slots=True)
class VersionQuality:
    """The reviewers' view of one model version of one capability (of one tenant, when the
    report is per tenant). Rates are ``None`` where their denominator is zero."""

    capability: str
    capability_version: str
    model: str
    model_version: str
    tenant: str | None
    #: answered calls (records ``ok``, ``degraded`` or ``review``) in the window
    calls: int
    #: of those, answered ``ok`` without a human
    automated: int
    #: calls that went to a human (``review`` records) in the window
    interventions: int
    #: labels that judged a proposal (approved + corrected + rejected)
    labelled: int
    approved: int
    corrected: int
    rejected: int
    #: labels of calls parked with no proposal (a fallback chain ending in a human): the
    #: human answered, but judged no model output, so they count in no rate
    unscored: int
    accuracy: float | None
    override_rate: float | None
    automation_rate: float | None
    resolution_p50_s: float | None
    resolution_p95_s: float | None
    calibration: Calibration | None

    @property
    def key(self) -> str:
        """``capability@version model/version`` (and ``tenant``), for tables and logs."""
        tail = f" [{self.tenant}]" if self.tenant is not None else ""
        return (f"{self.capability}@{self.capability_version} "
                f"{self.model}/{self.model_version}{tail}")


@dataclass(frozen=True, slots=True)
class QualityReport:
    """What :func:`quality` found. ``unmatched`` counts labels whose decision record is not
    in the audit log (a log rotated away or restored from an older copy): they count in no
    version, and the first few record ids are kept to look them up."""

    generated_at: str
    capability: str | None
    tenant: str | None
    since: str | None
    by_tenant: bool
    labels: int
    unmatched: int
    versions: tuple[VersionQuality, ...]
    unmatched_record_ids: tuple[str, ...] = field(default=())

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe document (``--json``, ``summary.json``)."""
        return asdict(self)


# --------------------------------------------------------------------------- calibration


def _numpy() -> Any:
    try:
        import numpy
        from sklearn.calibration import calibration_curve
    except ImportError as exc:  # the core stays light: both come with an extra
        raise FeatureNotSupported("quality tracking needs numpy and scikit-learn",
                                  hint='pip install "aios-mesh[sklearn]"') from exc
    return numpy, calibration_curve


def calibration(correct: Sequence[bool], confidence: Sequence[float], *,
                bins: int = BINS) -> Calibration | None:
    """The reliability curve and expected calibration error of ``confidence`` against
    ``correct`` (one pair per labelled call), or ``None`` with no pair. Confidences outside
    [0, 1] (or not finite) are left out: they are no probability to calibrate.

    Example::

        cal = calibration([True, True, False, True], [0.9, 0.8, 0.3, 0.7])
        cal.ece, [(b.mean_confidence, b.accuracy) for b in cal.curve]
    """
    if len(correct) != len(confidence):
        raise InvalidInput("calibration needs one verdict per confidence",
                           hint="pass two sequences of the same length")
    if bins < 1:
        raise InvalidInput("calibration needs at least one bin", hint="pass bins >= 1")
    pairs = [(bool(c), float(p)) for c, p in zip(correct, confidence, strict=True)
             if math.isfinite(float(p)) and 0.0 <= float(p) <= 1.0]
    if not pairs:
        return None
    np, calibration_curve = _numpy()
    y_true = np.fromiter((c for c, _ in pairs), dtype=float, count=len(pairs))
    y_prob = np.fromiter((p for _, p in pairs), dtype=float, count=len(pairs))
    prob_true, prob_pred = calibration_curve(y_true, y_prob, n_bins=bins, strategy="uniform",
                                             pos_label=1.0)
    # calibration_curve returns the non-empty bins only; count each bin's calls the way it
    # bins them (uniform edges, searchsorted on the inner edges), so counts line up with it
    edges = np.linspace(0.0, 1.0, bins + 1)
    ids = np.searchsorted(edges[1:-1], y_prob)
    counts = np.bincount(ids, minlength=bins)
    filled = np.nonzero(counts)[0]
    # ECE (Naeini et al. 2015; Guo et al. 2017): the gap |accuracy - confidence| of each bin,
    # weighted by the share of calls in it — the expected gap for a call drawn from this
    # traffic, so a sparse bin of two calls cannot dominate a full one as an unweighted mean
    # would. Both terms lie in [0, 1] and the weights sum to 1, so the ECE does too.
    weights = counts[filled] / counts.sum()
    ece = float(np.sum(weights * np.abs(prob_true - prob_pred)))
    curve = tuple(CalibrationBin(lower=float(edges[i]), upper=float(edges[i + 1]),
                                 count=int(counts[i]), mean_confidence=float(conf),
                                 accuracy=float(acc))
                  for i, conf, acc in zip(filled, prob_pred, prob_true, strict=True))
    return Calibration(bins=bins, samples=len(pairs), ece=min(max(ece, 0.0), 1.0),
                       curve=curve)


# --------------------------------------------------------------------------- the report


def _since(since: str | datetime | None) -> str | None:
    """``since`` as the UTC ISO text the queue and the records are written in (so a plain
    string comparison orders them)."""
    if since is None:
        return None
    if isinstance(since, str):
        try:
            when = datetime.fromisoformat(since)
        except ValueError:
            raise InvalidInput(f"{since[:40]!r} is not an ISO 8601 time",
                               hint="e.g. 2026-12-01 or 2026-12-01T09:00:00+00:00") from None
    else:
        when = since
    if when.tzinfo is None:  # a date or local-less time is read as UTC, like the records
        when = when.replace(tzinfo=UTC)
    return when.astimezone(UTC).isoformat(timespec="microseconds")


def proposal_kept(label: Label) -> bool:
    """Whether the reviewer kept the model's proposal (:attr:`Label.proposal_kept
    <aios_mesh.review.Label.proposal_kept>`: approved as it was, or "corrected" to exactly
    the proposal).

    Example::

        accuracy = sum(map(proposal_kept, labels)) / len(labels)
    """
    return label.proposal_kept


_Key = tuple[str, str, str, str, str | None]


@dataclass
class _Tally:
    calls: int = 0
    automated: int = 0
    interventions: int = 0
    approved: int = 0
    corrected: int = 0
    rejected: int = 0
    unscored: int = 0
    correct: list[bool] = field(default_factory=list)
    confidence: list[float] = field(default_factory=list)
    resolution_s: list[float] = field(default_factory=list)


def _key(rec: dict[str, Any], by_tenant: bool) -> _Key:
    cap = rec["capability"]
    model = rec.get("model") or {}
    return (str(cap.get("name")), str(cap.get("version", "")),
            str(model.get("name") or _UNKNOWN), str(model.get("version") or _UNKNOWN),
            str(rec.get("tenant")) if by_tenant else None)


def _seconds(start: str, end: str) -> float | None:
    try:
        return max((datetime.fromisoformat(end) - datetime.fromisoformat(start))
                   .total_seconds(), 0.0)
    except (TypeError, ValueError):
        return None


def _rate(part: int, whole: int) -> float | None:
    return part / whole if whole else None


async def quality(mesh: Mesh, capability: str | None = None, *, tenant: str | None = None,
                  since: str | datetime | None = None,
                  by_tenant: bool = False) -> QualityReport:
    """Reviewers' verdicts joined with the decision records: one :class:`VersionQuality` per
    capability and model version (per tenant too with ``by_tenant``).

    Args:
        mesh: the mesh whose review queue and audit log are read (``mesh.review_queue()``,
            ``mesh.ports.audit``).
        capability: ``name`` (every version) or ``name@version``; default every capability.
            A name that is neither declared nor in the audit log nor labelled is
            :class:`~aios_mesh.errors.UnknownCapability` (a ``NotFound``, with a "did you
            mean").
        tenant: only this tenant's calls and labels.
        since: an ISO 8601 time (or ``datetime``; without a zone, UTC): calls that started
            and labels given at or after it.
        by_tenant: one entry per tenant as well.

    Example::

        report = await quality(mesh, "extract-invoice", tenant="acme")
        best = max(report.versions, key=lambda v: v.accuracy or 0)
    """
    name, _, version = (capability or "").partition("@")
    # A capability this process does not declare (a CLI run on a job's state folder without
    # its --app) is still reported when the log or the queue knows it; only a name nobody
    # knows is an error, raised after the pass with what the log does hold.
    declared = not name or name in mesh.capabilities
    seen: set[str] = set()
    start = _since(since)
    queue = mesh.review_queue()
    labels = queue.labels(tenant=tenant, capability=capability, since=start)
    by_record: dict[str, list[Label]] = {}
    for label in labels:
        by_record.setdefault(label.record_id, []).append(label)
    created: dict[str, str] = {}
    if labels:  # when each labelled item was parked: one query for them all
        wanted = {label.review_id for label in labels}
        created = {item.id: item.created_at
                   for item in queue.list(status=None, tenant=tenant, capability=capability)
                   if item.id in wanted}
    tallies: dict[_Key, _Tally] = {}
    matched: set[str] = set()
    audit, after = mesh.ports.audit, 0
    while True:  # one pass over the log, a page at a time
        page = await audit.read(since=after, limit=_PAGE)
        if not page:
            break
        after = page[-1].seq
        for entry in page:
            rec = entry.record
            cap = rec.get("capability")
            if rec.get("kind") is not None or not isinstance(cap, dict):
                continue  # alias changes, review decisions: not calls
            if not declared:
                seen.add(str(cap.get("name")))
            if name and (cap.get("name") != name or (version and str(cap.get("version"))
                                                      != version)):
                continue
            if tenant is not None and rec.get("tenant") != tenant:
                continue
            record_id = rec.get("record_id")
            labelled = by_record.get(record_id) if isinstance(record_id, str) else None
            outcome = rec.get("outcome")
            answered = outcome in _ANSWERED and (
                start is None or str(rec.get("started_at", "")) >= start)
            if not answered and labelled is None:
                continue  # refused, failed or before the window: no version's call
            tally = tallies.setdefault(_key(rec, by_tenant), _Tally())
            if answered:
                tally.calls += 1
                tally.automated += outcome == "ok"
                tally.interventions += outcome == "review"
            if labelled is None:
                continue
            matched.add(str(record_id))
            confidence = rec.get("confidence")
            for label in labelled:
                seconds = (_seconds(created[label.review_id], label.created_at)
                           if label.review_id in created else None)
                if seconds is not None:
                    tally.resolution_s.append(seconds)
                if label.proposed is None:
                    tally.unscored += 1
                    continue
                right = proposal_kept(label)
                if right:
                    tally.approved += 1
                elif label.verdict == "corrected":
                    tally.corrected += 1
                else:
                    tally.rejected += 1
                if isinstance(confidence, int | float) and not isinstance(confidence, bool):
                    tally.correct.append(right)
                    tally.confidence.append(float(confidence))
    if not declared and not labels and name not in seen:
        known = sorted(set(mesh.capabilities) | seen)
        close = difflib.get_close_matches(name, known, n=1)
        raise UnknownCapability(
            f"no capability named {name!r} is declared, recorded or labelled",
            hint=f"did you mean {close[0]!r}?" if close else
            "`aios-mesh capabilities` lists what is declared; without a name, every "
            "capability in the audit log is reported")
    unmatched = [label.record_id for label in labels if label.record_id not in matched]
    versions = tuple(_version(key, tally) for key, tally in sorted(
        tallies.items(), key=lambda kv: tuple(str(part) for part in kv[0])))
    return QualityReport(generated_at=datetime.now(UTC).isoformat(), capability=capability,
                         tenant=tenant, since=start, by_tenant=by_tenant, labels=len(labels),
                         unmatched=len(unmatched), versions=versions,
                         unmatched_record_ids=tuple(unmatched[:_UNMATCHED_SHOWN]))


def _version(key: _Key, t: _Tally) -> VersionQuality:
    labelled = t.approved + t.corrected + t.rejected
    p50 = p95 = None
    if t.resolution_s:
        np, _ = _numpy()
        p50, p95 = (float(v) for v in np.percentile(t.resolution_s, [50, 95]))
    return VersionQuality(
        capability=key[0], capability_version=key[1], model=key[2], model_version=key[3],
        tenant=key[4], calls=t.calls, automated=t.automated, interventions=t.interventions,
        labelled=labelled, approved=t.approved, corrected=t.corrected, rejected=t.rejected,
        unscored=t.unscored, accuracy=_rate(t.approved, labelled),
        override_rate=_rate(t.corrected + t.rejected, labelled),
        automation_rate=_rate(t.automated, t.calls), resolution_p50_s=p50,
        resolution_p95_s=p95,
        calibration=calibration(t.correct, t.confidence) if t.correct else None)


# --------------------------------------------------------------------------- metrics


#: gauge name → (unit, description, what it reads from a VersionQuality)
_GAUGES: dict[str, tuple[str, str, str]] = {
    "aios_mesh.quality.accuracy": ("1", "share of reviewed proposals reviewers kept",
                                   "accuracy"),
    "aios_mesh.quality.override_rate": ("1", "share of reviewed proposals reviewers "
                                             "corrected or rejected", "override_rate"),
    "aios_mesh.quality.automation_rate": ("1", "share of answered calls that needed no human",
                                          "automation_rate"),
    "aios_mesh.quality.ece": ("1", "expected calibration error of confidence against "
                                   "reviewers", "ece"),
    "aios_mesh.quality.interventions": ("{call}", "calls that went to a human",
                                        "interventions"),
    "aios_mesh.quality.time_to_resolution": ("s", "review created to labelled, p50 and p95",
                                             "resolution"),
}


class QualityMetrics:
    """The latest :func:`quality` report as OpenTelemetry observable gauges
    (``aios_mesh.quality.accuracy``, ``.override_rate``, ``.automation_rate``, ``.ece``,
    ``.interventions``, ``.time_to_resolution`` with a ``quantile`` attribute), each with
    the attributes ``capability``, ``capability_version``, ``model``, ``model_version`` and
    ``tenant`` (``"*"`` for all tenants together, unless ``by_tenant``).

    A scrape reads the report computed last; when it is older than ``refresh_s`` the scrape
    computes one (at most once per ``refresh_s``, whatever the number of gauges or readers),
    on a helper thread: a scrape may come from inside an event loop (a gateway's handler),
    where the mesh's sync facade refuses to run. The scrape waits for it at most
    ``timeout_s``; a failed refresh is logged and the last report stays. :meth:`close` stops
    the helper thread.

    Example::

        metrics = QualityMetrics(mesh, refresh_s=300).install()  # the global meter provider
        metrics.update(await quality(mesh, by_tenant=True))      # or push a fresh report
    """

    def __init__(self, mesh: Mesh, *, capability: str | None = None,
                 tenant: str | None = None, by_tenant: bool = True, refresh_s: float = 60.0,
                 timeout_s: float = 30.0) -> None:
        if refresh_s <= 0 or timeout_s <= 0:
            raise InvalidInput("refresh_s and timeout_s must be positive",
                               hint="e.g. QualityMetrics(mesh, refresh_s=60)")
        self.mesh = mesh
        self.capability, self.tenant, self.by_tenant = capability, tenant, by_tenant
        self.refresh_s, self.timeout_s = refresh_s, timeout_s
        self.refreshes = 0  # how many reports were computed (for tests and debugging)
        self._report: QualityReport | None = None
        self._at = -math.inf
        self._lock = threading.Lock()
        # one long-lived helper thread: the mesh's sync facade keeps an event loop (and the
        # adapters their connections) per thread, so a thread per refresh would leak them
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="aios-mesh-quality")
        self._pending: Future[None] | None = None
        self._closed = False

    def install(self, meter_provider: metrics.MeterProvider | None = None) -> QualityMetrics:
        """Create the gauges on ``meter_provider`` (default the global one); returns self."""
        meter = (meter_provider or metrics.get_meter_provider()).get_meter(
            "aios_mesh.lifecycle")
        for name, (unit, description, attr) in _GAUGES.items():
            meter.create_observable_gauge(name, [self._callback(attr)], unit=unit,
                                          description=description)
        return self

    def update(self, report: QualityReport) -> None:
        """Serve ``report`` from now on (it counts as fresh for ``refresh_s``)."""
        with self._lock:
            self._report, self._at = report, time.monotonic()

    @property
    def report(self) -> QualityReport | None:
        """The report the gauges show now (``None`` before the first one)."""
        return self._report

    def refresh(self) -> QualityReport | None:
        """The current report, computed anew if it is older than ``refresh_s`` (waiting at
        most ``timeout_s``; a slower computation finishes for the next scrape)."""
        with self._lock:
            if time.monotonic() - self._at < self.refresh_s:
                return self._report
            pending = self._pending
            if self._closed:
                return self._report
            if pending is None or pending.done():
                pending = self._pending = self._pool.submit(self._compute)
        wait([pending], timeout=self.timeout_s)
        return self._report

    def close(self) -> None:
        """Stop the helper thread (a refresh under way finishes first); later scrapes
        show the last report."""
        with self._lock:
            self._closed = True
        self._pool.shutdown(wait=True)

    def _compute(self) -> None:
        try:
            report = self.mesh.run_sync(quality(self.mesh, self.capability,
                                                tenant=self.tenant, by_tenant=self.by_tenant))
        except MeshError:
            _log.warning("quality metrics: the report could not be computed", exc_info=True)
            with self._lock:  # try again after refresh_s, not on every scrape
                self._at = time.monotonic()
            return
        with self._lock:
            self._report, self._at = report, time.monotonic()
            self.refreshes += 1

    def _callback(self, attr: str) -> Any:
        def observe(options: CallbackOptions) -> Iterable[Observation]:
            report = self.refresh()
            return [] if report is None else list(_observations(report, attr))

        return observe


def _observations(report: QualityReport, attr: str) -> Iterable[Observation]:
    for v in report.versions:
        attrs: dict[str, str] = {"capability": v.capability,
                                 "capability_version": v.capability_version,
                                 "model": v.model, "model_version": v.model_version,
                                 "tenant": v.tenant if v.tenant is not None
                                 else (report.tenant or "*")}
        if attr == "resolution":
            for quantile, value in (("0.5", v.resolution_p50_s), ("0.95", v.resolution_p95_s)):
                if value is not None:
                    yield Observation(value, {**attrs, "quantile": quantile})
            continue
        value = (v.calibration.ece if v.calibration is not None else None) if attr == "ece" \
            else getattr(v, attr)
        if value is not None:  # no data is no point, never a zero
            yield Observation(value, attrs)
