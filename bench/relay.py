"""Relay benchmark: the gateway end to end, and its WebSocket fan-out next to a plain one.

    python bench/relay.py [--part all|1|2] [options]      (--help lists them)

It prints measured figures; it asserts nothing about them.

Part 1, end to end. ``fwsim --link <tmp>/ttyBENCH`` sends ``motion`` frames (and nothing
else) to a PTY at ``--rate`` frames/s; ``tgw run -c <tmp>/gateway.toml`` reads that PTY
(MQTT disabled, WebSocket on a free port of 127.0.0.1, a per-subscriber queue large
enough that nothing is dropped); this process holds ``--subscribers`` WebSocket
subscribers to ``#``. ``--parsed`` of them are ``websockets`` clients that parse every
message and measure its latency: their receive ``time.time()`` minus the envelope's
``time`` (the gateway's receive time of the frame's bytes). The others do the
handshake by hand on a raw socket and only count bytes, so that this process is not
the bottleneck. After a warm-up, a window of ``--duration`` seconds gives: frames/s
received per subscriber, latency percentiles, the CPU used by the gateway and by fwsim
(``/proc/<pid>/stat``), and what the gateway dropped (its ``/metrics``).

Part 2, the fan-out ceiling: a server process (bench/relay_server.py) holds
``--connections`` subscribers opened by a client process (bench/relay_clients.py: raw
sockets, handshake by hand, byte counting), and publishes ``--messages`` messages (a
real decoded ``motion`` frame's envelope) as fast as its pacing allows, once through
the gateway's journal and WebSocket output ("tgw"), once through a minimal
``websockets`` server calling ``websockets.broadcast`` ("plain"). Deliveries/s =
messages x connections / (last byte received - first publish). Each mode runs
``--rounds`` times, alternating; the best run of each is reported, with the ratio.

Every subprocess is stopped (and the PTY symlink and the temporary folder removed) on
exit, on error and on Ctrl-C.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import json
import math
import os
import shutil
import signal
import socket
import statistics
import sys
import tempfile
import textwrap
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import orjson
import websockets
from relay_ws import (
    BenchError,
    RawSubscriber,
    bytes_written,
    cpu_seconds,
    cpu_times,
    open_raw_subscribers,
    raise_open_file_limit,
    server_frame_size,
)
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed
from websockets.version import version as websockets_version

from protocol.catalog import Direction
from protocol.encoder import FrameEncoder
from protocol.schema import load_schema

HERE = Path(__file__).resolve().parent
BIN = Path(sys.executable).parent
"""The virtualenv's bin folder: fwsim and tgw are there."""
SUBSCRIBE = b'{"type":"subscribe","filters":["#"]}'
DEVICE = "bench"
MESSAGE = "motion"
SLICE_SECONDS = 5.0
PR_SET_PDEATHSIG = 1
try:
    _PRCTL: Callable[..., int] | None = ctypes.CDLL(None, use_errno=True).prctl
except (OSError, AttributeError):  # not Linux: no parent-death signal, cleanup still runs
    _PRCTL = None


# Subprocesses.


def _die_with_parent() -> None:
    """In the child, before exec: get SIGTERM if the benchmark dies without cleaning up."""
    if _PRCTL is not None:
        _PRCTL(PR_SET_PDEATHSIG, signal.SIGTERM)


