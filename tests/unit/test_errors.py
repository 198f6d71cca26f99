import pytest

import aios_mesh
from aios_mesh import errors


def test_every_error_is_a_mesh_error_and_exported() -> None:
    names = [n for n in errors.__all__ if n != "MeshError"]
    for name in names:
        cls = getattr(errors, name)
        assert issubclass(cls, errors.MeshError)
        assert getattr(aios_mesh, name) is cls


@pytest.mark.parametrize(("cls", "retryable"), [
    (errors.BackendUnavailable, True), (errors.BackendTimeout, True),
    (errors.CircuitOpen, False), (errors.InvalidInput, False), (errors.PolicyDenied, False),
])
def test_retryable_flags(cls: type[errors.MeshError], retryable: bool) -> None:
    assert cls.retryable is retryable


def test_message_carries_hint_and_dict_is_json_safe() -> None:
    exc = errors.ConfigError("bad url", hint="write scheme://")
    assert "write scheme://" in str(exc)
    assert exc.to_dict() == {"type": "ConfigError", "code": "config_error",
                             "message": "bad url", "retryable": False}


def test_policy_denied_keeps_reason() -> None:
    exc = errors.PolicyDenied("denied", reason="amount over limit", policy="mesh/inv")
    assert exc.reason == "amount over limit"
    assert exc.policy == "mesh/inv"
