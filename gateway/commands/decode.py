"""``tgw decode``: decode a dump into JSON lines, one per frame or error."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from gateway.commands.options import (
    EXIT_INTERRUPTED,
    add_baud_option,
    add_input_options,
    check_schema_options,
    schema_for,
)
from gateway.commands.progress import progress
from gateway.dumps import DumpFormat, decode_dump, open_dump
from protocol.decoder import StreamDecoder
from protocol.errors import GatewayError, os_error_reason
from protocol.events import DecoderStatistics
from protocol.records import dumps

__all__ = ["OutputError", "add_decode_command", "summary_line"]


class OutputError(GatewayError):
    """The decoded output cannot be written."""


def add_decode_command(commands: Any) -> None:
    """Register ``decode`` on the subparsers object ``commands``."""
    parser = commands.add_parser(
        "decode",
        help="decode a dump, a capture or a live port into JSON lines",
        description="Decode a dump and write one JSON object per line to stdout for every "
        "frame and every error, then a summary to stderr. FILE is a capture (of 'tgw run "
        "--capture' or 'tgw capture'), a raw byte dump, hex text as terminals, xxd, "
        "hexdump -C, od and logic analysers print it (the form is recognised), or a serial "
        "port or PTY, read live in raw mode at --baud until it hangs up or Ctrl-C. Errors "
        "in the data are reported, not fatal: the exit status is 0 unless the command "
        "itself cannot run (2) or is interrupted (130, after the summary so far).",
    )
    parser.add_argument(
        "file", metavar="FILE", help="the dump, capture or port to decode, or - for stdin"
    )
    add_input_options(parser)
    add_baud_option(parser)
    parser.set_defaults(run=run_decode)


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
    """Decode ``arguments.file``; return 0 (data errors are reported, not fatal), or 130
    when interrupted."""
    if sys.stdout is None:
        raise OutputError("stdout is closed: nowhere to write the decoded frames")
    output = sys.stdout.buffer
    check_schema_options(arguments)
    interrupted = False
    name = "stdin" if arguments.file == "-" else arguments.file
    form = DumpFormat(arguments.input_format)
    with open_dump(arguments.file, form, baud=arguments.baud) as dump:
        decoder = StreamDecoder(schema_for(dump, arguments.profile, arguments.catalog))
        try:
            with progress(f"decoding {name}", dump.size, output=output) as bar:
                try:
                    for records in decode_dump(dump, decoder):
                        output.write(b"".join(dumps(record) for record in records))
                        bar.update(dump.consumed, decoder.statistics().frames)
                except KeyboardInterrupt:
                    interrupted = True
            output.flush()
        except BrokenPipeError:
            # The reader went away (e.g. `tgw decode dump | head`): stop quietly.
            _discard_stdout()
            return 0
        except OSError as exc:
            _discard_stdout()
            raise OutputError(f"cannot write to stdout: {os_error_reason(exc)}") from exc
    print(f"tgw decode: {summary_line(name, decoder.statistics())}", file=sys.stderr)
    if dump.truncation is not None:
        print(f"tgw decode: {name}: {dump.truncation.describe()}", file=sys.stderr)
    if interrupted:
        print("tgw decode: interrupted: the summary counts what was read so far", file=sys.stderr)
        return EXIT_INTERRUPTED
    return 0
