"""Input validation: decode, size-check and schema-check the payload."""

from __future__ import annotations

import hashlib
from typing import Any

import orjson
from pydantic import BaseModel, ValidationError

from aios_mesh.errors import InvalidInput, PayloadTooLarge
from aios_mesh.pipeline.call import Call
from aios_mesh.pipeline.runner import StepBase

__all__ = ["ValidateInput", "digest", "validation_message"]


def digest(doc: Any) -> str:
    """sha256 of the canonical JSON (sorted keys): records name inputs without holding them."""
    return hashlib.sha256(orjson.dumps(doc, option=orjson.OPT_SORT_KEYS)).hexdigest()


def validation_message(exc: ValidationError, limit: int = 5) -> str:
    parts = []
    for err in exc.errors()[:limit]:
        where = ".".join(str(p) for p in err["loc"]) or "(root)"
        parts.append(f"{where}: {err['msg']}")
    more = len(exc.errors()) - limit
    return "; ".join(parts) + (f"; and {more} more" if more > 0 else "")


class ValidateInput(StepBase):
    """Accepts a dict, a pydantic model of the input type, or JSON text/bytes."""

    name = "validate_input"

    def __init__(self, max_payload_bytes: int) -> None:
        self.max_payload_bytes = max_payload_bytes

    async def before(self, call: Call) -> None:
        spec = call.spec
        limit = spec.max_payload_bytes or self.max_payload_bytes
        raw = call.raw
        if isinstance(raw, str | bytes | bytearray):
            if len(raw) > limit:
                raise PayloadTooLarge(f"payload is {len(raw)} bytes, over the {limit}-byte limit",
                                      hint="send less, or raise max_payload_bytes in the config")
            try:
                raw = orjson.loads(raw)
            except orjson.JSONDecodeError as exc:
                raise InvalidInput(f"payload is not valid JSON: {exc}",
                                   hint=f"send a JSON object matching {spec.input.__name__}"
                                   ) from None
        if isinstance(raw, spec.input):
            model: BaseModel = raw
        else:
            if not isinstance(raw, dict):
                raise InvalidInput(f"payload must be a JSON object, got {type(raw).__name__}",
                                   hint=f"send fields of {spec.input.__name__}")
            try:
                model = spec.input.model_validate(raw)
            except ValidationError as exc:
                raise InvalidInput(f"payload does not match {spec.input.__name__}: "
                                   f"{validation_message(exc)}",
                                   hint=f"`aios-mesh capabilities --schema {spec.name}` shows "
                                        "the expected fields") from None
        payload = model.model_dump(mode="json")
        encoded = orjson.dumps(payload, option=orjson.OPT_SORT_KEYS)
        if len(encoded) > limit:
            raise PayloadTooLarge(f"payload is {len(encoded)} bytes, over the {limit}-byte "
                                  "limit", hint="send less, or raise max_payload_bytes")
        call.input = model
        call.payload = payload
        call.input_sha256 = hashlib.sha256(encoded).hexdigest()
