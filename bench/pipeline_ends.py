"""The two ends of the pipeline benchmark (bench/pipeline.py): what feeds a relay, what it reaches.

* :class:`Feeder`: a TCP server that a relay's ``tcp`` source connects to; it writes
  pre-encoded frames at a fixed rate (or a backlog at once) and counts what it wrote;
* :class:`CountingSubscriber`: a raw WebSocket subscriber that counts the envelopes it
  receives without parsing them: occurrences of ``"type":"message"`` in its bytes;
* :class:`TimingSubscriber`: one that walks the frames, checks that ``seq`` runs on with
  no gap, and records latency: receipt minus the envelope's ``time``;
* :class:`MqttCounter`: a minimal MQTT 3.1.1 subscriber (QoS 1, its PUBACKs written
  once per read) that counts distinct ``seq`` values and records latency the same way;
* :class:`IdleClients`: ``websockets`` clients that stay connected and answer pings, as
  open dashboards do, and read (and drop) whatever they are sent.

The subscribers do as little as they can per message, so that one process can keep up
with a relay at tens of thousands of messages per second on a shared machine.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Sequence

from relay_ws import BenchError, RawSubscriber
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake

__all__ = [
    "MESSAGE_MARK",
    "CountingSubscriber",
    "Feeder",
    "IdleClients",
    "MqttCounter",
    "TimingSubscriber",
    "open_mqtt_counter",
]

MESSAGE_MARK = b'"type":"message"'
"""What every envelope's JSON holds once, and no other message of the protocols."""
DROPPED_MARK = b'{"type":"dropped"'
SEQ_KEY = b'"seq":'
TIME_KEY = b'"time":'


# The feeding end.


class Feeder:
    """A TCP server on 127.0.0.1 for one relay source: frames at a fixed rate, on demand.

    ``frames`` are encoded frames of one size, written in turn, again and again. Once the
    relay has connected (:meth:`wait_connected`), :meth:`feed` writes ``count`` frames at
    ``rate`` frames/s, every ``tick`` seconds what fell due since the last, or all at once
    when ``rate`` is None. While the socket is full it waits, then writes what fell due
    meanwhile. :attr:`written` counts the frames handed to the socket.
    """

    def __init__(self, frames: Sequence[bytes], *, tick: float) -> None:
        sizes = {len(frame) for frame in frames}
        if len(sizes) != 1:
            raise BenchError(f"the feeder's frames must be of one size, got sizes {sorted(sizes)}")
        self.frame_size = sizes.pop()
        self._pool = b"".join(frames)
        self._pool_frames = len(frames)
        self._doubled = self._pool * 2
        self._tick = tick
        self._server: asyncio.Server | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._connected = asyncio.Event()
        self._next = 0
        self.port = 0
        self.written = 0
        """Frames handed to the socket, over every :meth:`feed`."""
        self.connections = 0
        self.started_at = 0.0
        """``time.monotonic()`` of the last :meth:`feed`'s first write."""
        self.finished_at = 0.0
        """``time.monotonic()`` once the last :meth:`feed` had written all."""
        self.most_behind = 0.0
        """Seconds the last :meth:`feed` was behind its schedule at worst (a full socket)."""

    async def start(self) -> int:
        """Listen on a free port of 127.0.0.1; return it."""
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self.port

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._writer is not None:  # a reconnecting source: the new link replaces the old
            self._writer.close()
        self._writer = writer
        self.connections += 1
        self._connected.set()
        with contextlib.suppress(OSError):
            while await reader.read(4096):  # commands from the relay: none expected
                pass
        if self._writer is writer:
            self._writer = None
            self._connected.clear()

    async def wait_connected(self, timeout: float) -> None:
        """Return once a relay is connected; BenchError after ``timeout`` seconds."""
        try:
            async with asyncio.timeout(timeout):
                await self._connected.wait()
        except TimeoutError:
            raise BenchError(
                f"no relay connected to the feeder on port {self.port} within {timeout:g} s"
            ) from None

    def _take(self, count: int) -> bytes:
        """The next ``count`` frames of the pool, in turn."""
        size, pool_frames = self.frame_size, self._pool_frames
        pieces = []
        while count > 0:
            start = self._next % pool_frames
            run = min(count, pool_frames)
            pieces.append(self._doubled[start * size : (start + run) * size])
            self._next += run
            count -= run
        return b"".join(pieces)

    async def feed(self, rate: float | None, count: int) -> None:
        """Write ``count`` frames at ``rate`` frames/s (None: all at once); return once written.

        Raise :class:`BenchError` if the relay is not connected, or goes.
        """
        writer = self._writer
        if writer is None:
            raise BenchError(f"no relay is connected to the feeder on port {self.port}")
        clock = time.monotonic
        start = clock()
        self.started_at = start
        self.most_behind = 0.0
        written = 0
        try:
            while written < count:
                due = count if rate is None else min(count, int((clock() - start) * rate) + 1)
                if due > written:
                    writer.write(self._take(due - written))
                    self.written += due - written
                    written = due
                    await writer.drain()
                    if rate is not None:
                        self.most_behind = max(self.most_behind, clock() - start - written / rate)
                if written < count:  # sleep until the next frame falls due, a tick at least
                    wait = 0.0 if rate is None else start + written / rate - clock()
                    await asyncio.sleep(max(self._tick, wait))
        except (ConnectionError, OSError) as exc:
            raise BenchError(f"the relay's source went away while being fed: {exc}") from exc
        self.finished_at = clock()

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(2.0):
                    await self._server.wait_closed()


