"""Sources end to end: the real fwsim on a real PTY and a real TCP socket, no mocks.

Each test drives one scenario with ``asyncio.run``; ``GUARD`` only stops a hang. The
simulator starts and stops in a thread (its helper blocks), so the source keeps running
meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import subprocess
from collections.abc import AsyncIterator, Callable, Coroutine, Mapping
from pathlib import Path
from typing import Any

import pytest

from gateway.config import SerialSourceConfig, TcpSourceConfig
from gateway.runtime.envelope import Envelope
from gateway.runtime.metrics import GatewayMetrics
from gateway.runtime.sources import (
    DeviceUnavailable,
    LinkSource,
    SerialLink,
    make_source,
)
from gateway.runtime.status import DeviceStatus
from protocol.encoder import FrameEncoder
from protocol.schema import Schema
from tests.fwsim.helpers import GUARD, read_jsonl, simulator, truth_frames

DEVICE = "node-1"
KINDS = ["serial", "tcp"]
STREAM = ("--interval", "motion=0.02", "--log-level", "warning")
"""A steady stream of small frames, and quiet logs (nobody reads fwsim's stderr)."""
FAST = ("--interval", "motion=0.01", "--log-level", "warning")
RETRY = {"reconnect_initial": 0.05, "reconnect_max": 0.2}
"""Short delays, so a test does not wait long for the source to notice the device."""
FRAME_KEYS = ("message", "cmd", "fields", "sequence", "address", "raw")

Status = tuple[bool, str]


class RecordingSink:
    """Keeps what the source delivers, in order, and wakes up whoever waits on it."""

    def __init__(self) -> None:
        self.events: list[Envelope | Status] = []
        self._changed = asyncio.Event()

    @property
    def envelopes(self) -> list[Envelope]:
        return [event for event in self.events if isinstance(event, Envelope)]

    @property
    def statuses(self) -> list[Status]:
        return [event for event in self.events if isinstance(event, tuple)]

    def frame(self, envelope: Envelope) -> None:
        self.events.append(envelope)
        self._changed.set()

    def status(self, status: DeviceStatus) -> None:
        assert status.device == DEVICE
        assert status.time > 0
        self.events.append((status.online, status.reason))
        self._changed.set()

    async def wait_until(self, condition: Callable[[], bool]) -> None:
        """Return once ``condition()`` holds, checking it after every delivery."""
        while not condition():
            self._changed.clear()
            await self._changed.wait()

    async def wait_for_frames(self, count: int) -> None:
        await self.wait_until(lambda: len(self.envelopes) >= count)


def drive(scenario: Callable[[], Coroutine[Any, Any, None]]) -> None:
    """Run ``scenario`` in a fresh event loop; fail rather than hang."""

    async def guarded() -> None:
        async with asyncio.timeout(GUARD):
            await scenario()

    asyncio.run(guarded())


@contextlib.asynccontextmanager
async def fwsim(*arguments: str | Path) -> AsyncIterator[tuple[subprocess.Popen[str], str]]:
    """Start fwsim (in a thread: the helper blocks); yield it and where it serves."""
    with contextlib.ExitStack() as stack:
        started = await asyncio.to_thread(stack.enter_context, simulator(*arguments))
        try:
            yield started
        finally:
            await asyncio.to_thread(stack.close)


@contextlib.asynccontextmanager
async def running(source: LinkSource) -> AsyncIterator[asyncio.Task[None]]:
    """Run ``source`` in a task; cancel it on the way out and surface its failure, if any."""
    task = asyncio.create_task(source.run(), name=f"source {source.device}")
    try:
        yield task
    finally:
        task.cancel()
        await asyncio.wait([task])
        if not task.cancelled():
            task.result()  # raises what run() died of; run() never returns on its own


async def eventually(condition: Callable[[], bool]) -> None:
    """Wait until ``condition()`` holds (for states no sink call announces)."""
    while not condition():
        await asyncio.sleep(0.01)


def absent_address(kind: str, tmp_path: Path) -> str:
    """Where a device will appear: a PTY symlink not there yet, or a port nobody listens on."""
    if kind == "serial":
        return str(tmp_path / "ttyUSB0")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{probe.getsockname()[1]}"


def link_arguments(kind: str, where: str) -> tuple[str, str]:
    return ("--link", where) if kind == "serial" else ("--tcp", where)


def free_address(kind: str, tmp_path: Path) -> str:
    """What to give fwsim when the test does not need to know the address in advance."""
    return str(tmp_path / "ttyUSB0") if kind == "serial" else "127.0.0.1:0"


def make(
    kind: str, where: str, schema: Schema, sink: RecordingSink, **options: Any
) -> tuple[LinkSource, GatewayMetrics]:
    """A source for the device at ``where`` (a path, or host:port), with fresh metrics."""
    options = {**RETRY, **options}
    config: SerialSourceConfig | TcpSourceConfig
    if kind == "serial":
        config = SerialSourceConfig(device=DEVICE, path=where, **options)
    else:
        host, _, port = where.rpartition(":")
        config = TcpSourceConfig(device=DEVICE, host=host, port=int(port), **options)
    metrics = GatewayMetrics()
    return make_source(config, schema, metrics, sink), metrics


def metric(metrics: GatewayMetrics, name: str, **labels: str) -> float:
    """The sum of the samples called ``name`` whose labels include ``labels``."""
    return sum(
        sample.value
        for family in metrics.registry.collect()
        for sample in family.samples
        if sample.name == name and labels.items() <= sample.labels.items()
    )


def frame_record(record: Mapping[str, Any]) -> dict[str, Any]:
    return {key: record.get(key) for key in FRAME_KEYS}


def open_descriptors() -> set[str]:
    """This process's open file descriptors and what each refers to."""
    found = set()
    for name in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            found.add(f"{name} -> {os.readlink(f'/proc/self/fd/{name}')}")
    return found


def test_make_source_picks_the_link_for_the_config(default_schema: Schema) -> None:
    sink = RecordingSink()
    serial_source, _ = make("serial", "/dev/ttyUSB0", default_schema, sink)
    tcp_source, _ = make("tcp", "::1:4001", default_schema, sink)
    assert (serial_source.kind, serial_source.where) == ("serial", "/dev/ttyUSB0")
    assert (tcp_source.kind, tcp_source.where) == ("tcp", "[::1]:4001")
    assert serial_source.schema is default_schema


@pytest.mark.parametrize("kind", KINDS)
def test_frames_arrive_as_envelopes_matching_the_ground_truth(
    kind: str, tmp_path: Path, default_schema: Schema
) -> None:
    truth = tmp_path / "truth.jsonl"

    async def scenario() -> None:
        sink = RecordingSink()
        where = free_address(kind, tmp_path)
        arguments = (*link_arguments(kind, where), "--count", "150", "--truth", truth, *FAST)
        async with fwsim(*arguments) as (process, where):
            source, metrics = make(kind, where, default_schema, sink, include_raw=True)
            async with running(source):
                await asyncio.to_thread(process.wait)
                # fwsim waits until its last bytes were read before it hangs up.
                await sink.wait_until(lambda: not source.state()["online"] and bool(sink.envelopes))
                assert sink.statuses[0] == (True, "connected")
                assert sink.statuses[1][0] is False
                assert sink.statuses[1][1].startswith("link lost: ")
                assert source.where in sink.statuses[1][1]

        expected = [frame_record(r) for r in truth_frames(read_jsonl(truth))]
        received = [frame_record(json.loads(e.to_json())) for e in sink.envelopes]
        # Frames sent before the source opened the link never reached it (a serial port
        # is flushed on open, a TCP server drops what it sends to nobody); from then on
        # every frame arrives, in order, up to the last.
        assert received
        assert received == expected[len(expected) - len(received) :]
        assert {e.device for e in sink.envelopes} == {DEVICE}
        assert all(
            e.received > 0 and e.topic == f"{DEVICE}/{e.frame.message}" for e in sink.envelopes
        )
        assert metric(metrics, "tgw_frames_total", device=DEVICE) == len(received)
        assert metric(metrics, "tgw_device_online", device=DEVICE) == 0

    drive(scenario)


@pytest.mark.parametrize("kind", KINDS)
def test_a_device_absent_at_start_is_picked_up_when_it_appears(
    kind: str, tmp_path: Path, default_schema: Schema
) -> None:
    reason = "no such file or directory" if kind == "serial" else "connection refused"

    async def scenario() -> None:
        sink = RecordingSink()
        where = absent_address(kind, tmp_path)
        source, metrics = make(kind, where, default_schema, sink)
        async with running(source):
            await eventually(lambda: source.state()["reconnects"] >= 2)
            state = source.state()
            assert (state["connected"], state["online"], state["last_frame"]) == (
                False,
                False,
                None,
            )
            assert reason in state["last_error"]
            assert sink.events == []
            async with fwsim(*link_arguments(kind, where), *STREAM):
                await sink.wait_for_frames(3)
                state = source.state()
                assert sink.statuses == [(True, "connected")]
                assert (state["connected"], state["online"]) == (True, True)
                assert state["last_frame"] == sink.envelopes[-1].received
                assert state["decoder"]["frames"] >= 3
                assert metric(metrics, "tgw_device_online", device=DEVICE) == 1
                assert (
                    metric(metrics, "tgw_source_reconnects_total", device=DEVICE)
                    == (state["reconnects"])
                )

    drive(scenario)


@pytest.mark.parametrize("kind", KINDS)
def test_a_link_that_vanishes_and_returns_goes_offline_then_online(
    kind: str, tmp_path: Path, default_schema: Schema
) -> None:
    async def scenario() -> None:
        sink = RecordingSink()
        where = free_address(kind, tmp_path)
        async with fwsim(*link_arguments(kind, where), "--disconnect", "1.5:0.5", *STREAM) as (
            _,
            where,
        ):
            source, _ = make(kind, where, default_schema, sink)
            async with running(source):

                def back_with_frames() -> bool:
                    statuses = [
                        i for i, event in enumerate(sink.events) if isinstance(event, tuple)
                    ]
                    return len(statuses) >= 3 and any(
                        isinstance(event, Envelope) for event in sink.events[statuses[2] :]
                    )

                await sink.wait_until(back_with_frames)
        (up, first), (down, lost), (again, second) = sink.statuses[:3]
        assert (up, first) == (True, "connected")
        assert down is False
        assert lost.startswith("link lost: ")
        assert source.where in lost
        assert (again, second) == (True, "connected")
        assert source.state()["reconnects"] >= 1

    drive(scenario)


@pytest.mark.parametrize("kind", KINDS)
def test_a_silent_device_goes_offline_and_comes_back(
    kind: str, tmp_path: Path, default_schema: Schema
) -> None:
    async def scenario() -> None:
        sink = RecordingSink()
        where = free_address(kind, tmp_path)
        async with fwsim(*link_arguments(kind, where), "--stall", "1:0.6", *STREAM) as (_, where):
            source, _ = make(kind, where, default_schema, sink, silence_timeout=0.3)
            async with running(source):
                silent = (False, "silent for 0.3 s")
                await sink.wait_until(lambda: silent in sink.statuses[:-1])
                assert sink.statuses[0] == (True, "connected")
                after = sink.statuses[sink.statuses.index(silent) + 1]
                assert after == (True, "receiving again")
                assert source.state()["connected"] is True
                assert source.state()["reconnects"] == 0

    drive(scenario)


@pytest.mark.parametrize("kind", KINDS)
def test_a_ping_written_to_the_device_is_answered_with_a_pong(
    kind: str, tmp_path: Path, default_schema: Schema
) -> None:
    ping = FrameEncoder(default_schema).encode("ping", {"request_id": 5})

    def pongs(sink: RecordingSink) -> list[Envelope]:
        return [e for e in sink.envelopes if e.frame.message == "pong"]

    async def scenario() -> None:
        sink = RecordingSink()
        where = free_address(kind, tmp_path)
        async with fwsim(*link_arguments(kind, where), *STREAM) as (_, where):
            source, _ = make(kind, where, default_schema, sink)
            async with running(source):
                await sink.wait_for_frames(1)
                await source.write(ping)
                await sink.wait_until(lambda: bool(pongs(sink)))
        assert [e.frame.fields["request_id"] for e in pongs(sink)] == [5]

    drive(scenario)


@pytest.mark.parametrize("kind", KINDS)
def test_writing_to_a_disconnected_device_raises(
    kind: str, tmp_path: Path, default_schema: Schema
) -> None:
    ping = FrameEncoder(default_schema).encode("ping", {"request_id": 5})

    async def scenario() -> None:
        source, _ = make(kind, absent_address(kind, tmp_path), default_schema, RecordingSink())
        with pytest.raises(DeviceUnavailable, match=f"device {DEVICE} is not connected"):
            await source.write(ping)
        async with running(source):
            await eventually(lambda: source.state()["reconnects"] >= 1)
            with pytest.raises(DeviceUnavailable, match=f"device {DEVICE} is not connected"):
                await source.write(ping)

    drive(scenario)


@pytest.mark.parametrize("kind", KINDS)
def test_metrics_add_up_to_what_was_delivered_and_decoded(
    kind: str, tmp_path: Path, default_schema: Schema
) -> None:
    faults = ("--noise", "0.3", "--bad-checksum", "0.1", "--count", "150")

    async def scenario() -> None:
        sink = RecordingSink()
        where = free_address(kind, tmp_path)
        async with fwsim(*link_arguments(kind, where), *faults, *FAST) as (process, where):
            source, metrics = make(kind, where, default_schema, sink)
            async with running(source):
                await asyncio.to_thread(process.wait)
                await sink.wait_until(lambda: not source.state()["online"] and bool(sink.envelopes))
                decoder = source.state()["decoder"]

        assert decoder["errors"]
        assert decoder["bytes_skipped"] > 0
        assert metric(metrics, "tgw_frames_total", device=DEVICE) == len(sink.envelopes)
        assert decoder["frames"] == len(sink.envelopes)
        for message in {e.frame.message for e in sink.envelopes}:
            delivered = sum(e.frame.message == message for e in sink.envelopes)
            assert metric(metrics, "tgw_frames_total", message=message or "unknown") == delivered
        for kind_name, count in decoder["errors"].items():
            assert metric(metrics, "tgw_decode_errors_total", kind=kind_name) == count
        assert metric(metrics, "tgw_bytes_read_total", device=DEVICE) == decoder["bytes_fed"]
        assert (
            metric(metrics, "tgw_bytes_skipped_total", device=DEVICE) == (decoder["bytes_skipped"])
        )
        assert (
            metric(metrics, "tgw_source_reconnects_total", device=DEVICE)
            == (source.state()["reconnects"])
        )

    drive(scenario)


@pytest.mark.parametrize("kind", KINDS)
def test_cancelling_run_closes_the_link(kind: str, tmp_path: Path, default_schema: Schema) -> None:
    async def scenario() -> None:
        sink = RecordingSink()
        where = free_address(kind, tmp_path)
        async with fwsim(*link_arguments(kind, where), *STREAM) as (_, where):
            source, metrics = make(kind, where, default_schema, sink)
            before = open_descriptors()
            async with running(source) as task:
                await sink.wait_for_frames(1)
                opened = open_descriptors() - before
                if kind == "serial":
                    assert any(os.path.realpath(where) in entry for entry in opened)
                else:
                    assert any("socket:" in entry for entry in opened)
            assert task.cancelled()
            assert open_descriptors() == before
            state = source.state()
            assert (state["connected"], state["online"]) == (False, False)
            assert sink.statuses[-1] == (False, "source stopped")
            assert metric(metrics, "tgw_device_online", device=DEVICE) == 0
            with pytest.raises(DeviceUnavailable):
                await source.write(b"\xaa\x55")

    drive(scenario)


def test_a_server_that_hangs_up_at_once_is_an_outage_logged_once(
    default_schema: Schema, caplog: pytest.LogCaptureFixture
) -> None:
    async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.close()  # what ser2net does when its port is taken

    async def scenario() -> None:
        sink = RecordingSink()
        server = await asyncio.start_server(hang_up, "127.0.0.1", 0)
        async with server:
            port = server.sockets[0].getsockname()[1]
            source, _ = make("tcp", f"127.0.0.1:{port}", default_schema, sink)
            async with running(source):
                await eventually(lambda: source.state()["reconnects"] >= 4)
        assert sink.events == []
        assert "closed the connection" in source.state()["last_error"]

    with caplog.at_level(logging.DEBUG, logger="gateway.runtime.sources"):
        drive(scenario)
    retries = [r for r in caplog.records if "retrying in" in r.getMessage()]
    assert len(retries) >= 4
    assert [r.levelno for r in retries[:1]] == [logging.WARNING]
    assert {r.levelno for r in retries[1:]} == {logging.DEBUG}


def test_a_serial_port_that_returns_is_reopened_at_once_not_after_the_backoff(
    tmp_path: Path, default_schema: Schema
) -> None:
    """Unplugged, then plugged back: the source watches for the port's path and opens it
    as it appears, however long the backoff it drew (an hour here). Without the watch,
    this test would wait out the hour, and its guard would fail it."""

    async def scenario() -> None:
        sink = RecordingSink()
        where = absent_address("serial", tmp_path)
        hour = {"reconnect_initial": 3600.0, "reconnect_max": 3600.0}
        source, _ = make("serial", where, default_schema, sink, **hour)
        async with running(source):
            await eventually(lambda: source.state()["last_error"] is not None)
            async with fwsim("--link", where, *STREAM):
                await sink.wait_for_frames(3)
                assert sink.statuses == [(True, "connected")]
            await eventually(lambda: not source.state()["connected"])  # unplugged again
            async with fwsim("--link", where, *STREAM):
                await sink.wait_until(lambda: len(sink.statuses) >= 3)
                await sink.wait_for_frames(len(sink.envelopes) + 3)
        (_, first), (down, _), (again, second) = sink.statuses[:3]
        assert (first, down, again, second) == ("connected", False, True, "connected")

    drive(scenario)


def test_opening_a_serial_port_keeps_what_the_device_sent_before() -> None:
    """pyserial's open() discards what waits in the driver; the gateway's does not, so
    the bytes a device sends between its return and the reopening are read."""
    controller, device = os.openpty()
    try:
        os.write(controller, b"sent before the port was opened")
        link = SerialLink(SerialSourceConfig(device="node", path=os.ttyname(device)))

        async def main() -> bytes:
            reader, writer = await link.open()
            try:
                async with asyncio.timeout(GUARD):
                    return await reader.readexactly(31)
            finally:
                link.shut(writer)

        assert asyncio.run(main()) == b"sent before the port was opened"
    finally:
        os.close(controller)
        os.close(device)
