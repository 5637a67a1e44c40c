"""A source that plays captures and dumps back as if the device were sending them.

:class:`ReplaySource` feeds a list of dumps (:mod:`gateway.dumps`) to a
:class:`~gateway.runtime.session.DeviceSession`, as a live source feeds what it reads:
the same decoder, the same envelopes, metrics and online/offline reports, so a dashboard
cannot tell a replay from live data except by the device's name. The envelopes' ``time``
is when the replay delivered them.

Pace: ``speed`` 1 delivers each chunk when it was read, relative to the first;
``speed`` N plays N times faster; None as fast as the outputs take it (then it awaits
``room`` between chunks, rather than overflow them). Raw and hex dumps have no times and
always play as fast as that. A capture's link events are played too: the link closing
ends the frame in progress and reports the device offline, as the gateway did live; so
does a silence longer than ``silence_timeout`` (on the capture's clock), and a gap
(bytes the capture missed) ends the frame in progress.

:meth:`ReplaySource.run` returns when the last dump has played; :attr:`finished` is
set then.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from gateway.config import ReplaySourceConfig
from gateway.dumps import Dump, open_dump
from gateway.runtime.metrics import GatewayMetrics
from gateway.runtime.session import END_OF_REPLAY, STOPPED, DeviceSession, LinkState
from gateway.runtime.sources import DeviceUnavailable, SourceSink, emit
from protocol.capture import CaptureRecord, RecordKind
from protocol.errors import GatewayError
from protocol.events import DecoderStatistics
from protocol.schema import Schema

__all__ = ["ReplaySource"]

logger = logging.getLogger(__name__)


async def _yield() -> None:
    await asyncio.sleep(0)


class ReplaySource:
    """Dumps played back as one device. Run it in a task; it returns at the end.

    ``room`` is awaited between chunks played as fast as possible: it returns once the
    outputs can take more (by default, at once after letting other tasks run).
    """

    kind = "replay"
    capture = None
    """A replay records nothing."""

    def __init__(
        self,
        config: ReplaySourceConfig,
        schema: Schema,
        metrics: GatewayMetrics,
        sink: SourceSink,
        *,
        room: Callable[[], Awaitable[None]] = _yield,
    ) -> None:
        self.config = config
        self.schema = schema
        self.finished = asyncio.Event()
        self._sink = sink
        self._room = room
        self._session = DeviceSession(
            config.device,
            schema,
            metrics,
            silence_timeout=config.silence_timeout,
            include_raw=config.include_raw,
            logger=logger,
        )
        self._running = False
        self._consumed_before = 0
        self._current: Dump | None = None
        self._clock: tuple[float, float] | None = None
        """(loop time, capture time) of the first timed record: the replay's origin."""
        self._now = 0.0
        """The capture time of the latest record (0 in a dump without times)."""

    @property
    def device(self) -> str:
        """The device's name, as configured."""
        return self.config.device

    @property
    def where(self) -> str:
        """The dumps, as given."""
        return self.config.where

    @property
    def consumed(self) -> int:
        """Bytes of the dumps read so far, for progress bars."""
        current = self._current.consumed if self._current is not None else 0
        return self._consumed_before + current

    def statistics(self) -> DecoderStatistics:
        """The decoder's counts so far."""
        return self._session.statistics()

    def state(self) -> dict[str, Any]:
        """The replay as ``/healthz`` shows it: as a live source, with the bytes read so far
        and whether it finished."""
        link = LinkState(kind=self.kind, where=self.where, connected=False)
        return {
            **self._session.record(link),
            "consumed": self.consumed,
            "finished": self.finished.is_set(),
        }

    async def write(self, data: bytes) -> None:
        """A replay takes no commands: raise :class:`DeviceUnavailable`."""
        raise DeviceUnavailable(f"device {self.device} is not connected ({self.where})")

    async def run(self) -> None:
        """Play every dump in order; return at the end. Raise GatewayError for a bad dump."""
        if self._running:
            raise GatewayError(f"source {self.device} is already running")
        self._running = True
        session = self._session
        try:
            for path in self.config.paths:
                with open_dump(path) as dump:
                    self._current = dump
                    await self._play(dump)
                    self._current = None
                    self._consumed_before += dump.consumed
                    if dump.truncation is not None:
                        logger.warning("%s: %s: %s", self.device, path, dump.truncation.describe())
            emit(self._sink, session.interrupted(now=self._now, time=time.time()))
            emit(self._sink, session.stopped(END_OF_REPLAY, time=time.time()))
            statistics = session.statistics()
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
            emit(self._sink, session.stopped(STOPPED, time=time.time()))  # cut short

    async def _play(self, dump: Dump) -> None:
        speed = self.config.speed if dump.timed else None
        self._session.opened()
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
                await self._room()
            self._play_record(item)

    async def _keep_pace(self, item: CaptureRecord, speed: float | None) -> None:
        """Wait until ``item`` is due (not at all when ``speed`` is None); report a silence
        the device kept before it, as the live gateway did."""
        loop = asyncio.get_running_loop()
        if self._clock is None:
            self._clock = (loop.time(), item.time)
        origin, first = self._clock

        async def wait_for(capture_time: float) -> None:
            if speed is not None:
                due = origin + (capture_time - first) / speed
                await asyncio.sleep(max(0.0, due - loop.time()))

        deadline = self._session.silence_deadline
        if deadline is not None and item.time > deadline:
            await wait_for(deadline)
            emit(self._sink, self._session.tick(now=deadline, time=time.time()))
        await wait_for(item.time)

    def _play_record(self, item: CaptureRecord) -> None:
        session, sink, now = self._session, self._sink, item.time
        self._now = now
        match item.kind:
            case RecordKind.DATA:
                emit(sink, session.receive(item.data, now=now, time=time.time()))
            case RecordKind.OPENED:
                session.opened()
            case RecordKind.CLOSED:
                emit(sink, session.interrupted(now=now, time=time.time()))
                emit(sink, session.link_lost(item.text, time=time.time()))
            case RecordKind.GAP:
                emit(sink, session.interrupted(now=now, time=time.time()))
                logger.info(
                    "%s: the capture misses %d bytes here (its disk could not keep up)",
                    self.device,
                    item.lost,
                )