# The WebSocket end.


class CountingSubscriber(RawSubscriber):
    """A raw subscriber that counts the envelopes in what it receives: :attr:`messages`.

    It counts occurrences of :data:`MESSAGE_MARK`, one per envelope, in C (``count``),
    minding those cut in two by a read; it parses nothing.
    """

    def __init__(self, host: str, port: int, *, subscribe: bytes | None) -> None:
        super().__init__(host, port, subscribe=subscribe)
        self.messages = 0
        self._tail = b""

    def take(self, buffer: bytearray, size: int) -> None:
        mark = MESSAGE_MARK
        keep = len(mark) - 1
        if self._tail:  # a mark that began in the previous chunk and ends in this one
            self.messages += (self._tail + bytes(buffer[: min(size, keep)])).count(mark)
        self.messages += buffer.count(mark, 0, size)
        if size >= keep:
            self._tail = bytes(buffer[size - keep : size])
        else:
            self._tail = (self._tail + bytes(buffer[:size]))[-keep:]


class TimingSubscriber(RawSubscriber):
    """A raw subscriber that walks the frames, checks ``seq`` and records latencies.

    :attr:`messages` envelopes received; :attr:`gaps` numbers skipped, :attr:`repeats`
    numbers received again or out of order; :attr:`dropped` as the server's ``dropped``
    notices count them. While :attr:`recording`, each envelope's latency (``time.time()``
    at the read minus its ``time``, in seconds) goes to :attr:`samples`.
    """

    def __init__(self, host: str, port: int, *, subscribe: bytes | None) -> None:
        super().__init__(host, port, subscribe=subscribe)
        self.messages = 0
        self.message_bytes = 0
        self.gaps = 0
        self.repeats = 0
        self.dropped_notices = 0
        self.last_seq = 0
        self.recording = False
        self.samples: list[float] = []
        self._pending = b""

    def take(self, buffer: bytearray, size: int) -> None:
        now = time.time()
        data = self._pending + bytes(buffer[:size])
        end_of_data = len(data)
        position = 0
        while end_of_data - position >= 2:
            length = data[position + 1] & 0x7F
            start = position + 2
            if length == 126:
                if end_of_data - position < 4:
                    break
                length = int.from_bytes(data[position + 2 : position + 4], "big")
                start = position + 4
            elif length == 127:
                if end_of_data - position < 10:
                    break
                length = int.from_bytes(data[position + 2 : position + 10], "big")
                start = position + 10
            end = start + length
            if end > end_of_data:
                break
            if data[position] & 0x0F == 1:  # a text frame
                self._text(data, start, end, now)
            position = end
        self._pending = data[position:]

    def _text(self, data: bytes, start: int, end: int, now: float) -> None:
        if data.find(MESSAGE_MARK, start, start + 32) < 0:
            if data.startswith(DROPPED_MARK, start):
                self.dropped_notices += 1
            return
        seq = _number(data, SEQ_KEY, start, end)
        self.messages += 1
        self.message_bytes += end - start
        last = self.last_seq
        if last and seq != last + 1:
            if seq > last:
                self.gaps += seq - last - 1
            else:
                self.repeats += 1
        self.last_seq = max(seq, last)
        if self.recording:
            self.samples.append(now - float(_number_text(data, TIME_KEY, start, end)))


