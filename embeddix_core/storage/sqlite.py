"""The durable store: SQLite in WAL mode, the source of truth for every collection.

Durability rule (enforced here): a write method returns only after its transaction has committed. With
``Durability.FULL`` the commit fsyncs the WAL (``synchronous=FULL``), so the write survives kill -9 and
power loss; with ``NORMAL`` it survives kill -9 (the WAL pages are in the OS) but not power loss.

Ordering rule: every write transaction bumps its collection's ``seq`` by one and stamps the rows it wrote
(and the labels it deleted, in ``deletions``) with that number. An index snapshot records the ``seq`` it
contains; replaying rows and deletions with a larger ``seq`` brings it up to date.

Labels: ``records.label`` is an AUTOINCREMENT integer, so a label is never reused, even after deletes; the
vector indexes use it directly as their id.

Threads: one write connection guarded by a lock (SQLite serializes writers anyway); reads use one
connection per thread so a long write transaction never blocks a search (WAL gives readers a snapshot).
In-memory stores have a single connection, guarded by the same lock.

Processes: this module never opens SQLite's own files (the database, ``-wal``, ``-shm``) with anything but
SQLite. On Linux, closing *any* descriptor of a file drops every POSIX lock the process holds on it, so a
stray ``open(db + "-shm")`` / ``close()`` silently released SQLite's WAL-index locks and let another process
reset the WAL under a reader (SIGBUS in COMMIT; see SQLite's "How To Corrupt An SQLite Database File",
2.2). Whether another process committed is asked of SQLite (``PRAGMA data_version``).

Identity: each store has a random ``store_id`` (in ``meta``), and each collection's latest index snapshot
is recorded in ``snapshots`` (its id and the ``seq`` it reflects) in the same transaction that prunes the
deletions it contains. A snapshot on disk is used only when its manifest names this store, this
collection and the recorded snapshot id: a snapshot of another store, another collection, a lost WAL
tail or a store restored from a backup is rebuilt instead of trusted.

Errors: every ``sqlite3`` error leaving this module is a typed one: :class:`CorruptionError` when the
file is damaged or is not a database, :class:`StorageError` otherwise (disk full, I/O error, busy).

This module is the :class:`Store` (connections, reads, writes). Beside it: ``_schema.py`` (the tables,
``FORMAT_VERSION`` and the open-time format check), ``_sqlite_errors.py`` (the error mapping above) and
``_write_txn.py`` (the write transaction that enforces the durability rule).
"""

from __future__ import annotations

import contextlib
import itertools
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from ..config import Durability
from ..errors import ClosedError, StorageError
from ..types import StoredRow
from . import _put
from ._chunks import CHUNK as _CHUNK
from ._chunks import chunks as _chunks
from ._page_cache import share_page_cache_budget
from ._schema import FORMAT_VERSION, init_schema
from ._sqlite_errors import _typed_errors, storage_error
from ._wal_index import wal_index_header
from ._write_txn import _WriteTxn

__all__ = [
    "FORMAT_VERSION",
    "CollectionRow",
    "FeedbackRow",
    "SnapshotRecord",
    "Store",
    "scan_step",
    "storage_error",
]

# Vectors live in their own table: a search reads only ids, documents and metadata, and keeping 1.5 KB
# vectors out of those rows lets SQLite's page cache hold every one of them (measured: the 10-row fetch
# behind a search went from ~70 us to ~20 us on 100,000 records).
_VEC = "(SELECT vector FROM vectors WHERE vectors.label = records.label)"


@dataclass(frozen=True, slots=True)
class CollectionRow:
    """A collection as stored."""

    cid: int
    name: str
    config: str
    seq: int
    pruned_seq: int


class FeedbackRow(NamedTuple):
    """One stored feedback event (table ``feedback``); ``query`` is float32 bytes or None."""

    eid: int
    id: str
    session: str | None
    relevant: int | None
    rating: float | None
    dwell_s: float | None
    query: bytes | None
    query_text: str | None
    ts: float


@dataclass(frozen=True, slots=True)
class WriteResult:
    """What a write transaction did: labels in input order, which were new, and the new ``seq``."""

    labels: list[int]
    created: list[bool]
    seq: int
    # put(metadatas=None) only: each record's metadata JSON after the write (kept, or None when new)
    metadatas: list[str | None] | None = None


