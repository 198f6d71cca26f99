"""uvicorn's h11 protocol with a deadline for each request's head (the slowloris guard).

uvicorn restarts its keep-alive timer on every byte received, so a client that drips a
request's headers a byte at a time holds a connection (and a file descriptor) for ever.
:class:`HeadDeadlineH11Protocol` gives each request ``head_timeout_s`` seconds, counted from
the connection (or the end of the previous response), to deliver its request line and
headers, however it drips them; the connection is then closed without an answer. The size of
the head is bounded by h11 itself (``h11_max_incomplete_event_size``: 431/400 above it).
"""

from __future__ import annotations

import asyncio
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

__all__ = ["HeadDeadlineH11Protocol"]


class HeadDeadlineH11Protocol(H11Protocol):
    """h11 with a head deadline; build it with ``functools.partial(cls, head_timeout_s=...)``
    as uvicorn's ``http`` protocol class."""

    def __init__(self, *args: Any, head_timeout_s: float = 10.0, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.head_timeout_s = head_timeout_s
        self._head_deadline: asyncio.TimerHandle | None = None

    def _arm_head_deadline(self) -> None:
        self._disarm_head_deadline()
        self._head_deadline = self.loop.call_later(self.head_timeout_s, self._head_too_slow)

    def _disarm_head_deadline(self) -> None:
        if self._head_deadline is not None:
            self._head_deadline.cancel()
            self._head_deadline = None

    def _head_too_slow(self) -> None:
        self._head_deadline = None
        if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
            self.transport.close()

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_head_deadline()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self.conn.their_state is not h11.IDLE:  # the whole head arrived
            self._disarm_head_deadline()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():
            self._arm_head_deadline()  # the next request on this connection gets its own

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_head_deadline()
        super().connection_lost(exc)
