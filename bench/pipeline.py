"""Pipeline benchmark: every goal of issue 11 next to its anchor, measured in the same run.

    python bench/pipeline.py [--part p7,p4,...] [options]    (--help lists them)
    python bench/pipeline.py --smoke                          (tiny: does it run, is nothing lost)

It prints measured figures, then a table of the goals, each met or not; it asserts
nothing about speed. ``--json FILE`` saves every figure. The machine is shared: each
run shows the CPU of the benchmark's own processes next to the target's, so that a
figure held back by them can be told.

The targets: ``tgw`` is ``tgw run`` as shipped (its defaults, a fresh ``--state-dir``
in the temporary folder, so the journal and the MQTT outbox are on disk), with a
``tcp`` source per device; ``bare`` is bench/pipeline_relay.py, the same job written
plainly (a hand decoder, orjson, ``websockets.broadcast``, paho). The feeder is a TCP
server in this process writing frames of the default catalog encoded by the project's
encoder (1,000 distinct ones, in turn) every ``--tick`` seconds, what fell due. One
mosquitto of the benchmark's own (no persistence, no limit on a subscriber's in-flight
or queued messages) serves every run; a minimal MQTT subscriber in this process counts
what it delivers at QoS 1, ``seq`` by ``seq``.

P7: for each of ``--rates``, each target with ``--subscribers`` raw WebSocket
subscribers to ``#`` (``--parsing`` of them walk the frames, check ``seq`` and time
each envelope: receipt minus its ``time``; the others count envelopes in C) and MQTT
QoS 1. Figures over ``--duration`` s after ``--warmup`` s; then everything fed must
arrive. A target keeps up when nothing is lost (every subscriber and the MQTT counter
got every frame, no drop in its counts) and no consumer is more than ``--max-lag`` s
of frames behind at the end of the window. Then the CPU cost per frame with more
subscribers (``--cost``) and with a bigger payload (``--big-message``).
P4: a backlog of ``--mqtt-messages`` through MQTT alone: fed at once over TCP to each
target, or published by paho alone (bench/pipeline_relay.py paho), at QoS 0 and 1;
from the first byte fed (or the first publish) to the last message at the counter.
(bench/mqtt_outbox.py measures the gateway's MQTT output in-process instead.)
P5, P6: ``--devices`` quiet devices (1 frame/s each, fed after the memory reading)
and ``websockets`` clients that connect and idle (answering pings, the product's
ping defaults): resident memory before and after ``--memory-clients`` connect; then
CPU over ``--idle-seconds`` with ``--idle-clients`` of them. RSS under load: the P7
run with 100 subscribers (``--cost``), at its end.
P3: bench/relay.py's fan-out part (relay_server.py, relay_clients.py) at
``--connections`` subscribers, one message per loop turn and bursts of ``--burst``;
medians over ``--rounds`` rounds.
P1: bench/decode_throughput.py's decoders (ours, pymavlink), medians over
``--repeat`` runs; and ``tgw decode`` of a raw dump of ``--dump-frames`` frames (its
start-up time, measured on a one-frame dump, taken off) against the stream decoder
alone on the same bytes.

Every subprocess is stopped and the temporary folder removed on exit, error or Ctrl-C.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import math
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import tomllib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import decode_throughput
import orjson
import paho.mqtt
from mqtt_outbox import mosquitto
from pipeline_profile import summarize
from pipeline_runs import PAHO, IdleRun, MqttRun, RelayRun, idle_run, mqtt_run, relay_run
from pipeline_targets import BIN, Bench, frame_pool
from relay import Children, FanoutRun, fanout_run, note
from relay_ws import BenchError, machine_busy
from websockets.version import version as websockets_version

from protocol.config import load_catalog, load_profile
from protocol.decoder import StreamDecoder
from protocol.schema import compile_schema, load_schema

PROJECT = Path(__file__).resolve().parent.parent
PARTS = ("p7", "p4", "p5", "p6", "p3", "p1")
BROKER = ("max_inflight_messages 0", "max_queued_messages 0")
"""mosquitto lines: it never holds back or drops what goes to the benchmark's counter."""
GOAL_RATE = 20_000.0
GOAL_P99 = 10.0
GOAL_CLIENT = 16_000.0
GOAL_RSS = 1.5
GOAL_IDLE = 0.5
GOAL_TURN = 2.0
GOAL_BURST = 3.0
GOAL_DECODE = 5.0
GOAL_DUMP = 0.5
BUSY = 25.0
"""% of a core other processes may use before the benchmark points it out."""
SATURATED = 0.95
"""Share of all the cores busy from which a window is said to be held back."""
LOAD_SUBSCRIBERS = 100
"""The P7 cost run whose RSS is P6's under load."""


@dataclass
class Results:
    relay: list[RelayRun] = field(default_factory=list)
    cost: list[RelayRun] = field(default_factory=list)
    mqtt: list[MqttRun] = field(default_factory=list)
    idle: list[IdleRun] = field(default_factory=list)
    fanout: list[tuple[int, FanoutRun]] = field(default_factory=list)
    """(messages per loop turn, the run)"""
    decode: dict[str, list[float]] = field(default_factory=dict)
    goals: list[Goal] = field(default_factory=list)


# Printing.