@dataclass(frozen=True, slots=True)
class SnapshotRecord:
    """The index snapshots a collection's store vouches for: ids and the ``seq`` each reflects.

    ``snapshot_id`` is the last completed one; ``pending_id`` one being written (committed before its
    manifest appears, so a crash between the manifest and :meth:`Store.record_snapshot` leaves a
    snapshot that is still trusted instead of a full rebuild).
    """

    snapshot_id: str | None
    seq: int | None
    pending_id: str | None = None
    pending_seq: int | None = None

    def accepts(self) -> dict[str, int]:
        """snapshot id -> seq, for every snapshot this record vouches for."""
        out: dict[str, int] = {}
        if self.snapshot_id is not None and self.seq is not None:
            out[self.snapshot_id] = self.seq
        if self.pending_id is not None and self.pending_seq is not None:
            out[self.pending_id] = self.pending_seq
        return out


# Bytes of vectors one step of a background scan reads (calibration's exact pass, the vector map's warm-up).
# Reading a step (SQLite's rows, then one bytes join) holds the GIL between short releases, and a search
# that wants it back meanwhile waits until the interpreter's switch interval (5 ms) forces a hand-over:
# 2,048-row steps at 768-d (6 MB) stalled searches for up to 3.7-5.1 ms while a calibration ran (30,000 x
# 768, right after ingest; the default path on 200,000 x 768 saw a 5.0 ms maximum against p50 0.49).
# Steps of 0.75 MB: a 1.2 ms maximum in the same runs.
_SCAN_STEP_BYTES = 3 << 18


