"""The hub: fans each message out to the WebSocket subscribers whose filters match it.

The gateway's journal numbers and serialises every message once
(:class:`~gateway.runtime.journal.Published`); :meth:`Hub.publish` offers those very
bytes to every :class:`Subscriber` whose filters match the topic. Publishing never
awaits and never blocks: each subscriber has its own bounded buffer, and what happens
when that buffer is full is the subscriber's policy:

* ``"drop"``: the new message is discarded and counted; the next thing the subscriber
  takes is a notice ``{"type": "dropped", "count": N}`` saying how many were lost since
  the previous notice (the gaps in ``seq`` say which);
* ``"disconnect"``: the subscriber is marked overflowed, takes nothing more, and its
  owner (the WebSocket connection) must close it (see :meth:`Subscriber.wait_overflowed`).

Device statuses (:meth:`Hub.publish_status`) go to every subscriber, whatever its
filters.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Literal

import orjson

from gateway.outputs.websocket.client_protocol import dropped_notice
from gateway.outputs.websocket.metrics import WebSocketMetrics
from gateway.runtime.journal import Published
from gateway.runtime.metrics import GatewayMetrics
from gateway.runtime.status import DeviceStatus
from gateway.runtime.topics import TopicFilter, split_topic

__all__ = ["MAX_FILTERS", "Hub", "HubStatistics", "SlowPolicy", "Subscriber"]

logger = logging.getLogger(__name__)

SlowPolicy = Literal["drop", "disconnect"]

MAX_FILTERS = 100
"""Filters one subscriber may hold at once: memory stays bounded whatever it asks."""

DROPPED_REASON = "slow_subscriber"


class Subscriber:
    """One consumer of the hub: its filters, a bounded buffer, and what it has lost.

    Add it to a :class:`Hub` with :meth:`Hub.add`, then run one sender that loops on
    :meth:`next` (or :meth:`take`) and writes what it returns; under policy
    ``"disconnect"``, also wait on :meth:`wait_overflowed` and close the connection when
    it returns. Remove it with :meth:`Hub.remove` when the connection ends.

    Each buffered item is ``(seq, payload)``; ``seq`` is 0 for what is not a numbered
    message (statuses and dropped notices).

    ``on_filters_changed()`` is called whenever the filters change: the hub's
    :meth:`Hub.forget_routes`, for a subscriber registered while its filters change.

    ``write_now(seq, payload)``, when given, writes to the connection at once if it can
    and says so: the subscriber then skips the buffer (and the sender's wake-up) while
    its client keeps up. It is never called while anything is buffered, so the order
    holds.
    """

    def __init__(
        self,
        *,
        queue_size: int,
        policy: SlowPolicy = "drop",
        name: str = "subscriber",
        max_filters: int = MAX_FILTERS,
        write_now: Callable[[int, bytes], bool] | None = None,
        on_filters_changed: Callable[[], None] = lambda: None,
    ) -> None:
        if queue_size < 1:
            raise ValueError(f"queue size {queue_size}, expected at least 1")
        self.queue_size = queue_size
        self.policy: SlowPolicy = policy
        self.name = name
        self.max_filters = max_filters
        self._filters: dict[str, TopicFilter] = {}
        self._buffer: deque[tuple[int, bytes]] = deque()
        # Futures made when waited for, not Events: an Event carries a deque of its own,
        # and thousands of idle clients each hold a subscriber (issue 11, P6).
        self._waiter: asyncio.Future[None] | None = None
        """The sender's, while it waits for something to send."""
        self._overflowed = False
        self._overflow_waiter: asyncio.Future[None] | None = None
        self._dropped = 0
        self._pending_dropped = 0
        self._behind = 0
        self._on_filters_changed = on_filters_changed
        self._write_now = write_now

    # Filters.

    @property
    def filters(self) -> list[str]:
        """The current filters, in the order they were added."""
        return list(self._filters)

    def subscribe(self, filters: Iterable[str]) -> None:
        """Add ``filters``; raise ValueError (and change nothing) if one is invalid or too many."""
        added = {pattern: TopicFilter(pattern) for pattern in filters}
        total = len(self._filters.keys() | added.keys())
        if total > self.max_filters:
            raise ValueError(f"{total} filters, expected at most {self.max_filters}")
        for pattern, topic_filter in added.items():
            self._filters.setdefault(pattern, topic_filter)
        self._on_filters_changed()

    def unsubscribe(self, filters: Iterable[str]) -> None:
        """Remove ``filters``; those not held are ignored."""
        for pattern in filters:
            self._filters.pop(pattern, None)
        self._on_filters_changed()

    def matches(self, topic: str) -> bool:
        """True if one of the filters matches ``topic``."""
        return self.matches_levels(split_topic(topic))

    def matches_levels(self, levels: list[str]) -> bool:
        """True if one of the filters matches the topic split into ``levels``."""
        return any(topic_filter.matches_levels(levels) for topic_filter in self._filters.values())

    # The buffer.

    def offer(self, seq: int, payload: bytes) -> bool:
        """Buffer ``payload`` without waiting; False if it was not taken (buffer full).

        Called by the hub. When the buffer is full, policy ``"drop"`` discards
        ``payload`` and counts it; policy ``"disconnect"`` marks the subscriber
        overflowed, releases its buffer and refuses everything from then on.
        """
        if self._overflowed:
            self._behind += 1
            return False
        buffer = self._buffer
        if (
            not buffer
            and not self._pending_dropped
            and self._write_now is not None
            and self._write_now(seq, payload)
        ):
            return True
        if len(buffer) < self.queue_size:
            buffer.append((seq, payload))
            _resolve(self._waiter)
            return True
        if self.policy == "disconnect":
            self._behind = len(buffer) + 1
            buffer.clear()
            self._overflowed = True
            _resolve(self._overflow_waiter)
            _resolve(self._waiter)
            logger.debug("%s overflowed: %d messages behind", self.name, self._behind)
            return False
        if self._pending_dropped == 0:
            logger.warning(
                "%s is too slow: its buffer of %d is full, dropping messages",
                self.name,
                self.queue_size,
            )
        self._dropped += 1
        self._pending_dropped += 1
        _resolve(self._waiter)
        return False

    async def next(self) -> tuple[int, bytes]:
        """Wait for and return the next ``(seq, payload)`` to send.

        If messages were dropped since the last call, return first the notice
        ``(0, b'{"type":"dropped","count":N}')``.
        """
        while not self._buffer and not self._pending_dropped:
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        if self._pending_dropped:
            count, self._pending_dropped = self._pending_dropped, 0
            logger.info("%s lost %d messages, telling it", self.name, count)
            return 0, dropped_notice(count)
        return self._buffer.popleft()

    async def take(self, limit: int) -> list[tuple[int, bytes]]:
        """Wait for something to send; return up to ``limit`` items, oldest first.

        Like :meth:`next`, but empties the buffer in one go, so that the sender can
        write a burst of messages with one system call. A dropped notice comes first.
        """
        first = await self.next()
        batch = [first]
        buffer = self._buffer
        while buffer and len(batch) < limit:
            batch.append(buffer.popleft())
        return batch

    async def wait_overflowed(self) -> int:
        """Wait until the buffer overflows under policy ``"disconnect"``; return :attr:`behind`.

        The caller must then close the connection: the subscriber takes nothing more.
        """
        if not self._overflowed:
            self._overflow_waiter = asyncio.get_running_loop().create_future()
            try:
                await self._overflow_waiter
            finally:
                self._overflow_waiter = None
        return self._behind

    @property
    def buffered(self) -> int:
        """Payloads waiting in the buffer (never more than ``queue_size``)."""
        return len(self._buffer)

    @property
    def dropped(self) -> int:
        """Messages dropped since the subscriber was made (policy ``"drop"``)."""
        return self._dropped

    @property
    def pending_dropped(self) -> int:
        """Messages dropped that the next dropped notice will report."""
        return self._pending_dropped

    @property
    def overflowed(self) -> bool:
        """True once the buffer overflowed under policy ``"disconnect"``."""
        return self._overflowed

    @property
    def behind(self) -> int:
        """Under policy ``"disconnect"``, messages lost since the overflow (0 before)."""
        return self._behind

    def __repr__(self) -> str:
        return f"<Subscriber {self.name} {self.policy} {len(self._buffer)}/{self.queue_size}>"


def _resolve(waiter: asyncio.Future[None] | None) -> None:
    """Wake whoever waits on ``waiter`` (if anyone does)."""
    if waiter is not None and not waiter.done():
        waiter.set_result(None)


@dataclass(frozen=True, slots=True)
class HubStatistics:
    """What :meth:`Hub.statistics` returns."""

    subscribers: int
    subscribed: int
    """Subscribers with at least one filter."""
    buffered: int
    """Messages waiting in all subscribers' buffers (their clients are behind)."""
    dropped: int
    """Messages not taken by a subscriber whose buffer was full, since the hub was made."""


class Hub:
    """The live subscribers, and which of them each topic goes to.

    Call every method from the event loop's thread: publishing wakes subscribers' senders.
    """

    def __init__(self, *, metrics: GatewayMetrics) -> None:
        self._metrics = metrics.group(WebSocketMetrics)
        self._subscribers: set[Subscriber] = set()
        self._routes: dict[str, tuple[Subscriber, ...]] = {}
        self._dropped = 0

    def statistics(self) -> HubStatistics:
        """How many subscribers, how far behind, how much dropped."""
        subscribers = self._subscribers
        return HubStatistics(
            subscribers=len(subscribers),
            subscribed=sum(1 for subscriber in subscribers if subscriber.filters),
            buffered=sum(subscriber.buffered for subscriber in subscribers),
            dropped=self._dropped,
        )

    def add(self, subscriber: Subscriber) -> None:
        """Register ``subscriber``: from now on it is offered what matches its filters."""
        self._subscribers.add(subscriber)
        self._routes.clear()

    def remove(self, subscriber: Subscriber) -> None:
        """Unregister ``subscriber`` (if it is registered)."""
        self._subscribers.discard(subscriber)
        self._routes.clear()

    def forget_routes(self) -> None:
        """A subscriber's filters changed: work the routes out again. A subscriber whose
        filters change while it is registered is made with this as ``on_filters_changed``."""
        self._routes.clear()

    def _route(self, topic: str) -> tuple[Subscriber, ...]:
        """The subscribers whose filters match ``topic``, worked out once per topic.

        Topics are few (devices times messages) and filters change rarely: the routes are
        forgotten whenever a subscriber comes, goes or changes its filters.
        """
        route = self._routes.get(topic)
        if route is None:
            levels = split_topic(topic)
            route = tuple(s for s in self._subscribers if s.matches_levels(levels))
            self._routes[topic] = route
        return route

    def publish(self, published: Published) -> None:
        """Offer ``published`` (its bytes, as they are) to the matching subscribers. Never waits."""
        seq, payload = published.seq, published.payload
        sent = dropped = 0
        for subscriber in self._route(published.topic):
            if subscriber.offer(seq, payload):
                sent += 1
            else:
                dropped += 1
        self._count(sent, dropped)

    def publish_status(self, status: DeviceStatus) -> None:
        """Offer ``status`` (``status.record()`` as JSON) to every subscriber. Never waits."""
        payload = orjson.dumps(status.record())
        sent = dropped = 0
        for subscriber in self._subscribers:
            if subscriber.offer(0, payload):
                sent += 1
            else:
                dropped += 1
        self._count(sent, dropped)

    def _count(self, sent: int, dropped: int) -> None:
        if sent:
            self._metrics.websocket_sent.inc(sent)
        if dropped:
            self._dropped += dropped
            self._metrics.websocket_dropped.labels(reason=DROPPED_REASON).inc(dropped)
