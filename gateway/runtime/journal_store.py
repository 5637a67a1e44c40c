"""The journal on disk: the sequence number and the newest messages survive a restart.

:class:`JournalStore` keeps, in a SQLite file (:mod:`gateway.runtime.state_file`), the
last sequence number given and the newest ``history`` messages, so that a gateway that
restarts numbers on from where it stopped and a client resuming with ``since`` gets what
it missed. A thread of its own writes, one transaction every ``commit_interval``
seconds: what a power cut can lose is that last interval (the numbers given in it are
then given again, to other messages; a clean stop loses nothing).
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from pathlib import Path

from gateway.runtime.state_file import Committer, open_state_file

__all__ = ["JournalStore"]

logger = logging.getLogger(__name__)

SCHEMA = """
CREATE TABLE IF NOT EXISTS history (
    seq INTEGER PRIMARY KEY,
    topic TEXT NOT NULL,
    payload BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value INTEGER NOT NULL
)
"""
CLOSE_TIMEOUT = 10.0
"""Seconds :meth:`JournalStore.close` waits for the last commit."""


class JournalStore:
    """The journal's sequence number and newest ``history`` messages, in the file ``path``.

    :attr:`last_seq` and :attr:`entries` are what the previous run left. Hand every new
    message to :meth:`append` (from one thread), and call :meth:`close` at the end.
    Raise :class:`~protocol.errors.ConfigError` if the file is taken by another gateway
    or its folder cannot be made.
    """

    def __init__(
        self,
        path: Path,
        *,
        history: int,
        commit_interval: float = 0.05,
        source: str = "configuration",
    ) -> None:
        self.path = path
        self.history = history
        self.commit_interval = commit_interval
        self._database = open_state_file(
            path, SCHEMA, what="journal", source=source, key="state_dir"
        )
        self.last_seq, self.entries = self._load()
        self._lock = threading.Lock()
        self._pending: list[tuple[int, str, bytes]] = []
        self._last_error: str | None = None
        self._committer = Committer(
            "journal",
            self._database,
            self._lock,
            interval=commit_interval,
            take=self._take,
            commit=self._commit,
        )

    def append(self, seq: int, topic: str, payload: bytes) -> None:
        """Keep message ``seq``; it is on disk after the next commit. Never blocks long."""
        with self._lock:
            self._pending.append((seq, topic, payload))

    def close(self) -> None:
        """Commit what is pending and stop the thread (waiting at most CLOSE_TIMEOUT s)."""
        if not self._committer.stop(CLOSE_TIMEOUT):
            logger.warning("journal %s: the last commit did not finish in time", self.path)

    def _load(self) -> tuple[int, list[tuple[int, str, bytes]]]:
        database = self._database
        row = database.execute("SELECT value FROM meta WHERE key = 'last_seq'").fetchone()
        last_seq = int(row[0]) if row else 0
        rows = database.execute(
            "SELECT seq, topic, payload FROM history ORDER BY seq DESC LIMIT ?", (self.history,)
        ).fetchall()
        entries = [(int(seq), str(topic), bytes(payload)) for seq, topic, payload in rows[::-1]]
        if last_seq:
            logger.info(
                "journal %s: numbering on from seq %d, %d messages of history kept",
                self.path,
                last_seq,
                len(entries),
            )
        return last_seq, entries

    def _take(self) -> list[tuple[int, str, bytes]] | None:
        """The messages appended since the last commit (the lock is held), or None."""
        pending, self._pending = self._pending, []
        return pending or None

    def _commit(self, pending: list[tuple[int, str, bytes]]) -> None:
        last = pending[-1][0]
        rows = pending[-self.history :] if self.history else []
        database = self._database
        try:
            database.execute("BEGIN")
            database.executemany("INSERT OR REPLACE INTO history VALUES (?, ?, ?)", rows)
            database.execute("DELETE FROM history WHERE seq <= ?", (last - self.history,))
            database.execute("INSERT OR REPLACE INTO meta VALUES ('last_seq', ?)", (last,))
            database.execute("COMMIT")
        except sqlite3.Error as exc:
            if database.in_transaction:
                database.execute("ROLLBACK")
            with self._lock:  # tried again with the next commit
                self._pending = pending + self._pending
                del self._pending[: max(0, len(self._pending) - max(self.history, 1))]
            if str(exc) != self._last_error:
                logger.warning("journal %s: cannot write (%s); will try again", self.path, exc)
            self._last_error = str(exc)
            return
        if self._last_error is not None:
            logger.info("journal %s: writing again", self.path)
            self._last_error = None
