"""Command-line pieces shared by ``tgw`` and ``fwsim``: one-line usage errors,
``--version``, the ``--profile``/``--catalog`` options that choose a schema, and
argument types (``HOST:PORT``, positive numbers).

argparse does no I/O until a parser prints, so this stays below the programs that use it.
"""

from __future__ import annotations

import argparse
import sys
from typing import NoReturn

from protocol.config import DEFAULT_CATALOG, DEFAULT_PROFILE, shipped_names
from protocol.version import __version__

__all__ = [
    "EXIT_USAGE",
    "OneLineParser",
    "add_schema_options",
    "add_version_option",
    "host_port",
    "positive_int",
]

EXIT_USAGE = 2


class OneLineParser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose usage errors are one line on stderr, exit status 2."""

    def error(self, message: str) -> NoReturn:
        """Print ``PROG: error: MESSAGE (see 'PROG --help')`` and exit 2."""
        print(f"{self.prog}: error: {message} (see '{self.prog} --help')", file=sys.stderr)
        sys.exit(EXIT_USAGE)


def host_port(text: str) -> tuple[str, int]:
    """An argparse ``type``: ``HOST:PORT`` (the host may hold colons, as IPv6 does) as a pair."""
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit() or int(port) > 65535:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {text!r}")
    return host, int(port)


def positive_int(text: str) -> int:
    """An argparse ``type``: a whole number above 0."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {value}")
    return value


def add_version_option(parser: argparse.ArgumentParser) -> None:
    """Add ``--version``: print ``PROG VERSION`` (the distribution's) and exit 0."""
    parser.add_argument(
        "--version",
        action="version",
        version=f"%(prog)s {__version__}",
        help="print the version and exit",
    )


def add_schema_options(
    parser: argparse.ArgumentParser | argparse._ArgumentGroup, *, from_capture: bool = False
) -> None:
    """Add ``--profile`` and ``--catalog`` (a shipped name or a TOML file) to ``parser``.

    They default to the shipped defaults; with ``from_capture``, to None, which the caller
    reads as "the one the capture names, else the default".
    """
    for option, kind, default in (
        ("--profile", "profiles", DEFAULT_PROFILE),
        ("--catalog", "catalogs", DEFAULT_CATALOG),
    ):
        what = "frame profile" if kind == "profiles" else "message catalog"
        fallback = f"the one a capture names, else {default}" if from_capture else default
        parser.add_argument(
            option,
            default=None if from_capture else default,
            metavar="NAME|FILE.toml",
            help=f"{what}: a shipped name ({', '.join(shipped_names(kind))}) or a TOML file; "
            f"default: {fallback}",
        )
