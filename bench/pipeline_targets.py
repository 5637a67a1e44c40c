"""What the pipeline benchmark (bench/pipeline.py) measures: the gateway and the bare relay.

A :class:`Target` is one of them running as a subprocess, reading the benchmark's
feeders over TCP, serving WebSocket on a free port of 127.0.0.1 and publishing to the
benchmark's mosquitto:

* :class:`GatewayTarget`: ``tgw run -c <config> --state-dir <folder>``, the shipped
  defaults but for what the benchmark must set (its ports, MQTT on, logs at warning,
  and, for subscribers that never answer pings, no pings); its counts come from
  ``/metrics``;
* :class:`BareTarget`: bench/pipeline_relay.py's bare relay; its counts come from its
  control channel.

:class:`Bench` holds what every run shares: the options, the subprocesses, the
temporary folder and the broker.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from relay import Child, Children, free_port, http_get, metric_total, poll_until, scrape
from relay_ws import BenchError

from protocol.config import load_catalog, load_profile
from protocol.encoder import FrameEncoder
from protocol.schema import Schema, compile_schema, load_schema

__all__ = [
    "DEVICE",
    "SUBSCRIBE",
    "BareTarget",
    "Bench",
    "Counts",
    "GatewayTarget",
    "Target",
    "catalog_for",
    "frame_pool",
    "start_target",
]

HERE = Path(__file__).resolve().parent
BIN = Path(sys.executable).parent
"""The virtualenv's bin folder: tgw is there."""
DEVICE = "bench"
SUBSCRIBE = b'{"type":"subscribe","filters":["#"]}'
TOPIC_PREFIX = "tgw"
POOL = 1000
"""Distinct frames a feeder writes in turn."""
BIG_CATALOG = HERE / "pipeline_catalog.toml"
"""The benchmark's own catalog: a message bigger than any of the default catalog's."""
ANSWER_TIMEOUT = 30.0
"""Seconds a busy target may take to answer a question about its counts."""


@dataclass
class Bench:
    """What every run shares."""

    arguments: argparse.Namespace
    children: Children
    folder: Path
    broker_port: int
    broker_pid: int
    runs: int = 0
    """Targets started so far: each gets a state directory of its own."""

    def next_folder(self, name: str) -> Path:
        self.runs += 1
        folder = self.folder / f"{self.runs:02d}-{name}"
        folder.mkdir()
        return folder


def catalog_for(message: str) -> str:
    """The catalog a source of ``message`` frames needs: ``default``, or the benchmark's."""
    if message in load_schema().names:
        return "default"
    if message in schema_of(str(BIG_CATALOG)).names:
        return str(BIG_CATALOG)
    raise BenchError(f"no message {message!r} in the default catalog or {BIG_CATALOG}")


def schema_of(catalog: str) -> Schema:
    return (
        load_schema()
        if catalog == "default"
        else compile_schema(load_profile(), load_catalog(catalog))
    )


def frame_pool(message: str, count: int = POOL, seed: int = 1) -> list[bytes]:
    """``count`` frames of ``message`` (from :func:`catalog_for`'s catalog) with varied
    values, encoded by the project's encoder: every frame of a pool has the same size."""
    encoder = FrameEncoder(schema_of(catalog_for(message)))
    rng = random.Random(seed)
    letters = "abcdefghijklmnopqrstuvwxyz"

    def values() -> dict[str, Any]:
        match message:
            case "environment":
                return {
                    "temperature": round(rng.uniform(-40.0, 85.0), 2),
                    "humidity": round(rng.uniform(0.0, 100.0), 2),
                    "pressure": round(rng.uniform(900.0, 1100.0), 1),
                }
            case "motion":
                return {"accel": [round(rng.uniform(-2.0, 2.0), 3) for _ in range(3)]}
            case "event":  # the longest text the catalog allows
                code = rng.choice(["boot", "button", "threshold", "watchdog"])
                return {"code": code, "text": "".join(rng.choices(letters, k=16))}
            case "waveform":
                return {
                    "channel": rng.randrange(4),
                    "samples": [round(rng.uniform(-2.0, 2.0), 3) for _ in range(120)],
                }
            case "identity":
                return {
                    "serial": rng.randbytes(6),
                    "firmware": [rng.randrange(10) for _ in range(3)],
                    "model": "TGW-SENSOR-" + rng.choice(letters),
                }
        raise BenchError(
            f"no values for {message!r}: environment, motion, event, identity, waveform"
        )

    return [encoder.encode(message, values()) for _ in range(count)]


@dataclass(frozen=True)
class Counts:
    """What a target has done so far, by its own count."""

    frames: int
    """Frames decoded."""
    decode_errors: int
    ws_dropped: int | None
    """Messages its WebSocket side dropped (None: the bare relay has no queue to drop from)."""
    mqtt_published: int
    """Acknowledged by the broker (QoS 1) or sent (QoS 0)."""
    mqtt_dropped: int
    mqtt_queue: int | None
    """Messages waiting to be published (None: unknown)."""


@dataclass
class TargetSpec:
    """How to start a target: its sources (device, feeder port) and its outputs."""

    sources: Sequence[tuple[str, int]]
    catalog: str = "default"
    """Every source's."""
    mqtt: bool = True
    qos: int = 1
    pings: bool = False
    """WebSocket pings on (the product's defaults), or off for raw subscribers that
    never answer them."""


class Target:
    """A running relay: its name, its subprocess, its WebSocket port, its counts."""

    name: str
    child: Child
    ws_port: int

    @property
    def pid(self) -> int:
        return self.child.pid

    async def counts(self) -> Counts:
        raise NotImplementedError


