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
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path

from gateway.outputs.outbox import Entry, MemoryOutbox, OutboundMessage
from gateway.runtime.state_file import Committer, ErrorCounter, insert_rows, open_state_file

__all__ = ["DiskOutbox"]

logger = logging.getLogger(__name__)

SCHEMA = """
CREATE TABLE IF NOT EXISTS messages (
    id INTEGER PRIMARY KEY,
    topic TEXT NOT NULL,
    payload BLOB NOT NULL,
    qos INTEGER NOT NULL,
    retain INTEGER NOT NULL,
    queued REAL NOT NULL
)
"""
CLOSE_TIMEOUT = 10.0
"""Seconds :meth:`DiskOutbox.close` waits for the last commit."""


class DiskOutbox(MemoryOutbox):
    """A :class:`~gateway.outputs.outbox.MemoryOutbox` also kept on disk at ``path``.

    At most ``capacity`` messages and ``max_bytes`` bytes of payload; putting more drops
    the oldest. Call :meth:`close` at the end: it commits what is pending and stops the
    thread. ``observe`` (if given) is called, from the committing thread, with the
    seconds each commit took; ``errors`` (if given) counts a file moved aside and each
    commit the disk refused. Raise :class:`~protocol.errors.ConfigError` if ``path``
    cannot be opened at all (its folder cannot be made, or it is taken by another
    gateway).
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
        observe: Callable[[float], None] | None = None,
        errors: ErrorCounter | None = None,
    ) -> None:
        super().__init__(capacity, max_bytes=max_bytes)
        self.path = path
        self.commit_interval = commit_interval
        self.commit_batch = commit_batch
        self._lock = threading.Lock()
        self._to_insert: deque[Entry] = deque()
        """Put since the last commit: appended by the loop, drained by the thread."""
        self._deleted_through = 0
        """Every message numbered up to this is gone from memory: delete it on disk."""
        self._committed_deleted = 0
        self._last_error: str | None = None
        self._observe = observe
        self._database = open_state_file(
            path, SCHEMA, what="mqtt outbox", source=source, key="mqtt.outbox", errors=errors
        )
        self._committer = Committer(
            "mqtt outbox",
            self._database,
            self._lock,
            interval=commit_interval,
            take=self._take_work,
            commit=self._commit,
            errors=errors,
            file=path.name,
        )
        self._load()

    def __repr__(self) -> str:
        return f"DiskOutbox({self.path}, {len(self)}/{self.capacity} messages)"

    @property
    def write_error(self) -> str | None:
        """Why the last commit failed (the disk is full, say), or None once one succeeded:
        while it is set, new messages are in memory only."""
        return self._last_error

    def close(self) -> None:
        """Commit what is pending and stop the thread (waiting at most CLOSE_TIMEOUT s)."""
        if not self._committer.stop(CLOSE_TIMEOUT):
            logger.warning("mqtt outbox %s: the last commit did not finish in time", self.path)
        elif len(self):
            logger.info("mqtt outbox %s: %d messages kept for the next run", self.path, len(self))

    def _appended(self, entry: Entry) -> None:
        self._to_insert.append(entry)
        if len(self._to_insert) >= self.commit_batch:
            self._committer.wake()
        else:
            self._committer.pending()

    def _removed_through(self, ident: int) -> None:
        self._deleted_through = ident
        self._committer.pending()

    # Opening and loading.

    def _load(self) -> None:
        """Start with what the previous run left, oldest first."""
        rows = self._database.execute(
            "SELECT id, topic, payload, qos, retain, queued FROM messages ORDER BY id"
        ).fetchall()
        self._restore(
            [
                Entry(ident, OutboundMessage(topic, bytes(payload), qos, bool(retain)), queued)
                for ident, topic, payload, qos, retain, queued in rows
            ]
        )
        if rows:
            logger.info(
                "mqtt outbox %s: %d messages left by the previous run go first",
                self.path,
                len(rows),
            )

    # The committing thread.

    def _take_work(self) -> tuple[list[Entry], int] | None:
        """What to commit (the lock is held): messages put, and removed through."""
        if not self._to_insert and self._deleted_through == self._committed_deleted:
            return None
        deleted_through = self._deleted_through  # read first: inserts beyond it are kept
        queue = self._to_insert
        inserts = [queue.popleft() for _ in range(len(queue))]
        return inserts, deleted_through

    def _commit(self, work: tuple[list[Entry], int]) -> bool:
        inserts, deleted_through = work
        started = time.perf_counter()
        rows = [
            (ident, item.topic, item.payload, item.qos, int(item.retain), queued)
            for ident, item, queued in inserts
            if ident > deleted_through
        ]
        try:
            database = self._database
            database.execute("BEGIN")
            database.execute("DELETE FROM messages WHERE id <= ?", (deleted_through,))
            insert_rows(database, "INSERT", "messages", rows)
            database.execute("COMMIT")
        except sqlite3.Error as exc:
            with contextlib.suppress(sqlite3.Error):
                self._database.execute("ROLLBACK")
            # tried again with the next commit, ahead of what was put meanwhile
            still = [entry for entry in inserts if entry.ident > self._deleted_through]
            self._to_insert.extendleft(reversed(still))
            if str(exc) != self._last_error:
                logger.warning(
                    "mqtt outbox %s: cannot write (%s): %d messages are in memory only",
                    self.path,
                    exc,
                    len(rows),
                )
            self._last_error = str(exc)
            return False
        self._committed_deleted = deleted_through
        if self._observe is not None:
            self._observe(time.perf_counter() - started)
        if self._last_error is not None:
            logger.info("mqtt outbox %s: writing again", self.path)
            self._last_error = None
        return True
