"""A scenario's outcome: its figures and the guarantees it checked, and the table of all."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["Check", "Result", "format_table", "number"]


@dataclass(frozen=True, slots=True)
class Check:
    """One guarantee, whether it held, and the figures that say so."""

    guarantee: str
    passed: bool
    detail: str


@dataclass(slots=True)
class Result:
    """What a scenario measured (``figures``, in order) and checked."""

    scenario: str
    workdir: Path
    figures: list[tuple[str, str]] = field(default_factory=list)
    checks: list[Check] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return all(check.passed for check in self.checks)

    def figure(self, name: str, value: object) -> None:
        self.figures.append((name, number(value)))

    def check(self, guarantee: str, passed: bool, detail: object) -> None:
        self.checks.append(Check(guarantee, bool(passed), number(detail)))

    def failures(self) -> str:
        """The failed guarantees, one a line, with their figures and where the logs are."""
        lines = [
            f"{self.scenario}: {check.guarantee}: FAILED ({check.detail})"
            for check in self.checks
            if not check.passed
        ]
        return "\n".join([*lines, f"(logs, truth and state in {self.workdir})"])


def number(value: object) -> str:
    """A figure as text: integers with thousands separators, floats with 3 significant
    decimals, nan as "-"."""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if math.isnan(value):
            return "-"
        return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.3g}"
    return str(value)


def format_table(results: Sequence[Result]) -> str:
    """Every scenario's figures, then its guarantees as PASS/FAIL, as aligned text."""
    names = [name for result in results for name, _ in result.figures]
    names += [check.guarantee for result in results for check in result.checks]
    width = max(map(len, names), default=0)
    lines: list[str] = []
    for result in results:
        lines += ["", result.scenario, "-" * len(result.scenario)]
        lines += [f"  {name.ljust(width)}  {value}" for name, value in result.figures]
        for check in result.checks:
            verdict = "PASS" if check.passed else "FAIL"
            lines.append(f"  {check.guarantee.ljust(width)}  {verdict}  {check.detail}")
    passed = sum(result.passed for result in results)
    lines += ["", f"{passed} of {len(results)} scenarios passed"]
    return "\n".join(lines[1:])
