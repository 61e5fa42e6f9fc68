"""The store's write transaction: ``BEGIN IMMEDIATE`` under the store's lock, then ``COMMIT`` or ``ROLLBACK``.

Split out of ``sqlite.py`` because it is where the durability rule is enforced: a write method's ``with``
block ends in a ``COMMIT`` that has succeeded (and, with ``synchronous=FULL``, fsynced the WAL) before
the method returns, or nothing was written. ``BEGIN IMMEDIATE`` takes SQLite's write lock at the start,
so a transaction never fails half-way for want of it, and the store's lock keeps this process's threads
off the one write connection meanwhile.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from typing import Any

from ._sqlite_errors import storage_error


class _WriteTxn:
    """``with store._write() as conn``: BEGIN IMMEDIATE under the store lock; COMMIT or ROLLBACK."""

    __slots__ = ("_conn", "_lock")

    def __init__(self, lock: threading.RLock, conn: sqlite3.Connection) -> None:
        self._lock = lock
        self._conn = conn

    def __enter__(self) -> sqlite3.Connection:
        self._lock.acquire()
        try:
            self._conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            self._lock.release()
            raise storage_error(exc, "start a write transaction") from exc
        return self._conn

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        conn = self._conn
        try:
            if exc_type is None:
                try:
                    conn.execute("COMMIT")
                except sqlite3.Error as err:
                    # SQLite may have rolled back already (disk full, I/O error): nothing was written
                    if conn.in_transaction:
                        with contextlib.suppress(sqlite3.Error):
                            conn.execute("ROLLBACK")
                    raise storage_error(err, "commit; nothing was written") from err
            elif conn.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
        finally:
            self._lock.release()
