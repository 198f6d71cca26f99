"""Identity against a real ``aios-mesh gateway`` process (uvicorn) with the authenticator
``[gateway.auth]`` describes: API keys made and revoked with the ``aios-mesh keys`` CLI (a
separate process on the same state), a key's scopes and its own rate limit, and a JWT signed
with an RSA key made here and checked against a JWKS file."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

from aios_mesh.gateway.testing import RunningGateway, running_gateway
from tests.integration.test_gateway_http import APP, REPO, gateway_env

pytestmark = pytest.mark.integration

ISSUER = "https://idp.test/"
KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
CONFIG = """
state_dir = "state"
[backends]
registry = "memory://"
[tenants.acme]
[tenants.globex]
[gateway.auth]
key_cache_s = 0
[gateway.auth.jwt]
jwks = "jwks.json"
issuer = "https://idp.test/"
audience = "aios-gateway"
algorithms = ["RS256"]
tenant_claim = "org"
roles_claim = "groups"
roles = { "mesh-reviewers" = "reviewer" }
"""


def keys_cli(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "aios_mesh.cli", "keys", *args,
                           "--config", str(config)], capture_output=True, text=True,
                          timeout=120, cwd=config.parent)


def create(config: Path, *args: str) -> dict[str, Any]:
    done = keys_cli(config, "create", *args, "--json")
    assert done.returncode == 0, done.stderr
    made: dict[str, Any] = json.loads(done.stdout)
    return made


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RunningGateway, Path]]:
    tmp = tmp_path_factory.mktemp("identity")
    config, env = gateway_env(tmp, CONFIG)
    public = RSAAlgorithm.to_jwk(KEY.public_key(), as_dict=True)
    (tmp / "jwks.json").write_text(json.dumps({"keys": [{**public, "kid": "k1"}]}))
    with running_gateway(None, app=APP, env=env, cwd=REPO) as gw:
        yield gw, config


def call(gw: RunningGateway, credential: dict[str, str], capability: str = "echo"
         ) -> httpx.Response:
    return httpx.post(f"{gw.url}/v1/capabilities/{capability}/invoke",
                      json={"text": "hi"}, headers=credential, timeout=30)


def problem(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body: dict[str, Any] = response.json()
    assert body["code"] == code and body["hint"]
    return body


def test_api_keys_end_to_end(setup: tuple[RunningGateway, Path]) -> None:
    gw, config = setup
    made = create(config, "acme", "billing-bot", "--scope", "echo")
    key = made["key"]
    assert key.startswith("amk_") and made["scopes"] == ["echo"]
    listed = keys_cli(config, "list", "--json")
    assert listed.returncode == 0 and key not in listed.stdout  # the secret is never listed
    assert made["id"] in [k["id"] for k in json.loads(listed.stdout)]

    anonymous = call(gw, {})
    problem(anonymous, 401, "unauthenticated")
    assert anonymous.headers["WWW-Authenticate"].startswith("Bearer")
    problem(call(gw, {"X-API-Key": key[:-1] + "x"}), 401, "unauthenticated")
    for header in ({"X-API-Key": key}, {"Authorization": f"Bearer {key}"}):
        ok = call(gw, header)
        assert ok.status_code == 200, ok.text
        assert ok.json()["output"]["text"] == "HI"
    problem(call(gw, {"X-API-Key": key}, "slow"), 403, "forbidden")  # outside its scopes

    # the record is the key's tenant's: another tenant's key does not see it (404)
    record_id = call(gw, {"X-API-Key": key}).json()["record_id"]
    other = create(config, "globex", "intruder")["key"]
    assert httpx.get(f"{gw.url}/v1/records/{record_id}", headers={"X-API-Key": key},
                     timeout=30).status_code == 200
    assert httpx.get(f"{gw.url}/v1/records/{record_id}", headers={"X-API-Key": other},
                     timeout=30).status_code == 404

    revoked = keys_cli(config, "revoke", made["id"])
    assert revoked.returncode == 0, revoked.stderr
    body = problem(call(gw, {"X-API-Key": key}), 401, "unauthenticated")
    assert "revoked" in body["detail"] and key not in json.dumps(body)


def test_a_keys_own_limit_is_429_with_retry_after(setup: tuple[RunningGateway, Path]) -> None:
    gw, config = setup
    key = create(config, "acme", "batch", "--limit", "calls_per_day=2")["key"]
    for _ in range(2):
        assert call(gw, {"X-API-Key": key}).status_code == 200
    refused = call(gw, {"X-API-Key": key})
    body = problem(refused, 429, "quota_exceeded")
    assert 0 < int(refused.headers["Retry-After"]) <= 86400
    assert "calls_per_day" in body["detail"]
    # the tenant itself is not limited: another key of acme still works
    assert call(gw, {"X-API-Key": create(config, "acme", "other")["key"]}).status_code == 200


def token(**over: Any) -> str:
    now = int(time.time())
    claims = {"iss": ISSUER, "aud": "aios-gateway", "sub": "svc-7", "org": "globex",
              "groups": ["mesh-reviewers"], "iat": now, "exp": now + 300, **over}
    return jwt.encode({k: v for k, v in claims.items() if v is not None}, KEY,
                      algorithm="RS256", headers={"kid": "k1"})


def test_jwt_bearer_tokens(setup: tuple[RunningGateway, Path]) -> None:
    gw, _ = setup
    ok = call(gw, {"Authorization": f"Bearer {token()}"})
    assert ok.status_code == 200, ok.text
    record = httpx.get(f"{gw.url}/v1/records/{ok.json()['record_id']}",
                       headers={"Authorization": f"Bearer {token()}"}, timeout=30)
    assert record.status_code == 200
    assert record.json()["tenant"] == "globex"  # from the token, never from the body
    for bad in (token(exp=int(time.time()) - 120), token(aud="other"), token(iss="x"),
                jwt.encode({"org": "acme"}, None, algorithm="none")):
        problem(call(gw, {"Authorization": f"Bearer {bad}"}), 401, "unauthenticated")
    problem(call(gw, {"Authorization": f"Bearer {token(org='initech')}"}), 403, "forbidden")