def fmt(value: float | None, digits: int = 0, unit: str = "") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:,.{digits}f}{unit}"


def show_relay_header() -> None:
    print(
        f"  {'target':<6} {'subs':>5} {'msg':<11} {'rate/s':>7} {'decoded/s':>9} "
        f"{'WS/s min':>8} {'MQTT/s':>7} {'CPU %':>6} {'loop %':>6} {'us/frame':>8} "
        f"{'WS p50/p99 ms':>13} {'MQTT p99':>8} {'lag s':>6} {'lost':>7}  keeps up",
        flush=True,
    )


def show_relay(run: RelayRun, max_lag: float) -> None:
    show_figures(run, max_lag)
    if run.profile:
        for line in summarize(Path(run.profile), run.us_per_frame):
            print(f"         {line}")


def show_figures(run: RelayRun, max_lag: float) -> None:
    latency = f"{fmt(run.latency[0], 1)}/{fmt(run.latency[1], 1)}"
    print(
        f"  {run.target:<6} {run.subscribers:>5} {run.message[:11]:<11} {run.rate:>7,.0f} "
        f"{run.decoded:>9,.0f} {min(run.ws_rates, default=0):>8,.0f} {run.mqtt_rate:>7,.0f} "
        f"{run.cpu:>6.1f} {run.loop_cpu:>6.1f} {run.us_per_frame:>8.1f} {latency:>13} "
        f"{fmt(run.mqtt_latency[1], 1):>8} {run.lag_end:>6.2f} {run.lost:>7,}  "
        f"{'yes' if run.keeps_up(max_lag) else 'NO'}",
        flush=True,
    )
    queue = run.mqtt_queue
    queued = "" if queue[0] is None else f", MQTT queue {queue[0]:,} -> {queue[1]:,}"
    dropped = "" if run.ws_dropped is None else f"WS {run.ws_dropped:,}, "
    note(
        f"fed {run.fed:,}; missing: decoded {run.missing_frames:,}, WS {run.missing_ws:,} "
        f"(+{run.extra_ws:,} extra), MQTT {run.missing_mqtt:,}; dropped: {dropped}MQTT "
        f"{run.mqtt_dropped:,}; seq gaps {run.gaps:,}, repeats {run.repeats:,}, "
        f"decode errors {run.decode_errors:,}{queued}; lag {run.lag_start:.2f} -> "
        f"{run.lag_end:.2f} s; feeder held back <= {run.feeder_behind * 1000:,.0f} ms; drained "
        f"in {run.drain:.1f} s; WS max {fmt(run.latency[2], 1)} ms, MQTT p50 "
        f"{fmt(run.mqtt_latency[0], 1)} ms; RSS {run.rss / 1e6:.0f} MB (peak "
        f"{run.hwm / 1e6:.0f}); envelope "
        f"{run.message_bytes:.0f} B; CPU of this process {run.bench_cpu:.0f} %, mosquitto "
        f"{run.broker_cpu:.0f} %, the rest of the machine {run.others_cpu:.0f} % (of "
        f"{cores() * 100} %)",
        indent="         ",
    )
    busy = run.cpu + run.bench_cpu + run.broker_cpu + run.others_cpu
    if busy >= SATURATED * cores() * 100 and run.others_cpu > BUSY:
        note(
            f"NOTE: the machine was saturated ({busy:.0f} % of {cores() * 100} %, other "
            f"processes {run.others_cpu:.0f} %): the target may have been held back",
            indent="         ",
        )


async def machine_load(seconds: float = 1.0) -> float:
    """% of one core the machine's processes use, over ``seconds``."""
    before = machine_busy()
    await asyncio.sleep(seconds)
    return (machine_busy() - before) / seconds * 100


# P7.


def cores() -> int:
    return os.cpu_count() or 1


def targets(arguments: argparse.Namespace) -> list[str]:
    return list(arguments.targets)


async def part_p7(bench: Bench, results: Results) -> None:
    arguments = bench.arguments
    print(
        f"\nP7: {arguments.message} frames through decode, envelope, {arguments.subscribers} "
        "WebSocket subscribers and MQTT QoS 1 (tgw: disk outbox), at fixed rates",
        flush=True,
    )
    show_relay_header()
    for rate in arguments.rates:
        for kind in targets(arguments):
            run = await relay_run(
                bench,
                kind,
                rate=rate,
                subscribers=arguments.subscribers,
                message=arguments.message,
                warmup=arguments.warmup,
                duration=arguments.duration,
            )
            results.relay.append(run)
            show_relay(run, arguments.max_lag)
    note(
        "(rate: fed; decoded, WS/s min (the slowest subscriber), MQTT/s: in the window; CPU: "
        "the target's process, loop: its main thread, us/frame: process CPU per frame decoded; "
        "latency: receipt minus the envelope's time, the gateway's read of the bytes; lag: "
        "frames fed that the slowest consumer lacked at the window's end, in seconds of "
        f"feeding; lost: deliveries that never came, to each subscriber and to MQTT; keeps up: "
        f"nothing lost or dropped and lag <= {arguments.max_lag:g} s)"
    )
    for kind in targets(arguments):
        runs = [r for r in results.relay if r.target == kind]
        kept = max((r.rate for r in runs if r.keeps_up(arguments.max_lag)), default=None)
        failed = min((r.rate for r in runs if not r.keeps_up(arguments.max_lag)), default=None)
        print(
            f"  {kind}: kept up at {fmt(kept)} frames/s at most; "
            + (f"fell behind or lost at {fmt(failed)}" if failed else "never fell behind"),
            flush=True,
        )
    await cost_runs(bench, results)


