"""The ``fwsim`` command line: a stand-in microcontroller for gateways and tests."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

from fwsim.device import DEFAULT_INTERVALS, SimulatedDevice
from fwsim.faults import FaultRates, Schedule
from fwsim.links import DataCallback, FileLink, Link, PtyLink, TcpLink
from fwsim.simulator import RunOptions, RunSummary, Simulator
from fwsim.truth import TruthWriter
from protocol.arguments import (
    EXIT_USAGE,
    OneLineParser,
    add_schema_options,
    add_version_option,
    host_port,
    positive_int,
)
from protocol.catalog import Direction
from protocol.errors import GatewayError, os_error_reason
from protocol.profile import HeaderRole
from protocol.schema import Schema, load_schema

__all__ = ["main"]

DESCRIPTION = """\
A simulated microcontroller: sends the telemetry of a message catalog, framed as a
profile says, from sensor models (temperature drifting with noise, humidity,
pressure, a draining battery, uptime, a three-axis accelerometer), with a periodic
heartbeat and occasional events. It answers commands: ping with pong,
set_rate with ack (and really changes the rate), anything else with nack.

Links: a PTY (the default; its path is printed, and --link keeps a stable symlink to
it, like a udev by-id name), a TCP server as ser2net would offer (--tcp), or a file
or stdout (--output) for dumps that CI replays. PTY and TCP run in real time; a file
is written as fast as possible in simulated time unless --realtime or --baud is given.

Faults: per-frame probabilities (--noise ... --duplicate) and recurring windows of
silence or disconnection (--stall, --disconnect EVERY:FOR, in seconds). --truth
writes one JSON line per frame and fault, with where its bytes landed.

