"""PROTOCOL test of the OPA adapter's HTTP translation — not a test against OPA.

No OPA binary can be had on these machines, so this file starts a small HTTP server on a free
127.0.0.1 port that implements the subset of OPA's REST API the adapter uses (``PUT`` /
``DELETE`` / ``GET /v1/policies``, ``PUT`` / ``POST /v1/data/<path>``, ``GET /health``) with
OPA's request and response shapes (``{"input": ...}`` in, ``{"result": ...}`` out, the result
key absent for undefined documents, 400 + ``rego_parse_error`` with a location on a bad
module, 500 + ``eval_*`` errors on an evaluation error). It evaluates the Rego it receives with
regopy, the engine of the embedded adapter. What this proves: the adapter builds the right
requests and maps every answer to the Policy contract. What it does not prove: that OPA itself
answers the same way — tests/conformance/test_policy_opa.py runs the same suite against a real
OPA server where a Docker engine answers.
"""

from __future__ import annotations

import json
import re
import shutil
import tempfile
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import pytest
from aios_mesh_opa import OpaPolicy
from aios_mesh_regopy import RegoPolicy
from aios_mesh_regopy._bundle import load_bundle_files, parse_package
from aios_mesh_regopy._engine import CompiledBundle

from aios_mesh.backends import load_adapter
from aios_mesh.errors import (
    BackendUnavailable,
    ConfigError,
    InvalidOutput,
    MeshError,
    NotFound,
)
from aios_mesh.testing.conformance.policy import (
    PolicyBasic,
    PolicyErrors,
    PolicyObligations,
    policy_input,
)
from aios_mesh.testing.processes import free_port

pytestmark = pytest.mark.integration


#: Outcome of compiling one module alone, by (policy id, source): uploads repeat a lot.
_CHECKED: dict[tuple[str, bytes], ConfigError | None] = {}


class RegopyOpaFake:
    """OPA's REST API subset, evaluated by regopy. Thread-safe; records every request."""

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="opa-fake-"))
        self.lock = threading.Lock()
        self.requests: list[tuple[str, str, dict[str, list[str]], bytes]] = []
        self.fail_with: int | None = None  # answer every request with this status
        self.token: str | None = None
        self.compiled: dict[bool, CompiledBundle] = {}

    # -- state --------------------------------------------------------------------------
    def modules(self) -> list[Path]:
        return sorted(p for p in self.root.rglob("*.rego") if p.is_file())

    def recompile(self) -> None:
        """Forget the compiled bundles; the next evaluation compiles what is stored."""
        self.compiled = {}

    def bundle(self, strict: bool) -> CompiledBundle | None:
        if strict not in self.compiled and self.modules():
            files = load_bundle_files(self.root)
            self.compiled[strict] = CompiledBundle(files, strict_builtin_errors=strict)
        return self.compiled.get(strict)

    def put_policy(self, pid: str, source: bytes) -> tuple[int, Any]:
        target = self.root / pid
        old = target.read_bytes() if target.exists() else None
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(source)
        self.recompile()
        try:
            self.check_alone(pid, source)
        except ConfigError:
            try:  # it may need the other modules (a function of another package)
                self.bundle(True)
            except ConfigError as exc:
                if old is None:
                    target.unlink()
                else:
                    target.write_bytes(old)
                self.recompile()
                return 400, self.compile_error(pid, exc)
        return 200, {}

    @staticmethod
    def check_alone(pid: str, source: bytes) -> None:
        """Compile one module on its own (fast: what OPA's parser checks on PUT)."""
        key = (pid, source)
        if key in _CHECKED:
            failure = _CHECKED[key]
            if failure is not None:
                raise failure
            return
        try:
            RegopyOpaFake._compile_alone(pid, source)
        except ConfigError as exc:
            _CHECKED[key] = exc
            raise
        _CHECKED[key] = None

    @staticmethod
    def _compile_alone(pid: str, source: bytes) -> None:
        with tempfile.TemporaryDirectory() as scratch:
            target = Path(scratch) / pid
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(source)
            CompiledBundle(load_bundle_files(Path(scratch))).close()

    def compile_error(self, pid: str, exc: ConfigError) -> dict[str, Any]:
        where = str(exc.details.get("file", ""))
        match = re.search(r"(?:^|/)(" + re.escape(pid) + r"):(\d+):(\d+)$", where)
        file, row, col = (match[1], int(match[2]), int(match[3])) if match else (pid, 1, 1)
        return {"code": "invalid_parameter",
                "message": "error(s) occurred while compiling module(s)",
                "errors": [{"code": "rego_parse_error", "message": exc.message,
                            "location": {"file": file, "row": row, "col": col}}]}

    def delete_policy(self, pid: str) -> tuple[int, Any]:
        target = self.root / pid
        if not target.is_file():
            return 404, {"code": "resource_not_found", "message": f"storage_not_found: {pid}"}
        target.unlink()
        self.recompile()
        return 200, {}

    def list_policies(self) -> tuple[int, Any]:
        out = []
        for path in self.modules():
            raw = path.read_text(encoding="utf-8")
            package = parse_package(raw, where=str(path))
            out.append({"id": path.relative_to(self.root).as_posix(), "raw": raw,
                        "ast": {"package": {"path": [{"type": "var", "value": "data"}] + [
                            {"type": "string", "value": seg} for seg in package]}}})
        return 200, {"result": out}

    def put_data(self, segments: list[str], value: Any) -> tuple[int, Any]:
        if not isinstance(value, dict):
            return 400, {"code": "invalid_parameter", "message": "fake stores objects only"}
        folder = self.root.joinpath(*segments)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "data.json").write_text(json.dumps(value), encoding="utf-8")
        self.recompile()
        return 204, None

    def evaluate(self, segments: list[str], body: Any, strict: bool) -> tuple[int, Any]:
        package = tuple(segments)
        compiled = self.bundle(strict)
        if compiled is None or compiled.entrypoint(package) is None:
            return 200, {}  # OPA: an undefined document has no "result" key
        if not isinstance(body, dict):
            return 400, {"code": "invalid_parameter", "message": "body must be an object"}
        try:
            result = compiled.evaluate(package, body.get("input"))
        except InvalidOutput as exc:
            code = str(exc.details.get("rego_code") or "internal_error")
            code = code if code.startswith("eval_") else f"eval_{code}"
            return 500, {"code": "internal_error",
                         "message": "error(s) occurred while evaluating query",
                         "errors": [{"code": code, "message": exc.message}]}
        return 200, {"result": result}


