"""SQLite for the embedded service: one database file, one connection, one worker thread.

Each role (accounts, catalog, ...) owns its tables and keeps its SQL to itself; this module
only opens the file, applies each role's schema, and runs blocking calls off the event loop.
Queries are short, so serialising them through one connection costs little and keeps
SQLite's locking out of the picture. A role written for a distributed engine later
(PostgreSQL) replaces its own module, not this pattern.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import trio

from cadenza import blocking

T = TypeVar("T")

# A writer waits this long for a lock held by another process (e.g. `cadenza user add`
# while the service runs) before giving up with "database is locked".
BUSY_TIMEOUT_MS = 5000


class Database:
    """A SQLite file shared by the service's roles.

    ``call(fn, *args)`` runs ``fn(connection, *args)`` synchronously (for CLI tools and
    start-up); ``await run(fn, *args)`` runs it in a worker thread.
    """

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self._conn = sqlite3.connect(
            self.path, check_same_thread=False, isolation_level=None, timeout=BUSY_TIMEOUT_MS / 1000
        )
        self._conn.row_factory = sqlite3.Row
        self._lock = threading.Lock()
        self._limiter = trio.CapacityLimiter(1)
        with self._lock:
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA synchronous=NORMAL")
            self._conn.execute("PRAGMA foreign_keys=ON")

    def apply_schema(self, sql: str) -> None:
        """Run a role's idempotent schema script (CREATE ... IF NOT EXISTS)."""
        with self._lock:
            self._conn.executescript(sql)

    def call(self, fn: Callable[..., T], *args: object) -> T:
        with self._lock:
            return fn(self._conn, *args)

    async def run(self, fn: Callable[..., T], *args: object) -> T:
        return await blocking.run_sync(self.call, fn, *args, limiter=self._limiter)

    def close(self) -> None:
        with self._lock:
            self._conn.close()


class transaction:
    """``with transaction(conn):`` BEGIN IMMEDIATE ... COMMIT, or ROLLBACK on error."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def __enter__(self) -> sqlite3.Connection:
        self.conn.execute("BEGIN IMMEDIATE")
        return self.conn

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is None:
            self.conn.execute("COMMIT")
        else:
            self.conn.execute("ROLLBACK")
