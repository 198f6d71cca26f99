"""Capability versions side by side (issue 19, item 1): ``x@1`` and ``x@2`` are served at
once, callers pin a major, the catalog and the gateway's OpenAPI document show both, a new
version that breaks its major's callers is refused, and a deprecated version says so in each
record and once in the log."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Literal, Optional

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from openapi_spec_validator import validate
from pydantic import BaseModel, ConfigDict, ValidationError, create_model
from typer.testing import CliRunner

from aios_mesh import Mesh
from aios_mesh.capabilities import CapabilitySpec
from aios_mesh.catalog import Catalog, declared
from aios_mesh.errors import ConfigError, UnknownCapability
from aios_mesh.gateway.identity import Principal
from aios_mesh.gateway.openapi import openapi_document
from aios_mesh.lifecycle.versions import IncompatibleVersion, breaking_changes


class Invoice(BaseModel):
    text: str


class FieldsV1(BaseModel):
    vendor: str
    total: float


class FieldsV2(BaseModel):
    vendor: str
    total: str  # retyped: a breaking change, so it needs a new major
    currency: str


def v1(invoice: Invoice) -> FieldsV1:
    return FieldsV1(vendor="ACME", total=12.5)


def v2(invoice: Invoice) -> FieldsV2:
    return FieldsV2(vendor="ACME", total="12.50", currency="EUR")


def spec(version: str, output: type[BaseModel] = FieldsV1, handler: Any = v1,
         input: type[BaseModel] = Invoice, **options: Any) -> CapabilitySpec:
    return CapabilitySpec(name="extract-fields", version=version, input=input, output=output,
                          handler=handler, **options)


def test_two_majors_are_callable_at_once_and_callers_pin_one(tmp_path: Path) -> None:
    with Mesh.local(tmp_path, capabilities=[spec("1"), spec("2", FieldsV2, v2)]) as mesh:
        old = mesh.invoke("extract-fields@1", {"text": "x"}, tenant="default")
        new = mesh.invoke("extract-fields@2", {"text": "x"}, tenant="default")
        newest = mesh.invoke("extract-fields", {"text": "x"}, tenant="default")
        exact = mesh.invoke("extract-fields@2", {"text": "x"}, tenant="default")
        assert old.output == FieldsV1(vendor="ACME", total=12.5)
        assert new.output == newest.output == exact.output == FieldsV2(
            vendor="ACME", total="12.50", currency="EUR")
        # the record names the capability and the version that answered, not the address
        assert (old.record.capability, old.record.capability_version) == ("extract-fields", "1")
        assert (new.record.capability, new.record.capability_version) == ("extract-fields", "2")
        assert [s.key for s in mesh.catalog] == ["extract-fields@1", "extract-fields@2"]
        assert mesh.capabilities["extract-fields"].version == "2"
        with pytest.raises(UnknownCapability) as missing:
            mesh.invoke("extract-fields@3", {"text": "x"}, tenant="default")
        assert "extract-fields@1, extract-fields@2" in (missing.value.hint or "")
        assert missing.value.record_id is not None  # a refused call is still recorded


def test_a_compatible_minor_replaces_its_major() -> None:
    class Richer(BaseModel):
        vendor: str
        total: float
        due: str | None = None  # a new output field: old callers ignore it

    class Lenient(BaseModel):
        text: str
        language: str = "en"  # a new optional input field: old callers need not send it

    catalog = Catalog([spec("1.0"), spec("2", FieldsV2, v2)])
    catalog.register(spec("1.1", Richer, input=Lenient))
    assert catalog.get("extract-fields@1").version == "1.1"
    assert catalog.get("extract-fields@1.1").version == "1.1"
    assert catalog.get("extract-fields").version == "2"
    with pytest.raises(UnknownCapability, match=r"no version '1\.0'"):
        catalog.get("extract-fields@1.0")  # replaced: the major serves 1.1 now
    assert len(catalog) == 2


class Closed(BaseModel):
    model_config = ConfigDict(extra="forbid")
    body: str


class WithCustomer(BaseModel):
    text: str
    customer: str


class Partial(BaseModel):
    vendor: str


class Nullable(BaseModel):
    vendor: str
    total: float | None


@pytest.mark.parametrize(("output", "input", "problem"), [
    (Partial, Invoice, "output field 'total' was removed"),
    (FieldsV2, Invoice, "output field 'total' changed type"),
    (Nullable, Invoice, "output field 'total' changed type"),
    (FieldsV1, WithCustomer, "input field 'customer' is newly required"),
    (FieldsV1, Closed, "input field 'text' was removed and unknown fields are refused"),
])
def test_a_version_that_breaks_its_majors_callers_is_refused(
        output: type[BaseModel], input: type[BaseModel], problem: str) -> None:
    catalog = Catalog([spec("1.0")])
    with pytest.raises(IncompatibleVersion) as refused:
        catalog.register(spec("1.1", output, input=input))
    assert problem in refused.value.message
    assert 'version = "2"' in (refused.value.hint or "")
    assert catalog.get("extract-fields@1").version == "1.0"  # the old one still serves
    catalog.register(spec("2", output, input=input))  # as a new major it is welcome
    assert [s.version for s in catalog.versions("extract-fields")] == ["1.0", "2"]


def test_a_deprecated_version_says_so_in_each_record_and_once_in_the_log(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    old = spec("1", deprecated="use extract-fields@2; served until 2027-06-30")
    with caplog.at_level(logging.WARNING, logger="aios_mesh.lifecycle"), \
            Mesh.local(tmp_path, capabilities=[old, spec("2", FieldsV2, v2)]) as mesh:
        first = mesh.invoke("extract-fields@1", {"text": "x"}, tenant="default")
        second = mesh.invoke("extract-fields@1", {"text": "y"}, tenant="default")
        current = mesh.invoke("extract-fields@2", {"text": "y"}, tenant="default")
        docs = [entry.record for entry in mesh.run_sync(mesh.ports.audit.read())]
    for result in (first, second):
        assert result.record.deprecated == "use extract-fields@2; served until 2027-06-30"
    assert current.record.deprecated is None
    assert [d["capability"].get("deprecated") for d in docs] == [
        old.deprecated, old.deprecated, None]
    assert "deprecated" not in docs[2]["capability"]  # a current version's record is as before
    warned = [r for r in caplog.records if "deprecated" in r.getMessage()]
    assert len(warned) == 1 and "extract-fields@1" in warned[0].getMessage()


def test_config_declares_majors_side_by_side_but_not_one_major_twice() -> None:
    both = declared([spec("1")], [spec("2", FieldsV2, v2)])
    assert [s.key for s in both] == ["extract-fields@1", "extract-fields@2"]
    with pytest.raises(ConfigError, match="declared in the config file and in code"):
        declared([spec("1.0")], [spec("1.1")])


@pytest.mark.parametrize("bad", ["v2", "2.x", "1.2.3.4", "", "01", -1, True])
def test_versions_are_numbers(bad: Any) -> None:
    with pytest.raises(ValidationError, match="MAJOR"):
        spec(bad)


def test_a_toml_integer_version_is_text() -> None:
    assert spec(2).version == "2"  # type: ignore[arg-type]
    assert spec("2.10").major == "2"


def test_the_gateway_shows_both_and_scopes_may_name_a_major(tmp_path: Path) -> None:
    specs = [spec("1"), spec("2", FieldsV2, v2)]
    doc = openapi_document(specs)
    validate(doc)
    assert "/v1/capabilities/extract-fields/invoke" in doc["paths"]  # the newest
    assert "/v1/capabilities/extract-fields@1/invoke" in doc["paths"]  # the older major
    ops = {op["post"]["operationId"] for path, op in doc["paths"].items()
           if path.endswith("/invoke")}
    assert {"invoke_extract_fields", "invoke_extract_fields_v1"} <= ops
    whole = Principal(tenant="acme", caller="svc", scopes=frozenset({"extract-fields"}))
    one = Principal(tenant="acme", caller="svc", scopes=frozenset({"extract-fields@1"}))
    assert all(whole.may_call(a) for a in ("extract-fields", "extract-fields@2",
                                           "extract-fields@1.3"))
    assert one.may_call("extract-fields@1") and one.may_call("extract-fields@1.3")
    assert not one.may_call("extract-fields@2") and not one.may_call("extract-fields")


def test_the_cli_lists_every_version(tmp_path: Path) -> None:
    from aios_mesh.cli import app

    config = tmp_path / "mesh.toml"
    config.write_text(f"""