@dataclass
class Child:
    """A subprocess: its stderr goes to a log file; with a control channel, lines."""

    name: str
    process: asyncio.subprocess.Process
    log: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def log_tail(self, lines: int = 8) -> str:
        try:
            text = self.log.read_text(errors="replace").strip().splitlines()
        except OSError:
            return ""
        return "\n".join(f"    {self.name}: {line}" for line in text[-lines:])

    def failure(self, what: str) -> BenchError:
        """A BenchError saying ``what``, with the end of the child's log."""
        tail = self.log_tail()
        return BenchError(f"{what}" + (f"; its log ends with:\n{tail}" if tail else ""))

    async def expect(self, word: str, timeout: float) -> list[str]:
        """Read control lines until one starts with ``word``; return its other words."""
        stdout = self.process.stdout
        assert stdout is not None
        try:
            async with asyncio.timeout(timeout):
                while True:
                    line = (await stdout.readline()).decode()
                    if not line:
                        status = await self.process.wait()
                        raise self.failure(
                            f"{self.name} exited (status {status}) before saying {word}"
                        )
                    words = line.split()
                    if words and words[0] == "ERROR":
                        raise self.failure(f"{self.name}: {line[len('ERROR') :].strip()}")
                    if words and words[0] == word:
                        return words[1:]
        except TimeoutError:
            raise self.failure(f"{self.name} did not say {word} within {timeout:g} s") from None

    async def send(self, line: str) -> None:
        stdin = self.process.stdin
        assert stdin is not None
        try:
            stdin.write(f"{line}\n".encode())
            await stdin.drain()
        except (BrokenPipeError, ConnectionResetError) as exc:
            raise self.failure(f"{self.name} is gone: cannot send {line!r}") from exc

    def running(self) -> bool:
        return self.process.returncode is None

    async def stop(self, grace: float = 10.0) -> None:
        """Close its stdin (control children exit on EOF), then SIGTERM, then SIGKILL."""
        process = self.process
        if process.stdin is not None and not process.stdin.is_closing():
            process.stdin.close()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(3.0):
                    await process.wait()
        for signum, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
            if process.returncode is not None:
                return
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signum)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):
                    await process.wait()