class IdleClients:
    """``websockets`` clients of one server, idle: connected, answering pings, reading.

    With ``subscribe`` (a request), each sends it once connected. :meth:`open` adds
    clients; :meth:`close` closes the newest ones.
    """

    def __init__(self, uri: str, *, subscribe: bytes | None) -> None:
        self.uri = uri
        self.subscribe = subscribe
        self.connections: list[ClientConnection] = []
        self._readers: list[asyncio.Task[None]] = []

    async def open(self, count: int, *, concurrency: int = 50, timeout: float = 60.0) -> None:
        """Open ``count`` more clients; BenchError if one cannot connect within ``timeout``."""
        gate = asyncio.Semaphore(concurrency)

        async def one() -> None:
            async with gate:
                connection = await connect(self.uri, compression=None, open_timeout=timeout)
                if self.subscribe is not None:
                    await connection.send(self.subscribe, text=True)
                self.connections.append(connection)
                self._readers.append(asyncio.create_task(_drain(connection)))

        try:
            async with asyncio.timeout(timeout):
                await asyncio.gather(*(one() for _ in range(count)))
        except (TimeoutError, OSError, InvalidHandshake) as exc:
            raise BenchError(
                f"{len(self.connections)} idle clients of {self.uri} connected, "
                f"{count} wanted: {exc or 'timeout'}"
            ) from exc

    async def close(self, count: int | None = None) -> None:
        """Close the newest ``count`` clients (all of them by default)."""
        keep = 0 if count is None else max(0, len(self.connections) - count)
        closing, self.connections = self.connections[keep:], self.connections[:keep]
        readers, self._readers = self._readers[keep:], self._readers[:keep]
        for connection in closing:
            connection.transport.abort()
        for reader in readers:
            reader.cancel()
        await asyncio.gather(*readers, return_exceptions=True)


async def _drain(connection: ClientConnection) -> None:
    with contextlib.suppress(ConnectionClosed):
        async for _ in connection:
            pass


def _number_text(data: bytes | bytearray, key: bytes, start: int, end: int) -> bytes:
    """The text of the JSON number after ``key`` in ``data[start:end]``."""
    at = data.find(key, start, end)
    if at < 0:
        raise BenchError(f"no {key.decode()} in {bytes(data[start:end])[:200]!r}")
    at += len(key)
    stop = data.find(b",", at, end)
    if stop < 0:
        stop = data.find(b"}", at, end)
    return bytes(data[at:stop])


def _number(data: bytes | bytearray, key: bytes, start: int, end: int) -> int:
    return int(_number_text(data, key, start, end))


# The MQTT end.


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _packet(first: int, body: bytes) -> bytes:
    return bytes((first,)) + _varint(len(body)) + body


def _remaining_length(buffer: bytearray, index: int, size: int) -> tuple[int, int] | None:
    """The remaining length of the packet whose fixed header's second byte is at ``index``,
    and where its body starts; None if the buffer ends before the length does."""
    length = shift = 0
    while index < size:
        byte = buffer[index]
        index += 1
        length |= (byte & 0x7F) << shift
        if byte < 0x80:
            return length, index
        shift += 7
    return None


def _string(text: bytes) -> bytes:
    return len(text).to_bytes(2, "big") + text


