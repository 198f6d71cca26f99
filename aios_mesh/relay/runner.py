"""Where the relay runs: in a child process (the default) or on a thread.

The relay's work — reading the audit log, building lineage and decision events, writing them
to the bus — is CPU work in Python. On a thread it shares the caller's GIL: a batch of a few
hundred records holds it for milliseconds, and a call that arrives meanwhile waits (measured:
p99 added 6–9 ms on the overhead benchmark). In a child process the same work runs on another
core and the caller pays one ``write`` to a pipe per wake-up. So :class:`ProcessRunner` is the
default; :class:`ThreadRunner` is used when an adapter was given as a Python object (a child
process cannot share it) or when ``[relay] mode = "thread"``.

Both drive the same :class:`~aios_mesh.relay.loop.RelayDriver`; they differ only in how
messages and replies travel (a queue and a callback, or the child's stdin and stdout).

The child is ``python -m aios_mesh.relay``. It reads its :class:`RelaySpec` (JSON) as the
first line of stdin — never from the command line, where URLs with passwords would show in
``ps`` — then one message per line. It ships until stdin closes: when the parent exits, even by
``kill -9``, the child ships once more and ends.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, Any, Protocol

import orjson

from aios_mesh.anchoring.config import AnchorConfig
from aios_mesh.anchoring.shipper import anchor_shipper, rebaselines
from aios_mesh.backends import load_adapter
from aios_mesh.ports.audit import AuditLog
from aios_mesh.ports.events import EventBus
from aios_mesh.ports.lineage import Lineage
from aios_mesh.recorder.relay import Factory, RecordRelay, RelayStats
from aios_mesh.relay.loop import Message, OutboxShipper, RelayDriver, RelayLoop, Shipper

__all__ = ["ProcessRunner", "RelayRunner", "RelaySpec", "ThreadRunner", "relay_loop"]

_log = logging.getLogger("aios_mesh.relay")

CURSOR_FILE = "signals.cursor"
OUTBOX_FILE = "outbox.db"
LOCK_FILE = "relay.lock"


class RelayRunner(Protocol):
    """The handle a mesh holds on its relay, wherever it runs."""

    mode: str

    def start(self) -> None: ...

    def poke(self) -> None:
        """Something was recorded or published: ship soon (cheap; call after every call)."""
        ...

    def drain(self, timeout: float = 10.0) -> bool:
        """Wait until everything recorded and published so far is shipped; False on timeout
        (e.g. the bus is down: what is pending stays durable and goes out later)."""
        ...

    def stop(self, timeout: float = 120.0) -> None:
        """Ship what is left (up to ``timeout``), then stop."""
        ...

    @property
    def stats(self) -> RelayStats: ...


@dataclass(frozen=True, slots=True)
class RelaySpec:
    """Everything a relay needs to run on its own, as plain data (URLs, not adapters)."""

    state_dir: str
    audit: str
    events: str
    lineage: str | None = None  #: None: lineage is off
    decision_events: bool = True
    interval_s: float = 0.5
    linger_s: float = 0.05
    max_backoff_s: float = 10.0
    #: ``[anchors]`` with absolute key paths (:meth:`AnchorConfig.to_spec`); None: off
    anchors: dict[str, Any] | None = None

    def to_json(self) -> bytes:
        return orjson.dumps(asdict(self))

    @classmethod
    def from_json(cls, raw: bytes) -> RelaySpec:
        return cls(**orjson.loads(raw))

    @property
    def state_path(self) -> Path:
        return Path(self.state_dir)

    def factories(self) -> tuple[Factory[AuditLog], Factory[Lineage] | None, Factory[EventBus]]:
        """Adapters built from the URLs (what the child process uses)."""
        base = self.state_path

        def make(port: Any, url: str) -> Factory[Any]:
            return lambda: (load_adapter(port, url, base_dir=base), True)

        lineage = self.lineage
        return (make("audit", self.audit), make("lineage", lineage) if lineage else None,
                make("events", self.events))


def _shared(factory: Factory[Any]) -> Factory[Any]:
    """One adapter for several shippers; the first one to ask owns (and closes) it."""
    made: list[Any] = []

    def get() -> tuple[Any, bool]:
        if made:
            return made[0], False
        adapter, owned = factory()
        made.append(adapter)
        return adapter, owned

    return get


def relay_loop(spec: RelaySpec, *, audit: Factory[AuditLog], lineage: Factory[Lineage] | None,
               bus: Factory[EventBus]) -> RelayLoop:
    """The shippers of one state folder: decision records (when lineage or decision events
    are on), then the application outbox, then audit anchors (when ``[anchors]`` is set)."""
    bus = _shared(bus)
    anchors = AnchorConfig.model_validate(spec.anchors) if spec.anchors else None
    shippers: list[Shipper] = []
    if lineage is not None or spec.decision_events:
        shippers.append(RecordRelay(
            audit=audit, lineage=lineage, bus=bus if spec.decision_events else None,
            cursor_path=spec.state_path / CURSOR_FILE,
            rebaselines=rebaselines(anchors, state_dir=spec.state_path, bus=bus)
            if anchors else None))
    shippers.append(OutboxShipper(spec.state_path / OUTBOX_FILE, bus))
    if anchors is not None:
        shippers.append(anchor_shipper(anchors, audit=audit, state_dir=spec.state_path,
                                       bus=bus))
    return RelayLoop(shippers, max_backoff_s=spec.max_backoff_s)


def driver_for(spec: RelaySpec, build: Callable[[], RelayLoop]) -> RelayDriver:
    return RelayDriver(build, lock_path=spec.state_path / LOCK_FILE,
                       interval_s=spec.interval_s, linger_s=spec.linger_s)


class _Pokes:
    """Skips a poke when one went out moments ago: the driver lingers ``linger_s`` after a
    poke and reads the log after that, so a poke within half of it adds nothing (and a
    missed one is caught by the driver's idle pass)."""

    def __init__(self, linger_s: float) -> None:
        self.every = linger_s / 2
        self.last = -1e9

    def due(self) -> bool:
        now = time.monotonic()
        if now - self.last < self.every:
            return False
        self.last = now
        return True


class _Waiters:
    """Drain requests waiting for their reply."""

    def __init__(self) -> None:
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self._waiting: dict[int, tuple[threading.Event, list[bool]]] = {}
        self.stats = RelayStats()

    def new(self) -> tuple[int, threading.Event, list[bool]]:
        ident, done = next(self._ids), threading.Event()
        result: list[bool] = []
        with self._lock:
            self._waiting[ident] = (done, result)
        return ident, done, result

    def answer(self, ident: int, caught_up: bool, stats: dict[str, Any]) -> None:
        self.stats = RelayStats(**{k: v for k, v in stats.items()
                                   if k in RelayStats.__dataclass_fields__})
        with self._lock:
            found = self._waiting.pop(ident, None)
        if found is not None:
            found[1].append(caught_up)
            found[0].set()

    def fail_all(self) -> None:
        with self._lock:
            waiting, self._waiting = self._waiting, {}
        for done, result in waiting.values():
            result.append(False)
            done.set()

    def drain(self, send: Callable[[Message], bool], timeout: float) -> bool:
        """Ask until the relay says it is caught up or ``timeout`` passes."""
        deadline = time.monotonic() + timeout
        pause = 0.02
        while True:
            ident, done, result = self.new()
            left = max(0.0, deadline - time.monotonic())
            if send(Message("drain", ident)) and done.wait(left) and result and result[0]:
                return True
            with self._lock:
                self._waiting.pop(ident, None)
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            time.sleep(min(pause, left))  # behind (a sink is down): ask again, less often
            pause = min(pause * 2, 1.0)


class ThreadRunner:
    """The relay on a daemon thread of this process."""

    mode = "thread"

    def __init__(self, spec: RelaySpec, build: Callable[[], RelayLoop]) -> None:
        self.spec = spec
        self._driver = driver_for(spec, build)
        self._inbox: queue.Queue[Message] = queue.Queue()
        self._waiters = _Waiters()
        self._pokes = _Pokes(spec.linger_s)
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    @property
    def stats(self) -> RelayStats:
        return self._waiters.stats

    def start(self) -> None:
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._main, daemon=True,
                                                name="aios-mesh-relay")
                self._thread.start()

    def _main(self) -> None:
        try:
            self._driver.run(self._inbox, self._waiters.answer)
        except Exception:
            if threading.main_thread().is_alive():  # not interpreter exit
                _log.exception("relay thread ended; what is pending ships on the next start")
        finally:
            self._waiters.fail_all()

    def _send(self, message: Message) -> bool:
        self.start()
        self._inbox.put(message)
        return True

    def poke(self) -> None:
        if self._pokes.due():
            self._send(Message("poke"))

    def drain(self, timeout: float = 10.0) -> bool:
        return self._waiters.drain(self._send, timeout)

    def stop(self, timeout: float = 120.0) -> None:
        thread = self._thread
        if thread is None:
            return
        self._inbox.put(Message("stop"))
        thread.join(timeout)
        if thread.is_alive():
            _log.warning("relay still shipping after %.0fs; the rest resumes on the next "
                         "start", timeout)
        self._thread = None


