"""The MQTT outbox on disk: what waits for the broker survives a restart of the gateway.

:class:`DiskOutbox` is an :class:`~gateway.outputs.outbox.Outbox` whose messages are
also in a SQLite database (WAL mode, one file). The event loop only touches memory: a
thread of the outbox's own writes what was put and deletes what was acknowledged, in
one transaction every ``commit_interval`` seconds (or sooner, once ``commit_batch``
messages wait), so the loop never waits on ``fsync``. What a power cut can lose is what
was put since the last commit: at most ``commit_interval`` seconds of messages. At
start, what the previous run left is loaded, oldest first, ahead of anything new.

A database that cannot be read (corrupt, not SQLite) is moved aside, next to it, as
``<name>.corrupt-<UTC time>``, with an ERROR saying where; the gateway goes on with an
empty outbox. It is never deleted (:mod:`gateway.runtime.state_file`).
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
import threading
from collections import deque
from pathlib import Path

from gateway.outputs.outbox import OutboundMessage
from gateway.runtime.state_file import Committer, open_state_file

__all__ = ["DiskOutbox"]

logger = logging.getLogger(__name__)

SCHEMA = """
CREATE TABLE IF NOT EXISTS messages (
    id INTEGER PRIMARY KEY,
    topic TEXT NOT NULL,
    payload BLOB NOT NULL,
    qos INTEGER NOT NULL,
    retain INTEGER NOT NULL
)
"""
CLOSE_TIMEOUT = 10.0
"""Seconds :meth:`DiskOutbox.close` waits for the last commit."""


class DiskOutbox:
    """A bounded FIFO of messages for the broker, kept in memory and on disk at ``path``.

    At most ``capacity`` messages and ``max_bytes`` bytes of payload; putting more drops
    the oldest. Call :meth:`close` at the end: it commits what is pending and stops the
    thread. Raise :class:`~protocol.errors.ConfigError` if ``path`` cannot be opened at
    all (its folder cannot be made, or it is taken by another gateway).
    """

    def __init__(
        self,
        path: Path,
        *,
        capacity: int,
        max_bytes: int,
        commit_interval: float = 0.05,
        commit_batch: int = 1000,
        source: str = "configuration",
    ) -> None:
        if capacity < 1:
            raise ValueError(f"outbox capacity must be at least 1, got {capacity}")
        self.path = path
        self.capacity = capacity
        self.max_bytes = max_bytes
        self.commit_interval = commit_interval
        self.commit_batch = commit_batch
        self._items: deque[tuple[int, OutboundMessage]] = deque()
        self._bytes = 0
        self._lock = threading.Lock()
        self._to_insert: list[tuple[int, OutboundMessage]] = []
        self._deleted_through = 0
        """Every message numbered up to this is gone from memory: delete it on disk."""
        self._committed_deleted = 0
        self._last_error: str | None = None
        self._commits = 0
        self._database = open_state_file(
            path, SCHEMA, what="mqtt outbox", source=source, key="mqtt.outbox"
        )
        self._next_id = self._load() + 1
        self._committer = Committer(
            "mqtt outbox",
            self._database,
            self._lock,
            interval=commit_interval,
            take=self._take,
            commit=self._commit,
        )

    # The Outbox interface; called from the event loop.

    def put(self, item: OutboundMessage) -> OutboundMessage | None:
        """Append ``item``; return the oldest message dropped to make room, if any."""
        dropped = None
        ident = self._next_id
        self._next_id += 1
        self._items.append((ident, item))
        self._bytes += len(item.payload)
        while len(self._items) > self.capacity or (
            self._bytes > self.max_bytes and len(self._items) > 1
        ):
            dropped = self._remove_head()
        with self._lock:
            self._to_insert.append((ident, item))
            if len(self._to_insert) >= self.commit_batch:
                self._committer.wake()
        return dropped

    def peek(self) -> OutboundMessage | None:
        """The oldest message, left in place."""
        return self._items[0][1] if self._items else None

    def pop(self) -> None:
        """Remove the oldest message, once the broker acknowledged it."""
        if not self._items:
            raise IndexError("pop from an empty outbox")
        self._remove_head()

    def __len__(self) -> int:
        return len(self._items)

    def __repr__(self) -> str:
        return f"DiskOutbox({self.path}, {len(self._items)}/{self.capacity} messages)"

    @property
    def commits(self) -> int:
        """Transactions committed so far."""
        return self._commits

    def close(self) -> None:
        """Commit what is pending and stop the thread (waiting at most CLOSE_TIMEOUT s)."""
        if not self._committer.stop(CLOSE_TIMEOUT):
            logger.warning("mqtt outbox %s: the last commit did not finish in time", self.path)
        elif self._items:
            logger.info(
                "mqtt outbox %s: %d messages kept for the next run", self.path, len(self._items)
            )

    def _remove_head(self) -> OutboundMessage:
        ident, item = self._items.popleft()
        self._bytes -= len(item.payload)
        with self._lock:
            self._deleted_through = ident
        return item

    # Opening and loading.

    def _load(self) -> int:
        """Load what the previous run left, oldest first; return the highest id there."""
        rows = self._database.execute(
            "SELECT id, topic, payload, qos, retain FROM messages ORDER BY id"
        ).fetchall()
        for ident, topic, payload, qos, retain in rows:
            self._items.append((ident, OutboundMessage(topic, bytes(payload), qos, bool(retain))))
            self._bytes += len(payload)
        if rows:
            logger.info(
                "mqtt outbox %s: %d messages left by the previous run go first",
                self.path,
                len(rows),
            )
        last = int(rows[-1][0]) if rows else 0
        while len(self._items) > self.capacity:
            self._remove_head()
        return last

    # The committing thread.

    def _take(self) -> tuple[list[tuple[int, OutboundMessage]], int] | None:
        """What to commit (the lock is held): messages put, and acknowledged through."""
        if not self._to_insert and self._deleted_through == self._committed_deleted:
            return None
        inserts, self._to_insert = self._to_insert, []
        return inserts, self._deleted_through

    def _commit(self, work: tuple[list[tuple[int, OutboundMessage]], int]) -> None:
        inserts, deleted_through = work
        rows = [
            (ident, item.topic, item.payload, item.qos, int(item.retain))
            for ident, item in inserts
            if ident > deleted_through
        ]
        try:
            database = self._database
            database.execute("BEGIN")
            database.execute("DELETE FROM messages WHERE id <= ?", (deleted_through,))
            database.executemany("INSERT INTO messages VALUES (?, ?, ?, ?, ?)", rows)
            database.execute("COMMIT")
        except sqlite3.Error as exc:
            with contextlib.suppress(sqlite3.Error):
                self._database.execute("ROLLBACK")
            with self._lock:  # tried again with the next commit
                still = [(ident, item) for ident, item in inserts if ident > self._deleted_through]
                self._to_insert = still + self._to_insert
            if str(exc) != self._last_error:
                logger.warning(
                    "mqtt outbox %s: cannot write (%s): %d messages are in memory only",
                    self.path,
                    exc,
                    len(rows),
                )
            self._last_error = str(exc)
            return
        self._committed_deleted = deleted_through
        self._commits += 1
        if self._last_error is not None:
            logger.info("mqtt outbox %s: writing again", self.path)
            self._last_error = None
