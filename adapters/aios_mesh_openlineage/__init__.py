"""OpenLineage emitter for aios-mesh: file, HTTP and Kafka transports.

``openlineage+file:///lineage`` (the embedded default), ``openlineage+http://host:5000``,
``openlineage+kafka://host:9092?topic=openlineage.events``. See docs/adapters/openlineage.md.
Nothing from ``openlineage`` (or ``kafka``) is imported until the first event is emitted.
"""

from aios_mesh_openlineage.emitter import OpenLineageEmitter

__all__ = ["OpenLineageEmitter"]
