"""Evaluating model versions of a capability on a labelled set, for promotion gates.

The labelled set is a list of :class:`Example` s: an input payload and the answer it should
get. By default it comes from the reviewers (:func:`examples_from_reviews`): every approved
or corrected review item of the capability is an example (its redacted payload, and the
answer the reviewer accepted). A JSONL file of ``{"input": {...}, "expected": {...}}`` lines
works as well (:func:`examples_from_jsonl`).

Each version answers every example through the capability's serving backend, exactly as a
shadow call does (no record, no quota: an evaluation is not traffic); its score is the mean
of the capability's agreement function (:mod:`aios_mesh.lifecycle.agreement`) between the
answer and the expected one.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson
from pydantic import ValidationError

from aios_mesh.errors import InvalidInput, MeshError
from aios_mesh.lifecycle.agreement import agreement_of
from aios_mesh.lifecycle.gates import VersionEvidence
from aios_mesh.lifecycle.stats import p95
from aios_mesh.pipeline.validate import validation_message
from aios_mesh.ports.registry import ModelRef

if TYPE_CHECKING:
    from aios_mesh.capabilities import CapabilitySpec
    from aios_mesh.mesh import Mesh

__all__ = ["Example", "evaluate_version", "examples_from_jsonl", "examples_from_reviews"]


@dataclass(frozen=True, slots=True)
class Example:
    """One labelled example: what was asked and the answer it should get."""

    input: dict[str, Any]
    expected: dict[str, Any]


def examples_from_reviews(mesh: Mesh, spec: CapabilitySpec, *,
                          tenant: str | None = None) -> list[Example]:
    """The reviewers' verdicts as a labelled set: approved and corrected items (a rejected
    one says what is wrong, not what is right, so it is no example)."""
    queue = mesh.review_queue()
    out: list[Example] = []
    for label in queue.labels(tenant=tenant, capability=spec.name):
        if label.output is None:
            continue
        item = queue.get(label.review_id)
        out.append(Example(dict(item.payload), dict(label.output)))
    return out


def examples_from_jsonl(path: Path) -> list[Example]:
    """``{"input": {...}, "expected": {...}}`` per line; a bad line is an
    :class:`InvalidInput` naming its number."""
    out: list[Example] = []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise InvalidInput(f"cannot read the evaluation set {path.name}: {exc.strerror}",
                           hint="pass the path of a JSONL file") from None
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            doc = orjson.loads(line)
        except orjson.JSONDecodeError:
            raise InvalidInput(f"line {number} of {path.name} is not JSON",
                               hint='write one {"input": {...}, "expected": {...}} per line'
                               ) from None
        if not (isinstance(doc, dict) and isinstance(doc.get("input"), dict)
                and isinstance(doc.get("expected"), dict)):
            raise InvalidInput(f"line {number} of {path.name} lacks an input or expected "
                               "object", hint='write {"input": {...}, "expected": {...}}')
        out.append(Example(doc["input"], doc["expected"]))
    return out


async def evaluate_version(mesh: Mesh, spec: CapabilitySpec, ref: ModelRef,
                           examples: Sequence[Example], *, concurrency: int = 8
                           ) -> VersionEvidence:
    """Score model version ``ref`` on ``examples``: quality (mean agreement with the
    expected answers; an error scores 0), p95 latency and mean cost per call."""
    _, serving = mesh.ports.serving_for(spec.serving)
    agree = agreement_of(spec)
    gate = asyncio.Semaphore(concurrency)

    payloads = []
    for number, example in enumerate(examples, 1):
        try:
            payloads.append(spec.input.model_validate(example.input).model_dump(mode="json"))
        except ValidationError as exc:
            raise InvalidInput(f"example {number} of the evaluation set is not a valid input "
                               f"of {spec.name}: {validation_message(exc)}",
                               hint="fix or drop that example") from None

    async def one(payload: dict[str, Any], expected: dict[str, Any]
                  ) -> tuple[float, float, float | None]:
        async with gate:
            started = time.perf_counter()
            try:
                prediction = await serving.infer(ref, payload, timeout=spec.slo.timeout_s)
                answer = spec.output.model_validate(prediction.output).model_dump(mode="json")
            except (MeshError, ValidationError):  # a failure or an off-schema answer scores 0
                return 0.0, (time.perf_counter() - started) * 1000.0, None
            elapsed = (time.perf_counter() - started) * 1000.0
            return agree(expected, answer), elapsed, spec.price.cost(prediction.usage)

    scored = await asyncio.gather(*(one(p, e.expected) for p, e in zip(payloads, examples,
                                                                        strict=True)))
    if not scored:
        return VersionEvidence(ref.version, 0, None, None, None)
    quality = statistics.fmean(s[0] for s in scored)
    latencies = [s[1] for s in scored]
    slowest = p95(latencies)
    assert slowest is not None  # scored is not empty
    costs = [s[2] for s in scored if s[2] is not None]
    return VersionEvidence(
        ref.version, len(scored), round(quality, 6), round(slowest, 3),
        round(statistics.fmean(costs), 10) if costs else None,
        errors=sum(1 for s in scored if s[2] is None))
