"""Policy on every call (issue 17, items 1 and 2), against real Rego on the embedded regopy
engine: the mesh-wide default policy, deny-by-default, typed policy input (schemas beside
the .rego files, validated before evaluation), the payload only for policies that declare
they read it, the reason and reason code in the error, the record and the problem body; and
the invoice example's policies failing closed on missing, mistyped and null attributes."""

from __future__ import annotations

import functools
import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

import pytest
from aios_mesh_regopy import RegoPolicy
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from aios_mesh import Mesh, PolicyDenied, capability
from aios_mesh.client import error_from_problem
from aios_mesh.config import PolicyConfig, config_from_mapping
from aios_mesh.errors import ConfigError
from aios_mesh.gateway.problems import problem_body
from aios_mesh.pipeline.policy import merge_decisions, schema_errors
from aios_mesh.policy_bundle import read_input_schemas
from aios_mesh.ports.policy import Decision, Obligations, PolicyInput
from examples.invoice_intake.capabilities import ROUTE

EXAMPLE_POLICIES = Path(__file__).resolve().parents[2] / "examples/invoice_intake/policies"

DEFAULT_REGO = """package mesh.default

import rego.v1

default allow := false

allow if not input.tenant in {"blocked"}

reason := "tenant is blocked mesh-wide" if input.tenant in {"blocked"}

reason_code := "tenant_blocked" if input.tenant in {"blocked"}

obligations := {"redact": ["email"]}
"""

OWN_REGO = """package app.notes

import rego.v1

default allow := false

allow if input.attributes.level <= 3

reason := "level too high" if input.attributes.level > 3

reason_code := "level_too_high" if input.attributes.level > 3

obligations := {"redact": ["card"]}
"""

OWN_SCHEMA = {"type": "object", "required": ["attributes"],
              "properties": {"attributes": {"type": "object", "required": ["level"],
                                            "properties": {"level": {"type": "integer"}}}}}

READER_REGO = """package app.reader

import rego.v1

default allow := false

allow if not contains(input.payload.text, "forbidden")

reason := sprintf("payload says %s", [input.payload.text]) if not allow

reason_code := "forbidden_word" if not allow
"""

READER_SCHEMA = {"type": "object", "required": ["payload"],
                 "properties": {"payload": {"type": "object"}}}


class Note(BaseModel):
    text: str


class Echo(BaseModel):
    text: str


@capability("notes", policy="app/notes")
def notes(note: Note) -> Echo:
    """Echo what the handler received (after redaction)."""
    return Echo(text=note.text)


@capability("free")
def free(note: Note) -> Echo:
    """A capability that declares no policy of its own."""
    return Echo(text=note.text)


@capability("reader", policy="app/reader")
def reader(note: Note) -> Echo:
    """A capability whose policy reads the payload."""
    return Echo(text=note.text)


def bundle(folder: Path, *, schemas: bool = True) -> Path:
    (folder / "mesh").mkdir(parents=True)
    (folder / "app").mkdir()
    (folder / "mesh/default.rego").write_text(DEFAULT_REGO)
    (folder / "app/notes.rego").write_text(OWN_REGO)
    (folder / "app/reader.rego").write_text(READER_REGO)
    if schemas:
        (folder / "mesh/default.schema.json").write_text(json.dumps({"type": "object"}))
        (folder / "app/notes.schema.json").write_text(json.dumps(OWN_SCHEMA))
        (folder / "app/reader.schema.json").write_text(json.dumps(READER_SCHEMA))
    return folder


def make_mesh(tmp_path: Path, policy: dict[str, Any], *, folder: Path | None = None,
              caps: tuple[Any, ...] = (notes, free, reader)) -> Mesh:
    folder = folder or bundle(tmp_path / "policies")
    doc = {"state_dir": str(tmp_path / "state"), "policy": policy,
           "tenants": {"acme": {}, "blocked": {}}}
    return Mesh(config_from_mapping(doc), capabilities=caps,
                adapters={"policy": RegoPolicy.from_path(folder)})


