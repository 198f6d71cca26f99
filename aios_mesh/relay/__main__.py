"""The relay's child process: ``python -m aios_mesh.relay`` (started by
:class:`~aios_mesh.relay.runner.ProcessRunner`; not a command for people).

stdin: the :class:`~aios_mesh.relay.runner.RelaySpec` as one JSON line, then messages, one
per line: ``poke``, ``drain <id>``, ``stop``. End of input means the parent is gone: ship once
more, then exit. stdout: ``drained <id> <1|0> <stats JSON>`` per drain. Logs go to stderr.
"""

from __future__ import annotations

import logging
import queue
import signal
import sys
import threading
from typing import IO, Any

import orjson

from aios_mesh.relay.loop import Message
from aios_mesh.relay.runner import RelaySpec, driver_for, relay_loop


def _read(stdin: IO[bytes], inbox: queue.Queue[Message]) -> None:
    for line in stdin:
        word, _, rest = line.strip().partition(b" ")
        if word == b"poke":
            inbox.put(Message("poke"))
        elif word == b"drain" and rest.isdigit():
            inbox.put(Message("drain", int(rest)))
        elif word == b"stop":
            break
    inbox.put(Message("stop"))


def main() -> int:
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr,
                        format="aios-mesh relay: %(levelname)s %(name)s: %(message)s")
    # The parent decides when the relay stops (it closes stdin); a terminal's Ctrl-C goes
    # to the parent's process group, not here, and SIGTERM ends the relay in order.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    spec = RelaySpec.from_json(sys.stdin.buffer.readline())
    audit, lineage, bus = spec.factories()
    driver = driver_for(spec, lambda: relay_loop(spec, audit=audit, lineage=lineage, bus=bus))
    inbox: queue.Queue[Message] = queue.Queue()
    signal.signal(signal.SIGTERM, lambda *_: inbox.put(Message("stop")))
    threading.Thread(target=_read, args=(sys.stdin.buffer, inbox), daemon=True).start()
    out = sys.stdout.buffer
    lock = threading.Lock()

    def reply(ident: int, caught_up: bool, stats: dict[str, Any]) -> None:
        with lock:
            out.write(b"drained %d %d %s\n" % (ident, caught_up, orjson.dumps(stats)))
            out.flush()

    driver.run(inbox, reply)
    return 0


if __name__ == "__main__":
    sys.exit(main())