class ProcessRunner:
    """The relay in a child process (``python -m aios_mesh.relay``), restarted if it dies."""

    mode = "process"
    #: a child that died is not restarted more often than this (seconds)
    restart_after_s = 1.0

    def __init__(self, spec: RelaySpec) -> None:
        self.spec = spec
        self._proc: subprocess.Popen[bytes] | None = None
        self._waiters = _Waiters()
        self._pokes = _Pokes(spec.linger_s)
        self._lock = threading.Lock()
        self._started_at = -1e9

    @property
    def stats(self) -> RelayStats:
        return self._waiters.stats

    @property
    def pid(self) -> int | None:
        """The child's process id (None before it starts)."""
        return self._proc.pid if self._proc is not None else None

    def start(self) -> None:
        with self._lock:
            self._ensure()

    def _ensure(self) -> subprocess.Popen[bytes] | None:
        proc = self._proc
        if proc is not None and proc.poll() is None:
            return proc
        if proc is not None:
            _log.warning("relay process %s exited with %s; starting a new one", proc.pid,
                         proc.returncode)
            self._reap(proc)
        if time.monotonic() - self._started_at < self.restart_after_s:
            return None
        self._started_at = time.monotonic()
        # A session of its own: Ctrl-C in a terminal reaches the parent, which stops the
        # child in order (the child ends on its own when the parent is gone).
        # The child imports what this process imports (a source checkout on sys.path,
        # a test's worktree), not whatever the interpreter would find on its own.
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
        proc = subprocess.Popen([sys.executable, "-m", "aios_mesh.relay"],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                start_new_session=True, env=env)
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.write(self.spec.to_json() + b"\n")
        proc.stdin.flush()
        os.set_blocking(proc.stdin.fileno(), False)
        threading.Thread(target=self._read, args=(proc.stdout,), daemon=True,
                         name="aios-mesh-relay-reader").start()
        self._proc = proc
        return proc

    def _read(self, out: IO[bytes]) -> None:
        with contextlib.suppress(OSError, ValueError):  # ValueError: closed by stop()
            for line in out:
                parts = line.split(b" ", 3)
                if len(parts) == 4 and parts[0] == b"drained":
                    self._waiters.answer(int(parts[1]), parts[2] == b"1",
                                         orjson.loads(parts[3]))
        self._waiters.fail_all()

    def _write(self, data: bytes) -> bool:
        with self._lock:
            proc = self._ensure()
            if proc is None or proc.stdin is None:
                return False
            try:
                os.write(proc.stdin.fileno(), data)
                return True
            except BlockingIOError:
                # The child is behind on reading; a poke can be dropped (it is only a
                # hint), a drain or stop is tried again by the caller.
                return False
            except (BrokenPipeError, ValueError, OSError):
                return False

    def poke(self) -> None:
        if self._pokes.due():
            self._write(b"poke\n")

    def drain(self, timeout: float = 10.0) -> bool:
        return self._waiters.drain(
            lambda m: self._write(f"drain {m.ident}\n".encode()), timeout)

    def stop(self, timeout: float = 120.0) -> None:
        with self._lock:
            proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None and proc.stdin is not None:
            with contextlib.suppress(OSError, ValueError):
                os.set_blocking(proc.stdin.fileno(), True)
                proc.stdin.write(b"stop\n")
                proc.stdin.flush()
        self._reap(proc, timeout)

    def _reap(self, proc: subprocess.Popen[bytes], timeout: float = 5.0) -> None:
        if proc.stdin is not None:
            with contextlib.suppress(OSError, ValueError):
                proc.stdin.close()  # EOF: the child ships once more and ends
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            _log.warning("relay process %s still shipping after %.0fs; stopping it (the rest "
                         "resumes on the next start)", proc.pid, timeout)
            proc.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(5)
        if proc.stdout is not None:
            with contextlib.suppress(OSError, ValueError):
                proc.stdout.close()
