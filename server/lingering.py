"""Closing a connection without destroying its last answer: the "lingering close" of RFC 9112
section 9.6.

A server that closes its socket while the client is still sending (the rest of a dribbled head, a
request body its answer refused, an upgrade it turned down) makes the kernel answer that data with
a reset, and a reset can discard the answer before the client has read it. So a connection the
server closes first has its write side shut (FIN, once everything written is sent) and its input
read and dropped until the client closes its side, or for ``LINGER_SECONDS``.
"""

from __future__ import annotations

import asyncio
from typing import Any

LINGER_SECONDS = 2.0  # how long a closed connection's input is read and dropped, at most


class Lingering(asyncio.Protocol):
    """The protocol of a connection the server has closed, until the client closes its side too
    (see the module docstring). The protocol it replaces is told when the connection is lost, as if
    it had closed it."""

    __slots__ = ("_previous", "_timer", "_transport")

    def __init__(self, transport: asyncio.Transport, previous: asyncio.BaseProtocol) -> None:
        self._previous = previous
        self._transport = transport
        self._timer = asyncio.get_running_loop().call_later(LINGER_SECONDS, transport.abort)

    @classmethod
    def close(cls, transport: asyncio.Transport) -> None:
        """Close ``transport`` lingering (see the class); at once if it cannot half-close."""
        if transport.is_closing() or not transport.can_write_eof():
            transport.close()
            return
        transport.set_protocol(cls(transport, transport.get_protocol()))
        transport.write_eof()
        transport.resume_reading()

    def data_received(self, data: bytes) -> None:
        pass  # dropped: the server has closed its side

    def eof_received(self) -> bool:
        self._transport.close()  # the client has read everything and closed its side
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._timer.cancel()
        self._previous.connection_lost(exc)


class LingeringTransport:
    """A transport whose ``close()`` lingers (``Lingering``) while ``linger`` is set: while a
    request is being received, or was refused before it was complete. Everything else is the
    transport's. uvicorn's HTTP protocol closes its transport in many places (an answer with
    ``connection: close``, a refused upgrade, a 400 for a malformed request); given this one, each
    such close lingers when the client may still be sending. An idle keep-alive connection (its
    timeout, a shutdown) is closed at once."""

    __slots__ = ("linger", "transport")

    def __init__(self, transport: asyncio.Transport) -> None:
        self.transport = transport
        self.linger = False

    def close(self) -> None:
        if self.linger:
            Lingering.close(self.transport)
        else:
            self.transport.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.transport, name)
