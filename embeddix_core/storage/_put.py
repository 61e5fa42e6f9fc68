"""The steps of ``Store.put`` inside its write transaction: find the stored ids, replace, insert."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence

from ._chunks import chunks

__all__ = ["existing", "insert", "replace"]


def existing(
    conn: sqlite3.Connection, cid: int, ids: Sequence[str]
) -> tuple[dict[str, int], dict[str, str | None]]:
    """(id -> label, id -> metadata JSON) of the ids already stored in collection ``cid``."""
    labels: dict[str, int] = {}
    metas: dict[str, str | None] = {}
    for chunk in chunks(ids):
        marks = ",".join("?" * len(chunk))
        for rid, label, meta in conn.execute(
            f"SELECT id, label, metadata FROM records WHERE cid = ? AND id IN ({marks})", (cid, *chunk)
        ):
            labels[rid] = label
            metas[rid] = meta
    return labels, metas


def replace(
    conn: sqlite3.Connection,
    seq: int,
    ids: Sequence[str],
    vectors: Sequence[bytes],
    documents: Sequence[str | None] | None,
    metadatas: Sequence[str | None] | None,
    stored: dict[str, int],
) -> None:
    """Give stored records their new vector and the columns given (None: kept)."""
    conn.executemany(
        "UPDATE vectors SET vector = ? WHERE label = ?",
        [(vectors[i], stored[rid]) for i, rid in enumerate(ids) if rid in stored],
    )
    # only the columns given: leaving `document` out also leaves the FTS rows alone
    sets = ["seq = ?"]
    cols: list[Sequence[str | None]] = []
    if documents is not None:
        sets.append("document = ?")
        cols.append(documents)
    if metadatas is not None:
        sets.append("metadata = ?")
        cols.append(metadatas)
    conn.executemany(
        f"UPDATE records SET {', '.join(sets)} WHERE label = ?",
        [(seq, *(col[i] for col in cols), stored[rid]) for i, rid in enumerate(ids) if rid in stored],
    )


def insert(
    conn: sqlite3.Connection,
    cid: int,
    seq: int,
    ids: Sequence[str],
    vectors: Sequence[bytes],
    documents: Sequence[str | None] | None,
    metadatas: Sequence[str | None] | None,
    fresh: list[int],
) -> dict[str, int]:
    """Insert the records at positions ``fresh``; returns id -> new label."""
    if not fresh:
        return {}
    # AUTOINCREMENT labels inside one write transaction are consecutive (we are the only writer, across
    # processes too, under BEGIN IMMEDIATE), so read the last and count back.
    conn.executemany(
        "INSERT INTO records(cid, id, document, metadata, seq) VALUES (?,?,?,?,?)",
        [
            (
                cid,
                ids[i],
                documents[i] if documents is not None else None,
                metadatas[i] if metadatas is not None else None,
                seq,
            )
            for i in fresh
        ],
    )
    last = int(conn.execute("SELECT seq FROM sqlite_sequence WHERE name='records'").fetchone()[0])
    first = last - len(fresh) + 1
    rows = [(first + j, vectors[i]) for j, i in enumerate(fresh)]
    conn.executemany("INSERT INTO vectors(label, vector) VALUES (?, ?)", rows)
    return {ids[i]: first + j for j, i in enumerate(fresh)}
