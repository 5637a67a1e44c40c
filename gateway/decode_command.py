"""``tgw decode``: decode a raw byte dump into JSON lines, one per frame or error."""

from __future__ import annotations

import argparse
import errno
import io
import os
import sys
from typing import Any, cast

from gateway.records import dumps, event_record
from protocol.config import DEFAULT_CATALOG, DEFAULT_PROFILE, shipped_names
from protocol.decoder import StreamDecoder
from protocol.errors import GatewayError, os_error_reason
from protocol.events import DecoderStatistics
from protocol.schema import load_schema

__all__ = ["InputError", "OutputError", "add_decode_command", "summary_line"]

READ_SIZE = 65536


class InputError(GatewayError):
    """An input file cannot be opened or read."""


class OutputError(GatewayError):
    """The decoded output cannot be written."""


def add_decode_command(commands: Any) -> None:
    """Register ``decode`` on the subparsers object ``commands``."""
    parser = commands.add_parser(
        "decode",
        help="decode a raw byte dump into JSON lines",
        description="Decode a raw byte dump (what 'cat /dev/ttyUSB0 > dump.bin' records) "
        "and write one JSON object per line to stdout for every frame and every error, "
        "then a summary to stderr. Errors in the data are reported, not fatal: the exit "
        "status is 0 unless the command itself cannot run (2).",
    )
    parser.add_argument("file", metavar="FILE", help="the dump to decode, or - for stdin")
    add_schema_options(parser)
    parser.set_defaults(run=run_decode)


def add_schema_options(parser: argparse.ArgumentParser) -> None:
    """Add ``--profile`` and ``--catalog`` to ``parser``."""
    parser.add_argument(
        "--profile",
        default=DEFAULT_PROFILE,
        help=f"frame profile: a TOML file or a shipped name "
        f"({', '.join(shipped_names('profiles'))}); default: %(default)s",
    )
    parser.add_argument(
        "--catalog",
        default=DEFAULT_CATALOG,
        help=f"message catalog: a TOML file or a shipped name "
        f"({', '.join(shipped_names('catalogs'))}); default: %(default)s",
    )


def _open_input(name: str) -> io.BufferedReader:
    if name == "-":
        return cast(io.BufferedReader, sys.stdin.buffer)
    try:
        return open(name, "rb")
    except OSError as exc:
        raise InputError(f"{name}: cannot open: {os_error_reason(exc)}") from exc


def summary_line(name: str, statistics: DecoderStatistics) -> str:
    """Return a one-line human summary of a decode."""
    errors = ", ".join(f"{kind.value} {count}" for kind, count in sorted(statistics.errors.items()))
    return (
        f"{name}: {statistics.bytes_fed} bytes, {statistics.frames} frames "
        f"({statistics.unknown_frames} unknown), errors: {errors or 'none'}; "
        f"{statistics.bytes_skipped} bytes skipped"
    )


def _discard_stdout() -> None:
    """Point stdout at /dev/null so the interpreter's final flush cannot fail again."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


def run_decode(arguments: argparse.Namespace) -> int:
    """Decode ``arguments.file``; return 0 (data errors are reported, not fatal)."""
    decoder = StreamDecoder(load_schema(arguments.profile, arguments.catalog))
    if sys.stdout is None:
        raise OutputError("stdout is closed: nowhere to write the decoded frames")
    output = sys.stdout.buffer
    with _open_input(arguments.file) as source:
        is_tty = source.isatty()  # asked now: after a hang-up the answer is no longer true
        try:
            while chunk := _read(source, arguments.file, is_tty=is_tty):
                output.write(b"".join(dumps(event_record(event)) for event in decoder.feed(chunk)))
            output.write(b"".join(dumps(event_record(event)) for event in decoder.finish()))
            output.flush()
        except BrokenPipeError:
            # The reader went away (e.g. `tgw decode dump | head`): stop quietly.
            _discard_stdout()
            return 0
        except OSError as exc:
            _discard_stdout()
            raise OutputError(f"cannot write to stdout: {os_error_reason(exc)}") from exc
    name = "stdin" if arguments.file == "-" else arguments.file
    print(f"tgw decode: {summary_line(name, decoder.statistics())}", file=sys.stderr)
    return 0


def _read(source: io.BufferedReader, name: str, *, is_tty: bool) -> bytes:
    """Return what is available (at most READ_SIZE bytes; b"" at the end of input).

    A serial port or PTY (``tgw decode /dev/ttyUSB0``) gives what has arrived without
    waiting for a full block, and its hang-up (EIO) is the end of input.
    """
    try:
        return source.read1(READ_SIZE)
    except OSError as exc:
        if exc.errno == errno.EIO and is_tty:
            return b""
        raise InputError(f"{name}: cannot read: {os_error_reason(exc)}") from exc
