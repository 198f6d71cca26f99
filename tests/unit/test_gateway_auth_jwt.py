"""JWT bearer tokens against a JWKS, with real RSA, EC and Ed25519 keys made in the test: the
good token maps onto a principal; expired, not-yet-valid, wrong-audience, wrong-issuer,
alg-none, HS256-with-the-public-key, tampered and wrong-key tokens are 401; a token for an
undeclared tenant is 403. The JWKS comes from a file or from a real HTTP server on
127.0.0.1 (TTL, rotation)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import http.server
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm

from aios_mesh.config import JwtConfig, config_from_mapping
from aios_mesh.errors import BackendUnavailable, ConfigError
from aios_mesh.gateway import Forbidden, Unauthenticated
from aios_mesh.gateway.auth import JwksSource, JwtAuthenticator

ISSUER = "https://idp.example.test/"
AUDIENCE = "aios-mesh"

RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
EC_KEY = ec.generate_private_key(ec.SECP256R1())
ED_KEY = ed25519.Ed25519PrivateKey.generate()
OTHER_RSA = rsa.generate_private_key(public_exponent=65537, key_size=2048)


def jwk(key: Any, kid: str) -> dict[str, Any]:
    public = key.public_key()
    algo = RSAAlgorithm if isinstance(public, rsa.RSAPublicKey) else \
        ECAlgorithm if isinstance(public, ec.EllipticCurvePublicKey) else OKPAlgorithm
    out: dict[str, Any] = algo.to_jwk(public, as_dict=True)
    out["kid"] = kid
    return out


JWKS = {"keys": [jwk(RSA_KEY, "rsa1"), jwk(EC_KEY, "ec1"), jwk(ED_KEY, "ed1"),
                 {"kty": "oct", "kid": "sym", "k": "c2VjcmV0"}]}


def claims(**over: Any) -> dict[str, Any]:
    now = int(time.time())
    base = {"iss": ISSUER, "aud": AUDIENCE, "sub": "user-42", "exp": now + 300, "iat": now,
            "tenant": "acme", "roles": ["reviewer", "other"], "jti": "t-1"}
    base.update(over)
    return {k: v for k, v in base.items() if v is not None}


def token(key: Any = RSA_KEY, alg: str = "RS256", kid: str | None = "rsa1", **over: Any
          ) -> str:
    return jwt.encode(claims(**over), key, algorithm=alg,
                      headers={"kid": kid} if kid else None)


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def config(tmp_path: Path, **over: Any) -> JwtConfig:
    (tmp_path / "jwks.json").write_text(json.dumps(JWKS))
    doc = {"jwks": "jwks.json", "issuer": ISSUER, "audience": AUDIENCE,
           "algorithms": ["RS256", "ES256", "EdDSA", "PS256"], **over}
    return config_from_mapping({"gateway": {"auth": {"jwt": doc}}}).gateway.auth.jwt  # type: ignore[return-value]


@pytest.fixture
def auth(tmp_path: Path) -> JwtAuthenticator:
    return JwtAuthenticator(config(tmp_path), tenants={"acme", "globex"}, base_dir=tmp_path)


@pytest.mark.parametrize(("key", "alg", "kid"), [
    (RSA_KEY, "RS256", "rsa1"), (RSA_KEY, "PS256", "rsa1"), (EC_KEY, "ES256", "ec1"),
    (ED_KEY, "EdDSA", "ed1")])
async def test_a_good_token_proves_its_principal(auth: JwtAuthenticator, key: Any, alg: str,
                                                 kid: str) -> None:
    principal = await auth.verify(token(key, alg, kid))
    assert principal.tenant == "acme" and principal.caller == "user-42"
    assert principal.roles == frozenset({"reviewer"})  # unknown roles dropped
    assert principal.scopes is None and principal.credential == "jwt:t-1"


async def test_without_a_kid_the_one_fitting_key_is_used(auth: JwtAuthenticator) -> None:
    assert (await auth.verify(token(EC_KEY, "ES256", None))).tenant == "acme"


def hs256_with(secret: bytes, kid: str = "rsa1") -> str:
    head = b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": kid}).encode())
    body = b64(json.dumps(claims()).encode())
    sig = hmac.new(secret, f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{b64(sig)}"


PEM = RSA_KEY.public_key().public_bytes(serialization.Encoding.PEM,
                                        serialization.PublicFormat.SubjectPublicKeyInfo)


def tampered() -> str:
    head, _, sig = token().split(".")
    return ".".join([head, b64(json.dumps(claims(tenant="globex")).encode()), sig])


@pytest.mark.parametrize(("bad", "reason"), [
    (lambda: token(exp=int(time.time()) - 120), "expired"),
    (lambda: token(nbf=int(time.time()) + 600), "not valid yet"),
    (lambda: token(iat=int(time.time()) + 600), "not valid yet"),
    (lambda: token(aud="someone-else"), "audience"),
    (lambda: token(iss="https://evil.example.test/"), "issuer"),
    (lambda: token(exp=None), "required claim"),
    (lambda: token(aud=None), "required claim"),
    (lambda: jwt.encode(claims(), None, algorithm="none"), "algorithm 'none'"),
    (lambda: hs256_with(PEM), "algorithm 'HS256'"),           # the HS/RS confusion attack
    (lambda: hs256_with(b"c2VjcmV0", "sym"), "algorithm 'HS256'"),
    (tampered, "signature"),
    (lambda: token(OTHER_RSA), "signature"),                 # a key the JWKS does not hold
    (lambda: token(RSA_KEY, "RS256", "ec1"), "no key"),      # kid of a key of another type
    (lambda: token(EC_KEY, "ES256", "nope"), "no key"),
    (lambda: token(RSA_KEY, "RS384"), "algorithm 'RS384'"),  # not pinned
    (lambda: "not.a.jwt", "not a JWT"),
    (lambda: "abc", "not a JWT"),
])
async def test_bad_tokens_are_401(auth: JwtAuthenticator, bad: Any, reason: str) -> None:
    made = bad()
    with pytest.raises(Unauthenticated) as info:
        await auth.verify(made)
    assert reason in info.value.message
    assert info.value.hint
    assert made not in str(info.value) and "user-42" not in str(info.value)


async def test_tenant_roles_scopes_caller_mappings(tmp_path: Path) -> None:
    auth = JwtAuthenticator(config(
        tmp_path, tenant_claim="org.id", tenants={"org_1": "globex"}, roles_claim="grp",
        roles={"mesh-admins": "admin"}, scopes_claim="scope", caller_claim="email"),
        tenants={"acme", "globex"}, base_dir=tmp_path)
    principal = await auth.verify(token(org={"id": "org_1"}, grp="mesh-admins users",
                                        scope="extract classify", email="ann@example.com"))
    assert principal.tenant == "globex" and principal.roles == frozenset({"admin"})
    assert principal.scopes == frozenset({"extract", "classify"})
    # an e-mail address never becomes the recorded caller
    assert "example.com" not in principal.caller and principal.caller.startswith("jwt:")
    assert principal.caller == (await auth.verify(token(
        org={"id": "org_1"}, email="ann@example.com"))).caller  # a stable pseudonym
    # scopes are opt-in: without the claim, nothing may be called
    assert (await auth.verify(token(org={"id": "org_1"}, email="x"))).scopes == frozenset()
    with pytest.raises(Forbidden):  # a value the map does not name
        await auth.verify(token(org={"id": "org_2"}, email="x"))


async def test_a_tenant_the_mesh_does_not_declare_is_403(auth: JwtAuthenticator) -> None:
    with pytest.raises(Forbidden):
        await auth.verify(token(tenant="initech"))
    with pytest.raises(Forbidden):
        await auth.verify(token(tenant=None))
    with pytest.raises(Unauthenticated, match="'sub'"):
        await auth.verify(token(sub=None))


def test_bad_jwt_config_is_a_config_error(tmp_path: Path) -> None:
    for algs in (["HS256"], ["none"], [], ["RS256", "HS512"]):
        with pytest.raises(ConfigError, match="algorithms"):
            config(tmp_path, algorithms=algs)
    with pytest.raises(ConfigError, match="audience"):
        config(tmp_path, audience=[])
    with pytest.raises(ConfigError, match="not declared"):
        JwtAuthenticator(config(tmp_path, tenants={"x": "initech"}), tenants={"acme"},
                         base_dir=tmp_path)
    with pytest.raises(ConfigError, match="unknown role"):
        JwtAuthenticator(config(tmp_path, roles={"x": "root"}), tenants={"acme"},
                         base_dir=tmp_path)


async def test_a_missing_or_bad_jwks_file_is_a_config_error(tmp_path: Path) -> None:
    source = JwksSource("missing.json", base_dir=tmp_path)
    with pytest.raises(ConfigError, match="cannot read"):
        await source.keys()
    for text in ("{", "[]", '{"keys": [{"kty": "oct", "k": "eA"}]}'):
        (tmp_path / "bad.json").write_text(text)
        with pytest.raises(ConfigError):
            await JwksSource("bad.json", base_dir=tmp_path).keys()


# -- JWKS over HTTP ----------------------------------------------------------------------

class _Jwks(http.server.BaseHTTPRequestHandler):
    doc: dict[str, Any] = {"keys": []}
    hits = 0
    status = 200

    def do_GET(self) -> None:
        type(self).hits += 1
        body = json.dumps(type(self).doc).encode()
        self.send_response(type(self).status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def jwks_server() -> Iterator[tuple[str, type[_Jwks]]]:
    handler = type("Handler", (_Jwks,), {"doc": {"keys": [jwk(RSA_KEY, "rsa1")]}, "hits": 0})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/.well-known/jwks.json", handler
    server.shutdown()
    server.server_close()


class Clock:
    now = 0.0

    def __call__(self) -> float:
        return self.now


async def test_jwks_url_ttl_and_rotation(tmp_path: Path,
                                         jwks_server: tuple[str, type[_Jwks]]) -> None:
    url, handler = jwks_server
    clock = Clock()
    source = JwksSource(url, base_dir=tmp_path, ttl_s=60, min_refresh_s=10, clock=clock)
    auth = JwtAuthenticator(config(tmp_path, jwks=url), tenants={"acme"}, base_dir=tmp_path,
                            keys=source)
    for _ in range(3):
        assert (await auth.verify(token())).tenant == "acme"
    assert handler.hits == 1  # cached
    # the issuer rotates to the EC key: an unknown kid reads the set again, but not at once
    handler.doc = {"keys": [jwk(EC_KEY, "ec1")]}
    with pytest.raises(Unauthenticated, match="no key"):
        await auth.verify(token(EC_KEY, "ES256", "ec1"))
    assert handler.hits == 1
    clock.now = 10
    assert (await auth.verify(token(EC_KEY, "ES256", "ec1"))).tenant == "acme"
    assert handler.hits == 2
    with pytest.raises(Unauthenticated):  # the old key is gone
        await auth.verify(token())
    # the IdP goes down: the cached keys keep working; past the TTL it is asked again
    handler.status = 500
    clock.now = 100
    assert (await auth.verify(token(EC_KEY, "ES256", "ec1"))).tenant == "acme"
    assert handler.hits == 3
    await auth.aclose()


async def test_an_unreachable_jwks_url_is_backend_unavailable(tmp_path: Path) -> None:
    from aios_mesh.testing.processes import free_port

    source = JwksSource(f"http://127.0.0.1:{free_port()}/jwks?token=s3cret", base_dir=tmp_path,
                        timeout_s=1)
    with pytest.raises(BackendUnavailable) as info:
        await source.keys()
    assert "s3cret" not in str(info.value)
    await source.aclose()
