"""``tgw capture PORT``: a real PTY, left cooked, recorded into a capture that ``tgw decode``
reads back with receive times."""

from __future__ import annotations

import json
import signal
import subprocess
import termios
import time
from pathlib import Path

from protocol.capture import CaptureParser, CaptureRecord, RecordKind
from protocol.schema import Schema
from tests.fwsim.helpers import GUARD, TGW, run, wait_for
from tests.gateway.test_ports import control_frames, cooked_pty, wait_until_raw


def parse(path: Path) -> tuple[CaptureParser, list[CaptureRecord]]:
    parser = CaptureParser()
    records = parser.feed(path.read_bytes())
    return parser, records


def captured(path: Path) -> bytes:
    if not path.exists():
        return b""
    _, records = parse(path)
    return b"".join(r.data for r in records if r.kind is RecordKind.DATA)


def simulated_dump(tmp_path: Path) -> bytes:
    dump = tmp_path / "fwsim.bin"
    run("fwsim", "--output", dump, "--count", "60", "--seed", "7", "--noise", "0.1")
    return dump.read_bytes()


def test_capture_records_every_read_with_its_time_until_the_port_hangs_up(
    tmp_path: Path, default_schema: Schema
) -> None:
    pieces = [simulated_dump(tmp_path), control_frames(default_schema)]
    data = b"".join(pieces)
    output = tmp_path / "dump.tgwcap"
    with cooked_pty() as pty:
        process = subprocess.Popen(
            [
                str(TGW),
                "capture",
                pty.path,
                "--baud",
                "9600",
                "-o",
                str(output),
                "--device",
                "bench",
            ],
            stderr=subprocess.PIPE,
            text=True,
        )
        attributes = wait_until_raw(pty.path)
        before = time.time()
        for piece in pieces:
            pty.send(piece)
        wait_for(lambda: captured(output) == data, "every byte to be captured")
        after = time.time()
        pty.hang_up()
        _, stderr = process.communicate(timeout=GUARD)
    assert process.returncode == 0, stderr
    assert attributes[4] == attributes[5] == termios.B9600
    parser, records = parse(output)
    assert parser.finish() is None
    assert parser.header is not None
    assert (parser.header.source, parser.header.where) == ("bench", pty.path)
    assert (parser.header.profile, parser.header.catalog) == ("default", "default")
    kinds = [r.kind for r in records]
    assert kinds[0] is RecordKind.OPENED
    assert kinds[-1] is RecordKind.CLOSED
    assert records[-1].text == "the port hung up"
    assert set(kinds[1:-1]) == {RecordKind.DATA}
    assert captured(output) == data  # every byte, CR, LF, Ctrl-C and XON/XOFF included
    times = [r.time for r in records[1:-1]]
    assert times == sorted(times)
    assert before <= times[0]
    assert times[-1] <= after
    decoded = [json.loads(line) for line in run("tgw", "decode", output).stdout.splitlines()]
    frames = [r for r in decoded if r["type"] == "frame"]
    assert len(frames) == 63
    assert all(before <= r["time"] <= after for r in decoded)
    assert "63 frames and " in stderr


def test_ctrl_c_ends_a_capture_that_decodes_and_is_named_after_the_device(
    tmp_path: Path, default_schema: Schema
) -> None:
    data = control_frames(default_schema)
    with cooked_pty() as pty:
        process = subprocess.Popen(
            [str(TGW), "capture", pty.path, "--device", "bench"],
            cwd=tmp_path,
            stderr=subprocess.PIPE,
            text=True,
        )
        wait_until_raw(pty.path)
        pty.send(data)
        wait_for(lambda: any(captured(p) == data for p in tmp_path.iterdir()), "the capture")
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=GUARD)
    assert process.returncode == 0, stderr
    [output] = tmp_path.iterdir()
    assert output.name.startswith("bench.")
    assert output.name.endswith("Z.tgwcap")
    _, records = parse(output)
    assert records[-1].kind is RecordKind.CLOSED
    assert records[-1].text == "stopped"
    assert "3 frames and 0 errors" in stderr
    assert len(run("tgw", "decode", output).stdout.splitlines()) == 3


def test_capture_needs_a_terminal_and_a_profile_that_loads(tmp_path: Path) -> None:
    plain = tmp_path / "plain.bin"
    plain.write_bytes(b"")
    for arguments, message in (
        ([str(plain)], f"tgw: error: {plain}: not a serial port or terminal"),
        (["/dev/zero"], "tgw: error: /dev/zero: not a serial port or terminal"),
        (["/dev/zero", "--profile", "nope"], "nope: not a shipped profile"),
    ):
        result = run("tgw", "capture", *arguments, "-o", tmp_path / "x.tgwcap", check=False)
        assert result.returncode == 2, result.stderr
        [line] = result.stderr.splitlines()
        assert line.startswith(message) if message.startswith("tgw") else message in line


def test_an_unwritable_output_is_one_line() -> None:
    with cooked_pty() as pty:
        result = run("tgw", "capture", pty.path, "-o", "/nonexistent/x.tgwcap", check=False)
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "tgw: error: /nonexistent/x.tgwcap: cannot write: no such file or directory"
    )


def test_the_profile_and_catalog_given_are_written_in_the_header(tmp_path: Path) -> None:
    output = tmp_path / "crc.tgwcap"
    with cooked_pty() as pty:
        process = subprocess.Popen(
            [
                str(TGW),
                "capture",
                pty.path,
                "-o",
                str(output),
                "--profile",
                "addressed-crc16",
                "--catalog",
                "default",
            ],
            stderr=subprocess.PIPE,
            text=True,
        )
        wait_until_raw(pty.path)
        pty.hang_up()
        _, stderr = process.communicate(timeout=GUARD)
    assert process.returncode == 0, stderr
    parser, _ = parse(output)
    assert parser.header is not None
    assert (parser.header.profile, parser.header.catalog) == ("addressed-crc16", "default")
    assert parser.header.source == Path(pty.path).name
    assert "0 bytes in 0 reads" in stderr
    assert "with profile 'addressed-crc16'" in stderr
