"""Reversible tokenisation: tokens out, values back in the answer, same tenant only."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel

from aios_mesh import CapabilitySpec, Mesh
from aios_mesh.config import config_from_mapping
from aios_mesh.redaction import TokenizingRedactor
from tests.unit.fakes import ScriptedServing, StaticRegistry


class Mail(BaseModel):
    text: str


class Reply(BaseModel):
    text: str


async def test_same_value_same_token_within_a_tenant_only() -> None:
    r = TokenizingRedactor(b"k" * 32)
    a1 = (await r.tokenize({"t": "bob@example.com"}, tenant="a")).payload["t"]
    a2 = (await r.tokenize({"t": "write bob@example.com"}, tenant="a")).payload["t"]
    b1 = (await r.tokenize({"t": "bob@example.com"}, tenant="b")).payload["t"]
    assert a1.startswith("<EMAIL_") and a2 == f"write {a1}"
    assert b1 != a1
    assert await r.restore({"x": [a1]}, tenant="a") == {"x": ["bob@example.com"]}
    assert await r.restore(a1, tenant="b") == a1  # another tenant's token stays a token


async def test_redact_alone_keeps_nothing_in_the_vault() -> None:
    r = TokenizingRedactor(b"k" * 32)
    token = r.redact({"t": "bob@example.com"}, tenant="a").payload["t"]
    assert token == r.token("a", "email", "bob@example.com")
    assert await r.restore(token, tenant="a") == token  # minted, not kept: stays a token


def test_pipeline_sends_tokens_and_returns_values(tmp_path: Path) -> None:
    def echo(payload: dict[str, Any]) -> dict[str, Any]:
        return {"text": f"Dear {payload['text'].split()[-1]}, thanks"}

    serving = ScriptedServing(echo)
    spec = CapabilitySpec(name="reply", input=Mail, output=Reply, model="m@a", external=True)
    config = config_from_mapping({"state_dir": str(tmp_path), "tenants": {"acme": {}},
                                  "redaction": {"mode": "tokenize"},
                                  "telemetry": {"lineage": False, "decision_events": False}})
    with Mesh(config, capabilities=[spec],
              adapters={"serving": serving, "registry": StaticRegistry({"m@a": "1"})}) as m:
        result = m.invoke("reply", {"text": "from jane@example.com"}, tenant="acme")
    sent = serving.received[0]["text"]
    assert "jane@example.com" not in sent and "<EMAIL_" in sent
    assert result.output == Reply(text="Dear jane@example.com, thanks")
    assert result.record.redaction == {"applied": True, "counts": {"email": 1}}
    assert "jane@example.com" not in (tmp_path / "audit.jsonl").read_text()
    assert (tmp_path / "redaction.key").stat().st_mode & 0o077 == 0


async def test_tokens_cover_keys_and_secrets_like_masking_does() -> None:
    """Tokenizing finds what masking finds (dict keys, secrets, checksummed numbers); only
    what a found value becomes differs, and every token maps back."""
    r = TokenizingRedactor(b"k" * 32)
    payload = {"bob@example.com": "note", "auth": "password=hunter2hunter2",
               "card": "4111 1111 1111 1111"}
    tokenized = (await r.tokenize(payload, tenant="a")).payload
    text = str(tokenized)
    assert "bob@example.com" not in text and "hunter2hunter2" not in text
    assert "4111 1111 1111 1111" not in text
    assert await r.restore(tokenized, tenant="a") == payload
