"""The scrubber and the secret detectors: what is masked, what is left alone (ids, digests,
names of things), keys as well as values, errors in place, names through a real spaCy
pipeline."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import BaseModel

from aios_mesh.capabilities import CapabilitySpec
from aios_mesh.errors import ConfigError, InvalidInput, PolicyDenied
from aios_mesh.redaction import RuleRedactor, Scrubber
from aios_mesh.redaction.secrets import high_entropy

SECRETS = [
    "AKIAIOSFODNN7EXAMPLE",                                   # AWS access key id
    "ghp_16C7e42F292c6912E7710c838347Ae178B4a",               # GitHub token
    "xoxb-123456789012-1234567890123-AbCdEfGhIjKlMnOpQrStUv",  # Slack bot token
    "sk_live_4eC39HqLyjWDarjtT1zdp7dc",                       # Stripe live key
    "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U",
    "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",  # SendGrid
    "glpat-xxxxxxxxxxxxxxxxxxxx1234",                         # GitLab token
    "wJalrXUtnFEMI7K7MDENGbPxRfiCY3XAMPLEKEY",               # high entropy, no known format
]
NOT_SECRETS = [
    "2b0f6c1e-1234-4abc-8def-0123456789ab",                    # a record id
    "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",  # a sha256
    "4bf92f3577b34da6a3ce929d0e0e4736",                        # a trace id
    "ExtractInvoiceFieldsV2", "InvoiceExtractorModel2024v3",   # names of things
    "2026-11-22T04:00:00.000000+00:00", "extract-invoice-fields@3",
    "/tmp/pytest-of-root/pytest-12/test_scrub0/state/audit.jsonl",
    "mlflow-artifacts:/1/4f1c0b6e2d7a4c1e9b3f5a6d7e8f9012/artifacts/model",
]


@pytest.mark.parametrize("secret", SECRETS)
def test_key_and_token_formats_and_high_entropy_strings_are_masked(secret: str) -> None:
    out = Scrubber().text(f"the backend said: bad credential {secret} (retry later)")
    assert secret not in out and "[SECRET]" in out
    assert out.startswith("the backend said: bad credential ") and out.endswith("(retry later)")


@pytest.mark.parametrize("text", NOT_SECRETS)
def test_ids_digests_timestamps_and_names_are_left_alone(text: str) -> None:
    assert Scrubber().text(text) == text


@pytest.mark.parametrize("text", ["context_window needs tokenize=llamacpp",
                                  "tokeniser: sentencepiece"])
def test_options_named_after_tokenizing_are_no_secrets(text: str) -> None:
    assert Scrubber().text(text) == text


@pytest.mark.parametrize(("text", "masked"), [
    ("login failed: password=hunter2 for svc", "login failed: password=[SECRET] for svc"),
    ('{"api_key": "abc123def"}', '{"api_key": "[SECRET]"}'),
    ("DB_PASSWORD: s3cr3t!", "DB_PASSWORD: [SECRET]"),
    ("Authorization: Bearer abc.def.ghijkl", "Authorization: Bearer [SECRET]"),
    ("client_secret=xyz987;next", "client_secret=[SECRET];next"),
    ("access_token=qqq tokens=zzz1", "access_token=[SECRET] tokens=[SECRET]"),
])
def test_password_like_pairs_mask_the_value_and_keep_the_name(text: str, masked: str) -> None:
    assert Scrubber().text(text) == masked


def test_pii_kinds_stay_on_with_their_checksums() -> None:
    s = Scrubber()
    assert s.text("bob@example.com DE89 3704 0044 0532 0130 00 4111 1111 1111 1111 "
                  "+1 415 555 0134") == "[EMAIL] [IBAN] [CARD] [PHONE]"
    # a 16-digit order number failing Luhn, an IBAN failing mod-97: not masked (spaced in
    # groups, their parts would still be masked as phone numbers: better too much than not)
    assert s.text("order 4111111111111112, DE00370400440532013000") == \
        "order 4111111111111112, DE00370400440532013000"
    # an order number in front of a card number does not hide it
    assert s.text("ref 0134 4111 1111 1111 1111") == "ref 0134 [CARD]"


def test_dict_keys_are_redacted_before_an_external_backend_and_in_records() -> None:
    payload = {"bob@example.com": {"DE89370400440532013000": "x"}, "items": [{"k": "v"}]}
    redacted = RuleRedactor().redact(payload, tenant="t")
    assert redacted.payload == {"[EMAIL]": {"[IBAN]": "x"}, "items": [{"k": "v"}]}
    assert redacted.counts == {"email": 1, "iban": 1}
    assert Scrubber().value(payload) == redacted.payload


def test_error_is_scrubbed_in_place_so_the_caller_gets_the_recorded_text() -> None:
    err = InvalidInput("unknown field 'bob@example.com'", hint="drop 'bob@example.com'",
                       field="bob@example.com")
    assert Scrubber().error(err) is err
    assert err.message == "unknown field '[EMAIL]'" and err.hint == "drop '[EMAIL]'"
    assert err.details == {"field": "[EMAIL]"}
    assert "bob@" not in str(err) and err.to_dict()["message"] == err.message
    denied = Scrubber().error(PolicyDenied("denied", reason="amount for DE89370400440532013000"))
    assert isinstance(denied, PolicyDenied) and denied.reason == "amount for [IBAN]"


def test_cached_results_are_the_same_and_the_cache_is_bounded() -> None:
    s = Scrubber(cache_size=4)
    for i in range(20):
        assert s.text(f"mail user{i}@example.com") == "mail [EMAIL]"
    assert s.text("mail user3@example.com") == "mail [EMAIL]"
    # counted again: the bounded cache had let it go (a cached text counts once)
    assert s.found["email"] == 21
    assert s.text("mail user3@example.com") == "mail [EMAIL]" and s.found["email"] == 21


def test_high_entropy_needs_mixed_classes_and_near_maximal_entropy() -> None:
    assert high_entropy("aB3dE5gH7jK9mN1pQ3sT")
    assert not high_entropy("a" * 10 + "1" * 10)
    assert not high_entropy("abcdefghijklmnopqrstuvwxyz")  # no digit


_TEXT = st.text(st.characters(codec="ascii", exclude_characters="@"), max_size=40)


@given(_TEXT, _TEXT, st.sampled_from(["bob@example.com", "4111 1111 1111 1111",
                                      "DE89370400440532013000", *SECRETS]))
def test_a_planted_value_never_survives_and_scrubbing_is_idempotent(
        before: str, after: str, planted: str) -> None:
    s = Scrubber()
    out = s.text(f"{before} {planted} {after}")
    assert planted not in out
    assert s.text(out) == out


def _names_pipeline(tmp_path: Path) -> Path:
    """A real spaCy pipeline, saved as a folder: a blank English one whose entity ruler
    knows one name and one city (a trained model would find them by itself)."""
    import spacy

    nlp = spacy.blank("en")
    ruler = nlp.add_pipe("entity_ruler")
    ruler.add_patterns([{"label": "PERSON", "pattern": "Alice Planted"},
                        {"label": "GPE", "pattern": "Springfield"}])
    nlp.to_disk(tmp_path / "names")
    return tmp_path / "names"


def test_names_detector_masks_people_and_places_from_an_installed_pipeline(
        tmp_path: Path) -> None:
    from aios_mesh.redaction.names import SpacyNames

    s = Scrubber(detectors=[SpacyNames(_names_pipeline(tmp_path))])
    assert s.text("ship to Alice Planted, Springfield; mail a@example.com") == \
        "ship to [PERSON], [ADDRESS]; mail [EMAIL]"
    assert s.found == {"person": 1, "address": 1, "email": 1}


def test_names_detector_without_the_pipeline_is_a_config_error(tmp_path: Path) -> None:
    from aios_mesh.redaction.names import SpacyNames

    with pytest.raises(ConfigError, match="no spaCy pipeline") as info:
        SpacyNames("en_core_web_nonexistent")
    assert "nothing is downloaded" in (info.value.hint or "")


def test_the_all_digit_groups_of_a_uuid_are_not_a_phone_number() -> None:
    for uid in ("00000000-0000-4000-8000-000000000000", "2b0f6c1e-1234-4000-8000-0123456789ab"):
        assert Scrubber().text(f"no record '{uid}'") == f"no record '{uid}'"
    assert Scrubber().text("tel 415-555-0134.") == "tel [PHONE]."


def test_names_model_in_the_config_scrubs_names_from_the_audit_log(tmp_path: Path) -> None:
    """``[redaction] names_model`` switches the names detector on for every record."""
    import json

    from aios_mesh import InvalidInput, Mesh
    from aios_mesh.config import config_from_mapping

    model = _names_pipeline(tmp_path)
    spec = CapabilitySpec(name="echo", input=Note, output=Note, handler=_reject)
    doc = {"state_dir": str(tmp_path / "state"), "tenants": {"acme": {}},
           "redaction": {"names_model": str(model)}}
    with Mesh(config_from_mapping(doc), capabilities=[spec]) as mesh, \
            pytest.raises(InvalidInput):
        mesh.invoke("echo", {"text": "x"}, tenant="acme")
    audit = (tmp_path / "state" / "audit.jsonl").read_text()
    assert "Alice Planted" not in audit and "[PERSON]" in audit
    assert json.loads(audit.splitlines()[0])["record"]["outcome"] == "rejected"


class Note(BaseModel):
    text: str


def _reject(note: Note) -> Note:
    raise ValueError("Alice Planted may not send this")


def test_declared_names_with_random_suffixes_are_not_secrets() -> None:
    """A registered model named ``invoice-clf-f4ed9809`` stays in the record (the randomness
    guess is for free text, not for names the operator declared), while PII and known key
    formats are still masked in names."""
    s = Scrubber()
    assert s.name("invoice-clf-f4ed9809") == "invoice-clf-f4ed9809"
    assert s.text("invoice-clf-f4ed9809") == "[SECRET]"  # as free text it looks random
    assert s.name("bob@example.com") == "[EMAIL]"
    assert s.name("sk_live_4eC39HqLyjWDarjtT1zdp7dc") == "[SECRET]"


def test_a_records_declared_names_survive_and_an_unknown_tenant_does_not(
        tmp_path: Path) -> None:
    import json

    from aios_mesh import Mesh, UnknownTenant

    spec = CapabilitySpec(name="triage-f4ed9809aa", input=Note, output=Note, handler=_echo)
    with Mesh.local(tmp_path, capabilities=[spec], tenants=("acme-7c3f9e21b",)) as mesh:
        mesh.invoke("triage-f4ed9809aa", {"text": "x"}, tenant="acme-7c3f9e21b")
        with pytest.raises(UnknownTenant):
            mesh.invoke("triage-f4ed9809aa", {"text": "x"}, tenant="sk4eC39HqLyjWDarjtT1zdp7d")
    first, second = (json.loads(line)["record"]
                     for line in (tmp_path / "audit.jsonl").read_text().splitlines())
    assert (first["tenant"], first["capability"]["name"]) == ("acme-7c3f9e21b",
                                                          "triage-f4ed9809aa")
    assert second["tenant"] == "[SECRET]"  # not declared: the caller's text, scrubbed


def _echo(note: Note) -> Note:
    return note
