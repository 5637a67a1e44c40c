"""Running the real ``fwsim`` and ``tgw`` programs, and reading what they wrote."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

BIN = Path(sys.executable).parent
FWSIM = BIN / "fwsim"
TGW = BIN / "tgw"
GUARD = 30.0
"""Seconds after which a wait is a hang, not slowness: only a guard, never a measure."""


def run(
    program: str, *arguments: str | Path, check: bool = True
) -> subprocess.CompletedProcess[str]:
    """Run ``fwsim`` or ``tgw`` from this environment; raise if it fails (unless not check)."""
    return subprocess.run(
        [str(BIN / program), *map(str, arguments)],
        capture_output=True,
        text=True,
        check=check,
        timeout=120,
    )


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def truth_frames(truth: list[dict[str, Any]], *, intact_only: bool = True) -> list[dict[str, Any]]:
    """Frame records that went out as built (and duplicates of those)."""
    return [
        record
        for record in truth
        if record["type"] == "frame" and (not intact_only or record["fault"] in (None, "duplicate"))
    ]


@contextmanager
def simulator(*arguments: str | Path) -> Iterator[tuple[subprocess.Popen[str], str]]:
    """Start fwsim; yield the process and where it serves; stop it (SIGTERM) on exit."""
    process = subprocess.Popen(
        [str(FWSIM), *map(str, arguments)], stderr=subprocess.PIPE, text=True
    )
    try:
        assert process.stderr is not None
        for line in process.stderr:  # log lines may come first
            match = re.match(r"fwsim: serving on (\S+)", line)
            if match:
                break
        else:
            raise AssertionError("fwsim ended without saying where it serves")
        yield process, match.group(1)
    finally:
        if process.poll() is None:
            process.terminate()
        process.wait(timeout=GUARD)
        if process.stderr is not None:
            process.stderr.close()


def wait_for(condition: Any, what: str) -> None:
    """Wait until ``condition()`` is true, checking every 10 ms; fail after the guard."""
    deadline = time.monotonic() + GUARD
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(0.01)


def read_until_hangup(fd: int) -> bytes:
    """Read a PTY until its other end goes away (EOF or EIO)."""
    received = bytearray()
    while True:
        try:
            chunk = os.read(fd, 65536)
        except OSError:
            return bytes(received)
        if not chunk:
            return bytes(received)
        received += chunk
