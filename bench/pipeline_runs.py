"""The runs of the pipeline benchmark (bench/pipeline.py): one target, one load, what it did.

* :func:`relay_run` (P7; P6 under load): a feeder writes ``message`` frames at ``rate``
  frames/s for warm-up plus window; the target relays them to WebSocket subscribers to
  ``#`` (some timing, the others counting) and to MQTT, where an :class:`MqttCounter`
  subscribes at QoS 1. Figures over the window; losses counted once everything that
  was fed has arrived, or stopped arriving.
* :func:`mqtt_run` (P4): a backlog published through MQTT alone, by the gateway (fed at
  once over TCP), the bare relay, or paho alone; from the first byte fed (or the first
  publish) to the last distinct ``seq`` at the counter.
* :func:`idle_run` (P5, P6): quiet devices and idle ``websockets`` clients; resident
  memory before and after the clients connect, CPU over a quiet window.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from pipeline_ends import (
    CountingSubscriber,
    Feeder,
    IdleClients,
    MqttCounter,
    TimingSubscriber,
    open_mqtt_counter,
)
from pipeline_profile import record
from pipeline_targets import (
    DEVICE,
    HERE,
    SUBSCRIBE,
    TOPIC_PREFIX,
    Bench,
    Counts,
    Target,
    TargetSpec,
    catalog_for,
    frame_pool,
    start_target,
)
from relay import Child, percentile
from relay_ws import (
    BenchError,
    RawSubscriber,
    cpu_seconds,
    machine_busy,
    memory,
    open_raw_subscribers,
    raise_open_file_limit,
)

__all__ = ["PAHO", "IdleRun", "MqttRun", "RelayRun", "idle_run", "mqtt_run", "relay_run"]

SETTLE = 0.5
"""Seconds between the last subscriber ready and the first frame fed."""
POLL = 0.05
PAHO = ("paho", "paho-loop")
"""P4's anchors: paho alone on its own thread, and on an asyncio loop."""
STALL = 3.0
"""Seconds without any progress after which the wait for stragglers ends."""


# P7: the pipeline at a fixed rate.


@dataclass
class Snapshot:
    """Everything counted, at one moment."""

    at: float
    fed: int
    ws: list[int]
    mqtt: int
    counts: Counts
    cpu: float
    loop_cpu: float
    bench_cpu: float
    broker_cpu: float
    machine: float

    @property
    def behind(self) -> int:
        """Frames fed that the slowest consumer (subscriber or MQTT) has not received."""
        return self.fed - min([*self.ws, self.mqtt])


@dataclass
class RelayRun:
    """What one target did with one load; rates per second, CPU in % of one core."""

    target: str
    rate: float
    subscribers: int
    message: str
    fed: int = 0
    window: float = 0.0
    decoded: float = 0.0
    ws_rates: list[float] = field(default_factory=list)
    """Messages/s each subscriber received in the window."""
    mqtt_rate: float = 0.0
    cpu: float = 0.0
    """The target's process (all its threads)."""
    loop_cpu: float = 0.0
    """Its main thread (the event loop)."""
    us_per_frame: float = 0.0
    """The process's CPU microseconds per frame decoded in the window."""
    bench_cpu: float = 0.0
    broker_cpu: float = 0.0
    others_cpu: float = 0.0
    """Every other process of the machine, together (% of one core)."""
    latency: tuple[float, float, float] = (math.nan, math.nan, math.nan)
    """WebSocket, ms: p50, p99, max (the timing subscribers, in the window)."""
    mqtt_latency: tuple[float, float, float] = (math.nan, math.nan, math.nan)
    samples: int = 0
    lag_start: float = 0.0
    lag_end: float = 0.0
    """Seconds of frames fed that the slowest consumer lacked, at the window's ends."""
    feeder_behind: float = 0.0
    """Seconds the feeder was held back at worst by a full socket."""
    drain: float = 0.0
    """Seconds after the window until everything arrived (or stopped arriving)."""
    missing_frames: int = 0
    missing_ws: int = 0
    extra_ws: int = 0
    missing_mqtt: int = 0
    gaps: int = 0
    repeats: int = 0
    dropped_notices: int = 0
    decode_errors: int = 0
    ws_dropped: int | None = None
    mqtt_dropped: int = 0
    mqtt_queue: tuple[int | None, int | None] = (None, None)
    rss: int = 0
    """Resident bytes at the end of the window."""
    hwm: int = 0
    """Their peak, once everything arrived."""
    message_bytes: float = 0.0
    """Mean envelope size, bytes (the timing subscribers')."""
    profile: str | None = None
    """py-spy's collapsed stacks of the window (``--profile``)."""

    @property
    def deliveries(self) -> float:
        return self.decoded * self.subscribers

    @property
    def lost(self) -> int:
        """Deliveries that never came (to each subscriber, to MQTT), frames never decoded,
        and envelopes received twice or out of order."""
        return (
            self.missing_frames + self.missing_ws + self.extra_ws + self.missing_mqtt + self.repeats
        )

    @property
    def dropped(self) -> int:
        """What the target says it dropped (WebSocket, MQTT) or could not decode."""
        return (self.ws_dropped or 0) + self.mqtt_dropped + self.decode_errors

    def keeps_up(self, max_lag: float) -> bool:
        """Nothing lost or dropped, and no consumer further behind than ``max_lag`` s at the
        end of the window."""
        return self.lost == 0 and self.dropped == 0 and self.lag_end <= max_lag