class MqttCounter(asyncio.Protocol):
    """A minimal MQTT 3.1.1 subscriber to one topic, counting the envelopes it receives.

    It connects with a clean session and no keep-alive, subscribes to ``topic`` at
    ``qos``, and acknowledges every QoS 1 PUBLISH, the PUBACKs of one read in one write.
    :attr:`ready` completes on the SUBACK. It counts :attr:`messages` (deliveries,
    repeats included) and :attr:`distinct` ``seq`` values; :attr:`first_at` and
    :attr:`last_at` are ``time.monotonic()`` of the first and the latest delivery, and
    :attr:`reached_at` of the delivery that made :attr:`distinct` reach :attr:`target`.
    While :attr:`recording`, latencies go to :attr:`samples` as in :class:`TimingSubscriber`.
    """

    def __init__(self, topic: str, *, qos: int, client_id: str) -> None:
        loop = asyncio.get_running_loop()
        self.ready: asyncio.Future[None] = loop.create_future()
        self.topic = topic.encode()
        self.qos = qos
        self.client_id = client_id.encode()
        self.transport: asyncio.Transport | None = None
        self.messages = 0
        self.distinct = 0
        self.target: int | None = None
        self.first_at = 0.0
        self.last_at = 0.0
        self.reached_at: float | None = None
        self.recording = False
        self.samples: list[float] = []
        self._seen = bytearray()
        self._buffer = bytearray()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        body = _string(b"MQTT") + bytes((4, 0x02)) + (0).to_bytes(2, "big")
        transport.write(_packet(0x10, body + _string(self.client_id)))

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.ready.done():
            self.ready.set_exception(BenchError(f"the MQTT counter's connection ended: {exc}"))

    def data_received(self, data: bytes) -> None:
        buffer = self._buffer
        buffer += data
        acks: list[bytes] = []
        position = 0
        size = len(buffer)
        while size - position >= 2:
            header = _remaining_length(buffer, position + 1, size)
            if header is None:
                break
            length, index = header
            end = index + length
            if end > size:
                break
            first = buffer[position]
            kind = first >> 4
            if kind == 3:
                self._publish(buffer, first, index, end, acks)
            elif kind == 2:
                self._connack(buffer[index + 1])
            elif kind == 9:
                self._suback(buffer[end - 1])
            position = end
        del buffer[:position]
        if acks and self.transport is not None:
            self.transport.write(b"".join(acks))

    def _connack(self, code: int) -> None:
        if code:
            self._fail(f"the broker refused the connection (CONNACK code {code})")
            return
        assert self.transport is not None
        body = (1).to_bytes(2, "big") + _string(self.topic) + bytes((self.qos,))
        self.transport.write(_packet(0x82, body))

    def _suback(self, granted: int) -> None:
        if granted >= 0x80:
            self._fail(f"the broker refused the subscription to {self.topic.decode()}")
        elif not self.ready.done():
            self.ready.set_result(None)

    def _publish(
        self, buffer: bytearray, first: int, start: int, end: int, acks: list[bytes]
    ) -> None:
        now = time.monotonic()
        topic_end = start + 2 + int.from_bytes(buffer[start : start + 2], "big")
        payload = topic_end
        if (first >> 1) & 3:
            acks.append(b"\x40\x02" + bytes(buffer[topic_end : topic_end + 2]))
            payload += 2
        if buffer[start + 2 : topic_end] != self.topic:
            return
        self.messages += 1
        if not self.first_at:
            self.first_at = now
        self.last_at = now
        seq = _number(buffer, SEQ_KEY, payload, end)
        seen = self._seen
        if seq >= len(seen):
            seen.extend(bytes(max(seq + 1 - len(seen), 1 << 16)))
        if not seen[seq]:
            seen[seq] = 1
            self.distinct += 1
            if self.distinct == self.target:
                self.reached_at = now
        if self.recording:
            sent = float(_number_text(buffer, TIME_KEY, payload, end))
            self.samples.append(time.time() - sent)

    def _fail(self, why: str) -> None:
        if not self.ready.done():
            self.ready.set_exception(BenchError(why))
        if self.transport is not None:
            self.transport.abort()

    def close(self) -> None:
        if self.transport is not None:
            self.transport.abort()


async def open_mqtt_counter(
    port: int, topic: str, *, qos: int = 1, timeout: float = 10.0
) -> MqttCounter:
    """An :class:`MqttCounter` on the broker at 127.0.0.1:``port``, subscribed."""
    loop = asyncio.get_running_loop()
    client_id = f"bench-counter-{time.monotonic_ns()}"
    try:
        _, counter = await loop.create_connection(
            lambda: MqttCounter(topic, qos=qos, client_id=client_id), "127.0.0.1", port
        )
    except OSError as exc:
        raise BenchError(f"cannot connect to the broker on port {port}: {exc}") from exc
    try:
        async with asyncio.timeout(timeout):
            await counter.ready
    except TimeoutError:
        counter.close()
        raise BenchError(f"no SUBACK from the broker on port {port} within {timeout:g} s") from None
    return counter
