"""The pipeline benchmark's anchors (started by bench/pipeline.py): a bare relay, paho alone.

    python bench/pipeline_relay.py relay --source DEVICE=PORT [...] [--mqtt-port P] [options]
    python bench/pipeline_relay.py paho --mqtt-port P --frame HEX --messages N [options]

``relay`` does the gateway's job written plainly, as a reader of the benchmark would
write it in an afternoon: it connects to each ``--source`` (a TCP server on 127.0.0.1,
the benchmark's feeder), reads 64 KiB at a time (yielding to the loop after each read),
decodes the default frame format by
hand (sync ``AA 55``, cmd, length u16le, payload, sum8; resync one byte after a bad
length or checksum), unpacks the payloads of the messages the benchmark sends with
``struct``, numbers each envelope, serialises it with ``orjson`` into the gateway's
envelope shape, keeps the newest ``--history`` in a deque, sends it to every subscribed
WebSocket connection with ``websockets.broadcast`` and publishes it with paho-mqtt
(its socket driven from the event loop: one thread, as in the gateway; ``--window``
in flight, at most ``--mqtt-queue`` waiting: a publish beyond is counted as dropped)
to ``<prefix>/<device>/<message>``. A WebSocket
client is subscribed once it sends any message (the benchmark's subscribe request),
and is answered ``{"type":"subscribed",...}``. It has no disk outbox, no journal file, no
metrics, no reconnects, no per-client queues, no authentication.

``paho`` publishes ``--messages`` envelopes of the ``--frame``'s message (numbered 1 to
N, each stamped with the time it is published) at ``--qos`` as fast as paho takes them,
all at once, with ``--window`` in flight and no limit on its queue; paho runs on its own
network thread (``loop_start``, as bench/mqtt_outbox.py's anchor) or, with
``--on-loop``, on an asyncio loop as in the relay.

Control channel, one line each way (stdout is only for these lines):

* it says ``READY <ws-port>`` (relay; 0 without WebSocket) or ``READY`` (paho) once
  listening, connected to the broker and, for relay, to every source;
* relay: ``STATS`` from pipeline.py is answered ``STATS key=value ...``: frames,
  errors (bad frames), subscribers, published (acknowledged by the broker, or written
  at QoS 0), dropped (refused by paho's full queue);
* paho: ``GO`` starts the publishing; it then says ``PUBLISHED <first> <last>
  <published>`` (``time.monotonic()`` of the first and the last publish call, and how
  many the broker acknowledged, or that were written at QoS 0, within ``--limit`` s);
* end of input (or ``QUIT``): it exits.

Errors go to stderr, and as ``ERROR <text>`` on stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import struct
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import orjson
import paho.mqtt.client as mqtt
import websockets
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from relay_ws import BenchError, say, stdin_reader
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed

HOST = "127.0.0.1"
READ_SIZE = 65536
SYNC = b"\xaa\x55"
MAX_PAYLOAD = 256
"""The default profile's."""
SUBSCRIBED = b'{"type":"subscribed","filters":["#"]}'
GUARD = 10.0

# The payloads of the messages the benchmark sends (the default catalog's, and
# bench/pipeline_catalog.toml's): name, layout, and how the gateway presents the fields
# (scales, enums, strings, bytes as hex).
EVENT_CODES = {1: "boot", 2: "button", 3: "threshold", 4: "watchdog"}
Fields = Callable[[tuple[Any, ...]], dict[str, Any]]
MESSAGES: dict[int, tuple[str, struct.Struct, Fields]] = {
    0x10: (
        "environment",
        struct.Struct("<hHI"),
        lambda v: {"temperature": v[0] / 100, "humidity": v[1] / 100, "pressure": v[2] / 10},
    ),
    0x11: (
        "motion",
        struct.Struct("<3h"),
        lambda v: {"accel": [v[0] / 1000, v[1] / 1000, v[2] / 1000]},
    ),
    0x12: (
        "power",
        struct.Struct("<HhB"),
        lambda v: {"battery": v[0], "current": v[1], "charge": v[2]},
    ),
    0x20: (
        "event",
        struct.Struct("<H16s"),
        lambda v: {"code": EVENT_CODES.get(v[0], v[0]), "text": v[1].rstrip(b"\0").decode()},
    ),
    0x21: (
        "identity",
        struct.Struct("<6s3B12s"),
        lambda v: {
            "serial": v[0].hex(),
            "firmware": [v[1], v[2], v[3]],
            "model": v[4].rstrip(b"\0").decode(),
        },
    ),
    0x40: (  # bench/pipeline_catalog.toml's
        "waveform",
        struct.Struct("<B120h"),
        lambda v: {"channel": v[0], "samples": [sample / 1000 for sample in v[1:]]},
    ),
}


