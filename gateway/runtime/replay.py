"""A source that plays captures and dumps back as if the device were sending them.

:class:`ReplaySource` is a :class:`gateway.runtime.sources.Source` whose link is a list of
dumps (:mod:`gateway.dumps`) instead of a port: the same decoder, the same envelopes,
metrics and online/offline reports, so a dashboard cannot tell a replay from live data
except by the device's name. The envelopes' ``time`` is when the replay delivered them.

Pace: ``speed`` 1 delivers each chunk when it was read, relative to the first;
``speed`` N plays N times faster; None as fast as the outputs take it (then it waits
while MQTT's queue is more than half full, rather than overflow it). Raw and hex dumps
have no times and always play as fast as that. A capture's link events are played too:
the link closing ends the frame in progress and reports the device offline, as the
gateway did live; so does a silence longer than ``silence_timeout`` (at the replay's
pace), and a gap (bytes the capture missed) ends the frame in progress.

:meth:`ReplaySource.run` returns when the last dump has played; :attr:`finished` is
set then.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from gateway.config import ReplaySourceConfig
from gateway.dumps import Dump, open_dump
from gateway.runtime.metrics import GatewayMetrics
from gateway.runtime.sources import Source, SourceSink
from protocol.capture import CaptureRecord, RecordKind
from protocol.errors import GatewayError
from protocol.schema import Schema

__all__ = ["ReplaySource"]

logger = logging.getLogger(__name__)

END_OF_REPLAY = "end of replay"
"""Status reason: the last dump has played."""


class ReplaySource(Source):
    """Dumps played back as one device. Run it in a task; it returns at the end."""

    kind = "replay"
    config: ReplaySourceConfig

    def __init__(
        self,
        config: ReplaySourceConfig,
        schema: Schema,
        metrics: GatewayMetrics,
        sink: SourceSink,
    ) -> None:
        super().__init__(config, schema, metrics, sink)
        self.finished = asyncio.Event()
        self.room: Callable[[], Awaitable[None]] | None = None
        """Set by the gateway: waits while the outputs are too full to take more."""
        self._consumed_before = 0
        self._current: Dump | None = None
        self._clock: tuple[float, int] | None = None
        """(loop time, capture time in ns) of the first timed record: the replay's origin."""
        self._last_frame_ns: int | None = None

    @property
    def where(self) -> str:
        """The dumps, as given."""
        paths = self.config.paths
        return paths[0] if len(paths) == 1 else f"{paths[0]} and {len(paths) - 1} more"

    @property
    def consumed(self) -> int:
        """Bytes of the dumps read so far, for progress bars."""
        current = self._current.consumed if self._current is not None else 0
        return self._consumed_before + current

    def state(self) -> dict[str, Any]:
        """As :meth:`Source.state`, with the bytes read so far and whether it finished."""
        return {**super().state(), "consumed": self.consumed, "finished": self.finished.is_set()}

    async def run(self) -> None:
        """Play every dump in order; return at the end. Raise GatewayError for a bad dump."""
        if self._running:
            raise GatewayError(f"source {self.device} is already running")
        self._running = True
        try:
            for path in self.config.paths:
                with open_dump(path) as dump:
                    self._current = dump
                    await self._play(dump)
                    self._current = None
                    self._consumed_before += dump.consumed
                    if dump.truncation is not None:
                        logger.warning("%s: %s: %s", self.device, path, dump.truncation.describe())
            self._deliver(self._decoder.finish())
            self._set_online(False, END_OF_REPLAY, level=logging.INFO)
            statistics = self._decoder.statistics()
            logger.info(
                "%s: replay finished: %d bytes, %d frames, %d errors",
                self.device,
                statistics.bytes_fed,
                statistics.frames,
                sum(statistics.errors.values()),
            )
            self.finished.set()
        finally:
            self._running = False
            self._set_online(False, END_OF_REPLAY, level=logging.INFO)

    async def _play(self, dump: Dump) -> None:
        speed = self.config.speed if dump.timed else None
        self._fresh_link = True
        logger.info(
            "%s: replaying %s (%s, %s)",
            self.device,
            dump.name,
            dump.format.value,
            f"{speed:g}x the captured pace" if speed else "as fast as the outputs take it",
        )
        for item in dump.records():
            if dump.timed:
                await self._keep_pace(item, speed)
            if speed is None:
                if self.room is not None:
                    await self.room()
                else:
                    await asyncio.sleep(0)  # let the outputs and clients run
            self._play_record(item)

    async def _keep_pace(self, item: CaptureRecord, speed: float | None) -> None:
        """Wait until ``item`` is due (not at all when ``speed`` is None); report a silence
        the device kept before it, as the live gateway did."""
        loop = asyncio.get_running_loop()
        if self._clock is None:
            self._clock = (loop.time(), item.time_ns)
        origin, first_ns = self._clock

        async def wait_for(capture_ns: int) -> None:
            if speed is not None:
                due = origin + (capture_ns - first_ns) / 1e9 / speed
                await asyncio.sleep(max(0.0, due - loop.time()))

        timeout = self.config.silence_timeout
        if self._online and self._last_frame_ns is not None:
            silent_from = self._last_frame_ns + int(timeout * 1e9)
            if item.time_ns > silent_from:
                await wait_for(silent_from)
                self._set_online(False, f"silent for {timeout:g} s")
        await wait_for(item.time_ns)

    def _play_record(self, item: CaptureRecord) -> None:
        match item.kind:
            case RecordKind.DATA:
                self._bytes_read.inc(len(item.data))
                if self._deliver(self._decoder.feed(item.data)):
                    self._last_frame_ns = item.time_ns
            case RecordKind.OPENED:
                self._fresh_link = True
            case RecordKind.CLOSED:
                self._deliver(self._decoder.finish())
                self._set_online(False, f"link lost: {item.text}", level=logging.INFO)
            case RecordKind.GAP:
                self._deliver(self._decoder.finish())
                logger.info(
                    "%s: the capture misses %d bytes here (its disk could not keep up)",
                    self.device,
                    item.lost,
                )

    # A replay has no link to open: Source.run's loop is not used.

    async def _open(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        raise NotImplementedError("a replay has no link")

    def _open_failed(self, exc: OSError | ValueError) -> str:
        return str(exc)

    def _lost(self, exc: OSError | None) -> str:
        return "end of replay"
