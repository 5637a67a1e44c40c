"""Progress bars for long decodes, replays and checks: on a terminal only.

:func:`progress` returns a :class:`Progress` that draws a bar on stderr (bytes done of
the total, bytes and frames per second) when stderr is a terminal and results are not
printed to a terminal beside it, and does nothing at all otherwise, so CI logs hold only
results. While a bar shows, log lines to stderr are printed above it. Call
:meth:`Progress.update` as work is done and close it (it is a context manager) before
printing results.
"""

from __future__ import annotations

import contextlib
import sys
import time
from types import TracebackType
from typing import IO, Any, Never

from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

__all__ = ["Progress", "progress"]

REFRESH_SECONDS = 0.2


class Progress:
    """A byte-counting bar with a frames-per-second figure, or nothing off a terminal."""

    def __init__(self, description: str, total: int | None, *, enabled: bool) -> None:
        self._shown_while = contextlib.ExitStack()
        self._bar: tqdm[Never] | None = None
        if enabled:
            self._bar = self._shown_while.enter_context(
                tqdm(
                    total=total,
                    desc=description,
                    unit="B",
                    unit_scale=True,
                    unit_divisor=1024,
                    file=sys.stderr,
                    mininterval=REFRESH_SECONDS,
                    leave=False,
                    dynamic_ncols=True,
                )
            )
            self._shown_while.enter_context(logging_redirect_tqdm())  # logs above the bar
        self._bytes = 0
        self._started = time.monotonic()
        self._shown = 0.0

    def update(self, done_bytes: int, frames: int) -> None:
        """Say how many bytes are done in all (not since the last call) and frames decoded."""
        bar = self._bar
        if bar is None:
            return
        bar.update(done_bytes - self._bytes)
        self._bytes = done_bytes
        now = time.monotonic()
        if now - self._shown >= REFRESH_SECONDS:
            self._shown = now
            rate = frames / max(now - self._started, 1e-9)
            bar.set_postfix_str(f"{frames:,} frames, {rate:,.0f} frames/s", refresh=False)

    def close(self) -> None:
        """Erase the bar."""
        self._shown_while.close()
        self._bar = None

    def __enter__(self) -> Progress:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


def progress(description: str, total: int | None, *, output: IO[Any] | None = None) -> Progress:
    """A bar for ``description`` when stderr is a terminal; a silent stand-in otherwise.

    ``output`` is where the caller prints results while the bar shows: when it is a
    terminal too, lines printed there would tear the bar apart, and the results scroll
    by to show progress themselves, so there is no bar.
    """
    enabled = sys.stderr is not None and sys.stderr.isatty()
    if output is not None and output.isatty():
        enabled = False
    return Progress(description, total, enabled=enabled)
