"""``tgw capture PORT``: record what a serial port sends into a capture file, as read."""

from __future__ import annotations

import argparse
import signal
import sys
import time
from pathlib import Path
from typing import Any, BinaryIO

from gateway.commands.options import add_baud_option
from gateway.ports import open_device, read_some
from protocol.arguments import add_schema_options
from protocol.capture import EXTENSION, CaptureHeader, RecordKind, file_header, record
from protocol.decoder import StreamDecoder
from protocol.errors import GatewayError, os_error_reason
from protocol.schema import load_schema
from protocol.version import __version__

__all__ = ["add_capture_command"]

READ_SIZE = 65536


class CaptureFileError(GatewayError):
    """The capture file cannot be written."""


def add_capture_command(commands: Any) -> None:
    """Register ``capture``."""
    parser = commands.add_parser(
        "capture",
        help="record a serial port into a capture file, with receive times",
        description="Put PORT in raw mode at --baud and write every read from it, with the "
        "time it was read, into a capture file, until the port hangs up (a USB adapter "
        "unplugged) or Ctrl-C. 'tgw decode', 'tgw replay' and 'tgw check' read the file "
        "back with the profile and catalog its header names. The bytes are decoded as they "
        "come, so the summary on stderr says whether the baud rate and profile look "
        "right. Exit status: 0 when the capture ends, 2 when it cannot start or write.",
    )
    parser.add_argument("port", metavar="PORT", help="the serial port or PTY, e.g. /dev/ttyUSB0")
    add_baud_option(parser)
    parser.add_argument(
        "-o",
        "--output",
        type=Path,
        metavar="FILE",
        help=f"the capture file to write (replaced if it exists); default: "
        f"DEVICE.START{EXTENSION} in the current folder, START the UTC time",
    )
    parser.add_argument(
        "--device",
        metavar="NAME",
        help="the device's name in the capture, under which 'tgw replay' publishes it; "
        "default: the port's file name, e.g. ttyUSB0",
    )
    add_schema_options(parser)
    parser.set_defaults(run=run_capture)


def run_capture(arguments: argparse.Namespace) -> int:
    """``tgw capture``: the port into the file until it hangs up or SIGINT/SIGTERM."""
    schema = load_schema(arguments.profile, arguments.catalog)
    device = arguments.device or Path(arguments.port).name
    started = time.time()
    path: Path = arguments.output or Path(f"{device}.{_stamp(started)}{EXTENSION}")
    header = CaptureHeader(
        source=device,
        profile=arguments.profile,
        catalog=arguments.catalog,
        where=arguments.port,
        created=started,
        gateway=__version__,
    )
    decoder = StreamDecoder(schema)
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # ends it as Ctrl-C does
    with open_device(arguments.port, baud=arguments.baud, terminal_only=True) as port:
        output = _open_output(path)
        try:
            _write(
                path,
                output,
                file_header(header) + record(RecordKind.OPENED, time.time_ns(), arguments.port),
            )
            print(f"tgw capture: {arguments.port} into {path}; Ctrl-C stops", file=sys.stderr)
            reads, size, why = _copy(port, path, output, decoder)
            _write(path, output, record(RecordKind.CLOSED, time.time_ns(), why))
        finally:
            output.close()
    decoder.finish()
    statistics = decoder.statistics()
    print(
        f"tgw capture: {arguments.port}: {size} bytes in {reads} reads into {path}, "
        f"{why}; they decode as {statistics.frames} frames and "
        f"{sum(statistics.errors.values())} errors with profile {arguments.profile!r}",
        file=sys.stderr,
    )
    return 0


def _copy(
    port: BinaryIO, path: Path, output: BinaryIO, decoder: StreamDecoder
) -> tuple[int, int, str]:
    """Copy reads into records until the end; return (reads, bytes, why it ended)."""
    reads = size = 0
    try:
        while data := read_some(port, READ_SIZE, terminal=True):
            _write(path, output, record(RecordKind.DATA, time.time_ns(), data))
            decoder.feed(data)
            reads += 1
            size += len(data)
    except KeyboardInterrupt:
        return reads, size, "stopped"
    except OSError as exc:
        return reads, size, f"cannot read: {os_error_reason(exc)}"
    return reads, size, "the port hung up"


def _open_output(path: Path) -> BinaryIO:
    try:
        return open(path, "wb")
    except OSError as exc:
        raise CaptureFileError(f"{path}: cannot write: {os_error_reason(exc)}") from exc


def _write(path: Path, output: BinaryIO, data: bytes) -> None:
    """Write and flush, so that a capture killed at any moment holds every read before."""
    try:
        output.write(data)
        output.flush()
    except OSError as exc:
        raise CaptureFileError(f"{path}: cannot write: {os_error_reason(exc)}") from exc


def _stamp(moment: float) -> str:
    """``20260102T030405123Z``: UTC, to the millisecond, as the gateway names its captures."""
    return time.strftime("%Y%m%dT%H%M%S", time.gmtime(moment)) + f"{int(moment * 1000) % 1000:03d}Z"