def records(tmp_path: Path) -> list[dict[str, Any]]:
    lines = (tmp_path / "state/audit.jsonl").read_text().splitlines()
    return [json.loads(line)["record"] for line in lines]


# -- the default policy -----------------------------------------------------------------------

def test_default_and_own_policy_both_apply(tmp_path: Path) -> None:
    with make_mesh(tmp_path, {"default": "mesh/default"}) as mesh:
        ok = mesh.invoke("notes", {"text": "a@b.example 4111 1111 1111 1111"}, tenant="acme",
                         attributes={"level": 1})
        # the obligations of both: email from the default, card from the capability's own
        assert ok.output.text == "[EMAIL] [CARD]"
        with pytest.raises(PolicyDenied) as own:
            mesh.invoke("notes", {"text": "x"}, tenant="acme", attributes={"level": 9})
        with pytest.raises(PolicyDenied) as default:  # the own policy would allow it
            mesh.invoke("notes", {"text": "x"}, tenant="blocked", attributes={"level": 1})
        free_call = mesh.invoke("free", {"text": "mail a@b.example"}, tenant="acme")
        assert free_call.output.text == "mail [EMAIL]"  # the default's obligation, no own
    assert (own.value.reason, own.value.reason_code, own.value.policy) == (
        "level too high", "level_too_high", "app/notes")
    assert "level too high" in own.value.message
    assert (default.value.reason_code, default.value.policy) == ("tenant_blocked",
                                                                 "mesh/default")
    ok_rec, own_rec, default_rec, free_rec = records(tmp_path)
    assert [c["path"] for c in ok_rec["policy"]["checks"]] == ["mesh/default", "app/notes"]
    assert ok_rec["policy"]["obligations"]["redact"] == ["email", "card"]
    assert own_rec["policy"]["reason_code"] == "level_too_high"
    assert own_rec["outcome"] == "denied"
    # the first deny decides: the capability's own policy was not asked
    assert [c["path"] for c in default_rec["policy"]["checks"]] == ["mesh/default"]
    assert default_rec["policy"]["reason_code"] == "tenant_blocked"
    assert free_rec["policy"]["path"] == "mesh/default"


def test_without_default_a_capability_without_policy_runs_unchecked(tmp_path: Path) -> None:
    with make_mesh(tmp_path, {}) as mesh:
        result = mesh.invoke("free", {"text": "a@b.example"}, tenant="blocked")
        assert result.output.text == "a@b.example"
        assert "policy" not in [s.name for s in mesh.pipeline.plan(free)]
    assert records(tmp_path)[0]["policy"] is None


def test_deny_by_default(tmp_path: Path) -> None:
    with make_mesh(tmp_path, {"mode": "deny-by-default"}) as mesh:
        with pytest.raises(PolicyDenied) as info:
            mesh.invoke("free", {"text": "x"}, tenant="acme")
        assert mesh.invoke("notes", {"text": "x"}, tenant="acme",
                           attributes={"level": 1}).record.outcome == "ok"
    assert info.value.reason_code == "no_policy"
    assert info.value.hint is not None and "[policy] default" in info.value.hint
    denied = records(tmp_path)[0]
    assert denied["outcome"] == "denied" and denied["policy"]["reason_code"] == "no_policy"


def test_deny_by_default_with_a_default_policy_runs_it(tmp_path: Path) -> None:
    with make_mesh(tmp_path, {"mode": "deny-by-default", "default": "mesh/default"}) as mesh:
        assert mesh.invoke("free", {"text": "x"}, tenant="acme").record.outcome == "ok"


# -- typed input --------------------------------------------------------------------------------

@pytest.mark.parametrize("level", [None, "2", 2.5, "missing"])
def test_schema_mismatch_denies(tmp_path: Path, level: Any) -> None:
    attributes = {} if level == "missing" else {"level": level}
    with make_mesh(tmp_path, {"default": "mesh/default"}) as mesh, \
            pytest.raises(PolicyDenied) as info:
        mesh.invoke("notes", {"text": "x"}, tenant="acme", attributes=attributes)
    assert info.value.reason_code == "input_schema_mismatch"
    check = records(tmp_path)[0]["policy"]["checks"][-1]
    assert check["schema"] == "invalid" and check["schema_errors"]
    assert check["path"] == "app/notes"


