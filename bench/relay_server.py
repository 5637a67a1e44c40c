"""The server side of the relay benchmark's fan-out part (started by bench/relay.py).

    python bench/relay_server.py --mode tgw|plain --messages M [--batch B] ...

Mode ``tgw``: the gateway's own WebSocket output (its hub and server), built by
:func:`gateway.outputs.websocket.build`; every message is numbered and serialised by a
:class:`~gateway.runtime.journal.Journal` and handed to the output's ``deliver``, as the
gateway does.
Mode ``plain``: a minimal ``websockets`` server that keeps the set of its connections
and calls ``websockets.broadcast(connections, payload, text=True)``. The envelope is a
real ``motion`` frame (encoded by the project's encoder, decoded by its stream
decoder) and both modes send the same JSON bytes, message for message.

Control channel, one line each way (stdout is only for these lines):

* it says ``READY <port> <bytes>``: listening; ``<bytes>`` is exactly what each
  subscriber will receive once the M messages are published (frame headers included);
* ``WAIT <n>`` from relay.py: it answers ``SUBSCRIBED <n>`` once n connections are
  registered (mode tgw: subscribed to something);
* ``GO``: it publishes the M messages in batches of B; before each batch it yields to
  the event loop (``asyncio.sleep(0)``) until the bytes still held in the server for
  all connections (hub queues plus transport write buffers in mode tgw, transport
  write buffers in mode plain) are at most ``connections x (max-pending - B)``
  messages' worth, so that no queue ever holds more than max-pending on average; then
  it says ``PUBLISHED <t_first> <t_last> <dropped> <waits>`` (``time.monotonic()`` of
  the first and the last publish, messages the hub dropped, pacing rounds);
* end of input (or ``QUIT``): it exits.

Errors go to stderr, and as ``ERROR <text>`` on stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import sys
import time
from collections.abc import Callable
from typing import Any

import websockets
from relay_ws import BenchError, raise_open_file_limit, say, server_frame_size, stdin_reader
from websockets.asyncio.server import Server, ServerConnection, serve

from gateway.config import GatewayConfig, WebSocketConfig
from gateway.outputs.websocket import WebSocketOutput, build
from gateway.runtime.envelope import Envelope
from gateway.runtime.http import HttpEndpoints
from gateway.runtime.journal import Journal
from gateway.runtime.metrics import GatewayMetrics
from gateway.runtime.output import OutputContext
from protocol.decoder import StreamDecoder
from protocol.encoder import FrameEncoder
from protocol.errors import GatewayError
from protocol.events import Frame
from protocol.schema import load_schema

DEVICE = "bench-node"
MOTION = {"accel": [0.012, -0.034, 0.998]}


def motion_envelope() -> Envelope:
    """An envelope of a real ``motion`` frame: encoded, then decoded by the stream decoder."""
    schema = load_schema()
    data = FrameEncoder(schema).encode("motion", MOTION)
    events = StreamDecoder(schema).feed(data)
    frames = [event for event in events if isinstance(event, Frame)]
    if len(frames) != 1:
        raise BenchError(f"decoding one motion frame gave {events!r}")
    return Envelope(DEVICE, frames[0], received=time.time())


class NoCommands:
    """The command sink of a gateway without devices."""

    async def send_command(self, device: str, message: str, fields: dict[str, Any]) -> None:
        raise GatewayError("the benchmark server has no devices")


class Mode:
    """What the two modes have in common: start, count subscribers, publish, backlog."""

    port = 0

    async def start(self, host: str) -> None:
        raise NotImplementedError

    def subscribed(self) -> int:
        """Connections ready to receive what is published."""
        raise NotImplementedError

    def publish(self, index: int) -> None:
        """Publish message ``index`` (0-based) to every connection."""
        raise NotImplementedError

    def pending_bytes(self) -> int:
        """Bytes the server still holds for its connections (not yet given to the kernel)."""
        raise NotImplementedError

    def dropped(self) -> int:
        return 0

    async def close(self) -> None:
        raise NotImplementedError


def _write_buffers(connections: set[ServerConnection]) -> int:
    return sum(connection.transport.get_write_buffer_size() for connection in connections)


class TgwMode(Mode):
    """The gateway's journal and WebSocket output."""

    def __init__(self, envelope: Envelope, payloads: list[bytes], queue_size: int) -> None:
        self.envelope = envelope
        self.payloads = payloads
        self.message_bytes = max(server_frame_size(len(p)) for p in payloads)
        self.metrics = GatewayMetrics()
        self.journal = Journal(history=WebSocketConfig().history)
        self.websocket = WebSocketConfig(
            host="127.0.0.1",
            port=0,
            queue_size=queue_size,
            slow_policy="drop",
            compression=False,
            ping_interval=3600.0,
            ping_timeout=3600.0,
        )
        self.output: WebSocketOutput | None = None
        self.mismatches = 0

    async def start(self, host: str) -> None:
        config = GatewayConfig(websocket=self.websocket.model_copy(update={"host": host}))
        output = build(
            OutputContext(
                config=config,
                metrics=self.metrics,
                journal=self.journal,
                http=HttpEndpoints(health=lambda: (200, {"status": "ok"}), metrics=self.metrics),
                schemas={},
                hello=lambda: {"type": "hello", "version": "bench", "devices": [], "catalogs": {}},
                commands=NoCommands(),
            )
        )
        if not isinstance(output, WebSocketOutput):
            raise BenchError(f"the websocket output's factory gave {output!r}")
        self.output = output
        await output.start()
        self.port = output.server.port

    def subscribed(self) -> int:
        assert self.output is not None
        return self.output.hub.statistics().subscribed

    def publish(self, index: int) -> None:
        assert self.output is not None
        published = self.journal.append(self.envelope)
        self.output.deliver(published)
        if published.payload != self.payloads[index]:
            self.mismatches += 1

    def pending_bytes(self) -> int:
        # The benchmark looks inside: the transports' write buffers are the second half
        # of what the server holds, after the hub's buffers.
        assert self.output is not None
        inner: Server | None = self.output.server._server
        connections = set() if inner is None else inner.connections
        queued = self.output.hub.statistics().buffered
        return queued * self.message_bytes + _write_buffers(connections)

    def dropped(self) -> int:
        assert self.output is not None
        return self.output.hub.statistics().dropped + self.mismatches

    async def close(self) -> None:
        if self.output is not None:
            await self.output.close(asyncio.get_running_loop().time() + 10.0)


