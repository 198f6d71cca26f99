"""NATS JetStream EventBus for aios-mesh (nats-py).

``nats://host:4222?stream=AIOS_MESH&max_attempts=5``. See docs/adapters/nats.md.
Nothing from ``nats`` is imported until the bus is first used.
"""

from aios_mesh_nats.bus import NatsEventBus, NatsSubscription

__all__ = ["NatsEventBus", "NatsSubscription"]
