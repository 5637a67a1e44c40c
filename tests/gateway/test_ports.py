"""Serial ports read live: ``tgw decode PORT`` on a real PTY whose slave starts, as a
USB serial adapter does, in the default (cooked) line discipline."""

from __future__ import annotations

import json
import os
import select
import subprocess
import termios
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from gateway.ports import PortError, open_device
from protocol.encoder import FrameEncoder
from protocol.schema import Schema
from tests.fwsim.helpers import GUARD, TGW, run, wait_for

CONTROL_BYTES = {0x03, 0x04, 0x0A, 0x0D, 0x11, 0x13, 0x15, 0x7F}
"""Bytes a cooked line discipline acts on: Ctrl-C, Ctrl-D, LF, CR, XON, XOFF, Ctrl-U, DEL."""


def control_frames(schema: Schema) -> bytes:
    """Frames whose payloads hold every byte of CONTROL_BYTES."""
    encoder = FrameEncoder(schema)
    data = b"".join(
        encoder.encode("power", {"battery": battery, "current": current, "charge": charge})
        for battery, current, charge in (
            (0x0A0D, 0x1303, 0x11),  # LF CR, ETX XOFF, XON
            (0x7F04, 0x0D15, 0x0A),  # EOT DEL, NAK CR, LF
            (0x0D0A, 0x0A0D, 0x03),
        )
    )
    assert set(data) >= CONTROL_BYTES
    return data


class CookedPty:
    """A PTY left as it is made (cooked, echo on), as a USB serial adapter starts."""

    def __init__(self) -> None:
        self._controller, self._device = os.openpty()
        assert termios.tcgetattr(self._device)[3] & termios.ICANON
        self.path = os.ttyname(self._device)
        self._open = True

    def send(self, data: bytes) -> None:
        """Write ``data`` as the device would send it."""
        os.write(self._controller, data)

    def hang_up(self) -> None:
        """Close the controller side: readers of the port see it hang up."""
        if self._open:
            os.close(self._controller)
            self._open = False

    def close(self) -> None:
        self.hang_up()
        os.close(self._device)


@contextmanager
def cooked_pty() -> Iterator[CookedPty]:
    pty = CookedPty()
    try:
        yield pty
    finally:
        pty.close()


def wait_until_raw(path: str) -> list[int]:
    """Wait until someone puts the terminal ``path`` in raw mode; return its attributes."""
    descriptor = os.open(path, os.O_RDONLY | os.O_NOCTTY | os.O_NONBLOCK)
    try:
        wait_for(
            lambda: not termios.tcgetattr(descriptor)[3] & termios.ICANON,
            f"{path} to be put in raw mode",
        )
        return termios.tcgetattr(descriptor)
    finally:
        os.close(descriptor)


def read_lines(stream: int, count: int) -> list[str]:
    """Read ``count`` lines from the pipe ``stream``, failing after the guard."""
    data = b""
    deadline = time.monotonic() + GUARD
    while data.count(b"\n") < count:
        assert time.monotonic() < deadline, f"gave up waiting for {count} lines: {data!r}"
        if select.select([stream], [], [], 0.1)[0]:
            chunk = os.read(stream, 65536)
            assert chunk, f"the output ended after {data!r}"
            data += chunk
    return data.decode().splitlines()


def test_decode_puts_a_cooked_port_in_raw_mode_and_loses_no_byte(default_schema: Schema) -> None:
    data = control_frames(default_schema)
    with cooked_pty() as pty:
        process = subprocess.Popen(
            [str(TGW), "decode", pty.path, "--baud", "9600"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert process.stdout is not None
        attributes = wait_until_raw(pty.path)
        assert attributes[4] == attributes[5] == termios.B9600
        assert not attributes[0] & (termios.ICRNL | termios.IXON)  # CR and XON/XOFF kept
        pty.send(data)
        lines = read_lines(process.stdout.fileno(), 3)
        pty.hang_up()  # the port hangs up: the decode ends
        _, stderr = process.communicate(timeout=GUARD)
    records = [json.loads(line) for line in lines]
    assert [r["type"] for r in records] == ["frame"] * 3
    assert bytes.fromhex("".join(r["raw"] for r in records)) == data
    assert process.returncode == 0, stderr
    assert f"{len(data)} bytes, 3 frames (0 unknown), errors: none" in stderr


def test_decode_sets_115200_baud_by_default(default_schema: Schema) -> None:
    with cooked_pty() as pty:
        process = subprocess.Popen(
            [str(TGW), "decode", pty.path], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        attributes = wait_until_raw(pty.path)
        pty.hang_up()
        process.communicate(timeout=GUARD)
    assert attributes[4] == attributes[5] == termios.B115200
    assert process.returncode == 0


def test_a_rate_termios_cannot_set_is_one_line_and_exit_2() -> None:
    with cooked_pty() as pty:
        result = run("tgw", "decode", pty.path, "--baud", "250000", check=False)
    assert result.returncode == 2
    assert result.stderr.strip() == (
        f"tgw: error: {pty.path}: cannot set 250000 baud: not a standard rate (such as 9600, "
        "115200 or 921600)"
    )


def test_a_device_that_is_no_terminal_is_read_as_it_is_unless_a_terminal_is_needed() -> None:
    with open_device("/dev/zero", baud=115200) as file:
        assert file.read(4) == bytes(4)
    with pytest.raises(PortError, match=r"^/dev/zero: not a serial port or terminal$"):
        open_device("/dev/zero", baud=115200, terminal_only=True)
    with pytest.raises(PortError, match=r"^/dev/nonexistent: cannot open: no such file"):
        open_device("/dev/nonexistent", baud=115200)


def test_a_file_ignores_baud(tmp_path: Path, default_schema: Schema) -> None:
    dump = tmp_path / "dump.bin"
    dump.write_bytes(control_frames(default_schema))
    result = run("tgw", "decode", dump, "--baud", "9600")
    assert len(result.stdout.splitlines()) == 3