def test_schema_mismatch_goes_to_review(tmp_path: Path) -> None:
    with make_mesh(tmp_path, {"on_schema_mismatch": "review"}) as mesh:
        result = mesh.invoke("notes", {"text": "x"}, tenant="acme", attributes={"level": "1"})
        assert result.needs_review
        with pytest.raises(PolicyDenied):  # the rule still decides: a deny stays a deny
            mesh.invoke("notes", {"text": "x"}, tenant="acme", attributes={"level": 9.5})
    rec = records(tmp_path)[0]
    assert rec["outcome"] == "review"
    assert rec["policy"]["checks"][0]["schema"] == "invalid"
    assert rec["policy"]["obligations"]["require_human"] is True


def test_strict_mode_refuses_a_package_without_schema(tmp_path: Path) -> None:
    folder = bundle(tmp_path / "policies", schemas=False)
    (folder / "app/notes.schema.json").write_text(json.dumps(OWN_SCHEMA))
    with make_mesh(tmp_path, {"require_schema": True}, folder=folder) as mesh, \
            pytest.raises(ConfigError) as info:
        mesh.invoke("notes", {"text": "x"}, tenant="acme", attributes={"level": 1})
    assert "app.reader (app/reader.rego)" in info.value.message
    assert "mesh.default" in info.value.message and "app.notes" not in info.value.message
    assert info.value.hint is not None and "reader.schema.json" in info.value.hint


@pytest.mark.parametrize(("files", "wanted"), [
    ({"a.rego": "package a\nallow := true\n", "a.schema.json": "{not json"},
     "is not a JSON document"),
    ({"a.rego": "package a\nallow := true\n", "a.schema.json": "[1]"}, "JSON Schema object"),
    ({"a.rego": "package a\nallow := true\n", "a.schema.json": '{"type": 12}'},
     "not a valid JSON Schema"),
    ({"a.rego": "package a\nallow := true\n", "b.schema.json": "{}"}, "no policy beside it"),
    ({"a.rego": "package a\nallow := true\n", "x.rego": "package a\nreason := \"r\"\n",
      "a.schema.json": "{}", "x.schema.json": '{"type": "object"}'},
     "two different input schemas"),
])
def test_bad_schema_files_are_config_errors(tmp_path: Path, files: dict[str, str],
                                            wanted: str) -> None:
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    with pytest.raises(ConfigError, match=wanted) as info:
        RegoPolicy.from_path(tmp_path)
    assert info.value.hint


def test_schema_edits_change_the_bundle_hash(tmp_path: Path) -> None:
    folder = bundle(tmp_path / "p")
    before = RegoPolicy.from_path(folder).bundle_hash
    (folder / "app/notes.schema.json").write_text(json.dumps({"type": "object"}))
    assert RegoPolicy.from_path(folder).bundle_hash != before


OWN_SCHEMA_OPEN = {**OWN_SCHEMA, "properties": {"attributes": {
    **OWN_SCHEMA["properties"]["attributes"],  # type: ignore[dict-item]
    "additionalProperties": {"type": "string"}}}}


@functools.cache
def _validator() -> Any:
    folder = Path(tempfile.mkdtemp(prefix="schemas-"))
    (folder / "n.rego").write_text("package n\nallow := true\n")
    (folder / "n.schema.json").write_text(json.dumps(OWN_SCHEMA_OPEN))
    return read_input_schemas(folder, [("n.rego", ("n",))]).validators["n"]


