"""The outbox: messages waiting for the MQTT broker, oldest first, with a window in flight.

The publisher puts every message here, takes the next ones to send with
:meth:`Outbox.take` (each with its number), and acknowledges each by number once the
broker has (:meth:`Outbox.acknowledge`). A message leaves the outbox only when it and
every message before it are acknowledged, so what is kept is always one run of
consecutive numbers, in order. After a lost connection, :meth:`Outbox.rewind` makes
everything not acknowledged go again, in order.

:class:`MemoryOutbox` keeps it in memory; :class:`gateway.outputs.disk_outbox.DiskOutbox`
also on disk, surviving a restart. Every outbox is bounded in messages and in payload
bytes: when full, :meth:`Outbox.put` drops the *oldest* messages (sent or not) and says
how many, and the caller counts them.
"""

from __future__ import annotations

import itertools
import time
from collections import deque
from dataclasses import dataclass
from typing import NamedTuple, Protocol

__all__ = ["Entry", "MemoryOutbox", "OutboundMessage", "Outbox"]


@dataclass(frozen=True, slots=True)
class OutboundMessage:
    """One MQTT publish, ready to go: full topic, payload bytes, QoS and retain flag."""

    topic: str
    payload: bytes
    qos: int
    retain: bool


class Entry(NamedTuple):
    """A message in the outbox: its number, the message, and when it was put (Unix time)."""

    ident: int
    message: OutboundMessage
    queued: float


class Outbox(Protocol):
    """A bounded FIFO of messages waiting for the broker; one consumer, the publisher."""

    def put(self, item: OutboundMessage) -> int:
        """Append ``item`` without blocking; return how many of the oldest messages were
        dropped to make room (0 if there was room)."""
        ...

    def take(self, limit: int) -> list[Entry]:
        """Up to ``limit`` of the oldest messages not taken yet (nor acknowledged), in
        order; they stay in the outbox until acknowledged."""
        ...

    def acknowledge(self, ident: int) -> None:
        """The broker has message ``ident``; a number no longer in the outbox (dropped
        while in flight) is ignored."""
        ...

    def rewind(self) -> None:
        """Hand out again, from the oldest, every message not acknowledged (the
        connection they were sent on is gone)."""
        ...

    def __len__(self) -> int:
        """The number of messages kept (in flight included)."""
        ...

    @property
    def bytes(self) -> int:
        """The payload bytes kept."""
        ...

    @property
    def oldest(self) -> float | None:
        """When the oldest message kept was put (Unix time); None if empty."""
        ...

    @property
    def write_error(self) -> str | None:
        """Why the outbox cannot keep what it holds where it should (a disk that is
        full), or None when it can."""
        ...

    def close(self) -> None:
        """Make what is waiting last (on disk, for an outbox that keeps it); it may block."""
        ...


class MemoryOutbox:
    """An :class:`Outbox` in memory, lost when the process ends.

    At most ``capacity`` messages and, if given, ``max_bytes`` bytes of payload (one
    message is kept whatever its size); putting more drops the oldest.
    """

    def __init__(self, capacity: int, *, max_bytes: int | None = None) -> None:
        if capacity < 1:
            raise ValueError(f"outbox capacity must be at least 1, got {capacity}")
        self.capacity = capacity
        self.max_bytes = max_bytes
        self._entries: deque[Entry] = deque()
        self._bytes = 0
        self._next_ident = 1
        self._taken_through = 0
        """Every message numbered up to this has been handed out by take()."""
        self._acknowledged: set[int] = set()
        """Numbers acknowledged while an older message is still in flight."""

    def put(self, item: OutboundMessage) -> int:
        entry = Entry(self._next_ident, item, time.time())
        self._next_ident += 1
        self._entries.append(entry)
        self._bytes += len(item.payload)
        self._appended(entry)
        dropped = 0
        limit = self.max_bytes
        while len(self._entries) > self.capacity or (
            limit is not None and self._bytes > limit and len(self._entries) > 1
        ):
            self._remove_head()
            dropped += 1
        return dropped

    def take(self, limit: int) -> list[Entry]:
        entries = self._entries
        if not entries or limit < 1:
            return []
        start = max(self._taken_through + 1 - entries[0].ident, 0)
        taken = [
            entry
            for entry in itertools.islice(entries, start, start + limit)
            if entry.ident not in self._acknowledged
        ]
        if start < len(entries):
            self._taken_through = entries[min(start + limit, len(entries)) - 1].ident
        return taken

    def acknowledge(self, ident: int) -> None:
        entries = self._entries
        if not entries or ident < entries[0].ident:
            return
        if ident != entries[0].ident:
            self._acknowledged.add(ident)
            return
        self._remove_head()
        while entries and entries[0].ident in self._acknowledged:
            self._remove_head()

    def rewind(self) -> None:
        self._taken_through = 0

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def bytes(self) -> int:
        return self._bytes

    @property
    def oldest(self) -> float | None:
        return self._entries[0].queued if self._entries else None

    @property
    def write_error(self) -> str | None:
        """Always None: memory does not refuse."""
        return None

    def close(self) -> None:
        """Nothing to keep: what waits is lost with the process."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({len(self._entries)}/{self.capacity} messages)"

    # For an outbox that keeps its messages elsewhere too.

    def _appended(self, entry: Entry) -> None:
        """``entry`` was put (and may be dropped at once to make room)."""

    def _removed_through(self, ident: int) -> None:
        """Every message numbered up to ``ident`` is gone (acknowledged or dropped)."""

    def _restore(self, entries: list[Entry]) -> None:
        """Start with ``entries`` (oldest first, numbered in increasing order) before any
        put; beyond the limits, the oldest are dropped."""
        for entry in entries:
            self._entries.append(entry)
            self._bytes += len(entry.message.payload)
        if entries:
            self._next_ident = entries[-1].ident + 1
        while len(self._entries) > self.capacity:
            self._remove_head()

    def _remove_head(self) -> None:
        entry = self._entries.popleft()
        self._bytes -= len(entry.message.payload)
        self._acknowledged.discard(entry.ident)
        self._removed_through(entry.ident)