def _handler(fake: RegopyOpaFake) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as OPA's Go server

        def log_message(self, *args: Any) -> None:
            pass

        def _send(self, status: int, body: Any) -> None:
            data = b"" if body is None else json.dumps(body).encode("utf-8")
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _route(self, method: str) -> None:
            parts = urlsplit(self.path)
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            query = parse_qs(parts.query)
            with fake.lock:
                fake.requests.append((method, parts.path, query, raw))
                if fake.fail_with is not None:
                    self._send(fake.fail_with, {"code": "internal_error", "message": "boom"})
                    return
                if fake.token and self.headers.get("Authorization") != f"Bearer {fake.token}":
                    self._send(401, {"code": "unauthorized", "message": "token required"})
                    return
                path = parts.path
                if path == "/health" and method == "GET":
                    self._send(200, {})
                elif path == "/v1/policies" and method == "GET":
                    self._send(*fake.list_policies())
                elif path.startswith("/v1/policies/") and method == "PUT":
                    self._send(*fake.put_policy(unquote(path[len("/v1/policies/"):]), raw))
                elif path.startswith("/v1/policies/") and method == "DELETE":
                    self._send(*fake.delete_policy(unquote(path[len("/v1/policies/"):])))
                elif path.startswith("/v1/data/"):
                    segments = [unquote(s) for s in path[len("/v1/data/"):].split("/") if s]
                    if method == "PUT":
                        self._send(*fake.put_data(segments, json.loads(raw)))
                    elif method == "POST":
                        strict = query.get("strict-builtin-errors") == ["true"]
                        try:
                            body = json.loads(raw or b"{}")
                        except ValueError:
                            self._send(400, {"code": "invalid_parameter",
                                             "message": "body is not JSON"})
                            return
                        self._send(*fake.evaluate(segments, body, strict))
                    elif method == "GET":
                        self._send(200, {})
                    else:
                        self._send(405, {"code": "invalid_operation", "message": "method"})
                else:
                    self._send(404, {"code": "resource_not_found", "message": path})

        def do_GET(self) -> None:
            self._route("GET")

        def do_POST(self) -> None:
            self._route("POST")

        def do_PUT(self) -> None:
            self._route("PUT")

        def do_DELETE(self) -> None:
            self._route("DELETE")

    return Handler


class _Server(ThreadingHTTPServer):
    request_queue_size = 256  # the suite sends 100 decisions at once
    daemon_threads = True


@pytest.fixture
def opa_fake() -> Iterator[tuple[str, RegopyOpaFake]]:
    """A regopy-backed OPA API fake on a free 127.0.0.1 port (stopped after the test)."""
    fake = RegopyOpaFake()
    server = _Server(("127.0.0.1", free_port()), _handler(fake))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", fake
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
        shutil.rmtree(fake.root, ignore_errors=True)


