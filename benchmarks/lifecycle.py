"""Model-lifecycle benchmark (issue 19): how fast drift is caught, and how often it is not there.

Each metric is one function returning its part of ``benchmarks/results/lifecycle.json``;
:func:`main` runs the ones asked for and merges them into the existing file (keys it does not
compute are kept), so other metrics (``bad_canary_rollback_calls``, ``slo_met_fraction``) can
live in the same file.

Drift (``drift_detect_calls``, ``false_alarms``) runs on the invoice corpus of the main job:
the ``extract-invoice-fields`` capability's input text and the fields a trained extractor
predicts, reduced to features by :mod:`aios_mesh.lifecycle.features` and fed to
:class:`~aios_mesh.lifecycle.drift.DriftDetector` with the default :class:`DriftSettings`
(the detector the mesh's monitor runs per capability × model version). Per seed: a
reference of 1,000 calls, a stream drawn from 1,000 other invoices of the same generator,
and a shifted population (``corpus.shifted_corpus``: a new e-mail layout, currencies JPY and
CHF only). The mesh itself is not in the loop (the monitor runs the same detector behind a
record processor; ``tests/unit/test_drift.py`` covers that path).

* ``drift_detect_calls`` — after 1,000 unshifted calls, the shifted share of traffic rises
  linearly from 0 to 50 % over ``RAMP_CALLS`` = 500 calls (then stays at 50 %); calls from the
  start of the shift until the first alarm; worst of 5 seeds. The same with a ramp twice as
  slow (1,000 calls) is reported as ``drift_detect_calls_slow_ramp``: a sliding-window test
  at this false-alarm level needs roughly a fifth of the window to be shifted, so a slower
  ramp is seen later.
* ``false_alarms`` — checks that alarm over 20,000 calls with no shift (every check counts,
  not only the first of a burst); worst of 5 seeds.

* ``bad_canary_rollback_calls`` — the full mesh with a canary at 10 % of traffic that is
  always wrong against the reviewers' labels: calls its version answered before the
  automatic rollback; worst of 5 seeds.
* ``slo_met_fraction`` — the share of consecutive 1,000-call windows whose p95 meets the
  SLO's ``p95_ms`` while the cheaper of two candidate backends degrades mid-run (the SLO
  router on a virtual clock); worst of 5 seeds.

Run: ``.venv/bin/python benchmarks/lifecycle.py [drift] [false_alarms] [bad_canary] [slo]``
(default: all).
"""

from __future__ import annotations

import json
import platform
import random
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT)]

from aios_mesh.lifecycle.drift import (  # noqa: E402
    DriftDetector,
    DriftReference,
    DriftSettings,
    schema_digest,
)
from aios_mesh.lifecycle.features import Features, call_features  # noqa: E402
from examples.invoice_intake.capabilities import InvoiceFields, InvoiceText  # noqa: E402
from examples.invoice_intake.corpus import (  # noqa: E402
    Invoice,
    make_corpus,
    shifted_corpus,
    training_corpus,
)

RESULTS = ROOT / "benchmarks" / "results" / "lifecycle.json"
SEEDS = (1, 2, 3, 4, 5)
REFERENCE_CALLS = 1_000
POOL = 1_000
SHIFTED_POOL = 200
WARMUP_CALLS = 1_000
RAMP_CALLS = 500
#: also reported: the same scenario with a slower ramp (0 → 50 % over 1,000 calls)
SLOW_RAMP_CALLS = 1_000
MAX_SHARE = 0.5
GIVE_UP_CALLS = 5_000
NO_SHIFT_CALLS = 20_000
SETTINGS = DriftSettings()

_extractor: Any = None


def _extract(invoices: Sequence[Invoice]) -> list[Features]:
    """Features of each invoice as the monitor sees its call: input text + predicted fields."""
    global _extractor
    if _extractor is None:
        from examples.invoice_intake.extractor import train_extractor

        _extractor, _ = train_extractor(training_corpus(600))
    return [call_features(InvoiceText, {"text": inv.text}, InvoiceFields,
                          _extractor.extract(inv.text)) for inv in invoices]


def _reference(seed: int) -> DriftReference:
    feats = _extract(make_corpus(REFERENCE_CALLS, seed=10_000 + seed))
    return DriftReference.from_features("extract-invoice-fields", feats,
                                        schema_digest=schema_digest(InvoiceText, InvoiceFields),
                                        model_version="1")


def _stream_pool(seed: int) -> list[Features]:
    return _extract(make_corpus(POOL, seed=20_000 + seed))


