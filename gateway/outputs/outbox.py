"""The outbox: messages waiting for the MQTT broker, oldest first.

The publisher puts every message here and takes them out in order once the broker
has acknowledged them (:meth:`Outbox.peek`, publish, then :meth:`Outbox.pop`), so a
message that fails to publish stays at the head and is retried after a reconnect.

:class:`Outbox` is the interface: :class:`MemoryOutbox` here, and
:class:`gateway.outputs.disk_outbox.DiskOutbox`, which survives a restart of the gateway. Every
outbox is bounded: when it is full, :meth:`Outbox.put` drops the *oldest* message and
returns it, and the caller counts it.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Protocol

__all__ = ["MemoryOutbox", "OutboundMessage", "Outbox"]


@dataclass(frozen=True, slots=True)
class OutboundMessage:
    """One MQTT publish, ready to go: full topic, payload bytes, QoS and retain flag."""

    topic: str
    payload: bytes
    qos: int
    retain: bool


class Outbox(Protocol):
    """A bounded FIFO of messages waiting for the broker.

    One consumer (the publisher) reads the head with :meth:`peek` and removes it with
    :meth:`pop` only after the broker acknowledged it.
    """

    def put(self, item: OutboundMessage) -> OutboundMessage | None:
        """Append ``item`` without blocking; return the oldest message dropped to make
        room for it, or None if there was room."""
        ...

    def peek(self) -> OutboundMessage | None:
        """The oldest message, left in place; None if the outbox is empty."""
        ...

    def pop(self) -> None:
        """Remove the oldest message, once it has been published."""
        ...

    def __len__(self) -> int:
        """The number of messages waiting."""
        ...

    def close(self) -> None:
        """Make what is waiting last (on disk, for an outbox that keeps it); it may block."""
        ...


class MemoryOutbox:
    """An :class:`Outbox` in memory, lost when the process ends.

    ``capacity`` messages at most; putting one more drops the oldest.
    """

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"outbox capacity must be at least 1, got {capacity}")
        self.capacity = capacity
        self._items: deque[OutboundMessage] = deque()

    def put(self, item: OutboundMessage) -> OutboundMessage | None:
        dropped = self._items.popleft() if len(self._items) >= self.capacity else None
        self._items.append(item)
        return dropped

    def peek(self) -> OutboundMessage | None:
        return self._items[0] if self._items else None

    def pop(self) -> None:
        if not self._items:
            raise IndexError("pop from an empty outbox")
        self._items.popleft()

    def __len__(self) -> int:
        return len(self._items)

    def close(self) -> None:
        """Nothing to keep: what waits is lost with the process."""

    def __repr__(self) -> str:
        return f"MemoryOutbox({len(self._items)}/{self.capacity} messages)"
