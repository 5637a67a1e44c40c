"""SQLite files where the gateway keeps what survives a restart (the MQTT outbox, the
journal): opened once, exclusively, in WAL mode; a file that cannot be read is moved
aside, never deleted."""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import time
from pathlib import Path

from protocol.errors import ConfigError, os_error_reason

__all__ = ["open_state_file"]

logger = logging.getLogger(__name__)


def open_state_file(
    path: Path, schema: str, *, what: str, source: str, key: str
) -> sqlite3.Connection:
    """Open (or make) the SQLite file ``path`` with the tables of ``schema``, for this
    process alone, in autocommit mode (callers say BEGIN and COMMIT).

    A file that is not a readable database is moved aside as ``<name>.corrupt-<UTC time>``
    and an ERROR says where (``what`` names it: "mqtt outbox"); an empty one is made in
    its place. Raise :class:`~protocol.errors.ConfigError` naming ``source`` and ``key``
    when the folder cannot be made or another process holds the file.
    """
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(
            source, key, f"cannot make {path.parent}: {os_error_reason(exc)}"
        ) from exc
    try:
        return _connect(path, schema)
    except sqlite3.DatabaseError as exc:
        if "locked" in str(exc):
            raise ConfigError(
                source, key, f"{path} is in use by another gateway: give each its own"
            ) from exc
        aside = _move_aside(path)
        logger.error(
            "%s %s cannot be read (%s): moved aside to %s, starting empty",
            what,
            path,
            exc,
            aside,
        )
        return _connect(path, schema)


def _connect(path: Path, schema: str) -> sqlite3.Connection:
    database = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=0.5)
    try:
        database.execute("PRAGMA locking_mode = EXCLUSIVE")
        database.execute("PRAGMA journal_mode = WAL")
        database.execute("PRAGMA synchronous = NORMAL")
        database.execute("BEGIN IMMEDIATE")  # takes the exclusive lock now
        for statement in schema.split(";"):
            if statement.strip():
                database.execute(statement)
        database.execute("COMMIT")
        database.execute("PRAGMA quick_check").fetchall()
    except sqlite3.DatabaseError:
        database.close()
        raise
    return database


def _move_aside(path: Path) -> Path:
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    aside = path.with_name(f"{path.name}.corrupt-{stamp}")
    os.replace(path, aside)
    for suffix in ("-wal", "-shm"):
        with contextlib.suppress(FileNotFoundError):
            os.replace(f"{path}{suffix}", f"{aside}{suffix}")
    return aside
