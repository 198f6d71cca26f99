"""Resilience primitives used by the invoke step: retry budget, circuit breakers, and the
per-tenant bulkheads around them."""

from aios_mesh.resilience.breaker import BreakerState, CircuitBreaker
from aios_mesh.resilience.bulkhead import BreakerBoard, Bulkhead
from aios_mesh.resilience.retry import RetryBudget, backoff_delay

__all__ = ["BreakerBoard", "BreakerState", "Bulkhead", "CircuitBreaker", "RetryBudget",
           "backoff_delay"]
