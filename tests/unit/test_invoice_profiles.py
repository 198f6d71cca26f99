"""Every invoice-intake profile is a valid mesh config once the driver has written it."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from aios_mesh.config import load_config
from examples.invoice_intake.run import PROFILES, _toml, effective_config
from tests.conftest import REPO_ROOT
from tests.containers import compose_stack

PROFILE_FILES = sorted(PROFILES.glob("*.toml"))


def test_there_are_four_profiles() -> None:
    assert {p.stem for p in PROFILE_FILES} == {"embedded", "servers", "gateway", "compose"}


@pytest.mark.parametrize("profile", PROFILE_FILES, ids=lambda p: p.stem)
def test_profile_becomes_a_valid_config(profile: Path, tmp_path: Path) -> None:
    config = load_config(effective_config(profile, tmp_path))
    assert config.state_dir == str(tmp_path) or Path(config.state_dir) == tmp_path
    assert set(config.tenants) == {"acme", "globex", "initech"}
    assert "embedder" in config.backends.serving_named


def test_profiles_differ_only_in_backends_and_driver_options() -> None:
    docs = {p.stem: tomllib.loads(p.read_text()) for p in PROFILE_FILES}
    for doc in docs.values():
        doc.pop("backends", None)
        doc.pop("intake", None)
    # The compose stack's OPA server loads the policy bundle itself, so the mesh cannot see
    # the input schemas there: that profile alone cannot require them.
    for key in ("require_schema", "on_schema_mismatch"):
        docs["compose"]["policy"].pop(key, None)
        assert docs["embedded"]["policy"].pop(key) == docs["servers"]["policy"].pop(key) \
            == docs["gateway"]["policy"].pop(key)
    assert docs["embedded"] == docs["servers"] == docs["gateway"] == docs["compose"]


def test_backend_urls_replace_the_profiles(tmp_path: Path) -> None:
    path = effective_config(PROFILES / "servers.toml", tmp_path,
                            {"registry": "mlflow+http://127.0.0.1:1234",
                             "serving_named": {"embedder": "inprocess://"}})
    config = load_config(path)
    assert config.backends.registry == "mlflow+http://127.0.0.1:1234"
    assert config.backends.serving is None


_keys = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=1,
                max_size=8)
_scalars = st.one_of(st.booleans(), st.integers(-10**9, 10**9),
                     st.floats(allow_nan=False, allow_infinity=False),
                     st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)),
                             max_size=12))
_values = st.recursive(_scalars, lambda inner: st.lists(inner, max_size=3)
                       | st.dictionaries(_keys, inner, max_size=3), max_leaves=8)


@given(st.dictionaries(_keys, st.one_of(_values, st.dictionaries(_keys, _values, max_size=3)),
                       max_size=5))
def test_toml_writer_round_trips(doc: dict) -> None:
    assert tomllib.loads(_toml(doc)) == doc


@pytest.mark.docker
def test_compose_profile_against_the_compose_stack(tmp_path: Path) -> None:
    """Runs the example on the compose/ stack (testcontainers' ``DockerCompose``: ``up --wait``,
    then ``down --volumes``). Needs a Docker engine with the compose plugin."""
    from examples.invoice_intake.run import run

    state = tmp_path / "state"
    with compose_stack(REPO_ROOT, "compose/docker-compose.yml", what="the compose/ stack",
                       env={"AIOS_MESH_POLICIES": "../examples/invoice_intake/policies"},
                       env_dir=tmp_path):
        result = run(profile=PROFILES / "compose.toml", state=state, n=60)
        assert result.exit_code == 0