class FrameDecoder:
    """The default frame format, by hand: ``feed(data)`` returns ``(cmd, payload)`` pairs."""

    def __init__(self) -> None:
        self.buffer = bytearray()
        self.errors = 0

    def feed(self, data: bytes) -> list[tuple[int, bytes]]:
        buffer = self.buffer
        buffer += data
        size = len(buffer)
        frames = []
        position = 0
        while True:
            at = buffer.find(SYNC, position)
            if at < 0:
                position = size - 1 if size and buffer[-1] == SYNC[0] else size
                break
            if size - at < 5:
                position = at
                break
            length = buffer[at + 3] | buffer[at + 4] << 8
            if length > MAX_PAYLOAD:
                self.errors += 1
                position = at + 1
                continue
            end = at + 5 + length
            if end >= size:
                position = at
                break
            if sum(buffer[at:end]) & 0xFF != buffer[end]:
                self.errors += 1
                position = at + 1
                continue
            frames.append((buffer[at + 2], bytes(buffer[at + 5 : end])))
            position = end + 1
        del buffer[:position]
        return frames


def envelope(device: str, seq: int, cmd: int, payload: bytes, now: float) -> tuple[str, bytes]:
    """The message's name and its envelope's JSON, in the gateway's shape."""
    known = MESSAGES.get(cmd)
    if known is None:
        name, fields = "unknown", {"payload": payload.hex()}
    else:
        name, layout, present = known
        fields = present(layout.unpack(payload))
    record = {
        "type": "message",
        "seq": seq,
        "device": device,
        "message": None if known is None else name,
        "cmd": cmd,
        "time": now,
        "fields": fields,
    }
    return name, orjson.dumps(record)


class Paho:
    """A paho-mqtt client that counts acknowledgements and refusals.

    :meth:`start_thread` runs it on paho's own network thread (``loop_start``);
    :meth:`start_on_loop` drives its socket from the running asyncio loop, as paho's
    ``loop_asyncio`` example does (``add_reader``/``add_writer``, ``loop_misc`` once a
    second): one thread, like the gateway.
    """

    def __init__(self, port: int, *, qos: int, window: int, queue: int) -> None:
        self.port = port
        self.qos = qos
        self.published = 0
        """Acknowledged by the broker (QoS 1, 2) or written to the socket (QoS 0)."""
        self.dropped = 0
        self._connected = threading.Event()
        self._threaded = False
        self._misc: asyncio.Task[None] | None = None
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=f"bench-bare-{os.getpid()}", clean_session=True
        )
        client.max_inflight_messages_set(window)
        client.max_queued_messages_set(queue)
        client.on_connect = self._on_connect
        client.on_publish = self._on_publish
        self.client = client

    def _connect(self) -> None:
        try:
            self.client.connect(HOST, self.port, keepalive=60)
        except OSError as exc:
            raise BenchError(f"paho cannot connect to 127.0.0.1:{self.port}: {exc}") from exc

    def start_thread(self) -> None:
        self._connect()
        self.client.loop_start()
        self._threaded = True
        if not self._connected.wait(GUARD):
            raise BenchError(f"paho: no CONNACK from 127.0.0.1:{self.port} within {GUARD:g} s")

    async def start_on_loop(self) -> None:
        loop = asyncio.get_running_loop()
        client = self.client

        def opened(client: mqtt.Client, userdata: object, sock: Any) -> None:
            loop.add_reader(sock, client.loop_read)
            self._misc = loop.create_task(self._housekeeping())

        def closed(client: mqtt.Client, userdata: object, sock: Any) -> None:
            loop.remove_reader(sock)
            if self._misc is not None:
                self._misc.cancel()

        def writing(client: mqtt.Client, userdata: object, sock: Any) -> None:
            loop.add_writer(sock, client.loop_write)

        def written(client: mqtt.Client, userdata: object, sock: Any) -> None:
            loop.remove_writer(sock)

        client.on_socket_open = opened
        client.on_socket_close = closed
        client.on_socket_register_write = writing
        client.on_socket_unregister_write = written
        self._connect()
        deadline = loop.time() + GUARD
        while not self._connected.is_set():
            if loop.time() > deadline:
                raise BenchError(f"paho: no CONNACK from 127.0.0.1:{self.port} within {GUARD:g} s")
            await asyncio.sleep(0.01)

    async def _housekeeping(self) -> None:
        while self.client.loop_misc() == mqtt.MQTT_ERR_SUCCESS:
            await asyncio.sleep(1.0)

    def _on_connect(
        self,
        client: mqtt.Client,
        userdata: object,
        flags: mqtt.ConnectFlags,
        reason_code: ReasonCode,
        properties: Properties | None,
    ) -> None:
        if not reason_code.is_failure:
            self._connected.set()

    def _on_publish(
        self,
        client: mqtt.Client,
        userdata: object,
        mid: int,
        reason_code: ReasonCode,
        properties: Properties | None,
    ) -> None:
        self.published += 1  # only the network thread (or the loop) writes it

    def publish(self, topic: str, payload: bytes) -> None:
        if self.client.publish(topic, payload, qos=self.qos).rc != mqtt.MQTT_ERR_SUCCESS:
            self.dropped += 1

    def close(self) -> None:
        self.client.disconnect()
        if self._threaded:
            self.client.loop_stop()


