"""MQTT benchmark: QoS 1 publishes acknowledged per second through the gateway's outbox.

    python bench/mqtt_outbox.py [options]      (--help lists them)

It prints measured figures; it asserts nothing about them. One mosquitto of its own
(``mosquitto`` in PATH or /usr/sbin, a free port of 127.0.0.1, no persistence, no
subscriber) serves every run.

Part 1, the anchor: paho-mqtt alone, on its own network thread
(``loop_start``), ``max_inflight_messages`` set to ``--window``, publishes
``--messages`` payloads of ``--payload-size`` bytes at QoS 1 in a tight loop; the rate
is messages acknowledged (``on_publish``) per second, from the first publish to the last
PUBACK.

Part 2, the gateway: ``MqttPublisher`` (gateway.outputs.mqtt), with a ``DiskOutbox`` in
a temporary folder ("disk") and with its in-memory outbox ("memory"), driven on an
asyncio loop in this process: once it is connected, a feeder calls ``publish_message``
for ``--messages`` messages, ``--batch`` per turn of the loop (as a source hands over
the frames of one read), and the run ends when ``health()`` counts them all published
(acknowledged by the broker). Parts 1 and 2 alternate for ``--rounds`` rounds; the best
round of each is reported, with its ratio to paho. During every gateway run a ticker
coroutine sleeps 1 ms again and again and records how late it wakes up: the event
loop's stalls, p99 and max over all rounds (an idle loop is measured first, as the
floor).

Part 3, a long round trip: bench/delay_proxy.py (a subprocess) in front of the broker
delays each direction by half of ``--rtt``. ``--delayed-messages`` are put at once (a
backlog) and published by paho, by the gateway with its window of ``--window``
publishes in flight, and by the gateway one at a time (``max_inflight = 1``), each for
at most ``--delayed-limit`` seconds; it reports the rate and whether the backlog drained.
A window of W allows at most W / rtt messages/s; the broker runs mosquitto's default
configuration, whose sockets keep Nagle's algorithm on (``set_tcp_nodelay false``), and
its small PUBACKs then often wait: expect well under that limit.

The CPU columns are this process's CPU time per message (the publisher, the feeder, the
ticker, the outbox's thread) and the broker's, from /proc.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import logging
import os
import pstats
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from relay_ws import BenchError, cpu_seconds

from gateway.config import MqttConfig
from gateway.outputs.disk_outbox import DiskOutbox
from gateway.outputs.mqtt import MqttPublisher
from gateway.runtime.metrics import GatewayMetrics

HERE = Path(__file__).resolve().parent
HOST = "127.0.0.1"
PREFIX = "tgw"
TOPIC = "bench/sample"
"""The envelope's ``device/message``; the MQTT topic is ``tgw/bench/sample``."""
GUARD = 10.0
"""Seconds after which connecting or starting something fails the benchmark."""
POLL = 0.002
"""Seconds between two looks at the publisher's health() while waiting for the end."""
TICK = 0.001
SETTLE = 0.2
"""Seconds a connected publisher is left alone before the clock starts (its own
status is published on connection)."""
IDLE = 0.5
"""Seconds the ticker runs on an idle loop, for the floor of its lateness."""
WINDOW: int = MqttConfig.model_fields["max_inflight"].default
"""The gateway's default ``max_inflight``."""
GOAL_RATE = 20_000.0
GOAL_STALL = 0.005


# The broker and the proxy.


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def find_mosquitto() -> str:
    found = shutil.which("mosquitto") or shutil.which("mosquitto", path="/usr/sbin:/usr/local/sbin")
    if found is None:
        raise BenchError(
            "no mosquitto in PATH or /usr/sbin: install it (apt-get install mosquitto)"
        )
    return found


def wait_for_port(port: int, process: subprocess.Popen[bytes], what: str, log: Path) -> None:
    deadline = time.monotonic() + GUARD
    while True:
        try:
            with socket.create_connection((HOST, port), timeout=GUARD):
                return
        except OSError:
            pass
        if process.poll() is not None:
            raise BenchError(f"{what} exited with status {process.returncode}: {tail(log)}")
        if time.monotonic() > deadline:
            raise BenchError(f"{what} does not accept connections on port {port} after {GUARD} s")
        time.sleep(0.01)


def tail(path: Path, lines: int = 5) -> str:
    try:
        return " | ".join(path.read_text(errors="replace").strip().splitlines()[-lines:])
    except OSError:
        return "(no log)"


