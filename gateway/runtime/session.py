"""A device session, Sans-I/O: a device's bytes in, envelopes and status changes out.

:class:`DeviceSession` does no I/O and reads no clock: whoever owns the link (the live
runner in :mod:`gateway.runtime.sources`, the replay in :mod:`gateway.runtime.replay`)
feeds it what was read and tells it what happened, each time with two times:

``now``
    The session's clock, against which silence is judged: the event loop's monotonic
    time for a live link, the capture's time for a replay.
``time``
    Unix time, stamped on the envelopes and statuses it makes.

Every call returns the events it caused, in order: :class:`Envelope` for a frame,
:class:`DeviceStatus` for a change of state, which the caller hands to its sink. The
device is *online* from the first frame after the link was opened until the link is
lost or no frame has come for ``silence_timeout`` seconds: the caller waits until
:attr:`DeviceSession.silence_deadline` (on the ``now`` clock) and then calls
:meth:`DeviceSession.tick`. The session counts what it sees in the gateway's metrics
(frames, stream errors, bytes read and skipped, ``tgw_device_online``) and logs each
change of state.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import prometheus_client

from gateway.runtime.envelope import UNKNOWN_MESSAGE, Envelope
from gateway.runtime.metrics import GatewayMetrics
from gateway.runtime.status import DeviceStatus
from protocol.decoder import StreamDecoder
from protocol.events import DecoderStatistics, Event, Frame, StreamError
from protocol.records import statistics_record
from protocol.schema import Schema

__all__ = [
    "CONNECTED",
    "END_OF_REPLAY",
    "LINK_LOST",
    "RECEIVING_AGAIN",
    "STOPPED",
    "DeviceSession",
    "LinkState",
    "SessionEvent",
]

logger = logging.getLogger(__name__)

CONNECTED = "connected"
"""Status reason: the first frame after the link was (re)opened."""
RECEIVING_AGAIN = "receiving again"
"""Status reason: the first frame after a silence."""
LINK_LOST = "link lost: "
"""Status reason, followed by why: the link ended."""
STOPPED = "source stopped"
"""Status reason: the source was cancelled (the gateway is shutting down)."""
END_OF_REPLAY = "end of replay"
"""Status reason: the last dump has played."""


@dataclass(frozen=True, slots=True)
class LinkState:
    """What the owner of a session's link says of it in ``/healthz``."""

    kind: str
    """``serial``, ``tcp`` or ``replay``."""
    where: str
    connected: bool
    reconnects: int = 0
    last_error: str | None = None
    capture: dict[str, Any] | None = None
    """The capture's own state, when the link's bytes are recorded."""


SessionEvent = Envelope | DeviceStatus
"""What a session's calls return: a decoded frame, or a change of the device's state."""


