"""An anchored audit log: signed checkpoints of its head in a store apart from it.

See docs/governance/anchoring.md. The parts (imported from their modules, so loading the
config does not load the crypto library): :mod:`~aios_mesh.anchoring.keys` (Ed25519 keys,
signing), :mod:`~aios_mesh.anchoring.stores` (file, SQL and event-bus stores),
:mod:`~aios_mesh.anchoring.check` (anchoring and verifying), :mod:`~aios_mesh.anchoring.shipper`
(the relay's anchoring pass), :mod:`~aios_mesh.anchoring.config` (``[anchors]``); the data
types and errors are in :mod:`aios_mesh.ports.anchor`.
"""

__all__: list[str] = []
