"""Export / import of one collection and backup / restore of a whole database, as versioned directories.

**Collection export, format 1** (a directory, written by ``embeddix export``)::

    manifest.json    {"format": "embeddix-collection-export", "format_version": 1, "collection": name,
                      "dim": d, "metric": m, "embedding_model": id | null, "count": n,
                      "config": {the collection's stored parameters}, "embeddix_version": v,
                      "created": ISO-8601 UTC,
                      "files": {"records.jsonl": {"sha256": hex, "bytes": size},
                                "vectors.npy": {"sha256": hex, "bytes": size}}}
    records.jsonl    line i: {"id": str, "document": str | null, "metadata": {...}} (UTF-8)
    vectors.npy      float32 little-endian, shape (n, d), C order; row i is the vector of line i
                     (NumPy's .npy format, read with allow_pickle=False)

**Database backup, format 1** (a directory, written by ``embeddix backup``)::

    manifest.json    {"format": "embeddix-backup", "format_version": 1, "store_format_version": s,
                      "collections": [names], "embeddix_version": v, "created": ISO-8601 UTC,
                      "files": {"embeddix.sqlite3": {"sha256": hex, "bytes": size},
                                "embeddix-mcp-grants.json": {...}  (only when the directory has one)}}
    embeddix.sqlite3 the store, one self-contained SQLite file (rollback journal mode, no -wal)
    embeddix-mcp-grants.json
                     the MCP server's read-only grants between agents, byte for byte (optional; the
                     table ``SIDECAR_FILES`` lists the files of the data directory a backup carries)

No pickle anywhere: JSON, and ``.npy`` written and read with ``allow_pickle=False``. Both are written into a
temporary sibling directory that is renamed to its name only when complete (files fsynced first, the
manifest last), so a directory with that name is always whole; the checksums catch damage after that.

Why a backup holds the SQLite file and nothing derived: the store is the source of truth, and every index
is rebuilt from it when a collection is opened in the restored directory (index snapshots name the store
and the snapshot it recorded, so the ones of another directory are never trusted; see
``storage/sqlite.py``). The MCP server's grants are not derived from the store: they live in their own
file, so a backup carries that file too (a restore without it would silently withdraw every grant). The
server replaces it by an atomic rename, so the one read is always a whole version; a grant made while the
backup runs may or may not be in it, like a write committed after the backup began.

Consistency: the backup uses SQLite's online backup API in one step, inside one read transaction of the
source. In WAL mode readers do not block writers, so writers go on while it runs, and the copy is the
database as of one commit: every write acknowledged before the backup started is in it.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import secrets
import shutil
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import numpy as np

from ..collection import Collection
from ..database import DB_FILE, Embeddix
from ..errors import (
    CollectionExistsError,
    CorruptionError,
    FormatVersionError,
    InvalidArgumentError,
    StorageError,
)
from ..storage._atomic import atomic_write_bytes, fsync_dir, fsync_file
from ..storage.sqlite import FORMAT_VERSION as STORE_FORMAT_VERSION

__all__ = [
    "BACKUP_FORMAT",
    "EXPORT_FORMAT",
    "FORMAT_VERSION",
    "SIDECAR_FILES",
    "backup_database",
    "export_collection",
    "import_collection",
    "restore_database",
]

EXPORT_FORMAT = "embeddix-collection-export"
BACKUP_FORMAT = "embeddix-backup"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
RECORDS = "records.jsonl"
VECTORS = "vectors.npy"
# Records read from the store, and added on import, per round trip / transaction.
BATCH = 1000
# Files of a data directory, besides the store, that a backup carries when present (name -> what it is).
# The core cannot import the MCP server, so the name is written here; tests/ops checks it against
# embeddix_mcp.agents.GRANTS_FILE.
SIDECAR_FILES: dict[str, str] = {
    "embeddix-mcp-grants.json": "the MCP server's read-only grants between agents (embeddix_mcp/agents.py)",
}
# Collection parameters an import passes on to create_collection (the rest of a config is derived).
_CONFIG_KEYS = ("hnsw_m", "ef_construction", "ef_search", "index_threshold", "segment_size", "quantization")


def _version() -> str:
    from .. import __version__

    return __version__


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a file, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def _file_entry(path: Path) -> dict[str, Any]:
    return {"sha256": sha256_file(path), "bytes": path.stat().st_size}


def _fresh_target(out: Path, what: str) -> Path:
    """A temporary sibling of ``out`` to write into; ``out`` must not exist yet (never overwritten)."""
    if out.exists():
        raise InvalidArgumentError(
            f"{what} target {str(out)!r} already exists; expected a new path (nothing is overwritten)"
        )
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.{secrets.token_hex(4)}.partial")
    tmp.mkdir()
    return tmp


def _finish(tmp: Path, out: Path, manifest: dict[str, Any]) -> None:
    """Write the manifest last, fsync everything, and give the directory its name."""
    (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    for f in tmp.iterdir():
        fsync_file(f)
    fsync_dir(tmp)
    os.replace(tmp, out)
    fsync_dir(out.parent)


def read_manifest(directory: Path, fmt: str) -> dict[str, Any]:
    """Read and check a manifest and the checksums of every file it lists.

    Raises:
        InvalidArgumentError: ``directory`` holds no manifest, or one of another kind of export.
        FormatVersionError: A format version newer than this release reads.
        CorruptionError: A listed file is missing or its checksum or size differs.
    """
    path = directory / MANIFEST
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InvalidArgumentError(
            f"expected an Embeddix {fmt} directory with {MANIFEST}; {str(directory)!r} has none"
        ) from None
    except (OSError, ValueError) as exc:
        raise CorruptionError(f"{path}: expected a JSON manifest; {exc}") from exc
    if not isinstance(manifest, dict) or manifest.get("format") != fmt:
        got = manifest.get("format") if isinstance(manifest, dict) else type(manifest).__name__
        raise InvalidArgumentError(f"{path}: expected format {fmt!r}; got {got!r}")
    version = manifest.get("format_version")
    if not isinstance(version, int) or version < 1:
        raise CorruptionError(f"{path}: expected a positive integer format_version; got {version!r}")
    if version > FORMAT_VERSION:
        raise FormatVersionError(
            f"{path}: format version {version}; this release reads up to {FORMAT_VERSION}. Upgrade embeddix"
        )
    files = manifest.get("files")
    if not isinstance(files, dict):
        raise CorruptionError(f"{path}: expected a 'files' object of checksums; got {files!r:.80}")
    for name, entry in files.items():
        target = directory / name
        if not target.is_file():
            raise CorruptionError(f"{target}: listed in the manifest but missing")
        have = _file_entry(target)
        if have != entry:
            raise CorruptionError(
                f"{target}: expected sha256 {entry.get('sha256')} and {entry.get('bytes')} bytes (the "
                f"manifest's); got sha256 {have['sha256']} and {have['bytes']} bytes: the file is damaged"
            )
    return manifest


# -- one collection --------------------------------------------------------------------------------


def export_collection(col: Collection, out: Path, *, progress: Callable[[int], Any] | None = None) -> int:
    """Write ``col`` to the directory ``out`` (see the module docstring for the format).

    Records are read in batches, not in one transaction: export while nothing writes to the collection,
    or use :func:`backup_database` for a point-in-time copy.

    Returns:
        The number of records written.

    Raises:
        InvalidArgumentError: ``out`` already exists.
    """
    tmp = _fresh_target(out, "export")
    try:
        n = 0
        raw = tmp / "vectors.raw"
        with (tmp / RECORDS).open("w", encoding="utf-8") as recs, raw.open("wb") as vecs:
            for rec in col.scan(include_vectors=True, batch_size=BATCH):
                line = {"id": rec.id, "document": rec.document, "metadata": rec.metadata}
                recs.write(json.dumps(line, ensure_ascii=False) + "\n")
                if rec.vector is None:  # scan(include_vectors=True) returns every vector; never expected
                    raise StorageError(f"record {rec.id!r} of {col.name!r} came without its vector")
                vecs.write(np.ascontiguousarray(rec.vector, dtype="<f4").tobytes())
                n += 1
                if progress is not None:
                    progress(1)
        matrix = (
            np.memmap(raw, dtype="<f4", mode="r", shape=(n, col.dim)) if n else np.zeros((0, col.dim), "<f4")
        )
        np.save(tmp / VECTORS, matrix, allow_pickle=False)
        del matrix  # release the map before the raw file goes
        raw.unlink()
        manifest = {
            "format": EXPORT_FORMAT,
            "format_version": FORMAT_VERSION,
            "collection": col.name,
            "dim": col.dim,
            "metric": col.metric,
            "embedding_model": col.embedding_model,
            "count": n,
            "config": json.loads(col.config.to_json()),
            "embeddix_version": _version(),
            "created": _now(),
            "files": {RECORDS: _file_entry(tmp / RECORDS), VECTORS: _file_entry(tmp / VECTORS)},
        }
        _finish(tmp, out, manifest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return n


def _records(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    with path.open(encoding="utf-8") as f:
        for n, line in enumerate(f, start=1):
            try:
                obj = json.loads(line)
            except ValueError as exc:
                raise CorruptionError(f"{path}:{n}: expected a JSON record; {exc}") from None
            if not isinstance(obj, dict) or not isinstance(obj.get("id"), str):
                raise CorruptionError(f"{path}:{n}: expected an object with a string 'id'; got {line:.80}")
            yield n, obj


def import_collection(
    db: Embeddix,
    src: Path,
    *,
    name: str | None = None,
    progress: Callable[[int], Any] | None = None,
    on_total: Callable[[int], Any] | None = None,
) -> Collection:
    """Create a collection from an export directory; nothing is left behind if it fails.

    Args:
        db: The database to import into.
        src: The export directory.
        name: The new collection's name; default the exported one.
        progress: Called with the number of records after each batch added.
        on_total: Called once with the number of records, before the first batch.

    Returns:
        The new collection.

    Raises:
        CollectionExistsError: A collection of that name exists (import ``--as`` another name).
        CorruptionError / FormatVersionError / InvalidArgumentError: See :func:`read_manifest`; also a
            record count or vector shape that is not the manifest's.
    """
    m = read_manifest(src, EXPORT_FORMAT)
    target = name or m.get("collection")
    if not isinstance(target, str):
        raise CorruptionError(f"{src / MANIFEST}: expected a collection name; got {target!r}")
    if target in db:
        raise CollectionExistsError(
            f"collection {target!r} already exists in {db.path}; import it under another name with --as NAME"
        )
    count, dim = m.get("count"), m.get("dim")
    if not isinstance(count, int) or not isinstance(dim, int) or count < 0 or dim < 1:
        raise CorruptionError(
            f"{src / MANIFEST}: expected an integer count >= 0 and dim >= 1; got count={count!r}, dim={dim!r}"
        )
    vectors = np.load(src / VECTORS, mmap_mode="r", allow_pickle=False)
    if vectors.dtype != np.dtype("<f4") or vectors.shape != (count, dim):
        raise CorruptionError(
            f"{src / VECTORS}: expected float32 of shape ({count}, {dim}) (the manifest's); got "
            f"{vectors.dtype} of shape {vectors.shape}"
        )
    config = m.get("config") or {}
    params = {k: config[k] for k in _CONFIG_KEYS if k in config}
    if params.get("quantization") == "none":
        params.pop("quantization")
    if on_total is not None:
        on_total(count)
    col = db.create_collection(
        target, dim, str(m.get("metric")), embedding_model=m.get("embedding_model"), **params
    )
    try:
        done = 0
        batch: list[dict[str, Any]] = []
        for _, rec in _records(src / RECORDS):
            batch.append(rec)
            if len(batch) == BATCH:
                done = _add(col, batch, vectors, done, progress)
                batch = []
        if batch:
            done = _add(col, batch, vectors, done, progress)
        if done != count:
            raise CorruptionError(f"{src / RECORDS}: expected {count} records (the manifest's); got {done}")
    except BaseException:
        # no half import: the collection exists whole or not at all
        db.drop_collection(target)
        raise
    return col


def _add(
    col: Collection,
    batch: list[dict[str, Any]],
    vectors: np.ndarray,
    done: int,
    progress: Callable[[int], Any] | None,
) -> int:
    end = done + len(batch)
    if end > len(vectors):
        raise CorruptionError(f"records.jsonl has more records than vectors.npy's {len(vectors)} rows")
    col.add(
        [r["id"] for r in batch],
        np.ascontiguousarray(vectors[done:end]),
        [r.get("document") for r in batch],
        [r.get("metadata") or {} for r in batch],
    )
    if progress is not None:
        progress(len(batch))
    return end


# -- a whole database ------------------------------------------------------------------------------


def database_file(data: Path) -> Path:
    """The store file of a data directory.

    Raises:
        InvalidArgumentError: There is none (the message names the path looked at).
    """
    path = data / DB_FILE
    if not path.is_file():
        raise InvalidArgumentError(
            f"expected an Embeddix data directory holding {DB_FILE}; {str(data)!r} has none "
            "(check --data, or create one with `embeddix ingest`)"
        )
    return path


def backup_database(data: Path, out: Path) -> dict[str, Any]:
    """Copy the database in ``data`` (and the files of ``SIDECAR_FILES`` it holds) to the backup directory
    ``out``, while writers may run.

    Returns:
        The backup's manifest.

    Raises:
        InvalidArgumentError: ``data`` holds no database, or ``out`` exists.
        StorageError: SQLite failed (e.g. the disk is full).
    """
    source = database_file(data)
    tmp = _fresh_target(out, "backup")
    try:
        copy = tmp / DB_FILE
        # read-only: a backup never writes to the database it copies
        src = sqlite3.connect(f"file:{quote(str(source))}?mode=ro", uri=True)
        dst = sqlite3.connect(copy)
        try:
            src.execute("PRAGMA busy_timeout = 30000")
            # pages=-1: one step, one read transaction on the source, so the copy is one commit's state
            src.backup(dst, pages=-1)
            # one self-contained file: the copy keeps the source's WAL flag unless switched back
            dst.execute("PRAGMA journal_mode = DELETE")
            names = [r[0] for r in dst.execute("SELECT name FROM collections ORDER BY name")]
        except sqlite3.Error as exc:
            raise StorageError(f"backup of {source} failed: {exc}") from exc
        finally:
            dst.close()
            src.close()
        files = {DB_FILE: _file_entry(copy)}
        for name in SIDECAR_FILES:
            try:
                blob = (data / name).read_bytes()  # one read of one whole version (see the docstring)
            except FileNotFoundError:
                continue
            except OSError as exc:
                raise StorageError(f"backup: cannot read {data / name}: {exc}") from exc
            (tmp / name).write_bytes(blob)
            files[name] = _file_entry(tmp / name)
        manifest = {
            "format": BACKUP_FORMAT,
            "format_version": FORMAT_VERSION,
            "store_format_version": STORE_FORMAT_VERSION,
            "collections": names,
            "embeddix_version": _version(),
            "created": _now(),
            "files": files,
        }
        _finish(tmp, out, manifest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return manifest


def restore_database(backup: Path, data: Path) -> dict[str, Any]:
    """Restore a backup into the data directory ``data``, which must not hold a database yet.

    The files of ``SIDECAR_FILES`` the backup holds (the MCP server's grants) are put back first and the
    database last, so a directory with a database is a whole restore. A sidecar already there with the same
    bytes (an interrupted restore run again) is kept; one with other bytes is refused.

    Returns:
        The backup's manifest.

    Raises:
        InvalidArgumentError: ``backup`` is not a backup, or ``data`` already holds a database or another
            version of a sidecar file.
        CorruptionError / FormatVersionError: See :func:`read_manifest`.
    """
    m = read_manifest(backup, BACKUP_FORMAT)
    if DB_FILE not in m["files"]:
        raise CorruptionError(
            f"{backup / MANIFEST}: expected {DB_FILE} among its files; got {list(m['files'])}"
        )
    final = data / DB_FILE
    if final.exists():
        raise InvalidArgumentError(
            f"{str(data)!r} already holds a database; restore into a new directory (nothing is overwritten)"
        )
    sidecars = {name: entry for name, entry in m["files"].items() if name in SIDECAR_FILES}
    for name, entry in sidecars.items():
        if (data / name).exists() and sha256_file(data / name) != entry["sha256"]:
            raise InvalidArgumentError(
                f"{data / name} already exists with other contents; restore into a new directory "
                "(nothing is overwritten)"
            )
    data.mkdir(parents=True, exist_ok=True)
    for name in sidecars:
        if not (data / name).exists():  # temp file -> fsync -> rename; the directory is fsynced below
            atomic_write_bytes(data / name, (backup / name).read_bytes(), sync_dir=False)
    tmp = data / f".{DB_FILE}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
    try:
        shutil.copyfile(backup / DB_FILE, tmp)
        fsync_file(tmp)
        if sha256_file(tmp) != m["files"][DB_FILE]["sha256"]:
            raise CorruptionError(f"{tmp}: the copy's checksum differs from the backup's; restore again")
        os.replace(tmp, final)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(data)
    return m
