"""Conformance suite of the policy port (:class:`aios_mesh.ports.policy.Policy`).

The suite ships its own bundle, ``aios_mesh/testing/conformance/policies/`` (packages
``conformance.*`` plus one ``data.json``); each test gets a fresh copy of it from the fixture
``policy_bundle``. The concrete class provides ``make_adapter``: a callable that builds an
adapter from a bundle folder (it may return the adapter or an awaitable of it). The mixins
build ``adapter`` from ``policy_bundle`` with it, build more adapters when a test changes the
bundle, and close them all::

    class TestRegoPolicy(PolicyBasic, PolicyObligations, PolicyErrors):
        @pytest.fixture
        def make_adapter(self):
            return RegoPolicy.from_path

An adapter for a policy server loads the folder into its server in ``make_adapter``.

What the suite pins down (docs/ports/policy.md has the whole contract):

* ``allow`` true/false → a :class:`Decision`; a deny is returned, never raised; a deny
  always has a reason (the policy's, or one naming the package);
* ``allow`` undefined → deny with reason ``"default deny: <pkg>.allow is undefined"``;
* ``bundle_hash`` is non-empty, equal for equal bundles, different when any file changes,
  and copied into every decision;
* obligations (``redact``, ``require_human``, ``max_cost``) come back in the decision;
* a non-boolean ``allow``, a malformed ``reason``/``obligations`` and a runtime error in Rego
  (conflicting complete rule, built-in error with strict built-in errors) raise
  :class:`InvalidOutput`; an unknown package raises :class:`NotFound` (not a silent deny:
  a typo in a capability's policy name is a bug); a syntax error fails when the bundle is
  loaded, with :class:`ConfigError` naming the file and line.
"""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
import re
import shutil
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from aios_mesh.errors import ConfigError, InvalidOutput, MeshError, NotFound
from aios_mesh.ports.base import Feature
from aios_mesh.ports.policy import Decision, Obligations, Policy, PolicyInput

__all__ = [
    "CONFORMANCE_BUNDLE",
    "PolicyBasic",
    "PolicyErrors",
    "PolicyFixtures",
    "PolicyObligations",
    "policy_input",
]

#: The folder of the shipped conformance bundle (read-only: tests use copies).
CONFORMANCE_BUNDLE = Path(__file__).with_name("policies")

BuildPolicy = Callable[[Path], Awaitable[Any]]


def policy_input(tenant: str = "acme", *, capability: str = "extract-invoice-fields",
                 capability_version: str = "1.0.0", data_classification: str = "internal",
                 cost_estimate: float = 0.0, model: str | None = None,
                 attributes: dict[str, Any] | None = None,
                 caller: str = "svc-conformance") -> PolicyInput:
    """A :class:`PolicyInput` with conformance defaults."""
    return PolicyInput(tenant=tenant, caller=caller, capability=capability,
                       capability_version=capability_version,
                       data_classification=data_classification, model=model,
                       cost_estimate=cost_estimate, attributes=dict(attributes or {}))


