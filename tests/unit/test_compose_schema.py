"""compose/: every compose file is valid against the Compose Specification schema, binds to
127.0.0.1 only, pins its images and has healthchecks; the config profile loads and every port
in it resolves to a known adapter scheme.

The schema is the copy vendored at ``tests/data/compose-spec.json`` (upstream commit in
``tests/data/README.md``); it is resolved through a ``referencing`` registry, so nothing is
fetched from the network and nothing outside the repository is read.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT7

from aios_mesh.backends import PORTS, known_schemes, parse_url
from aios_mesh.config import load_config

REPO_ROOT = Path(__file__).resolve().parents[2]
COMPOSE_DIR = REPO_ROOT / "compose"
SCHEMA_PATH = REPO_ROOT / "tests" / "data" / "compose-spec.json"
PROFILE = COMPOSE_DIR / "aios-mesh.compose.toml"
COMPOSE_FILES = sorted([*COMPOSE_DIR.glob("*.yml"), *COMPOSE_DIR.glob("*.yaml")])
#: Services a full deployment needs (ARCHITECTURE.md, compose/ row).
REQUIRED_SERVICES = {"kafka", "qdrant", "opa", "mlflow", "mlflow-db", "triton", "marquez",
                     "marquez-db", "redis", "postgres", "gateway"}


@pytest.fixture(scope="module")
def validator() -> jsonschema.protocols.Validator:
    schema = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
    resource = Resource.from_contents(schema, default_specification=DRAFT7)
    registry: Registry[Any] = Registry().with_resource(schema.get("$id", "compose_spec.json"),
                                                      resource)
    cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft7Validator)
    cls.check_schema(schema)
    return cls(schema, registry=registry)


def _load(path: Path) -> dict[str, Any]:
    doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert isinstance(doc, dict), f"{path} is not a YAML mapping"
    return doc


def test_there_is_a_compose_file() -> None:
    assert COMPOSE_DIR / "docker-compose.yml" in COMPOSE_FILES


@pytest.mark.parametrize("path", COMPOSE_FILES, ids=lambda p: p.name)
def test_compose_file_matches_the_spec(path: Path,
                                       validator: jsonschema.protocols.Validator) -> None:
    errors = sorted(validator.iter_errors(_load(path)), key=lambda e: list(e.absolute_path))
    assert not errors, "\n".join(
        f"{'/'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}" for e in errors[:10])


def test_the_validator_rejects_a_broken_file(validator: jsonschema.protocols.Validator) -> None:
    assert not validator.is_valid({"services": {"x": {"image": 3, "bogus": True}}})


@pytest.mark.parametrize("path", COMPOSE_FILES, ids=lambda p: p.name)
def test_ports_images_and_healthchecks(path: Path) -> None:
    services: dict[str, Any] = _load(path)["services"]
    if path.name == "docker-compose.yml":
        assert set(services) >= REQUIRED_SERVICES, REQUIRED_SERVICES - set(services)
    for name, service in services.items():
        image = service.get("image")
        assert image, f"{name}: no image"
        tag = image.rsplit("/", 1)[-1].partition(":")[2]
        assert tag and tag != "latest" and re.search(r"\d", tag), f"{name}: unpinned {image}"
        assert "healthcheck" in service, f"{name}: no healthcheck"
        for port in service.get("ports", []):
            text = port if isinstance(port, str) else f"{port.get('host_ip', '')}:"
            assert text.startswith("127.0.0.1:"), f"{name}: {port!r} is not bound to 127.0.0.1"


def test_profile_loads_and_every_port_resolves() -> None:
    config = load_config(PROFILE)
    backends = config.backends
    for port in PORTS:
        url = getattr(backends, port)
        assert url, f"the profile sets no {port} URL"
        scheme = parse_url(url).scheme
        assert scheme in known_schemes(port), f"{port}: unknown scheme {scheme!r}"


def test_profile_points_at_the_published_ports() -> None:
    services: dict[str, Any] = _load(COMPOSE_DIR / "docker-compose.yml")["services"]
    published: set[int] = set()
    for service in services.values():
        for port in service.get("ports", []):
            match = re.fullmatch(r"127\.0\.0\.1:(?:\$\{[A-Z_]+:-)?(\d+)\}?:\d+", str(port))
            assert match, port
            published.add(int(match[1]))
    config = load_config(PROFILE)
    for port in PORTS:
        parsed = parse_url(getattr(config.backends, port))
        if parsed.host is not None:
            assert parsed.host == "127.0.0.1", port
            assert parsed.port in published, f"{port}: nothing publishes {parsed.port}"


def test_gateway_service_serves_the_stack() -> None:
    """The gateway starts once Redis and PostgreSQL are healthy, is healthy when /healthz
    answers, and its config names the stack's servers by their service names."""
    services: dict[str, Any] = _load(COMPOSE_DIR / "docker-compose.yml")["services"]
    gateway = services["gateway"]
    healthy = {name for name, dep in gateway["depends_on"].items()
               if dep["condition"] == "service_healthy"}
    assert healthy >= {"redis", "postgres"}
    assert "http://127.0.0.1:8080/healthz" in " ".join(gateway["healthcheck"]["test"])
    assert gateway["command"][:2] == ["aios-mesh", "gateway"]
    assert "--port=8080" in gateway["command"] and "--host=0.0.0.0" in gateway["command"]
    mounts = dict(reversed(v.split(":")[:2]) for v in gateway["volumes"])
    flag = next(a for a in gateway["command"] if a.startswith("--config="))
    config = load_config(COMPOSE_DIR / mounts[flag.split("=", 1)[1]])
    for port in PORTS:
        parsed = parse_url(getattr(config.backends, port))
        assert parsed.scheme in known_schemes(port), port
        assert parsed.host is None or parsed.host in services, f"{port}: {parsed.host}"
    assert config.backends.state is not None
    state = parse_url(config.backends.state)
    assert state.host == "postgres" and state.host in services
    # the host profile keeps keys in the same database the gateway reads them from
    host_state = load_config(PROFILE).backends.state
    assert host_state is not None and parse_url(host_state).path == state.path
