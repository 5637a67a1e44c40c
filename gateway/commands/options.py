"""Options and their checks shared by the ``tgw`` commands, so each is written once.

The one-line usage errors, ``--version`` and ``--profile``/``--catalog`` themselves are
shared with ``fwsim`` and live in :mod:`protocol.arguments`.
"""

from __future__ import annotations

import argparse

from gateway.dumps import Dump, DumpFormat, InputError
from gateway.ports import DEFAULT_BAUD
from protocol.arguments import add_schema_options, host_port, positive_int
from protocol.config import DEFAULT_CATALOG, DEFAULT_PROFILE
from protocol.errors import GatewayError
from protocol.schema import Schema, load_schema

__all__ = [
    "EXIT_INTERRUPTED",
    "add_baud_option",
    "add_input_options",
    "add_mqtt_option",
    "add_port_option",
    "check_schema_options",
    "schema_for",
]

EXIT_INTERRUPTED = 130
"""Exit status after Ctrl-C (128 + SIGINT), as shells report it."""


def add_input_options(parser: argparse.ArgumentParser) -> None:
    """Add ``--profile``, ``--catalog`` (default: a capture's own) and ``--input-format``."""
    add_schema_options(parser, from_capture=True)
    parser.add_argument(
        "--input-format",
        choices=[form.value for form in DumpFormat],
        default=DumpFormat.AUTO.value,
        help="the dump's form: a tgw capture, raw bytes, or hex text; default: recognised "
        "from its first bytes",
    )


def add_baud_option(parser: argparse.ArgumentParser) -> None:
    """Add ``--baud N``, the rate a serial port is set to (:mod:`gateway.ports`)."""
    parser.add_argument(
        "--baud",
        type=positive_int,
        default=DEFAULT_BAUD,
        metavar="N",
        help="for a serial port or PTY: its baud rate, a standard one; the port is put in "
        "raw mode (8 data bits, no parity, nothing translated) at this rate; "
        "default: %(default)s",
    )


def add_mqtt_option(
    parser: argparse.ArgumentParser, *, default: str | None, help_text: str
) -> None:
    """Add ``--mqtt HOST:PORT``, parsed into a (host, port) pair."""
    parser.add_argument(
        "--mqtt", type=host_port, default=default, metavar="HOST:PORT", help=help_text
    )


def add_port_option(parser: argparse.ArgumentParser, *, default: int | None, what: str) -> None:
    """Add ``--port N``, the WebSocket and HTTP port (0 to 65535, 0: any free one, which the
    log names); ``what`` ends its help."""
    parser.add_argument(
        "--port",
        type=_port_number,
        default=default,
        metavar="N",
        help=f"WebSocket and HTTP port (0: any free one, named in the log); {what}",
    )


def _port_number(text: str) -> int:
    if not text.isdigit() or int(text) > 65535:
        raise argparse.ArgumentTypeError(f"expected a TCP port from 0 to 65535, got {text!r}")
    return int(text)


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
