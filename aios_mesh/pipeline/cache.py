"""Response cache: a repeated question to the same capability version and model version, from
the same tenant, is answered without calling the backend.

Key = tenant + capability@version + model name/version + sha256 of the normalised input, so
moving an alias (a new model version) can never serve an old answer. Only plain successful
answers are cached (not reviews, not fallbacks). Opt in per capability with ``cache_ttl_s``.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable

from aios_mesh.capabilities import CapabilitySpec
from aios_mesh.pipeline.call import Call
from aios_mesh.pipeline.runner import StepBase
from aios_mesh.ports.serving import Prediction, Usage

__all__ = ["CacheStep", "ResponseCache"]


class ResponseCache:
    """Thread-safe LRU with a TTL per entry."""

    def __init__(self, max_entries: int = 10_000,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.max_entries = max_entries
        self._clock = clock
        self._data: OrderedDict[str, tuple[float, Prediction]] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def get(self, key: str) -> Prediction | None:
        with self._lock:
            hit = self._data.get(key)
            if hit is None or hit[0] < self._clock():
                self.misses += 1
                return None
            self._data.move_to_end(key)
            self.hits += 1
            return hit[1]

    def put(self, key: str, prediction: Prediction, ttl_s: float) -> None:
        with self._lock:
            self._data[key] = (self._clock() + ttl_s, prediction)
            self._data.move_to_end(key)
            while len(self._data) > self.max_entries:
                self._data.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._data.clear()


def cache_key(call: Call) -> str | None:
    spec, ref = call.spec, call.model_ref
    if spec.cache_ttl_s is None or ref is None or call.input_sha256 is None:
        return None
    # a generation's answer depends on the prompt version it rendered as much as the model's
    prompt = "" if call.prompt is None else f"{call.prompt.name}/{call.prompt.version}"
    return (f"{call.tenant}\0{spec.key}\0{ref.name}\0{ref.version}\0{prompt}\0"
            f"{call.input_sha256}")


class CacheStep(StepBase):
    name = "cache"

    def applies(self, spec: CapabilitySpec) -> bool:
        return spec.cache_ttl_s is not None

    def __init__(self, cache: ResponseCache) -> None:
        self.cache = cache

    async def before(self, call: Call) -> None:
        key = cache_key(call) if call.mode != "stream" else None  # a stream is never cached
        if key is None:
            return
        hit = self.cache.get(key)
        if hit is None:
            call.cache = "miss"
            return
        call.cache = "hit"
        call.prediction = hit
        call.output = call.spec.output.model_validate(hit.output)
        call.usage = Usage(calls=0)  # nothing was called, nothing is charged
        call.cost = 0.0

    async def after(self, call: Call) -> None:
        if call.cache != "miss" or call.review_id or call.fallback or call.prediction is None:
            return
        key = cache_key(call)
        if key is not None and call.spec.cache_ttl_s is not None:
            self.cache.put(key, call.prediction, call.spec.cache_ttl_s)
