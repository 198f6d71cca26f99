import pytest
from pydantic import BaseModel, ValidationError

from aios_mesh.capabilities import SLO, CapabilitySpec, Fallback, Price, capability
from aios_mesh.errors import ConfigError, InvalidInput
from aios_mesh.ports.serving import Usage


class Ticket(BaseModel):
    text: str


class Triage(BaseModel):
    queue: str
    confidence: float = 1.0


@capability("classify-ticket", version="2", model="ticket-clf@champion", policy="mesh/tickets",
            slo=SLO(timeout_s=2, p95_ms=50), fallbacks=("model:ticket-clf@previous", "human"),
            price=Price(per_call=0.001, per_1k_tokens=0.01), review_threshold=0.6)
def classify_ticket(payload: Ticket) -> Triage:
    """Route a support ticket to a queue."""
    ...


def rules(payload: Ticket) -> Triage:
    return Triage(queue="billing" if "invoice" in payload.text else "general")


def test_decorator_and_config_give_the_same_spec() -> None:
    from_config = CapabilitySpec.from_config({
        "name": "classify-ticket", "version": "2",
        "description": "Route a support ticket to a queue.",
        "input": f"{__name__}:Ticket", "output": f"{__name__}:Triage",
        "model": "ticket-clf@champion", "policy": "mesh/tickets",
        "slo": {"timeout_s": 2, "p95_ms": 50},
        "fallbacks": ["model:ticket-clf@previous", "human"],
        "price": {"per_call": 0.001, "per_1k_tokens": 0.01}, "review_threshold": 0.6})
    assert from_config == classify_ticket
    assert classify_ticket.handler is None  # a stub body is not an implementation
    assert classify_ticket.key == "classify-ticket@2"


def test_function_body_becomes_the_handler() -> None:
    spec = capability("route-ticket")(rules)
    assert spec.handler is rules
    assert spec.model is None


def test_fallback_strings() -> None:
    assert Fallback.model_validate("human") == Fallback(kind="human")
    assert str(Fallback.model_validate("function:a.b:c")) == "function:a.b:c"
    with pytest.raises(ValidationError):
        Fallback.model_validate("model:")
    with pytest.raises(ValidationError):
        Fallback.model_validate("teleport:x")


def test_price_cost() -> None:
    price = Price(per_call=0.5, per_1k_tokens=2.0, per_gpu_second=10.0)
    assert price.cost(Usage(calls=2, tokens=500, gpu_seconds=0.1)) == pytest.approx(3.0)


@pytest.mark.parametrize("name", ["Classify", "classify_ticket", "-x", "a--b", ""])
def test_names_must_be_kebab_case(name: str) -> None:
    with pytest.raises(ValidationError, match="kebab-case"):
        CapabilitySpec(name=name, input=Ticket, output=Triage, model="m@a")


def test_needs_model_or_handler() -> None:
    with pytest.raises(ValidationError, match="needs a 'model'"):
        CapabilitySpec(name="x", input=Ticket, output=Triage)


def test_bad_model_spec() -> None:
    with pytest.raises(InvalidInput):
        CapabilitySpec(name="x", input=Ticket, output=Triage, model="bad spec!")


def test_untyped_function_is_a_config_error() -> None:
    def untyped(payload):  # type: ignore[no-untyped-def]
        return payload

    with pytest.raises(ConfigError, match="typed function"):
        capability("x")(untyped)


def test_import_paths_in_config_fail_clearly() -> None:
    with pytest.raises(ConfigError, match="cannot import"):
        CapabilitySpec.from_config({"name": "x", "input": "no.such.module:X",
                                    "output": f"{__name__}:Triage", "model": "m@a"})
    with pytest.raises(ConfigError, match="has no"):
        CapabilitySpec.from_config({"name": "x", "input": f"{__name__}:Nope",
                                    "output": f"{__name__}:Triage", "model": "m@a"})
