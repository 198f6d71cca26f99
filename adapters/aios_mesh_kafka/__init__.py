"""Kafka EventBus for aios-mesh (kafka-python).

``kafka://host:9092?bootstrap=host2:9092&client_id=aios-mesh&session_timeout_ms=6000&max_attempts=5``.
See docs/adapters/kafka.md. Nothing from ``kafka`` is imported until the bus is first used.
"""

from aios_mesh_kafka.bus import KafkaEventBus, KafkaSubscription

__all__ = ["KafkaEventBus", "KafkaSubscription"]