class TestOpaProtocolAgainstRegopyFake(PolicyBasic, PolicyObligations, PolicyErrors):
    """The whole Policy conformance suite through the adapter's HTTP layer (regopy fake)."""

    @pytest.fixture
    def make_adapter(self, opa_fake: tuple[str, RegopyOpaFake]) -> Callable[[Path], Any]:
        url, _ = opa_fake
        return lambda folder: OpaPolicy(url, bundle=folder).start()


# --------------------------------------------------------------------------- translation


def _bundle(tmp_path: Path) -> Path:
    from aios_mesh.testing.conformance.policy import CONFORMANCE_BUNDLE

    target = tmp_path / "policies"
    shutil.copytree(CONFORMANCE_BUNDLE, target)
    return target


async def test_request_shape(opa_fake: tuple[str, RegopyOpaFake], tmp_path: Path) -> None:
    url, fake = opa_fake
    policy = await OpaPolicy(url, bundle=_bundle(tmp_path)).start()
    try:
        puts = [p for m, p, _, _ in fake.requests if m == "PUT"]
        assert "/v1/data/conformance_data" in puts
        assert "/v1/policies/aios-mesh/conformance/basic.rego" in puts
        fake.requests.clear()
        pin = policy_input("acme")
        await policy.decide("conformance.basic", pin)
        (method, path, query, raw), = fake.requests
        assert (method, path) == ("POST", "/v1/data/conformance/basic")
        assert query == {"strict-builtin-errors": ["true"]}
        assert json.loads(raw) == {"input": pin.to_document()}
    finally:
        await policy.aclose()


async def test_bundle_hash_matches_the_embedded_adapter(
        opa_fake: tuple[str, RegopyOpaFake], tmp_path: Path) -> None:
    url, _ = opa_fake
    folder = _bundle(tmp_path)
    policy = await OpaPolicy(url, bundle=folder).start()
    embedded = RegoPolicy.from_path(folder)
    try:
        assert policy.bundle_hash == embedded.bundle_hash
        for tenant in ("acme", "initech"):
            a = await policy.decide("conformance/basic", policy_input(tenant))
            b = await embedded.decide("conformance/basic", policy_input(tenant))
            assert (a.allow, a.reason, a.obligations) == (b.allow, b.reason, b.obligations)
    finally:
        await policy.aclose()
        await embedded.aclose()


async def test_without_bundle_the_hash_follows_the_servers_modules(
        opa_fake: tuple[str, RegopyOpaFake], tmp_path: Path) -> None:
    url, _fake = opa_fake
    folder = _bundle(tmp_path)
    loader = await OpaPolicy(url, bundle=folder).start()
    reader = load_adapter("policy", f"opa+http://{url.split('//')[1]}?refresh=0",
                          base_dir=tmp_path)
    try:
        assert reader.bundle_hash == ""
        await reader.start()
        first = reader.bundle_hash
        assert first
        assert "conformance.basic" in reader.packages
        assert (await reader.decide("conformance/basic", policy_input("acme"))).allow
        (folder / "conformance" / "extra.rego").write_text(
            "package conformance.extra\n\nallow := true\n", encoding="utf-8")
        again = await OpaPolicy(url, bundle=folder).start()
        await again.aclose()
        decision = await reader.decide("conformance/extra", policy_input())  # refreshes
        assert decision.allow
        assert reader.bundle_hash != first
        assert decision.bundle_hash == reader.bundle_hash
    finally:
        await loader.aclose()
        await reader.aclose()


async def test_stale_modules_of_the_prefix_are_removed(
        opa_fake: tuple[str, RegopyOpaFake], tmp_path: Path) -> None:
    url, _fake = opa_fake
    folder = _bundle(tmp_path)
    (folder / "conformance" / "gone.rego").write_text(
        "package conformance.gone\n\nallow := true\n", encoding="utf-8")
    first = await OpaPolicy(url, bundle=folder).start()
    await first.aclose()
    (folder / "conformance" / "gone.rego").unlink()
    second = await OpaPolicy(url, bundle=folder).start()
    try:
        assert "conformance.gone" not in second.packages
        with pytest.raises(NotFound):
            await second.decide("conformance/gone", policy_input())
    finally:
        await second.aclose()


async def test_server_errors_are_backend_unavailable(
        opa_fake: tuple[str, RegopyOpaFake], tmp_path: Path) -> None:
    url, fake = opa_fake
    policy = await OpaPolicy(url, bundle=_bundle(tmp_path)).start()
    try:
        await policy.health()
        fake.fail_with = 503
        with pytest.raises(BackendUnavailable) as info:
            await policy.decide("conformance/basic", policy_input())
        assert info.value.retryable
        with pytest.raises(BackendUnavailable):
            await policy.health()
        fake.fail_with = None
        assert (await policy.decide("conformance/basic", policy_input())).allow
    finally:
        await policy.aclose()


