"""Policy gate: ask the Policy port, cache the decision, raise on deny, keep obligations."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable

import orjson

from aios_mesh.capabilities import CapabilitySpec
from aios_mesh.errors import PolicyDenied
from aios_mesh.pipeline.call import Call
from aios_mesh.pipeline.runner import StepBase
from aios_mesh.ports.policy import Decision, Policy, PolicyInput

__all__ = ["DecisionCache", "PolicyStep"]


class DecisionCache:
    """LRU with TTL, keyed by (bundle hash, policy path, canonical input)."""

    def __init__(self, size: int, ttl_s: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.size = size
        self.ttl_s = ttl_s
        self._clock = clock
        self._data: OrderedDict[bytes, tuple[float, Decision]] = OrderedDict()
        self.hits = 0
        self.misses = 0

    def get(self, key: bytes) -> Decision | None:
        hit = self._data.get(key)
        if hit is None or self._clock() - hit[0] >= self.ttl_s:
            self.misses += 1
            return None
        self._data.move_to_end(key)
        self.hits += 1
        return hit[1]

    def put(self, key: bytes, decision: Decision) -> None:
        if self.size <= 0:
            return
        self._data[key] = (self._clock(), decision)
        self._data.move_to_end(key)
        while len(self._data) > self.size:
            self._data.popitem(last=False)


class PolicyStep(StepBase):
    name = "policy"

    def applies(self, spec: CapabilitySpec) -> bool:
        return spec.policy is not None

    def __init__(self, policy: Callable[[], Policy], cache: DecisionCache) -> None:
        self._policy = policy
        self.cache = cache

    async def before(self, call: Call) -> None:
        spec = call.spec
        if spec.policy is None:
            return
        policy = self._policy()
        pin = PolicyInput(tenant=call.tenant, caller=call.caller, capability=spec.name,
                          capability_version=spec.version,
                          data_classification=spec.data_classification, model=spec.model,
                          cost_estimate=round(spec.price.cost(spec.estimate), 6),
                          attributes=call.attributes)
        doc = pin.to_document()
        call.policy_input = doc
        key = b"\0".join((policy.bundle_hash.encode(), spec.policy.encode(),
                          orjson.dumps(doc, option=orjson.OPT_SORT_KEYS)))
        decision = self.cache.get(key)
        if decision is None:
            decision = await policy.decide(spec.policy, pin)
            self.cache.put(key, decision)
        else:
            call.policy_cached = True
        call.decision = decision
        if not decision.allow:
            raise PolicyDenied(f"policy {spec.policy} denied {spec.name} for tenant "
                               f"{call.tenant}", reason=decision.reason, policy=spec.policy)
        cap = decision.obligations.max_cost
        if cap is not None and pin.cost_estimate > cap:
            raise PolicyDenied(f"estimated cost {pin.cost_estimate:.4f} exceeds the policy's "
                               f"max_cost {cap:.4f}", reason="max_cost obligation",
                               policy=spec.policy)
