"""Helpers shared by the relay benchmark's processes (bench/relay*.py).

* a raw WebSocket subscriber: an asyncio protocol that does the opening handshake by
  hand, optionally sends one masked subscribe frame, waits for the server's reply, and
  from then on only counts the bytes it receives (no frame parsing, no JSON; a subclass
  may look at them in :meth:`RawSubscriber.take`);
* the few lines of RFC 6455 framing that needs;
* CPU time of a process or of one of its threads from ``/proc``, and its memory;
* raising ``RLIMIT_NOFILE`` for a thousand sockets;
* the stdin control channel of the benchmark's subprocesses.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import resource
import sys
import time
from collections.abc import Callable

__all__ = [
    "BenchError",
    "RawSubscriber",
    "accept_key",
    "bytes_written",
    "cpu_seconds",
    "cpu_times",
    "handshake_request",
    "machine_busy",
    "masked_text_frame",
    "memory",
    "open_raw_subscribers",
    "pop_frame",
    "raise_open_file_limit",
    "say",
    "server_frame_size",
    "stdin_reader",
    "thread_ids",
]

WEBSOCKET_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
READ_BUFFER = bytearray(256 * 1024)
"""One receive buffer for every raw subscriber of a process: asyncio fills it and calls
``buffer_updated`` at once, in the loop's thread, so they can all share it."""
MAX_PREAMBLE = 1 << 20
"""Bytes a subscriber accepts before its subscription is confirmed."""
OPCODE_TEXT = 0x1
OPCODE_CLOSE = 0x8


class BenchError(Exception):
    """Something did not start, did not answer or went wrong: one line for the operator."""


# Framing.


def accept_key(key: str) -> str:
    """The ``Sec-WebSocket-Accept`` a server must answer to ``key``."""
    digest = hashlib.sha1((key + WEBSOCKET_GUID).encode(), usedforsecurity=False).digest()
    return base64.b64encode(digest).decode()


def handshake_request(host: str, port: int, key: str, path: str = "/") -> bytes:
    """The HTTP/1.1 upgrade request of the opening handshake."""
    return (
        f"GET {path} HTTP/1.1\r\n"
        f"Host: {host}:{port}\r\n"
        "Upgrade: websocket\r\n"
        "Connection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\n"
        "Sec-WebSocket-Version: 13\r\n"
        "\r\n"
    ).encode()


def masked_text_frame(payload: bytes) -> bytes:
    """One final text frame as a client must send it: masked with a random key."""
    size = len(payload)
    if size < 126:
        header = bytes((0x80 | OPCODE_TEXT, 0x80 | size))
    elif size < 1 << 16:
        header = bytes((0x80 | OPCODE_TEXT, 0x80 | 126)) + size.to_bytes(2, "big")
    else:
        header = bytes((0x80 | OPCODE_TEXT, 0x80 | 127)) + size.to_bytes(8, "big")
    mask = os.urandom(4)
    masked = bytes(byte ^ mask[index & 3] for index, byte in enumerate(payload))
    return header + mask + masked


def server_frame_size(payload_size: int) -> int:
    """Bytes on the wire of an unmasked (server to client) frame of ``payload_size``."""
    if payload_size < 126:
        return payload_size + 2
    if payload_size < 1 << 16:
        return payload_size + 4
    return payload_size + 10


def pop_frame(buffer: bytearray) -> tuple[int, bytes] | None:
    """Remove the first frame of ``buffer`` and return ``(opcode, payload)``; None if incomplete."""
    if len(buffer) < 2:
        return None
    opcode = buffer[0] & 0x0F
    masked = buffer[1] & 0x80
    size = buffer[1] & 0x7F
    start = 2
    if size == 126:
        if len(buffer) < 4:
            return None
        size, start = int.from_bytes(buffer[2:4], "big"), 4
    elif size == 127:
        if len(buffer) < 10:
            return None
        size, start = int.from_bytes(buffer[2:10], "big"), 10
    if masked:
        start += 4  # a server never masks; tolerate it anyway
    if len(buffer) < start + size:
        return None
    payload = bytes(buffer[start : start + size])
    if masked:
        mask = buffer[start - 4 : start]
        payload = bytes(byte ^ mask[index & 3] for index, byte in enumerate(payload))
    del buffer[: start + size]
    return opcode, payload


# A subscriber that counts bytes.