class Children:
    """Every subprocess the benchmark started, to stop them all whatever happens."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.children: list[Child] = []

    async def start(self, name: str, argv: Sequence[str | Path], *, control: bool) -> Child:
        log = self.folder / f"{len(self.children):02d}-{name.replace(' ', '-')}.log"
        pipe = asyncio.subprocess.PIPE
        with log.open("wb") as stderr:
            try:
                process = await asyncio.create_subprocess_exec(
                    *map(str, argv),
                    stdin=pipe if control else asyncio.subprocess.DEVNULL,
                    stdout=pipe if control else asyncio.subprocess.DEVNULL,
                    stderr=stderr,
                    start_new_session=True,  # Ctrl-C reaches us only: we stop them in order
                    preexec_fn=_die_with_parent,
                )
            except OSError as exc:
                raise BenchError(f"cannot start {name} ({argv[0]}): {exc}") from exc
        child = Child(name, process, log)
        self.children.append(child)
        return child

    async def stop(self, child: Child, grace: float = 10.0) -> None:
        await child.stop(grace)
        if child in self.children:
            self.children.remove(child)

    async def stop_all(self) -> None:
        while self.children:
            await self.stop(self.children[-1])


async def poll_until(
    check: Callable[[], Awaitable[bool]], what: str, timeout: float, *watched: Child
) -> None:
    """Wait until ``check()`` is true; fail if a ``watched`` child exits or time runs out."""
    deadline = time.monotonic() + timeout
    while True:
        for child in watched:
            if not child.running():
                raise child.failure(f"{child.name} exited (status {child.process.returncode})")
        if await check():
            return
        if time.monotonic() > deadline:
            culprit = watched[-1] if watched else None
            message = f"{what}: not within {timeout:g} s"
            raise culprit.failure(message) if culprit else BenchError(message)
        await asyncio.sleep(0.1)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def http_get(port: int, path: str, timeout: float = 10.0) -> tuple[int, bytes]:
    """GET ``path`` from 127.0.0.1:``port``; return status and body. BenchError if it fails."""
    request = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n"
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            try:
                writer.write(request.encode())
                head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
                length = 0
                for line in head.split("\r\n")[1:]:
                    name, _, value = line.partition(":")
                    if name.strip().lower() == "content-length":
                        length = int(value)
                body = await reader.readexactly(length)
            finally:
                writer.close()
        return int(head.split()[1]), body
    except TimeoutError:
        raise BenchError(f"GET {path} on port {port}: no answer within {timeout:g} s") from None
    except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError) as exc:
        raise BenchError(f"GET {path} on port {port}: {exc}") from exc


async def scrape(port: int, gateway: Child) -> tuple[str, float, float]:
    """The gateway's ``/metrics``; the monotonic time it was taken at, and the fetch's duration.

    A busy gateway answers late: the middle of the fetch stands for its time.
    """
    start = time.monotonic()
    try:
        body = (await http_get(port, "/metrics", timeout=30.0))[1].decode()
    except BenchError as exc:
        raise gateway.failure(f"the gateway's metrics: {exc}") from exc
    end = time.monotonic()
    return body, (start + end) / 2, end - start


def metric_total(text: str, name: str) -> float:
    """The sum of every sample of ``name`` in a Prometheus text exposition."""
    total = 0.0
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        key, _, value = line.rpartition(" ")
        if key.split("{", 1)[0] == name:
            total += float(value)
    return total


# Figures.


def percentile(ordered: Sequence[float], p: float) -> float:
    """Nearest-rank percentile of an ascending sequence (NaN if empty)."""
    if not ordered:
        return math.nan
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def note(text: str, indent: str = "  ") -> None:
    """Print ``text`` wrapped to 100 columns, continuation lines indented a little more."""
    print(
        textwrap.fill(text, 100, initial_indent=indent, subsequent_indent=indent + "  "),
        flush=True,
    )


def spread(values: Sequence[float], unit: str = "", digits: int = 1) -> str:
    if not values:
        return "none"
    return (
        f"min {min(values):,.{digits}f}{unit}  median {statistics.median(values):,.{digits}f}"
        f"{unit}  max {max(values):,.{digits}f}{unit}"
    )


# Part 1: end to end.


@dataclass
class Window:
    """The measurement window, as the subscribers see it."""

    measuring: bool = False
    start: float = 0.0


@dataclass
class ParsedSubscriber:
    """A websockets client that parses every message and measures its latency."""

    window: Window
    messages: int = 0
    wire_bytes: int = 0
    gaps: int = 0
    last_seq: int = 0
    samples: list[tuple[float, float]] = field(default_factory=list)
    """``(seconds into the window, latency)`` of each message received in the window."""
    connection: ClientConnection | None = None

    async def run(self, uri: str, ready: asyncio.Future[None]) -> None:
        try:
            async with connect(
                uri, compression=None, ping_interval=None, max_size=None, close_timeout=1.0
            ) as connection:
                self.connection = connection
                await connection.send(SUBSCRIBE, text=True)
                await self._receive(connection, ready)
        except (OSError, ConnectionClosed, websockets.InvalidHandshake) as exc:
            if not ready.done():
                ready.set_exception(BenchError(f"websockets subscriber: {exc}"))

    async def _receive(self, connection: ClientConnection, ready: asyncio.Future[None]) -> None:
        window = self.window
        samples = self.samples
        while True:
            data = await connection.recv(decode=False)
            now = time.time()
            record = orjson.loads(data)
            kind = record.get("type")
            if kind == "message":
                self.messages += 1
                self.wire_bytes += server_frame_size(len(data))
                seq = record["seq"]
                if self.last_seq and seq != self.last_seq + 1:
                    self.gaps += seq - self.last_seq - 1
                self.last_seq = seq
                if window.measuring:
                    samples.append((now - window.start, now - record["time"]))
            elif kind == "subscribed" and not ready.done():
                ready.set_result(None)

    def close(self) -> None:
        if self.connection is not None:
            self.connection.transport.abort()


def other_telemetry() -> list[str]:
    """The default catalog's telemetry messages but ``motion``: fwsim turns them off.

    (identity, the heartbeat, environment, power, event: read from the catalog, so that
    a renamed message does not break the benchmark.)
    """
    catalog = load_schema().catalog
    return [
        message.name
        for message in catalog.messages
        if message.direction is Direction.TELEMETRY and message.name != MESSAGE
    ]


def gateway_config(path: Path, link: Path, port: int, queue_size: int) -> None:
    path.write_text(
        f"""\
