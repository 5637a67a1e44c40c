"""The ``tgw`` command line."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from gateway.commands.capture import add_capture_command
from gateway.commands.check import add_check_command
from gateway.commands.decode import add_decode_command
from gateway.commands.options import EXIT_INTERRUPTED
from gateway.commands.replay import add_replay_command
from gateway.commands.run import add_demo_command, add_run_command
from protocol.arguments import EXIT_USAGE, OneLineParser, add_version_option
from protocol.errors import GatewayError

__all__ = ["main"]


def build_parser() -> OneLineParser:
    """Return the parser for ``tgw`` and its subcommands."""
    parser = OneLineParser(
        prog="tgw",
        description="Telemetry gateway: decode binary frames from microcontrollers "
        "and relay them. Run 'tgw COMMAND --help' for a command's options.",
    )
    add_version_option(parser)
    commands = parser.add_subparsers(title="commands", metavar="COMMAND")
    add_decode_command(commands)
    add_capture_command(commands)
    add_run_command(commands)
    add_demo_command(commands)
    add_replay_command(commands)
    add_check_command(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``tgw`` with ``argv`` (default: the process arguments); return the exit status.

    Without a command, print the help on stdout: asking what ``tgw`` does is no mistake.
    """
    parser = build_parser()
    arguments = parser.parse_args(argv)
    if not hasattr(arguments, "run"):
        parser.print_help()
        return 0
    try:
        status: int = arguments.run(arguments)
    except GatewayError as exc:
        print(f"tgw: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except BaseExceptionGroup as group:  # from a TaskGroup: report ours in one line each
        matched, rest = group.split(GatewayError)
        if matched is None or rest is not None:
            raise
        for error in _leaves(matched):
            print(f"tgw: error: {error}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    return status


def _leaves(group: BaseExceptionGroup[GatewayError]) -> list[BaseException]:
    found: list[BaseException] = []
    for exc in group.exceptions:
        found.extend(_leaves(exc) if isinstance(exc, BaseExceptionGroup) else [exc])
    return found


if __name__ == "__main__":
    sys.exit(main())
