"""``tgw check DUMP... --golden FILE``: decode dumps, compare with what is expected, gate CI.

The golden file holds JSON lines: the records ``tgw decode`` prints, each with a
``"dump"`` key naming the dump it belongs to (its path as given), without receive
times. ``--update-golden`` (re)writes the records of the dumps named and keeps the
others. Exit status: 0 when every dump matches and is within the thresholds, 1 when
one does not, 2 when the command cannot run (bad usage, an unreadable dump or golden
file).
"""

from __future__ import annotations

import argparse
import enum
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from gateway.ci.golden import comparable, compare, format_differences
from gateway.ci.junit import CaseResult, write_junit
from gateway.commands.options import add_input_options, check_schema_options, schema_for
from gateway.commands.progress import progress
from gateway.dumps import DumpFormat, decode_dump, open_dump
from protocol.decoder import StreamDecoder
from protocol.errors import GatewayError, os_error_reason
from protocol.records import dumps

__all__ = ["add_check_command"]

EXIT_FAILED = 1
EXIT_CANNOT_RUN = 2


class GoldenFileError(GatewayError):
    """The golden file cannot be read or written."""


def add_check_command(commands: Any) -> None:
    """Register ``check``."""
    parser = commands.add_parser(
        "check",
        help="decode dumps and compare them with golden records (for CI)",
        description="Decode each DUMP (a capture, a raw dump or hex text) and compare the "
        "frames and errors with the golden file; apply the thresholds. Prints one result "
        "per dump, with a diff naming the frame, the field, what was expected and what "
        "came, when it fails. Receive times are not compared. Exit status: 0 all pass, "
        "1 a dump fails, 2 the command cannot run.",
    )
    parser.add_argument("dumps", nargs="+", metavar="DUMP", help="the dumps to check")
    parser.add_argument(
        "--golden",
        type=Path,
        metavar="FILE",
        help="the expected records (JSON lines, as --update-golden writes them); without "
        "it, only the thresholds apply",
    )
    parser.add_argument(
        "--update-golden",
        action="store_true",
        help="write the dumps' records into the golden file (keeping other dumps' records) "
        "instead of comparing",
    )
    parser.add_argument(
        "--max-errors",
        type=int,
        metavar="N",
        help="fail a dump with more than N stream errors (default: no limit)",
    )
    parser.add_argument(
        "--max-error-rate",
        type=float,
        metavar="R",
        help="fail a dump whose errors / (frames + errors) exceeds R, e.g. 0.01 "
        "(default: no limit)",
    )
    parser.add_argument(
        "--allow-unknown",
        action="store_true",
        help="do not fail a dump for frames whose command the catalog does not know",
    )
    parser.add_argument(
        "--junit", type=Path, metavar="FILE", help="write a JUnit XML report, one case per dump"
    )
    add_input_options(parser)
    parser.set_defaults(run=run_check)


class Failure(enum.StrEnum):
    """What failed in a dump; the JUnit report's failure ``type``."""

    THRESHOLD = "threshold exceeded"
    UNKNOWN_COMMANDS = "unknown commands"
    GOLDEN_DIFFERENCE = "golden difference"
    NO_GOLDEN_RECORDS = "no golden records"
    TRUNCATED = "truncated capture"


@dataclass(frozen=True)
class Problem:
    """One reason a dump failed, in a line."""

    failure: Failure
    text: str


@dataclass
class DumpResult:
    """What checking one dump found."""

    name: str
    seconds: float = 0.0
    frames: int = 0
    errors: int = 0
    unknown: int = 0
    problems: list[Problem] = field(default_factory=list)
    details: list[str] = field(default_factory=list)
    """Longer text: the diff."""
    error: str | None = None
    """Why it could not be checked at all."""
    records: list[dict[str, Any]] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        """No problem and no error."""
        return not self.problems and self.error is None


def run_check(arguments: argparse.Namespace) -> int:
    """``tgw check``: see the module docstring for the exit status."""
    if arguments.max_errors is not None and arguments.max_errors < 0:
        raise GoldenFileError(f"--max-errors: expected 0 or more, got {arguments.max_errors}")
    if arguments.max_error_rate is not None and not 0 <= arguments.max_error_rate <= 1:
        raise GoldenFileError(
            f"--max-error-rate: expected a fraction from 0 to 1, got {arguments.max_error_rate:g}"
        )
    if arguments.update_golden and arguments.golden is None:
        raise GoldenFileError("--update-golden needs --golden FILE: where to write")
    check_schema_options(arguments)
    names = [_dump_key(name) for name in arguments.dumps]
    golden: dict[str, list[dict[str, Any]]] = {}
    if arguments.golden is not None and (not arguments.update_golden or arguments.golden.exists()):
        golden = _read_golden(arguments.golden)
    results = [
        _check(name, key, arguments, golden)
        for name, key in zip(arguments.dumps, names, strict=True)
    ]
    if arguments.update_golden:
        return _update(arguments.golden, names, results, golden)
    for result in results:
        _print_result(result)
    failed = sum(1 for result in results if not result.passed and result.error is None)
    errors = sum(1 for result in results if result.error is not None)
    print(
        f"tgw check: {len(results)} dump(s): {len(results) - failed - errors} passed, "
        f"{failed} failed" + (f", {errors} could not be checked" if errors else "")
    )
    if arguments.junit is not None:
        _write_junit(arguments.junit, results)
    if errors:
        return EXIT_CANNOT_RUN
    return EXIT_FAILED if failed else 0


def _dump_key(name: str) -> str:
    """The dump's name in the golden file: its path as given, normalised."""
    return Path(os.path.normpath(name)).as_posix()


