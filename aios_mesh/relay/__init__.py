"""The background relay: ships every durable outbox of a state folder — decision records to
lineage and the event bus, ``mesh.publish`` events to the bus — off the caller's path.

It starts with the :class:`~aios_mesh.Mesh` (and so with the worker), runs in a child process
by default (:mod:`aios_mesh.relay.runner` says why), retries each sink with backoff, and one
relay per state folder ships at a time. ``mesh.flush()`` returns True only once everything
is shipped.
"""

from aios_mesh.relay.loop import Message, OutboxShipper, RelayDriver, RelayLock, RelayLoop, Shipper
from aios_mesh.relay.runner import ProcessRunner, RelayRunner, RelaySpec, ThreadRunner, relay_loop

__all__ = ["Message", "OutboxShipper", "ProcessRunner", "RelayDriver", "RelayLock", "RelayLoop",
           "RelayRunner", "RelaySpec", "Shipper", "ThreadRunner", "relay_loop"]
