"""The journal: numbers every message, serialises it once, keeps a bounded history.

Every output gets the same :class:`Published` message: the envelope with its gateway
sequence number, and its JSON bytes, made once. A subscriber that reconnects asks
:meth:`Journal.since` for what it missed, and learns what it cannot have. With a
:class:`JournalStore`, the numbering and the history go on across restarts.
"""

from __future__ import annotations

import bisect
import dataclasses
import itertools
from collections import deque
from typing import NamedTuple

from gateway.runtime.envelope import Envelope
from gateway.runtime.journal_store import JournalStore, Span
from gateway.runtime.status import DeviceStatus

__all__ = ["Gap", "HistoryEntry", "Journal", "Published", "Resume", "Span"]

HistoryEntry = tuple[int, str, bytes]
"""``(seq, topic, payload)``: one published message as the history keeps it."""


class Published(NamedTuple):
    """What :meth:`Journal.append` made of an envelope: numbered, and serialised once."""

    envelope: Envelope
    payload: bytes
    topic: str
    """``device/message``: the envelope's topic, made once."""

    @property
    def seq(self) -> int:
        """The gateway sequence number the journal gave it."""
        return self.envelope.seq


class Gap(NamedTuple):
    """Numbers ``first`` to ``last`` a resuming client cannot have: evicted from the
    history, or (``uncertain``) skipped after an unclean stop, when some of them may have
    been given to messages that were never kept."""

    first: int
    last: int
    uncertain: bool


@dataclasses.dataclass(frozen=True, slots=True)
class Resume:
    """What :meth:`Journal.since` has for a client that saw everything up to ``since``."""

    since: int
    last: int
    """The journal's last seq: live messages go on after it."""
    oldest: int
    """The oldest seq in the history (``last + 1`` if it is empty)."""
    entries: list[HistoryEntry]
    """The history after ``since`` (all of it when ``since`` is ahead of ``last``)."""
    gaps: tuple[Gap, ...]
    """The numbers after ``since`` that are not in ``entries``, in order."""

    @property
    def ahead(self) -> bool:
        """``since`` is ahead of :attr:`last`: the client saw a run whose numbering is lost."""
        return self.since > self.last

    @property
    def complete(self) -> bool:
        """Nothing after ``since`` is missing."""
        return not self.gaps and not self.ahead

    @property
    def first(self) -> int:
        """The first seq the client gets, from the history or live."""
        return self.entries[0][0] if self.entries else self.last + 1


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
        self._uncertain: tuple[Span, ...] = ()
        if store is not None:  # what the previous run left: number on from it
            self._history.extend(store.entries)
            self._seq = store.last_seq
            self._uncertain = tuple(store.uncertain)

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
        envelope = envelope.numbered(seq)
        payload = envelope.to_json()
        topic = envelope.topic
        self._history.append((seq, topic, payload))
        if self._store is not None:
            self._store.append(seq, topic, payload)
        return Published(envelope, payload, topic)

    def record_status(self, status: DeviceStatus) -> None:
        """Keep ``status`` as its device's latest."""
        self._statuses[status.device] = status

    def statuses(self) -> dict[str, DeviceStatus]:
        """The latest status of each device that has one, by device: a copy."""
        return dict(self._statuses)

    def since(self, seq: int) -> Resume:
        """The history after ``seq``, and the numbers after it that it cannot give.

        Numbers are missing when they were evicted from the history, and when a run that
        stopped uncleanly skipped them (:class:`JournalStore`): the caller should say so.
        A ``seq`` ahead of :attr:`last_seq` comes from a client that saw an earlier run
        whose numbering is lost: then the whole history is returned.
        """
        if seq < 0:
            raise ValueError(f"seq {seq}, expected 0 or more")
        history = self._history
        last, oldest = self._seq, self.oldest_seq
        if seq > last:
            return Resume(seq, last, oldest, list(history), ())
        start = bisect.bisect_right(history, seq, key=lambda entry: entry[0])
        entries = list(itertools.islice(history, start, None))
        return Resume(seq, last, oldest, entries, self._gaps(seq, oldest))

    def _gaps(self, seq: int, oldest: int) -> tuple[Gap, ...]:
        """The numbers after ``seq`` missing from the history: before ``oldest``, or skipped."""
        gaps: list[Gap] = []
        cursor = seq + 1  # the first number not yet accounted for
        for span in self._uncertain:
            if span.last < cursor:
                continue
            if cursor < min(span.first, oldest):
                gaps.append(Gap(cursor, min(span.first, oldest) - 1, uncertain=False))
            gaps.append(Gap(max(cursor, span.first), span.last, uncertain=True))
            cursor = span.last + 1
        if cursor < oldest:
            gaps.append(Gap(cursor, oldest - 1, uncertain=False))
        return tuple(gaps)
