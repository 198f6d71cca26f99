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

Run: ``.venv/bin/python benchmarks/lifecycle.py [drift] [false_alarms]`` (default: both).
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


METRICS: dict[str, Callable[[], dict[str, Any]]] = {
    "drift": drift_detect_calls,
    "false_alarms": false_alarms,
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
