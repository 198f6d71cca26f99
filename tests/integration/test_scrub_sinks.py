"""Issue 17, item 3, done-when: e-mails, IBANs, phone and card numbers, API keys, a password
and a name (opt-in detector on) planted in payload values, payload keys, policy attributes,
error-raising payloads, handler exceptions and a capability name reach none of the sinks:
the audit log, the decision log lines, the OpenLineage events (file transport), the decision
events (sqlite bus), the gateway's responses and its /metrics — against a real gateway
process, its relay shipping from the audit log."""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path
from urllib.parse import quote

import httpx
import spacy

from aios_mesh.gateway.auth import KeyStore
from aios_mesh.gateway.testing import running_gateway
from aios_mesh.state import SqliteState

REPO = Path(__file__).resolve().parents[2]
EMAIL, IBAN, PHONE, CARD = ("alice.planted@example.com", "DE89 3704 0044 0532 0130 00",
                            "+1 415 555 0134", "4111 1111 1111 1111")
KEYS = ("ghp_16C7e42F292c6912E7710c838347Ae178B4a", "AKIAIOSFODNN7EXAMPLE",
        "sk_live_4eC39HqLyjWDarjtT1zdp7dc")
PASSWORD, NAME = "Hunter2Planted", "Alice Planted"
EVERYTHING = f"{EMAIL} {IBAN} {PHONE} {CARD} {' '.join(KEYS)} password={PASSWORD} {NAME}"
#: What must appear nowhere, also as bare digits (a sink might drop the spaces).
NEEDLES = (EMAIL, IBAN, IBAN.replace(" ", ""), PHONE, "4155550134", CARD,
           CARD.replace(" ", ""), *KEYS, PASSWORD, NAME)

CONFIG = """
state_dir = "state"
[backends]
registry = "memory://"
[retry]
max_attempts = 1
[relay]
interval_s = 0.2
[tenants.acme]
"""


def _setup(tmp: Path) -> tuple[dict[str, str], str]:
    (tmp / "mesh.toml").write_text(CONFIG)
    policies = tmp / "state" / "policies" / "scrub"
    policies.mkdir(parents=True)
    (policies / "open.rego").write_text("package scrub.open\n\nimport rego.v1\n\n"
                                        "default allow := true\n")
    (policies / "deny.rego").write_text(
        "package scrub.deny\n\nimport rego.v1\n\ndefault allow := false\n\n"
        'reason := sprintf("no approval for %v", [input.attributes]) if true\n')
    nlp = spacy.blank("en")
    nlp.add_pipe("entity_ruler").add_patterns([{"label": "PERSON", "pattern": NAME}])
    nlp.to_disk(tmp / "names")
    store = KeyStore(SqliteState(tmp / "state"))
    token = store.create("acme", "acme-app")[1]
    store.close()
    return ({"SCRUB_TEST_CONFIG": str(tmp / "mesh.toml"),
             "SCRUB_NAMES_MODEL": str(tmp / "names")}, token)


def _sink_texts(state: Path) -> dict[str, str]:
    lineage = "\n".join(p.read_text() for p in sorted((state / "lineage").rglob("*"))
                        if p.is_file())
    with sqlite3.connect(state / "events.db") as db:
        events = "\n".join(repr(row) for row in db.execute("SELECT * FROM messages"))
    return {"audit": (state / "audit.jsonl").read_text(),
            "decisions.log": (state / "decisions.log").read_text(),
            "lineage": lineage, "events": events}


def test_nothing_planted_reaches_any_sink(tmp_path: Path) -> None:
    env, token = _setup(tmp_path)
    headers = {"Authorization": f"Bearer {token}",
               "X-Mesh-Attributes": json.dumps({"contact": EVERYTHING, EMAIL: IBAN})}
    answers: list[httpx.Response] = []
    with running_gateway(None, app="tests.integration.scrub_app:mesh", env=env,
                         cwd=REPO) as gw:
        def post(name: str, body: object) -> httpx.Response:
            r = httpx.post(f"{gw.url}/v1/capabilities/{quote(name, safe='')}/invoke",
                           json=body, headers=headers, timeout=30)
            answers.append(r)
            return r

        assert post("ok", {"text": EVERYTHING}).status_code == 200
        failed = post("boom", {"text": EVERYTHING})
        assert failed.status_code >= 500, failed.text
        assert "cannot bill [EMAIL]" in failed.json()["detail"]
        refused = post("strict", {key: "x" for key in (EMAIL, IBAN.replace(" ", ""), *KEYS)})
        assert refused.status_code == 422, refused.text
        assert post("deny", {"text": "x"}).status_code == 403
        assert post(EMAIL, {"text": EVERYTHING}).status_code == 404
        metrics = httpx.get(f"{gw.url}/metrics", timeout=10).text
        assert 'capability="(unknown)"' in metrics and 'capability="boom"' in metrics

        state = tmp_path / "state"
        deadline = time.monotonic() + 60  # the relay ships lineage and events from the log
        while True:
            sinks = _sink_texts(state)
            if sinks["lineage"].count('"eventType": "COMPLETE"') + \
                    sinks["lineage"].count('"eventType":"COMPLETE"') >= 1 and \
                    sinks["events"].count("aios.mesh.decisions") >= 5:
                break
            assert time.monotonic() < deadline, "the relay shipped nothing"
            time.sleep(0.2)
    sinks = _sink_texts(state)
    sinks["responses"] = "\n".join(r.text for r in answers)
    sinks["metrics"] = metrics
    # every sink saw the calls (a sink left empty would pass the check below vacuously)
    assert sinks["audit"].count('"record_id"') == 5
    assert sinks["decisions.log"].count('"decision"') == 5
    for name in ("audit", "decisions.log", "responses"):
        assert "[EMAIL]" in sinks[name] and "[SECRET]" in sinks[name], name
    assert "[PERSON]" in sinks["audit"] and "[IBAN]" in sinks["audit"]
    leaks = {(sink, needle) for sink, text in sinks.items() for needle in NEEDLES
             if needle in text}
    assert not leaks
