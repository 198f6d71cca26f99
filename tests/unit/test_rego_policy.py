"""The embedded Rego adapter: loading errors, regopy traps, the input document, threads."""

from __future__ import annotations

import asyncio
import hashlib
import math
import statistics
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from aios_mesh_regopy import RegoPolicy
from aios_mesh_regopy._bundle import hash_files, line_col, parse_package
from aios_mesh_regopy._engine import native_input, parse_error_text
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aios_mesh.backends import load_adapter, parse_url
from aios_mesh.errors import ConfigError, InvalidInput, InvalidOutput, MeshError, NotFound
from aios_mesh.ports.policy import Decision, PolicyInput
from aios_mesh.testing.conformance.policy import CONFORMANCE_BUNDLE, policy_input

ALLOW_ACME = 'package mesh.invoices\n\nimport rego.v1\n\nallow if input.tenant == "acme"\n'


def write(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return root


@pytest.fixture
def bundle(tmp_path: Path) -> Path:
    return write(tmp_path / "policies", {"mesh/invoices.rego": ALLOW_ACME})


# -- construction -------------------------------------------------------------------------


def test_from_url_relative_to_base_dir(bundle: Path) -> None:
    policy = RegoPolicy.from_url(parse_url("rego:///policies"), base_dir=bundle.parent)
    assert policy.folder == bundle
    assert policy.packages == ["mesh.invoices"]


def test_from_url_absolute(bundle: Path) -> None:
    policy = RegoPolicy.from_url(parse_url(f"rego:///{bundle}"), base_dir=Path("/nowhere"))
    assert policy.folder == bundle


async def test_load_adapter_resolves_the_rego_scheme(bundle: Path) -> None:
    policy = load_adapter("policy", "rego:///policies", base_dir=bundle.parent)
    assert isinstance(policy, RegoPolicy)
    assert (await policy.decide("mesh/invoices", policy_input("acme"))).allow
    await policy.aclose()


def test_from_url_rejects_unknown_options(bundle: Path) -> None:
    with pytest.raises(ConfigError, match="unknown option"):
        RegoPolicy.from_url(parse_url("rego:///policies?cache=1"), base_dir=bundle.parent)
    with pytest.raises(ConfigError, match="not a boolean"):
        RegoPolicy.from_url(parse_url("rego:///policies?strict_builtin_errors=maybe"),
                            base_dir=bundle.parent)


def test_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist") as info:
        RegoPolicy.from_path(tmp_path / "nope")
    assert info.value.hint
    assert "mkdir" in info.value.hint


def test_folder_is_a_file(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("x")
    with pytest.raises(ConfigError, match="not a folder"):
        RegoPolicy.from_path(tmp_path / "f")


def test_empty_folder(tmp_path: Path) -> None:
    (tmp_path / "p").mkdir()
    with pytest.raises(ConfigError, match=r"no \.rego files"):
        RegoPolicy.from_path(tmp_path / "p")


# -- load errors: always at load, naming file and line ------------------------------------


def test_syntax_error_names_file_line_and_column(tmp_path: Path,
                                                 capfd: pytest.CaptureFixture[str]) -> None:
    root = write(tmp_path / "p", {
        "a/ok.rego": ALLOW_ACME,
        "b/bad.rego": "package b\n\nallow if {\n  input.x ==\n}\n",
    })
    with pytest.raises(ConfigError) as info:
        RegoPolicy.from_path(root)
    assert f"{root}/b/bad.rego:4:11" in str(info.value)
    assert info.value.details["file"] == f"{root}/b/bad.rego:4:11"
    assert "ok.rego" not in str(info.value)
    out, err = capfd.readouterr()
    assert "Invalid" not in out + err  # rego-cpp's own logging is silenced


def test_unclosed_bracket(tmp_path: Path) -> None:
    root = write(tmp_path / "p", {"x.rego": "package x\n\nallow := [\n"})
    with pytest.raises(ConfigError, match=r"x\.rego:\d+:\d+"):
        RegoPolicy.from_path(root)


def test_missing_package(tmp_path: Path) -> None:
    root = write(tmp_path / "p", {"x.rego": "# nothing\nallow := true\n"})
    with pytest.raises(ConfigError, match="declares no package"):
        RegoPolicy.from_path(root)


def test_unknown_function_fails_at_load(tmp_path: Path) -> None:
    root = write(tmp_path / "p", {"x.rego": "package x\n\nimport rego.v1\n\nallow if nope(1)\n"})
    with pytest.raises(ConfigError, match="Function not found: nope"):
        RegoPolicy.from_path(root)


def test_reserved_package_name(tmp_path: Path) -> None:
    root = write(tmp_path / "p", {"x.rego": "package aios_mesh_internal.x\n\nallow := true\n"})
    with pytest.raises(ConfigError, match="reserved"):
        RegoPolicy.from_path(root)


def test_invalid_utf8(tmp_path: Path) -> None:
    root = tmp_path / "p"
    root.mkdir()
    (root / "x.rego").write_bytes(b"package x\n\nallow := \"\xff\"\n")
    with pytest.raises(ConfigError, match=r"x\.rego:3: not valid UTF-8"):
        RegoPolicy.from_path(root)


def test_invalid_data_json(tmp_path: Path) -> None:
    root = write(tmp_path / "p", {"x.rego": ALLOW_ACME, "cfg/data.json": '{\n  "a": 1,\n}'})
    with pytest.raises(ConfigError, match=r"data\.json:3:1: invalid JSON"):
        RegoPolicy.from_path(root)


def test_data_json_must_be_an_object(tmp_path: Path) -> None:
    # rego-cpp accepts a top-level array and then segfaults on the first query
    root = write(tmp_path / "p", {"x.rego": ALLOW_ACME, "data.json": "[1, 2]"})
    with pytest.raises(ConfigError, match="JSON object"):
        RegoPolicy.from_path(root)


def test_data_key_defined_twice(tmp_path: Path) -> None:
    root = write(tmp_path / "p", {
        "x.rego": ALLOW_ACME,
        "data.json": '{"cfg": {"limit": 1}}',
        "cfg/data.json": '{"limit": 2}',
    })
    with pytest.raises(ConfigError, match=r"data\.cfg\.limit is defined by both") as info:
        RegoPolicy.from_path(root)
    assert "cfg/data.json" in str(info.value)


def test_data_overlapping_a_package_is_refused(tmp_path: Path) -> None:
    # rego-cpp would let data.mesh.invoices.allow = true replace the rule: refuse the bundle
    root = write(tmp_path / "p", {
        "x.rego": ALLOW_ACME,
        "mesh/invoices/data.json": '{"allow": true}',
    })
    with pytest.raises(ConfigError, match=r"overlaps package mesh\.invoices"):
        RegoPolicy.from_path(root)


async def test_data_files_merge(tmp_path: Path) -> None:
    # several add_data calls lose keys in rego-cpp; the adapter merges them into one document
    root = write(tmp_path / "p", {
        "x.rego": "package x\n\nimport rego.v1\n\n"
                  "allow if { data.a.one == 1; data.a.two == 2; data.b.three == 3 }\n",
        "a/data.json": '{"one": 1}',
        "data.json": '{"a": {"two": 2}}',
        "b/data.json": '{"three": 3}',
    })
    assert (await RegoPolicy.from_path(root).decide("x", policy_input())).allow


async def test_hidden_files_are_ignored(bundle: Path) -> None:
    before = RegoPolicy.from_path(bundle).bundle_hash
    write(bundle, {".manifest": "{}", ".git/x.rego": "not rego at all"})
    assert RegoPolicy.from_path(bundle).bundle_hash == before


# -- the bundle hash ----------------------------------------------------------------------


def test_hash_is_sha256_over_sorted_pairs(bundle: Path) -> None:
    content = (bundle / "mesh/invoices.rego").read_bytes()
    rel = b"mesh/invoices.rego"
    expected = hashlib.sha256(len(rel).to_bytes(8, "big") + rel
                              + len(content).to_bytes(8, "big") + content).hexdigest()
    assert RegoPolicy.from_path(bundle).bundle_hash == expected


def test_hash_ignores_order_but_not_names() -> None:
    a = [("a.rego", b"x"), ("b.rego", b"y")]
    assert hash_files(a) == hash_files(reversed(a))
    assert hash_files([("a.rego", b"xy")]) != hash_files([("a.rego", b"x"), ("y", b"")])
    assert hash_files([("a.rego", b"x")]) != hash_files([("c.rego", b"x")])


async def test_reload(bundle: Path) -> None:
    policy = RegoPolicy.from_path(bundle)
    before = policy.bundle_hash
    write(bundle, {"mesh/invoices.rego": ALLOW_ACME.replace('"acme"', '"globex"')})
    policy.reload()
    assert policy.bundle_hash != before
    assert (await policy.decide("mesh/invoices", policy_input("globex"))).allow
    write(bundle, {"mesh/invoices.rego": "package mesh.invoices\nallow := [\n"})
    with pytest.raises(ConfigError):
        policy.reload()
    assert (await policy.decide("mesh/invoices", policy_input("globex"))).allow  # old bundle


# -- helpers ------------------------------------------------------------------------------


@pytest.mark.parametrize(("source", "expected"), [
    ("package a", ("a",)),
    ("# c\n\npackage a.b.c\n", ("a", "b", "c")),
    ('package a["b-c"].d', ("a", "b-c", "d")),
    ("package   a . b  # trailing", ("a", "b")),  # rego-cpp reads this as a.b too
    ('# package wrong\npackage right', ("right",)),
])
def test_parse_package(source: str, expected: tuple[str, ...]) -> None:
    assert parse_package(source, where="x.rego") == expected


def test_line_col_counts_utf8_bytes() -> None:
    source = "é\nab"
    assert line_col(source, 0) == (1, 1)
    assert line_col(source, 3) == (2, 1)
    assert line_col(source, 4) == (2, 2)


def test_parse_error_text() -> None:
    text = ("(rego-errorseq\n  (error 6:a.rego|32|2\n    (errormsg 24:Invalid boolean operator)\n"
            "    (errorast |32|2))\n  (error 6:b.rego|0|7\n    (errormsg 16:this is unclosed)))")
    errors = parse_error_text(text)
    assert [(e.module, e.offset, e.message) for e in errors] == [
        ("a.rego", 32, "Invalid boolean operator"), ("b.rego", 0, "this is unclosed")]


# -- decisions and traps ------------------------------------------------------------------


@pytest.fixture
def policy(tmp_path: Path) -> RegoPolicy:
    return RegoPolicy.from_path(write(tmp_path / "t", {
        "t.rego": """package t

import rego.v1

default allow := false

allow if input.tenant == "acme"

reason := "explicitly false" if not allow
""",
        "helpers.rego": """package helpers

import rego.v1

allow := true

# never read by the mesh: evaluating it would be a built-in error
broken := to_number("not a number")

unused_conflict := 1
unused_conflict := 2
""",
        "echo.rego": "package echo\n\nallow := true\n\nobligations := input\n",
        "lenient.rego": 'package lenient\n\nimport rego.v1\n\nallow if to_number("x") > 0\n',
    }))


async def test_false_is_false_not_undefined(policy: RegoPolicy) -> None:
    decision = await policy.decide("t", policy_input("evil"))
    assert decision == Decision(False, "explicitly false", policy="t",
                                bundle_hash=policy.bundle_hash, reason_code="unspecified")


async def test_only_allow_reason_obligations_are_evaluated(policy: RegoPolicy) -> None:
    assert (await policy.decide("helpers", policy_input())).allow is True


@pytest.mark.parametrize("path", ["t", "/t/", "data.t", "data/t", " t "])
async def test_path_spellings(policy: RegoPolicy, path: str) -> None:
    assert (await policy.decide(path, policy_input("acme"))).allow


@pytest.mark.parametrize("path", ["", "/", "data", "t/x", "helpers.broken"])
async def test_bad_paths_are_not_found(policy: RegoPolicy, path: str) -> None:
    with pytest.raises(NotFound):
        await policy.decide(path, policy_input())


async def test_builtin_errors_strict_by_default(tmp_path: Path, policy: RegoPolicy) -> None:
    with pytest.raises(InvalidOutput) as info:
        await policy.decide("lenient", policy_input())
    assert info.value.details["rego_code"] == "eval_builtin_error"
    lenient = RegoPolicy.from_url(parse_url("rego:///t?strict_builtin_errors=false"),
                                  base_dir=tmp_path)
    decision = await lenient.decide("lenient", policy_input())
    assert (decision.allow, decision.reason) == (False,
                                                 "default deny: lenient.allow is undefined")


async def test_nul_in_a_string_is_not_cut(policy: RegoPolicy) -> None:
    # regopy's direct conversion would pass "acme" to Rego and allow
    assert not (await policy.decide("t", policy_input("acme\x00evil"))).allow


@pytest.mark.parametrize("value", [
    2**70, -(2**63) - 1, 0.123456789, 1e-7, 'a"b', "back\\slash", "tab\t", "\x01",
    "é\u2028", {"nested": ["x", 1, 2.5, None, True]},
])
async def test_input_values_arrive_exactly(policy: RegoPolicy, value: Any) -> None:
    got = policy._compiled.evaluate(("echo",), {"v": value})["obligations"]["v"]
    assert got == value


async def test_quotes_compare_equal_to_rego_literals(tmp_path: Path) -> None:
    root = write(tmp_path / "q", {"q.rego": 'package q\n\nallow := input.tenant == "a\\"b\\\\c"\n'})
    policy = RegoPolicy.from_path(root)
    assert (await policy.decide("q", policy_input('a"b\\c'))).allow
    assert not (await policy.decide("q", policy_input("abc"))).allow


@pytest.mark.parametrize("attributes", [
    {"when": datetime(2024, 1, 1, tzinfo=UTC)},
    {"s": {1, 2}},
    {"nan": math.nan},
    {"surrogate": "\ud800"},
])
async def test_non_json_input_is_invalid_input(policy: RegoPolicy,
                                               attributes: dict[Any, Any]) -> None:
    with pytest.raises(InvalidInput):
        await policy.decide("t", policy_input(attributes=attributes))


async def test_closed_adapter_refuses(policy: RegoPolicy) -> None:
    await policy.aclose()
    with pytest.raises(MeshError, match="closed"):
        await policy.decide("t", policy_input())


def test_threads_share_one_adapter(policy: RegoPolicy) -> None:
    failures: list[str] = []

    def worker(index: int) -> None:
        tenant = "acme" if index % 2 else "evil"
        for _ in range(200):
            decision = policy.decide_sync("t", policy_input(tenant))
            if decision.allow is not (tenant == "acme"):
                failures.append(tenant)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []


def test_decide_is_fast(policy: RegoPolicy) -> None:
    doc = policy_input("acme", attributes={"region": "eu", "pages": 3})
    for _ in range(50):
        policy.decide_sync("t", doc)
    samples = []
    for _ in range(300):
        start = time.perf_counter()
        policy.decide_sync("t", doc)
        samples.append(time.perf_counter() - start)
    # ~150-300 µs on a laptop core; a loose bound so a busy CI box does not flake
    assert statistics.median(samples) < 0.005


async def test_conformance_bundle_loads_as_shipped() -> None:
    policy = RegoPolicy.from_path(CONFORMANCE_BUNDLE)
    assert "conformance.basic" in policy.packages
    assert (await policy.decide("conformance/basic", policy_input("acme"))).allow
    await asyncio.sleep(0)


# -- hypothesis: the fast input path and the exact JSON path agree ------------------------

_json = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2**80), max_value=2**80)
    | st.floats(allow_nan=False, allow_infinity=False, width=64, max_value=1e300,
                min_value=-1e300)
    | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=4)
    | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)


def _close(a: Any, b: Any) -> bool:
    """Equality, with floats compared to 14 digits (rego-cpp prints 15 significant)."""
    if isinstance(a, float) or isinstance(b, float):
        return (isinstance(a, int | float) and isinstance(b, int | float)
                and math.isclose(a, b, rel_tol=1e-14, abs_tol=1e-300))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_close(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_close(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b) and type(a) is type(b)


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(attributes=st.dictionaries(st.text(max_size=8), _json, max_size=5))
def test_input_document_round_trips(policy: RegoPolicy, attributes: dict[str, Any]) -> None:
    document = PolicyInput(tenant="acme", caller="c", capability="x", capability_version="1",
                           attributes=attributes).to_document()
    fast = policy._compiled.evaluate(("echo",), document)["obligations"]
    exact = policy._compiled.evaluate(("echo",), document, exact_json=True)["obligations"]
    assert fast == exact
    assert _close(exact, document)
    pointer = native_input(document)
    if pointer is not None:
        from regopy import rego_shared

        rego_shared.rego_free_input(pointer)
