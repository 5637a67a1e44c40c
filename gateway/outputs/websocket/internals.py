"""What the WebSocket output uses of websockets beyond its public API, all of it here.

The fan-out frames a message once for every connection that negotiated no extension
(an unmasked text frame is the same bytes for all of them; websockets frames it again
for each), and writes everything framed for one connection in a loop turn with one
system call (``broadcast`` makes one per frame): that is why it outruns ``broadcast``.
It reaches into the asyncio connection (``protocol`` and its ``extensions``,
``transport``, ``paused``, ``send_in_progress``, ``drain``), which websockets does not
document and may change in any release: :func:`missing` lists what a connection
lacks, and a test fails on it naming what changed. pyproject.toml pins websockets to
the releases that test passed on.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import inspect
import logging
from collections.abc import Sequence

from websockets.asyncio.server import ServerConnection
from websockets.protocol import State
from websockets.version import version as websockets_version

__all__ = ["DirectWriter", "TurnFlush", "missing", "text_frame"]

logger = logging.getLogger(__name__)


class TurnFlush:
    """The writers with frames waiting for the end of this loop turn: one callback writes
    them all, rather than one per connection (a message to 1,000 clients made 1,000
    callbacks). One per server, on one event loop."""

    def __init__(self) -> None:
        self._writers: list[DirectWriter] = []

    def add(self, writer: DirectWriter) -> None:
        """Flush ``writer`` when this loop turn ends."""
        if not self._writers:
            asyncio.get_running_loop().call_soon(self._flush)
        self._writers.append(writer)

    def _flush(self) -> None:
        writers, self._writers = self._writers, []
        for writer in writers:
            writer.flush()


class DirectWriter:
    """Writes text frames to one connection below ``connection.send``.

    :meth:`write_now` frames a message at once when nothing else is being written;
    the frames of a loop turn go out together when the turn ends. :meth:`send` writes
    a batch in one go and waits while the client lags. Both keep the frames in order
    with what ``connection.send`` writes, as long as the caller does not interleave
    them with it. If the connection lacks what they need (:func:`missing`: a websockets
    release this was not tested with), they fall back to ``connection.send``, slower,
    and say so once in the log.
    """

    def __init__(
        self, connection: ServerConnection, *, batch: int, turn: TurnFlush | None = None
    ) -> None:
        self._connection = connection
        self._batch = batch
        self._turn = turn
        """Who flushes this turn's frames; None: a callback of the writer's own."""
        self._unflushed = 0
        self._framed: list[bytes] = []
        """Frames of this turn made here, not by the protocol: written at the flush."""
        problems = missing(connection)
        self._direct = not problems
        self._shared = self._direct and not connection.protocol.extensions
        """Frames can be shared: no extension (compression) makes them this connection's."""
        if problems:
            _report(tuple(problems))

    def write_now(self, payload: bytes) -> bool:
        """Frame ``payload`` now if the connection can take it without waiting.

        False (nothing done) when the connection is not open, its socket is backed up,
        a ``send`` is in progress, or ``batch`` frames already wait for this turn's
        write: the caller then buffers the message for :meth:`send`.
        """
        connection = self._connection
        if (
            not self._direct
            or self._unflushed >= self._batch
            or connection.protocol.state is not State.OPEN
            or connection.paused
            or connection.send_in_progress is not None
        ):
            return False
        if self._shared:
            self._framed.append(text_frame(payload))
        else:
            try:
                connection.protocol.send_text(payload)
            except Exception:
                return False
        if not self._unflushed:  # one write per connection for a burst of messages
            if self._turn is not None:
                self._turn.add(self)
            else:
                asyncio.get_running_loop().call_soon(self.flush)
        self._unflushed += 1
        return True

    def flush(self) -> None:
        """Write what :meth:`write_now` framed in this turn (called when the turn ends)."""
        self._unflushed = 0
        framed, self._framed = self._framed, []
        if self._connection.protocol.state is not State.OPEN:
            framed = []  # closing since: nothing may follow the close frame
        with contextlib.suppress(Exception):  # a failing socket: its handler learns of it
            _write_out(self._connection, framed)

    async def send(self, payloads: list[bytes]) -> None:
        """Send ``payloads`` as text frames with one write, then wait while the client lags.

        ``drain`` holds the caller while the socket's buffer is over its high-water
        mark, so that a slow client's backlog stays in the caller's bounded buffer.
        When the connection is not open, raise the ``ConnectionClosed`` that
        ``connection.send`` raises.
        """
        connection = self._connection
        if (
            not self._direct
            or connection.protocol.state is not State.OPEN
            or connection.send_in_progress is not None
        ):
            for payload in payloads:
                await connection.send(payload, text=True)
            return
        framed, self._framed = self._framed, []  # this turn's, written first
        self._unflushed = 0
        if self._shared:
            framed += [text_frame(payload) for payload in payloads]
        else:
            for payload in payloads:
                connection.protocol.send_text(payload)
        _write_out(connection, framed)
        await connection.drain()


