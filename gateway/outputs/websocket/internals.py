"""What the WebSocket output uses of websockets beyond its public API, all of it here.

The fan-out writes a message straight into a connection's Sans-I/O protocol, as
``websockets.broadcast`` does, and writes everything framed for one connection in a
loop turn with one system call (``broadcast`` makes one per frame): that is why it
outruns ``broadcast``. It reaches into the asyncio connection (``protocol``,
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

from websockets.asyncio.server import ServerConnection
from websockets.protocol import State
from websockets.version import version as websockets_version

__all__ = ["DirectWriter", "missing"]

logger = logging.getLogger(__name__)


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

    def __init__(self, connection: ServerConnection, *, batch: int) -> None:
        self._connection = connection
        self._batch = batch
        self._unflushed = 0
        problems = missing(connection)
        self._direct = not problems
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
        try:
            connection.protocol.send_text(payload)
        except Exception:
            return False
        if not self._unflushed:  # one write per connection for a burst of messages
            asyncio.get_running_loop().call_soon(self._flush)
        self._unflushed += 1
        return True

    def _flush(self) -> None:
        self._unflushed = 0
        with contextlib.suppress(Exception):  # a failing socket: its handler learns of it
            _write_out(self._connection)

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
        for payload in payloads:
            connection.protocol.send_text(payload)
        _write_out(connection)
        await connection.drain()


def _write_out(connection: ServerConnection) -> None:
    """Write the frames the protocol holds in one ``transport.write``.

    ``connection.send_data()`` writes them one by one: a system call per frame while
    the socket takes them, where one call does for a whole burst.
    """
    chunks = connection.protocol.data_to_send()
    data = b"".join(chunks)
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
