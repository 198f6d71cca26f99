from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from aios_mesh.config import MeshConfig, config_from_mapping, load_config
from aios_mesh.errors import ConfigError


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "aios-mesh.toml"
    path.write_text(text)
    return path


def test_full_config_loads_and_paths_resolve(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, """
state_dir = "state"
max_payload_bytes = 2048
[tenants.acme]
quota = { calls = 10, cost = 1.5 }
[tenants.acme.capabilities.classify-ticket]
rate_per_s = 5
burst = 5
[backends]
serving = "triton+grpc://127.0.0.1:8001"
[retry]
max_attempts = 2
"""))
    assert cfg.state_path == tmp_path / "state"
    assert cfg.tenants["acme"].quota is not None
    assert cfg.tenants["acme"].quota.to_limits().calls == 10
    assert cfg.backend_url("serving") == ("triton+grpc://127.0.0.1:8001", "config")
    assert cfg.retry.max_attempts == 2


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.toml")


def test_malformed_toml_names_the_line(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"not valid TOML.*line 2"):
        load_config(write(tmp_path, "a = 1\nb = = 2\n"))


@pytest.mark.parametrize(("text", "where"), [
    ("unknown_key = 1", "unknown_key"),
    ("max_payload_bytes = -1", "max_payload_bytes"),
    ("[backends]\nserving = 'nonsense'", "backends.serving"),
    ("[retry]\nmax_attempts = 0", "retry.max_attempts"),
    ("tenants = {}", "tenants"),
])
def test_invalid_values_say_where(tmp_path: Path, text: str, where: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text))
    assert where in str(info.value)
    assert info.value.hint and "doctor" in info.value.hint


def test_default_config_is_valid() -> None:
    cfg = MeshConfig()
    assert list(cfg.tenants) == ["default"]


_values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False)
                       | st.text(max_size=10),
                       lambda inner: st.lists(inner, max_size=3)
                       | st.dictionaries(st.text(max_size=8), inner, max_size=3), max_leaves=8)


@given(st.dictionaries(st.sampled_from(["state_dir", "max_payload_bytes", "tenants",
                                        "backends", "retry", "breaker", "cache", "bogus"]),
                       _values, max_size=4))
def test_any_document_either_validates_or_raises_config_error(doc: dict[str, object]) -> None:
    try:
        config_from_mapping(doc)
    except ConfigError as exc:
        assert exc.message.startswith("invalid configuration")  # noqa: PT017