@settings(max_examples=60, deadline=None)
@given(secret=st.text(min_size=1).map(lambda s: f"\u2603{s}"), as_key=st.booleans())
def test_schema_errors_never_show_the_values_sent(secret: str, as_key: bool) -> None:
    # a value of the wrong type, or a key the schema never named holding one
    attributes: dict[str, Any] = {secret: [secret], "level": 1} if as_key else {"level": secret}
    errors = schema_errors(_validator(), {"attributes": attributes})
    assert errors
    assert all("\u2603" not in e for e in errors)


# -- the payload, only for policies that read it --------------------------------------------------

def test_payload_only_for_policies_that_declare_it(tmp_path: Path) -> None:
    with make_mesh(tmp_path, {"default": "mesh/default"}) as mesh:
        with pytest.raises(PolicyDenied) as info:
            mesh.invoke("reader", {"text": "forbidden from jane@example.com"}, tenant="acme")
        assert mesh.invoke("reader", {"text": "fine"}, tenant="acme").record.outcome == "ok"
        mesh.invoke("notes", {"text": "one"}, tenant="acme", attributes={"level": 1})
        second = mesh.invoke("notes", {"text": "two"}, tenant="acme", attributes={"level": 1})
    # the policy saw the payload redacted by the mesh's redactor, never the e-mail address
    assert info.value.reason == "payload says forbidden from [EMAIL]"
    assert info.value.reason_code == "forbidden_word"
    denied, _, _, two = records(tmp_path)
    assert [c["payload"] for c in denied["policy"]["checks"]] == [False, True]
    assert "payload" not in denied["policy"]["input"]
    # the policies that do not read it decide without it: a new payload is a cache hit
    assert second.record.policy is not None and second.record.policy["cached"] is True
    assert two["policy"]["cached"] is True


# -- the reason code in the error, the problem body, the client -------------------------------

def test_problem_body_and_client_carry_reason_code() -> None:
    error = PolicyDenied("policy app/notes denied notes for tenant acme: level too high",
                         reason="level too high", reason_code="level_too_high",
                         policy="app/notes")
    body = problem_body(error, record_id="r1")
    assert body["status"] == 403
    assert (body["reason"], body["reason_code"], body["policy"]) == (
        "level too high", "level_too_high", "app/notes")
    again = error_from_problem(403, json.dumps(body).encode(), {})
    assert isinstance(again, PolicyDenied)
    assert (again.reason, again.reason_code, again.policy) == (
        "level too high", "level_too_high", "app/notes")


def test_merge_decisions() -> None:
    a = Decision(True, obligations=Obligations(redact=("email",), max_cost=0.5), policy="a")
    b = Decision(True, obligations=Obligations(redact=("card", "email"), require_human=True,
                                               max_cost=0.2), policy="b")
    merged = merge_decisions([a, b])
    assert merged.allow and merged.policy == "b"
    assert merged.obligations == Obligations(redact=("email", "card"), require_human=True,
                                             max_cost=0.2)
    no = Decision(False, "no", policy="c", reason_code="x")
    assert merge_decisions([a, no, b]) is no


@settings(max_examples=50, deadline=None)
@given(default=st.one_of(st.none(), st.from_regex(r"[a-z]{1,8}/[a-z]{1,8}", fullmatch=True)),
       mode=st.sampled_from(["allow-by-default", "deny-by-default"]),
       mismatch=st.sampled_from(["deny", "review"]), strict=st.booleans())
def test_policy_config_round_trips(default: str | None, mode: str, mismatch: str,
                                   strict: bool) -> None:
    doc = {"policy": {"default": default, "mode": mode, "on_schema_mismatch": mismatch,
                      "require_schema": strict}}
    config = config_from_mapping(doc)
    assert config.policy == PolicyConfig(default=default, mode=mode,  # type: ignore[arg-type]
                                         on_schema_mismatch=mismatch,  # type: ignore[arg-type]
                                         require_schema=strict)


@pytest.mark.parametrize("bad", [{"mode": "deny"}, {"on_schema_mismatch": "allow"},
                                 {"default": ""}, {"defualt": "mesh/default"}])
def test_bad_policy_config(bad: dict[str, Any]) -> None:
    with pytest.raises(ConfigError) as info:
        config_from_mapping({"policy": bad})
    assert "policy" in info.value.message and info.value.hint