class PlainMode(Mode):
    """A minimal websockets server and ``websockets.broadcast``."""

    def __init__(self, payloads: list[bytes]) -> None:
        self.payloads = payloads
        self.connections: set[ServerConnection] = set()
        self.server: Server | None = None

    async def _handler(self, connection: ServerConnection) -> None:
        self.connections.add(connection)
        try:
            await connection.wait_closed()
        finally:
            self.connections.discard(connection)

    async def start(self, host: str) -> None:
        self.server = await serve(self._handler, host, 0, compression=None, ping_interval=None)
        for sock in self.server.sockets:
            self.port = int(sock.getsockname()[1])
            break

    def subscribed(self) -> int:
        return len(self.connections)

    def publish(self, index: int) -> None:
        websockets.broadcast(self.connections, self.payloads[index], text=True)

    def pending_bytes(self) -> int:
        return _write_buffers(self.connections)

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()


async def publish_all(
    mode: Mode, messages: int, batch: int, limit: int, clock: Callable[[], float]
) -> tuple[float, float, int]:
    """Publish ``messages`` in batches, pacing on :meth:`Mode.pending_bytes` <= ``limit``.

    Return the clock at the first and the last publish, and how many times it yielded.
    """
    waits = 0
    first = clock()
    last = first
    for start in range(0, messages, batch):
        while True:
            await asyncio.sleep(0)
            waits += 1
            if mode.pending_bytes() <= limit:
                break
        for index in range(start, min(start + batch, messages)):
            if index == 0:
                first = clock()
            mode.publish(index)
        last = clock()
    return first, last, waits


async def serve_benchmark(arguments: argparse.Namespace) -> None:
    raise_open_file_limit(arguments.connections + 100)
    envelope = motion_envelope()
    payloads = [
        dataclasses.replace(envelope, seq=seq).to_json() for seq in range(1, arguments.messages + 1)
    ]
    per_connection = sum(server_frame_size(len(payload)) for payload in payloads)
    message_bytes = max(server_frame_size(len(payload)) for payload in payloads)
    mode: Mode
    if arguments.mode == "tgw":
        mode = TgwMode(envelope, payloads, arguments.queue_size)
    else:
        mode = PlainMode(payloads)
    await mode.start(arguments.host)
    control = await stdin_reader()
    say("READY", mode.port, per_connection)
    try:
        while line := (await control.readline()).decode():
            match line.split():
                case ["WAIT", count]:
                    while mode.subscribed() < int(count):
                        await asyncio.sleep(0.05)
                    say("SUBSCRIBED", mode.subscribed())
                case ["GO"]:
                    headroom = max(arguments.max_pending - arguments.batch, 0)
                    limit = arguments.connections * headroom * message_bytes
                    first, last, waits = await publish_all(
                        mode, arguments.messages, arguments.batch, limit, time.monotonic
                    )
                    say("PUBLISHED", repr(first), repr(last), mode.dropped(), waits)
                case ["QUIT"]:
                    break
                case _:
                    say("ERROR", f"unknown command {line.strip()!r}")
    finally:
        await mode.close()


def main() -> int:
    parser = argparse.ArgumentParser(
        description="The server of the relay benchmark's fan-out part: speaks to relay.py "
        "on stdin/stdout (see the module docstring)."
    )
    parser.add_argument("--mode", choices=["tgw", "plain"], required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--connections", type=int, default=1000, help="expected subscribers")
    parser.add_argument("--messages", type=int, default=2000, help="messages to publish")
    parser.add_argument("--batch", type=int, default=50, help="messages per batch")
    parser.add_argument(
        "--max-pending",
        type=int,
        default=100,
        help="messages per connection the server may hold on average (pacing)",
    )
    parser.add_argument(
        "--queue-size", type=int, default=100_000, help="hub queue per subscriber (mode tgw)"
    )
    arguments = parser.parse_args()
    try:
        asyncio.run(serve_benchmark(arguments))
    except BenchError as exc:
        say("ERROR", exc)
        print(f"relay_server: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