class RawSubscriber(asyncio.BufferedProtocol):
    """A WebSocket client that does the handshake by hand, then only counts bytes.

    With ``subscribe`` (a JSON request), it sends it in a masked text frame after the
    handshake and reads frames until the reply whose payload contains ``confirm``; what
    comes before (the greeting, the reply) is not counted. Without, counting starts
    right after the ``101`` response. :attr:`ready` completes then (or fails, with a
    :class:`BenchError` saying why).

    Set :attr:`target` (bytes) to have :attr:`reached_at` stamped (``time.monotonic``)
    the moment :attr:`received` reaches it, and ``on_target`` called.

    Every counted chunk is also handed to :meth:`take`, which does nothing here.
    """

    def __init__(
        self,
        host: str,
        port: int,
        *,
        subscribe: bytes | None,
        confirm: bytes = b'"type":"subscribed"',
        on_target: Callable[[RawSubscriber], None] | None = None,
    ) -> None:
        loop = asyncio.get_running_loop()
        self.ready: asyncio.Future[None] = loop.create_future()
        self.lost: asyncio.Future[None] = loop.create_future()
        self.received = 0
        """Bytes received since counting started."""
        self.target: int | None = None
        self.reached_at: float | None = None
        self.on_target = on_target
        self.transport: asyncio.Transport | None = None
        self._host, self._port = host, port
        self._key = base64.b64encode(os.urandom(16)).decode()
        self._subscribe = subscribe
        self._confirm = confirm
        self._counting = False
        self._handshaken = False
        self._setup = bytearray()

    # asyncio callbacks.

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        transport.write(handshake_request(self._host, self._port, self._key))

    def get_buffer(self, sizehint: int) -> memoryview:
        return memoryview(READ_BUFFER)

    def buffer_updated(self, nbytes: int) -> None:
        if self._counting:
            self.received += nbytes
            self.take(READ_BUFFER, nbytes)
            if self.target is not None and self.reached_at is None and self.received >= self.target:
                self._reached()
            return
        self._setup += READ_BUFFER[:nbytes]
        try:
            self._advance()
        except BenchError as exc:
            self._fail(exc)

    def eof_received(self) -> bool | None:
        self._fail(BenchError("the server closed the connection during setup"))
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        reason = f"connection lost ({exc})" if exc else "connection closed by the server"
        self._fail(BenchError(reason))
        if not self.lost.done():
            self.lost.set_result(None)

    # Counting.

    def take(self, buffer: bytearray, size: int) -> None:
        """Look at a counted chunk, ``buffer[:size]``; subclasses do, this does nothing.

        ``buffer`` is reused for the next chunk: copy what must be kept. Called in order,
        from the first byte after the subscription's reply on.
        """

    def arm(self, target: int) -> None:
        """Stamp :attr:`reached_at` once :attr:`received` reaches ``target`` bytes."""
        self.target = target
        if self.received >= target and self.reached_at is None:
            self._reached()

    def close(self) -> None:
        """Drop the connection (no closing handshake: this is a benchmark)."""
        if self.transport is not None:
            self.transport.abort()

    def _reached(self) -> None:
        self.reached_at = time.monotonic()
        if self.on_target is not None:
            self.on_target(self)

    # Setup: the handshake, the subscription.

    def _advance(self) -> None:
        if not self._handshaken:
            end = self._setup.find(b"\r\n\r\n")
            if end < 0:
                if len(self._setup) > MAX_PREAMBLE:
                    raise BenchError("no end to the handshake response")
                return
            self._check_response(bytes(self._setup[:end]).decode("latin-1"))
            del self._setup[: end + 4]
            self._handshaken = True
            if self._subscribe is None:
                self._start_counting()
                return
            assert self.transport is not None
            self.transport.write(masked_text_frame(self._subscribe))
        while (frame := pop_frame(self._setup)) is not None:
            opcode, payload = frame
            if opcode == OPCODE_CLOSE:
                raise BenchError(f"the server closed the connection: {payload[2:]!r}")
            if opcode == OPCODE_TEXT and self._confirm in payload:
                self._start_counting()
                return
        if len(self._setup) > MAX_PREAMBLE:
            raise BenchError("no reply to the subscription")

    def _check_response(self, head: str) -> None:
        lines = head.split("\r\n")
        if len(lines[0].split()) < 2 or lines[0].split()[1] != "101":
            raise BenchError(f"handshake refused: {lines[0]!r}")
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        if headers.get("sec-websocket-accept") != accept_key(self._key):
            raise BenchError("handshake: wrong Sec-WebSocket-Accept")

    def _start_counting(self) -> None:
        self._counting = True
        self.received = len(self._setup)  # anything that came right after the reply
        if self._setup:
            self.take(self._setup, len(self._setup))
        self._setup = bytearray()
        if not self.ready.done():
            self.ready.set_result(None)
        if self.target is not None:
            self.arm(self.target)

    def _fail(self, exc: BenchError) -> None:
        if not self.ready.done():
            self.ready.set_exception(exc)
            if self.transport is not None:
                self.transport.abort()


