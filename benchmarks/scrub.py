"""Scrubbing benchmark: what the Recorder's scrubber adds to building one decision record.

The same finished call is built into its record with the default scrubber and with one that
changes nothing, interleaved (``_timing.interleaved``); the difference of the p50s is what
scrubbing adds per call. Three records: ``clean`` (an answered call with policy attributes,
the common case: its strings repeat and hit the cache), ``cold`` (a scrubber whose cache
holds one string: every field is scanned) and ``pii_error`` (a call whose handler raised
with an e-mail, an IBAN, a card number and an API key in its message, scanned every time).

Run: ``.venv/bin/python benchmarks/scrub.py`` (writes benchmarks/results/scrub.json).
"""

from __future__ import annotations

import asyncio
import json
import platform
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks")]

from _timing import interleaved, pct  # noqa: E402
from pydantic import BaseModel  # noqa: E402

from aios_mesh import Mesh  # noqa: E402
from aios_mesh.capabilities import capability  # noqa: E402
from aios_mesh.errors import MeshError  # noqa: E402
from aios_mesh.recorder import CallStart, Recorded, build_record  # noqa: E402
from aios_mesh.redaction import Scrubber  # noqa: E402

ROUNDS = 20_000
PII = ("bob@example.com DE89370400440532013000 4111 1111 1111 1111 "
       "ghp_16C7e42F292c6912E7710c838347Ae178B4a")


class Text(BaseModel):
    text: str


class Answer(BaseModel):
    answer: str


@capability("bench-ok")
def ok(payload: Text) -> Answer:
    return Answer(answer="done")


@capability("bench-fail")
def fail(payload: Text) -> Answer:
    raise RuntimeError(f"cannot bill {payload.text}")


class Unchanged(Scrubber):
    """A scrubber that changes nothing: the baseline."""

    def text(self, text: str) -> str:
        return text

    def value(self, value: Any) -> Any:
        return value

    def error(self, error: MeshError) -> MeshError:
        return error


class Capture:
    name = "capture"

    def __init__(self) -> None:
        self.items: list[Recorded] = []

    def process(self, item: Recorded) -> None:
        self.items.append(item)

    def flush(self, timeout: float) -> bool:
        return True

    def close(self) -> None:
        return None


def main() -> None:
    state = tempfile.mkdtemp(prefix="bench-scrub-")
    mesh = Mesh.local(state, capabilities=[ok, fail], tenants=["acme"],
                      telemetry={"lineage": False, "decision_events": False, "otel": False})
    capture = Capture()
    mesh.recorder.add(capture)
    attrs = {"amount_usd": 120.5, "vendor": "Acme Corp", "region": "eu-west-1"}
    mesh.invoke("bench-ok", {"text": "hello"}, tenant="acme", attributes=attrs)
    failed_error: MeshError | None = None
    try:
        mesh.invoke("bench-fail", {"text": PII}, tenant="acme")
    except MeshError as exc:
        failed_error = exc
    clean, failed = capture.items
    assert clean.call is not None and failed.call is not None
    spec_ok, spec_fail = mesh.capability("bench-ok"), mesh.capability("bench-fail")
    raw_message = f"{type(failed_error).__name__}: bench-fail failed: cannot bill {PII}"

    def start(name: str) -> CallStart:
        return CallStart("2b0f6c1e-1234-4abc-8def-0123456789ab", name, "acme", "svc", None,
                         "invoke")

    default, cold, none = Scrubber(), Scrubber(cache_size=1), Unchanged()
    s_ok, s_fail = start("bench-ok"), start("bench-fail")

    def build(scrubber: Scrubber, which: str) -> None:
        if which == "pii_error":
            assert failed_error is not None
            failed_error.message = raw_message  # unscrubbed again, as a new call's would be
            build_record(s_fail, spec_fail, failed.call, failed_error, None, None, None,
                         scrubber)
        else:
            build_record(s_ok, spec_ok, clean.call, None, None, None, None, scrubber)

    def path(scrubber: Scrubber, which: str) -> Any:
        async def run() -> None:
            build(scrubber, which)
        return run

    paths = {"clean_scrubbed": path(default, "clean"), "clean_unchanged": path(none, "clean"),
             "cold_scrubbed": path(cold, "clean"),
             "pii_error_scrubbed": path(cold, "pii_error"),
             "pii_error_unchanged": path(none, "pii_error")}
    asyncio.run(interleaved(paths, 500))  # warm up
    samples = asyncio.run(interleaved(paths, ROUNDS))
    p50 = {k: statistics.median(v) for k, v in samples.items()}
    result = {
        "machine": f"{platform.machine()} {platform.python_implementation()} "
                   f"{platform.python_version()}, shared 2-core host",
        "rounds": ROUNDS,
        "p50_us": {k: round(v, 2) for k, v in p50.items()},
        "p99_us": {k: round(pct(v, 0.99), 2) for k, v in samples.items()},
        "added_p50_us": {
            "clean": round(p50["clean_scrubbed"] - p50["clean_unchanged"], 2),
            "cold": round(p50["cold_scrubbed"] - p50["clean_unchanged"], 2),
            "pii_error": round(p50["pii_error_scrubbed"] - p50["pii_error_unchanged"], 2),
        },
    }
    out = ROOT / "benchmarks" / "results" / "scrub.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    mesh.close()


if __name__ == "__main__":
    main()