def cost_plan(arguments: argparse.Namespace) -> list[tuple[int, float, str]]:
    """(subscribers, rate, message) of the cost runs."""
    plan = [(subscribers, rate, arguments.message) for subscribers, rate in arguments.cost]
    if arguments.big_message and arguments.rates:
        plan.append((arguments.subscribers, min(arguments.rates), arguments.big_message))
    return plan


async def cost_runs(bench: Bench, results: Results, only_load: bool = False) -> None:
    arguments = bench.arguments
    plan = cost_plan(arguments)
    if only_load:
        plan = [entry for entry in plan if entry[0] == LOAD_SUBSCRIBERS][:1]
    if not plan:
        return
    print(
        f"\nP7 cost per frame: more subscribers, a bigger payload ({arguments.cost_duration:g} s "
        "windows; rates chosen so that the deliveries stay within one core)",
        flush=True,
    )
    show_relay_header()
    for subscribers, rate, message in plan:
        for kind in targets(arguments):
            run = await relay_run(
                bench,
                kind,
                rate=rate,
                subscribers=subscribers,
                message=message,
                warmup=arguments.warmup,
                duration=arguments.cost_duration,
            )
            results.cost.append(run)
            show_relay(run, arguments.max_lag)


# P4.


async def part_p4(bench: Bench, results: Results) -> None:
    arguments = bench.arguments
    messages = arguments.mqtt_messages
    print(
        f"\nP4: a backlog of {messages:,} envelopes through MQTT alone (no WebSocket "
        "subscriber), to the counter",
        flush=True,
    )
    print(
        f"  {'sender':<9} {'QoS':>3} {'delivered':>9} {'seconds':>8} {'msgs/s':>8} "
        f"{'vs paho':>7} {'sender us/msg':>13} {'broker us/msg':>13} {'lost':>5}",
        flush=True,
    )
    for qos in arguments.qos:
        runs = [await mqtt_run(bench, sender, qos=qos, messages=messages) for sender in PAHO]
        anchor = max(run.rate for run in runs)
        for sender in targets(arguments):
            runs.append(await mqtt_run(bench, sender, qos=qos, messages=messages))
        for run in runs:
            results.mqtt.append(run)
            print(
                f"  {run.sender:<9} {run.qos:>3} {run.delivered:>9,} {run.seconds:>8.2f} "
                f"{run.rate:>8,.0f} {fmt(ratio(run.rate, anchor), 2):>7} {run.cpu:>13.1f} "
                f"{run.broker_cpu:>13.1f} "
                f"{run.lost:>5}",
                flush=True,
            )
    note(
        "(paho: pipeline_relay.py paho, on its own network thread; paho-loop: on an asyncio "
        "loop; both from the first publish; tgw and bare: fed the backlog at once over TCP, "
        "from the first byte; all to the last distinct seq at the counter; vs paho: against the "
        "faster paho; us/msg: CPU per message delivered)"
    )


# P5 and P6.


async def part_idle(bench: Bench, results: Results) -> None:
    arguments = bench.arguments
    subscribed = "subscribed to '#'" if arguments.idle_subscribe else "not subscribed"
    print(
        f"\nP5, P6: {arguments.devices} quiet devices (1 frame/s each, MQTT QoS 1) and idle "
        f"WebSocket clients ({subscribed}, answering pings)",
        flush=True,
    )
    print(
        f"  {'target':<6} {'RSS before':>10} {'after':>8} {'clients':>7} {'per client':>10} "
        f"{'idle CPU %':>10} {'loop %':>6} {'clients':>7} {'seconds':>7} {'frames':>6} "
        f"{'others %':>8}",
        flush=True,
    )
    for kind in targets(arguments):
        run = await idle_run(bench, kind)
        results.idle.append(run)
        print(
            f"  {run.target:<6} {run.rss_before / 1e6:>8.1f}MB {run.rss_after / 1e6:>6.1f}MB "
            f"{run.memory_clients:>7} {run.per_client / 1e3:>8.1f}kB {run.cpu:>10.2f} "
            f"{run.loop_cpu:>6.2f} {run.clients:>7} {run.seconds:>7.1f} {run.frames:>6} "
            f"{run.others_cpu:>8.1f}",
            flush=True,
        )


# P3.


