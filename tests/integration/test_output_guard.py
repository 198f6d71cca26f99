"""Output guardrails end to end: Rego policies evaluated by the embedded engine (regopy) put
``obligations.output`` on a real Mesh (JSONL audit, sqlite review queue, in-process serving
for the stream); the guard masks, denies or parks the answer and the record says so."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from aios_mesh import SLO, CapabilitySpec, InvalidOutput, Mesh, PolicyDenied, capability
from aios_mesh.config import config_from_mapping
from aios_mesh.embedded.registry import MemoryRegistry
from aios_mesh.embedded.serving import InProcessServing
from aios_mesh.pipeline.guard import OUTPUT_BLOCKED, OutputGuard, install_output_guard

pytestmark = pytest.mark.integration

EMAIL = "bob.smith@example.org"
IBAN = "GB82 WEST 1234 5698 7654 32"

DEFAULT = """package mesh.default
import rego.v1
default allow := true
# every answer of every capability: no secret or IBAN leaves unmasked
obligations := {"output": {"pii": "mask", "pii_kinds": ["iban", "secret"]}}
"""

NOTES = """package guard.notes
import rego.v1
default allow := true
terms := ["Project Falcon", "falcon-x"]
obligations := {"output": {"pii": "mask", "blocked_terms": terms, "on_blocked": "deny"}} if {
	input.tenant == "acme"
}
obligations := {"output": {"blocked_terms": terms, "on_blocked": "review"}} if {
	input.tenant == "globex"
}
"""

BAD = """package guard.bad
import rego.v1
default allow := true
obligations := {"output": {"pii": "scramble"}}
"""


class Note(BaseModel):
    text: str


class Reply(BaseModel):
    text: str


@capability("echo-note", policy="guard/notes")
def echo(note: Note) -> Reply:
    return Reply(text=note.text)


@capability("plain-echo")
def plain(note: Note) -> Reply:
    return Reply(text=note.text)


@capability("bad-echo", policy="guard/bad")
def bad(note: Note) -> Reply:
    return Reply(text=note.text)


STREAMED = CapabilitySpec(name="stream-note", input=Note, output=Reply, model="words/1",
                          policy="guard/notes", slo=SLO(timeout_s=5))


def _words(payload: dict[str, Any]) -> Iterator[dict[str, Any]]:
    return ({"token": w} for w in payload["text"].split(" "))


@pytest.fixture
def mesh(tmp_path: Path) -> Iterator[Mesh]:
    root = tmp_path / "policies"
    for rel, source in {"mesh/default.rego": DEFAULT, "guard/notes.rego": NOTES,
                        "guard/bad.rego": BAD}.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(source)
    serving = InProcessServing()
    serving.register("words", "1", lambda batch: [{"text": p["text"]} for p in batch],
                     stream=_words)
    registry = MemoryRegistry()
    asyncio.run(registry.register("words", "inprocess:words/1"))
    config = config_from_mapping({
        "state_dir": str(tmp_path / "state"), "tenants": {"acme": {}, "globex": {}},
        "backends": {"policy": f"rego:///{root}"},
        "policy": {"default": "mesh/default"}})
    with Mesh(config, capabilities=[echo, plain, bad, STREAMED],
              adapters={"serving": serving, "registry": registry}) as built:
        install_output_guard(built.pipeline, OutputGuard(built.review_queue,
                                                         default_policy=True))
        yield built


def records(mesh: Mesh) -> list[dict[str, Any]]:
    lines = (mesh.config.state_path / "audit.jsonl").read_text().splitlines()
    return [json.loads(line)["record"] for line in lines]


def test_pii_in_the_answer_is_masked(mesh: Mesh) -> None:
    result = mesh.invoke("echo-note", {"text": f"pay {IBAN}, ask {EMAIL}"}, tenant="acme",
                         caller="t")
    assert result.output == Reply(text="pay [IBAN], ask [EMAIL]")
    rec = records(mesh)[-1]
    assert rec["outcome"] == "ok"
    default, own = rec["policy"]["checks"]
    # both policies asked for it; the guard acted once on their merged obligations
    assert own["path"] == "guard/notes" and default["path"] == "mesh/default"
    assert own["guard"] == default["guard"] == {"action": "mask", "kinds": ["email", "iban"],
                                                "count": 2}
    assert own["output"] == {"pii": "mask", "pii_kinds": [], "blocked_terms": 2,
                             "on_blocked": "deny", "schema": None}


def test_the_default_policy_alone_masks_what_it_names(mesh: Mesh) -> None:
    result = mesh.invoke("plain-echo", {"text": f"pay {IBAN}, ask {EMAIL}"}, tenant="acme",
                         caller="t")
    assert result.output.text == f"pay [IBAN], ask {EMAIL}"  # the default names iban only
    assert records(mesh)[-1]["policy"]["checks"][0]["guard"]["kinds"] == ["iban"]


def test_a_blocked_term_is_denied_with_a_record(mesh: Mesh) -> None:
    with pytest.raises(PolicyDenied) as err:
        mesh.invoke("echo-note", {"text": "status of project falcon?"}, tenant="acme",
                    caller="t")
    assert err.value.reason_code == OUTPUT_BLOCKED
    assert err.value.policy == "mesh/default+guard/notes"
    rec = records(mesh)[-1]
    assert rec["outcome"] == "denied" and rec["record_id"] == err.value.record_id
    assert rec["policy"]["checks"][-1]["guard"] == {"action": "deny",
                                                    "kinds": ["blocked_term"], "count": 1}
    audit = (mesh.config.state_path / "audit.jsonl").read_text().lower()
    assert "falcon" not in audit


def test_whole_words_only(mesh: Mesh) -> None:
    result = mesh.invoke("echo-note", {"text": "falcon-xl and projectfalcon"},
                         tenant="acme", caller="t")
    assert result.output.text == "falcon-xl and projectfalcon"


def test_review_parks_the_answer(mesh: Mesh) -> None:
    result = mesh.invoke("echo-note", {"text": "FALCON-X is late"}, tenant="globex",
                         caller="t")
    assert result.needs_review and result.output is None
    item = mesh.review_queue().get(result.review_id or "")
    assert item.status == "pending" and item.tenant == "globex"
    assert item.reason == "policy obligation output: blocked_term x1"
    assert item.proposed == {"text": "FALCON-X is late"}
    rec = records(mesh)[-1]
    assert rec["outcome"] == "review" and rec["review_id"] == item.id
    assert rec["policy"]["checks"][-1]["guard"]["action"] == "review"
    approved = mesh.resolve_review(item.id, approve=True, reviewer="ana")
    assert approved.status == "approved"


async def test_a_stream_is_held_then_released_masked(mesh: Mesh) -> None:
    got = [c async for c in mesh.stream("stream-note", {"text": f"to {EMAIL} now"},
                                        tenant="acme", caller="t")]
    assert got == [{"token": "to"}, {"token": "[EMAIL]"}, {"token": "now"}]
    denied: list[dict[str, Any]] = []

    async def consume() -> None:
        async for chunk in mesh.stream("stream-note", {"text": "about falcon-x"},
                                       tenant="acme", caller="t"):
            denied.append(chunk)

    with pytest.raises(PolicyDenied):
        await consume()
    assert denied == []  # nothing of a blocked answer was sent
    stream_recs = [r for r in records(mesh) if r["mode"] == "stream"]
    assert [r["outcome"] for r in stream_recs] == ["ok", "denied"]


def test_a_malformed_output_obligation_is_a_typed_error(mesh: Mesh) -> None:
    with pytest.raises(InvalidOutput) as err:
        mesh.invoke("bad-echo", {"text": "x"}, tenant="acme", caller="t")
    assert "obligations.output.pii must be one of mask, review, deny" in str(err.value)
    assert err.value.hint