def detect_calls_one(seed: int, reference: DriftReference, pool: list[Features],
                     shifted: list[Features], ramp: int = RAMP_CALLS) -> int | None:
    """Calls from the start of the shift to the first alarm (None: none in GIVE_UP_CALLS)."""
    rng = random.Random(f"drift:{seed}")
    detector = DriftDetector(reference, SETTINGS)
    for _ in range(WARMUP_CALLS):
        report = detector.add(rng.choice(pool))
        if report is not None and report.drifted:
            raise RuntimeError(f"seed {seed}: alarm before the shift")  # a false alarm
    for t in range(1, GIVE_UP_CALLS + 1):
        share = MAX_SHARE * min(1.0, t / ramp)
        report = detector.add(rng.choice(shifted if rng.random() < share else pool))
        if report is not None and report.drifted:
            return t
    return None


def false_alarms_one(seed: int, reference: DriftReference, pool: list[Features]) -> int:
    rng = random.Random(f"no-shift:{seed}")
    detector = DriftDetector(reference, SETTINGS)
    alarms = 0
    for _ in range(NO_SHIFT_CALLS):
        report = detector.add(rng.choice(pool))
        alarms += report is not None and report.drifted
    return alarms


_cache: dict[int, tuple[DriftReference, list[Features]]] = {}


def _inputs(seed: int) -> tuple[DriftReference, list[Features]]:
    if seed not in _cache:
        _cache[seed] = (_reference(seed), _stream_pool(seed))
    return _cache[seed]


def _worst(values: Sequence[int | None]) -> int | None:
    return None if None in values else max(v for v in values if v is not None)


def drift_detect_calls() -> dict[str, Any]:
    """``drift_detect_calls``: worst over the seeds (target <= 500)."""
    per_seed: dict[str, int | None] = {}
    slow: dict[str, int | None] = {}
    for seed in SEEDS:
        reference, pool = _inputs(seed)
        shifted = _extract(shifted_corpus(SHIFTED_POOL, seed=seed))
        per_seed[str(seed)] = detect_calls_one(seed, reference, pool, shifted)
        slow[str(seed)] = detect_calls_one(seed, reference, pool, shifted, SLOW_RAMP_CALLS)
    return {"drift_detect_calls": _worst(list(per_seed.values())),
            "drift_detect_calls_per_seed": per_seed,
            "drift_detect_calls_slow_ramp": _worst(list(slow.values())),
            "drift_detect_calls_slow_ramp_per_seed": slow}


def false_alarms() -> dict[str, Any]:
    """``false_alarms``: worst over the seeds (target 0 over >= 20,000 calls)."""
    per_seed = {}
    for seed in SEEDS:
        reference, pool = _inputs(seed)
        per_seed[str(seed)] = false_alarms_one(seed, reference, pool)
    return {"false_alarms": max(per_seed.values()), "false_alarms_per_seed": per_seed,
            "false_alarms_calls": NO_SHIFT_CALLS}


def _drift_notes() -> dict[str, Any]:
    s = SETTINGS
    return {"drift": {
        "settings": {"window": s.window, "check_every": s.check_every, "alpha": s.alpha,
                     "horizon": s.horizon, "min_effect": s.min_effect, "bins": s.bins},
        "scenario": {"reference_calls": REFERENCE_CALLS, "stream_pool": POOL,
                     "warmup_calls": WARMUP_CALLS, "ramp_calls": RAMP_CALLS,
                     "slow_ramp_calls": SLOW_RAMP_CALLS,
                     "max_shifted_share": MAX_SHARE, "shifted": "corpus.shifted_corpus: "
                     "new e-mail layout, currencies JPY and CHF only", "seeds": list(SEEDS)},
        "notes": "DriftDetector driven directly on features of extract-invoice-fields (input "
                 "text statistics; predicted fields of an extractor trained on 600 invoices); "
                 "the full mesh is not run per call, and texts are not redacted first. "
                 "false_alarms counts every check that alarms. Repeated-testing correction: "
                 "Bonferroni over features and over every check in `horizon` calls "
                 "(per-test alpha = alpha / (features * horizon / check_every)), plus an "
                 "effect floor (Jensen-Shannon distance >= min_effect)."}}


# ------------------------------------------------------------------ canary and SLO routing
CANARY_PERCENT = 10.0
CANARY_GIVE_UP = 4_000
REVIEW_BELOW = 0.7  # confidence under which a call goes to a reviewer (about 40 % of calls)
SLO_CALLS = 10_000
SLO_DEGRADE_AT = 3_000
SLO_WINDOW = 1_000
SLO_P95_MS = 50.0


def _mesh_for(tmp: Path, spec: Any, admission: Sequence[Any] = ()) -> Any:
    from aios_mesh import Mesh
    from aios_mesh.config import config_from_mapping

    config = config_from_mapping({"state_dir": str(tmp), "tenants": {"acme": {}},
                                  "telemetry": {"lineage": False, "decision_events": False}})
    return Mesh(config, capabilities=[spec], admission=admission,
                adapters={"registry": "memory://"})


