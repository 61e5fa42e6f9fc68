"""The store's on-disk format: its tables, format version and magic, and how a file is checked and created.

Split out of ``sqlite.py`` so that everything one must read to change the format - the schema, the number
that changes with it (``FORMAT_VERSION``, checked against the golden files in ``tests/compat``) and the
open-time check that refuses a newer format or a foreign database - sits in one place, apart from the
store's reads and writes.
"""

from __future__ import annotations

import contextlib
import sqlite3
import uuid
from pathlib import Path

from ..errors import CorruptionError, FormatVersionError

# Tables added later without a version change are additive (``CREATE ... IF NOT EXISTS``, run on every
# open): a store of an earlier release gains them on first open, and an earlier release opening a newer
# store ignores them. So far: ``feedback`` and ``personalization`` (relevance feedback, issue #17; a
# ``feedback.eid`` is AUTOINCREMENT so a user's profile version, the largest eid, never goes back).
# A change that alters or drops what exists bumps FORMAT_VERSION and gets a golden directory.
FORMAT_VERSION = 1
_MAGIC = "embeddix"

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
CREATE TABLE IF NOT EXISTS snapshots(
    cid INTEGER PRIMARY KEY, snapshot_id TEXT, seq INTEGER, pending_id TEXT, pending_seq INTEGER
);
CREATE INDEX IF NOT EXISTS deletions_seq ON deletions(cid, seq);
CREATE TABLE IF NOT EXISTS feedback(
    eid INTEGER PRIMARY KEY AUTOINCREMENT,
    cid INTEGER NOT NULL,
    user TEXT NOT NULL,
    session TEXT,
    id TEXT NOT NULL,
    relevant INTEGER,
    rating REAL,
    dwell_s REAL,
    query BLOB,
    query_text TEXT,
    ts REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS feedback_user ON feedback(cid, user, eid);
CREATE TABLE IF NOT EXISTS personalization(cid INTEGER PRIMARY KEY, config TEXT NOT NULL);
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


def _split_statements(script: str) -> list[str]:
    """The statements of a script (triggers hold ';' inside BEGIN ... END: SQLite tells complete ones)."""
    out: list[str] = []
    buf = ""
    for line in script.splitlines(keepends=True):
        buf += line
        if sqlite3.complete_statement(buf):
            out.append(buf.strip())
            buf = ""
    return out


_SCHEMA_STATEMENTS = _split_statements(_SCHEMA)


def init_schema(conn: sqlite3.Connection, path: Path | None) -> str:
    """Check, then create the schema; returns the store's id (made on first open).

    Order matters: a store of a newer format, or a database that is not a store, is refused *before*
    anything is written to it (creating today's tables first would put back what a newer format
    dropped, and adopt a foreign database). All in one write transaction, so two processes creating
    the same store at once both succeed.
    """
    try:
        conn.execute("BEGIN IMMEDIATE")
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        rows: dict[str, str] = {}
        if "meta" in tables:
            rows = dict(conn.execute("SELECT key, value FROM meta").fetchall())
        if rows:
            _check_meta(rows, path)
        elif tables - {"sqlite_sequence"}:
            raise FormatVersionError(
                f"{path} is an SQLite database but not an Embeddix store (it has tables "
                f"{sorted(tables)[:5]} and no Embeddix metadata); give Embeddix a directory of its own"
            )
        for statement in _SCHEMA_STATEMENTS:  # every one idempotent (IF NOT EXISTS)
            conn.execute(statement)
        if not rows:
            rows = {"magic": _MAGIC, "format_version": str(FORMAT_VERSION)}
            conn.execute(
                "INSERT INTO meta VALUES ('magic', ?), ('format_version', ?)",
                (_MAGIC, str(FORMAT_VERSION)),
            )
        store_id = rows.get("store_id")
        if not store_id:
            # stores made before snapshots were tied to their store get their id on first open
            store_id = uuid.uuid4().hex
            conn.execute("INSERT INTO meta VALUES ('store_id', ?)", (store_id,))
        conn.execute("COMMIT")
        return str(store_id)
    except BaseException:
        if conn.in_transaction:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
        raise


def _check_meta(rows: dict[str, str], path: Path | None) -> None:
    if rows.get("magic") != _MAGIC:
        raise FormatVersionError(f"{path} is not an Embeddix store (magic {rows.get('magic')!r})")
    try:
        version = int(rows.get("format_version", "0"))
    except ValueError:
        raise CorruptionError(
            f"{path} has an unreadable store format {rows.get('format_version')!r}"
        ) from None
    if version > FORMAT_VERSION:
        raise FormatVersionError(
            f"{path} has store format {version}; this Embeddix reads up to "
            f"{FORMAT_VERSION}. Upgrade embeddix to open it."
        )