class BareRelay:
    """The relay: sources in; WebSocket subscribers and paho out."""

    def __init__(self, arguments: argparse.Namespace, mqtt_client: Paho | None) -> None:
        self.prefix = arguments.topic_prefix
        self.mqtt = mqtt_client
        self.subscribers: set[ServerConnection] = set()
        self.history: deque[tuple[int, bytes]] = deque(maxlen=arguments.history)
        self.seq = 0
        self.frames = 0
        self.decoders: list[FrameDecoder] = []
        self.topics: dict[tuple[str, str], str] = {}
        self.writers: list[asyncio.StreamWriter] = []

    async def handle(self, connection: ServerConnection) -> None:
        """A client: subscribed to everything once it says anything."""
        try:
            await connection.recv()
        except ConnectionClosed:
            return
        self.subscribers.add(connection)
        try:
            await connection.send(SUBSCRIBED, text=True)
            await connection.wait_closed()
        finally:
            self.subscribers.discard(connection)

    async def connect(self, device: str, port: int) -> asyncio.StreamReader:
        try:
            reader, writer = await asyncio.open_connection(HOST, port, limit=READ_SIZE)
        except OSError as exc:
            raise BenchError(f"{device}: cannot connect to 127.0.0.1:{port}: {exc}") from exc
        self.writers.append(writer)  # a writer that is collected closes the link
        return reader

    async def read(self, device: str, reader: asyncio.StreamReader) -> None:
        decoder = FrameDecoder()
        self.decoders.append(decoder)
        history, mqtt_client = self.history, self.mqtt
        while True:
            try:
                chunk = await reader.read(READ_SIZE)
            except OSError:
                return
            if not chunk:
                return
            now = time.time()
            for cmd, payload in decoder.feed(chunk):
                self.seq += 1
                seq = self.seq
                name, data = envelope(device, seq, cmd, payload, now)
                history.append((seq, data))
                if self.subscribers:
                    websockets.broadcast(self.subscribers, data, text=True)
                if mqtt_client is not None:
                    mqtt_client.publish(self._topic(device, name), data)
            self.frames = self.seq
            # read() returns at once while bytes wait: without this, a relay that is behind
            # would never let paho read its PUBACKs (as the gateway's sources do)
            await asyncio.sleep(0)

    def _topic(self, device: str, name: str) -> str:
        topic = self.topics.get((device, name))
        if topic is None:
            topic = self.topics[device, name] = f"{self.prefix}/{device}/{name}"
        return topic

    def statistics(self) -> str:
        mqtt_client = self.mqtt
        counts = {
            "frames": self.frames,
            "errors": sum(decoder.errors for decoder in self.decoders),
            "subscribers": len(self.subscribers),
            "published": mqtt_client.published if mqtt_client else 0,
            "dropped": mqtt_client.dropped if mqtt_client else 0,
        }
        return " ".join(f"{key}={value}" for key, value in counts.items())


