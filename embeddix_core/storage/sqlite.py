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
"""

from __future__ import annotations

import contextlib
import mmap
import os
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..config import Durability
from ..errors import ClosedError, FormatVersionError, StorageError

__all__ = ["FORMAT_VERSION", "CollectionRow", "Store"]

FORMAT_VERSION = 1
_MAGIC = "embeddix"
_CHUNK = 500
# Vectors live in their own table: a search reads only ids, documents and metadata, and keeping 1.5 KB
# vectors out of those rows lets SQLite's page cache hold every one of them (measured: the 10-row fetch
# behind a search went from ~70 us to ~20 us on 100,000 records).
_VEC = "(SELECT vector FROM vectors WHERE vectors.label = records.label)"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS collections(
    cid INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL UNIQUE,
    config TEXT NOT NULL,
    created REAL NOT NULL,
    seq INTEGER NOT NULL DEFAULT 0,
    pruned_seq INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS records(
    label INTEGER PRIMARY KEY AUTOINCREMENT,
    cid INTEGER NOT NULL,
    id TEXT NOT NULL,
    document TEXT,
    metadata TEXT,
    seq INTEGER NOT NULL,
    UNIQUE(cid, id)
);
CREATE INDEX IF NOT EXISTS records_seq ON records(cid, seq);
CREATE TABLE IF NOT EXISTS vectors(label INTEGER PRIMARY KEY, vector BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS deletions(cid INTEGER NOT NULL, label INTEGER NOT NULL, seq INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS deletions_seq ON deletions(cid, seq);
CREATE VIRTUAL TABLE IF NOT EXISTS records_fts USING fts5(
    document, cid UNINDEXED, content='records', content_rowid='label', tokenize='porter unicode61'
);
CREATE TRIGGER IF NOT EXISTS records_ai AFTER INSERT ON records WHEN new.document IS NOT NULL BEGIN
    INSERT INTO records_fts(rowid, document, cid) VALUES (new.label, new.document, new.cid);
END;
CREATE TRIGGER IF NOT EXISTS records_ad AFTER DELETE ON records WHEN old.document IS NOT NULL BEGIN
    INSERT INTO records_fts(records_fts, rowid, document, cid)
        VALUES ('delete', old.label, old.document, old.cid);
END;
CREATE TRIGGER IF NOT EXISTS records_au AFTER UPDATE OF document ON records BEGIN
    INSERT INTO records_fts(records_fts, rowid, document, cid)
        SELECT 'delete', old.label, old.document, old.cid WHERE old.document IS NOT NULL;
    INSERT INTO records_fts(rowid, document, cid)
        SELECT new.label, new.document, new.cid WHERE new.document IS NOT NULL;
END;
"""


@dataclass(frozen=True, slots=True)
class CollectionRow:
    """A collection as stored."""

    cid: int
    name: str
    config: str
    seq: int
    pruned_seq: int


@dataclass(frozen=True, slots=True)
class WriteResult:
    """What a write transaction did: labels in input order, which were new, and the new ``seq``."""

    labels: list[int]
    created: list[bool]
    seq: int


def _chunks(seq: Sequence[Any], size: int = _CHUNK) -> Iterator[Sequence[Any]]:
    for i in range(0, len(seq), size):
        yield seq[i : i + size]


