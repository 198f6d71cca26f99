"""The gateway's OpenAPI 3.1 document is valid for any set of capabilities, and carries each
capability's own input and output schema (models with equal names stay apart)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

from hypothesis import given, settings
from hypothesis import strategies as st
from openapi_spec_validator import validate
from pydantic import BaseModel, create_model

from aios_mesh.capabilities import CapabilitySpec
from aios_mesh.gateway.openapi import describe, openapi_document

_TYPES: list[Any] = [str, int, float, bool, list[str], dict[str, int], Optional[str]]  # noqa: UP045
_field = st.from_regex(r"[a-z][a-z0-9_]{0,11}", fullmatch=True)
_cap = st.from_regex(r"[a-z][a-z0-9]{0,8}(-[a-z0-9]{1,6}){0,2}", fullmatch=True)


@st.composite
def models(draw: st.DrawFn, title: str) -> type[BaseModel]:
    names = draw(st.lists(_field, min_size=1, max_size=5, unique=True))
    fields: dict[str, Any] = {n: (draw(st.sampled_from(_TYPES)), ...) for n in names}
    if draw(st.booleans()):  # a nested model, shared under components/schemas
        inner = create_model("Inner", value=(int, ...))
        fields["nested"] = (inner, ...)
    model: type[BaseModel] = create_model(title, **fields)
    return model


@st.composite
def specs(draw: st.DrawFn) -> list[CapabilitySpec]:
    names = draw(st.lists(_cap, min_size=1, max_size=4, unique=True))
    out = []
    for n in names:
        served = draw(st.booleans())  # by a model (may stream) or by a function (never does)
        out.append(CapabilitySpec(name=n, input=draw(models("Payload")),
                                  output=draw(models("Answer")),
                                  model=f"{n}-model@champion" if served else None,
                                  handler=None if served else _handler))
    return out


def _handler(payload: Any) -> Any:
    return payload


def _schema(doc: dict[str, Any], ref_or_schema: dict[str, Any]) -> dict[str, Any]:
    ref = ref_or_schema.get("$ref")
    if ref is None:
        return ref_or_schema
    found: dict[str, Any] = doc["components"]["schemas"][ref.rsplit("/", 1)[1]]
    return found


@settings(max_examples=25, deadline=None)
@given(specs())
def test_the_document_is_valid_openapi_with_every_schema(chosen: list[CapabilitySpec]) -> None:
    doc = openapi_document(chosen, server_url="http://127.0.0.1:8080")
    validate(doc)
    for spec in chosen:
        post = doc["paths"][f"/v1/capabilities/{spec.name}/invoke"]["post"]
        body = _schema(doc, post["requestBody"]["content"]["application/json"]["schema"])
        assert set(body["properties"]) == set(spec.input.model_fields)
        answer = post["responses"]["200"]["content"]["application/json"]["schema"]
        output = _schema(doc, answer["properties"]["output"]["anyOf"][0])
        assert set(output["properties"]) == set(spec.output.model_fields)
        streams = f"/v1/capabilities/{spec.name}/stream" in doc["paths"]
        assert streams == (spec.model is not None) == describe(spec)["streams"]


def test_models_with_the_same_name_stay_apart() -> None:
    first = create_model("Ticket", text=(str, ...))
    second = create_model("Ticket", amount=(float, ...))
    out = create_model("Out", ok=(bool, ...))
    doc = openapi_document([CapabilitySpec(name="a", input=first, output=out, handler=_handler),
                            CapabilitySpec(name="b", input=second, output=out,
                                           handler=_handler)])
    validate(doc)
    a = _schema(doc, doc["paths"]["/v1/capabilities/a/invoke"]["post"]["requestBody"]
                ["content"]["application/json"]["schema"])
    b = _schema(doc, doc["paths"]["/v1/capabilities/b/invoke"]["post"]["requestBody"]
                ["content"]["application/json"]["schema"])
    assert set(a["properties"]) == {"text"} and set(b["properties"]) == {"amount"}


def test_every_v1_route_the_gateway_serves_is_in_the_document(tmp_path: Path) -> None:
    """Nothing the gateway answers under /v1 is missing from its OpenAPI document."""
    from starlette.routing import Route

    from aios_mesh import Mesh
    from aios_mesh.gateway import Principal, create_app

    class Nobody:
        async def authenticate(self, request: object) -> Principal:
            raise AssertionError("not called")

    spec = CapabilitySpec(name="triage", input=create_model("In", text=(str, ...)),
                          output=create_model("Out", label=(str, ...)), model="m@champion")
    with Mesh.local(tmp_path, capabilities=[spec]) as mesh:
        app = create_app(mesh, authenticator=Nobody(), close_mesh=False)
        served = {(r.path, m.lower()) for r in app.routes if isinstance(r, Route)
                  and r.path.startswith("/v1") for m in (r.methods or ()) if m != "HEAD"}
    doc = openapi_document([spec])
    documented = {(path.replace("/triage/", "/{name}/"), method)
                  for path, item in doc["paths"].items() for method in item}
    assert served - documented == set()