async def test_unreachable_server(tmp_path: Path) -> None:
    policy = load_adapter("policy", f"opa+http://127.0.0.1:{free_port()}?timeout=2",
                          base_dir=tmp_path)
    try:
        with pytest.raises(BackendUnavailable) as info:
            await policy.decide("mesh/x", policy_input())
        assert info.value.hint
        with pytest.raises(BackendUnavailable):
            await policy.health()
    finally:
        await policy.aclose()


async def test_token(opa_fake: tuple[str, RegopyOpaFake], tmp_path: Path) -> None:
    url, fake = opa_fake
    fake.token = "s3cret"
    host = url.split("//")[1]
    folder = _bundle(tmp_path)
    without = load_adapter("policy", f"opa+http://{host}", base_dir=tmp_path)
    with pytest.raises(ConfigError, match="401"):
        await without.start()
    await without.aclose()
    policy = load_adapter("policy", f"opa+http://{host}?token=s3cret&bundle=policies",
                          base_dir=tmp_path)
    try:
        assert "s3cret" not in repr(policy)
        assert (await policy.decide("conformance/basic", policy_input("acme"))).allow
    finally:
        await policy.aclose()
    assert folder.is_dir()


async def test_non_strict_builtin_errors_are_undefined(
        opa_fake: tuple[str, RegopyOpaFake], tmp_path: Path) -> None:
    url, fake = opa_fake
    folder = _bundle(tmp_path)
    policy = await OpaPolicy(url, bundle=folder, strict_builtin_errors=False).start()
    try:
        decision = await policy.decide("conformance/errors/builtin",
                                       policy_input(attributes={"amount": "twelve"}))
        assert decision.allow is False
        assert "strict-builtin-errors" not in fake.requests[-1][2]
    finally:
        await policy.aclose()


async def test_closed_adapter(opa_fake: tuple[str, RegopyOpaFake], tmp_path: Path) -> None:
    url, _ = opa_fake
    policy = await OpaPolicy(url, bundle=_bundle(tmp_path)).start()
    await policy.aclose()
    await policy.aclose()
    with pytest.raises(MeshError):
        await policy.decide("conformance/basic", policy_input())


def test_url_options(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="unknown option"):
        load_adapter("policy", "opa+http://127.0.0.1:8181?bundel=x", base_dir=tmp_path)
    with pytest.raises(ConfigError, match="does not exist"):
        load_adapter("policy", "opa+http://127.0.0.1:8181?bundle=nope", base_dir=tmp_path)
    with pytest.raises(ConfigError, match="not a boolean"):
        load_adapter("policy", "opa+http://127.0.0.1:8181?tls=maybe", base_dir=tmp_path)
    policy = load_adapter("policy", "opa+http://opa:8181?tls=true&timeout=2",
                          base_dir=tmp_path)
    assert policy.base_url == "https://opa:8181"


# --------------------------------------------------------------------------- output obligations

_OUTPUT_REGO = """package guard.output
import rego.v1
default allow := true
terms contains "project falcon"
terms contains "falcon-x" if input.tenant == "acme"
obligations := {"redact": ["email"], "output": {
	"pii": "mask", "pii_kinds": ["email", "iban"], "blocked_terms": terms,
	"on_blocked": "review", "schema": "review"}}
"""

_BAD_OUTPUT_REGO = """package guard.bad_output
import rego.v1
default allow := true
obligations := {"output": {"pii": "mask", "toxicity": "deny"}}
"""


async def test_output_obligations_parse_alike_on_both_adapters(
        opa_fake: tuple[str, RegopyOpaFake], tmp_path: Path) -> None:
    from aios_mesh.ports.policy import OutputObligations

    folder = tmp_path / "policies" / "guard"
    folder.mkdir(parents=True)
    (folder / "output.rego").write_text(_OUTPUT_REGO)
    (folder / "bad_output.rego").write_text(_BAD_OUTPUT_REGO)
    url, _ = opa_fake
    policy = await OpaPolicy(url, bundle=folder.parent).start()
    embedded = RegoPolicy.from_path(folder.parent)
    try:
        for adapter in (policy, embedded):
            decision = await adapter.decide("guard/output", policy_input("acme"))
            assert decision.obligations.redact == ("email",)
            output = decision.obligations.output
            # a Rego set arrives as a JSON array (sorted by the engine): order-free check
            assert sorted(output.blocked_terms) == ["falcon-x", "project falcon"]
            assert output == OutputObligations(pii="mask", pii_kinds=("email", "iban"),
                                               blocked_terms=output.blocked_terms,
                                               on_blocked="review", schema="review")
            other = await adapter.decide("guard/output", policy_input("initech"))
            assert other.obligations.output.blocked_terms == ("project falcon",)
            with pytest.raises(InvalidOutput, match="unknown output obligation"):
                await adapter.decide("guard/bad_output", policy_input("acme"))
    finally:
        await policy.aclose()
        await embedded.aclose()
