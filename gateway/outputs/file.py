"""The JSON-lines file output: every envelope one line, for ``jq``, log shippers and post-mortems.

Lines are the very bytes WebSocket clients and MQTT get, one per line, in ``seq`` order;
device status changes are ``"type": "status"`` lines among them (``[file] statuses``).
:meth:`JsonLinesFile.deliver` only appends to a bounded buffer: a thread of the output's
own writes it, so a slow disk never holds up the event loop; what does not fit is
dropped, counted (``tgw_file_dropped{reason}``) and logged once per episode. A file that
would grow beyond ``max_file_size`` is renamed ``<path>.1`` (the older ones shifting to
``.2`` and on, beyond ``max_files`` deleted) and a new one begun, as log shippers that
tail a path expect. A line is never split across files, nor left half written by a disk
that refuses.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import errno
import io
import logging
import os
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import orjson
from prometheus_client import CollectorRegistry, Counter

from gateway.config import FileConfig
from gateway.runtime.journal import Published
from gateway.runtime.metrics import GatewayMetrics
from gateway.runtime.output import Output, OutputContext
from gateway.runtime.status import DeviceStatus
from protocol.errors import ConfigError, os_error_reason

__all__ = ["JsonLinesFile", "build"]

logger = logging.getLogger(__name__)

ROOM_POLL_SECONDS = 0.05
"""How often a replay that waits for the disk looks again."""
ERROR_LOG_SECONDS = 60.0
"""A disk that keeps refusing is logged as a WARNING at most this often."""


def build(context: OutputContext) -> Output | None:
    """The file output of ``[file]``, or None when it has no ``path``."""
    config = context.config.file
    if config.path is None:
        return None
    return JsonLinesFile(config, context.metrics, source=context.config.source)


class JsonLinesFile:
    """Envelopes as JSON lines in a rotated file. An :class:`~gateway.runtime.output.Output`."""

    name = "file"

    def __init__(
        self, config: FileConfig, metrics: GatewayMetrics, *, source: str = "configuration"
    ) -> None:
        if config.path is None:
            raise ValueError("the file output is off: no path")
        self.config = config
        self._source = source
        self.path = Path(config.path)
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._pending: collections.deque[bytes] = collections.deque()
        self._pending_size = 0
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._file: io.FileIO | None = None
        self._file_size = 0
        self._batch_done = 0
        """Lines of the batch being written that are on disk."""
        self._written = 0
        self._dropped = 0
        self._burst = 0
        """Lines dropped since the buffer last had room: logged once per episode."""
        self._last_error: str | None = None
        self._error_logged = -ERROR_LOG_SECONDS
        file_metrics = metrics.group(FileMetrics)
        self._lines = file_metrics.lines
        dropped = file_metrics.dropped
        self._dropped_full = dropped.labels("buffer full")
        self._dropped_error = dropped.labels("write failed")

    # The Output interface; called from the event loop.

    async def start(self) -> None:
        """Open the file and start the writing thread.

        Raise :class:`~protocol.errors.ConfigError` naming ``file.path`` if the file
        cannot be opened for appending.
        """
        if self._thread is not None:
            raise RuntimeError("the file output is started already")
        try:
            self._open()
        except OSError as exc:
            raise ConfigError(
                self._source, "file.path", f"cannot open {self.path}: {os_error_reason(exc)}"
            ) from exc
        self._thread = threading.Thread(target=self._write_loop, name="file output", daemon=True)
        self._thread.start()
        logger.info("writing envelopes to %s", self.path)

    async def run(self) -> None:
        """Nothing to do on the event loop: the thread writes. Returns when cancelled."""
        await asyncio.Event().wait()

    def deliver(self, message: Published) -> None:
        """Queue the message's JSON as a line."""
        self._append(message.payload + b"\n")

    def device_status(self, status: DeviceStatus) -> None:
        """Queue the status as a line, if ``[file] statuses``."""
        if self.config.statuses:
            self._append(orjson.dumps(status.record(), option=orjson.OPT_APPEND_NEWLINE))

    async def wait_for_room(self) -> None:
        """While more than half the buffer waits for the disk, wait until a quarter does."""
        limit = self.config.buffer_size
        if self._pending_size <= limit // 2:
            return
        while self._pending_size > limit // 4 and self._thread_alive():
            await asyncio.sleep(ROOM_POLL_SECONDS)

    async def close(self, deadline: float) -> None:
        """Write what is buffered, by ``deadline`` (loop time), and close the file."""
        with self._lock:
            self._stopping = True
            self._wake.notify()
        thread = self._thread
        if thread is None:
            return
        timeout = max(0.0, deadline - asyncio.get_running_loop().time())
        await asyncio.to_thread(thread.join, timeout)
        if thread.is_alive():
            logger.warning(
                "file output: the disk did not take the last %d bytes in time", self._pending_size
            )

    def problems(self) -> Sequence[str]:
        """The disk's refusal, while the file cannot be written."""
        with self._lock:
            error = self._last_error
        return () if error is None else (f"file output cannot write {self.path}: {error}",)

    def health(self) -> Mapping[str, Any]:
        """The file, lines written and dropped, bytes waiting, the last error."""
        with self._lock:
            return {
                "path": str(self.path),
                "lines": self._written,
                "dropped": self._dropped,
                "buffered_bytes": self._pending_size,
                "last_error": self._last_error,
            }

    # Buffering.

    def _append(self, line: bytes) -> None:
        with self._lock:
            if self._stopping:
                return
            if self._pending_size + len(line) > self.config.buffer_size:
                self._dropped += 1
                self._dropped_full.inc()
                if not self._burst:
                    logger.warning(
                        "file output: %d bytes wait for the disk, the buffer is full: "
                        "dropping lines until it has room",
                        self._pending_size,
                    )
                self._burst += 1
                return
            if self._burst:
                logger.info("file output: buffer has room again; %d lines dropped", self._burst)
                self._burst = 0
            self._pending.append(line)
            self._pending_size += len(line)
            self._wake.notify()

    def _thread_alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    # The writing thread.

    def _write_loop(self) -> None:
        try:
            while True:
                with self._lock:
                    while not self._pending and not self._stopping:
                        self._wake.wait()
                    batch = list(self._pending)
                    if not batch:
                        return  # stopping, and all written
                self._batch_done = 0
                try:
                    self._write(batch)
                except OSError as exc:
                    self._fail(exc, len(batch) - self._batch_done)
                with self._lock:
                    for _ in batch:
                        self._pending_size -= len(self._pending.popleft())
        finally:
            self._close_file()

    def _write(self, batch: list[bytes]) -> None:
        """Write ``batch``, rotating where a line would make the file too big."""
        limit = self.config.max_file_size
        start = 0
        while start < len(batch):
            if self._file is None:
                self._open()
            end, size = start, 0
            while end < len(batch) and self._file_size + size + len(batch[end]) <= limit:
                size += len(batch[end])
                end += 1
            if end == start:
                if self._file_size:
                    self._rotate()
                    continue
                end, size = start + 1, len(batch[start])  # one line bigger than a file
            _write_all(self._file, b"".join(batch[start:end]))
            self._file_size += size
            with self._lock:
                self._written += end - start
            self._lines.inc(end - start)
            start = self._batch_done = end

    def _open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        file = io.FileIO(self.path, "ab")  # unbuffered: a failed write is undone exactly
        self._file, self._file_size = file, os.fstat(file.fileno()).st_size
        if self._last_error is not None:
            logger.info("file output: writing %s again", self.path)
            self._last_error = None

    def _rotate(self) -> None:
        """``path`` becomes ``path.1``, ``path.1`` becomes ``path.2``, ...; the oldest goes."""
        self._close_file()
        keep = self.config.max_files
        for index in range(keep, 0, -1):
            older = self._rotated(index)
            if index == keep:
                older.unlink(missing_ok=True)
            else:
                _rename_if_exists(older, self._rotated(index + 1))
        if keep:
            _rename_if_exists(self.path, self._rotated(1))
        else:
            self.path.unlink(missing_ok=True)

    def _rotated(self, index: int) -> Path:
        return self.path.with_name(f"{self.path.name}.{index}")

    def _close_file(self) -> None:
        file, self._file = self._file, None
        if file is not None:
            with contextlib.suppress(OSError):  # what failed was counted with the write
                file.close()

    def _fail(self, exc: OSError, lines: int) -> None:
        """Undo the part of a line a failed write left, count the lines not written as
        dropped; log at most once a minute."""
        if self._file is not None:
            with contextlib.suppress(OSError):  # a device such as /dev/full: nothing to undo
                os.ftruncate(self._file.fileno(), self._file_size)
        self._close_file()
        reason = os_error_reason(exc)
        with self._lock:
            self._dropped += lines
            self._last_error = reason
        self._dropped_error.inc(lines)
        now = time.monotonic()
        if now - self._error_logged >= ERROR_LOG_SECONDS:
            self._error_logged = now
            logger.warning(
                "file output: cannot write %s (%s): %d lines lost", self.path, reason, lines
            )


class FileMetrics:
    """Lines written and dropped: made once per gateway by ``GatewayMetrics.group``."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.lines = Counter(
            "tgw_file_lines", "Lines written by the file output", registry=registry
        )
        self.dropped = Counter(
            "tgw_file_dropped",
            "Lines the file output could not write",
            ["reason"],
            registry=registry,
        )


def _write_all(file: io.FileIO | None, data: bytes) -> None:
    """Write all of ``data``; an unbuffered write may take only part of it."""
    assert file is not None
    view = memoryview(data)
    while view:
        written = file.write(view)
        if not written:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        view = view[written:]


def _rename_if_exists(source: Path, target: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.replace(source, target)