class DeviceSession:
    """One device's stream of bytes, decoded, and its liveness. Not thread-safe.

    Changes of state are logged to ``logger`` (the owner's, so that its lines say where
    they come from).
    """

    def __init__(
        self,
        device: str,
        schema: Schema,
        metrics: GatewayMetrics,
        *,
        silence_timeout: float,
        include_raw: bool = False,
        logger: logging.Logger = logger,
    ) -> None:
        if silence_timeout <= 0:
            raise ValueError(f"silence timeout of {silence_timeout} s, expected more than 0")
        self.device = device
        self._decoder = StreamDecoder(schema)
        self._silence_timeout = silence_timeout
        self._include_raw = include_raw
        self._logger = logger
        self._metrics = metrics
        self._bytes_read = metrics.bytes_read.labels(device)
        self._bytes_skipped = metrics.bytes_skipped.labels(device)
        self._online_gauge = metrics.device_online.labels(device)
        self._online_gauge.set(0)
        self._frame_counters: dict[str, prometheus_client.Counter] = {}
        self._skipped_counted = 0
        self._online = False
        self._fresh_link = True
        self._last_frame_now = 0.0
        self.last_frame: float | None = None
        """Unix time of the latest frame (None before the first)."""

    @property
    def online(self) -> bool:
        """True from the first frame after the link opened until it is lost or goes silent."""
        return self._online

    @property
    def fresh_link(self) -> bool:
        """True from :meth:`opened` until the first frame: the link has not worked yet."""
        return self._fresh_link

    @property
    def silence_deadline(self) -> float | None:
        """When, on the ``now`` clock, the device is silent unless a frame comes first;
        None while it is offline. Call :meth:`tick` once it has passed."""
        return self._last_frame_now + self._silence_timeout if self._online else None

    def statistics(self) -> DecoderStatistics:
        """The decoder's counts so far."""
        return self._decoder.statistics()

    def record(self, link: LinkState) -> dict[str, Any]:
        """The source as ``/healthz`` shows it: its link, liveness and decoder statistics."""
        return {
            "device": self.device,
            "kind": link.kind,
            "where": link.where,
            "connected": link.connected,
            "online": self._online,
            "last_frame": self.last_frame,
            "reconnects": link.reconnects,
            "last_error": link.last_error,
            "decoder": statistics_record(self._decoder.statistics()),
            "capture": link.capture,
        }

    # What the link's owner tells the session.

    def opened(self) -> None:
        """The link was (re)opened: its first frame brings the device online as connected."""
        self._fresh_link = True

    def receive(self, data: bytes, *, now: float, time: float) -> list[SessionEvent]:
        """Bytes just read from the link: the frames they complete and what they changed."""
        self._bytes_read.inc(len(data))
        return self._decoded(self._decoder.feed(data), now, time)

    def interrupted(self, *, now: float, time: float) -> list[SessionEvent]:
        """The stream broke here (the link closed, or bytes were missed): the frame in
        progress ends (reported truncated; a frame hidden in it is still found)."""
        return self._decoded(self._decoder.finish(), now, time)

    def tick(self, *, now: float, time: float) -> list[SessionEvent]:
        """Time has passed: the device goes offline if :attr:`silence_deadline` is over."""
        deadline = self.silence_deadline
        if deadline is None or now < deadline:
            return []
        return self._went(False, f"silent for {self._silence_timeout:g} s", time, logging.WARNING)

    def link_lost(self, problem: str, *, time: float) -> list[SessionEvent]:
        """The link ended, for ``problem`` (in an operator's words): the device is offline."""
        return self._went(False, LINK_LOST + problem, time, logging.INFO)

    def stopped(self, reason: str, *, time: float) -> list[SessionEvent]:
        """Nothing more will come (:data:`STOPPED`, :data:`END_OF_REPLAY`): offline."""
        return self._went(False, reason, time, logging.INFO)

    # Inside.

    def _decoded(self, decoded: list[Event], now: float, time: float) -> list[SessionEvent]:
        events: list[SessionEvent] = []
        counts: dict[str, int] = {}  # counted once per read: a counter takes a lock
        for event in decoded:
            match event:
                case Frame():
                    message = event.message or UNKNOWN_MESSAGE
                    counts[message] = counts.get(message, 0) + 1
                    self._frame(event, now, time, events)
                case StreamError(kind=kind):
                    self._metrics.decode_errors.labels(self.device, kind.value).inc()
        for message, count in counts.items():
            counter = self._frame_counters.get(message)
            if counter is None:
                counter = self._frame_counters[message] = self._metrics.frames.labels(
                    self.device, message
                )
            counter.inc(count)
        skipped = self._decoder.statistics().bytes_skipped
        if skipped != self._skipped_counted:
            self._bytes_skipped.inc(skipped - self._skipped_counted)
            self._skipped_counted = skipped
        return events

    def _frame(self, frame: Frame, now: float, time: float, events: list[SessionEvent]) -> None:
        self.last_frame = time
        self._last_frame_now = now
        if not self._online:
            reason = CONNECTED if self._fresh_link else RECEIVING_AGAIN
            events.extend(self._went(True, reason, time, logging.INFO))
        self._fresh_link = False
        events.append(Envelope(self.device, frame, received=time, include_raw=self._include_raw))

    def _went(self, online: bool, reason: str, time: float, level: int) -> list[SessionEvent]:
        """The status event of a change of state, logged; none if there is no change."""
        if online == self._online:
            return []
        self._online = online
        self._online_gauge.set(1 if online else 0)
        self._logger.log(
            level, "%s: %s (%s)", self.device, "online" if online else "offline", reason
        )
        return [DeviceStatus(self.device, online, reason, time)]