def scan_step(dim: int) -> int:
    """Rows of ``dim`` float32 a background :meth:`Store.scan_vectors` reads per step (see above)."""
    return max(64, _SCAN_STEP_BYTES // (4 * max(int(dim), 1)))


class Store:
    """SQLite-backed durable store for all collections of one data directory.

    Args:
        path: The database file, or None for a private in-memory database.
        durability: What is durable when a write returns (see module docstring).
        busy_timeout_ms: How long to wait for another process's write lock.
    """

    def __init__(
        self,
        path: Path | None,
        durability: Durability = Durability.FULL,
        busy_timeout_ms: int = 30_000,
        cache_bytes: int = 8 << 20,
    ) -> None:
        self.path = path
        self._cache_kib = max(cache_bytes // 1024, 64)
        share_page_cache_budget(self, cache_bytes)
        self._busy_ms = busy_timeout_ms
        self._sync = "FULL" if durability == Durability.FULL else "NORMAL"
        self._lock = threading.RLock()
        self._local = threading.local()
        self._conn_serial = itertools.count(1)  # names each read connection (see read_token)
        self._readers: list[sqlite3.Connection] = []
        self._closed = False
        self._label_sql: dict[tuple[int, bool | str], str] = {}  # (labels, vectors or "vectors-only")
        self._conn = self._connect()
        with self._lock:
            try:
                self.store_id = init_schema(self._conn, path)
            except sqlite3.Error as exc:
                self._conn.close()
                raise storage_error(exc, f"open the store at {path}") from exc
            except BaseException:
                self._conn.close()
                raise
        # SQLite's WAL index, mapped once per process (after the schema commit created it)
        self._shm = None if path is None else wal_index_header(path)

    # -- connections -------------------------------------------------------------------------------
    def _connect(self) -> sqlite3.Connection:
        target = ":memory:" if self.path is None else str(self.path)
        try:
            conn = sqlite3.connect(
                target,
                isolation_level=None,
                check_same_thread=False,
                timeout=self._busy_ms / 1000,
                cached_statements=256,
            )
            conn.execute(f"PRAGMA busy_timeout={int(self._busy_ms)}")
            if self.path is not None:
                mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
                if str(mode).lower() != "wal":
                    raise StorageError(f"could not switch {self.path} to WAL mode (got {mode!r})")
            conn.execute(f"PRAGMA synchronous={self._sync}")
            conn.execute("PRAGMA foreign_keys=OFF")
            # each connection may use the whole budget; together they are held to it by the soft heap
            # limit (see _page_cache.py)
            conn.execute(f"PRAGMA cache_size=-{self._cache_kib}")
        except sqlite3.Error as exc:
            with contextlib.suppress(sqlite3.Error):
                conn.close()
            raise storage_error(exc, f"open the store at {target}") from exc
        return conn

    def _reader(self) -> sqlite3.Connection:
        """A read connection: per thread on disk; the single connection in memory."""
        if self._closed:
            raise ClosedError("the database is closed; open it again with Embeddix.open(path)")
        if self.path is None:
            return self._conn
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._connect()
            conn.execute("PRAGMA query_only=ON")
            self._local.conn = conn
            self._local.serial = next(self._conn_serial)
            with self._lock:
                self._readers.append(conn)
        return conn

    def release_reader(self) -> None:
        """Close the calling thread's read connection (a thread about to end: its page cache goes too)."""
        conn = getattr(self._local, "conn", None)
        if conn is None:
            return
        self._local.conn = None
        self._local.header = None  # data_version's memo belongs to the connection closed here
        with self._lock:
            if conn in self._readers:
                self._readers.remove(conn)
        with contextlib.suppress(sqlite3.Error):
            conn.close()

    def close(self) -> None:
        """Close every connection. Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            for conn in self._readers:
                with contextlib.suppress(sqlite3.Error):
                    conn.close()
            self._readers.clear()
            try:
                if self.path is not None:
                    self._conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
            except sqlite3.Error:
                pass
            self._conn.close()
        share_page_cache_budget(self, None)

    # -- transactions ------------------------------------------------------------------------------
    @contextlib.contextmanager
    def read_transaction(self) -> Iterator[None]:
        """Run the calling thread's reads inside one read transaction: they all see one state.

        Without it each statement sees the store as of its own start, and a replay that reads the
        sequence number, then the changes, then the deletions can miss a deletion that another process
        pruned in between (its index keeps a ghost). Re-entrant within a thread. In memory there is one
        connection and no other writer, so this does nothing.
        """
        if self.path is None:
            yield
            return
        conn = self._reader()
        depth = getattr(self._local, "snap_depth", 0)
        if depth == 0:
            try:
                conn.execute("BEGIN")
                conn.execute("SELECT 1 FROM meta LIMIT 1").fetchall()  # the read snapshot starts here
            except sqlite3.Error as exc:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise storage_error(exc, "start a read transaction") from exc
        self._local.snap_depth = depth + 1
        try:
            yield
        finally:
            self._local.snap_depth = depth
            if depth == 0 and conn.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("COMMIT")

    def _write(self) -> _WriteTxn:
        if self._closed:
            raise ClosedError("the database is closed; open it again with Embeddix.open(path)")
        return _WriteTxn(self._lock, self._conn)

    def data_version(self) -> int:
        """A number that changes when anything is committed through another connection or process.

        It is the calling thread's read connection's ``PRAGMA data_version``: compare it only with
        earlier values from the same thread. Commits of this store's own write connection count as
        "another connection" here, so a caller re-checks after its own writes too (cheap: the sequence
        number tells it nothing is new). When the WAL-index header is unchanged since this thread last
        asked, nothing was committed and the last answer stands (~0.2 us instead of ~2 us and two file
        lock calls; see ``_wal_index.py``).
        """
        local = self._local
        shm = self._shm
        try:
            header = shm[:48] if shm is not None else None
        except ValueError:
            header = None
        if header is not None and header == getattr(local, "header", None):
            return int(local.version)
        try:
            version = int(self._reader().execute("PRAGMA data_version").fetchone()[0])
        except sqlite3.Error as exc:
            raise storage_error(exc, "read the data version") from exc
        # the header was read *before* the pragma: a commit in between changes it for the next call
        local.header, local.version = header, version
        return version

    def read_token(self) -> tuple[int, int]:
        """(this thread's read connection, its :meth:`data_version`): equal tokens mean nothing was
        committed between the two calls. Unlike the bare data version, a token from another thread or
        from a connection since released never equals one of this connection's, so callers may keep
        tokens across threads."""
        version = self.data_version()  # opens the connection first when the thread has none
        return int(getattr(self._local, "serial", 0)), version

    # -- collections -------------------------------------------------------------------------------
    @_typed_errors("create the collection")
    def create_collection(self, name: str, config: str) -> CollectionRow:
        with self._write() as conn:
            try:
                cur = conn.execute(
                    "INSERT INTO collections(name, config, created) VALUES (?, ?, ?)",
                    (name, config, time.time()),
                )
            except sqlite3.IntegrityError:
                from ..errors import CollectionExistsError

                raise CollectionExistsError(
                    f"collection {name!r} already exists; use get_collection({name!r}) or "
                    "get_or_create_collection"
                ) from None
            cid = int(cur.lastrowid or 0)
        return CollectionRow(cid, name, config, 0, 0)

    @_typed_errors("read the collection")
    def get_collection(self, name: str) -> CollectionRow | None:
        row = (
            self._reader()
            .execute("SELECT cid, name, config, seq, pruned_seq FROM collections WHERE name = ?", (name,))
            .fetchone()
        )
        return CollectionRow(*row) if row else None

    @_typed_errors("list collections")
    def list_collections(self) -> list[str]:
        return [r[0] for r in self._reader().execute("SELECT name FROM collections ORDER BY name")]

    @_typed_errors("store the collection's configuration")
    def set_config(self, cid: int, config: str) -> None:
        with self._write() as conn:
            conn.execute("UPDATE collections SET config = ? WHERE cid = ?", (config, cid))

    @_typed_errors("drop the collection")
    def drop_collection(self, cid: int) -> None:
        with self._write() as conn:
            conn.execute(
                "DELETE FROM vectors WHERE label IN (SELECT label FROM records WHERE cid = ?)", (cid,)
            )
            conn.execute("DELETE FROM records WHERE cid = ?", (cid,))
            conn.execute("DELETE FROM deletions WHERE cid = ?", (cid,))
            conn.execute("DELETE FROM snapshots WHERE cid = ?", (cid,))
            conn.execute("DELETE FROM feedback WHERE cid = ?", (cid,))
            conn.execute("DELETE FROM personalization WHERE cid = ?", (cid,))
            conn.execute("DELETE FROM collections WHERE cid = ?", (cid,))

    @_typed_errors("read the collection's sequence number")
    def seq(self, cid: int) -> tuple[int, int]:
        """(seq, pruned_seq) of a collection as committed."""
        row = (
            self._reader().execute("SELECT seq, pruned_seq FROM collections WHERE cid = ?", (cid,)).fetchone()
        )
        if row is None:
            from ..errors import CollectionNotFoundError

            raise CollectionNotFoundError(f"collection #{cid} was dropped")
        return int(row[0]), int(row[1])

    # -- writes ------------------------------------------------------------------------------------
    @_typed_errors("write the records")
    def put(
        self,
        cid: int,
        ids: Sequence[str],
        vectors: Sequence[bytes],
        documents: Sequence[str | None] | None,
        metadatas: Sequence[str | None] | None,
        *,
        upsert: bool,
    ) -> WriteResult:
        """Insert (or, with ``upsert``, replace) a batch atomically.

        ``documents`` / ``metadatas`` None: replaced records keep theirs, new ones get none. The kept
        values are read in this write transaction, so no other process's write can slip in between.

        Raises:
            DuplicateIdError: ``upsert`` is False and an id is already stored; nothing is written.
        """
        with self._write() as conn:
            existing, kept_meta = _put.existing(conn, cid, ids)
            if existing and not upsert:
                from ..errors import DuplicateIdError

                first = next(i for i in ids if i in existing)
                raise DuplicateIdError(
                    f"id {first!r} is already stored ({len(existing)} of {len(ids)} ids in this batch are); "
                    "add() never replaces: use upsert() to replace records"
                )
            seq = self._bump(conn, cid)
            if existing:
                _put.replace(conn, seq, ids, vectors, documents, metadatas, existing)
            fresh = [i for i, rid in enumerate(ids) if rid not in existing]
            new_labels = _put.insert(conn, cid, seq, ids, vectors, documents, metadatas, fresh)
            labels = [existing[rid] if rid in existing else new_labels[rid] for rid in ids]
            created = [rid not in existing for rid in ids]
        metas_after = [kept_meta.get(rid) for rid in ids] if metadatas is None else None
        return WriteResult(labels, created, seq, metas_after)

    @_typed_errors("update the records")
    def update(
        self,
        cid: int,
        ids: Sequence[str],
        documents: Sequence[str | None] | None,
        metadatas: Sequence[str | None] | None,
    ) -> WriteResult:
        """Replace documents and/or metadata of existing records (vectors unchanged); all ids must exist."""
        with self._write() as conn:
            found: dict[str, int] = {}
            for chunk in _chunks(ids):
                marks = ",".join("?" * len(chunk))
                found.update(
                    conn.execute(
                        f"SELECT id, label FROM records WHERE cid = ? AND id IN ({marks})", (cid, *chunk)
                    ).fetchall()
                )
            missing = [i for i in ids if i not in found]
            if missing:
                from ..errors import NotFoundError

                raise NotFoundError(
                    f"cannot update {len(missing)} id(s) that are not stored, e.g. {missing[0]!r}; "
                    "nothing was changed (use upsert to create records)"
                )
            seq = self._bump(conn, cid)
            if documents is not None:
                conn.executemany(
                    "UPDATE records SET document = ?, seq = ? WHERE label = ?",
                    [(documents[i], seq, found[r]) for i, r in enumerate(ids)],
                )
            if metadatas is not None:
                conn.executemany(
                    "UPDATE records SET metadata = ?, seq = ? WHERE label = ?",
                    [(metadatas[i], seq, found[r]) for i, r in enumerate(ids)],
                )
            if documents is None and metadatas is None:
                conn.executemany("UPDATE records SET seq = ? WHERE label = ?", [(seq, found[r]) for r in ids])
        return WriteResult([found[r] for r in ids], [False] * len(ids), seq)

    @_typed_errors("delete the records")
    def delete_ids(self, cid: int, ids: Sequence[str]) -> tuple[list[int], int]:
        """Delete records by id; returns (deleted labels, seq). Absent ids are skipped."""
        with self._write() as conn:
            labels: list[int] = []
            for chunk in _chunks(ids):
                marks = ",".join("?" * len(chunk))
                labels.extend(
                    r[0]
                    for r in conn.execute(
                        f"SELECT label FROM records WHERE cid = ? AND id IN ({marks})", (cid, *chunk)
                    )
                )
            return labels, self._delete_labels(conn, cid, labels)

    @_typed_errors("delete the records")
    def delete_where(self, cid: int, where: str, params: Sequence[Any]) -> tuple[list[int], int]:
        """Delete the records matching a SQL condition over ``metadata``; returns (labels, seq)."""
        with self._write() as conn:
            labels = [
                r[0]
                for r in conn.execute(
                    f"SELECT label FROM records WHERE cid = ? AND ({where})", (cid, *params)
                )
            ]
            return labels, self._delete_labels(conn, cid, labels)

    def _delete_labels(self, conn: sqlite3.Connection, cid: int, labels: list[int]) -> int:
        if not labels:
            return int(conn.execute("SELECT seq FROM collections WHERE cid = ?", (cid,)).fetchone()[0])
        seq = self._bump(conn, cid)
        conn.executemany("DELETE FROM records WHERE label = ?", [(lb,) for lb in labels])
        conn.executemany("DELETE FROM vectors WHERE label = ?", [(lb,) for lb in labels])
        conn.executemany(
            "INSERT INTO deletions(cid, label, seq) VALUES (?, ?, ?)", [(cid, lb, seq) for lb in labels]
        )
        return seq

    @_typed_errors("record the index snapshot")
    def begin_snapshot(self, cid: int, snapshot_id: str, seq: int) -> None:
        """Vouch in advance for a snapshot about to be written (see :class:`SnapshotRecord`).

        Safe before the files exist: a snapshot is trusted only when its manifest names this id, and a
        manifest appears only once its files are durable. Nothing is pruned here.
        """
        with self._write() as conn:
            conn.execute(
                "INSERT INTO snapshots(cid, pending_id, pending_seq) VALUES (?, ?, ?) ON CONFLICT(cid) "
                "DO UPDATE SET pending_id = excluded.pending_id, pending_seq = excluded.pending_seq",
                (cid, snapshot_id, seq),
            )

    @_typed_errors("record the index snapshot")
    def record_snapshot(self, cid: int, snapshot_id: str, seq: int) -> None:
        """Vouch for a snapshot written to disk, and forget the deletions it contains, in one commit.

        Call only after the snapshot's files and manifest are durable, under the collection's
        snapshot lock: from this commit on, a replay that starts from an older snapshot cannot see
        those deletions, so that older snapshot must never be loaded again (its id no longer matches).
        """
        with self._write() as conn:
            conn.execute(
                "INSERT INTO snapshots(cid, snapshot_id, seq) VALUES (?, ?, ?) ON CONFLICT(cid) DO UPDATE "
                "SET snapshot_id = excluded.snapshot_id, seq = excluded.seq, pending_id = NULL, "
                "pending_seq = NULL",
                (cid, snapshot_id, seq),
            )
            conn.execute("DELETE FROM deletions WHERE cid = ? AND seq <= ?", (cid, seq))
            conn.execute("UPDATE collections SET pruned_seq = MAX(pruned_seq, ?) WHERE cid = ?", (seq, cid))

    @_typed_errors("read the index snapshot record")
    def snapshot_record(self, cid: int) -> SnapshotRecord | None:
        """The snapshot this store vouches for (see :meth:`record_snapshot`), if any."""
        row = (
            self._reader()
            .execute("SELECT snapshot_id, seq, pending_id, pending_seq FROM snapshots WHERE cid = ?", (cid,))
            .fetchone()
        )
        return SnapshotRecord(*row) if row else None

    @staticmethod
    def _bump(conn: sqlite3.Connection, cid: int) -> int:
        row = conn.execute(
            "UPDATE collections SET seq = seq + 1 WHERE cid = ? RETURNING seq", (cid,)
        ).fetchone()
        if row is None:
            from ..errors import CollectionNotFoundError

            raise CollectionNotFoundError(f"collection #{cid} was dropped")
        return int(row[0])

    # -- feedback (relevance feedback events and personalization settings; see personalize/) ---------
    # Feedback rows are not record writes: they leave the collection's ``seq`` alone, so no index replay
    # or result-cache invalidation follows one. Durability is the store's rule: a returned eid is committed.
    @_typed_errors("store the feedback event")
    def add_feedback(
        self,
        cid: int,
        user: str,
        rid: str,
        *,
        session: str | None,
        relevant: bool | None,
        rating: float | None,
        dwell_s: float | None,
        query: bytes | None,
        query_text: str | None,
        ts: float,
    ) -> int:
        """Append one event for a stored record; returns its ``eid`` (committed when this returns).

        Raises:
            NotFoundError: ``rid`` is not stored; nothing is written. Checked in the write transaction,
                so a concurrent delete cannot slip between the check and the insert.
        """
        with self._write() as conn:
            if conn.execute("SELECT 1 FROM records WHERE cid = ? AND id = ?", (cid, rid)).fetchone() is None:
                from ..errors import NotFoundError

                raise NotFoundError(
                    f"feedback is for a stored record; there is no record with id {rid!r} in this "
                    "collection (was it deleted?)"
                )
            cur = conn.execute(
                "INSERT INTO feedback(cid, user, session, id, relevant, rating, dwell_s, query, query_text, "
                "ts) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    cid,
                    user,
                    session,
                    rid,
                    None if relevant is None else int(relevant),
                    rating,
                    dwell_s,
                    query,
                    query_text,
                    ts,
                ),
            )
            return int(cur.lastrowid or 0)

    @_typed_errors("read feedback events")
    def feedback_since(self, cid: int, user: str, after_eid: int = 0) -> list[FeedbackRow]:
        """A user's events with ``eid > after_eid``, oldest first."""
        rows = self._reader().execute(
            "SELECT eid, id, session, relevant, rating, dwell_s, query, query_text, ts FROM feedback "
            "WHERE cid = ? AND user = ? AND eid > ? ORDER BY eid",
            (cid, user, after_eid),
        )
        return [FeedbackRow._make(r) for r in rows]

    @_typed_errors("read the feedback version")
    def feedback_version(self, cid: int, user: str) -> tuple[int, int]:
        """(largest ``eid``, number) of a user's events ((0, 0): none): the eid changes with every event,
        the number with a deletion. One indexed range read (a few us for hundreds of events)."""
        row = (
            self._reader()
            .execute("SELECT MAX(eid), COUNT(*) FROM feedback WHERE cid = ? AND user = ?", (cid, user))
            .fetchone()
        )
        return int(row[0] or 0), int(row[1])

    @_typed_errors("delete the user's feedback")
    def forget_feedback(self, cid: int, user: str) -> int:
        """Delete every event of a user in a collection; returns how many were deleted."""
        with self._write() as conn:
            return int(conn.execute("DELETE FROM feedback WHERE cid = ? AND user = ?", (cid, user)).rowcount)

    @_typed_errors("read the personalization settings")
    def personalization(self, cid: int) -> str | None:
        """The collection's stored personalization settings (JSON), or None when never set."""
        row = self._reader().execute("SELECT config FROM personalization WHERE cid = ?", (cid,)).fetchone()
        return None if row is None else str(row[0])

    @_typed_errors("store the personalization settings")
    def set_personalization(self, cid: int, config: str) -> None:
        """Replace the collection's personalization settings (JSON)."""
        with self._write() as conn:
            conn.execute(
                "INSERT INTO personalization(cid, config) VALUES (?, ?) "
                "ON CONFLICT(cid) DO UPDATE SET config = excluded.config",
                (cid, config),
            )

    # -- reads -------------------------------------------------------------------------------------
    @_typed_errors("read records")
    def rows_by_labels(
        self, cid: int, labels: Sequence[int], *, vectors: bool = False
    ) -> dict[int, StoredRow]:
        """label -> row for the labels still stored (``vector`` None unless ``vectors``).

        Only rows of collection ``cid`` come back: a label an index should not hold (a snapshot of
        another collection that slipped past every check) finds no row, so it never becomes a hit.
        This is the search hot path: one statement per call for up to 500 labels, its text cached per
        length so SQLite's statement cache hits.
        """
        conn = self._reader()
        n = len(labels)
        if n <= _CHUNK:
            key = (n, vectors)
            sql = self._label_sql.get(key)
            if sql is None:
                cols = "label, id, document, metadata, " + (_VEC if vectors else "NULL")
                sql = self._label_sql[key] = (
                    # "+cid": a check on each row found by label, never an index choice (on
                    # "cid = ?" SQLite would walk the whole collection's (cid, id) index instead)
                    f"SELECT {cols} FROM records WHERE label IN ({','.join('?' * n)}) AND +cid = ?"
                )
            make = StoredRow._make
            return {row[0]: make(row) for row in conn.execute(sql, (*labels, cid))}
        out: dict[int, StoredRow] = {}
        for chunk in _chunks(labels):
            out.update(self.rows_by_labels(cid, chunk, vectors=vectors))
        return out

    def vectors_by_labels(self, cid: int, labels: Sequence[int], dim: int) -> np.ndarray:
        """The stored float32 vectors of ``labels``, one row each in order; NaN rows for labels not
        stored in collection ``cid`` (deleted meanwhile, or never this collection's).

        What a re-rank reads: vectors only, no id, document or metadata (~2.5 us a row where
        :meth:`rows_by_labels` with vectors takes ~7 us). One statement per 500 labels.
        """
        conn = self._reader()
        found: dict[int, bytes] = {}
        for chunk in _chunks(labels):
            n = len(chunk)
            key = (n, "vectors-only")
            sql = self._label_sql.get(key)
            if sql is None:
                sql = self._label_sql[key] = (
                    f"SELECT label, {_VEC} FROM records WHERE label IN ({','.join('?' * n)}) AND +cid = ?"
                )
            found.update(conn.execute(sql, (*chunk, cid)).fetchall())
        wanted = list(labels)
        if len(found) == len(wanted) and all(v is not None for v in found.values()):
            joined = b"".join([found[label] for label in wanted])
            return np.frombuffer(joined, np.float32).reshape(len(wanted), dim).copy()
        out = np.full((len(wanted), dim), np.nan, np.float32)
        for i, label in enumerate(wanted):
            blob = found.get(label)
            if blob is not None:
                out[i] = np.frombuffer(blob, np.float32)
        return out

    def sample_labels(self, cid: int, n: int) -> np.ndarray:
        """Up to ``n`` labels of collection ``cid``, drawn uniformly (a training sample), sorted."""
        rows = (
            self._reader()
            .execute("SELECT label FROM records WHERE cid = ? ORDER BY random() LIMIT ?", (cid, int(n)))
            .fetchall()
        )
        return np.sort(np.fromiter((r[0] for r in rows), np.int64, len(rows)))

    def scan_vectors(self, cid: int, chunk: int = 8192) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Every stored vector of a collection, ``chunk`` at a time: (labels, raw float32 rows), in no
        particular order. One statement: ~0.7 s for 100K x 384, where reading them by label takes ~3 s.
        Rows written after the scan started may or may not come back; the caller filters by label.
        Background scans pass :func:`scan_step` rows (a step holds the GIL while it runs)."""
        conn = self._reader()
        try:
            cur = conn.execute(
                "SELECT r.label, v.vector FROM records r JOIN vectors v ON v.label = r.label WHERE r.cid = ?",
                (cid,),
            )
            while True:
                rows = cur.fetchmany(chunk)
                if not rows:
                    return
                labels = np.fromiter((r[0] for r in rows), np.int64, len(rows))
                blob = b"".join([r[1] for r in rows])
                yield labels, np.frombuffer(blob, np.float32).reshape(len(rows), -1)
        except sqlite3.Error as exc:
            raise storage_error(exc, "read vectors") from exc

    def scan_rows(self, cid: int, chunk: int = 2048) -> Iterator[list[StoredRow]]:
        """A collection's rows (no vectors), newest label first, ``chunk`` at a time: what the row cache
        warms from after an open. One statement; rows written after it started may be missed."""
        conn = self._reader()
        try:
            cur = conn.execute(
                "SELECT label, id, document, metadata, NULL FROM records WHERE cid = ? ORDER BY label DESC",
                (cid,),
            )
            make = StoredRow._make
            while True:
                rows = cur.fetchmany(chunk)
                if not rows:
                    return
                yield [make(r) for r in rows]
        except sqlite3.Error as exc:
            raise storage_error(exc, "read records") from exc

    @_typed_errors("read records")
    def rows_by_ids(self, cid: int, ids: Sequence[str], *, vectors: bool = True) -> dict[str, StoredRow]:
        """id -> row for the ids stored (``vector`` None unless ``vectors``)."""
        cols = "label, id, document, metadata, " + (_VEC if vectors else "NULL")
        conn = self._reader()
        out: dict[str, StoredRow] = {}
        for chunk in _chunks(ids):
            marks = ",".join("?" * len(chunk))
            for row in conn.execute(
                f"SELECT {cols} FROM records WHERE cid = ? AND id IN ({marks})", (cid, *chunk)
            ):
                out[row[1]] = StoredRow._make(row)
        return out

    @_typed_errors("read records")
    def metadata_kinds(self, cid: int, path: str) -> set[str]:
        """The JSON types (``json_type`` names) of a metadata field's values, and of its list items.

        Args:
            cid: The collection.
            path: The field's JSON path (``$."name"``).
        """
        rows = self._reader().execute(
            "SELECT DISTINCT _e.type FROM records, json_each(records.metadata, ?) AS _e "
            "WHERE records.cid = ? AND typeof(_e.key) <> 'text'",
            (path, cid),
        )
        return {str(r[0]) for r in rows}

    @_typed_errors("read records")
    def labels_where(self, cid: int, where: str | None, params: Sequence[Any] = ()) -> list[int]:
        cond = f" AND ({where})" if where else ""
        return [
            r[0]
            for r in self._reader().execute(f"SELECT label FROM records WHERE cid = ?{cond}", (cid, *params))
        ]

    @_typed_errors("count records")
    def count(self, cid: int, where: str | None = None, params: Sequence[Any] = ()) -> int:
        cond = f" AND ({where})" if where else ""
        return int(
            self._reader()
            .execute(f"SELECT COUNT(*) FROM records WHERE cid = ?{cond}", (cid, *params))
            .fetchone()[0]
        )

    @_typed_errors("read records")
    def scan(
        self,
        cid: int,
        where: str | None,
        params: Sequence[Any],
        *,
        after_label: int,
        limit: int,
        vectors: bool,
    ) -> list[StoredRow]:
        """A page of rows in label order after ``after_label`` (``vector`` None unless ``vectors``)."""
        cols = "label, id, document, metadata, " + (_VEC if vectors else "NULL")
        cond = f" AND ({where})" if where else ""
        return list(
            map(
                StoredRow._make,
                self._reader().execute(
                    f"SELECT {cols} FROM records WHERE cid = ? AND label > ?{cond} ORDER BY label LIMIT ?",
                    (cid, after_label, *params, limit),
                ),
            )
        )

    def changes_since(
        self, cid: int, seq: int, *, page: int = 20_000
    ) -> Iterator[list[tuple[int, bytes, str | None]]]:
        """Pages of (label, vector, metadata) written after ``seq``, in label order."""
        after = -1
        conn = self._reader()
        while True:
            try:
                rows = conn.execute(
                    f"SELECT label, {_VEC}, metadata FROM records WHERE cid = ? AND seq > ? AND label > ? "
                    "ORDER BY label LIMIT ?",
                    (cid, seq, after, page),
                ).fetchall()
            except sqlite3.Error as exc:
                raise storage_error(exc, "read changes") from exc
            if not rows:
                return
            yield rows
            after = rows[-1][0]

    @_typed_errors("read deletions")
    def deletions_since(self, cid: int, seq: int) -> list[int]:
        return [
            r[0]
            for r in self._reader().execute(
                "SELECT label FROM deletions WHERE cid = ? AND seq > ?", (cid, seq)
            )
        ]

    def fts(self, cid: int, query: str, limit: int) -> list[tuple[int, float]]:
        """BM25 full-text search: (label, bm25) best first (SQLite's bm25 is lower-is-better)."""
        try:
            return (
                self._reader()
                .execute(
                    "SELECT rowid, bm25(records_fts) AS s FROM records_fts "
                    "WHERE records_fts MATCH ? AND cid = ? "
                    "ORDER BY s LIMIT ?",
                    (query, cid, limit),
                )
                .fetchall()
            )
        except sqlite3.OperationalError as exc:
            from ..errors import InvalidArgumentError

            if "fts5" not in str(exc).lower() and "syntax" not in str(exc).lower():
                raise storage_error(exc, "search the full-text index") from exc
            raise InvalidArgumentError(f"full-text query {query[:200]!r} could not be parsed: {exc}") from exc
        except sqlite3.Error as exc:
            raise storage_error(exc, "search the full-text index") from exc
