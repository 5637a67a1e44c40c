"""One MQTT 3.1.1 connection that publishes: the outbox's messages in windows, and statuses.

:func:`open_connection` connects (TCP, optionally TLS), sends CONNECT with the will and
returns once the broker accepted it. :meth:`MqttConnection.publish` sends a batch of the
outbox's entries in one socket write; ``acknowledged`` (given to :func:`open_connection`)
hears, in batches, the entries the broker acknowledged: every PUBACK of one read at
once. :meth:`MqttConnection.publish_and_wait` publishes one message (a status) and
returns once it is acknowledged. The connection sends PINGREQ when idle and gives up
when the broker does not answer within the keepalive. ``wake`` is called when the
publisher should look again: the connection was lost (:meth:`MqttConnection.check` then
raises the :class:`MqttError` saying why; what was in flight is forgotten and the outbox
sends it again on the next one), or its socket takes more after :attr:`paused`.

Everything runs on the event loop's thread; the packets themselves are
:mod:`gateway.outputs.mqtt_codec`'s. Why not paho or another client: docs/mqtt.md.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Callable, Sequence

from gateway.outputs.mqtt_codec import (
    DISCONNECT,
    MAX_PACKET_ID,
    PINGREQ,
    Acknowledged,
    ConnAck,
    ConnectReturnCode,
    MqttProtocolError,
    PacketReader,
    PacketType,
    Will,
    encode_connect,
    encode_publish,
    encode_pubrel,
)
from gateway.outputs.outbox import Entry, OutboundMessage
from protocol.errors import GatewayError, os_error_reason

__all__ = ["ConnectRefusedError", "MqttConnection", "MqttError", "open_connection"]

_log = logging.getLogger(__name__)

_CLOSE_WAIT = 0.5
"""Seconds :meth:`MqttConnection.close` waits for the socket to close after DISCONNECT."""


class MqttError(GatewayError):
    """The connection to the broker failed or was lost: ``str()`` says why, in lower-case
    words ("connection refused", "no answer from the broker within 30 s")."""


class ConnectRefusedError(MqttError):
    """The broker answered CONNECT with a refusal: ``code`` says which."""

    def __init__(self, code: int) -> None:
        self.code = code
        try:
            reason = ConnectReturnCode(code).reason
        except ValueError:
            reason = f"return code {code}"
        super().__init__(f"refused by the broker: {reason}")


async def open_connection(
    host: str,
    port: int,
    *,
    client_id: str,
    keepalive: int,
    will: Will | None,
    username: str | None = None,
    password: str | None = None,
    timeout: float,
    acknowledged: Callable[[list[Entry]], None],
    wake: Callable[[], None],
    tls: ssl.SSLContext | None = None,
) -> MqttConnection:
    """Connect to ``host:port``, say CONNECT (clean session), and wait for CONNACK.

    Raise :class:`MqttError` if the connection cannot be made or the broker does not
    accept it within ``timeout`` seconds (:class:`ConnectRefusedError` if it refuses).
    """
    connect = encode_connect(
        client_id,
        keepalive=keepalive,
        clean_session=True,
        will=will,
        username=username,
        password=password,
    )
    loop = asyncio.get_running_loop()
    connection: MqttConnection | None = None
    try:
        async with asyncio.timeout(timeout):
            _, connection = await loop.create_connection(
                lambda: MqttConnection(keepalive, acknowledged, wake),
                host,
                port,
                ssl=tls,
                server_hostname=host if tls is not None else None,
            )
            await connection._accepted(connect)
    except TimeoutError:
        if connection is not None:
            connection.abort()
        raise MqttError(f"no answer from the broker within {timeout:g} s") from None
    except OSError as exc:
        raise MqttError(os_error_reason(exc)) from exc
    except BaseException:
        if connection is not None:
            connection.abort()
        raise
    return connection


class MqttConnection(asyncio.Protocol):
    """A connection made by :func:`open_connection`; see the module's docstring."""

    def __init__(
        self,
        keepalive: int,
        acknowledged: Callable[[list[Entry]], None],
        wake: Callable[[], None],
    ) -> None:
        self._keepalive = keepalive
        self._acknowledged = acknowledged
        self._wake = wake
        self._loop = asyncio.get_running_loop()
        self._transport: asyncio.Transport | None = None
        self._reader = PacketReader()
        self._connack: asyncio.Future[ConnAck] = self._loop.create_future()
        self._error: MqttError | None = None
        self._closed = self._loop.create_future()
        self._pending: dict[int, Entry | asyncio.Future[None]] = {}
        """Publishes in flight by packet id: an outbox entry, or a status's future."""
        self._next_id = 0
        self._last_heard = self._last_written = self._loop.time()
        self._ping_sent: float | None = None
        self._timer: asyncio.TimerHandle | None = None
        self.paused = False
        """True while the socket's buffer is full (asyncio's flow control): publish no
        more until ``wake`` is called."""

    def __len__(self) -> int:
        """Publishes sent and not acknowledged yet."""
        return len(self._pending)

    # -- publishing ----------------------------------------------------------------------

    def publish(self, entries: Sequence[Entry]) -> list[tuple[Entry, str]]:
        """Send ``entries`` in one write, in order; return those MQTT cannot carry (a
        wildcard in the topic, say), each with why, which are not sent.

        QoS 0 entries are acknowledged (``acknowledged``) once handed to the socket,
        others when the broker says so: don't publish more while :attr:`paused`. Raise
        :class:`MqttError` if the connection is lost.
        """
        self.check()
        parts = []
        refused: list[tuple[Entry, str]] = []
        written: list[Entry] = []
        pending = self._pending
        for entry in entries:
            message = entry.message
            packet_id = self._packet_id() if message.qos else 0
            try:
                parts.append(
                    encode_publish(
                        message.topic,
                        message.payload,
                        qos=message.qos,
                        retain=message.retain,
                        packet_id=packet_id,
                    )
                )
            except ValueError as exc:
                refused.append((entry, str(exc)))
                continue
            if packet_id:
                pending[packet_id] = entry
            else:
                written.append(entry)
        if parts:
            self._write(b"".join(parts))
        if written:
            self._acknowledged(written)
        return refused

    async def publish_and_wait(self, message: OutboundMessage) -> None:
        """Publish ``message`` and return once the broker has it (QoS 0: once written).

        Raise ValueError if MQTT cannot carry it, :class:`MqttError` if the connection
        is lost first.
        """
        self.check()
        packet_id = self._packet_id() if message.qos else 0
        packet = encode_publish(
            message.topic,
            message.payload,
            qos=message.qos,
            retain=message.retain,
            packet_id=packet_id,
        )
        self._write(packet)
        if not packet_id:
            return
        done: asyncio.Future[None] = self._loop.create_future()
        self._pending[packet_id] = done
        try:
            await done
        finally:
            self._pending.pop(packet_id, None)

    def check(self) -> None:
        """Raise the :class:`MqttError` that ended the connection, if it has ended."""
        if self._error is not None:
            raise self._error

    def forget(self) -> int:
        """Forget the outbox's entries in flight (their connection is gone or going);
        return how many."""
        entries = [key for key, item in self._pending.items() if isinstance(item, Entry)]
        for packet_id in entries:
            del self._pending[packet_id]
        return len(entries)

    async def close(self) -> None:
        """Say DISCONNECT (the will is not published) and close; wait at most
        ``_CLOSE_WAIT`` seconds for the socket to close, then abort it."""
        transport = self._transport
        if transport is None or self._closed.done():
            return
        if self._error is None:
            self._write(DISCONNECT)
            self._fail(MqttError("disconnected"), notify=False)
        transport.close()
        try:
            async with asyncio.timeout(_CLOSE_WAIT):
                await asyncio.shield(self._closed)
        except TimeoutError:
            transport.abort()

    def abort(self) -> None:
        """Close at once, without DISCONNECT: the broker publishes the will."""
        if self._transport is not None:
            self._transport.abort()

    # -- asyncio.Protocol ----------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport

    def data_received(self, data: bytes) -> None:
        self._last_heard = self._loop.time()
        try:
            packets = self._reader.feed(data)
        except MqttProtocolError as exc:
            _log.error("mqtt broker broke the protocol: %s", exc)
            self._fail(MqttError(f"protocol error: {exc}"))
            self.abort()
            return
        for packet in packets:
            if isinstance(packet, Acknowledged):
                self._on_acknowledged(packet)
            elif isinstance(packet, ConnAck) and not self._connack.done():
                self._connack.set_result(packet)
            # PingResp: _last_heard is all it says

    def pause_writing(self) -> None:
        self.paused = True

    def resume_writing(self) -> None:
        self.paused = False
        self._wake()

    def eof_received(self) -> bool:
        return False  # close the transport: connection_lost follows

    def connection_lost(self, exc: Exception | None) -> None:
        if self._timer is not None:
            self._timer.cancel()
        reason = "closed by the broker or the network" if exc is None else os_error_reason(exc)
        error = MqttError(reason)
        if exc is not None:
            error.__cause__ = exc
        self._fail(error)
        if not self._closed.done():
            self._closed.set_result(None)

    # -- inside --------------------------------------------------------------------------

    async def _accepted(self, connect: bytes) -> None:
        """Send CONNECT and wait for CONNACK; raise ConnectRefusedError if it refuses."""
        self._write(connect)
        connack = await self._connack
        if connack.return_code != ConnectReturnCode.ACCEPTED:
            self.abort()
            raise ConnectRefusedError(connack.return_code)
        if self._keepalive:
            self._timer = self._loop.call_later(self._keepalive / 2, self._tick)

    def _on_acknowledged(self, packet: Acknowledged) -> None:
        pending = self._pending
        if packet.kind is PacketType.PUBREC:  # QoS 2, half-way: release each
            self._write(b"".join(encode_pubrel(i) for i in packet.packet_ids if i in pending))
            return
        done: list[Entry] = []
        for packet_id in packet.packet_ids:
            item = pending.pop(packet_id, None)
            if isinstance(item, Entry):
                done.append(item)
            elif item is not None and not item.done():
                item.set_result(None)
        if done:
            self._acknowledged(done)

    def _packet_id(self) -> int:
        """A packet identifier not in flight (1 to 65535)."""
        if len(self._pending) >= MAX_PACKET_ID:
            raise RuntimeError(f"all {MAX_PACKET_ID} mqtt packet ids are in flight")
        packet_id = self._next_id
        while True:
            packet_id = packet_id % MAX_PACKET_ID + 1
            if packet_id not in self._pending:
                self._next_id = packet_id
                return packet_id

    def _write(self, data: bytes) -> None:
        assert self._transport is not None
        if data:
            self._transport.write(data)
            self._last_written = self._loop.time()

    def _tick(self) -> None:
        """Every half keepalive: PINGREQ when nothing was written or heard for half a
        keepalive; the connection is lost when a PINGREQ is a keepalive old unanswered."""
        now = self._loop.time()
        ping = self._ping_sent
        if ping is not None:
            if self._last_heard >= ping:
                ping = self._ping_sent = None
            elif now - ping >= self._keepalive:
                self._fail(MqttError(f"no answer from the broker within {self._keepalive} s"))
                self.abort()
                return
        half = self._keepalive / 2
        if ping is None and (now - self._last_written >= half or now - self._last_heard >= half):
            self._write(PINGREQ)
            self._ping_sent = now
        self._timer = self._loop.call_later(half, self._tick)

    def _fail(self, error: MqttError, *, notify: bool = True) -> None:
        """The connection is over: keep why (the first reason only), fail the statuses
        waiting, and tell the publisher."""
        if self._error is not None:
            return
        self._error = error
        if not self._connack.done():
            self._connack.set_exception(error)
        for item in self._pending.values():
            if isinstance(item, asyncio.Future) and not item.done():
                item.set_exception(error)
        if notify:
            self._wake()