def _check(
    name: str,
    key: str,
    arguments: argparse.Namespace,
    golden: dict[str, list[dict[str, Any]]],
) -> DumpResult:
    result = DumpResult(key)
    started = time.perf_counter()
    try:
        _decode(name, arguments, result)
    except GatewayError as exc:
        result.error = str(exc)
        result.seconds = time.perf_counter() - started
        return result
    if arguments.update_golden:
        result.seconds = time.perf_counter() - started
        return result
    _apply_thresholds(arguments, result)
    if arguments.golden is not None:
        expected = golden.get(key)
        if expected is None:
            result.problems.append(
                Problem(
                    Failure.NO_GOLDEN_RECORDS,
                    f"no golden records for {key} in {arguments.golden} "
                    "(run with --update-golden to record them)",
                )
            )
        else:
            differences = compare(expected, result.records)
            if differences:
                count = len(differences)
                result.problems.append(
                    Problem(
                        Failure.GOLDEN_DIFFERENCE,
                        f"{count} difference{'s' if count > 1 else ''} from {arguments.golden}",
                    )
                )
                result.details.append(format_differences(differences))
    result.seconds = time.perf_counter() - started
    return result


def _decode(name: str, arguments: argparse.Namespace, result: DumpResult) -> None:
    with open_dump(name, DumpFormat(arguments.input_format)) as dump:
        decoder = StreamDecoder(schema_for(dump, arguments.profile, arguments.catalog))
        with progress(f"checking {name}", dump.size) as bar:
            for records in decode_dump(dump, decoder):
                result.records.extend(comparable(record) for record in records)
                bar.update(dump.consumed, decoder.statistics().frames)
        if dump.truncation is not None:
            result.problems.append(Problem(Failure.TRUNCATED, dump.truncation.describe()))
    statistics = decoder.statistics()
    result.frames = statistics.frames
    result.unknown = statistics.unknown_frames
    result.errors = sum(statistics.errors.values())


def _apply_thresholds(arguments: argparse.Namespace, result: DumpResult) -> None:
    if arguments.max_errors is not None and result.errors > arguments.max_errors:
        result.problems.append(
            Problem(
                Failure.THRESHOLD,
                f"{result.errors} errors, more than --max-errors {arguments.max_errors}",
            )
        )
    if arguments.max_error_rate is not None:
        total = result.frames + result.errors
        rate = result.errors / total if total else 0.0
        if rate > arguments.max_error_rate:
            result.problems.append(
                Problem(
                    Failure.THRESHOLD,
                    f"error rate {rate:.4g} ({result.errors} of {total}), more than "
                    f"--max-error-rate {arguments.max_error_rate:g}",
                )
            )
    if result.unknown and not arguments.allow_unknown:
        result.problems.append(
            Problem(
                Failure.UNKNOWN_COMMANDS,
                f"{result.unknown} frame(s) of commands the catalog does not know "
                "(--allow-unknown accepts them)",
            )
        )


def _print_result(result: DumpResult) -> None:
    counts = f"{result.frames} frames, {result.errors} errors, {result.unknown} unknown"
    if result.error is not None:
        print(f"ERROR {result.name}: could not be checked", flush=True)
        print(f"tgw check: error: {result.error}", file=sys.stderr, flush=True)
    elif result.passed:
        print(f"PASS  {result.name}: {counts}")
    else:
        print(f"FAIL  {result.name}: {counts}: {_problem_text(result)}")
        for detail in result.details:
            print("\n".join(f"      {line}" for line in detail.splitlines()))


def _read_golden(path: Path) -> dict[str, list[dict[str, Any]]]:
    try:
        lines = path.read_bytes().splitlines()
    except OSError as exc:
        raise GoldenFileError(f"{path}: cannot read: {os_error_reason(exc)}") from exc
    golden: dict[str, list[dict[str, Any]]] = {}
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            raise GoldenFileError(f"{path}: line {number}: not valid JSON ({exc})") from exc
        if not isinstance(record, dict) or not isinstance(record.get("dump"), str):
            raise GoldenFileError(
                f'{path}: line {number}: expected an object with a "dump" name, as '
                "--update-golden writes"
            )
        golden.setdefault(record.pop("dump"), []).append(record)
    return golden


def _update(
    path: Path,
    names: Sequence[str],
    results: Sequence[DumpResult],
    golden: dict[str, list[dict[str, Any]]],
) -> int:
    for result in results:
        if result.error is not None:
            print(f"tgw check: error: {result.error}", file=sys.stderr)
    if any(result.error is not None for result in results):
        print(f"tgw check: {path} left as it was")
        return EXIT_CANNOT_RUN
    for name, result in zip(names, results, strict=True):
        golden[name] = result.records
    lines = b"".join(
        dumps({"dump": name, **record}) for name, records in golden.items() for record in records
    )
    temporary = path.with_name(f".{path.name}.tmp")
    try:
        temporary.write_bytes(lines)
        temporary.replace(path)
    except OSError as exc:
        raise GoldenFileError(f"{path}: cannot write: {os_error_reason(exc)}") from exc
    for result in results:
        print(f"wrote {result.name}: {len(result.records)} records")
    print(f"tgw check: {path} updated ({len(results)} dump(s))")
    return 0


def _problem_text(result: DumpResult) -> str:
    return "; ".join(problem.text for problem in result.problems)


def _write_junit(path: Path, results: Sequence[DumpResult]) -> None:
    cases = [
        CaseResult(
            name=result.name,
            seconds=result.seconds,
            failure=_problem_text(result) if result.problems else None,
            details="\n".join(result.details),
            error=result.error,
            failure_type=", ".join(dict.fromkeys(problem.failure for problem in result.problems)),
        )
        for result in results
    ]
    try:
        write_junit(path, "tgw check", cases)
    except OSError as exc:
        raise GoldenFileError(f"{path}: cannot write: {os_error_reason(exc)}") from exc