def bad_canary_one(seed: int) -> int | None:
    """Calls a canary that is always wrong answers (of 10 % of traffic, its answers reviewed
    like everyone's: below a confidence threshold) before the mesh rolls it back."""
    import hashlib
    import tempfile

    from aios_mesh.capabilities import Canary, CapabilitySpec
    from aios_mesh.embedded.serving import InProcessServing
    from aios_mesh.lifecycle.gates import PromotionGates

    invoices = make_corpus(CANARY_GIVE_UP, seed=100 + seed)
    truth = {inv.text: {"vendor_name": inv.truth.vendor_name,
                        "invoice_number": inv.truth.invoice_number,
                        "invoice_date": inv.truth.invoice_date,
                        "currency": inv.truth.currency, "total": inv.truth.total}
             for inv in invoices}

    def confidence(text: str) -> float:
        digest = hashlib.sha256(f"{seed}:{text}".encode()).digest()
        return 0.5 + 0.5 * digest[0] / 255.0

    def champion(item: dict[str, Any]) -> dict[str, Any]:
        return {**truth[item["text"]], "confidence": confidence(item["text"])}

    def always_wrong(item: dict[str, Any]) -> dict[str, Any]:
        right = truth[item["text"]]
        return {**right, "total": (right["total"] or 0.0) + 10.0,
                "confidence": confidence(item["text"])}

    spec = CapabilitySpec(name="extract-invoice-fields", input=InvoiceText,
                          output=InvoiceFields, model="extractor@champion",
                          canary=Canary(model="extractor@challenger", percent=CANARY_PERCENT),
                          gates=PromotionGates(max_quality_drop=0.1, min_samples=20),
                          review_threshold=REVIEW_BELOW)
    with tempfile.TemporaryDirectory() as tmp:
        mesh = _mesh_for(Path(tmp), spec)
        serving = mesh.ports.serving
        assert isinstance(serving, InProcessServing)
        serving.register_function("extractor", "1", champion)
        serving.register_function("extractor", "2", always_wrong)
        registry = mesh.ports.registry
        with mesh:
            for _ in ("1", "2"):
                mesh.run_sync(registry.register("extractor", "inprocess:extractor"))
            mesh.run_sync(registry.set_alias("extractor", "champion", "1"))
            mesh.run_sync(registry.set_alias("extractor", "challenger", "2"))
            bad_answers = 0
            rolled_back = False
            after = 0
            for inv in invoices:
                result = mesh.invoke(spec.name, {"text": inv.text}, tenant="acme")
                if (result.record.model or {}).get("version") == "2":
                    bad_answers += 1
                if result.review_id is not None:  # the simulated reviewer knows the truth
                    right = result.output is not None and \
                        result.output.model_dump(exclude={"confidence"}) == truth[inv.text]
                    mesh.resolve_review(result.review_id, approve=True, reviewer="bench",
                                        output=None if right else truth[inv.text])
                if not rolled_back and mesh.run_sync(registry.resolve(
                        "extractor@challenger")).version == "1":
                    rolled_back = True
                after += rolled_back
                if after > 200:  # the canary answers like the champion now: done
                    break
            return bad_answers if rolled_back else None


def bad_canary_rollback_calls() -> dict[str, Any]:
    """``bad_canary_rollback_calls``: worst over the seeds (target <= 200)."""
    per_seed = {str(seed): bad_canary_one(seed) for seed in SEEDS}
    return {"bad_canary_rollback_calls": _worst(list(per_seed.values())),
            "bad_canary_rollback_calls_per_seed": per_seed,
            "bad_canary": {
                "scenario": {"canary_percent": CANARY_PERCENT, "review_below": REVIEW_BELOW,
                             "gates": {"max_quality_drop": 0.1, "min_samples": 20},
                             "calls": CANARY_GIVE_UP, "seeds": list(SEEDS)},
                "notes": "The full mesh in process (in-process serving: the champion answers "
                         "the corpus's true fields, the canary the same with a wrong total); "
                         "a simulated reviewer decides every call sent to review (confidence "
                         "below 0.7: about 40 % of calls) against the truth; counted: calls "
                         "the canary's version answered, including those answered while the "
                         "rollback check ran off the caller's path."}}