# -- the invoice example fails closed -----------------------------------------------------------

GOOD = {"amount_usd": 120.0, "currency": "USD", "vendor_confidence": 0.97}
MALFORMED = [
    ("amount missing", {"currency": "USD", "vendor_confidence": 0.97}),
    ("amount as a string", {**GOOD, "amount_usd": "50000"}),
    ("amount null", {**GOOD, "amount_usd": None}),
    ("confidence missing", {"amount_usd": 120.0, "currency": "USD"}),
    ("confidence null", {**GOOD, "vendor_confidence": None}),
    ("confidence as a string", {**GOOD, "vendor_confidence": "0.99"}),
]


def route_input(attributes: dict[str, Any]) -> PolicyInput:
    return PolicyInput(tenant="acme", caller="invoice-intake", capability="route-invoice",
                       capability_version="1", cost_estimate=0.0005, attributes=attributes)


async def test_example_route_rule_alone_fails_closed() -> None:
    # the Rego by itself, as OPA runs it when the mesh cannot see the schemas
    policy = RegoPolicy.from_path(EXAMPLE_POLICIES)
    good = await policy.decide("invoices/route", route_input(GOOD))
    assert good.allow and not good.obligations.require_human
    over = await policy.decide("invoices/route", route_input({**GOOD, "amount_usd": 50000}))
    assert over.allow and over.obligations.require_human
    for what, attributes in MALFORMED:
        decision = await policy.decide("invoices/route", route_input(attributes))
        assert not decision.allow or decision.obligations.require_human, what
    euros = await policy.decide("invoices/route", route_input({**GOOD, "currency": "XYZ"}))
    assert not euros.allow and euros.reason_code == "currency_not_accepted"


def test_example_policies_declare_every_input() -> None:
    schemas = RegoPolicy.from_path(EXAMPLE_POLICIES).input_schemas
    assert not schemas.missing
    assert set(schemas.validators) == {"mesh.default", "invoices.extract", "invoices.match",
                                       "invoices.route", "invoices.brief"}


def example_mesh(tmp_path: Path, mismatch: str) -> Mesh:
    folder = tmp_path / "policies"
    shutil.copytree(EXAMPLE_POLICIES, folder)
    doc = {"state_dir": str(tmp_path / "state"), "tenants": {"acme": {}},
           "policy": {"default": "mesh/default", "mode": "deny-by-default",
                      "on_schema_mismatch": mismatch, "require_schema": True}}
    return Mesh(config_from_mapping(doc), capabilities=[ROUTE],
                adapters={"policy": RegoPolicy.from_path(folder)})


REQUEST = {"invoice_id": "inv-1", "vendor_id": "v1", "invoice_number": "1", "currency": "USD",
           "total": 120.0, "amount_usd": 120.0}


@pytest.mark.parametrize("mismatch", ["deny", "review"])
def test_example_route_never_skips_review_on_malformed_input(tmp_path: Path,
                                                             mismatch: str) -> None:
    with example_mesh(tmp_path, mismatch) as mesh:
        good = mesh.invoke("route-invoice", REQUEST, tenant="acme", caller="intake",
                           attributes=GOOD)
        assert good.record.outcome == "ok"  # well-formed and small: approved automatically
        for what, attributes in MALFORMED:
            if mismatch == "deny":
                with pytest.raises(PolicyDenied) as info:
                    mesh.invoke("route-invoice", REQUEST, tenant="acme", caller="intake",
                                attributes=attributes)
                assert info.value.reason_code == "input_schema_mismatch", what
            else:
                result = mesh.invoke("route-invoice", REQUEST, tenant="acme", caller="intake",
                                     attributes=attributes)
                assert result.needs_review, what
    recs = records(tmp_path)
    assert all(r["policy"]["checks"][0]["path"] == "mesh/default" for r in recs)
    assert all(r["policy"]["checks"][-1]["schema"] == "invalid" for r in recs[1:])
