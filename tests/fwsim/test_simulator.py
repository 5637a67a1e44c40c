"""fwsim end to end: real PTYs, real sockets, the real decoder, checked against ground truth."""

from __future__ import annotations

import itertools
import json
import os
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from protocol.decoder import StreamDecoder
from protocol.encoder import FrameEncoder
from protocol.events import ErrorKind, Event, Frame, StreamError
from protocol.records import event_record
from protocol.schema import Schema
from tests.fwsim.helpers import (
    BIN,
    read_jsonl,
    read_until_hangup,
    run,
    simulator,
    truth_frames,
    wait_for,
)

FAST = ["--interval", "motion=0.01", "--interval", "heartbeat=0.05"]
"""Intervals that make real-time runs short."""
KEYS = ("offset", "cmd", "message", "fields", "raw")


def decode_bytes(schema: Schema, data: bytes) -> list[Event]:
    decoder = StreamDecoder(schema)
    return decoder.feed(data) + decoder.finish()


def frame_records(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{key: r[key] for key in KEYS} for r in records if r["type"] == "frame"]


def decoded_records(events: list[Event]) -> list[dict[str, Any]]:
    """Frames as tgw decode prints them (JSON round trip included)."""
    return frame_records(
        [json.loads(json.dumps(event_record(e), default=bytes.hex)) for e in events]
    )


def test_a_dump_decodes_with_tgw_decode_to_the_ground_truth(tmp_path: Path) -> None:
    dump, truth = tmp_path / "dump.bin", tmp_path / "truth.jsonl"
    run("fwsim", "--output", dump, "--duration", "120", "--truth", truth, "--seed", "3")
    decoded = frame_records(
        [json.loads(line) for line in run("tgw", "decode", dump).stdout.splitlines()]
    )
    expected = frame_records(truth_frames(read_jsonl(truth)))
    assert len(expected) > 700
    assert decoded == expected
    assert {record["message"] for record in expected} == {
        "identity",
        "heartbeat",
        "environment",
        "motion",
        "power",
        "event",
    }


def test_the_same_seed_gives_the_same_dump(tmp_path: Path) -> None:
    for name in ("a", "b"):
        run("fwsim", "--output", tmp_path / name, "--count", "300", "--seed", "9", "--noise", "0.1")
    assert (tmp_path / "a").read_bytes() == (tmp_path / "b").read_bytes()
    run("fwsim", "--output", tmp_path / "c", "--count", "300", "--seed", "10", "--noise", "0.1")
    assert (tmp_path / "c").read_bytes() != (tmp_path / "a").read_bytes()


ALL_FAULTS = [
    "--noise", "0.05", "--garbage-burst", "0.02", "--bit-flip", "0.03", "--drop-byte", "0.03",
    "--truncate", "0.03", "--bad-checksum", "0.03", "--duplicate", "0.03",
    "--stall", "100:10", "--disconnect", "170:5",
]  # fmt: skip


def run_with_faults(tmp_path: Path, profile: str) -> tuple[bytes, list[dict[str, Any]]]:
    dump, truth = tmp_path / "dump.bin", tmp_path / "truth.jsonl"
    run("fwsim", "--profile", profile, "--output", dump, "--duration", "600", "--truth", truth,
        "--seed", "4", *ALL_FAULTS)  # fmt: skip
    records = read_jsonl(truth)
    kinds = {r["kind"] for r in records if r["type"] == "fault"}
    kinds |= {r["fault"] for r in records if r["type"] == "frame" and r["fault"]}
    assert kinds == {
        "noise",
        "garbage_burst",
        "bit_flip",
        "drop_byte",
        "truncate",
        "bad_checksum",
        "duplicate",
        "stall",
        "disconnect",
    }  # every fault kind was injected
    return dump.read_bytes(), records


