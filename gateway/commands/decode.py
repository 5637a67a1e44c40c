"""``tgw decode``: decode a dump into JSON lines, one per frame or error."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from gateway.commands.progress import progress
from gateway.dumps import Dump, DumpFormat, InputError, decode_dump, open_dump
from protocol.config import DEFAULT_CATALOG, DEFAULT_PROFILE, shipped_names
from protocol.decoder import StreamDecoder
from protocol.errors import GatewayError, os_error_reason
from protocol.events import DecoderStatistics
from protocol.records import dumps
from protocol.schema import Schema, load_schema

__all__ = [
    "InputError",
    "OutputError",
    "add_decode_command",
    "add_input_options",
    "add_schema_options",
    "check_schema_options",
    "schema_for",
    "summary_line",
]


class OutputError(GatewayError):
    """The decoded output cannot be written."""


def add_decode_command(commands: Any) -> None:
    """Register ``decode`` on the subparsers object ``commands``."""
    parser = commands.add_parser(
        "decode",
        help="decode a dump into JSON lines",
        description="Decode a dump and write one JSON object per line to stdout for every "
        "frame and every error, then a summary to stderr. The dump is a capture of 'tgw "
        "run', a raw byte dump (what 'cat /dev/ttyUSB0 > dump.bin' records; a serial port "
        "or PTY is read live), or hex text as terminals, xxd, hexdump -C, od and logic "
        "analysers print it: the form is recognised. Errors in the data are reported, not "
        "fatal: the exit status is 0 unless the command itself cannot run (2).",
    )
    parser.add_argument("file", metavar="FILE", help="the dump to decode, or - for stdin")
    add_input_options(parser)
    parser.set_defaults(run=run_decode)


def add_schema_options(parser: argparse.ArgumentParser) -> None:
    """Add ``--profile`` and ``--catalog``, defaulting to the shipped defaults, to ``parser``."""
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


def add_input_options(parser: argparse.ArgumentParser) -> None:
    """Add ``--profile``, ``--catalog`` and ``--input-format`` to ``parser``."""
    parser.add_argument(
        "--profile",
        help=f"frame profile: a TOML file or a shipped name "
        f"({', '.join(shipped_names('profiles'))}); default: the one a capture names, "
        f"else {DEFAULT_PROFILE}",
    )
    parser.add_argument(
        "--catalog",
        help=f"message catalog: a TOML file or a shipped name "
        f"({', '.join(shipped_names('catalogs'))}); default: the one a capture names, "
        f"else {DEFAULT_CATALOG}",
    )
    parser.add_argument(
        "--input-format",
        choices=[form.value for form in DumpFormat],
        default=DumpFormat.AUTO.value,
        help="the dump's form: a tgw capture, raw bytes, or hex text; default: recognised "
        "from its first bytes",
    )


def check_schema_options(arguments: argparse.Namespace) -> None:
    """Load ``--profile`` and ``--catalog`` when given, so a mistake in them is reported
    before any input is opened."""
    if arguments.profile or arguments.catalog:
        load_schema(arguments.profile or DEFAULT_PROFILE, arguments.catalog or DEFAULT_CATALOG)


def schema_for(dump: Dump, profile: str | None, catalog: str | None) -> Schema:
    """The schema to decode ``dump`` with: the options', else its capture header's, else
    the defaults. Raise a GatewayError naming the dump when a capture's own fails."""
    header = dump.header
    chosen_profile = profile or (header.profile if header else DEFAULT_PROFILE)
    chosen_catalog = catalog or (header.catalog if header else DEFAULT_CATALOG)
    try:
        return load_schema(chosen_profile, chosen_catalog)
    except GatewayError as exc:
        if header is None or (profile and catalog):
            raise
        raise InputError(
            f"{dump.name}: the capture's profile {header.profile!r} and catalog "
            f"{header.catalog!r} do not load here ({exc}); name them with --profile and --catalog"
        ) from exc


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
    if sys.stdout is None:
        raise OutputError("stdout is closed: nowhere to write the decoded frames")
    output = sys.stdout.buffer
    check_schema_options(arguments)
    with open_dump(arguments.file, DumpFormat(arguments.input_format)) as dump:
        decoder = StreamDecoder(schema_for(dump, arguments.profile, arguments.catalog))
        name = "stdin" if arguments.file == "-" else arguments.file
        try:
            with progress(f"decoding {name}", dump.size) as bar:
                for records in decode_dump(dump, decoder):
                    output.write(b"".join(dumps(record) for record in records))
                    bar.update(dump.consumed, decoder.statistics().frames)
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
    return 0
