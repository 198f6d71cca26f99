"""Test support shipped inside the package.

* :mod:`aios_mesh.testing.conformance` — one suite of mixins per port; a new adapter proves it
  is swappable by passing them (``class TestMine(PolicyBasic, MyFixtures): ...``).
* :mod:`aios_mesh.testing.processes` — start a real backend as a local process on a free
  127.0.0.1 port, wait until it answers, and stop it by PID.
* :mod:`aios_mesh.testing.servers` — :func:`launcher` finds the server launchers the adapters
  register (``launcher("kafka")``, ``launcher("postgres")`` ...; entry-point group
  ``aios_mesh.testing.launchers``), and the :class:`Server` they yield.
"""

from aios_mesh.testing.processes import LocalProcess, free_port, start_process, wait_for_port
from aios_mesh.testing.servers import Server, launcher, launcher_names

__all__ = ["LocalProcess", "Server", "free_port", "launcher", "launcher_names", "start_process",
           "wait_for_port"]