async def part_p3(bench: Bench, results: Results) -> None:
    arguments = bench.arguments
    print(
        f"\nP3: fan-out to {arguments.connections:,} subscribers, {arguments.turn_messages:,} "
        f"messages a run one per loop turn, {arguments.messages:,} in bursts of "
        f"{arguments.burst}: the gateway's WebSocket output (tgw) and websockets.broadcast "
        "(plain); bench/relay.py's part 2",
        flush=True,
    )
    print(
        f"  {'round':>5} {'batch':>5} {'mode':<5} {'elapsed':>8} {'deliveries/s':>12} "
        f"{'server CPU s':>12} {'us/delivery':>11} {'dropped':>7}",
        flush=True,
    )
    for number in range(1, arguments.rounds + 1):
        for batch in (1, arguments.burst):
            options = argparse.Namespace(**vars(arguments))
            options.batch = batch
            options.max_pending = max(arguments.max_pending, batch)
            options.messages = arguments.turn_messages if batch == 1 else arguments.messages
            for mode in ("tgw", "plain"):
                run = await fanout_run(options, bench.children, mode, number)
                results.fanout.append((batch, run))
                per = run.server_cpu / (options.messages * arguments.connections) * 1e6
                print(
                    f"  {number:>5} {batch:>5} {mode:<5} {run.elapsed:>7.2f}s "
                    f"{run.deliveries:>12,.0f} {run.server_cpu:>12.2f} {per:>11.2f} "
                    f"{run.dropped:>7}",
                    flush=True,
                )
    for batch in (1, arguments.burst):
        tgw, plain = fanout_medians(results.fanout, batch)
        print(
            f"  batch {batch:>2}, medians: tgw {tgw:,.0f}, plain {plain:,.0f} deliveries/s: "
            f"{tgw / plain:.2f}x",
            flush=True,
        )
    note(
        "(batch 1: one message per loop turn, as a quiet link delivers them; batch "
        f"{arguments.burst}: that many in one turn. Deliveries/s: messages x subscribers / "
        "(last byte received - first publish), the clients in another process on the same "
        "cores)"
    )


def fanout_medians(runs: Sequence[tuple[int, FanoutRun]], batch: int) -> tuple[float, float]:
    def median(mode: str) -> float:
        values = [run.deliveries for size, run in runs if run.mode == mode and size == batch]
        return statistics.median(values) if values else math.nan

    return median("tgw"), median("plain")


# P1.


def rates(function: Callable[[], int], expected: int, repeat: int) -> list[float]:
    """Frames/s of ``repeat`` runs of ``function``, which must return ``expected``."""
    found = []
    for _ in range(repeat):
        started = time.perf_counter()
        count = function()
        elapsed = time.perf_counter() - started
        if count != expected:
            raise BenchError(f"decoded {count} frames, expected {expected}")
        found.append(count / elapsed)
    return found