def _figures(samples: Sequence[float]) -> tuple[float, float, float]:
    ordered = sorted(sample * 1000 for sample in samples)
    return percentile(ordered, 50), percentile(ordered, 99), percentile(ordered, 100)


async def _snapshot(
    bench: Bench,
    target: Target,
    feeder: Feeder,
    subscribers: Sequence[TimingSubscriber | CountingSubscriber],
    counter: MqttCounter,
) -> Snapshot:
    counts = await target.counts()  # first: a busy target takes a while to answer
    return Snapshot(
        at=time.monotonic(),
        fed=feeder.written,
        ws=[subscriber.messages for subscriber in subscribers],
        mqtt=counter.distinct,
        counts=counts,
        cpu=cpu_seconds(target.pid),
        loop_cpu=cpu_seconds(target.pid, target.pid),
        bench_cpu=time.process_time(),
        broker_cpu=cpu_seconds(bench.broker_pid),
        machine=machine_busy(),
    )


async def _wait_for(done: Callable[[], bool], progress: Callable[[], int], limit: float) -> float:
    """Wait until ``done()``, or ``progress()`` stalls for STALL s, or ``limit`` s; return
    the seconds waited."""
    start = last_move = time.monotonic()
    last = progress()
    while not done():
        await asyncio.sleep(POLL)
        now = time.monotonic()
        moved = progress()
        if moved != last:
            last, last_move = moved, now
        if now - last_move > STALL or now - start > limit:
            break
    return time.monotonic() - start


async def _open_subscribers(
    port: int, timing: int, counting: int, guard: float
) -> tuple[list[TimingSubscriber], list[CountingSubscriber]]:
    def timer() -> RawSubscriber:
        return TimingSubscriber("127.0.0.1", port, subscribe=SUBSCRIBE)

    def counter() -> RawSubscriber:
        return CountingSubscriber("127.0.0.1", port, subscribe=SUBSCRIBE)

    timers = await open_raw_subscribers(
        "127.0.0.1", port, timing, subscribe=SUBSCRIBE, timeout=guard, factory=timer
    )
    counters = await open_raw_subscribers(
        "127.0.0.1", port, counting, subscribe=SUBSCRIBE, timeout=guard, factory=counter
    )
    return (
        [s for s in timers if isinstance(s, TimingSubscriber)],
        [s for s in counters if isinstance(s, CountingSubscriber)],
    )