async def open_raw_subscribers(
    host: str,
    port: int,
    count: int,
    *,
    subscribe: bytes | None,
    concurrency: int = 50,
    timeout: float = 30.0,
    on_target: Callable[[RawSubscriber], None] | None = None,
    factory: Callable[[], RawSubscriber] | None = None,
) -> list[RawSubscriber]:
    """Open ``count`` raw subscribers, ``concurrency`` handshakes at a time; all ready.

    ``factory`` makes each protocol (a subclass of :class:`RawSubscriber`); by default a
    :class:`RawSubscriber` with ``subscribe`` and ``on_target``. Raise :class:`BenchError`
    if one fails or they are not all ready within ``timeout``.
    """

    def plain() -> RawSubscriber:
        return RawSubscriber(host, port, subscribe=subscribe, on_target=on_target)

    make = factory or plain
    loop = asyncio.get_running_loop()
    gate = asyncio.Semaphore(concurrency)
    subscribers: list[RawSubscriber] = []

    async def one() -> None:
        async with gate:
            try:
                _, protocol = await loop.create_connection(make, host, port)
            except OSError as exc:
                raise BenchError(f"cannot connect to {host}:{port}: {exc}") from exc
            subscribers.append(protocol)
            await protocol.ready

    tasks = [asyncio.create_task(one()) for _ in range(count)]
    try:
        async with asyncio.timeout(timeout):
            await asyncio.gather(*tasks)
    except BaseException as exc:
        for task in tasks:
            task.cancel()
        for subscriber in subscribers:
            subscriber.close()
        if isinstance(exc, TimeoutError):
            ready = sum(1 for subscriber in subscribers if subscriber.ready.done())
            raise BenchError(
                f"only {ready} of {count} raw subscribers to {host}:{port} were ready "
                f"after {timeout:g} s"
            ) from None
        if isinstance(exc, BenchError):
            raise BenchError(f"raw subscriber to {host}:{port}: {exc}") from exc
        raise
    return subscribers


# Processes.


def cpu_times(pid: int, tid: int | None = None) -> tuple[float, float]:
    """User and system CPU seconds ``pid`` has used (``/proc/<pid>/stat``, clock ticks);
    with ``tid``, those of that thread of it alone (``/proc/<pid>/task/<tid>/stat``)."""
    path = f"/proc/{pid}/stat" if tid is None else f"/proc/{pid}/task/{tid}/stat"
    with open(path, "rb") as stat:
        data = stat.read()
    fields = data[data.rindex(b")") + 2 :].split()
    # Fields after the command: state (3), ppid (4), ... utime (14), stime (15).
    return int(fields[11]) / CLOCK_TICKS, int(fields[12]) / CLOCK_TICKS


def cpu_seconds(pid: int, tid: int | None = None) -> float:
    """User plus system CPU seconds ``pid`` (or its thread ``tid``) has used."""
    return sum(cpu_times(pid, tid))


def machine_busy() -> float:
    """CPU seconds all the machine's cores have been busy (``/proc/stat``: all but idle and
    iowait), whoever used them."""
    with open("/proc/stat", "rb") as stat:
        fields = [int(value) for value in stat.readline().split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    return (sum(fields[:8]) - idle) / CLOCK_TICKS


def thread_ids(pid: int) -> list[int]:
    """The threads of ``pid`` now (``/proc/<pid>/task``); the main thread's id is ``pid``."""
    return sorted(int(name) for name in os.listdir(f"/proc/{pid}/task"))


def memory(pid: int) -> tuple[int, int]:
    """Resident bytes of ``pid`` now and at their peak (``VmRSS``, ``VmHWM``)."""
    found: dict[bytes, int] = {}
    with open(f"/proc/{pid}/status", "rb") as status:
        for line in status:
            name, _, value = line.partition(b":")
            if name in (b"VmRSS", b"VmHWM"):
                found[name] = int(value.split()[0]) * 1024  # in kB
    if len(found) != 2:
        raise BenchError(f"no VmRSS or VmHWM in /proc/{pid}/status")
    return found[b"VmRSS"], found[b"VmHWM"]


def bytes_written(pid: int) -> int:
    """Bytes ``pid`` has passed to write() and the like (``wchar`` of ``/proc/<pid>/io``)."""
    with open(f"/proc/{pid}/io", "rb") as io:
        for line in io:
            name, _, value = line.partition(b":")
            if name == b"wchar":
                return int(value)
    raise BenchError(f"no wchar in /proc/{pid}/io")


def raise_open_file_limit(wanted: int) -> int:
    """Raise the soft ``RLIMIT_NOFILE`` towards ``wanted`` (up to the hard limit).

    Return the soft limit now in force; raise :class:`BenchError` if it is below
    ``wanted``.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    infinity = resource.RLIM_INFINITY
    if soft != infinity and soft < wanted:
        new = wanted if hard == infinity else min(wanted, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))
        soft = new
    if soft != infinity and soft < wanted:
        raise BenchError(
            f"{wanted} open files needed, the hard limit is {hard}: raise it (ulimit -Hn) "
            "or use fewer connections"
        )
    return soft


async def stdin_reader() -> asyncio.StreamReader:
    """An asyncio reader of this process's stdin: the control channel from relay.py."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    return reader


def say(*words: object) -> None:
    """Write one line on the control channel (stdout) to relay.py."""
    print(*words, flush=True)