async def run_relay(arguments: argparse.Namespace) -> None:
    sources = []
    for text in arguments.source:
        device, _, port = text.partition("=")
        if not device or not port.isdigit():
            raise BenchError(f"--source {text!r}: expected DEVICE=PORT")
        sources.append((device, int(port)))
    mqtt_client = None
    if arguments.mqtt_port:
        mqtt_client = Paho(
            arguments.mqtt_port,
            qos=arguments.qos,
            window=arguments.window,
            queue=arguments.mqtt_queue,
        )
        await mqtt_client.start_on_loop()
    relay = BareRelay(arguments, mqtt_client)
    ping = arguments.ping_interval or None
    try:
        async with serve(
            relay.handle, HOST, 0, compression=None, ping_interval=ping, ping_timeout=ping
        ) as server:
            ws_port = int(next(iter(server.sockets)).getsockname()[1])
            readers = [(device, await relay.connect(device, port)) for device, port in sources]
            control = await stdin_reader()
            async with asyncio.TaskGroup() as tasks:
                running = [
                    tasks.create_task(relay.read(device, reader), name=f"source {device}")
                    for device, reader in readers
                ]
                say("READY", ws_port)
                await obey(control, relay)
                for task in running:
                    task.cancel()
    finally:
        if mqtt_client is not None:
            mqtt_client.close()


async def obey(control: asyncio.StreamReader, relay: BareRelay) -> None:
    """Answer pipeline.py's lines until the end of its input."""
    while line := (await control.readline()).decode():
        match line.split():
            case ["STATS"]:
                say("STATS", relay.statistics())
            case ["QUIT"]:
                return
            case _:
                say("ERROR", f"unknown command {line.strip()!r}")


async def run_paho(arguments: argparse.Namespace) -> None:
    frame = bytes.fromhex(arguments.frame)
    frames = FrameDecoder().feed(frame)
    if len(frames) != 1:
        raise BenchError(f"--frame {arguments.frame}: not one frame of the default format")
    cmd, payload = frames[0]
    name = MESSAGES[cmd][0] if cmd in MESSAGES else "unknown"
    topic = f"{arguments.topic_prefix}/{arguments.device}/{name}"
    client = Paho(arguments.mqtt_port, qos=arguments.qos, window=arguments.window, queue=0)
    if arguments.on_loop:
        await client.start_on_loop()
    else:
        client.start_thread()
    try:
        control = await stdin_reader()
        say("READY")
        if (await control.readline()).strip() != b"GO":
            return
        count = arguments.messages
        first = time.monotonic()
        for seq in range(1, count + 1):
            client.publish(topic, envelope(arguments.device, seq, cmd, payload, time.time())[1])
        last = time.monotonic()
        deadline = last + arguments.limit
        while client.published < count and time.monotonic() < deadline:
            await asyncio.sleep(0.001)  # the loop drives paho's socket, if it is on the loop
        say("PUBLISHED", repr(first), repr(last), client.published)
        await control.readline()  # until pipeline.py closes the channel
    finally:
        client.close()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="The anchors of the pipeline benchmark: speak to pipeline.py on "
        "stdin/stdout (see the module docstring)."
    )
    modes = parser.add_subparsers(dest="mode", required=True)
    relay = modes.add_parser("relay", help="the bare relay")
    paho = modes.add_parser("paho", help="paho-mqtt alone")
    for sub in (relay, paho):
        sub.add_argument("--mqtt-port", type=int, default=0, help="the broker's; 0: no MQTT")
        sub.add_argument("--qos", type=int, choices=[0, 1, 2], default=1)
        sub.add_argument("--window", type=int, default=100, help="publishes in flight")
        sub.add_argument("--topic-prefix", default="tgw")
    relay.add_argument("--source", action="append", default=[], metavar="DEVICE=PORT")
    relay.add_argument("--mqtt-queue", type=int, default=100_000, help="paho's queue bound")
    relay.add_argument("--history", type=int, default=10_000, help="envelopes kept")
    relay.add_argument("--ping-interval", type=float, default=0.0, help="WebSocket pings; 0: none")
    paho.add_argument("--frame", required=True, help="one encoded frame, in hex")
    paho.add_argument("--device", default="bench")
    paho.add_argument("--messages", type=int, required=True)
    paho.add_argument("--limit", type=float, default=60.0, help="seconds to wait for the acks")
    paho.add_argument(
        "--on-loop",
        action="store_true",
        help="drive paho's socket from an asyncio loop (as the relay does), not its thread",
    )
    return parser


def main() -> int:
    arguments = build_parser().parse_args()
    try:
        if arguments.mode == "relay":
            asyncio.run(run_relay(arguments))
        else:
            asyncio.run(run_paho(arguments))
    except BenchError as exc:
        say("ERROR", exc)
        print(f"pipeline_relay: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
