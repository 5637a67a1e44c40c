"""Recording a source's bytes into rotated capture files, without ever slowing its reads.

One :class:`CaptureWriter` per captured device. The source calls :meth:`data`,
:meth:`opened` and :meth:`closed` from the event loop; these only append to a buffer
(bounded by ``buffer_size`` bytes) and return at once. A thread of the writer's own
writes the buffer to disk, so a slow or full disk never holds up the event loop:

- a disk slower than the device: what does not fit in the buffer is not captured;
- a disk that refuses to write (full, read-only, a file size limit): the capture is
  *suspended*, the file closed, and every ``retry_interval`` seconds a new file is
  tried;

either way the bytes lost are counted (``tgw_capture_lost_bytes``), the first loss of
an episode is logged as a WARNING, and the capture, once it goes on, starts with a gap
record saying how many bytes are missing, so a reader knows exactly where the hole is.

Files are ``<directory>/<device>.<start time, UTC, to the ms>.<part>.tgwcap`` (format in
:mod:`protocol.capture`); a part that would grow beyond ``max_file_size`` is closed and
the next one opened, and beyond ``max_files`` files of the device the oldest are
deleted. Call :meth:`start` before the first :meth:`data` and ``await`` :meth:`close`
at the end: it writes what is buffered and stops the thread.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import logging
import re
import threading
import time
from pathlib import Path
from typing import IO, Any

from gateway.config import CaptureConfig
from gateway.runtime.metrics import GatewayMetrics
from protocol.capture import EXTENSION, CaptureHeader, RecordKind, file_header, record
from protocol.errors import os_error_reason
from protocol.version import __version__

__all__ = ["CaptureWriter"]

logger = logging.getLogger(__name__)

BEHIND_LOG_SECONDS = 60.0
"""A disk that keeps falling behind is logged as a WARNING at most this often."""
CLOSE_TIMEOUT = 10.0
"""Seconds :meth:`CaptureWriter.close` waits for the disk to take what is buffered."""


class CaptureWriter:
    """Capture files for one device. See the module docstring for the life cycle."""

    def __init__(
        self,
        config: CaptureConfig,
        header: CaptureHeader,
        metrics: GatewayMetrics,
    ) -> None:
        if config.directory is None:
            raise ValueError("capture is off: no directory")
        self.config = config
        self.directory = Path(config.directory)
        self.device = header.source
        self._header = header
        started = time.time()
        self._run = time.strftime("%Y%m%dT%H%M%S", time.gmtime(started))
        self._run += f"{int(started * 1000) % 1000:03d}Z"
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._pending: collections.deque[tuple[bytes, int]] = collections.deque()
        """Encoded records waiting for the disk, each with the count of data bytes in it."""
        self._pending_size = 0
        self._lost = 0
        """Bytes read but not captured since the last gap record."""
        self._lost_total = 0
        self._suspended = False
        self._behind = False
        """The buffer overflowed and the thread has not taken a batch since."""
        self._behind_logged = -BEHIND_LOG_SECONDS
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._file: IO[bytes] | None = None
        self._file_size = 0
        self._header_size = 0
        self._batch_done = 0
        """Records of the batch being written that are on disk."""
        self._part = 0
        self._path: Path | None = None
        self._last_error: str | None = None
        device = self.device
        self._captured = metrics.capture_bytes.labels(device)
        self._lost_full = metrics.capture_lost_bytes.labels(device, "buffer full")
        self._lost_suspended = metrics.capture_lost_bytes.labels(device, "suspended")
        self._suspended_gauge = metrics.capture_suspended.labels(device)
        self._errors = metrics.capture_errors.labels(device)
        self._files = metrics.capture_files.labels(device)

    # Called from the event loop: never block.

    def data(self, data: bytes) -> None:
        """Record bytes just read from the link."""
        self._append(RecordKind.DATA, data, len(data))

    def opened(self, where: str) -> None:
        """Record that the link was opened."""
        self._append(RecordKind.OPENED, where.encode(), 0)

    def closed(self, reason: str) -> None:
        """Record that the link was lost or closed, and why."""
        self._append(RecordKind.CLOSED, reason.encode(), 0)

    def state(self) -> dict[str, Any]:
        """The capture as ``/healthz`` shows it."""
        with self._lock:
            return {
                "file": str(self._path) if self._path else None,
                "suspended": self._suspended,
                "buffered_bytes": self._pending_size,
                "lost_bytes": self._lost_total,
                "last_error": self._last_error,
            }

    def _append(self, kind: RecordKind, body: bytes, data_size: int) -> None:
        now = time.time_ns()
        encoded = record(kind, now, body)
        with self._lock:
            if self._suspended or self._pending_size + len(encoded) > self.config.buffer_size:
                if data_size:
                    self._lose(data_size)
                return
            self._queue_gap(now)
            self._pending.append((encoded, data_size))
            self._pending_size += len(encoded)
            self._wake.notify()

    def _queue_gap(self, now: int) -> None:
        """Queue a gap record for the bytes lost since the last one, if any (lock held)."""
        if self._lost:
            gap = record(RecordKind.GAP, now, self._lost)
            self._pending.append((gap, 0))
            self._pending_size += len(gap)
            self._lost = 0

    def _lose(self, size: int) -> None:
        """Count ``size`` bytes not captured (the lock is held)."""
        self._lost += size
        self._lost_total += size
        if self._suspended:
            self._lost_suspended.inc(size)
            return
        self._lost_full.inc(size)
        if not self._behind:
            self._behind = True
            now = time.monotonic()
            quiet = now - self._behind_logged < BEHIND_LOG_SECONDS
            if not quiet:
                self._behind_logged = now
            logger.log(
                logging.DEBUG if quiet else logging.WARNING,
                "capture of %s falls behind: the disk does not keep up; bytes read meanwhile "
                "are not captured (the capture shows a gap; tgw_capture_lost_bytes_total counts "
                "them)",
                self.device,
            )

    # Life cycle.

    def start(self) -> None:
        """Start the writing thread. It opens the first file with the first record, so a
        device that never connects leaves no file (and no directory) behind."""
        if self._thread is not None:
            raise RuntimeError("capture already started")
        self._thread = threading.Thread(
            target=self._write_loop, name=f"capture {self.device}", daemon=True
        )
        self._thread.start()

    async def close(self, deadline: float | None = None) -> None:
        """Write what is buffered, waiting until ``deadline`` (event loop time; None: at
        most CLOSE_TIMEOUT s), and close the file.

        Bytes lost since the last gap record get one now, so the file says it all.
        """
        with self._lock:
            if not self._suspended:
                self._queue_gap(time.time_ns())
            self._stopping = True
            self._wake.notify()
        thread = self._thread
        if thread is None:
            return
        timeout = CLOSE_TIMEOUT
        if deadline is not None:
            timeout = max(0.0, deadline - asyncio.get_running_loop().time())
        await asyncio.to_thread(thread.join, timeout)
        if thread.is_alive():
            logger.warning(
                "capture of %s: the disk did not take the last %d bytes within %.3g s",
                self.device,
                self._pending_size,
                timeout,
            )

    # The writing thread.

    def _write_loop(self) -> None:
        try:
            while True:
                if self._suspended and not self._retry():  # only this thread sets it
                    if self._stopping:
                        return
                    continue
                with self._lock:
                    while not self._pending and not self._stopping:
                        self._wake.wait()
                    batch = list(self._pending)
                    self._pending.clear()
                    self._pending_size = 0
                    if not batch:
                        return  # stopping, and all written
                    self._behind = False
                try:
                    self._write(batch)
                except OSError as exc:
                    self._suspend(exc, sum(size for _, size in batch[self._batch_done :]))
        finally:
            self._close_file()

    def _write(self, batch: list[tuple[bytes, int]]) -> None:
        """Write ``batch``, closing a part and opening the next where one would grow too big.

        A record is never split: one bigger than a whole part gets a part of its own.
        """
        limit = self.config.max_file_size
        start = self._batch_done = 0
        while start < len(batch):
            if self._file is None:
                self._open_next()
            room = limit - self._file_size
            end, size = start, 0
            while end < len(batch) and size + len(batch[end][0]) <= room:
                size += len(batch[end][0])
                end += 1
            if end == start:
                if self._file_size > self._header_size:  # it holds records: rotate
                    self._close_file()
                    continue
                end, size = start + 1, len(batch[start][0])  # too big for any part
            file = self._file
            assert file is not None
            file.write(b"".join(encoded for encoded, _ in batch[start:end]))
            file.flush()
            self._file_size += size
            self._captured.inc(sum(data for _, data in batch[start:end]))
            start = self._batch_done = end

    def _header_bytes(self) -> bytes:
        header = dataclasses.replace(
            self._header, part=self._part, created=time.time(), gateway=__version__
        )
        return file_header(header)

    def _open_next(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        self._part += 1
        path = self._part_path()
        while path.exists():  # another gateway started in the same millisecond
            self._part += 1
            path = self._part_path()
        self._remove_old()
        file = open(path, "xb")  # noqa: SIM115 - kept open across batches, closed in _close_file
        try:
            head = self._header_bytes()
            file.write(head)
            file.flush()
        except OSError:
            file.close()
            raise
        self._file, self._path, self._file_size = file, path, len(head)
        self._header_size = len(head)
        self._files.inc()
        logger.info("capture of %s: writing %s", self.device, path)

    def _part_path(self) -> Path:
        return self.directory / f"{self.device}.{self._run}.{self._part:04d}{EXTENSION}"

    def _remove_old(self) -> None:
        """Delete the device's oldest files, leaving room for one more within max_files."""
        stamp_and_part = r"\.\d{8}T\d{9}Z\.\d{4,}"
        name = re.compile(re.escape(self.device) + stamp_and_part + re.escape(EXTENSION))
        existing = sorted(
            path for path in self.directory.iterdir() if name.fullmatch(path.name) is not None
        )
        for old in existing[: max(0, len(existing) - self.config.max_files + 1)]:
            try:
                old.unlink()
            except FileNotFoundError:
                pass
            except OSError as exc:
                logger.warning("capture of %s: cannot delete %s (%s)", self.device, old, exc)

    def _close_file(self) -> None:
        file, self._file = self._file, None
        if file is not None:
            try:
                file.close()
            except OSError as exc:  # the last flush failed: that part ends mid-record
                logger.debug("capture of %s: closing %s: %s", self.device, self._path, exc)

    def _suspend(self, exc: OSError, lost: int) -> None:
        reason = os_error_reason(exc)
        self._errors.inc()
        self._close_file()
        with self._lock:
            self._suspended = True
            self._last_error = reason
            self._lose(lost)
            # What was buffered meanwhile goes the same way.
            for _, size in self._pending:
                self._lose(size)
            self._pending.clear()
            self._pending_size = 0
        self._suspended_gauge.set(1)
        logger.warning(
            "capture of %s suspended: %s (%s); reading goes on, uncaptured; retrying every %g s",
            self.device,
            reason,
            self._path or self.directory,
            self.config.retry_interval,
        )

    def _retry(self) -> bool:
        """While suspended: wait the retry interval, then try a new file. Say if it worked."""
        with self._lock:
            self._wake.wait_for(lambda: self._stopping, timeout=self.config.retry_interval)
            if self._stopping:
                return False
        try:
            self._open_next()
        except OSError as exc:
            logger.debug("capture of %s: still failing: %s", self.device, exc)
            return False
        with self._lock:
            self._suspended = False
            lost = self._lost
        self._suspended_gauge.set(0)
        logger.info(
            "capture of %s resumed in %s; %d bytes were not captured", self.device, self._path, lost
        )
        return True