_last = [b"", b"\x81\x00"]
"""The latest payload framed, and its frame: the hub offers one message to every
subscriber in a row, so it is framed once."""


def text_frame(payload: bytes) -> bytes:
    """``payload`` as an unmasked, unfragmented text frame (RFC 6455, 5.2), as a server
    sends it; the payload must be UTF-8 (JSON from orjson is)."""
    if _last[0] is payload:
        return _last[1]
    size = len(payload)
    if size < 126:
        head = bytes((0x81, size))
    elif size < 1 << 16:
        head = bytes((0x81, 126)) + size.to_bytes(2, "big")
    else:
        head = bytes((0x81, 127)) + size.to_bytes(8, "big")
    frame = head + payload
    _last[:] = (payload, frame)
    return frame


def _write_out(connection: ServerConnection, framed: Sequence[bytes] = ()) -> None:
    """Write the frames the protocol holds, then ``framed``, in one ``transport.write``.

    ``connection.send_data()`` writes them one by one: a system call per frame while
    the socket takes them, where one call does for a whole burst.
    """
    chunks = connection.protocol.data_to_send()
    data = b"".join([*chunks, *framed])
    transport = connection.transport
    if data:
        transport.write(data)
    if not all(chunks):  # an empty chunk: the protocol closed, half-close as websockets does
        if transport.can_write_eof():
            transport.write_eof()
        else:
            transport.close()


def missing(connection: ServerConnection) -> list[str]:
    """What :class:`DirectWriter` needs and ``connection`` (an open one) lacks, as
    ``"owner.name: problem"``."""
    needs: list[tuple[str, object, str, str]] = [
        ("ServerConnection", connection, "protocol", "object"),
        ("ServerConnection", connection, "transport", "object"),
        ("ServerConnection", connection, "paused", "bool"),
        ("ServerConnection", connection, "send_in_progress", "future or None"),
        ("ServerConnection", connection, "drain", "coroutine function"),
        ("ServerConnection", connection, "send", "coroutine function"),
    ]
    problems = [_problem(*need) for need in needs]
    protocol = getattr(connection, "protocol", None)
    transport = getattr(connection, "transport", None)
    problems += [
        _problem("ServerConnection.protocol", protocol, "state", "State"),
        _problem("ServerConnection.protocol", protocol, "send_text", "function"),
        _problem("ServerConnection.protocol", protocol, "data_to_send", "function"),
        _problem("ServerConnection.protocol", protocol, "extensions", "list"),
    ]
    problems += [
        _problem("ServerConnection.transport", transport, name, "function")
        for name in ("write", "can_write_eof", "write_eof", "close")
    ]
    return [problem for problem in problems if problem]


def _problem(owner: str, target: object, name: str, kind: str) -> str:
    """Why ``target.name`` is not a ``kind``; empty if it is."""
    if not hasattr(target, name):
        return f"{owner}.{name}: no such attribute"
    value = getattr(target, name)
    fits = {
        "object": value is not None,
        "bool": isinstance(value, bool),
        "future or None": value is None or isinstance(value, asyncio.Future),
        "coroutine function": inspect.iscoroutinefunction(value),
        "function": callable(value),
        "State": isinstance(value, State),
        "list": isinstance(value, list),
    }[kind]
    return "" if fits else f"{owner}.{name}: expected a {kind}, got {type(value).__name__}"


@functools.cache
def _report(problems: tuple[str, ...]) -> None:
    logger.error(
        "websockets %s lacks what the fast fan-out needs (%s): falling back to "
        "connection.send, slower; install a websockets release pyproject.toml allows",
        websockets_version,
        "; ".join(problems),
    )