class GatewayTarget(Target):
    """``tgw run`` with a configuration written for the run."""

    name = "tgw"

    def __init__(self, child: Child, ws_port: int) -> None:
        self.child = child
        self.ws_port = ws_port

    @classmethod
    async def start(cls, bench: Bench, spec: TargetSpec) -> GatewayTarget:
        folder = bench.next_folder("tgw")
        port = free_port()
        config = folder / "gateway.toml"
        config.write_text(gateway_config(bench, spec, port), encoding="utf-8")
        tgw = BIN / "tgw"
        if not tgw.exists():
            raise BenchError(f"{tgw} not found: run with the project's venv python")
        argv: list[str | Path] = [tgw, "run", "-c", config, "--state-dir", folder / "state"]
        child = await bench.children.start("tgw", argv, control=False)
        target = cls(child, port)
        guard = bench.arguments.start_timeout

        async def serving() -> bool:
            try:
                status, _ = await http_get(port, "/healthz", timeout=2.0)
            except BenchError:
                return False
            return status in (200, 503)

        await poll_until(serving, f"tgw run answering on port {port}", guard, child)
        if spec.mqtt:

            async def connected() -> bool:
                return metric_total(await target.metrics(), "tgw_mqtt_connected") >= 1

            await poll_until(connected, "the gateway's MQTT connection", guard, child)
        return target

    async def metrics(self) -> str:
        return (await scrape(self.ws_port, self.child))[0]

    async def counts(self) -> Counts:
        text = await self.metrics()
        if "tgw_frames_total" not in text:
            raise self.child.failure("no tgw_frames_total in /metrics: was it renamed?")
        return Counts(
            frames=int(metric_total(text, "tgw_frames_total")),
            decode_errors=int(metric_total(text, "tgw_decode_errors_total")),
            ws_dropped=int(metric_total(text, "tgw_websocket_messages_dropped_total")),
            mqtt_published=int(metric_total(text, "tgw_mqtt_published_total")),
            mqtt_dropped=int(metric_total(text, "tgw_mqtt_dropped_total")),
            mqtt_queue=int(metric_total(text, "tgw_mqtt_queue_depth")),
        )


def gateway_config(bench: Bench, spec: TargetSpec, port: int) -> str:
    """The run's configuration: the shipped defaults but for what the benchmark must set,
    and what ``--tgw-set`` says (it wins)."""
    top: dict[str, str] = {}
    sources = [
        {
            "type": '"tcp"',
            "device": json.dumps(device),
            "host": '"127.0.0.1"',
            "port": str(source_port),
            "catalog": json.dumps(spec.catalog),
        }
        for device, source_port in spec.sources
    ]
    sections: dict[str, dict[str, str]] = {
        "websocket": {"host": '"127.0.0.1"', "port": str(port)},
        "mqtt": {"enabled": "true" if spec.mqtt else "false"},
        "logging": {"level": '"warning"'},
    }
    if not spec.pings:  # raw subscribers never answer pings
        sections["websocket"].update(ping_interval="3600.0", ping_timeout="3600.0")
    if spec.mqtt:
        sections["mqtt"].update(
            host='"127.0.0.1"',
            port=str(bench.broker_port),
            qos=str(spec.qos),
            topic_prefix=f'"{TOPIC_PREFIX}"',
        )
    for key, value in bench.arguments.tgw_set:
        section, _, name = key.rpartition(".")
        if not section:
            top[name] = value
        elif section == "sources":
            for source in sources:
                source[name] = value
        else:
            sections.setdefault(section, {})[name] = value
    lines = [f"{key} = {value}" for key, value in top.items()]
    for source in sources:
        lines += ["", "[[sources]]", *(f"{key} = {value}" for key, value in source.items())]
    for section, values in sections.items():
        lines += ["", f"[{section}]", *(f"{key} = {value}" for key, value in values.items())]
    return "\n".join(lines) + "\n"


class BareTarget(Target):
    """bench/pipeline_relay.py's bare relay."""

    name = "bare"

    def __init__(self, child: Child, ws_port: int) -> None:
        self.child = child
        self.ws_port = ws_port

    @classmethod
    async def start(cls, bench: Bench, spec: TargetSpec) -> BareTarget:
        argv: list[str | Path] = [sys.executable, HERE / "pipeline_relay.py", "relay"]
        for device, port in spec.sources:
            argv += ["--source", f"{device}={port}"]
        if spec.mqtt:
            argv += ["--mqtt-port", str(bench.broker_port), "--qos", str(spec.qos)]
        argv += ["--topic-prefix", TOPIC_PREFIX, "--ping-interval", "20" if spec.pings else "0"]
        child = await bench.children.start("bare relay", argv, control=True)
        words = await child.expect("READY", bench.arguments.start_timeout)
        return cls(child, int(words[0]))

    async def counts(self) -> Counts:
        await self.child.send("STATS")
        words = await self.child.expect("STATS", ANSWER_TIMEOUT)
        values = dict(word.split("=", 1) for word in words)
        return Counts(
            frames=int(values["frames"]),
            decode_errors=int(values["errors"]),
            ws_dropped=None,
            mqtt_published=int(values["published"]),
            mqtt_dropped=int(values["dropped"]),
            mqtt_queue=None,
        )


async def start_target(kind: str, bench: Bench, spec: TargetSpec) -> Target:
    """Start the ``kind`` (``tgw`` or ``bare``) target; its sources' feeders must listen."""
    if kind == "tgw":
        return await GatewayTarget.start(bench, spec)
    if kind == "bare":
        return await BareTarget.start(bench, spec)
    raise BenchError(f"no target {kind!r} (tgw, bare)")