async def relay_run(
    bench: Bench,
    kind: str,
    *,
    rate: float,
    subscribers: int,
    message: str,
    warmup: float,
    duration: float,
) -> RelayRun:
    """Feed ``kind`` at ``rate`` frames/s with ``subscribers`` subscribers and MQTT QoS 1."""
    arguments = bench.arguments
    guard = arguments.start_timeout
    raise_open_file_limit(subscribers + 200)
    result = RelayRun(kind, rate, subscribers, message)
    feeder = Feeder(frame_pool(message), tick=arguments.tick)
    await feeder.start()
    target: Target | None = None
    counter: MqttCounter | None = None
    opened: list[RawSubscriber] = []
    feeding: asyncio.Task[None] | None = None
    profiler: Child | None = None
    try:
        spec = TargetSpec([(DEVICE, feeder.port)], catalog=catalog_for(message))
        target = await start_target(kind, bench, spec)
        await feeder.wait_connected(guard)
        topic = f"{TOPIC_PREFIX}/{DEVICE}/{message}"
        counter = await open_mqtt_counter(bench.broker_port, topic, timeout=guard)
        parsing = max(1, min(arguments.parsing, subscribers))
        timers, counters = await _open_subscribers(
            target.ws_port, parsing, subscribers - parsing, guard
        )
        everyone: list[TimingSubscriber | CountingSubscriber] = [*timers, *counters]
        opened = list(everyone)
        await asyncio.sleep(SETTLE)

        total = max(1, round(rate * (warmup + duration)))
        result.fed = total
        feeding = asyncio.create_task(feeder.feed(rate, total))
        await asyncio.sleep(warmup)
        start = await _snapshot(bench, target, feeder, everyone, counter)
        for timer in timers:
            timer.recording = True
        counter.recording = True
        if arguments.profile:
            name = f"{kind}-{subscribers}-{rate:.0f}-{message}.txt"
            result.profile = str(Path(arguments.profile) / name)
            profiler = await record(bench.children, target.pid, Path(result.profile), duration)
        await asyncio.sleep(duration)
        end = await _snapshot(bench, target, feeder, everyone, counter)
        result.rss = memory(target.pid)[0]  # under load
        for timer in timers:
            timer.recording = False
        counter.recording = False
        final_counter = counter

        def arrived() -> bool:
            return (
                feeding.done()
                and all(s.messages >= total for s in everyone)
                and (final_counter.distinct >= total)
            )

        def progress() -> int:
            return sum(s.messages for s in everyone) + final_counter.distinct + feeder.written

        result.drain = await _wait_for(arrived, progress, arguments.drain_limit)
        if feeding.done():
            await feeding  # its error, if any
        final = await target.counts()
        _fill(
            result,
            start=start,
            end=end,
            final=final,
            timers=timers,
            everyone=everyone,
            counter=counter,
            feeder=feeder,
        )
        result.hwm = memory(target.pid)[1]
    finally:
        if profiler is not None:  # it stops by itself after the window, and writes its file
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(guard):
                    await profiler.process.wait()
            await bench.children.stop(profiler)
        if feeding is not None and not feeding.done():
            feeding.cancel()
            with contextlib.suppress(asyncio.CancelledError, BenchError):
                await feeding
        for subscriber in opened:
            subscriber.close()
        if counter is not None:
            counter.close()
        if target is not None:
            await bench.children.stop(target.child)
        await feeder.close()
    return result