state_dir = "{tmp_path / 'state'}"
[[capabilities]]
name = "extract-fields"
version = "1"
input = "{__name__}:Invoice"
output = "{__name__}:FieldsV1"
handler = "{__name__}:v1"
deprecated = "use @2"
[[capabilities]]
name = "extract-fields"
version = "2"
input = "{__name__}:Invoice"
output = "{__name__}:FieldsV2"
handler = "{__name__}:v2"
""")
    out = CliRunner().invoke(app, ["capabilities", "--config", str(config), "--json"])
    assert out.exit_code == 0, out.output
    assert '"version":"1"' in out.output.replace(" ", "")
    assert '"deprecated":"use@2"' in out.output.replace(" ", "")
    assert '"version":"2"' in out.output.replace(" ", "")


# ----------------------------------------------------------------- compatibility, by property
_TYPES: list[Any] = [str, int, float, bool, list[str], dict[str, int], Optional[str],  # noqa: UP045
                     Literal["a", "b"]]
_names = st.lists(st.from_regex(r"[a-z][a-z0-9_]{0,8}", fullmatch=True), min_size=1,
                  max_size=5, unique=True)


@st.composite
def schemas(draw: st.DrawFn) -> dict[str, Any]:
    return {n: draw(st.sampled_from(_TYPES)) for n in draw(_names)}


def _model(title: str, fields: dict[str, Any], optional: frozenset[str] = frozenset()
           ) -> type[BaseModel]:
    made: type[BaseModel] = create_model(title, **{
        n: (t, None if n in optional else ...) for n, t in fields.items()})
    return made


@settings(max_examples=40, deadline=None)
@given(schemas(), schemas(), st.data())
def test_only_additive_changes_are_compatible(inputs: dict[str, Any], outputs: dict[str, Any],
                                              data: st.DataObject) -> None:
    old = CapabilitySpec(name="c", version="1.0", input=_model("In", inputs),
                         output=_model("Out", outputs), model="m@a")
    assert breaking_changes(old, old) == []
    # a new optional input and a new output field, under fresh model classes: compatible
    grown_in = _model("In", {**inputs, "zz_extra": int}, frozenset({"zz_extra"}))
    grown_out = _model("Out", {**outputs, "zz_more": str})
    grown = old.model_copy(update={"version": "1.1", "input": grown_in, "output": grown_out})
    assert breaking_changes(old, grown) == []
    # dropping any output field is not
    gone = data.draw(st.sampled_from(sorted(outputs)))
    shrunk = old.model_copy(update={"output": _model(
        "Out", {n: t for n, t in outputs.items() if n != gone} or {"zz_other": int})})
    assert f"output field {gone!r} was removed" in breaking_changes(old, shrunk)
