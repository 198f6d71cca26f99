"""Test support shipped inside the package.

* :mod:`aios_mesh.testing.conformance` — one suite of mixins per port; a new adapter proves it
  is swappable by passing them (``class TestMine(PolicyBasic, MyFixtures): ...``).
* :mod:`aios_mesh.testing.processes` — start a real backend as a local process on a free
  127.0.0.1 port, wait until it answers, and stop it by PID.
"""

from aios_mesh.testing.processes import LocalProcess, free_port, start_process, wait_for_port

__all__ = ["LocalProcess", "free_port", "start_process", "wait_for_port"]