def test_with_every_fault_the_decoder_loses_exactly_the_faulted_frames(
    tmp_path: Path, crc_schema: Schema
) -> None:
    data, truth = run_with_faults(tmp_path, "addressed-crc16")
    decoder = StreamDecoder(crc_schema)
    events = decoder.feed(data) + decoder.finish()
    statistics = decoder.statistics()
    intact = truth_frames(truth)
    assert decoded_records(events) == frame_records(intact)
    assert [
        (e.header["sequence"], e.header["address"]) for e in events if isinstance(e, Frame)
    ] == [(r["sequence"], r["address"]) for r in intact]
    junk = sum(r["size"] for r in truth if r["type"] == "fault" and "size" in r)
    spoiled = sum(r["size"] for r in truth_frames(truth, intact_only=False) if r not in intact)
    assert statistics.frames == len(intact)
    assert statistics.bytes_in_frames == sum(r["size"] for r in intact)
    assert statistics.bytes_skipped == junk + spoiled
    assert statistics.bytes_fed == len(data)
    rejected = sum(count for kind, count in statistics.errors.items() if kind != "garbage")
    assert rejected >= sum(
        1 for r in truth if r["type"] == "frame" and r["fault"] == "bad_checksum"
    )


def test_with_every_fault_on_an_8_bit_sum_only_collisions_cost_frames(
    tmp_path: Path, default_schema: Schema
) -> None:
    data, truth = run_with_faults(tmp_path, "default")
    events = decode_bytes(default_schema, data)
    decoded = {(e.offset, e.raw.hex()) for e in events if isinstance(e, Frame)}
    intact = {(r["offset"], r["raw"]) for r in truth_frames(truth)}
    extra = [(offset, len(raw) // 2) for offset, raw in decoded - intact]
    for offset, _ in intact - decoded:  # lost only under a frame whose sum matched by chance
        assert any(start < offset < start + size for start, size in extra), offset
    assert len(intact - decoded) <= len(intact) // 100


def test_pty_link_delivers_every_frame(tmp_path: Path, default_schema: Schema) -> None:
    link, truth = tmp_path / "ttyFW", tmp_path / "truth.jsonl"
    with simulator("--link", link, "--count", "500", "--truth", truth, *FAST) as (process, where):
        assert where == str(link)
        assert os.path.islink(link)
        fd = os.open(link, os.O_RDONLY | os.O_NOCTTY)
        try:
            data = read_until_hangup(fd)
        finally:
            os.close(fd)
        assert process.wait() == 0
    assert not os.path.lexists(link)  # the symlink goes with the device
    expected = frame_records(truth_frames(read_jsonl(truth)))
    assert len(expected) == 500
    assert decoded_records(decode_bytes(default_schema, data)) == expected


def test_sigusr1_ends_the_run_once_the_reader_has_every_frame(
    tmp_path: Path, default_schema: Schema
) -> None:
    link, truth = tmp_path / "ttyFW", tmp_path / "truth.jsonl"
    with simulator("--link", link, "--truth", truth, *FAST) as (process, _):
        fd = os.open(link, os.O_RDONLY | os.O_NOCTTY)
        try:
            first = os.read(fd, 65536)  # it is sending
            process.send_signal(signal.SIGUSR1)
            data = first + read_until_hangup(fd)
        finally:
            os.close(fd)
        assert process.wait() == 0
    expected = frame_records(truth_frames(read_jsonl(truth)))
    assert expected
    assert decoded_records(decode_bytes(default_schema, data)) == expected


def test_pty_link_disconnects_and_comes_back(tmp_path: Path, default_schema: Schema) -> None:
    link, truth = tmp_path / "ttyFW", tmp_path / "truth.jsonl"
    arguments: list[str | Path] = ["--link", link, "--duration", "3.5", "--disconnect", "2:0.5"]
    arguments += ["--truth", truth]
    with simulator(*arguments, *FAST) as (process, _):
        first_target = os.readlink(link)
        fd = os.open(link, os.O_RDONLY | os.O_NOCTTY)
        before = read_until_hangup(fd)  # the device vanishes: EOF or EIO
        os.close(fd)
        # The hang-up can be seen before the old symlink is gone: wait for the new one.
        wait_for(lambda: _target(link) not in (None, first_target), "the symlink to come back")
        second_target = os.readlink(link)
        fd = os.open(link, os.O_RDONLY | os.O_NOCTTY)
        after = read_until_hangup(fd)
        os.close(fd)
        assert process.wait() == 0
    assert second_target != first_target  # a new device node, as after re-enumeration
    records = read_jsonl(truth)
    [outage] = [r for r in records if r["type"] == "fault" and r["kind"] == "disconnect"]
    sent_before = frame_records(
        [r for r in truth_frames(records) if r["offset"] < outage["offset"]]
    )
    sent_after = frame_records(
        [r for r in truth_frames(records) if r["offset"] >= outage["offset"]]
    )
    got_before = decoded_records(decode_bytes(default_schema, before))
    got_after = decoded_records(decode_bytes(default_schema, after))
    assert got_before
    assert got_after
    # offsets in the truth count bytes over the whole run; each connection starts at 0
    for got, sent, base in (
        (got_before, sent_before, 0),
        (got_after, sent_after, outage["offset"]),
    ):
        shifted = [{**record, "offset": record["offset"] + base} for record in got]
        assert shifted == sent[: len(shifted)]
    assert len(got_after) == len(sent_after)  # the run ends with a drained link


def _target(link: Path) -> str | None:
    """Where the symlink ``link`` points, or None while there is none."""
    try:
        return os.readlink(link)
    except FileNotFoundError:
        return None


class Console:
    """The gateway's side of a command exchange over a PTY: send a frame, await the answer."""

    def __init__(self, fd: int, schema: Schema) -> None:
        self.fd = fd
        self.encoder = FrameEncoder(schema)
        self.decoder = StreamDecoder(schema)
        self.answers: list[dict[str, Any]] = []
        self.telemetry: list[str] = []

    def _read(self) -> bool:
        """Take what has arrived; return False (so it can lead an ``or``)."""
        try:
            data = os.read(self.fd, 65536)
        except BlockingIOError:
            return False
        for event in self.decoder.feed(data):
            if isinstance(event, Frame) and event.message in ("pong", "ack", "nack"):
                self.answers.append({"message": event.message, **event.fields})
            elif isinstance(event, Frame) and event.message is not None:
                self.telemetry.append(event.message)
        return False

    def exchange(self, frame: bytes) -> dict[str, Any]:
        """Send ``frame``; return the first response the device sends back."""
        os.write(self.fd, frame)
        wait_for(lambda: self._read() or bool(self.answers), "a response from the device")
        return self.answers.pop(0)

    def wait_telemetry(self, message: str, count: int) -> None:
        """Read until ``count`` more ``message`` frames have arrived."""
        target = self.telemetry.count(message) + count
        wait_for(lambda: self._read() or self.telemetry.count(message) >= target, message)


def test_commands_over_a_pty(tmp_path: Path, default_schema: Schema) -> None:
    link, truth = tmp_path / "ttyFW", tmp_path / "truth.jsonl"
    with simulator("--link", link, "--truth", truth, "--interval", "motion=0.1") as (process, _):
        fd = os.open(link, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
        try:
            console = Console(fd, default_schema)
            encode, encode_raw = console.encoder.encode, console.encoder.encode_raw
            pong = console.exchange(encode("ping", {"request_id": 1}))
            assert pong["message"] == "pong"
            assert pong["request_id"] == 1
            console.wait_telemetry("motion", 3)
            motion = default_schema.names["motion"].spec.cmd
            set_rate = {"request_id": 2, "message": motion, "interval": 250}
            assert console.exchange(encode("set_rate", set_rate)) == {
                "message": "ack",
                "request_id": 2,
                "command": 0x82,
                "value": 250,
            }
            console.wait_telemetry("motion", 3)  # at the new rate
            assert console.exchange(encode_raw(0x99, b"\x03\x00")) == {
                "message": "nack",
                "request_id": 3,
                "command": 0x99,
                "reason": "unknown_command",
            }
            bad_target = {"request_id": 4, "message": 0x80, "interval": 5}
            assert console.exchange(encode("set_rate", bad_target))["reason"] == "bad_value"
            short = encode_raw(0x82, b"\x05\x00")  # set_rate with 2 of its 8 payload bytes
            assert console.exchange(short)["reason"] == "bad_length"
            telemetry = encode("power", {"battery": 1, "current": 1, "charge": 1})
            assert console.exchange(telemetry)["reason"] == "not_a_command"
        finally:
            os.close(fd)
        process.terminate()
        assert process.wait() == 0
    records = read_jsonl(truth)
    [ack] = [r for r in records if r["type"] == "frame" and r["message"] == "ack"]
    assert ack["reply_to"] == 2
    times = [r["time"] for r in records if r["type"] == "frame" and r["message"] == "motion"]
    after = [t for t in times if t > ack["time"]]
    before = [t for t in times if t <= ack["time"]]
    assert len(before) >= 2
    assert len(after) >= 2  # the new rate is observed: every 250 ms of device time
    gaps = [round(b - a, 6) for a, b in itertools.pairwise(after)]
    assert set(gaps) == {0.25}
    assert {round(b - a, 6) for a, b in itertools.pairwise(before)} == {0.1}


def test_tcp_link_serves_frames_and_answers_commands(default_schema: Schema) -> None:
    with simulator("--tcp", "127.0.0.1:0", *FAST) as (process, where):
        host, _, port = where.rpartition(":")
        with socket.create_connection((host, int(port)), timeout=30) as connection:
            decoder = StreamDecoder(default_schema)
            frames: list[Frame] = []
            while len(frames) < 20:
                frames += [e for e in decoder.feed(connection.recv(4096)) if isinstance(e, Frame)]
            connection.sendall(FrameEncoder(default_schema).encode("ping", {"request_id": 42}))
            while not any(frame.message == "pong" for frame in frames):
                frames += [e for e in decoder.feed(connection.recv(4096)) if isinstance(e, Frame)]
        [pong] = [frame for frame in frames if frame.message == "pong"]
        assert pong.fields["request_id"] == 42
        assert {frame.message for frame in frames} >= {"motion", "heartbeat"}
        assert not [
            e for e in decoder.finish() if isinstance(e, StreamError) and e.kind != "truncated"
        ]
        process.terminate()
        assert process.wait() == 0


def test_several_devices_share_an_addressed_bus(tmp_path: Path, crc_schema: Schema) -> None:
    dump = tmp_path / "bus.bin"
    run("fwsim", "--profile", "addressed-crc16", "--devices", "3", "--output", dump,
        "--duration", "30")  # fmt: skip
    frames = [e for e in decode_bytes(crc_schema, dump.read_bytes()) if isinstance(e, Frame)]
    by_address: dict[int | None, list[int | None]] = {}
    for frame in frames:
        by_address.setdefault(frame.header["address"], []).append(frame.header["sequence"])
    assert set(by_address) == {1, 2, 3}
    for sequences in by_address.values():  # each device numbers its own frames
        assert sequences == [n % 256 for n in range(len(sequences))]
    serials = {frame.fields["serial"] for frame in frames if frame.message == "identity"}
    assert len(serials) == 3


def test_baud_pacing_changes_when_bytes_leave_not_what_they_are(tmp_path: Path) -> None:
    arguments = ["--count", "40", "--seed", "5", *FAST]
    run("fwsim", "--output", tmp_path / "fast.bin", *arguments)
    paced = tmp_path / "paced.bin"
    started = time.monotonic()
    run("fwsim", "--output", paced, "--baud", "2400", *arguments)
    elapsed = time.monotonic() - started
    assert paced.read_bytes() == (tmp_path / "fast.bin").read_bytes()
    # 2400 baud is 240 bytes/s: the run cannot be quicker than that (it may be slower)
    assert elapsed >= paced.stat().st_size / 240 * 0.95


def test_realtime_writes_a_file_at_the_pace_of_the_device(tmp_path: Path) -> None:
    arguments = ["--count", "6", "--interval", "heartbeat=0.2", "--seed", "5"]
    arguments += [
        "--interval",
        "motion=off",
        "--interval",
        "environment=off",
        "--interval",
        "event=off",
    ]
    run("fwsim", "--output", tmp_path / "fast.bin", *arguments)
    paced = tmp_path / "paced.bin"
    started = time.monotonic()
    run("fwsim", "--output", paced, "--realtime", *arguments)
    elapsed = time.monotonic() - started
    assert paced.read_bytes() == (tmp_path / "fast.bin").read_bytes()
    # identity at boot, then five heartbeats 0.2 s apart: no quicker than 0.8 s
    assert elapsed >= 0.8


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--noise", "2"], "argument --noise: expected a probability from 0 to 1, got 2"),
        (["--stall", "5"], "argument --stall: expected EVERY:FOR, got '5'"),
        (["--stall", "1:2"], "argument --stall: expected 0 < duration < every"),
        (["--interval", "motion"], "argument --interval: expected MESSAGE=SECONDS"),
        (["--interval", "nothing=1"], "--interval: no telemetry message nothing in catalog"),
        (["--interval", "ping=1"], "--interval: no telemetry message ping in catalog"),
        (["--devices", "2"], "--devices 2 needs a profile with an address field"),
        (["--count", "0"], "argument --count: expected a positive number, got 0"),
        (["--duration", "0"], "argument --duration: expected a positive number of seconds, got 0"),
        (["--duration", "soon"], "argument --duration: expected seconds, got 'soon'"),
        (["--tcp", "nowhere"], "argument --tcp: expected HOST:PORT, got 'nowhere'"),
        (["--profile", "nope"], "nope: not a shipped profile"),
        (["--output", "/nonexistent/dir/x.bin"], "/nonexistent/dir/x.bin"),
        (["--truth", "/nonexistent/dir/t.jsonl", "--output", "-"], "/nonexistent/dir/t.jsonl"),
        (["--output", "-", "--tcp", "127.0.0.1:1"], "not allowed with argument"),
    ],
)
def test_bad_options_exit_2_with_one_line(arguments: list[str], message: str) -> None:
    result = run("fwsim", *arguments, "--count", "1", check=False)
    assert result.returncode == 2
    [line] = result.stderr.splitlines()
    assert line.startswith("fwsim: error: ")
    assert message in line


def test_help_explains_links_faults_and_truth() -> None:
    text = run("fwsim", "--help").stdout
    for option in ("--link", "--tcp", "--output", "--baud", "--seed", "--count", "--duration",
                   "--noise", "--garbage-burst", "--bit-flip", "--drop-byte", "--truncate",
                   "--bad-checksum", "--duplicate", "--stall", "--disconnect", "--truth",
                   "--devices", "--interval", "--profile", "--catalog"):  # fmt: skip
        assert option in text
    assert "ping" in text
    assert "set_rate" in text


def test_a_newcomer_watches_the_simulator_with_tgw_decode(tmp_path: Path) -> None:
    """`fwsim --link /tmp/ttyFW` in one terminal, `tgw decode /tmp/ttyFW` in another."""
    link, truth = tmp_path / "ttyFW", tmp_path / "truth.jsonl"
    with simulator("--link", link, "--count", "100", "--truth", truth, *FAST) as (process, _):
        result = run("tgw", "decode", link)
        assert process.wait() == 0
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert frame_records(lines) == frame_records(truth_frames(read_jsonl(truth)))
    temperatures = [r["fields"]["temperature"] for r in lines if r.get("message") == "environment"]
    assert all(15.0 < t < 27.0 for t in temperatures)
    assert "100 frames (0 unknown), errors: none" in result.stderr


def test_stdout_output_pipes_into_tgw_decode(tmp_path: Path) -> None:
    dump = subprocess.run(
        [str(BIN / "fwsim"), "--output", "-", "--count", "50", "--seed", "2"],
        capture_output=True,
        check=True,
        timeout=120,
    )
    assert dump.stderr.decode().startswith("fwsim: serving on stdout")
    decoded = subprocess.run(
        [str(BIN / "tgw"), "decode", "-"],
        input=dump.stdout,
        capture_output=True,
        check=True,
        timeout=120,
    )
    assert len(decoded.stdout.splitlines()) == 50
    assert b"50 frames (0 unknown), errors: none" in decoded.stderr


def test_one_fault_one_error(tmp_path: Path, default_schema: Schema) -> None:
    # Frames with a bad checksum and noise bursts between frames: each is one error
    # (the bad frame's bytes, hunted through again, are not garbage as well).
    dump, truth = tmp_path / "dump.bin", tmp_path / "truth.jsonl"
    run("fwsim", "--output", dump, "--duration", "300", "--truth", truth, "--seed", "9",
        "--bad-checksum", "0.05", "--garbage-burst", "0.05")  # fmt: skip
    records = read_jsonl(truth)
    bad = sum(1 for r in records if r["type"] == "frame" and r["fault"] == "bad_checksum")
    bursts = sum(1 for r in records if r["type"] == "fault" and r["kind"] == "garbage_burst")
    decoder = StreamDecoder(default_schema)
    decoder.feed(dump.read_bytes())
    decoder.finish()
    errors = decoder.statistics().errors
    assert bad > 10
    assert bursts > 10
    assert errors.get(ErrorKind.BAD_CHECKSUM) == bad
    # a burst right after a bad frame is garbage of its own; two bursts in a row are one run
    assert errors.get(ErrorKind.GARBAGE, 0) <= bursts
    assert sum(errors.values()) <= bad + bursts
