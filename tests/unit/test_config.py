import difflib
from pathlib import Path

import pytest
from hypothesis import given, settings
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


@settings(deadline=None)  # the first example reads the adapters' entry points (slow, once)
@given(st.dictionaries(st.sampled_from(["state_dir", "max_payload_bytes", "tenants",
                                        "backends", "retry", "breaker", "cache", "bogus"]),
                       _values, max_size=4))
def test_any_document_either_validates_or_raises_config_error(doc: dict[str, object]) -> None:
    try:
        config_from_mapping(doc)
    except ConfigError as exc:
        assert exc.message.startswith("invalid configuration")  # noqa: PT017


@pytest.mark.parametrize(("text", "key", "suggestion"), [
    ("[telemetri]\nlog = false\n", "telemetri", "telemetry"),
    ("[tenants.acme]\nquota = { cals = 3 }\n", "tenants.acme.quota.cals", "calls"),
    ("[retry]\nmax_attempt = 2\n", "retry.max_attempt", "max_attempts"),
    ("[backends]\nevent = 'sqlite:///e.db'\n", "backends.event", "events"),
    ("[[routes]]\ntopic = 'a'\ncapability = 'b'\ngrop = 'g'\n", "routes.0.grop", "group"),
])
def test_a_misspelled_key_names_the_key_the_file_and_the_closest(
        tmp_path: Path, text: str, key: str, suggestion: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert err.value.details["key"] == key
    assert err.value.details["suggestion"] == suggestion
    assert str(path) in err.value.message
    assert f"did you mean {suggestion!r}" in (err.value.hint or "")


def test_an_unknown_key_with_nothing_close_lists_the_valid_ones(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, "[breaker]\nzzz = 1\n"))
    assert "suggestion" not in err.value.details
    assert "failure_threshold, min_failing_tenants, reset_timeout_s" in (err.value.hint or "")


_KEYS = sorted(set(MeshConfig.model_fields) - {"base_dir"})


@given(st.sampled_from(_KEYS), st.integers(0, 30), st.sampled_from("xqz_"))
def test_a_one_letter_typo_of_a_top_level_key_is_suggested(key: str, at: int, letter: str
                                                           ) -> None:
    at %= len(key)
    typo = key[:at] + letter + key[at + 1:]
    if typo in _KEYS:
        return
    with pytest.raises(ConfigError) as err:
        config_from_mapping({typo: {}})
    assert err.value.details["key"] == typo
    assert err.value.details.get("suggestion") in (key, *difflib.get_close_matches(typo, _KEYS))


@pytest.mark.parametrize("port", ["serving", "registry", "retrieval", "policy", "events",
                                  "orchestrator", "lineage", "quota", "audit"])
def test_an_unknown_scheme_on_any_port_fails_at_load(tmp_path: Path, port: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, f"[backends]\n{port} = 'nope://127.0.0.1:1'\n"))
    assert f"backends.{port}" in err.value.message
    assert f"no {port} adapter for scheme 'nope'" in err.value.message


def test_a_misspelled_scheme_gets_the_closest(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="did you mean 'nats'"):
        load_config(write(tmp_path, "[backends]\nevents = 'nast://127.0.0.1:4222'\n"))


def test_an_unknown_scheme_in_the_environment_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIOS_MESH_EVENTS_URL", "kafak://127.0.0.1:9092")
    with pytest.raises(ConfigError, match="AIOS_MESH_EVENTS_URL") as err:
        MeshConfig().backend_url("events")
    assert "did you mean 'kafka'" in (err.value.hint or "")
