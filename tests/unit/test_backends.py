from pathlib import Path
from urllib.parse import quote, urlencode

import pytest
from hypothesis import given
from hypothesis import strategies as st

from aios_mesh.backends import (
    BUILTIN_ADAPTERS,
    DEFAULT_URLS,
    MASK,
    PORTS,
    SECOND_UNITS,
    SECRET_OPTIONS,
    BackendURL,
    adapter_class,
    is_secret_option,
    known_schemes,
    load_adapter,
    parse_url,
    redact_url,
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


# --------------------------------------------------------------------------- typed options

_NAME = st.sampled_from(["timeout", "max_attempts", "pool_size", "retry_delay", "dim"])


def _url_with(name: str, text: str) -> BackendURL:
    return parse_url(f"kafka://127.0.0.1:9092?{urlencode({name: text})}")


@given(_NAME, st.integers(min_value=-(2**70), max_value=2**70))
def test_int_option_reads_every_integer(name: str, number: int) -> None:
    assert _url_with(name, str(number)).int_option(name) == number
    assert parse_url("kafka://h").with_options({name: number}).int_option(name) == number


@given(st.integers(-1000, 1000), st.integers(-1000, 1000), st.integers(-1000, 1000))
def test_int_option_bounds_are_inclusive(number: int, lo: int, hi: int) -> None:
    url = _url_with("n", str(number))
    if lo <= number <= hi:
        assert url.int_option("n", min=lo, max=hi) == number
    else:
        with pytest.raises(ConfigError, match=r"minimum|maximum") as info:
            url.int_option("n", min=lo, max=hi)
        assert "option n=" in info.value.message and info.value.hint


@given(_NAME, st.text(max_size=20))
def test_typed_options_raise_only_config_errors_that_name_option_and_url(name: str,
                                                                        text: str) -> None:
    url = _url_with(name, text)
    errors: list[ConfigError] = []
    for read in (url.int_option, url.float_option, url.seconds_option, url.flag):
        try:
            read(name)
        except ConfigError as exc:
            errors.append(exc)
    for error in errors:
        assert f"option {name}=" in error.message
        assert url.redacted() in error.message
        assert error.hint and error.hint.startswith(f"write {name}=")


@given(st.floats(allow_nan=False, allow_infinity=False))
def test_float_option_round_trips_finite_floats(number: float) -> None:
    assert _url_with("x", repr(number)).float_option("x") == number


@pytest.mark.parametrize("text", ["nan", "NaN", "inf", "-inf", "1e999", "Infinity"])
def test_float_and_seconds_refuse_nan_and_infinity(text: str) -> None:
    with pytest.raises(ConfigError, match="finite"):
        _url_with("x", text).float_option("x")
    with pytest.raises(ConfigError):
        _url_with("x", text).seconds_option("x")


@given(st.floats(min_value=0, max_value=1e6, allow_nan=False),
       st.sampled_from(sorted(SECOND_UNITS)), st.sampled_from(["", " "]))
def test_seconds_option_reads_units(number: float, unit: str, space: str) -> None:
    got = _url_with("t", f"{number!r}{space}{unit}").seconds_option("t")
    assert got == pytest.approx(number * SECOND_UNITS[unit])
    assert _url_with("t", repr(number)).seconds_option("t") == number  # bare = seconds


@pytest.mark.parametrize(("text", "seconds"), [
    ("2", 2.0), ("2.5", 2.5), ("500ms", 0.5), ("2s", 2.0), ("1m", 60.0), ("1h", 3600.0),
    ("1.5M", 90.0), (".25s", 0.25), ("0", 0.0)])
def test_seconds_option_examples(text: str, seconds: float) -> None:
    assert _url_with("timeout", text).seconds_option("timeout") == seconds


@pytest.mark.parametrize("text", ["-1", "-0.5s", "2 days", "1d", "s", "2ss", "1:00", "true"])
def test_seconds_option_refuses_negative_and_unknown_units(text: str) -> None:
    with pytest.raises(ConfigError) as info:
        _url_with("timeout", text).seconds_option("timeout", 5.0)
    assert "timeout=" in info.value.message
    assert "minimum" in info.value.message or "500ms" in (info.value.hint or "")


def test_seconds_option_takes_numbers_and_timedeltas_as_keywords() -> None:
    from datetime import timedelta

    url = parse_url("nats://h")
    assert url.with_options({"t": timedelta(milliseconds=250)}).seconds_option("t") == 0.25
    assert url.with_options({"t": 3}).seconds_option("t") == 3.0
    with pytest.raises(ConfigError, match=r"minimum 0\.05"):
        url.with_options({"t": 0.01}).seconds_option("t", 1.0, min=0.05)


@given(st.sampled_from(["1", "true", "yes", "on", "0", "false", "no", "off"]),
       st.lists(st.booleans(), min_size=5, max_size=5))
def test_flag_reads_every_spelling_in_any_case(word: str, upper: list[bool]) -> None:
    spelled = "".join(c.upper() if u else c for c, u in zip(word, upper, strict=False))
    assert _url_with("tls", spelled).flag("tls") is (word in {"1", "true", "yes", "on"})


def test_flag_and_keyword_precedence() -> None:
    url = parse_url("opa+http://h:8181?tls=false&timeout=3&n=")
    assert url.flag("tls", True) is False
    assert url.with_options({"tls": True}).flag("tls") is True
    assert url.with_options({"timeout": None}).seconds_option("timeout") == 3.0  # None: unset
    assert url.int_option("n", 7) == 7  # an empty value is not given
    with pytest.raises(ConfigError, match="not a boolean"):
        _url_with("tls", "maybe").flag("tls")
    with pytest.raises(ConfigError, match="not an integer"):
        parse_url("k://h").with_options({"n": True}).int_option("n")
    with pytest.raises(ConfigError, match="not an integer"):
        parse_url("k://h").with_options({"n": 2.5}).int_option("n")


def test_choice_option_and_unknown_options() -> None:
    url = parse_url("nats://h?start=Latest&storag=file")
    assert url.choice_option("start", ("earliest", "latest"), "earliest") == "latest"
    with pytest.raises(ConfigError, match="did you mean 'storage'"):
        url.check_options(["start", "storage"])
    with pytest.raises(ConfigError) as info:
        _url_with("start", "eraliest").choice_option("start", ("earliest", "latest"), "x")
    assert info.value.hint and "did you mean 'earliest'" in info.value.hint
    parse_url("nats://h?start=x").with_options({"stream": "S"}).check_options(
        ["start", "stream"])
    with pytest.raises(ConfigError, match="unknown options 'a', 'b'"):
        parse_url("k://h?a=1").with_options({"b": 2}).check_options([])


def test_without_options_keeps_the_rest_of_the_url() -> None:
    url = parse_url("postgresql://u:p@h:5432/db?table=t&sslmode=require&pool_size=2")
    assert url.without_options({"table", "pool_size"}) == \
        "postgresql://u:p@h:5432/db?sslmode=require"


def test_secret_option_values_never_appear_in_errors() -> None:
    with pytest.raises(ConfigError) as info:
        _url_with("api_key", "hunter2").int_option("api_key")
    assert "hunter2" not in str(info.value)


# --------------------------------------------------------------------------- masking

_PLAIN = st.text("abcdefghijklmnopqrstuvwxyz0123456789", min_size=1, max_size=8)
#: Every secret value starts with "Q9Z", which nothing else in the URLs below can spell (and
#: percent-encoding keeps), so a "Q9Z" in a masked URL is a leaked secret.
_LEAK = "Q9Z"
_SECRET = st.text("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 !$&'()*+,;=:@/?#[]%\"é",
                  max_size=12).map(lambda s: _LEAK + s)
_SECRET_NAME = st.sampled_from(sorted(SECRET_OPTIONS)).flatmap(
    lambda n: st.sampled_from([n, n.upper(), f"x_{n}", n.replace("_", "-")]))


@given(scheme=st.sampled_from(["redis", "postgresql", "qdrant", "opa+http", "nats"]),
       user=st.one_of(st.none(), _PLAIN), password=st.one_of(st.none(), _SECRET),
       host=_PLAIN, port=st.one_of(st.none(), st.integers(1, 65535)), path=_PLAIN,
       plain=st.dictionaries(_PLAIN.filter(lambda n: not is_secret_option(n)), _PLAIN,
                             max_size=3),
       secrets=st.dictionaries(_SECRET_NAME, _SECRET, max_size=3),
       fragment=st.booleans())
def test_no_secret_survives_masking(scheme: str, user: str | None, password: str | None,
                                    host: str, port: int | None, path: str,
                                    plain: dict[str, str], secrets: dict[str, str],
                                    fragment: bool) -> None:
    auth = ""
    if user is not None or password is not None:
        auth = quote(user or "", safe="")
        auth += f":{quote(password, safe='')}" if password is not None else ""
        auth += "@"
    query = urlencode({**plain, **secrets})
    raw = f"{scheme}://{auth}{host}{f':{port}' if port else ''}/{path}" + (
        f"#{query}" if fragment else f"?{query}" if query else "")
    masked = redact_url(raw)
    assert _LEAK not in masked, masked
    assert masked == parse_url(raw).redacted() and masked in repr(parse_url(raw))
    back = parse_url(masked)  # everything that is not a secret is still there
    assert (back.scheme, back.host, back.port, back.path, back.username) == \
        (scheme, host, port, f"/{path}", user or None)
    if not fragment:
        assert {k: v for k, v in back.options.items() if not is_secret_option(k)} == plain
        assert all(back.options[k] == MASK for k in secrets)


@given(st.text(max_size=80))
def test_redact_url_never_raises(raw: str) -> None:
    assert isinstance(redact_url(raw), str)


@pytest.mark.parametrize(("name", "secret"), [
    ("password", True), ("api_key", True), ("apikey", True), ("token", True),
    ("NATS_TOKEN", True), ("x-api-key", True), ("aws_secret_access_key", True),
    ("sslpassword", True), ("timeout", False), ("tokens", False), ("max_tokens", False),
    ("tokenize", False), ("keyspace", False), ("partition_key", False)])
def test_secret_option_names(name: str, secret: bool) -> None:
    assert is_secret_option(name) is secret


def test_malformed_url_errors_do_not_echo_a_password() -> None:
    with pytest.raises(ConfigError) as info:
        parse_url("redis://u:hunter2@h:notaport")
    assert "hunter2" not in str(info.value)


def test_config_repr_masks_backend_urls() -> None:
    cfg = MeshConfig(backends={  # type: ignore[arg-type]
        "quota": "redis://u:hunter2@127.0.0.1:6379/0",
        "serving_named": {"big": "triton+grpc://127.0.0.1:8001?api_key=hunter3"}})
    shown = repr(cfg) + str(cfg) + repr(cfg.backends)
    assert "hunter2" not in shown and "hunter3" not in shown
    assert "redis://u:***@127.0.0.1:6379/0" in shown
    assert cfg.backends.quota == "redis://u:hunter2@127.0.0.1:6379/0"  # the value is intact