def tgw_decode_seconds(path: Path, frames: int) -> float:
    """Wall seconds of ``tgw decode path`` (to /dev/null); BenchError if it miscounts."""
    started = time.perf_counter()
    done = subprocess.run(
        [str(BIN / "tgw"), "decode", str(path)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        check=False,
    )
    elapsed = time.perf_counter() - started
    if done.returncode != 0 or f" {frames} frames" not in done.stderr:
        raise BenchError(f"tgw decode {path} ({frames} frames): {done.stderr.strip()[-300:]}")
    return elapsed


def part_p1(arguments: argparse.Namespace, folder: Path, results: Results) -> None:
    count, repeat = arguments.frames, arguments.repeat
    print(
        f"\nP1: the stream decoder and pymavlink on {count:,} frames each "
        f"(bench/decode_throughput.py), tgw decode of a {arguments.dump_frames:,}-frame dump; "
        f"medians of {repeat} runs",
        flush=True,
    )
    schema = compile_schema(load_profile(), load_catalog(decode_throughput.CATALOG))
    chunks = decode_throughput.chunked(decode_throughput.our_stream(schema, count))
    new_parser, mavlink_chunks = decode_throughput.mavlink_setup(count)
    ours, theirs = [], []
    for _ in range(repeat):  # alternating, so that a busy moment hurts both
        ours += rates(lambda: decode_throughput.run_ours(schema, chunks), count, 1)
        theirs += rates(lambda: decode_throughput.run_mavlink(new_parser, mavlink_chunks), count, 1)
    dump_frames = max(1000, arguments.dump_frames // 1000 * 1000)
    data = b"".join(frame_pool("environment")) * (dump_frames // 1000)
    dump = folder / "dump.bin"
    dump.write_bytes(data)
    one = folder / "one.bin"
    one.write_bytes(frame_pool("environment", 1)[0])
    default = load_schema()
    dump_chunks = decode_throughput.chunked(data)

    def decoder_alone() -> int:
        decoder = StreamDecoder(default)
        for chunk in dump_chunks:
            decoder.feed(chunk)
        return decoder.statistics().frames

    alone = rates(decoder_alone, dump_frames, repeat)
    startup = statistics.median(tgw_decode_seconds(one, 1) for _ in range(3))
    command = [
        dump_frames / max(tgw_decode_seconds(dump, dump_frames) - startup, 1e-6)
        for _ in range(max(1, repeat // 2))
    ]
    results.decode = {"ours": ours, "pymavlink": theirs, "alone": alone, "tgw decode": command}
    for name, values in (
        ("StreamDecoder (bench catalog)", ours),
        ("pymavlink parse_buffer", theirs),
        ("StreamDecoder on the dump", alone),
        ("tgw decode of the dump", command),
    ):
        print(
            f"  {name:<30} median {statistics.median(values):>10,.0f} frames/s  (min "
            f"{min(values):,.0f}, max {max(values):,.0f})",
            flush=True,
        )
    note(f"(tgw decode: wall time less its start-up, {startup:.2f} s on a one-frame dump)")


# The goals.


@dataclass(frozen=True)
class Goal:
    """One row of the final table."""

    goal: str
    target: str
    measured: str
    anchor: str
    ratio: float
    verdict: str
    """``met``, ``NOT met``, or ``-`` for a figure with no target."""

    def cells(self) -> list[str]:
        return [
            self.goal,
            self.target,
            self.measured,
            self.anchor,
            fmt(self.ratio, 2),
            self.verdict,
        ]


def met(condition: bool) -> str:
    return "met" if condition else "NOT met"


def ratio(ours: float | None, anchor: float | None) -> float:
    return ours / anchor if ours is not None and anchor else math.nan


def goals(arguments: argparse.Namespace, results: Results) -> list[Goal]:
    return [
        *p7_goals(arguments, results),
        *p4_goals(results),
        *idle_goals(results),
        *p3_goals(arguments, results),
        *p1_goals(results),
    ]


def p7_goals(arguments: argparse.Namespace, results: Results) -> list[Goal]:
    if not results.relay:
        return []
    max_lag, lowest = arguments.max_lag, min(arguments.rates)

    def kept(kind: str) -> tuple[float | None, str]:
        rates = [r.rate for r in results.relay if r.target == kind and r.keeps_up(max_lag)]
        best = max(rates, default=None)
        if not any(r.target == kind for r in results.relay):
            return None, "-"
        return best, f"{best:,.0f}/s" if best is not None else f"< {lowest:,.0f}/s"

    (ours, ours_text), (bare, bare_text) = kept("tgw"), kept("bare")
    rows = [
        Goal(
            f"P7 rate kept up, {arguments.subscribers} subs + MQTT QoS 1",
            f">= {GOAL_RATE:,.0f}/s, nothing lost",
            ours_text,
            bare_text,
            ratio(ours, bare),
            met((ours or 0) >= GOAL_RATE),
        )
    ]
    at = {r.target: r for r in results.relay if r.rate == GOAL_RATE}
    if "tgw" in at:
        run, anchor = at["tgw"], at.get("bare")
        rows.append(
            Goal(
                f"P7 WS latency p99 at {GOAL_RATE:,.0f}/s",
                f"<= {GOAL_P99:g} ms, kept up",
                f"{run.latency[1]:.1f} ms" + ("" if run.keeps_up(max_lag) else " (behind)"),
                "-" if anchor is None else f"{anchor.latency[1]:.1f} ms",
                ratio(run.latency[1], anchor.latency[1] if anchor else None),
                met(run.keeps_up(max_lag) and run.latency[1] <= GOAL_P99),
            )
        )
    runs = [r for r in results.relay if r.rate == lowest] + results.cost
    plan = [(arguments.subscribers, lowest, arguments.message), *cost_plan(arguments)]
    for subscribers, rate, message in plan:
        pair = {
            r.target: r
            for r in runs
            if (r.subscribers, r.rate, r.message) == (subscribers, rate, message)
        }
        if "tgw" in pair:
            run, anchor = pair["tgw"], pair.get("bare")
            rows.append(
                Goal(
                    f"P7 CPU/frame, {subscribers:,} subs at {rate:,.0f}/s, {message}",
                    "(how it grows)",
                    f"{run.us_per_frame:,.0f} us",
                    "-" if anchor is None else f"{anchor.us_per_frame:,.0f} us",
                    ratio(run.us_per_frame, anchor.us_per_frame if anchor else None),
                    "-",
                )
            )
    return rows


def p4_goals(results: Results) -> list[Goal]:
    rows = []
    for qos in sorted({run.qos for run in results.mqtt}):
        by = {run.sender: run for run in results.mqtt if run.qos == qos}
        pahos = [by[sender] for sender in PAHO if sender in by]
        if "tgw" in by and pahos:
            tgw, paho = by["tgw"], max(pahos, key=lambda run: run.rate)
            rows.append(
                Goal(
                    f"P4 MQTT QoS {qos}, backlog of {tgw.messages:,}",
                    ">= paho alone",
                    f"{tgw.rate:,.0f}/s",
                    f"{paho.rate:,.0f}/s ({paho.sender})",
                    ratio(tgw.rate, paho.rate),
                    met(tgw.lost == 0 and tgw.rate >= paho.rate),
                )
            )
    return rows


def idle_goals(results: Results) -> list[Goal]:
    rows = []
    idle = {run.target: run for run in results.idle}
    tgw, bare = idle.get("tgw"), idle.get("bare")
    if tgw is not None:
        rows.append(
            Goal(
                f"P6 memory per idle WS client ({tgw.memory_clients})",
                f"<= {GOAL_CLIENT / 1000:g} kB",
                f"{tgw.per_client / 1000:.1f} kB",
                "-" if bare is None else f"{bare.per_client / 1000:.1f} kB",
                ratio(tgw.per_client, bare.per_client if bare else None),
                met(tgw.per_client <= GOAL_CLIENT),
            )
        )
    load = {r.target: r for r in results.cost if r.subscribers == LOAD_SUBSCRIBERS}
    if "tgw" in load:
        run, anchor = load["tgw"], load.get("bare")
        rss_ratio = ratio(run.rss, anchor.rss if anchor else None)
        rows.append(
            Goal(
                f"P6 RSS, {LOAD_SUBSCRIBERS} subs at {run.rate:,.0f}/s",
                f"<= {GOAL_RSS:g}x bare",
                f"{run.rss / 1e6:.0f} MB",
                "-" if anchor is None else f"{anchor.rss / 1e6:.0f} MB",
                rss_ratio,
                "-" if math.isnan(rss_ratio) else met(rss_ratio <= GOAL_RSS),
            )
        )
    if tgw is not None:
        rows.append(
            Goal(
                f"P5 idle CPU, {tgw.devices} quiet devices, {tgw.clients} clients",
                f"<= {GOAL_IDLE:g} %",
                f"{tgw.cpu:.2f} %",
                "-" if bare is None else f"{bare.cpu:.2f} %",
                ratio(tgw.cpu, bare.cpu if bare else None),
                met(tgw.cpu <= GOAL_IDLE),
            )
        )
    return rows


def p3_goals(arguments: argparse.Namespace, results: Results) -> list[Goal]:
    if not results.fanout:
        return []
    rows = []
    for batch, goal in ((1, GOAL_TURN), (arguments.burst, GOAL_BURST)):
        tgw, plain = fanout_medians(results.fanout, batch)
        turn = "one message per loop turn" if batch == 1 else f"bursts of {batch}"
        rows.append(
            Goal(
                f"P3 fan-out, {arguments.connections:,} subs, {turn}",
                f">= {goal:g}x broadcast()",
                f"{tgw:,.0f}/s",
                f"{plain:,.0f}/s",
                ratio(tgw, plain),
                met(tgw >= goal * plain),
            )
        )
    return rows


def p1_goals(results: Results) -> list[Goal]:
    if not results.decode:
        return []
    medians = {name: statistics.median(values) for name, values in results.decode.items()}
    ours, alone, command = medians["ours"], medians["alone"], medians["tgw decode"]
    return [
        Goal(
            "P1 decode vs pymavlink",
            f">= {GOAL_DECODE:g}x",
            f"{ours:,.0f}/s",
            f"{medians['pymavlink']:,.0f}/s",
            ratio(ours, medians["pymavlink"]),
            met(ours >= GOAL_DECODE * medians["pymavlink"]),
        ),
        Goal(
            "P1 tgw decode vs the decoder alone",
            f">= {GOAL_DUMP:g}x",
            f"{command:,.0f}/s",
            f"{alone:,.0f}/s",
            ratio(command, alone),
            met(command >= GOAL_DUMP * alone),
        ),
    ]


def show_goals(rows: Sequence[Goal]) -> None:
    if not rows:
        return
    header = ["goal", "target", "measured", "anchor", "ratio", "verdict"]
    table = [header, *(row.cells() for row in rows)]
    widths = [max(len(line[i]) for line in table) for i in range(len(header))]
    print("\nGoals of issue 11 (anchors: bare relay, paho alone, websockets.broadcast, pymavlink)")
    for number, line in enumerate(table):
        cells = (cell.ljust(width) for cell, width in zip(line, widths, strict=True))
        print(("  " + "  ".join(cells)).rstrip())
        if number == 0:
            print("  " + "  ".join("-" * width for width in widths), flush=True)


# Running.


def code_version() -> str:
    try:
        done = subprocess.run(
            [
                "git",
                "-C",
                str(Path(__file__).resolve().parent.parent),
                "describe",
                "--always",
                "--dirty",
            ],
            capture_output=True,
            text=True,
            check=True,
        )
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return done.stdout.strip()


async def run(arguments: argparse.Namespace, results: Results) -> None:
    task = asyncio.current_task()
    assert task is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    parts = set(arguments.part)
    folder = Path(tempfile.mkdtemp(prefix="tgw-pipeline-bench-"))
    children = Children(folder)
    print(
        f"pipeline benchmark: code {code_version()}, {os.cpu_count()} cores, Python "
        f"{sys.version.split()[0]}, websockets {websockets_version}, paho-mqtt "
        f"{paho.mqtt.__version__}, orjson {orjson.__version__}; load average "
        f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}; parts {', '.join(arguments.part)}; "
        f"targets {', '.join(arguments.targets)}",
        flush=True,
    )
    busy = await machine_load()
    warning = ": other work competes with the benchmark, expect held-back figures"
    note(
        f"before starting, the machine's processes used {busy:.0f} % of its {cores() * 100} %"
        + (warning if busy > BUSY else ""),
        indent="",
    )
    try:
        if parts & {"p7", "p4", "p5", "p6"}:
            with mosquitto(folder, BROKER) as (port, pid):
                bench = Bench(arguments, children, folder, port, pid)
                if "p7" in parts:
                    await part_p7(bench, results)
                elif "p6" in parts:
                    await cost_runs(bench, results, only_load=True)
                if "p4" in parts:
                    await part_p4(bench, results)
                if parts & {"p5", "p6"}:
                    await part_idle(bench, results)
        if "p3" in parts:
            await part_p3(Bench(arguments, children, folder, 0, 0), results)
        if "p1" in parts:
            part_p1(arguments, folder, results)
    finally:
        await children.stop_all()
        shutil.rmtree(folder, ignore_errors=True)


def save(path: str, arguments: argparse.Namespace, results: Results) -> None:
    def relay(run: RelayRun) -> dict[str, Any]:
        return {
            **dataclasses.asdict(run),
            "lost": run.lost,
            "dropped": run.dropped,
            "keeps_up": run.keeps_up(arguments.max_lag),
        }

    document = {
        "code": code_version(),
        "options": {key: value for key, value in vars(arguments).items() if key != "json"},
        "relay": [relay(run) for run in results.relay],
        "cost": [relay(run) for run in results.cost],
        "mqtt": [
            {**dataclasses.asdict(run), "rate": run.rate, "lost": run.lost} for run in results.mqtt
        ],
        "idle": [{**dataclasses.asdict(run), "per_client": run.per_client} for run in results.idle],
        "fanout": [{"batch": batch, **dataclasses.asdict(run)} for batch, run in results.fanout],
        "decode": results.decode,
        "goals": [dataclasses.asdict(goal) for goal in results.goals],
    }
    Path(path).write_bytes(orjson.dumps(document, option=orjson.OPT_INDENT_2))


# The command line.


def numbers(text: str) -> list[float]:
    """``5000,10k,2.5k`` -> [5000.0, 10000.0, 2500.0]."""
    values = []
    for item in filter(None, text.split(",")):
        scale = 1000.0 if item.lower().endswith("k") else 1.0
        values.append(float(item.rstrip("kK")) * scale)
    return values


def setting(text: str) -> tuple[str, str]:
    """``mqtt.max_inflight=1000`` -> ("mqtt.max_inflight", "1000"), the value valid TOML."""
    key, equals, value = text.partition("=")
    key, value = key.strip(), value.strip()
    if not equals or not key or not value:
        raise argparse.ArgumentTypeError(f"expected SECTION.KEY=VALUE, got {text!r}")
    try:
        tomllib.loads(f"x = {value}")
    except tomllib.TOMLDecodeError as exc:
        raise argparse.ArgumentTypeError(f"{text!r}: {value} is not a TOML value ({exc})") from exc
    return key, value


def cost_entries(text: str) -> list[tuple[int, float]]:
    """``100@1000,1000@100`` -> [(100, 1000.0), (1000, 100.0)]: subscribers at rate."""
    entries = []
    for item in filter(None, text.split(",")):
        subscribers, _, rate = item.partition("@")
        entries.append((int(subscribers), numbers(rate)[0]))
    return entries


def choices(allowed: Sequence[str]) -> Callable[[str], list[str]]:
    def parse(text: str) -> list[str]:
        chosen = [item.strip().lower() for item in text.split(",") if item.strip()]
        if "all" in chosen:
            return list(allowed)
        wrong = [item for item in chosen if item not in allowed]
        if wrong or not chosen:
            raise argparse.ArgumentTypeError(f"expected some of {', '.join(allowed)}, got {text!r}")
        return chosen

    return parse


SMOKE = {
    "part": ["p7", "p4"],
    "rates": [500.0],
    "warmup": 1.0,
    "duration": 2.0,
    "subscribers": 2,
    "parsing": 1,
    "cost": [],
    "big_message": "",
    "mqtt_messages": 2000,
    "qos": [1],
}
"""What --smoke sets (options given explicitly still win)."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pipeline.py",
        description=__doc__.split("\n\n", 2)[2] if __doc__ else None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--part",
        type=choices(PARTS),
        default=list(PARTS),
        help="comma-separated parts to run: p7, p4, p5, p6, p3, p1 or all (default: all)",
    )
    parser.add_argument(
        "--targets",
        type=choices(("tgw", "bare")),
        default=["tgw", "bare"],
        help="tgw, bare or both (default); without bare, no anchor for P5-P7",
    )
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="a tiny P7 and P4 that only show it runs and loses nothing (for CI)",
    )
    parser.add_argument("--json", metavar="FILE", help="save every figure to FILE")
    parser.add_argument(
        "--profile",
        metavar="DIR",
        help="py-spy every P7 window (raw collapsed stacks into DIR) and show where each "
        "microsecond per frame goes (needs py-spy)",
    )
    seven = parser.add_argument_group("P7")
    seven.add_argument(
        "--rates",
        type=numbers,
        default=[5000.0, 10000.0, 20000.0, 30000.0],
        help="frames/s, comma-separated, 'k' allowed (default 5k,10k,20k,30k)",
    )
    seven.add_argument("--subscribers", type=int, default=10, help="WebSocket (default 10)")
    seven.add_argument(
        "--parsing", type=int, default=1, help="of which time each message (default 1)"
    )
    seven.add_argument(
        "--message",
        default="environment",
        help="what the devices send: environment, motion, event, identity (the default catalog)"
        " or waveform (bench/pipeline_catalog.toml); default environment",
    )
    seven.add_argument("--warmup", type=float, default=2.0, help="seconds (default 2)")
    seven.add_argument("--duration", type=float, default=6.0, help="measured s (default 6)")
    seven.add_argument(
        "--max-lag", type=float, default=0.2, help="seconds behind that still keep up (default 0.2)"
    )
    seven.add_argument(
        "--cost",
        type=cost_entries,
        default=[(100, 1000.0), (1000, 100.0)],
        help="cost runs, SUBSCRIBERS@RATE comma-separated; '' for none (default 100@1000,1000@100)",
    )
    seven.add_argument(
        "--big-message",
        default="waveform",
        help="a cost run with this message at the lowest rate: waveform (bench/pipeline_catalog"
        ".toml, ~1 kB envelopes) or one of the default catalog; '' for none (default waveform)",
    )
    seven.add_argument(
        "--cost-duration",
        type=float,
        default=10.0,
        help="measured s of a cost run (default 10: the history fills at 1,000/s)",
    )
    seven.add_argument(
        "--tick", type=float, default=0.002, help="seconds between the feeder's writes (0.002)"
    )
    parser.add_argument(
        "--tgw-set",
        type=setting,
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="a setting of every tgw run's configuration, VALUE in TOML, e.g. "
        "websocket.queue_size=100000 or mqtt.max_inflight=1000 (sources.KEY: every source; "
        "KEY alone: the top level); repeat for more",
    )
    seven.add_argument(
        "--drain-limit",
        type=float,
        default=15.0,
        help="seconds to wait for what is late after a window (default 15)",
    )
    four = parser.add_argument_group("P4")
    four.add_argument("--mqtt-messages", type=int, default=30_000, help="backlog (default 30000)")
    four.add_argument(
        "--mqtt-limit", type=float, default=60.0, help="seconds a backlog may take (default 60)"
    )
    four.add_argument(
        "--qos", type=lambda text: [int(q) for q in numbers(text)], default=[0, 1], help="(0,1)"
    )
    idle = parser.add_argument_group("P5, P6")
    idle.add_argument("--devices", type=int, default=4, help="quiet devices (default 4)")
    idle.add_argument("--idle-clients", type=int, default=100, help="for P5 (default 100)")
    idle.add_argument("--memory-clients", type=int, default=500, help="for P6 (default 500)")
    idle.add_argument("--idle-seconds", type=float, default=20.0, help="P5 window (default 20)")
    idle.add_argument("--settle", type=float, default=2.0, help="seconds before readings (2)")
    idle.add_argument("--idle-subscribe", action="store_true", help="idle clients subscribe to '#'")
    three = parser.add_argument_group("P3")
    three.add_argument("--connections", type=int, default=1000, help="subscribers (default 1000)")
    three.add_argument("--messages", type=int, default=500, help="per run in bursts (default 500)")
    three.add_argument(
        "--turn-messages",
        type=int,
        default=200,
        help="per run, one per loop turn (default 200)",
    )
    three.add_argument("--burst", type=int, default=50, help="messages per turn (default 50)")
    three.add_argument("--rounds", type=int, default=3, help="rounds, medians (default 3)")
    three.add_argument(
        "--max-pending", type=int, default=100, help="messages held per connection (100)"
    )
    one = parser.add_argument_group("P1")
    one.add_argument("--frames", type=int, default=100_000, help="per decode (default 100000)")
    one.add_argument("--repeat", type=int, default=5, help="runs, medians (default 5)")
    one.add_argument(
        "--dump-frames", type=int, default=300_000, help="tgw decode's dump (default 300000)"
    )
    guards = parser.add_argument_group("guard timeouts, seconds")
    guards.add_argument("--start-timeout", type=float, default=30.0, help="to start (30)")
    guards.add_argument("--connect-timeout", type=float, default=60.0, help="to connect (60)")
    guards.add_argument("--run-timeout", type=float, default=180.0, help="a P3 run (180)")
    return parser


def check(arguments: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    if "p7" in arguments.part and not arguments.rates:
        parser.error("--rates: at least one")
    if any(rate <= 0 for rate in arguments.rates) or any(r <= 0 for _, r in arguments.cost):
        parser.error("rates must be positive")
    if arguments.subscribers < 1 or arguments.parsing < 1:
        parser.error("--subscribers and --parsing: at least 1")
    for name in ("warmup", "duration", "cost_duration", "tick", "max_lag", "idle_seconds"):
        if getattr(arguments, name) <= 0:
            parser.error(f"--{name.replace('_', '-')} must be positive")
    for name in (
        "mqtt_messages",
        "devices",
        "idle_clients",
        "connections",
        "messages",
        "turn_messages",
        "rounds",
        "burst",
    ):
        if getattr(arguments, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--smoke" in argv:
        parser.set_defaults(**SMOKE)
    arguments = parser.parse_args(argv)
    check(arguments, parser)
    if arguments.profile:
        Path(arguments.profile).mkdir(parents=True, exist_ok=True)
        arguments.profile = str(Path(arguments.profile).resolve())
    started = time.monotonic()
    results = Results()
    status = 0
    try:
        asyncio.run(run(arguments, results))
    except BenchError as exc:
        print(f"pipeline.py: error: {exc}", file=sys.stderr)
        status = 1
    except (KeyboardInterrupt, asyncio.CancelledError):
        print("pipeline.py: interrupted; subprocesses stopped", file=sys.stderr)
        status = 130
    results.goals = goals(arguments, results)
    show_goals(results.goals)
    if arguments.json:
        save(arguments.json, arguments, results)
    print(f"\n(total {time.monotonic() - started:.0f} s)")
    return status


if __name__ == "__main__":
    sys.exit(main())
