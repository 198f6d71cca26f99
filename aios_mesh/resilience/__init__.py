"""Resilience primitives used by the invoke step: retry budget and circuit breaker."""

from aios_mesh.resilience.breaker import BreakerState, CircuitBreaker
from aios_mesh.resilience.retry import RetryBudget, backoff_delay

__all__ = ["BreakerState", "CircuitBreaker", "RetryBudget", "backoff_delay"]
