"""Capture with `tgw run`, replay with `tgw replay`, and a disk that refuses mid-run.

Real parts: fwsim on a PTY, `tgw run` and `tgw replay` as processes, a real mosquitto,
real files (and a real file-size limit from the kernel for the refusing disk).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import resource
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

from websockets.asyncio.client import connect

from gateway.config import CaptureConfig
from gateway.runtime.capture import CaptureWriter
from gateway.runtime.metrics import GatewayMetrics
from protocol.capture import CaptureHeader, CaptureParser, RecordKind, file_header, record
from protocol.encoder import FrameEncoder
from protocol.schema import load_schema
from tests.fwsim.helpers import run, simulator, wait_for
from tests.gateway.broker import Mosquitto, Subscriber, free_port
from tests.gateway.test_dumps_and_check import xxd
from tests.gateway.test_gateway import (
    FAST,
    GUARD,
    TGW,
    metric,
    wait_healthy,
    write_config,
)

COMPARED = ("device", "message", "cmd", "fields", "sequence", "address")


def node_source(link: Path, extra: str = "") -> str:
    """The ``[[sources]]`` of one serial device, ``node-1`` on ``link``, and ``extra``."""
    return f'[[sources]]\ntype = "serial"\ndevice = "node-1"\npath = "{link}"\n\n{extra}'


def envelopes(subscriber: Subscriber) -> list[dict[str, Any]]:
    """The message envelopes received, in order, without what varies between runs."""
    return [
        {key: envelope.get(key) for key in COMPARED}
        for envelope in (
            json.loads(m.payload) for m in subscriber.messages if not m.topic.endswith("/status")
        )
    ]


def parse(path: Path) -> tuple[CaptureHeader, list[Any], Any]:
    parser = CaptureParser()
    records = parser.feed(path.read_bytes())
    assert parser.header is not None
    return parser.header, records, parser.finish()


def test_capture_through_tgw_run_then_replay_gives_the_same_messages_in_order(
    tmp_path: Path, mosquitto: Mosquitto
) -> None:
    link = tmp_path / "ttyNODE"
    captures = tmp_path / "captures"
    ws_port = free_port()
    config = write_config(tmp_path / "gateway.toml", ws_port, mosquitto.port, node_source(link))
    with Subscriber(mosquitto, "tgw/#") as live:
        with simulator("--link", link, *FAST) as (fwsim, _):
            process = subprocess.Popen(
                [str(TGW), "run", "-c", str(config), "--capture", str(captures)],
                stderr=subprocess.PIPE,
                text=True,
            )
            try:
                wait_healthy(ws_port)
                live.wait_until(lambda ms: len(ms) > 120, "120 live messages")
                fwsim.terminate()  # the link vanishes first: its close is captured too
                fwsim.wait(timeout=GUARD)
                wait_for(
                    lambda: metric(ws_port, "tgw_device_online", device="node-1") == 0,
                    "the device offline",
                )
            finally:
                process.send_signal(signal.SIGTERM)
                _, log = process.communicate(timeout=GUARD)
        assert process.returncode == 0, log
        live.wait_until(
            lambda ms: (
                [m.payload for m in ms if m.topic == "tgw/gateway/status"][-1:] == [b"offline"]
            ),
            "the gateway's goodbye, its last message",
        )
        expected = envelopes(live)
    assert len(expected) > 100
    files = sorted(captures.iterdir())
    assert len(files) == 1, files
    header, records, truncation = parse(files[0])
    assert truncation is None
    assert (header.source, header.kind, header.where) == ("node-1", "serial", str(link))
    assert (header.profile, header.catalog, header.part) == ("default", "default", 1)
    kinds = [record.kind for record in records]
    assert kinds[0] is RecordKind.OPENED
    assert RecordKind.CLOSED in kinds
    assert all(r.time_ns <= s.time_ns for r, s in itertools.pairwise(records))

    with Subscriber(mosquitto, "tgw/#") as replayed:
        result = subprocess.run(
            [str(TGW), "replay", str(captures), "--fast", "--port", "0", "--mqtt",
             f"127.0.0.1:{mosquitto.port}"],
            capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        assert "replay finished" in result.stderr
        assert result.stdout == ""  # no progress bar off a terminal
        replayed.wait_until(lambda ms: len(envelopes(replayed)) >= len(expected), "the replay")
        time.sleep(0.2)  # anything beyond would show now
        got = envelopes(replayed)
        statuses = [
            m.payload
            for m in replayed.messages
            if m.topic == "tgw/node-1/status" and not m.retain  # not the live run's last word
        ]
    assert got == expected
    # The status topic holds the latest state: a fast replay may be over before "online"
    # is published, but it ends "offline".
    assert statuses[-1] == b"offline"


def test_a_disk_that_refuses_mid_run_suspends_the_capture_not_the_gateway(
    tmp_path: Path, mosquitto: Mosquitto
) -> None:
    link = tmp_path / "ttyNODE"
    captures = tmp_path / "captures"
    ws_port = free_port()
    capture = f'[capture]\ndirectory = "{captures}"\nretry_interval = 0.2\n'
    config = write_config(
        tmp_path / "gateway.toml", ws_port, mosquitto.port, node_source(link, capture)
    )
    limit = 3000  # bytes per file: the kernel refuses to write beyond (EFBIG)

    def limit_file_size() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    with simulator("--link", link, *FAST):
        process = subprocess.Popen(
            [str(TGW), "run", "-c", str(config), "--no-state"],  # no file of it may grow
            stderr=subprocess.PIPE,
            text=True,
            preexec_fn=limit_file_size,  # noqa: PLW1509 - only setrlimit, before exec
        )
        try:
            wait_healthy(ws_port)
            wait_for(
                lambda: metric(ws_port, "tgw_capture_errors_total", device="node-1") >= 2,
                "the disk refusing twice",
            )
            frames = metric(ws_port, "tgw_frames_total", device="node-1", message="motion")
            wait_for(
                lambda: (
                    metric(ws_port, "tgw_frames_total", device="node-1", message="motion")
                    > frames + 20
                ),
                "frames decoded after the disk refused",
            )
            lost = metric(
                ws_port, "tgw_capture_lost_bytes_total", device="node-1", reason="suspended"
            )
            assert lost > 0

            async def dashboard() -> list[dict[str, Any]]:
                async with connect(f"ws://127.0.0.1:{ws_port}") as client:
                    await client.recv()
                    await client.send(json.dumps({"type": "subscribe", "filters": ["#"]}))
                    return [json.loads(await client.recv()) for _ in range(5)]

            assert {m["type"] for m in asyncio.run(dashboard())} >= {"message"}
        finally:
            gateway_stopped = process.poll() is None
            process.send_signal(signal.SIGTERM)
            _, log = process.communicate(timeout=GUARD)
    assert gateway_stopped, log  # it was still running when the test ended
    assert process.returncode == 0, log
    assert "capture of node-1 suspended: file too large" in log
    assert "capture of node-1 resumed" in log
    files = sorted(captures.iterdir())
    assert len(files) >= 2
    for path in files:
        assert path.stat().st_size <= limit
        header, records, _ = parse(path)  # a part may end mid-record: the write was cut
        assert header.source == "node-1"
    # Each part after the first begins with a gap record that says how much is missing.
    for path in files[1:]:
        _, records, _ = parse(path)
        if records:
            assert records[0].kind is RecordKind.GAP
            assert records[0].lost > 0


def test_rotation_keeps_at_most_max_files_each_within_max_file_size(tmp_path: Path) -> None:
    config = CaptureConfig(directory=str(tmp_path), max_file_size=4096, max_files=3)
    header = CaptureHeader(source="node-1", profile="default", catalog="default")
    (tmp_path / "node-1.2.raw").write_bytes(b"not ours")  # other files are left alone
    (tmp_path / "node-10.20000101T000000000Z.0001.tgwcap").write_bytes(b"another device")

    async def main() -> list[bytes]:
        writer = CaptureWriter(config, header, GatewayMetrics())
        writer.start()
        chunks = [bytes([index % 256]) * 100 for index in range(200)]
        for chunk in chunks:
            writer.data(chunk)
            await asyncio.sleep(0)
        await writer.close()
        return chunks

    chunks = asyncio.run(main())
    files = sorted(tmp_path.glob("node-1.*.tgwcap"))
    assert len(files) == 3
    assert (tmp_path / "node-1.2.raw").exists()
    assert (tmp_path / "node-10.20000101T000000000Z.0001.tgwcap").exists()
    kept: list[bytes] = []
    parts = []
    for path in files:
        assert path.stat().st_size <= 4096
        header_read, records, truncation = parse(path)
        assert truncation is None
        parts.append(header_read.part)
        kept.extend(record.data for record in records if record.kind is RecordKind.DATA)
    assert parts == sorted(parts)
    assert parts[-1] > 3  # older parts were deleted
    assert kept == chunks[-len(kept) :]  # the newest bytes, in order, none missing


def test_replay_plays_silences_link_losses_and_gaps_as_they_happened(tmp_path: Path) -> None:
    encoder = FrameEncoder(load_schema())

    def power(charge: int) -> bytes:
        return encoder.encode("power", {"battery": 3700, "current": -5, "charge": charge})

    second = 1_000_000_000
    t0 = 1_700_000_000 * second
    cut = power(3)
    path = tmp_path / "session.tgwcap"
    path.write_bytes(
        file_header(CaptureHeader(source="node-7", profile="default", catalog="default"))
        + record(RecordKind.OPENED, t0, "/dev/ttyUSB0")
        + record(RecordKind.DATA, t0, power(1))
        + record(RecordKind.DATA, t0 + second // 10, power(2) + cut[:5])
        + record(RecordKind.GAP, t0 + second // 5, 40)  # the rest of frame 3 was not captured
        + record(RecordKind.DATA, t0 + second // 5, cut[5:] + power(4))
        + record(RecordKind.DATA, t0 + 30 * second, power(5))  # after 30 s of silence
        + record(RecordKind.CLOSED, t0 + 31 * second, "hung up")
        + record(RecordKind.OPENED, t0 + 40 * second, "/dev/ttyUSB0")
        + record(RecordKind.DATA, t0 + 40 * second, power(6))
    )
    ws_port = free_port()
    process = subprocess.Popen(
        [str(TGW), "replay", str(path), "--speed", "1000", "--port", str(ws_port),
         "--keep-serving"],
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    log: list[str] = []
    try:
        assert process.stderr is not None
        for line in process.stderr:
            log.append(line)
            if "replay done" in line:
                break

        async def history() -> list[dict[str, Any]]:
            async with connect(f"ws://127.0.0.1:{ws_port}") as client:
                await client.recv()
                await client.send(json.dumps({"type": "subscribe", "filters": ["#"], "since": 0}))
                got: list[dict[str, Any]] = []
                async with asyncio.timeout(GUARD):
                    while len(got) < 5:
                        reply = json.loads(await client.recv())
                        if reply["type"] == "message":
                            got.append(reply)
                return got

        messages = asyncio.run(history())
    finally:
        process.send_signal(signal.SIGINT)
        rest, _ = process.communicate(timeout=GUARD)
        log.append(rest or "")
    assert process.returncode == 0, "".join(log)
    assert [m["fields"]["charge"] for m in messages] == [1, 2, 4, 5, 6]  # 3 fell in the gap
    assert {m["device"] for m in messages} == {"node-7"}
    states = [
        line.split("node-7: ", 1)[1].strip()
        for line in "".join(log).splitlines()
        if "node-7: online" in line or "node-7: offline" in line
    ]
    assert states == [
        "online (connected)",
        "offline (silent for 10 s)",
        "online (receiving again)",
        "offline (link lost: hung up)",
        "online (connected)",
        "offline (end of replay)",
    ]
    assert "the capture misses 40 bytes here" in "".join(log)


def test_replay_of_raw_and_hex_dumps_with_a_config_and_a_profile(
    tmp_path: Path, mosquitto: Mosquitto
) -> None:
    raw = tmp_path / "bench-a.bin"
    run("fwsim", "--output", raw, "--count", "40", "--profile", "addressed-crc16", "--seed", "5")
    text = tmp_path / "bench b.txt"  # a space: the device is named "bench-b"
    source = tmp_path / "b.bin"
    run("fwsim", "--output", source, "--count", "25", "--profile", "addressed-crc16")
    text.write_text(xxd(source.read_bytes()), encoding="utf-8")
    config = write_config(
        tmp_path / "outputs.toml", free_port(), mosquitto.port, node_source(tmp_path / "unused")
    )
    # A replay keeps nothing: not the live gateway's state, nor its outbox.
    state = f'state_dir = "{tmp_path / "state"}"\n'
    config.write_text(state + config.read_text(encoding="utf-8"), encoding="utf-8")
    with Subscriber(mosquitto, "tgw/+/+") as subscriber:
        result = run(
            "tgw", "replay", raw, text, "-c", config, "--fast", "--profile", "addressed-crc16"
        )
        assert "replay finished" in result.stderr
        subscriber.wait_until(lambda _: len(envelopes(subscriber)) >= 65, "both replays")
        got = envelopes(subscriber)
        seqs = sorted(
            json.loads(m.payload)["seq"]
            for m in subscriber.messages
            if not m.topic.endswith("/status")
        )
    by_device = {
        device: [m for m in got if m["device"] == device] for device in ("bench-a", "bench-b")
    }
    assert len(by_device["bench-a"]) == 40
    assert len(by_device["bench-b"]) == 25
    assert all(m["sequence"] is not None for m in got)  # the profile's sequence field
    assert [m["sequence"] for m in by_device["bench-a"]] == [i % 256 for i in range(40)]
    assert seqs == list(range(1, 66))
    assert not (tmp_path / "state").exists()


def test_a_disk_slower_than_the_device_loses_bytes_counted_and_marked_by_gaps(
    tmp_path: Path,
) -> None:
    # The event loop hands reads over without pausing, far faster than the thread can
    # take them through a 4 KiB buffer: what does not fit is lost, never silently.
    config = CaptureConfig(directory=str(tmp_path), buffer_size=4096)
    header = CaptureHeader(source="node-1", profile="default", catalog="default")
    metrics = GatewayMetrics()
    chunk = bytes(range(64))
    reads = 100_000

    async def main() -> None:
        writer = CaptureWriter(config, header, metrics)
        writer.start()
        for _ in range(reads):
            writer.data(chunk)
        await writer.close()

    asyncio.run(main())
    lost = metrics.registry.get_sample_value(
        "tgw_capture_lost_bytes_total", {"device": "node-1", "reason": "buffer full"}
    )
    captured = metrics.registry.get_sample_value("tgw_capture_bytes_total", {"device": "node-1"})
    assert lost is not None
    assert lost > 0
    assert captured is not None
    assert captured + lost == reads * len(chunk)
    [path] = tmp_path.iterdir()
    _, records, truncation = parse(path)
    assert truncation is None
    data = [r for r in records if r.kind is RecordKind.DATA]
    gaps = [r for r in records if r.kind is RecordKind.GAP]
    assert sum(len(r.data) for r in data) == captured
    assert sum(r.lost for r in gaps) == lost  # every lost byte is marked where it was lost
    assert all(r.data == chunk for r in data)