class _VirtualClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def slo_one(seed: int) -> tuple[float, list[float]]:
    """Share of consecutive 1,000-call windows whose p95 meets the SLO while the cheaper of
    two backends degrades mid-run; latencies are drawn per backend and elapse on a virtual
    clock the SLO router reads (the routing decisions are the real router's)."""
    import statistics
    import tempfile

    from aios_mesh.capabilities import SLO, Candidate, CapabilitySpec, Price
    from aios_mesh.embedded.serving import InProcessServing
    from aios_mesh.lifecycle.slo import SLORouter

    rng = random.Random(seed)
    clock = _VirtualClock()
    state = {"degraded": False}
    seen: list[float] = []

    def backend(base_ms: float, degradable: bool) -> Callable[[dict[str, Any]], dict[str, Any]]:
        def answer(item: dict[str, Any]) -> dict[str, Any]:
            ms = base_ms * rng.lognormvariate(0.0, 0.25)
            if degradable and state["degraded"]:
                ms = 120.0 * rng.lognormvariate(0.0, 0.25)
            clock.now += ms / 1000.0
            seen.append(ms)
            return {"vendor_name": "x", "confidence": 0.9}
        return answer

    spec = CapabilitySpec(name="extract-invoice-fields", input=InvoiceText,
                          output=InvoiceFields, model="extractor@champion",
                          slo=SLO(p95_ms=SLO_P95_MS), price=Price(per_call=0.002),
                          candidates=(Candidate(serving="spot", price=Price(per_call=0.001)),
                                      Candidate(serving="gpu", price=Price(per_call=0.003))))
    holder: list[Any] = []
    router = SLORouter(lambda: holder[0].ports.audit, clock=clock, burn_windows=())
    with tempfile.TemporaryDirectory() as tmp:
        mesh = _mesh_for(Path(tmp), spec, admission=[router])
        holder.append(mesh)
        for name, fn in (("spot", backend(6.0, True)), ("gpu", backend(12.0, False))):
            serving = InProcessServing()
            serving.register_function("extractor", "1", fn)
            mesh.ports.add_serving(name, serving)
        with mesh:
            mesh.run_sync(mesh.ports.registry.register("extractor", "inprocess:extractor"))
            mesh.run_sync(mesh.ports.registry.set_alias("extractor", "champion", "1"))
            for i in range(SLO_CALLS):
                state["degraded"] = i >= SLO_DEGRADE_AT
                clock.now += rng.expovariate(1 / 0.01)  # ~100 calls/s arrive
                mesh.invoke(spec.name, {"text": f"invoice {i}"}, tenant="acme")
    p95s = [statistics.quantiles(seen[w:w + SLO_WINDOW], n=20, method="inclusive")[-1]
            for w in range(0, len(seen), SLO_WINDOW)]
    return sum(p <= SLO_P95_MS for p in p95s) / len(p95s), [round(p, 2) for p in p95s]


def slo_met_fraction() -> dict[str, Any]:
    """``slo_met_fraction``: worst over the seeds (target >= 0.99)."""
    per_seed: dict[str, float] = {}
    windows: dict[str, list[float]] = {}
    for seed in SEEDS:
        per_seed[str(seed)], windows[str(seed)] = slo_one(seed)
    return {"slo_met_fraction": min(per_seed.values()),
            "slo_met_fraction_per_seed": per_seed,
            "slo": {"scenario": {"calls": SLO_CALLS, "window": SLO_WINDOW,
                                 "p95_ms": SLO_P95_MS, "degrade_at": SLO_DEGRADE_AT,
                                 "backends": {"spot": "6 ms (lognormal), 120 ms once degraded, "
                                                      "$0.001", "gpu": "12 ms, $0.003"},
                                 "seeds": list(SEEDS)},
                    "window_p95_ms": windows,
                    "notes": "The full mesh in process with the default SLO router choosing "
                             "between two in-process backends per call; each backend's "
                             "latency is drawn (lognormal) and elapses on a virtual clock the "
                             "router reads, so the figure measures the routing decisions, "
                             "not this host's scheduling noise."}}


METRICS: dict[str, Callable[[], dict[str, Any]]] = {
    "drift": drift_detect_calls,
    "false_alarms": false_alarms,
    "bad_canary": bad_canary_rollback_calls,
    "slo": slo_met_fraction,
}


def main(argv: Sequence[str] = ()) -> dict[str, Any]:
    """Run the metrics named in ``argv`` (default: all of this file's) and merge them into
    :data:`RESULTS`; returns the merged document."""
    names = list(argv) or list(METRICS)
    unknown = [n for n in names if n not in METRICS]
    if unknown:
        raise SystemExit(f"unknown metric(s) {unknown}; known: {sorted(METRICS)}")
    doc: dict[str, Any] = json.loads(RESULTS.read_text()) if RESULTS.is_file() else {}
    started = time.perf_counter()
    for name in names:
        doc.update(METRICS[name]())
    if {"drift", "false_alarms"} & set(names):
        doc.update(_drift_notes())
    doc["machine"] = f"{platform.machine()} {platform.python_implementation()} " \
                     f"{platform.python_version()}, shared 2-core host"
    doc.setdefault("seconds", {})[",".join(names)] = round(time.perf_counter() - started, 1)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n")
    return doc


if __name__ == "__main__":
    result = main(sys.argv[1:])
    print(json.dumps({k: v for k, v in result.items() if not isinstance(v, dict)}, indent=2))
