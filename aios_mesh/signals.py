"""Deprecated: the record relay moved to :mod:`aios_mesh.recorder.relay` (``RecordRelay``).

This alias module stays for one release; importing it warns.
"""

from __future__ import annotations

import warnings

from aios_mesh.recorder.relay import (
    DECISION_EVENT_TYPE,
    DECISION_TOPIC,
    Factory,
    RecordRelay,
    RelayStats,
    decision_event,
)

SignalRelay = RecordRelay

__all__ = ["DECISION_EVENT_TYPE", "DECISION_TOPIC", "Factory", "RelayStats", "SignalRelay",
           "decision_event"]

warnings.warn("aios_mesh.signals is deprecated; import from aios_mesh.recorder.relay "
              "(SignalRelay is now RecordRelay)", DeprecationWarning, stacklevel=2)
