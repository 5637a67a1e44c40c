"""MQTT clients compared: publishes acknowledged per second, and CPU per message.

    python bench/mqtt_clients.py [options]      (--help lists them)

It prints measured figures; it asserts nothing about them. One mosquitto of its own
(bench/mqtt_outbox.py's: a free port of 127.0.0.1, no persistence, no subscriber)
serves every run. Each run connects, then publishes ``--messages`` payloads of
``--payload-size`` bytes to one topic with at most ``--window`` in flight (20 at QoS 2,
mosquitto's limit), and ends when the last is acknowledged: PUBACK (QoS 1), PUBCOMP
(QoS 2). At QoS 0, a QoS 1 marker follows the last message and the run ends with its
PUBACK (the broker has read everything), except for ``gateway``, whose QoS 0 run ends
when it has handed the last message to the socket (asyncio's flow control keeps at
most 64 KiB waiting in its buffer).
The candidates, in the same rounds, one after the other:

- ``paho``: paho-mqtt alone on its own network thread (``loop_start``), publishing in a
  loop with ``max_inflight_messages`` = the window: the anchor;
- ``aiomqtt``: the gateway's client until now: paho inside aiomqtt 2, driven by the
  event loop, publishes handed straight to paho and heard through ``on_publish``;
- ``gmqtt``: gmqtt (asyncio-native), MQTT 3.1.1, acknowledgements heard through its
  ``persistent_storage`` (it has no publish callback);
- ``mqtt5``: the mqtt5 codec (Rust, MQTT 5 only) on an asyncio Protocol: one write per
  window, one ``mqtt5.read`` per packet;
- ``codec``: the gateway's own connection (gateway/outputs/mqtt_connection.py, MQTT
  3.1.1): one write per window, a read's PUBACKs parsed in one pass;
- ``gateway``: the whole MQTT output (``MqttPublisher`` with its memory outbox), fed
  ``--batch`` messages per loop turn, as bench/mqtt_outbox.py runs it.

The asyncio candidates share one driver: fill the window, wait until acknowledgements
make room, fill again. Printed: the median over ``--rounds`` of each candidate's rate,
its ratio to paho's median, and this process's and the broker's CPU microseconds per
message (from /proc; the paho thread included).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiomqtt
import gmqtt
import mqtt5
import paho.mqtt.client as mqtt
from gmqtt.mqtt.constants import MQTTv311
from gmqtt.storage import PersistentStorage
from mqtt_outbox import HOST, PREFIX, TOPIC, envelope, gateway_run, mosquitto
from paho.mqtt.enums import CallbackAPIVersion
from relay_ws import BenchError, cpu_seconds

from gateway.outputs.mqtt_connection import open_connection
from gateway.outputs.outbox import Entry, OutboundMessage

FULL_TOPIC = f"{PREFIX}/{TOPIC}"
GUARD = 10.0
"""Seconds after which connecting fails the benchmark."""
QOS2_WINDOW = 20
CANDIDATES = ("paho", "aiomqtt", "gmqtt", "mqtt5", "codec", "gateway")


@dataclass
class Run:
    """What one candidate did in one round."""

    acknowledged: int
    seconds: float
    cpu: float
    broker_cpu: float

    @property
    def rate(self) -> float:
        return self.acknowledged / self.seconds if self.seconds > 0 else 0.0


@dataclass(frozen=True)
class Job:
    port: int
    qos: int
    window: int
    messages: int
    payload: bytes
    limit: float


class Counter:
    """Acknowledgements counted by callbacks, and an event the driver waits on."""

    def __init__(self, job: Job) -> None:
        self.job = job
        self.sent = 0
        self.acknowledged = 0
        self.event = asyncio.Event()

    def acked(self, count: int = 1) -> None:
        self.acknowledged += count
        self.event.set()

    @property
    def room(self) -> int:
        job = self.job
        return min(job.window - (self.sent - self.acknowledged), job.messages - self.sent)

    async def drive(self, send: Callable[[int, int], None]) -> None:
        """Send what the window has room for, wait for acknowledgements, until all are;
        at QoS 0, then a QoS 1 marker, until it is acknowledged too."""
        job = self.job
        while self.acknowledged < job.messages:
            if (room := self.room) > 0:
                send(room, job.qos)
                self.sent += room
                continue
            await self.wait()
        if not job.qos:
            send(1, 1)
            while self.acknowledged <= job.messages:
                await self.wait()

    async def wait(self) -> None:
        self.event.clear()
        await self.event.wait()


async def timed(
    job: Job, broker_pid: int, counter: Counter, send: Callable[[int, int], None]
) -> Run:
    cpu, broker = time.process_time(), cpu_seconds(broker_pid)
    started = time.perf_counter()
    try:
        async with asyncio.timeout(job.limit):
            await counter.drive(send)
    except TimeoutError:
        pass
    return Run(
        min(counter.acknowledged, job.messages),
        time.perf_counter() - started,
        time.process_time() - cpu,
        cpu_seconds(broker_pid) - broker,
    )


# The candidates.


def paho_run(job: Job, broker_pid: int) -> Run:
    connected = threading.Event()
    done = threading.Event()
    lock = threading.Lock()
    acknowledged = 0

    def on_connect(client: mqtt.Client, *args: object) -> None:
        connected.set()

    def on_publish(client: mqtt.Client, *args: object) -> None:
        nonlocal acknowledged
        with lock:
            acknowledged += 1
            if acknowledged >= job.messages + (0 if job.qos else 1):
                done.set()

    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"bench-paho-{os.getpid()}")
    client.max_inflight_messages_set(job.window)
    client.max_queued_messages_set(0)
    client.on_connect = on_connect
    client.on_publish = on_publish
    client.connect(HOST, job.port, keepalive=60)
    client.loop_start()
    try:
        if not connected.wait(GUARD):
            raise BenchError(f"paho: no CONNACK from port {job.port} within {GUARD} s")
        cpu, broker = time.process_time(), cpu_seconds(broker_pid)
        started = time.perf_counter()
        for _ in range(job.messages):
            client.publish(FULL_TOPIC, job.payload, qos=job.qos)
        if not job.qos:
            client.publish(FULL_TOPIC, job.payload, qos=1)  # the marker
        done.wait(job.limit)
        seconds = time.perf_counter() - started
        with lock:
            count = min(acknowledged, job.messages)
        return Run(count, seconds, time.process_time() - cpu, cpu_seconds(broker_pid) - broker)
    finally:
        client.disconnect()
        client.loop_stop()


async def aiomqtt_run(job: Job, broker_pid: int) -> Run:
    counter = Counter(job)
    async with aiomqtt.Client(
        HOST, job.port, identifier=f"bench-aiomqtt-{os.getpid()}", max_inflight_messages=0
    ) as client:
        inner: mqtt.Client = client._client
        inner.on_publish = lambda *args: counter.acked()

        def send(count: int, qos: int) -> None:
            for _ in range(count):
                info = inner.publish(FULL_TOPIC, job.payload, qos)
                if info.rc != mqtt.MQTT_ERR_SUCCESS:
                    raise BenchError(f"aiomqtt: publish failed with {info.rc}")

        return await timed(job, broker_pid, counter, send)


async def gmqtt_run(job: Job, broker_pid: int) -> Run:
    counter = Counter(job)

    class Storage(PersistentStorage):  # type: ignore[misc]
        def remove_message_by_mid(self, mid: int) -> None:
            super().remove_message_by_mid(mid)
            counter.acked()

    client = gmqtt.Client(f"bench-gmqtt-{os.getpid()}", persistent_storage=Storage())
    await client.connect(HOST, job.port, version=MQTTv311, keepalive=60)
    try:

        def send(count: int, qos: int) -> None:
            for _ in range(count):
                client.publish(FULL_TOPIC, job.payload, qos=qos)
            if not qos:  # in asyncio's buffer: the marker says when the broker has it
                counter.acked(count)

        return await timed(job, broker_pid, counter, send)
    finally:
        await client.disconnect()


class Mqtt5Protocol(asyncio.Protocol):
    """A publisher on the mqtt5 codec: the least a client on it must do."""

    def __init__(self, counter: Counter) -> None:
        self.counter = counter
        self.connected: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.buffer = b""
        self.next_id = 0
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        connect = mqtt5.ConnectPacket(f"bench-mqtt5-{os.getpid()}", clean_start=True, keep_alive=60)
        transport.write(connect.write())

    def data_received(self, data: bytes) -> None:
        data = self.buffer + data
        view = memoryview(data)
        start, acked, released = 0, 0, []
        while start < len(data):
            try:
                packet, size = mqtt5.read(view[start:])
            except IndexError:  # cut short
                break
            start += size
            if isinstance(packet, mqtt5.PubAckPacket | mqtt5.PubCompPacket):
                acked += 1
            elif isinstance(packet, mqtt5.PubRecPacket):
                released.append(mqtt5.PubRelPacket(packet.packet_id).write())
            elif isinstance(packet, mqtt5.ConnAckPacket):
                self.connected.set_result(None)
        self.buffer = data[start:]
        if released and self.transport is not None:
            self.transport.write(b"".join(released))
        if acked:
            self.counter.acked(acked)

    def send(self, count: int, level: int) -> None:
        assert self.transport is not None
        qos = mqtt5.QoS(level)  # a Rust enum: always true, so test ``level``
        payload = self.counter.job.payload
        parts = []
        for _ in range(count):
            if level:
                self.next_id = self.next_id % 65535 + 1
                packet = mqtt5.PublishPacket(FULL_TOPIC, payload, qos=qos, packet_id=self.next_id)
            else:
                packet = mqtt5.PublishPacket(FULL_TOPIC, payload)
            parts.append(packet.write())
        self.transport.write(b"".join(parts))
        if not level:
            self.counter.acked(count)


async def mqtt5_run(job: Job, broker_pid: int) -> Run:
    counter = Counter(job)
    loop = asyncio.get_running_loop()
    transport, protocol = await loop.create_connection(
        lambda: Mqtt5Protocol(counter), HOST, job.port
    )
    try:
        async with asyncio.timeout(GUARD):
            await protocol.connected
        return await timed(job, broker_pid, counter, protocol.send)
    finally:
        transport.write(mqtt5.DisconnectPacket().write())
        transport.close()


async def codec_run(job: Job, broker_pid: int) -> Run:
    counter = Counter(job)
    messages = [OutboundMessage(FULL_TOPIC, job.payload, qos, False) for qos in range(3)]
    connection = await open_connection(
        HOST,
        job.port,
        client_id=f"bench-codec-{os.getpid()}",
        keepalive=60,
        will=None,
        timeout=GUARD,
        acknowledged=lambda entries: counter.acked(len(entries)),
        wake=counter.event.set,
    )
    numbers = iter(range(1, sys.maxsize))

    def send(count: int, qos: int) -> None:
        message = messages[qos]
        connection.publish([Entry(next(numbers), message, 0.0) for _ in range(count)])

    try:
        return await timed(job, broker_pid, counter, send)
    finally:
        await connection.close()


async def gateway(job: Job, broker_pid: int, batch: int) -> Run:
    result = await gateway_run(
        job.port,
        broker_pid,
        disk=None,
        window=job.window,
        messages=job.messages,
        payload=job.payload,
        batch=batch,
        rtt=0.0,
        limit=job.limit,
        qos=job.qos,
    )
    return Run(result.acknowledged, result.seconds, result.cpu, result.broker_cpu)


RUNNERS: dict[str, Callable[[Job, int], Coroutine[Any, Any, Run]]] = {
    "aiomqtt": aiomqtt_run,
    "gmqtt": gmqtt_run,
    "mqtt5": mqtt5_run,
    "codec": codec_run,
}


def run_one(name: str, job: Job, broker_pid: int, batch: int) -> Run:
    if name == "paho":
        return paho_run(job, broker_pid)
    if name == "gateway":
        return asyncio.run(gateway(job, broker_pid, batch))
    return asyncio.run(RUNNERS[name](job, broker_pid))


# What is printed.


def show(name: str, runs: Sequence[Run], anchor: float, messages: int) -> None:
    rate = statistics.median(r.rate for r in runs)
    cpu = statistics.median(r.cpu / max(r.acknowledged, 1) * 1e6 for r in runs)
    broker = statistics.median(r.broker_cpu / max(r.acknowledged, 1) * 1e6 for r in runs)
    ratio = f"{rate / anchor:.2f}x" if anchor else "-"
    short = sum(r.acknowledged < messages for r in runs)
    cut = f"  ({short} of {len(runs)} rounds cut short)" if short else ""
    spread = " ".join(f"{r.rate / 1e3:.0f}k" for r in runs)
    print(f"  {name:<8} {rate:>9,.0f} {ratio:>7} {cpu:>8.1f} {broker:>8.1f}   {spread}{cut}")


def run(arguments: argparse.Namespace) -> None:
    payload = envelope(arguments.payload_size)
    names = [name for name in CANDIDATES if name in arguments.clients]
    with (
        tempfile.TemporaryDirectory(prefix="tgw-bench-clients-") as folder,
        mosquitto(Path(folder)) as (port, broker_pid),
    ):
        print(
            f"mosquitto on 127.0.0.1:{port}; {arguments.messages:,} messages of "
            f"{len(payload)} bytes per run, medians of {arguments.rounds} rounds"
        )
        for qos in arguments.qos:
            window = min(arguments.window, QOS2_WINDOW) if qos == 2 else arguments.window
            job = Job(port, qos, window, arguments.messages, payload, arguments.limit)
            runs: dict[str, list[Run]] = {name: [] for name in names}
            for _ in range(arguments.rounds):
                for name in names:
                    runs[name].append(run_one(name, job, broker_pid, arguments.batch))
            anchor = (
                statistics.median(r.rate for r in runs.get("paho", [])) if "paho" in runs else 0.0
            )
            print(f"\nQoS {qos}, window {window}")
            print(f"{'CPU us per message':>44}")
            print(
                f"  {'client':<8} {'msgs/s':>9} {'vs paho':>7} {'process':>8} {'broker':>8}"
                "   every round"
            )
            for name in names:
                show(name, runs[name], anchor, arguments.messages)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mqtt_clients.py",
        description=__doc__.split("\n\n", 2)[2] if __doc__ else None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--messages", type=int, default=20_000, help="per run (default 20000)")
    parser.add_argument(
        "--payload-size", type=int, default=200, help="bytes per message (default 200)"
    )
    parser.add_argument(
        "--window", type=int, default=100, help="publishes in flight (default 100; 20 at QoS 2)"
    )
    parser.add_argument(
        "--batch", type=int, default=100, help="messages fed to the gateway per loop turn"
    )
    parser.add_argument("--rounds", type=int, default=5, help="rounds, for medians (default 5)")
    parser.add_argument(
        "--qos", type=int, nargs="+", choices=(0, 1, 2), default=[0, 1, 2], help="(default all)"
    )
    parser.add_argument(
        "--clients",
        nargs="+",
        choices=CANDIDATES,
        default=list(CANDIDATES),
        help="the candidates to run (default all)",
    )
    parser.add_argument(
        "--limit", type=float, default=60.0, help="seconds a run may take (default 60)"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    arguments = parser.parse_args(argv)
    for name in ("messages", "payload_size", "window", "batch", "rounds"):
        if getattr(arguments, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    logging.basicConfig(level=logging.ERROR, format="%(levelname)s %(name)s: %(message)s")
    started = time.monotonic()
    try:
        run(arguments)
    except BenchError as exc:
        print(f"mqtt_clients.py: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("mqtt_clients.py: interrupted; the broker is stopped", file=sys.stderr)
        return 130
    print(f"\n(total {time.monotonic() - started:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