SIGINT and SIGTERM stop it at once. SIGUSR1 ends the run as --count or --duration
would: once the reader has taken what was sent (a PTY that closes loses the rest).
"""


def _probability(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a probability, got {text!r}") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a probability from 0 to 1, got {text}")
    return value


def _schedule(text: str) -> Schedule:
    every, _, duration = text.partition(":")
    try:
        return Schedule(float(every), float(duration))
    except ValueError as exc:
        message = str(exc) if "expected" in str(exc) else f"expected EVERY:FOR, got {text!r}"
        raise argparse.ArgumentTypeError(message) from None


def _duration(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seconds, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a positive number of seconds, got {text}")
    return value


def _interval(text: str) -> tuple[str, float | None]:
    name, separator, seconds = text.partition("=")
    if not separator:
        raise argparse.ArgumentTypeError(f"expected MESSAGE=SECONDS, got {text!r}")
    if seconds == "off":
        return name, None
    try:
        value = float(seconds)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seconds or 'off', got {seconds!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive interval, got {seconds}")
    return name, value


def build_parser() -> OneLineParser:
    """Return the ``fwsim`` argument parser."""
    parser = OneLineParser(
        prog="fwsim",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_version_option(parser)
    add_schema_options(parser)
    run = parser.add_argument_group("what to send")
    run.add_argument(
        "--seed",
        type=int,
        default=1,
        metavar="N",
        help="random seed: the same seed and options send the same bytes (default: %(default)s)",
    )
    run.add_argument("--count", type=positive_int, metavar="N", help="stop after N frames")
    run.add_argument(
        "--duration",
        type=_duration,
        metavar="SECONDS",
        help="stop after this many seconds (of simulated time for --output)",
    )
    run.add_argument(
        "--devices",
        type=positive_int,
        default=1,
        metavar="N",
        help="N devices on the link, addressed 1..N (needs a profile with an address field)",
    )
    intervals = ", ".join(f"{name} {seconds:g}" for name, seconds in DEFAULT_INTERVALS.items())
    run.add_argument(
        "--interval",
        type=_interval,
        action="append",
        default=[],
        metavar="MESSAGE=SECONDS",
        help=f"seconds between messages, or 'off' (defaults: {intervals} (at boot); "
        "other telemetry 1)",
    )
    links = parser.add_argument_group("where to send it (one of)")
    where = links.add_mutually_exclusive_group()
    where.add_argument(
        "--link", type=Path, metavar="PATH", help="a PTY, with a stable symlink to it at PATH"
    )
    where.add_argument(
        "--tcp",
        type=host_port,
        metavar="HOST:PORT",
        help="a TCP server, as ser2net offers a serial port (port 0: any free one, printed)",
    )
    where.add_argument("--output", metavar="FILE", help="a dump file, or - for stdout")
    links.add_argument(
        "--baud",
        type=positive_int,
        metavar="N",
        help="pace bytes as a UART at N baud would (8N1: N / 10 bytes per second)",
    )
    links.add_argument(
        "--realtime", action="store_true", help="write --output in real time, not at full speed"
    )
    faults = parser.add_argument_group("faults (probability per frame, 0 to 1)")
    for name, what in (
        ("noise", "1-8 random bytes before a frame"),
        ("garbage-burst", "32-256 random bytes before a frame"),
        ("bit-flip", "one bit flipped inside a frame"),
        ("drop-byte", "one byte of a frame left out"),
        ("truncate", "a frame cut short"),
        ("bad-checksum", "a frame with a wrong checksum"),
        ("duplicate", "a frame sent twice"),
    ):
        faults.add_argument(f"--{name}", type=_probability, default=0.0, metavar="P", help=what)
    faults.add_argument(
        "--stall",
        type=_schedule,
        metavar="EVERY:FOR",
        help="every EVERY seconds, send nothing for FOR seconds",
    )
    faults.add_argument(
        "--disconnect",
        type=_schedule,
        metavar="EVERY:FOR",
        help="every EVERY seconds, the link goes away for FOR seconds (a PTY and its symlink "
        "vanish, a TCP server closes)",
    )
    parser.add_argument(
        "--truth",
        type=Path,
        metavar="FILE",
        help="write the ground truth here: one JSON line per frame sent (with the offset "
        "where its bytes landed) and per fault injected",
    )
    parser.add_argument(
        "--log-level",
        default="info",
        choices=["debug", "info", "warning", "error"],
        help="what fwsim logs on stderr (default: %(default)s)",
    )
    return parser


def _devices(schema: Schema, arguments: argparse.Namespace) -> list[SimulatedDevice]:
    has_address = schema.profile.field(HeaderRole.ADDRESS) is not None
    if arguments.devices > 1 and not has_address:
        raise SimulatorUsageError(
            f"--devices {arguments.devices} needs a profile with an address field; "
            f"profile {schema.profile.name!r} has none"
        )
    telemetry = {m.name for m in schema.catalog.messages if m.direction is Direction.TELEMETRY}
    intervals = dict(arguments.interval)
    unknown = sorted(set(intervals) - telemetry)
    if unknown:
        raise SimulatorUsageError(
            f"--interval: no telemetry message {', '.join(unknown)} in catalog "
            f"{schema.catalog.name!r} (telemetry: {', '.join(sorted(telemetry))})"
        )
    return [
        SimulatedDevice(
            schema,
            seed=arguments.seed * 1000 + number,
            address=number if has_address else None,
            intervals=intervals,
        )
        for number in range(1, arguments.devices + 1)
    ]


class SimulatorUsageError(GatewayError):
    """The options do not fit together, or with the profile and catalog."""


def make_link(arguments: argparse.Namespace, on_data: DataCallback) -> Link:
    """Return the link the options ask for, not yet opened."""
    if arguments.tcp is not None:
        host, port = arguments.tcp
        return TcpLink(host, port, on_data=on_data)
    if arguments.output is not None:
        return FileLink(None if arguments.output == "-" else Path(arguments.output))
    return PtyLink(link_path=arguments.link, on_data=on_data)


def _summary_line(summary: RunSummary) -> str:
    faults = ", ".join(f"{kind} {count}" for kind, count in sorted(summary.faults.items()))
    return (
        f"fwsim: sent {summary.frames} frames ({summary.bytes} bytes), answered "
        f"{summary.commands} commands; faults: {faults or 'none'}"
    )


async def _run(simulator: Simulator) -> RunSummary:
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, simulator.stop)
    loop.add_signal_handler(signal.SIGUSR1, simulator.finish)
    return await simulator.run()


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``fwsim``; return the exit status."""
    arguments = build_parser().parse_args(argv)
    logging.basicConfig(
        level=arguments.log_level.upper(), format="fwsim: %(message)s", stream=sys.stderr
    )
    try:
        schema = load_schema(arguments.profile, arguments.catalog)
        devices = _devices(schema, arguments)
        realtime = arguments.output is None or arguments.realtime or arguments.baud is not None
        options = RunOptions(
            count=arguments.count,
            duration=arguments.duration,
            realtime=realtime,
            baud=arguments.baud,
            faults=FaultRates(
                noise=arguments.noise,
                garbage_burst=arguments.garbage_burst,
                bit_flip=arguments.bit_flip,
                drop_byte=arguments.drop_byte,
                truncate=arguments.truncate,
                bad_checksum=arguments.bad_checksum,
                duplicate=arguments.duplicate,
            ),
            stall=arguments.stall,
            disconnect=arguments.disconnect,
            seed=arguments.seed,
        )
        try:
            truth = TruthWriter(arguments.truth)
        except OSError as exc:
            raise SimulatorUsageError(
                f"{arguments.truth}: cannot write: {os_error_reason(exc)}"
            ) from exc
        simulator = Simulator(
            schema,
            devices,
            lambda on_data: make_link(arguments, on_data),
            options,
            truth,
            announce=lambda where: print(f"fwsim: serving on {where}", file=sys.stderr, flush=True),
        )
        summary = asyncio.run(_run(simulator))
    except GatewayError as exc:
        print(f"fwsim: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as exc:
        print(f"fwsim: error: {exc.filename or 'link'}: {os_error_reason(exc)}", file=sys.stderr)
        return EXIT_USAGE
    print(_summary_line(summary), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