def _fill(
    result: RelayRun,
    *,
    start: Snapshot,
    end: Snapshot,
    final: Counts,
    timers: Sequence[TimingSubscriber],
    everyone: Sequence[TimingSubscriber | CountingSubscriber],
    counter: MqttCounter,
    feeder: Feeder,
) -> None:
    window = end.at - start.at
    total = result.fed
    result.window = window
    result.decoded = (end.counts.frames - start.counts.frames) / window
    result.ws_rates = [(b - a) / window for a, b in zip(start.ws, end.ws, strict=True)]
    result.mqtt_rate = (end.mqtt - start.mqtt) / window
    result.cpu = (end.cpu - start.cpu) / window * 100
    result.loop_cpu = (end.loop_cpu - start.loop_cpu) / window * 100
    frames = end.counts.frames - start.counts.frames
    result.us_per_frame = (end.cpu - start.cpu) / frames * 1e6 if frames else math.nan
    result.bench_cpu = (end.bench_cpu - start.bench_cpu) / window * 100
    result.broker_cpu = (end.broker_cpu - start.broker_cpu) / window * 100
    machine = (end.machine - start.machine) / window * 100
    result.others_cpu = max(0.0, machine - result.cpu - result.bench_cpu - result.broker_cpu)
    samples = [sample for timer in timers for sample in timer.samples]
    result.samples = len(samples)
    result.latency = _figures(samples)
    result.mqtt_latency = _figures(counter.samples)
    result.lag_start = start.behind / result.rate
    result.lag_end = end.behind / result.rate
    result.feeder_behind = feeder.most_behind
    received = [subscriber.messages for subscriber in everyone]
    result.missing_frames = max(0, total - final.frames)
    result.missing_ws = sum(max(0, total - count) for count in received)
    result.extra_ws = sum(max(0, count - total) for count in received)
    result.missing_mqtt = max(0, total - counter.distinct)
    result.gaps = sum(timer.gaps for timer in timers)
    result.repeats = sum(timer.repeats for timer in timers)
    result.dropped_notices = sum(timer.dropped_notices for timer in timers)
    result.decode_errors = final.decode_errors
    result.ws_dropped = final.ws_dropped
    result.mqtt_dropped = final.mqtt_dropped
    result.mqtt_queue = (start.counts.mqtt_queue, end.counts.mqtt_queue)
    messages = sum(timer.messages for timer in timers)
    result.message_bytes = sum(t.message_bytes for t in timers) / messages if messages else 0.0


# P4: MQTT alone.


@dataclass
class MqttRun:
    """A backlog of ``messages`` published by ``sender`` at ``qos``."""

    sender: str
    qos: int
    messages: int
    seconds: float = 0.0
    delivered: int = 0
    """Distinct ``seq`` values the counter received."""
    cpu: float = 0.0
    """The sender's CPU microseconds per message delivered."""
    broker_cpu: float = 0.0
    dropped: int = 0

    @property
    def rate(self) -> float:
        return self.delivered / self.seconds if self.seconds > 0 else 0.0

    @property
    def lost(self) -> int:
        """Messages the counter never received (the sender's drops among them)."""
        return self.messages - self.delivered


async def mqtt_run(bench: Bench, sender: str, *, qos: int, messages: int) -> MqttRun:
    """``messages`` through MQTT alone: ``sender`` is ``tgw``, ``bare``, ``paho`` (on its own
    thread) or ``paho-loop`` (on an asyncio loop)."""
    arguments = bench.arguments
    guard = arguments.start_timeout
    result = MqttRun(sender, qos, messages)
    pool = frame_pool("environment")
    counter = await open_mqtt_counter(
        bench.broker_port, f"{TOPIC_PREFIX}/{DEVICE}/environment", timeout=guard
    )
    counter.target = messages
    feeder: Feeder | None = None
    target: Target | None = None
    paho: Child | None = None
    try:
        if sender in PAHO:
            argv: list[str | Path] = [
                sys.executable,
                HERE / "pipeline_relay.py",
                "paho",
                *(["--on-loop"] if sender == "paho-loop" else []),
                "--mqtt-port",
                str(bench.broker_port),
                "--qos",
                str(qos),
                "--frame",
                pool[0].hex(),
                "--device",
                DEVICE,
                "--messages",
                str(messages),
                "--limit",
                str(arguments.mqtt_limit),
            ]
            paho = await bench.children.start("paho", argv, control=True)
            await paho.expect("READY", guard)
            pid = paho.pid
            cpu, broker = cpu_seconds(pid), cpu_seconds(bench.broker_pid)
            await paho.send("GO")
            words = await paho.expect("PUBLISHED", arguments.mqtt_limit + guard)
            started = float(words[0])
        else:
            feeder = Feeder(pool, tick=arguments.tick)
            await feeder.start()
            spec = TargetSpec([(DEVICE, feeder.port)], qos=qos)
            target = await start_target(sender, bench, spec)
            await feeder.wait_connected(guard)
            await asyncio.sleep(SETTLE)
            pid = target.pid
            cpu, broker = cpu_seconds(pid), cpu_seconds(bench.broker_pid)
            await feeder.feed(None, messages)
            started = feeder.started_at
        await _wait_for(
            lambda: counter.distinct >= messages, lambda: counter.distinct, arguments.mqtt_limit
        )
        ended = counter.reached_at or counter.last_at
        result.seconds = max(ended - started, 1e-9)
        result.delivered = counter.distinct
        per = max(counter.distinct, 1) / 1e6
        result.cpu = (cpu_seconds(pid) - cpu) / per
        result.broker_cpu = (cpu_seconds(bench.broker_pid) - broker) / per
        if target is not None:
            result.dropped = (await target.counts()).mqtt_dropped
    finally:
        counter.close()
        if paho is not None:
            await bench.children.stop(paho)
        if target is not None:
            await bench.children.stop(target.child)
        if feeder is not None:
            await feeder.close()
    return result


