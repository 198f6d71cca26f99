from pathlib import Path

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


def test_feature_not_supported_keeps_the_old_code() -> None:
    # renamed from CapabilityNotSupported: the code (what records and clients match on) is kept
    exc = errors.FeatureNotSupported("cannot stream", hint="use invoke()")
    assert exc.to_dict() == {"type": "FeatureNotSupported", "code": "capability_not_supported",
                             "message": "cannot stream", "retryable": False}


@pytest.mark.parametrize("module", [errors, aios_mesh], ids=["errors", "aios_mesh"])
def test_the_deprecated_name_warns_on_every_use_and_is_the_same_class(module: object) -> None:
    for _ in range(2):  # warns every time: the lazy table must not cache it
        with pytest.warns(DeprecationWarning, match="use .*FeatureNotSupported") as caught:
            old = module.CapabilityNotSupported  # type: ignore[attr-defined]
        assert caught[0].filename == __file__  # the warning points at the caller
        assert old is errors.FeatureNotSupported
    assert isinstance(errors.FeatureNotSupported("x"), old)
    assert "CapabilityNotSupported" not in module.__all__  # type: ignore[attr-defined]


def test_the_deprecated_name_still_imports_and_catches() -> None:
    with pytest.warns(DeprecationWarning, match="CapabilityNotSupported is deprecated"):
        from aios_mesh.errors import CapabilityNotSupported
    with pytest.raises(CapabilityNotSupported):
        raise errors.FeatureNotSupported("no streaming")


def test_unknown_names_are_still_attribute_errors() -> None:
    with pytest.raises(AttributeError, match="NoSuchError"):
        errors.NoSuchError  # type: ignore[attr-defined]  # noqa: B018
    with pytest.raises(AttributeError, match="NoSuchError"):
        aios_mesh.NoSuchError  # type: ignore[attr-defined]  # noqa: B018


def test_the_error_tree_docs_show_the_new_name() -> None:
    docs = Path(__file__).resolve().parents[2] / "docs"
    for tree in (errors.__doc__ or "", (docs / "concepts.md").read_text()):
        assert "├── FeatureNotSupported " in tree
        assert "── CapabilityNotSupported" not in tree
    for page in docs.rglob("*.md"):  # the old name only where the rename is explained
        if page.parent.name == "dev":
            continue
        for line in page.read_text().splitlines():
            assert "CapabilityNotSupported" not in line or "was called" in line, (page, line)
