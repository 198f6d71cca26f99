from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from aios_mesh.backends import (
    BUILTIN_ADAPTERS,
    DEFAULT_URLS,
    PORTS,
    adapter_class,
    known_schemes,
    load_adapter,
    parse_url,
)
from aios_mesh.config import MeshConfig
from aios_mesh.errors import ConfigError


def test_parse_server_url_with_options_and_secret() -> None:
    url = parse_url("triton+grpc://user:s3cret@127.0.0.1:8001?timeout=2&external=true")
    assert (url.scheme, url.driver, url.host, url.port) == ("triton+grpc", "grpc",
                                                           "127.0.0.1", 8001)
    assert url.options == {"timeout": "2", "external": "true"}
    assert url.flag("external") is True
    assert "s3cret" not in url.redacted() and "s3cret" not in repr(url)


def test_relative_and_absolute_paths(tmp_path: Path) -> None:
    assert parse_url("rego:///policies").resolve_path(tmp_path) == tmp_path / "policies"
    assert parse_url("jsonl:////var/log/a.jsonl").resolve_path(tmp_path) == \
        Path("/var/log/a.jsonl")


@pytest.mark.parametrize("raw", ["", "no-scheme", "qdrant://host:notaport", "://x"])
def test_malformed_urls_raise_config_error(raw: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_url(raw)
    assert info.value.hint


@given(st.text(max_size=60))
def test_parse_url_never_raises_anything_but_config_error(raw: str) -> None:
    try:
        parse_url(raw)
    except ConfigError:
        pass


def test_unknown_scheme_suggests_the_close_one() -> None:
    with pytest.raises(ConfigError) as info:
        adapter_class("serving", "trition+grpc")
    assert "did you mean 'triton+grpc'" in str(info.value)


def test_missing_backend_names_the_extra_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    from aios_mesh.backends import AdapterTarget

    monkeypatch.setitem(BUILTIN_ADAPTERS["serving"], "vllm+http",  # type: ignore[index]
                        AdapterTarget("aios_mesh_not_installed:Serving", "vllm"))
    with pytest.raises(ConfigError, match=r'pip install "aios-mesh\[vllm\]"'):
        adapter_class("serving", "vllm+http")


def test_every_default_url_has_a_builtin_adapter() -> None:
    assert set(DEFAULT_URLS) == set(PORTS)
    for port, url in DEFAULT_URLS.items():
        assert parse_url(url).scheme in BUILTIN_ADAPTERS[port]
        assert parse_url(url).scheme in known_schemes(port)


def test_load_adapter_builds_the_embedded_quota(tmp_path: Path) -> None:
    adapter = load_adapter("quota", "memory://", base_dir=tmp_path)
    assert type(adapter).__name__ == "InProcessQuota"


def test_precedence_argument_env_config_default(monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = MeshConfig(backends={"policy": "opa+http://127.0.0.1:8181"})  # type: ignore[arg-type]
    assert cfg.backend_url("quota") == (DEFAULT_URLS["quota"], "default")
    assert cfg.backend_url("policy") == ("opa+http://127.0.0.1:8181", "config")
    monkeypatch.setenv("AIOS_MESH_POLICY_URL", "rego:///other")
    assert cfg.backend_url("policy") == ("rego:///other", "environment")
    assert cfg.backend_url("policy", "rego:///arg") == ("rego:///arg", "argument")
    monkeypatch.setenv("AIOS_MESH_POLICY_URL", "not a url")
    with pytest.raises(ConfigError, match="AIOS_MESH_POLICY_URL"):
        cfg.backend_url("policy")