# P5 and P6: idle.


@dataclass
class IdleRun:
    """Quiet devices and idle clients: memory per client, CPU while idle."""

    target: str
    devices: int
    clients: int
    """During the CPU window."""
    memory_clients: int
    """Connected for the memory reading."""
    rss_before: int = 0
    rss_after: int = 0
    seconds: float = 0.0
    cpu: float = 0.0
    """% of one core, the whole process, over the quiet window."""
    loop_cpu: float = 0.0
    others_cpu: float = 0.0
    """The rest of the machine, this process included (% of one core)."""
    frames: int = 0
    """Frames decoded in the quiet window."""

    @property
    def per_client(self) -> float:
        """Bytes of resident memory per idle client."""
        return (self.rss_after - self.rss_before) / self.memory_clients


async def idle_run(bench: Bench, kind: str) -> IdleRun:
    """``kind`` with quiet devices (1 frame/s each) and idle clients."""
    arguments = bench.arguments
    guard = arguments.start_timeout
    memory_clients = max(arguments.idle_clients, arguments.memory_clients)
    raise_open_file_limit(memory_clients + 200)
    result = IdleRun(kind, arguments.devices, arguments.idle_clients, memory_clients)
    feeders = [
        Feeder(frame_pool("environment", 100, seed=index), tick=arguments.tick)
        for index in range(arguments.devices)
    ]
    for feeder in feeders:
        await feeder.start()
    target: Target | None = None
    clients: IdleClients | None = None
    feeding: list[asyncio.Task[None]] = []
    try:
        sources = [(f"node-{i + 1}", feeder.port) for i, feeder in enumerate(feeders)]
        target = await start_target(kind, bench, TargetSpec(sources, pings=True))
        for feeder in feeders:
            await feeder.wait_connected(guard)
        subscribe = SUBSCRIBE if arguments.idle_subscribe else None
        clients = IdleClients(f"ws://127.0.0.1:{target.ws_port}/", subscribe=subscribe)
        await asyncio.sleep(arguments.settle)
        result.rss_before = memory(target.pid)[0]
        await clients.open(memory_clients, timeout=arguments.connect_timeout)
        await asyncio.sleep(arguments.settle)
        result.rss_after = memory(target.pid)[0]
        await clients.close(memory_clients - arguments.idle_clients)
        feeding = [asyncio.create_task(feeder.feed(1.0, 1 << 40)) for feeder in feeders]
        await asyncio.sleep(arguments.settle)
        frames = (await target.counts()).frames
        pid = target.pid
        cpu, loop, machine = cpu_seconds(pid), cpu_seconds(pid, pid), machine_busy()
        started = time.monotonic()
        await asyncio.sleep(arguments.idle_seconds)
        result.seconds = time.monotonic() - started
        result.cpu = (cpu_seconds(pid) - cpu) / result.seconds * 100
        busy = (machine_busy() - machine) / result.seconds * 100
        result.others_cpu = max(0.0, busy - result.cpu)
        result.loop_cpu = (cpu_seconds(pid, pid) - loop) / result.seconds * 100
        result.frames = (await target.counts()).frames - frames
    finally:
        for task in feeding:
            task.cancel()
        await asyncio.gather(*feeding, return_exceptions=True)
        if clients is not None:
            await clients.close()
        if target is not None:
            await bench.children.stop(target.child)
        for feeder in feeders:
            await feeder.close()
    return result