class Store:
    """SQLite-backed durable store for all collections of one data directory.

    Args:
        path: The database file, or None for a private in-memory database.
        durability: What is durable when a write returns (see module docstring).
        busy_timeout_ms: How long to wait for another process's write lock.
    """

    def __init__(
        self, path: Path | None, durability: Durability = Durability.FULL, busy_timeout_ms: int = 30_000
    ) -> None:
        self.path = path
        self._busy_ms = busy_timeout_ms
        self._sync = "FULL" if durability == Durability.FULL else "NORMAL"
        self._lock = threading.RLock()
        self._local = threading.local()
        self._readers: list[sqlite3.Connection] = []
        self._closed = False
        self._label_sql: dict[tuple[int, bool], str] = {}
        self._conn = self._connect()
        with self._lock:
            self._init_schema()
        self._shm = self._map_wal_index()
        self._seen_header: bytes | None = None
        self._seen_version = 0

    def _map_wal_index(self) -> mmap.mmap | None:
        """Map SQLite's shared WAL index (``<db>-shm``) read-only, to notice commits without a query.

        Every commit, by any process, rewrites the index header (frame count, change counter, salts):
        when its first 48 bytes are unchanged since our last ``PRAGMA data_version``, nothing was
        committed, and the ~4 us query can be skipped (it is a fifth of the Python around a search).
        The header is only a hint: any difference, torn read or missing file falls back to the query.
        """
        if self.path is None:
            return None
        try:
            with open(f"{self.path}-shm", "rb") as f:
                if os.fstat(f.fileno()).st_size < 48:
                    return None
                return mmap.mmap(f.fileno(), 48, access=mmap.ACCESS_READ)
        except (OSError, ValueError):
            return None

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
            conn.execute("PRAGMA cache_size=-65536")  # 64 MiB page cache per connection
        except sqlite3.DatabaseError as exc:
            raise StorageError(f"cannot open the store at {target}: {exc}") from exc
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
            with self._lock:
                self._readers.append(conn)
        return conn

    def _init_schema(self) -> None:
        conn = self._conn
        try:
            # One script in one transaction: every statement is idempotent (IF NOT EXISTS), so two
            # processes creating the same store at once both succeed.
            conn.executescript("BEGIN IMMEDIATE;" + _SCHEMA + "COMMIT;")
            conn.execute("BEGIN IMMEDIATE")
            rows = dict(conn.execute("SELECT key, value FROM meta").fetchall())
            if not rows:
                conn.execute(
                    "INSERT INTO meta VALUES ('magic', ?), ('format_version', ?)",
                    (_MAGIC, str(FORMAT_VERSION)),
                )
            elif rows.get("magic") != _MAGIC:
                raise FormatVersionError(
                    f"{self.path} is not an Embeddix store (magic {rows.get('magic')!r})"
                )
            elif int(rows.get("format_version", "0")) > FORMAT_VERSION:
                raise FormatVersionError(
                    f"{self.path} has store format {rows['format_version']}; this Embeddix reads up to "
                    f"{FORMAT_VERSION}. Upgrade embeddix to open it."
                )
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

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
            if self._shm is not None:
                self._shm.close()
                self._shm = None
            try:
                if self.path is not None:
                    self._conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
            except sqlite3.Error:
                pass
            self._conn.close()

    # -- transactions ------------------------------------------------------------------------------
    def _write(self) -> _WriteTxn:
        if self._closed:
            raise ClosedError("the database is closed; open it again with Embeddix.open(path)")
        return _WriteTxn(self)

    def write_data_version(self) -> int:
        """A number that changes when another connection or process commits (not for our own writes)."""
        shm = self._shm
        try:
            header = shm[:48] if shm is not None else None
        except ValueError:  # unmapped by a concurrent close()
            header = None
        if header is not None and header == self._seen_header:
            return self._seen_version
        with self._lock:
            if self._closed:
                raise ClosedError("the database is closed; open it again with Embeddix.open(path)")
            version = int(self._conn.execute("PRAGMA data_version").fetchone()[0])
            # the header was read *before* the query: a commit in between shows up as a changed
            # header on the next call, which then asks SQLite again
            self._seen_header, self._seen_version = header, version
            return version

    # -- collections -------------------------------------------------------------------------------
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

    def get_collection(self, name: str) -> CollectionRow | None:
        row = (
            self._reader()
            .execute("SELECT cid, name, config, seq, pruned_seq FROM collections WHERE name = ?", (name,))
            .fetchone()
        )
        return CollectionRow(*row) if row else None

    def list_collections(self) -> list[str]:
        return [r[0] for r in self._reader().execute("SELECT name FROM collections ORDER BY name")]

    def set_config(self, cid: int, config: str) -> None:
        with self._write() as conn:
            conn.execute("UPDATE collections SET config = ? WHERE cid = ?", (config, cid))

    def drop_collection(self, cid: int) -> None:
        with self._write() as conn:
            conn.execute(
                "DELETE FROM vectors WHERE label IN (SELECT label FROM records WHERE cid = ?)", (cid,)
            )
            conn.execute("DELETE FROM records WHERE cid = ?", (cid,))
            conn.execute("DELETE FROM deletions WHERE cid = ?", (cid,))
            conn.execute("DELETE FROM collections WHERE cid = ?", (cid,))

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
    def put(
        self,
        cid: int,
        ids: Sequence[str],
        vectors: Sequence[bytes],
        documents: Sequence[str | None],
        metadatas: Sequence[str | None],
        *,
        upsert: bool,
    ) -> WriteResult:
        """Insert (or, with ``upsert``, replace) a batch atomically.

        Raises:
            DuplicateIdError: ``upsert`` is False and an id is already stored; nothing is written.
        """
        with self._write() as conn:
            existing: dict[str, int] = {}
            for chunk in _chunks(ids):
                marks = ",".join("?" * len(chunk))
                existing.update(
                    conn.execute(
                        f"SELECT id, label FROM records WHERE cid = ? AND id IN ({marks})", (cid, *chunk)
                    ).fetchall()
                )
            if existing and not upsert:
                from ..errors import DuplicateIdError

                first = next(i for i in ids if i in existing)
                raise DuplicateIdError(
                    f"id {first!r} is already stored ({len(existing)} of {len(ids)} ids in this batch are); "
                    "add() never replaces: use upsert() to replace records"
                )
            seq = self._bump(conn, cid)
            labels: list[int] = []
            created: list[bool] = []
            if existing:
                conn.executemany(
                    "UPDATE vectors SET vector = ? WHERE label = ?",
                    [(vectors[i], existing[rid]) for i, rid in enumerate(ids) if rid in existing],
                )
                conn.executemany(
                    "UPDATE records SET document = ?, metadata = ?, seq = ? WHERE label = ?",
                    [
                        (documents[i], metadatas[i], seq, existing[rid])
                        for i, rid in enumerate(ids)
                        if rid in existing
                    ],
                )
            fresh = [i for i, rid in enumerate(ids) if rid not in existing]
            first_label = None
            if fresh:
                # AUTOINCREMENT labels inside one write transaction are consecutive (we are the only
                # writer, across processes too, under BEGIN IMMEDIATE), so read the last and count back.
                conn.executemany(
                    "INSERT INTO records(cid, id, document, metadata, seq) VALUES (?,?,?,?,?)",
                    [(cid, ids[i], documents[i], metadatas[i], seq) for i in fresh],
                )
                last = int(conn.execute("SELECT seq FROM sqlite_sequence WHERE name='records'").fetchone()[0])
                first_label = last - len(fresh) + 1
            new_labels = {}
            if first_label is not None:
                new_labels = {ids[i]: first_label + j for j, i in enumerate(fresh)}
                conn.executemany(
                    "INSERT INTO vectors(label, vector) VALUES (?, ?)",
                    [(first_label + j, vectors[i]) for j, i in enumerate(fresh)],
                )
            for rid in ids:
                if rid in existing:
                    labels.append(existing[rid])
                    created.append(False)
                else:
                    labels.append(new_labels[rid])
                    created.append(True)
        return WriteResult(labels, created, seq)

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

    def prune_deletions(self, cid: int, upto_seq: int) -> None:
        """Forget deletions at or below a snapshot's seq (they are in the snapshot)."""
        with self._write() as conn:
            conn.execute("DELETE FROM deletions WHERE cid = ? AND seq <= ?", (cid, upto_seq))
            conn.execute(
                "UPDATE collections SET pruned_seq = MAX(pruned_seq, ?) WHERE cid = ?", (upto_seq, cid)
            )

    @staticmethod
    def _bump(conn: sqlite3.Connection, cid: int) -> int:
        row = conn.execute(
            "UPDATE collections SET seq = seq + 1 WHERE cid = ? RETURNING seq", (cid,)
        ).fetchone()
        if row is None:
            from ..errors import CollectionNotFoundError

            raise CollectionNotFoundError(f"collection #{cid} was dropped")
        return int(row[0])

    # -- reads -------------------------------------------------------------------------------------
    def rows_by_labels(self, labels: Sequence[int], *, vectors: bool = False) -> dict[int, tuple[Any, ...]]:
        """label -> (label, id, document, metadata_json[, vector_bytes]) for the labels still stored.

        This is the search hot path: one statement per call for up to 500 labels, its text cached per
        length so SQLite's statement cache hits.
        """
        conn = self._reader()
        n = len(labels)
        if n <= _CHUNK:
            key = (n, vectors)
            sql = self._label_sql.get(key)
            if sql is None:
                cols = "label, id, document, metadata" + (f", {_VEC}" if vectors else "")
                sql = self._label_sql[key] = (
                    f"SELECT {cols} FROM records WHERE label IN ({','.join('?' * n)})"
                )
            return {row[0]: row for row in conn.execute(sql, labels)}
        out: dict[int, tuple[Any, ...]] = {}
        for chunk in _chunks(labels):
            out.update(self.rows_by_labels(chunk, vectors=vectors))
        return out

    def rows_by_ids(
        self, cid: int, ids: Sequence[str], *, vectors: bool = True
    ) -> dict[str, tuple[Any, ...]]:
        """id -> (label, document, metadata_json, vector_bytes|None)."""
        cols = "id, label, document, metadata, " + (_VEC if vectors else "NULL")
        conn = self._reader()
        out: dict[str, tuple[Any, ...]] = {}
        for chunk in _chunks(ids):
            marks = ",".join("?" * len(chunk))
            for row in conn.execute(
                f"SELECT {cols} FROM records WHERE cid = ? AND id IN ({marks})", (cid, *chunk)
            ):
                out[row[0]] = row[1:]
        return out

    def labels_where(self, cid: int, where: str | None, params: Sequence[Any] = ()) -> list[int]:
        cond = f" AND ({where})" if where else ""
        return [
            r[0]
            for r in self._reader().execute(f"SELECT label FROM records WHERE cid = ?{cond}", (cid, *params))
        ]

    def count(self, cid: int, where: str | None = None, params: Sequence[Any] = ()) -> int:
        cond = f" AND ({where})" if where else ""
        return int(
            self._reader()
            .execute(f"SELECT COUNT(*) FROM records WHERE cid = ?{cond}", (cid, *params))
            .fetchone()[0]
        )

    def scan(
        self,
        cid: int,
        where: str | None,
        params: Sequence[Any],
        *,
        after_label: int,
        limit: int,
        vectors: bool,
    ) -> list[tuple[Any, ...]]:
        """A page of (label, id, document, metadata, vector|None) in label order after ``after_label``."""
        cols = "label, id, document, metadata, " + (_VEC if vectors else "NULL")
        cond = f" AND ({where})" if where else ""
        return (
            self._reader()
            .execute(
                f"SELECT {cols} FROM records WHERE cid = ? AND label > ?{cond} ORDER BY label LIMIT ?",
                (cid, after_label, *params, limit),
            )
            .fetchall()
        )

    def changes_since(
        self, cid: int, seq: int, *, page: int = 20_000
    ) -> Iterator[list[tuple[int, bytes, str | None]]]:
        """Pages of (label, vector, metadata) written after ``seq``, in label order."""
        after = -1
        conn = self._reader()
        while True:
            rows = conn.execute(
                f"SELECT label, {_VEC}, metadata FROM records WHERE cid = ? AND seq > ? AND label > ? "
                "ORDER BY label LIMIT ?",
                (cid, seq, after, page),
            ).fetchall()
            if not rows:
                return
            yield rows
            after = rows[-1][0]

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

            raise InvalidArgumentError(f"full-text query {query!r} could not be parsed: {exc}") from exc


class _WriteTxn:
    """``with store._write() as conn``: BEGIN IMMEDIATE under the store lock; COMMIT or ROLLBACK."""

    __slots__ = ("_store",)

    def __init__(self, store: Store) -> None:
        self._store = store

    def __enter__(self) -> sqlite3.Connection:
        self._store._lock.acquire()
        try:
            self._store._conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            self._store._lock.release()
            raise StorageError(f"cannot start a write transaction: {exc}") from exc
        return self._store._conn

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        conn = self._store._conn
        try:
            if exc_type is None:
                try:
                    conn.execute("COMMIT")
                except sqlite3.Error as err:
                    conn.execute("ROLLBACK")
                    raise StorageError(f"commit failed, nothing was written: {err}") from err
            elif conn.in_transaction:
                conn.execute("ROLLBACK")
        finally:
            self._store._lock.release()