class PolicyFixtures:
    """``policy_bundle`` (a fresh copy of the shipped bundle), ``build_policy``, ``adapter``."""

    @pytest.fixture
    def policy_bundle(self, tmp_path: Path) -> Path:
        target = tmp_path / "policies"
        shutil.copytree(CONFORMANCE_BUNDLE, target,
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        return target

    @pytest.fixture
    def make_adapter(self) -> Callable[[Path], Any]:
        raise NotImplementedError(
            "the concrete test class must provide a `make_adapter` fixture: a callable "
            "folder -> adapter (or awaitable adapter)")

    @pytest.fixture
    async def build_policy(self, make_adapter: Callable[[Path], Any]
                           ) -> AsyncIterator[BuildPolicy]:
        made: list[Any] = []

        async def build(folder: Path) -> Any:
            built = make_adapter(folder)
            if inspect.isawaitable(built):
                built = await built
            made.append(built)
            return built

        yield build
        for built in made:
            await built.aclose()

    @pytest.fixture
    async def adapter(self, build_policy: BuildPolicy, policy_bundle: Path) -> Any:
        return await build_policy(policy_bundle)


class PolicyBasic(PolicyFixtures):
    """Allow, deny with a reason, default deny, the input document, data, the bundle hash."""

    async def test_is_a_policy(self, adapter: Any) -> None:
        assert isinstance(adapter, Policy)
        assert isinstance(adapter.features, frozenset)
        assert isinstance(adapter.bundle_hash, str)
        assert adapter.bundle_hash

    async def test_allow(self, adapter: Any) -> None:
        decision = await adapter.decide("conformance/basic", policy_input("acme"))
        assert isinstance(decision, Decision)
        assert decision.allow is True
        assert decision.reason is None
        assert decision.policy == "conformance/basic"
        assert decision.bundle_hash == adapter.bundle_hash

    async def test_path_spellings(self, adapter: Any) -> None:
        for path in ("conformance/basic", "conformance.basic"):
            allowed = await adapter.decide(path, policy_input("globex"))
            denied = await adapter.decide(path, policy_input("initech"))
            assert (allowed.allow, denied.allow) == (True, False), path
            assert allowed.policy == path

    async def test_deny_with_reason_is_returned_not_raised(self, adapter: Any) -> None:
        decision = await adapter.decide("conformance/basic", policy_input("initech"))
        assert decision.allow is False
        assert decision.reason == "tenant initech may not call extract-invoice-fields"
        assert decision.bundle_hash == adapter.bundle_hash

    async def test_false_without_reason_still_says_why(self, adapter: Any) -> None:
        decision = await adapter.decide("conformance/silent_deny", policy_input("acme"))
        assert decision.allow is False
        assert decision.reason
        assert "conformance.silent_deny" in decision.reason

    async def test_undefined_allow_is_default_deny(self, adapter: Any) -> None:
        allowed = await adapter.decide("conformance/undefined", policy_input("acme"))
        assert allowed.allow is True
        denied = await adapter.decide("conformance/undefined", policy_input("initech"))
        assert denied.allow is False
        assert denied.reason == "default deny: conformance.undefined.allow is undefined"

    async def test_input_document_reaches_the_policy(self, adapter: Any) -> None:
        good = policy_input(
            "acme", caller="svc-invoices", capability_version="2.1.0",
            data_classification="confidential", model="invoice-extractor@7",
            cost_estimate=0.25,
            attributes={"region": "eu", "pages": 3, "tags": ["urgent", "q3"],
                        "note": 'say "hi" \\ bye'})
        decision = await adapter.decide("conformance/input_document", good)
        assert decision.allow is True, decision.reason
        changed = dataclasses.replace(good, attributes={**good.attributes, "pages": 4})
        assert (await adapter.decide("conformance/input_document", changed)).allow is False

    async def test_data_document(self, adapter: Any) -> None:
        assert (await adapter.decide("conformance/with_data", policy_input("acme"))).allow
        for tenant in ("initech", "nobody"):
            decision = await adapter.decide("conformance/with_data", policy_input(tenant))
            assert decision.allow is False, tenant
            assert decision.reason == "tenant is not enabled in data.conformance_data"

    async def test_concurrent_decisions_do_not_mix(self, adapter: Any) -> None:
        tenants = ["acme", "initech", "globex", "hooli"] * 25
        decisions = await asyncio.gather(
            *(adapter.decide("conformance/basic", policy_input(t)) for t in tenants))
        for tenant, decision in zip(tenants, decisions, strict=True):
            assert decision.allow is (tenant in {"acme", "globex"}), tenant
            if not decision.allow:
                assert tenant in (decision.reason or "")

    async def test_bundle_hash_is_stable(self, adapter: Any, build_policy: BuildPolicy,
                                         policy_bundle: Path, tmp_path: Path) -> None:
        again = await build_policy(policy_bundle)
        assert again.bundle_hash == adapter.bundle_hash
        elsewhere = tmp_path / "elsewhere"
        shutil.copytree(policy_bundle, elsewhere)
        assert (await build_policy(elsewhere)).bundle_hash == adapter.bundle_hash

    async def test_bundle_hash_changes_when_a_file_changes(
            self, adapter: Any, build_policy: BuildPolicy, policy_bundle: Path) -> None:
        before = adapter.bundle_hash
        target = policy_bundle / "conformance" / "basic.rego"
        target.write_text(target.read_text(encoding="utf-8") + "\n# changed\n",
                          encoding="utf-8")
        edited = await build_policy(policy_bundle)
        assert edited.bundle_hash != before
        decision = await edited.decide("conformance/basic", policy_input("acme"))
        assert decision.bundle_hash == edited.bundle_hash
        data = policy_bundle / "conformance_data" / "data.json"
        data.write_text('{"tenants": {"acme": {"enabled": false}}}', encoding="utf-8")
        with_new_data = await build_policy(policy_bundle)
        assert with_new_data.bundle_hash not in {before, edited.bundle_hash}
        assert not (await with_new_data.decide("conformance/with_data",
                                               policy_input("acme"))).allow


class PolicyObligations(PolicyFixtures):
    """``redact``, ``require_human`` and ``max_cost`` come back in ``Decision.obligations``."""

    async def test_declares_obligations(self, adapter: Any) -> None:
        assert Feature.OBLIGATIONS in adapter.features

    async def test_obligations_of_an_allow(self, adapter: Any) -> None:
        decision = await adapter.decide(
            "conformance/obligations", policy_input(data_classification="restricted"))
        assert decision.allow is True
        assert isinstance(decision.obligations, Obligations)
        assert sorted(decision.obligations.redact) == ["email", "iban"]
        assert isinstance(decision.obligations.redact, tuple)
        assert decision.obligations.require_human is True
        assert decision.obligations.max_cost == 2.5

    async def test_obligations_follow_the_input(self, adapter: Any) -> None:
        decision = await adapter.decide(
            "conformance/obligations", policy_input(data_classification="internal"))
        assert decision.obligations == Obligations(redact=("email",), require_human=False,
                                                   max_cost=2.5)

    async def test_no_obligations_means_defaults(self, adapter: Any) -> None:
        decision = await adapter.decide("conformance/no_obligations", policy_input())
        assert decision.allow is True
        assert decision.obligations == Obligations()

    async def test_deny_with_obligations_is_still_a_deny(self, adapter: Any) -> None:
        decision = await adapter.decide("conformance/obligations",
                                        policy_input(cost_estimate=11.0))
        assert decision.allow is False
        assert decision.reason

    async def test_malformed_obligations_are_invalid_output(self, adapter: Any) -> None:
        with pytest.raises(InvalidOutput, match=r"conformance\.errors\.bad_obligations"):
            await adapter.decide("conformance/errors/bad_obligations", policy_input())


class PolicyErrors(PolicyFixtures):
    """Typed errors: bad output, Rego runtime errors, unknown package, syntax at load."""

    async def test_non_boolean_allow(self, adapter: Any) -> None:
        with pytest.raises(InvalidOutput) as info:
            await adapter.decide("conformance/errors/non_boolean", policy_input())
        assert "conformance.errors.non_boolean" in str(info.value)
        assert "allow" in str(info.value)

    async def test_non_string_reason(self, adapter: Any) -> None:
        with pytest.raises(InvalidOutput, match="reason"):
            await adapter.decide("conformance/errors/bad_reason", policy_input())

    async def test_conflicting_complete_rule(self, adapter: Any) -> None:
        ok = await adapter.decide("conformance/errors/conflict",
                                  policy_input(attributes={"a": True}))
        assert ok.allow is True
        with pytest.raises(InvalidOutput, match=r"conformance\.errors\.conflict"):
            await adapter.decide("conformance/errors/conflict",
                                 policy_input(attributes={"a": True, "b": True}))

    async def test_builtin_error(self, adapter: Any) -> None:
        ok = await adapter.decide("conformance/errors/builtin",
                                  policy_input(attributes={"amount": "12"}))
        assert ok.allow is True
        with pytest.raises(InvalidOutput, match=r"conformance\.errors\.builtin"):
            await adapter.decide("conformance/errors/builtin",
                                 policy_input(attributes={"amount": "twelve"}))

    async def test_unknown_package_is_not_found(self, adapter: Any) -> None:
        for path in ("conformance/nope", "conformance/errors", "nothing.here"):
            with pytest.raises(NotFound):
                await adapter.decide(path, policy_input())

    async def test_errors_do_not_poison_the_adapter(self, adapter: Any) -> None:
        for _ in range(3):
            with pytest.raises(MeshError):
                await adapter.decide("conformance/errors/conflict",
                                     policy_input(attributes={"a": True, "b": True}))
            decision = await adapter.decide("conformance/basic", policy_input("acme"))
            assert decision.allow is True

    async def test_syntax_error_fails_at_load(self, build_policy: BuildPolicy,
                                              policy_bundle: Path) -> None:
        broken = policy_bundle / "conformance" / "broken.rego"
        broken.write_text("package conformance.broken\n\nallow if {\n  input.x ==\n}\n",
                          encoding="utf-8")
        with pytest.raises(ConfigError) as info:
            await build_policy(policy_bundle)
        text = str(info.value)
        assert "broken.rego" in text
        assert re.search(r"broken\.rego:4\b", text), text