@contextmanager
def stopping(process: subprocess.Popen[bytes]) -> Iterator[subprocess.Popen[bytes]]:
    """Terminate ``process`` (and wait for it) when the block ends, however it ends."""
    try:
        yield process
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(GUARD)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


@contextmanager
def mosquitto(folder: Path, extra: Sequence[str] = ()) -> Iterator[tuple[int, int]]:
    """A mosquitto on a free port of 127.0.0.1, without persistence: (port, pid).

    ``extra``: more lines for its configuration file.
    """
    port = free_port()
    config = folder / "mosquitto.conf"
    log = folder / "mosquitto.log"
    lines = [f"listener {port} {HOST}", "allow_anonymous true", "persistence false", *extra]
    if os.geteuid() == 0:
        lines.append("user root")
    config.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with log.open("ab") as output:
        process = subprocess.Popen(
            [find_mosquitto(), "-c", str(config)],
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    with stopping(process):
        wait_for_port(port, process, "mosquitto", log)
        yield port, process.pid


@contextmanager
def delay_proxy(target: int, delay: float, folder: Path) -> Iterator[int]:
    """bench/delay_proxy.py forwarding to ``target``, ``delay`` s each way: its port."""
    log = folder / "proxy.log"
    with log.open("ab") as errors:
        process = subprocess.Popen(
            [
                sys.executable,
                str(HERE / "delay_proxy.py"),
                "--target",
                f"{HOST}:{target}",
                "--delay",
                str(delay),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=errors,
        )
    with stopping(process):
        assert process.stdout is not None
        words = process.stdout.readline().split()
        if len(words) != 2 or words[0] != b"READY":
            process.poll()
            raise BenchError(f"the delay proxy did not start: {tail(log)}")
        port = int(words[1])
        wait_for_port(port, process, "the delay proxy", log)
        yield port


# What a run measures.


@dataclass
class Result:
    name: str
    outbox: str
    window: int
    rtt: float
    messages: int
    acknowledged: int = 0
    seconds: float = 0.0
    cpu: float = 0.0
    """This process's CPU seconds during the run."""
    broker_cpu: float = 0.0
    outbox_cpu: float | None = None
    """CPU seconds of the disk outbox's committing thread during the run."""
    lateness: list[float] = field(default_factory=list)
    commits: list[float] = field(default_factory=list)
    """Seconds each commit of the disk outbox took during the run."""

    @property
    def rate(self) -> float:
        return self.acknowledged / self.seconds if self.seconds > 0 else 0.0

    @property
    def drained(self) -> bool:
        return self.acknowledged >= self.messages


class Ticker:
    """Sleeps ``TICK`` again and again on the running loop and records how late it wakes."""

    def __init__(self) -> None:
        self.lateness: list[float] = []
        self._stop = asyncio.Event()

    async def run(self) -> None:
        clock = time.perf_counter
        while not self._stop.is_set():
            before = clock()
            await asyncio.sleep(TICK)
            self.lateness.append(clock() - before - TICK)

    def stop(self) -> None:
        self._stop.set()


def percentile(values: Sequence[float], fraction: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


@contextmanager
def measured(result: Result, broker_pid: int) -> Iterator[None]:
    """Time the block, with this process's and the broker's CPU, into ``result``."""
    cpu, broker = time.process_time(), cpu_seconds(broker_pid)
    started = time.perf_counter()
    try:
        yield
    finally:
        result.seconds = time.perf_counter() - started
        result.cpu = time.process_time() - cpu
        result.broker_cpu = cpu_seconds(broker_pid) - broker


# Part 1: paho alone.


def paho_run(
    port: int,
    broker_pid: int,
    *,
    window: int,
    messages: int,
    payload: bytes,
    rtt: float,
    limit: float,
) -> Result:
    """paho publishes ``messages`` at QoS 1 as fast as it can, ``window`` in flight."""
    result = Result("paho", "-", window, rtt, messages)
    connected = threading.Event()
    done = threading.Event()
    lock = threading.Lock()
    acknowledged = 0

    def on_connect(
        client: mqtt.Client,
        userdata: object,
        flags: mqtt.ConnectFlags,
        reason_code: ReasonCode,
        properties: Properties | None,
    ) -> None:
        if not reason_code.is_failure:
            connected.set()

    def on_publish(
        client: mqtt.Client,
        userdata: object,
        mid: int,
        reason_code: ReasonCode,
        properties: Properties | None,
    ) -> None:
        nonlocal acknowledged
        with lock:
            acknowledged += 1
            if acknowledged >= messages:
                done.set()

    client = mqtt.Client(
        CallbackAPIVersion.VERSION2, client_id=f"bench-paho-{os.getpid()}", clean_session=True
    )
    client.max_inflight_messages_set(window)
    client.max_queued_messages_set(0)  # no limit: the whole backlog waits in paho
    client.on_connect = on_connect
    client.on_publish = on_publish
    client.connect(HOST, port, keepalive=60)
    client.loop_start()
    try:
        if not connected.wait(GUARD):
            raise BenchError(f"paho: no CONNACK from 127.0.0.1:{port} within {GUARD} s")
        topic = f"{PREFIX}/{TOPIC}"
        with measured(result, broker_pid):
            for _ in range(messages):
                client.publish(topic, payload, qos=1)
            done.wait(limit)
        with lock:
            result.acknowledged = acknowledged
    finally:
        client.disconnect()
        client.loop_stop()
    return result


# Part 2: the gateway's MQTT output.


async def until(condition: Callable[[], bool], what: str, timeout: float = GUARD) -> None:
    try:
        async with asyncio.timeout(timeout):
            while not condition():
                await asyncio.sleep(POLL)
    except TimeoutError:
        raise BenchError(f"{what}: not within {timeout:g} s") from None


async def feed(publisher: MqttPublisher, messages: int, payload: bytes, batch: int) -> None:
    """``publish_message`` for ``messages`` messages, ``batch`` per turn of the loop."""
    for start in range(0, messages, batch):
        for _ in range(min(batch, messages - start)):
            publisher.publish_message(TOPIC, payload)
        await asyncio.sleep(0)


async def gateway_run(
    port: int,
    broker_pid: int,
    *,
    disk: Path | None,
    window: int,
    messages: int,
    payload: bytes,
    batch: int,
    rtt: float,
    limit: float,
    profile: cProfile.Profile | None = None,
    qos: int = 1,
) -> Result:
    """The gateway publishes ``messages`` fed in batches at ``qos``; the ticker runs
    meanwhile."""
    result = Result("gateway", "disk" if disk else "memory", window, rtt, messages)
    config = MqttConfig(
        enabled=True,
        host=HOST,
        port=port,
        topic_prefix=PREFIX,
        client_id=f"bench-tgw-{os.getpid()}",
        qos=qos,
        queue_size=max(messages, MqttConfig.model_fields["queue_size"].default),
        max_inflight=window,
    )
    probe = Probe(broker_pid)
    outbox = None if disk is None else probe.disk_outbox(disk, config)
    publisher = MqttPublisher(config, GatewayMetrics(), outbox=outbox)
    loop = asyncio.get_running_loop()
    await publisher.start()
    try:
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(publisher.run(), name="mqtt")
            try:
                await until(
                    lambda: bool(publisher.health()["connected"]), "the gateway's connection"
                )
                await asyncio.sleep(SETTLE + rtt)
                await drive(
                    publisher,
                    tasks,
                    result,
                    probe,
                    payload=payload,
                    batch=batch,
                    limit=limit,
                    profile=profile,
                )
            finally:
                await publisher.close(loop.time() + 2.0)
    except* BenchError as group:  # out of the TaskGroup: the first one, as is
        raise group.exceptions[0] from None
    return result


@dataclass
class Probe:
    """What a gateway run watches besides the publisher: the broker, the disk outbox's
    committing thread."""

    broker_pid: int
    commits: list[float] = field(default_factory=list)
    """Seconds each commit took (appended by the committing thread)."""
    committer: threading.Thread | None = None

    def disk_outbox(self, path: Path, config: MqttConfig) -> DiskOutbox:
        threads = set(threading.enumerate())
        outbox = DiskOutbox(
            path,
            capacity=config.queue_size,
            max_bytes=config.outbox_max_bytes,
            commit_interval=config.commit_interval,
            observe=self.commits.append,
        )
        self.committer = next((t for t in threading.enumerate() if t not in threads), None)
        return outbox

    def cpu(self) -> float | None:
        """CPU seconds the committing thread has used; None without one."""
        thread = self.committer
        if thread is None or thread.ident is None or not thread.is_alive():
            return None
        return time.clock_gettime(time.pthread_getcpuclockid(thread.ident))


async def drive(
    publisher: MqttPublisher,
    tasks: asyncio.TaskGroup,
    result: Result,
    probe: Probe,
    *,
    payload: bytes,
    batch: int,
    limit: float,
    profile: cProfile.Profile | None,
) -> None:
    """Feed ``result.messages`` and wait until they are acknowledged, or ``limit`` s."""

    def published() -> int:
        count: int = publisher.health()["published"]
        return count

    ticker = Ticker()
    tasks.create_task(ticker.run(), name="ticker")
    before, outbox_cpu = published(), probe.cpu()
    probe.commits.clear()
    if profile is not None:
        profile.enable()
    with measured(result, probe.broker_pid):
        deadline = time.perf_counter() + limit
        tasks.create_task(feed(publisher, result.messages, payload, batch), name="feeder")
        while published() - before < result.messages and time.perf_counter() < deadline:
            await asyncio.sleep(POLL)
    if profile is not None:
        profile.disable()
    ticker.stop()
    if outbox_cpu is not None:
        result.outbox_cpu = (probe.cpu() or 0.0) - outbox_cpu
    result.acknowledged = published() - before
    result.lateness = ticker.lateness
    result.commits = list(probe.commits)


async def idle_lateness() -> list[float]:
    ticker = Ticker()
    async with asyncio.TaskGroup() as tasks:
        tasks.create_task(ticker.run(), name="ticker")
        await asyncio.sleep(IDLE)
        ticker.stop()
    return ticker.lateness


# The runs, and what is printed.


@dataclass
class Plan:
    port: int
    broker_pid: int
    folder: Path
    payload: bytes
    arguments: argparse.Namespace
    runs: int = 0

    def paho(self, *, port: int | None = None, messages: int, rtt: float, limit: float) -> Result:
        return paho_run(
            port or self.port,
            self.broker_pid,
            window=self.arguments.window,
            messages=messages,
            payload=self.payload,
            rtt=rtt,
            limit=limit,
        )

    def gateway(
        self,
        *,
        disk: bool,
        window: int,
        messages: int,
        port: int | None = None,
        rtt: float = 0.0,
        limit: float,
        profile: cProfile.Profile | None = None,
    ) -> Result:
        self.runs += 1
        path = self.folder / f"outbox-{self.runs}.sqlite" if disk else None
        run = gateway_run(
            port or self.port,
            self.broker_pid,
            disk=path,
            window=window,
            messages=messages,
            payload=self.payload,
            batch=self.arguments.batch,
            rtt=rtt,
            limit=limit,
            profile=profile,
        )
        return asyncio.run(run)


def show(result: Result, paho: Result | None) -> None:
    ratio = f"{result.rate / paho.rate:.2f}x" if paho and paho.rate else "-"
    drained = "" if result.drained else f"  (cut after {result.seconds:.1f} s)"
    per = (result.acknowledged or 1) / 1e6
    outbox = "-" if result.outbox_cpu is None else f"{result.outbox_cpu / per:.1f}"
    print(
        f"  {result.name:<8} {result.outbox:<7} {result.window:>6} {result.rtt * 1e3:>5.0f} ms"
        f" {result.acknowledged:>8,} {result.seconds:>8.2f} {result.rate:>9,.0f} {ratio:>7}"
        f" {result.cpu / per:>8.1f} {outbox:>8} {result.broker_cpu / per:>8.1f}{drained}"
    )


def header() -> None:
    line = (
        f"  {'run':<8} {'outbox':<7} {'window':>6} {'rtt':>8} {'acked':>8} {'seconds':>8}"
        f" {'msgs/s':>9} {'vs paho':>7} {'process':>8} {'outbox':>8} {'broker':>8}"
    )
    print(f"{'CPU us per message':^26}".rjust(len(line)))
    print(line)


def show_stall(name: str, lateness: Sequence[float]) -> None:
    p50, p99 = percentile(lateness, 0.5), percentile(lateness, 0.99)
    print(
        f"  {name:<26} {len(lateness):>7,} wake-ups  p50 {p50 * 1e3:6.2f}  p99 {p99 * 1e3:6.2f}"
        f"  max {max(lateness, default=0) * 1e3:7.2f} ms"
    )


def best(results: Sequence[Result]) -> Result:
    return max(results, key=lambda r: (r.drained, r.rate))


def verdict(met: bool) -> str:
    return "met" if met else "NOT met"


def run(arguments: argparse.Namespace) -> None:
    payload = envelope(arguments.payload_size)
    window = arguments.window
    with tempfile.TemporaryDirectory(prefix="tgw-bench-mqtt-") as name:
        folder = Path(name)
        with mosquitto(folder) as (port, broker_pid):
            plan = Plan(port, broker_pid, folder, payload, arguments)
            print(
                f"mosquitto on 127.0.0.1:{port}; {arguments.messages:,} messages of "
                f"{len(payload)} bytes per run, QoS 1, window {window}, "
                f"{arguments.rounds} rounds (the best shown)"
            )
            paho, disk, lateness = no_delay(plan)
            delayed = with_delay(plan) if arguments.rtt > 0 else []
            if arguments.profile:
                profiled(plan, arguments.profile)
            goals(paho, disk, lateness, delayed)


def no_delay(plan: Plan) -> tuple[Result, Result, list[float]]:
    """Parts 1 and 2: the best paho and disk-outbox runs, and the disk runs' lateness."""
    arguments = plan.arguments
    messages, window, limit = arguments.messages, arguments.window, arguments.limit
    floor = asyncio.run(idle_lateness())
    pahos: list[Result] = []
    disks: list[Result] = []
    memories: list[Result] = []
    for _ in range(arguments.rounds):
        pahos.append(plan.paho(messages=messages, rtt=0.0, limit=limit))
        disks.append(plan.gateway(disk=True, window=window, messages=messages, limit=limit))
        memories.append(plan.gateway(disk=False, window=window, messages=messages, limit=limit))
    paho, disk, memory = best(pahos), best(disks), best(memories)
    print("\nParts 1 and 2: no added delay")
    header()
    for result in (paho, disk, memory):
        show(result, paho)
    print("\nThe event loop's stalls during the gateway's runs (lateness of 1 ms sleeps)")
    show_stall("idle loop (the floor)", floor)
    lateness = [x for r in disks for x in r.lateness]
    show_stall("disk outbox, all rounds", lateness)
    show_stall("memory outbox, all rounds", [x for r in memories for x in r.lateness])
    commits = [x for r in disks for x in r.commits]
    print(
        f"  (meanwhile {len(commits):,} commits of the disk outbox, in its thread: p50 "
        f"{percentile(commits, 0.5) * 1e3:.1f} ms, max {max(commits, default=0) * 1e3:.1f} ms)"
    )
    return paho, disk, lateness


def with_delay(plan: Plan) -> list[Result]:
    """Part 3: paho, the gateway's window and one at a time, through the delay proxy."""
    arguments = plan.arguments
    rtt = arguments.rtt / 1e3
    backlog, limit = arguments.delayed_messages, arguments.delayed_limit
    with delay_proxy(plan.port, rtt / 2, plan.folder) as proxy:
        results = [plan.paho(port=proxy, messages=backlog, rtt=rtt, limit=limit)]
        for size in dict.fromkeys((arguments.window, 1)):
            results.append(
                plan.gateway(
                    port=proxy, disk=True, window=size, messages=backlog, rtt=rtt, limit=limit
                )
            )
    print(
        f"\nPart 3: a backlog of {backlog:,} messages through {arguments.rtt:g} ms of round "
        f"trip (at most {limit:g} s each)"
    )
    header()
    for result in results:
        show(result, results[0])
    limits = "; ".join(
        f"window {size}: {size / rtt:,.0f} msgs/s" for size in dict.fromkeys((arguments.window, 1))
    )
    print(f"  (at most, at this round trip: {limits})")
    for result in results[1:]:
        if not result.drained and result.rate:
            print(
                f"  window {result.window}: the backlog would take "
                f"{backlog / result.rate:,.0f} s to drain"
            )
    return results


def profiled(plan: Plan, path: str) -> None:
    """One more disk-outbox run under cProfile (the event loop's thread), not counted."""
    arguments = plan.arguments
    profile = cProfile.Profile()
    result = plan.gateway(
        disk=True,
        window=arguments.window,
        messages=arguments.messages,
        limit=arguments.limit,
        profile=profile,
    )
    profile.dump_stats(path)
    text = io.StringIO()
    pstats.Stats(profile, stream=text).sort_stats("tottime").print_stats(25)
    print(
        f"\nAn extra disk-outbox run under cProfile (the event loop's thread only; "
        f"{result.rate:,.0f} msgs/s with the profiler on), saved to {path}:"
    )
    print(text.getvalue().rstrip())


def goals(paho: Result, disk: Result, lateness: Sequence[float], delayed: Sequence[Result]) -> None:
    print("\nGoals (issue 10)")
    print(
        f"  disk outbox >= {GOAL_RATE:,.0f} msgs/s: {disk.rate:,.0f}: "
        f"{verdict(disk.drained and disk.rate >= GOAL_RATE)}"
    )
    ratio = disk.rate / paho.rate if paho.rate else 0.0
    print(
        f"  disk outbox >= paho's rate: {ratio:.2f}x paho: {verdict(disk.drained and ratio >= 1.0)}"
    )
    p99 = percentile(lateness, 0.99)
    print(
        f"  loop stall p99 < {GOAL_STALL * 1e3:g} ms with the disk outbox: {p99 * 1e3:.2f} ms "
        f"(max {max(lateness, default=0) * 1e3:.2f} ms): {verdict(p99 < GOAL_STALL)}"
    )
    windowed = [r for r in delayed if r.name == "gateway" and r.window > 1]
    single = [r for r in delayed if r.name == "gateway" and r.window == 1]
    if windowed and single:
        w, s = windowed[0], single[0]
        print(
            f"  the window drains a backlog, one at a time does not: window {w.window} "
            f"{'drained' if w.drained else 'did not drain'} ({w.rate:,.0f} msgs/s), "
            f"one at a time {'drained' if s.drained else 'did not drain'} ({s.rate:,.0f} msgs/s): "
            f"{verdict(w.drained and not s.drained)}"
        )


def envelope(size: int) -> bytes:
    """An envelope-shaped JSON payload of exactly ``size`` bytes (padded in ``raw``)."""
    head = (
        b'{"type":"message","seq":1042,"device":"bench","message":"sample","cmd":48,'
        b'"time":1764063421.123456,"fields":{"timestamp":123456,"temperature":215,'
        b'"humidity":400,"accel_x":-12,"accel_y":7,"accel_z":1000,"battery":3700},'
        b'"sequence":7,"address":3,"raw":"'
    )
    tail_ = b'"}'
    pad = size - len(head) - len(tail_)
    if pad < 0:
        return (head + tail_)[:size]
    return head + b"a" * pad + tail_


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mqtt_outbox.py",
        description=__doc__.split("\n\n", 2)[2] if __doc__ else None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--messages", type=int, default=20_000, help="per run (default 20000)")
    parser.add_argument(
        "--payload-size", type=int, default=200, help="bytes per message (default 200)"
    )
    parser.add_argument(
        "--window",
        type=int,
        default=WINDOW,
        help=f"publishes in flight, paho and gateway (default {WINDOW}, the gateway's)",
    )
    parser.add_argument(
        "--batch",
        type=int,
        default=100,
        help="messages the feeder puts per loop turn (default 100)",
    )
    parser.add_argument("--rounds", type=int, default=3, help="rounds of parts 1 and 2 (default 3)")
    parser.add_argument(
        "--limit", type=float, default=60.0, help="seconds a run of parts 1-2 may take (default 60)"
    )
    parser.add_argument(
        "--rtt", type=float, default=50.0, help="part 3's round trip in ms; 0 skips it (default 50)"
    )
    parser.add_argument(
        "--delayed-messages", type=int, default=2_000, help="part 3's backlog (default 2000)"
    )
    parser.add_argument(
        "--delayed-limit",
        type=float,
        default=10.0,
        help="seconds a part 3 run may take (default 10)",
    )
    parser.add_argument(
        "--profile", metavar="FILE", help="one more disk-outbox run under cProfile, saved to FILE"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    arguments = parser.parse_args(argv)
    for name in ("messages", "payload_size", "window", "batch", "rounds", "delayed_messages"):
        if getattr(arguments, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    for name in ("limit", "delayed_limit"):
        if getattr(arguments, name) <= 0:
            parser.error(f"--{name.replace('_', '-')} must be positive")
    if arguments.rtt < 0:
        parser.error("--rtt must be at least 0")
    logging.basicConfig(level=logging.ERROR, format="%(levelname)s %(name)s: %(message)s")
    started = time.monotonic()
    try:
        run(arguments)
    except BenchError as exc:
        print(f"mqtt_outbox.py: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("mqtt_outbox.py: interrupted; the broker and the proxy are stopped", file=sys.stderr)
        return 130
    print(f"\n(total {time.monotonic() - started:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