[[sources]]
type = "serial"
device = "{DEVICE}"
path = {json.dumps(str(link))}
silence_timeout = 30.0

[websocket]
host = "127.0.0.1"
port = {port}
queue_size = {queue_size}
slow_policy = "drop"
compression = false
# The raw subscribers never answer pings: no pings during the benchmark.
ping_interval = 3600.0
ping_timeout = 3600.0

[mqtt]
enabled = false

[logging]
level = "warning"
""",
        encoding="utf-8",
    )


async def end_to_end(arguments: argparse.Namespace, children: Children, folder: Path) -> None:
    rate, total, parsed = arguments.rate, arguments.subscribers, arguments.parsed
    raw_count = total - parsed
    guard = arguments.start_timeout
    raise_open_file_limit(total + 100)
    link = folder / "ttyBENCH"
    argv: list[str | Path] = [
        BIN / "fwsim",
        "--link",
        link,
        "--interval",
        f"{MESSAGE}={1 / rate:g}",
    ]
    for name in other_telemetry():
        argv += ["--interval", f"{name}=off"]
    fwsim = await children.start("fwsim", [*argv, "--log-level", "warning"], control=False)

    async def linked() -> bool:
        return link.is_symlink()

    await poll_until(linked, f"fwsim's PTY symlink {link}", guard, fwsim)

    port = free_port()
    config = folder / "gateway.toml"
    queue_size = max(100_000, int(rate * (arguments.warmup + arguments.duration + 60)))
    gateway_config(config, link, port, queue_size)
    # tgw run's default, state on disk, but in the bench's own folder, not the home's.
    tgw: list[str | Path] = [BIN / "tgw", "run", "-c", config, "--state-dir", folder / "state"]
    gateway = await children.start("tgw", tgw, control=False)

    async def online() -> bool:
        try:
            status, body = await http_get(port, "/healthz", timeout=2.0)
        except BenchError:
            return False
        sources = orjson.loads(body).get("sources", []) if status == 200 else []
        return bool(sources) and all(source.get("online") for source in sources)

    await poll_until(online, f"the gateway on port {port} reading {link}", guard, fwsim, gateway)

    window = Window()
    subscribers = [ParsedSubscriber(window) for _ in range(parsed)]
    loop = asyncio.get_running_loop()
    readies: list[asyncio.Future[None]] = [loop.create_future() for _ in subscribers]
    uri = f"ws://127.0.0.1:{port}/"
    tasks = [
        asyncio.create_task(subscriber.run(uri, ready))
        for subscriber, ready in zip(subscribers, readies, strict=True)
    ]
    raws: list[RawSubscriber] = []
    try:
        try:
            async with asyncio.timeout(guard):
                await asyncio.gather(*readies)
        except TimeoutError:
            raise gateway.failure(
                f"the parsing subscribers were not subscribed within {guard:g} s"
            ) from None
        raws = await open_raw_subscribers(
            "127.0.0.1", port, raw_count, subscribe=SUBSCRIBE, concurrency=20, timeout=guard
        )
        note(
            f"fwsim, gateway (port {port}, queue_size {queue_size:,}, policy drop) and {total} "
            f"subscribers ({parsed} parsing, {raw_count} byte-counting) up; warming up for "
            f"{arguments.warmup:g} s, then measuring for {arguments.duration:g} s"
        )
        await asyncio.sleep(arguments.warmup)

        metrics_before, metrics_start, fetch_before = await scrape(port, gateway)
        me = os.getpid()
        cpu_before = [cpu_seconds(pid) for pid in (gateway.pid, fwsim.pid, me)]
        written_before = bytes_written(fwsim.pid)
        parsed_before = [(s.messages, s.wire_bytes, s.gaps) for s in subscribers]
        raw_before = [raw.received for raw in raws]
        window.start = time.time()
        wall_start = time.monotonic()
        window.measuring = True
        await asyncio.sleep(arguments.duration)
        window.measuring = False
        elapsed = time.monotonic() - wall_start
        cpu_after = [cpu_seconds(pid) for pid in (gateway.pid, fwsim.pid, me)]
        written_after = bytes_written(fwsim.pid)
        parsed_after = [(s.messages, s.wire_bytes, s.gaps) for s in subscribers]
        raw_after = [raw.received for raw in raws]
        metrics_after, metrics_end, fetch_after = await scrape(port, gateway)
    finally:
        for subscriber in subscribers:
            subscriber.close()
        for raw in raws:
            raw.close()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def per_second(name: str) -> float:
        change = metric_total(metrics_after, name) - metric_total(metrics_before, name)
        return change / (metrics_end - metrics_start)

    counted = [
        (after[0] - before[0], after[1] - before[1], after[2] - before[2])
        for after, before in zip(parsed_after, parsed_before, strict=True)
    ]
    parsed_rates = [messages / elapsed for messages, _, _ in counted]
    parsed_messages = sum(messages for messages, _, _ in counted)
    parsed_bytes = sum(size for _, size, _ in counted)
    gaps = sum(gap for _, _, gap in counted)
    bytes_per_message = parsed_bytes / parsed_messages if parsed_messages else math.nan
    raw_rates = [(a - b) / elapsed for a, b in zip(raw_after, raw_before, strict=True)]
    raw_frame_rates = [rate_ / bytes_per_message for rate_ in raw_rates]
    samples = [sample for subscriber in subscribers for sample in subscriber.samples]
    latencies = sorted(latency * 1000 for _, latency in samples)
    cpu = [
        (after - before) / elapsed * 100
        for after, before in zip(cpu_after, cpu_before, strict=True)
    ]
    dropped = metric_total(metrics_after, "tgw_websocket_messages_dropped_total")

    print(
        f"  window                 : {elapsed:.1f} s  (/metrics answered in "
        f"{fetch_before * 1000:.0f} and {fetch_after * 1000:.0f} ms at its ends)"
    )
    frame_size = len(FrameEncoder(load_schema()).encode(MESSAGE, {"accel": [0.0, 0.0, 0.0]}))
    sent = (written_after - written_before) / frame_size / elapsed
    decoded = per_second("tgw_frames_total")
    print(
        f"  fwsim wrote            : {sent:,.1f} frames/s  (asked for {rate:,.0f}/s; its "
        f"/proc/<pid>/io wchar / {frame_size}-byte frames)"
    )
    print(f"  gateway decoded        : {decoded:,.1f} frames/s")
    print(
        f"  gateway queued         : {per_second('tgw_websocket_messages_sent_total'):,.0f} "
        f"deliveries/s to {total} subscribers"
    )
    print("  received per subscriber, frames/s:")
    print(f"    parsing ({parsed:>3})        : {spread(parsed_rates)}")
    print(f"    byte-counting ({raw_count:>3})  : {spread(raw_frame_rates)}")
    note(
        f"(their bytes/s, {spread([r / 1000 for r in raw_rates], ' kB/s')}, divided by "
        f"{bytes_per_message:.1f} wire bytes per message, as the parsing ones received them)",
        indent="      ",
    )
    print(
        f"  latency, ms            : p50 {percentile(latencies, 50):.1f}  "
        f"p90 {percentile(latencies, 90):.1f}  p99 {percentile(latencies, 99):.1f}  "
        f"max {percentile(latencies, 100):.1f}  ({len(latencies):,} samples, "
        f"{parsed} subscribers)"
    )
    slices = []
    for index in range(math.ceil(elapsed / SLICE_SECONDS)):
        low, high = index * SLICE_SECONDS, (index + 1) * SLICE_SECONDS
        part = sorted(latency * 1000 for at, latency in samples if low <= at < high)
        if part:
            slices.append(f"{percentile(part, 50):.1f}")
    print(f"  latency p50 per {SLICE_SECONDS:g} s   : {' -> '.join(slices)} ms")
    print(f"  seq gaps (parsing)     : {gaps}")
    print(
        f"  CPU, % of one core     : gateway {cpu[0]:.1f} %, fwsim {cpu[1]:.1f} %, "
        f"this process {cpu[2]:.1f} %  ({os.cpu_count()} cores for all three)"
    )
    print(f"  dropped by the gateway : {dropped:.0f}  (tgw_websocket_messages_dropped_total)")
    if min(sent, decoded) < 0.98 * rate:
        note(
            "NOTE: fewer frames/s than asked went through: the gateway did not read the PTY "
            "fast enough, the PTY filled up and held fwsim back (it sends what fell due once "
            "it can). Frames wait in the PTY and in fwsim meanwhile, and that wait is not in "
            "the latency above, which starts at the gateway's read: the true delay from the "
            "device grows as long as this lasts."
        )
    if cpu[0] > 90:
        note(
            "NOTE: the gateway (one event loop) used about all of one core: at this load it "
            "is at its ceiling, and its latency swings from run to run."
        )
    note(
        "NOTE: the latency also holds this process's own delay in reading (one event loop "
        f"for the {total} subscribers, on cores shared with the gateway and fwsim)."
    )

    await children.stop(gateway)
    await children.stop(fwsim)


# Part 2: fan-out ceiling.


@dataclass
class FanoutRun:
    mode: str
    number: int
    elapsed: float
    deliveries: float
    """Per second."""
    server_cpu: float
    server_system: float
    """Of which in the kernel."""
    clients_cpu: float
    yields: int
    dropped: int


async def fanout_run(
    arguments: argparse.Namespace, children: Children, mode: str, number: int
) -> FanoutRun:
    connections, messages = arguments.connections, arguments.messages
    guard = arguments.start_timeout
    server = await children.start(
        f"relay_server-{mode}",
        [
            sys.executable,
            HERE / "relay_server.py",
            "--mode",
            mode,
            "--connections",
            str(connections),
            "--messages",
            str(messages),
            "--batch",
            str(arguments.batch),
            "--max-pending",
            str(arguments.max_pending),
            "--queue-size",
            str(max(100_000, 2 * messages)),
        ],
        control=True,
    )
    port, expected = (await server.expect("READY", guard))[:2]
    clients = await children.start(
        f"relay_clients-{mode}",
        [
            sys.executable,
            HERE / "relay_clients.py",
            "--port",
            port,
            "--connections",
            str(connections),
            "--expect-bytes",
            expected,
            *(["--subscribe"] if mode == "tgw" else []),
            "--connect-timeout",
            str(arguments.connect_timeout),
            "--timeout",
            str(arguments.connect_timeout + arguments.run_timeout + guard),
        ],
        control=True,
    )
    await clients.expect("READY", arguments.connect_timeout + guard)
    await server.send(f"WAIT {connections}")
    await server.expect("SUBSCRIBED", guard)
    await asyncio.sleep(0.5)  # let the handshakes' aftermath settle before measuring
    server_before, clients_before = cpu_times(server.pid), cpu_seconds(clients.pid)
    await server.send("GO")
    first, _last, dropped, rounds = (await server.expect("PUBLISHED", arguments.run_timeout))[:4]
    last_byte = (await clients.expect("DONE", arguments.run_timeout))[0]
    server_after, clients_after = cpu_times(server.pid), cpu_seconds(clients.pid)
    await children.stop(clients)
    await children.stop(server)
    elapsed = float(last_byte) - float(first)
    return FanoutRun(
        mode,
        number,
        elapsed,
        messages * connections / elapsed,
        sum(server_after) - sum(server_before),
        server_after[1] - server_before[1],
        clients_after - clients_before,
        int(rounds),
        int(dropped),
    )


async def fanout(arguments: argparse.Namespace, children: Children) -> None:
    connections, messages = arguments.connections, arguments.messages
    note(
        f"{messages:,} messages to {connections:,} subscribers per run "
        f"({messages * connections:,} deliveries), in batches of {arguments.batch}; "
        f"{arguments.rounds} runs of each mode, alternating."
    )
    note(
        f"NOTE: the server and the client process share this machine's {os.cpu_count()} "
        "cores (and whatever else runs on it): the clients' reading competes with the "
        "server. The server's CPU seconds per run are shown so you can judge."
    )
    print(
        f"  {'run':>3}  {'mode':<5}  {'elapsed':>8}  {'deliveries/s':>12}  "
        f"{'server CPU, busy, sys':>21}  {'deliv./CPU s':>12}  {'clients CPU':>11}  "
        f"{'yields':>6}  {'dropped':>7}",
        flush=True,
    )
    runs: list[FanoutRun] = []
    for number in range(1, arguments.rounds + 1):
        for mode in ("tgw", "plain"):
            run = await fanout_run(arguments, children, mode, number)
            runs.append(run)
            busy = run.server_cpu / run.elapsed * 100
            system = run.server_system / run.server_cpu * 100
            print(
                f"  {run.number:>3}  {run.mode:<5}  {run.elapsed:>7.2f}s  "
                f"{run.deliveries:>12,.0f}  "
                f"{run.server_cpu:>8.2f} s {busy:>4.0f}% {system:>4.0f}%  "
                f"{messages * connections / run.server_cpu:>12,.0f}  "
                f"{run.clients_cpu:>9.2f} s  {run.yields:>6}  {run.dropped:>7}",
                flush=True,
            )
    best = {
        mode: max((run for run in runs if run.mode == mode), key=lambda run: run.deliveries)
        for mode in ("tgw", "plain")
    }
    ours, plain = best["tgw"], best["plain"]
    print(
        f"  best tgw (WebSocket output)       : {ours.deliveries:,.0f} deliveries/s  "
        f"(server CPU {ours.server_cpu:.2f} s over {ours.elapsed:.2f} s)"
    )
    print(
        f"  best plain (websockets.broadcast) : {plain.deliveries:,.0f} deliveries/s  "
        f"(server CPU {plain.server_cpu:.2f} s over {plain.elapsed:.2f} s)"
    )
    print(f"  ours / plain                      : {ours.deliveries / plain.deliveries:.2f}")
    batches = math.ceil(messages / arguments.batch)
    for run in (ours, plain):
        busy = run.server_cpu / run.elapsed * 100
        if busy >= 90 and run.yields <= batches:
            verdict = "never waited for the clients: this is the server's ceiling on one core"
        elif run.yields > batches:
            verdict = "waited for the clients to drain: they (or the machine) held it back"
        else:
            verdict = "was not busy all along: the clients or the machine held it back"
        note(f"{run.mode}, best run: the server was busy {busy:.0f} % of the time and {verdict}.")
    note(
        "(elapsed: from the first publish to the last byte of the last connection; busy: "
        "server CPU / elapsed; sys: the kernel's share of it; deliv./CPU s: deliveries per "
        "server CPU second; yields: event-loop turns the publisher waited before its "
        f"{batches} batches, {batches} when it never waited for a backlog to drain. Same "
        "pacing in both modes: before each batch, wait until what the server holds for its "
        "connections (hub queues and transport buffers; transport buffers for plain) is at "
        f"most {arguments.max_pending - arguments.batch} messages per connection.)"
    )


# The command line.


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="relay.py",
        description=__doc__.split("\n\n", 2)[2] if __doc__ else None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--part", choices=["all", "1", "2"], default="all", help="what to run (default: all)"
    )
    one = parser.add_argument_group("part 1, end to end")
    one.add_argument("--rate", type=float, default=1000.0, help="motion frames/s (default 1000)")
    one.add_argument("--subscribers", type=int, default=100, help="subscribers (default 100)")
    one.add_argument(
        "--parsed", type=int, default=10, help="of which parse and time messages (default 10)"
    )
    one.add_argument("--warmup", type=float, default=5.0, help="seconds (default 5)")
    one.add_argument("--duration", type=float, default=20.0, help="measured seconds (default 20)")
    two = parser.add_argument_group("part 2, fan-out ceiling")
    two.add_argument("--connections", type=int, default=1000, help="subscribers (default 1000)")
    two.add_argument(
        "--messages", type=int, default=2000, help="messages published per run (default 2000)"
    )
    two.add_argument("--batch", type=int, default=50, help="messages per batch (default 50)")
    two.add_argument(
        "--max-pending",
        type=int,
        default=100,
        help="messages per connection the server may hold, on average (default 100)",
    )
    two.add_argument("--rounds", type=int, default=2, help="runs of each mode (default 2)")
    guards = parser.add_argument_group("guard timeouts, seconds")
    guards.add_argument("--start-timeout", type=float, default=20.0, help="to start (default 20)")
    guards.add_argument(
        "--connect-timeout", type=float, default=60.0, help="to open the connections (default 60)"
    )
    guards.add_argument(
        "--run-timeout", type=float, default=180.0, help="for one fan-out run (default 180)"
    )
    return parser


def check(arguments: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    if arguments.rate <= 0:
        parser.error("--rate must be positive")
    if not 0 <= arguments.parsed <= arguments.subscribers or arguments.subscribers < 1:
        parser.error("--parsed must be between 0 and --subscribers (at least 1)")
    if arguments.parsed < 1:
        parser.error("--parsed: at least one subscriber must parse (for latency)")
    for name in ("connections", "messages", "batch", "max_pending", "rounds"):
        if getattr(arguments, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    if arguments.max_pending < arguments.batch:
        parser.error("--max-pending must be at least --batch")
    for name in ("warmup", "duration"):
        if getattr(arguments, name) < 0 or (name == "duration" and arguments.duration == 0):
            parser.error(f"--{name} must be positive")


async def run(arguments: argparse.Namespace) -> None:
    task = asyncio.current_task()
    assert task is not None
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, task.cancel)
    for program in ("fwsim", "tgw"):
        if arguments.part in ("all", "1") and not (BIN / program).exists():
            raise BenchError(f"{BIN / program} not found: run with the project's venv python")
    folder = Path(tempfile.mkdtemp(prefix="tgw-relay-bench-"))
    children = Children(folder)
    print(
        f"relay benchmark: {os.cpu_count()} cores, Python {sys.version.split()[0]}, "
        f"websockets {websockets_version}, load average "
        f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}",
        flush=True,
    )
    try:
        if arguments.part in ("all", "1"):
            print(
                f"\nPart 1: end to end: fwsim -> PTY -> tgw run -> {arguments.subscribers} "
                f"WebSocket subscribers to '#' ({arguments.rate:g} motion frames/s; MQTT off)",
                flush=True,
            )
            await end_to_end(arguments, children, folder)
        if arguments.part in ("all", "2"):
            print(
                f"\nPart 2: fan-out ceiling at {arguments.connections:,} subscribers: "
                "ours (the WebSocket output) next to websockets.broadcast",
                flush=True,
            )
            await fanout(arguments, children)
    finally:
        await children.stop_all()
        shutil.rmtree(folder, ignore_errors=True)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    arguments = parser.parse_args(argv)
    check(arguments, parser)
    started = time.monotonic()
    try:
        asyncio.run(run(arguments))
    except BenchError as exc:
        print(f"relay.py: error: {exc}", file=sys.stderr)
        return 1
    except (KeyboardInterrupt, asyncio.CancelledError):
        print("relay.py: interrupted; subprocesses stopped", file=sys.stderr)
        return 130
    print(f"\n(total {time.monotonic() - started:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
