"""Profiles of the pipeline benchmark's targets (bench/pipeline.py --profile DIR).

During a P7 window, ``py-spy record --nonblocking --format raw`` samples the target
(every thread, only while it runs: py-spy leaves out idle threads) and writes its
collapsed stacks to DIR. :func:`summarize` turns them into microseconds per frame: a
function's share of the samples times the run's measured CPU per frame, by its own
time (the stack's last frame) and by its inclusive time (anywhere in the stack),
line numbers dropped.
"""

from __future__ import annotations

import re
import shutil
import sys
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

from relay import Child, Children
from relay_ws import BenchError

__all__ = ["Profile", "find_py_spy", "record", "summarize"]

RATE = 200
"""Samples per second."""
OURS = ("gateway/", "protocol/", "pipeline_relay.py")
"""Files whose functions the inclusive summary shows: the project's and the bare relay's."""
ENTRIES = ("<module> ", "main ", "run_gateway ")
"""Functions the inclusive summary leaves out: the entry points, under which all runs."""
_LINE = re.compile(r":\d+\)$")


def find_py_spy() -> Path:
    """py-spy beside this Python, or in PATH; BenchError if there is none."""
    beside = Path(sys.executable).parent / "py-spy"
    found = beside if beside.exists() else shutil.which("py-spy")
    if found is None:
        raise BenchError("--profile needs py-spy: pip install py-spy")
    return Path(found)


async def record(children: Children, pid: int, path: Path, seconds: float) -> Child:
    """Start py-spy on ``pid`` for ``seconds``, writing collapsed stacks to ``path``."""
    argv: list[str | Path] = [
        find_py_spy(),
        "record",
        "--pid",
        str(pid),
        "--duration",
        str(max(1, round(seconds))),
        "--rate",
        str(RATE),
        "--format",
        "raw",
        "--nonblocking",
        "--output",
        path,
    ]
    return await children.start("py-spy", argv, control=False)


class Profile:
    """Collapsed stacks: own and inclusive sample counts by function."""

    def __init__(self, lines: Iterable[str]) -> None:
        self.own: Counter[str] = Counter()
        self.inclusive: Counter[str] = Counter()
        self.samples = 0
        for line in lines:
            stack, _, count_text = line.rstrip("\n").rpartition(" ")
            if not stack or not count_text.isdigit():
                continue
            count = int(count_text)
            frames = [_LINE.sub(")", frame) for frame in stack.split(";")]
            self.samples += count
            self.own[frames[-1]] += count
            for frame in set(frames):
                self.inclusive[frame] += count


def summarize(path: Path, us_per_frame: float, top: int = 12) -> list[str]:
    """Lines of the ``top`` functions by own time and, among the project's (and the bare
    relay's), by inclusive time, in microseconds per frame."""
    try:
        profile = Profile(path.read_text(encoding="utf-8", errors="replace").splitlines())
    except OSError as exc:
        return [f"no profile in {path}: {exc}"]
    if not profile.samples:
        return [f"no samples in {path}"]
    scale = us_per_frame / profile.samples

    def rows(counts: Counter[str], wanted: Iterable[str]) -> list[str]:
        return [
            f"{counts[name] * scale:8.2f} us {counts[name] / profile.samples:6.1%}  {name}"
            for name in wanted
        ]

    ours = [
        name
        for name, _ in profile.inclusive.most_common()
        if any(f in name for f in OURS) and not name.startswith(ENTRIES)
    ]
    return [
        f"py-spy, {profile.samples:,} samples ({path.name}); own time, per frame:",
        *rows(profile.own, [name for name, _ in profile.own.most_common(top)]),
        "inclusive time of the project's functions, per frame:",
        *rows(profile.inclusive, ours[:top]),
    ]
