"""The fault suite in full, for an operator: ``python scripts/faults.py --help``."""

from __future__ import annotations

import argparse
import shutil
import signal
import sys
import tempfile
import textwrap
import time
from collections.abc import Sequence
from pathlib import Path

if __package__ in (None, ""):  # run as a file: python scripts/faults.py
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from scripts.fault_suite.parts import HarnessError
from scripts.fault_suite.report import Result, format_table
from scripts.fault_suite.rig import Common
from scripts.fault_suite.scenarios import (
    SCENARIOS,
    STATE_ERRORS,
    BrokerOutage,
    CorruptState,
    DiskFull,
    GatewayKill,
    Replug,
    RestartWhileAway,
    Scenario,
)

DESCRIPTION = f"""\
Break what a field gateway depends on, one thing at a time, and count what a subscriber
gets against what the device sent. Everything is real and local: a mosquitto on a free
port of 127.0.0.1 (persistence on), fwsim on a PTY sending motion frames at --rate,
`tgw run` with MQTT QoS 1 and a state directory, a persistent QoS 1 subscriber
(clean session off) counting envelopes by seq, and a WebSocket client where a scenario
needs one. Frames are matched to the device's ground truth (fwsim --truth) by their
bytes, from the first frame that arrived on.

scenarios (--only NAME; all by default, in this order):
  broker     the broker stopped for --broker-away s, then started again: 0 lost, 0 out
             of order, every seq arrived, duplicates only for what was in flight at the
             cut (with the same seq and bytes), nothing dropped
  kill       the broker away for --kill-backlog s, then the gateway killed (SIGKILL)
             and started again --kill-down s later with the same state directory, then
             the broker back: 0 lost of what was committed to the outbox (read from
             the file the killed gateway left), 0 lost once the gateway is back; the
             uncommitted window is measured: envelopes a WebSocket client had from
             the killed gateway that never reached MQTT
  restart    the broker away for --restart-away s; --restart-at s into it the gateway
             is stopped (SIGTERM) and started again: a clean stop, the backlog survives
             (what the outbox file held all arrives), nothing the stopped gateway relayed
             is lost, 0 lost once it is back
  disk-full  every file of the gateway limited to --disk-limit bytes (RLIMIT_FSIZE) for
             --disk-duration s, the broker away for its middle third: the gateway keeps
             running and relaying to WebSocket and MQTT, logs which file it cannot write,
             and counts it in /metrics ({STATE_ERRORS})
  corrupt    garbage in mqtt-outbox.sqlite and journal.sqlite before the gateway starts:
             it relays, logs each file moved aside, keeps the garbage next to it, and
             counts it in /metrics
  replug     the device unplugged --replugs times (its PTY and symlink vanish) for
             --unplugged s, plugged in for --plugged s between: reconnect time p50/p99
             and 0 frames lost after each return

Frames the device writes while no gateway reads the port (before the first start, while
the gateway restarts) wait in the port's buffer, a few kilobytes, and what does not fit
is lost: they are reported, not counted against a guarantee. The durations are not
guarantees either: only figures.

Prints a table of figures and guarantees (PASS/FAIL) at the end. Exit status: 0 when
every guarantee held, 1 when one failed or a part did not start, 2 for a usage error,
130 on Ctrl-C or SIGTERM (every part is stopped first). The logs, the device's truth,
what each subscriber got and the state directories are kept in --workdir (a temporary
folder, removed when all passed, unless --keep).
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="faults.py",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--only",
        action="append",
        choices=list(SCENARIOS),
        metavar="NAME",
        help=f"run this scenario (repeat for several): {', '.join(SCENARIOS)}",
    )
    parser.add_argument(
        "--workdir",
        type=Path,
        metavar="DIR",
        help="keep everything here (default: a temporary folder)",
    )
    parser.add_argument("--keep", action="store_true", help="keep --workdir even when all passed")
    common = parser.add_argument_group("every scenario")
    defaults = Common()
    common.add_argument(
        "--rate",
        type=_positive,
        default=defaults.rate,
        metavar="N",
        help="frames/s the device sends (default %(default)g)",
    )
    common.add_argument(
        "--warmup",
        type=_positive,
        metavar="S",
        default=10.0,
        help="seconds of steady stream before a fault (default %(default)g)",
    )
    common.add_argument(
        "--after",
        type=_positive,
        metavar="S",
        default=10.0,
        help="seconds the device goes on sending after a fault ends (default %(default)g)",
    )
    common.add_argument(
        "--commit-interval",
        type=_positive,
        metavar="S",
        default=defaults.commit_interval,
        help="the gateway's [mqtt] commit_interval (default %(default)g)",
    )
    common.add_argument(
        "--max-inflight",
        type=int,
        metavar="N",
        default=defaults.max_inflight,
        help="the gateway's [mqtt] max_inflight, if it has the key (default %(default)s)",
    )
    common.add_argument(
        "--drain-timeout",
        type=_positive,
        metavar="S",
        default=defaults.drain_timeout,
        help="seconds to wait for the backlog once the device stopped (default %(default)g)",
    )
    common.add_argument(
        "--quiet",
        type=_positive,
        metavar="S",
        default=defaults.quiet,
        help="seconds without an envelope, the outbox empty, after which what is missing "
        "is lost (default %(default)g)",
    )
    _scenario_options(parser)
    return parser


def _scenario_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("scenario durations (seconds) and sizes")
    broker, kill, restart = BrokerOutage(), GatewayKill(), RestartWhileAway()
    disk, corrupt, replug = DiskFull(), CorruptState(), Replug()
    options: list[tuple[str, float, str]] = [
        ("--broker-away", broker.away, "broker: how long the broker is away"),
        ("--kill-backlog", kill.backlog, "kill: broker away before the kill (0: never)"),
        ("--kill-down", kill.down, "kill: from the kill to the new start"),
        ("--restart-away", restart.away, "restart: how long the broker is away"),
        ("--restart-at", restart.restart_at, "restart: the gateway's restart, into that"),
        ("--disk-duration", disk.duration, "disk-full: how long the device sends"),
        ("--disk-limit", disk.limit, "disk-full: bytes a file of the gateway may reach"),
        ("--corrupt-duration", corrupt.duration, "corrupt: how long the device sends"),
        ("--replugs", replug.replugs, "replug: how many times"),
        ("--plugged", replug.plugged, "replug: plugged in between"),
        ("--unplugged", replug.unplugged, "replug: unplugged each time"),
    ]
    for flag, default, text in options:
        if isinstance(default, int):
            metavar = "BYTES" if flag == "--disk-limit" else "N"
            group.add_argument(
                flag, type=int, default=default, metavar=metavar, help=f"{text} (default {default})"
            )
        else:
            group.add_argument(
                flag,
                type=_non_negative,
                default=default,
                metavar="S",
                help=f"{text} (default {default:g})",
            )


def _positive(text: str) -> float:
    value = _non_negative(text)
    if value == 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text}")
    return value


def _non_negative(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text}")
    return value


def scenarios(arguments: argparse.Namespace) -> dict[str, Scenario]:
    """The scenarios to run, by name, with the durations of ``arguments``."""
    a = arguments
    chosen: dict[str, Scenario] = {
        "broker": BrokerOutage(warmup=a.warmup, away=a.broker_away, after=a.after),
        "kill": GatewayKill(
            warmup=a.warmup, backlog=a.kill_backlog, down=a.kill_down, after=a.after
        ),
        "restart": RestartWhileAway(
            warmup=a.warmup, away=a.restart_away, restart_at=a.restart_at, after=a.after
        ),
        "disk-full": DiskFull(duration=a.disk_duration, limit=int(a.disk_limit)),
        "corrupt": CorruptState(duration=a.corrupt_duration),
        "replug": Replug(replugs=a.replugs, plugged=a.plugged, unplugged=a.unplugged),
    }
    names = a.only or list(SCENARIOS)
    return {name: chosen[name] for name in SCENARIOS if name in names}


def common_settings(arguments: argparse.Namespace) -> Common:
    return Common(
        rate=arguments.rate,
        commit_interval=arguments.commit_interval,
        max_inflight=arguments.max_inflight,
        drain_timeout=arguments.drain_timeout,
        quiet=arguments.quiet,
    )


def _check(arguments: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    if arguments.restart_at >= arguments.restart_away:
        parser.error("--restart-at must fall within --restart-away")
    if arguments.plugged <= 0 or arguments.unplugged <= 0 or arguments.replugs < 1:
        parser.error("--replugs, --plugged and --unplugged must be positive")
    if arguments.disk_limit < 65536:
        parser.error("--disk-limit below 64 KiB: the gateway could not even start")
    if arguments.workdir is not None:
        taken = [name for name in scenarios(arguments) if (arguments.workdir / name).exists()]
        if taken:
            parser.error(
                f"{arguments.workdir / taken[0]} exists (a previous run's state and broker "
                "would be reused): give a new --workdir"
            )


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt  # SIGTERM stops the parts as Ctrl-C does


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    arguments = parser.parse_args(argv)
    _check(arguments, parser)
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        return run(arguments)
    finally:
        signal.signal(signal.SIGTERM, previous)


def run(arguments: argparse.Namespace) -> int:
    """Run the scenarios of ``arguments``, print the table; the exit status."""
    workdir = arguments.workdir or Path(tempfile.mkdtemp(prefix="tgw-faults-"))
    common = common_settings(arguments)
    results: list[Result] = []
    try:
        for name, scenario in scenarios(arguments).items():
            print(
                f"faults: {name}: the device sends for about {scenario.seconds:g} s, then the "
                f"backlog drains ({workdir / name})",
                file=sys.stderr,
                flush=True,
            )
            began = time.monotonic()
            try:
                result = scenario.run(common, workdir / name)
            except HarnessError as exc:
                result = Result(name, workdir / name)
                result.check("the parts started and answered", False, exc)
            verdict = "passed" if result.passed else "FAILED"
            took = time.monotonic() - began
            print(f"faults: {name}: {verdict} in {took:.0f} s", file=sys.stderr, flush=True)
            results.append(result)
    except KeyboardInterrupt:
        print(f"faults: interrupted; logs in {workdir}", file=sys.stderr)
        return 130
    print(format_table(results))
    passed = all(result.passed for result in results)
    if not passed:
        failures = "\n".join(result.failures() for result in results if not result.passed)
        print("\n" + textwrap.indent(failures, "  "), file=sys.stderr)
    if passed and not arguments.keep and arguments.workdir is None:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
