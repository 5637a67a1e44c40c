"""The journal: numbers every message, serialises it once, keeps a bounded history.

Every output gets the same :class:`Published` message: the envelope with its gateway
sequence number, and its JSON bytes, made once. A subscriber that reconnects asks
:meth:`Journal.since` for what it missed. With a :class:`JournalStore`, the numbering
and the history go on across restarts.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections import deque
from typing import NamedTuple

from gateway.runtime.envelope import Envelope
from gateway.runtime.journal_store import JournalStore
from gateway.runtime.status import DeviceStatus

__all__ = ["HistoryEntry", "Journal", "Published"]

HistoryEntry = tuple[int, str, bytes]
"""``(seq, topic, payload)``: one published message as the history keeps it."""


class Published(NamedTuple):
    """What :meth:`Journal.append` made of an envelope: numbered, and serialised once."""

    envelope: Envelope
    payload: bytes

    @property
    def seq(self) -> int:
        """The gateway sequence number the journal gave it."""
        return self.envelope.seq

    @property
    def topic(self) -> str:
        """``device/message``."""
        return self.envelope.topic


class Journal:
    """Numbers messages, keeps the newest ``history`` of them and each device's latest status.

    Call every method from the event loop's thread.
    """

    def __init__(self, *, history: int, store: JournalStore | None = None) -> None:
        if history < 0:
            raise ValueError(f"history of {history} messages, expected 0 or more")
        self._history: deque[HistoryEntry] = deque(maxlen=history)
        self._statuses: dict[str, DeviceStatus] = {}
        self._seq = 0
        self._store = store
        if store is not None:  # what the previous run left: number on from it
            self._history.extend(store.entries)
            self._seq = store.last_seq

    def close(self) -> None:
        """Make the numbers and history last, if the journal has a store; it may block."""
        if self._store is not None:
            self._store.close()

    @property
    def last_seq(self) -> int:
        """The sequence number of the latest message (0 before the first)."""
        return self._seq

    @property
    def oldest_seq(self) -> int:
        """The sequence number of the oldest message in the history (``last_seq + 1`` if empty)."""
        return self._history[0][0] if self._history else self._seq + 1

    def append(self, envelope: Envelope) -> Published:
        """Number ``envelope``, serialise it, keep it in the history. Never waits."""
        self._seq += 1
        seq = self._seq
        envelope = dataclasses.replace(envelope, seq=seq)
        payload = envelope.to_json()
        topic = envelope.topic
        self._history.append((seq, topic, payload))
        if self._store is not None:
            self._store.append(seq, topic, payload)
        return Published(envelope, payload)

    def record_status(self, status: DeviceStatus) -> None:
        """Keep ``status`` as its device's latest."""
        self._statuses[status.device] = status

    def statuses(self) -> dict[str, DeviceStatus]:
        """The latest status of each device that has one, by device: a copy."""
        return dict(self._statuses)

    def since(self, seq: int) -> tuple[list[HistoryEntry], bool]:
        """The history entries after ``seq``, and whether none of them was lost.

        The flag is False when messages after ``seq`` were already evicted from the
        history (a gap: the caller should say so), and also when ``seq`` is ahead of
        :attr:`last_seq` (the client saw an earlier run of the gateway): then the whole
        history is returned.
        """
        if seq < 0:
            raise ValueError(f"seq {seq}, expected 0 or more")
        history = self._history
        if seq >= self._seq:
            return ([], True) if seq == self._seq else (list(history), False)
        oldest = self.oldest_seq
        if seq + 1 < oldest:
            return list(history), False
        return list(itertools.islice(history, seq + 1 - oldest, None)), True
