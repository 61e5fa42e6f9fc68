"""Index snapshots: a native index file plus a JSON manifest with magic, format version and checksum.

Layout in ``<data>/indexes/<cid>/``::

    manifest.json          {"magic": "embeddix-index", "format_version": 2, "seq": ..., "live": ...,
                            "store_id": ..., "cid": ..., "snapshot_id": ...,
                            "files": [{"file": "hnsw-<seq>-0.bin", "size", "crc32", "live"}, ...],
                            "extra": {"bounds": [...]}, "params": {...}, "manifest_crc32": ...}
    hnsw-<seq>-<i>.bin     one file per index segment, in hnswlib's own save format (no pickle)
    faiss_hnsw-<seq>-<i>.bin   instead, for a quantized collection (``quantization`` "fp16"/"sq8"): one
                           file per segment, our own header (magic ``EMBXFHNS``, segment format version,
                           JSON header, slot labels, tombstone bitmap) then FAISS's ``write_index``
                           format (see ``index/faiss_hnsw.py``); ``params`` then also holds
                           ``quantization``, so a snapshot of the other kind is never loaded

The manifest's ``kind`` names which; a collection's quantization is fixed at creation, so one directory
only ever holds one kind (``remove_stale`` cleans files of its own kind).

Write order (crash-safe at every step): each segment goes to a temp file -> fsync -> rename to
``hnsw-<seq>-<i>.bin``; then the manifest the same way, and the directory is fsynced; only then are older
``.bin`` files removed (see ``_atomic.py``). A crash leaves either the old manifest with its old files, or
the new manifest with its new files.

Trust: a snapshot is loaded only when everything agrees - the manifest's own CRC32 (an edited ``seq``
would hide records), each file's size and CRC32, the index parameters, and its identity: the store id,
the collection id and the snapshot id that the store recorded when the snapshot was made
(``Store.record_snapshot``). Anything else - a torn file, a snapshot of another collection or another
store, one newer than the store (a lost WAL tail, a store restored from a backup) - raises, and the
caller rebuilds the index from the store with a warning. Format 1 manifests carry no identity and are
rebuilt once.

Processes: writers hold the collection's snapshot lock exclusively and readers share it (see
``storage/locks.py``), so a reader never sees a manifest whose files a writer is deleting.
"""

from __future__ import annotations

import contextlib
import json
import time
import uuid
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import CorruptionError, FormatVersionError, StorageError
from ._atomic import atomic_write, atomic_write_bytes, fsync_dir

__all__ = [
    "SNAPSHOT_FORMAT",
    "Snapshot",
    "SnapshotIdentity",
    "manifest_id",
    "read_snapshot",
    "remove_snapshots",
    "remove_stale",
    "write_snapshot",
]

SNAPSHOT_FORMAT = 2
_MAGIC = "embeddix-index"
_MANIFEST = "manifest.json"


@dataclass(frozen=True, slots=True)
class SnapshotIdentity:
    """Whose snapshot this is: the store, the collection in it, and the snapshots the store vouches for.

    ``accepted`` maps snapshot ids to the seq each reflects (``SnapshotRecord.accepts``); empty when the
    store vouches for none, in which case no snapshot on disk is trusted.
    """

    store_id: str
    cid: int
    accepted: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Snapshot:
    """A verified snapshot on disk: one file per segment."""

    paths: list[Path]
    lives: list[int]
    seq: int
    live: int
    params: dict[str, Any]
    extra: dict[str, Any]
    snapshot_id: str = ""


def _manifest_crc(manifest: dict[str, Any]) -> int:
    body = {k: v for k, v in manifest.items() if k != "manifest_crc32"}
    return zlib.crc32(json.dumps(body, sort_keys=True).encode())


def _crc32(path: Path) -> int:
    crc = 0
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 24):
            crc = zlib.crc32(chunk, crc)
    return crc


def write_snapshot(
    directory: Path,
    kind: str,
    seq: int,
    params: dict[str, Any],
    segments: Sequence[tuple[int, Callable[[Path], None]]],
    extra: dict[str, Any] | None = None,
    *,
    identity: SnapshotIdentity,
    snapshot_id: str | None = None,
) -> Snapshot:
    """Save an index atomically with its manifest.

    Args:
        directory: The collection's index directory (created if missing).
        kind: Index kind, e.g. ``"hnsw"``.
        seq: The store sequence number the index contains.
        params: Index parameters to check on load (dim, space, m, ...).
        segments: (live vectors, save function) per segment; each function writes its native index file
            to the path it is given.
        extra: More JSON data to keep (e.g. segment bounds).
        identity: The store and collection the snapshot belongs to.
        snapshot_id: Its id (the caller made it trusted in advance with ``Store.begin_snapshot``);
            None makes one.

    Returns:
        The snapshot written. Older files stay until :func:`remove_stale`: the caller removes them once
        the store has recorded this snapshot, so a crash in between still finds a trusted one.

    Raises:
        StorageError: A file could not be written (disk full, I/O error); the old snapshot stays.
    """
    directory.mkdir(parents=True, exist_ok=True)
    snapshot_id = snapshot_id or uuid.uuid4().hex
    files: list[dict[str, Any]] = []
    written: list[Path] = []
    try:
        for i, (live, save) in enumerate(segments):
            # the snapshot id in the name: a new snapshot never overwrites a file an old manifest lists
            name = f"{kind}-{seq}-{snapshot_id[:8]}-{i}.bin"
            final = directory / name
            size = atomic_write(final, save, sync_dir=False)
            files.append({"file": name, "size": size, "crc32": _crc32(final), "live": live})
            written.append(final)
        manifest: dict[str, Any] = {
            "magic": _MAGIC,
            "format_version": SNAPSHOT_FORMAT,
            "kind": kind,
            "seq": seq,
            "store_id": identity.store_id,
            "cid": identity.cid,
            "snapshot_id": snapshot_id,
            "live": sum(f["live"] for f in files),
            "files": files,
            "params": params,
            "extra": extra or {},
            "created": time.time(),
        }
        manifest["manifest_crc32"] = _manifest_crc(manifest)
        fsync_dir(directory)
        atomic_write_bytes(directory / _MANIFEST, json.dumps(manifest, sort_keys=True).encode())
    except (OSError, RuntimeError) as exc:  # hnswlib reports a failed save as RuntimeError
        for path in written:
            path.unlink(missing_ok=True)
        raise StorageError(f"could not write the index snapshot in {directory}: {exc}") from exc
    return Snapshot(
        written, [f["live"] for f in files], seq, manifest["live"], params, extra or {}, snapshot_id
    )


def remove_stale(directory: Path, kind: str, keep: Snapshot) -> None:
    """Delete files of older snapshots, and temp files of writers that crashed (under the lock)."""
    names = {p.name for p in keep.paths}
    for old in directory.glob(f"{kind}-*.bin*"):
        if old.name not in names:
            old.unlink(missing_ok=True)


def manifest_id(directory: Path) -> tuple[str, int] | None:
    """(snapshot id, seq) of the manifest in ``directory``, or None when there is no sound one.

    Checks the manifest's own CRC32 only, not its files: enough to tell which snapshot a crashed
    checkpoint left in place (see ``LiveIndex.checkpoint``).
    """
    mpath = directory / _MANIFEST
    try:
        manifest = _load_manifest(mpath)
        return str(manifest["snapshot_id"]), int(manifest["seq"])
    except (OSError, StorageError, KeyError, TypeError, ValueError):
        return None


def read_snapshot(
    directory: Path, kind: str, params: dict[str, Any], identity: SnapshotIdentity
) -> Snapshot | None:
    """Find and verify the snapshot in ``directory``.

    Args:
        directory: The collection's index directory.
        kind: Index kind, e.g. ``"hnsw"``.
        params: Index parameters the snapshot must have been built with.
        identity: The store, collection and recorded snapshot the manifest must name.

    Returns:
        The snapshot, or None when there is none.

    Raises:
        CorruptionError: The snapshot is torn or damaged, or belongs to another store or collection.
        StorageError: It is not the snapshot the store recorded (stale, or newer than the store), or was
            built with other parameters. Either way the caller rebuilds from the store.
        FormatVersionError: It was written by a newer format.
    """
    mpath = directory / _MANIFEST
    if not mpath.exists():
        return None
    manifest = _load_manifest(mpath)
    _check_identity(mpath, manifest, identity)
    stored = _check_build(mpath, manifest, kind, params)
    try:
        paths, lives = _verified_files(directory, mpath, manifest)
        seq, live, extra = int(manifest["seq"]), int(manifest["live"]), manifest.get("extra", {})
    except (KeyError, TypeError, ValueError) as exc:
        raise CorruptionError(f"snapshot manifest {mpath} is malformed: {exc!r}") from exc
    if not paths:
        raise CorruptionError(f"snapshot manifest {mpath} lists no files")
    return Snapshot(paths, lives, seq, live, stored, extra, str(manifest["snapshot_id"]))


def _load_manifest(mpath: Path) -> dict[str, Any]:
    """The manifest at ``mpath``, once its magic, format version and own CRC32 check out."""
    try:
        manifest = json.loads(mpath.read_bytes())
    except (OSError, ValueError) as exc:
        raise CorruptionError(f"snapshot manifest {mpath} is unreadable: {exc}") from exc
    if not isinstance(manifest, dict) or manifest.get("magic") != _MAGIC:
        raise CorruptionError(f"{mpath} is not an Embeddix index manifest")
    try:
        version = int(manifest.get("format_version", 0))
    except (TypeError, ValueError) as exc:
        raise CorruptionError(f"{mpath} has no valid format version") from exc
    if version > SNAPSHOT_FORMAT:
        raise FormatVersionError(
            f"{mpath} has snapshot format {manifest.get('format_version')}; this release reads up to "
            f"{SNAPSHOT_FORMAT}"
        )
    if version < 2:
        raise StorageError(f"{mpath} has snapshot format {version}, which does not name its store")
    if manifest.get("manifest_crc32") != _manifest_crc(manifest):
        raise CorruptionError(f"snapshot manifest {mpath} fails its CRC32 check (edited or damaged)")
    return manifest


def _check_identity(mpath: Path, manifest: dict[str, Any], identity: SnapshotIdentity) -> None:
    """Refuse a snapshot of another store or collection, or one the store does not vouch for at its seq."""
    if manifest.get("store_id") != identity.store_id or manifest.get("cid") != identity.cid:
        raise CorruptionError(
            f"snapshot {mpath} belongs to another store or collection (store {manifest.get('store_id')}, "
            f"collection #{manifest.get('cid')}; expected store {identity.store_id}, "
            f"collection #{identity.cid})"
        )
    recorded = identity.accepted.get(str(manifest.get("snapshot_id")))
    if recorded is None:
        raise StorageError(
            f"snapshot {mpath} (seq {manifest.get('seq')}) is not one the store recorded "
            f"(seqs {sorted(identity.accepted.values())}): the store lost commits or was restored from "
            "a backup"
        )
    if manifest.get("seq") != recorded:
        raise CorruptionError(
            f"snapshot {mpath} says seq {manifest.get('seq')}, the store recorded {recorded}"
        )


def _check_build(mpath: Path, manifest: dict[str, Any], kind: str, params: dict[str, Any]) -> dict[str, Any]:
    """Refuse an index of another kind or other parameters; returns the manifest's parameters."""
    if manifest.get("kind") != kind:
        raise StorageError(f"{mpath} holds a {manifest.get('kind')!r} index; expected {kind!r}")
    stored = manifest.get("params", {})
    if not isinstance(stored, dict):
        raise CorruptionError(f"snapshot manifest {mpath} has malformed parameters")
    for key, value in params.items():
        if stored.get(key) != value:
            raise StorageError(
                f"snapshot {mpath} was built with {key}={stored.get(key)!r}, expected {value!r}"
            )
    return stored


def _verified_files(directory: Path, mpath: Path, manifest: dict[str, Any]) -> tuple[list[Path], list[int]]:
    """(paths, live counts) of the manifest's files, each checked for its place, size and CRC32.

    A malformed entry raises KeyError, TypeError or ValueError; the caller turns those into
    :class:`CorruptionError`.
    """
    paths: list[Path] = []
    lives: list[int] = []
    for entry in manifest.get("files", []):
        name = str(entry["file"])
        if "/" in name or name.startswith("."):
            raise CorruptionError(f"snapshot manifest {mpath} names a file outside its directory")
        path = directory / name
        try:
            size = path.stat().st_size
        except OSError as exc:
            raise CorruptionError(f"snapshot file {path} is missing: {exc}") from exc
        if size != entry["size"]:
            raise CorruptionError(f"snapshot file {path} has {size} bytes, the manifest says {entry['size']}")
        if _crc32(path) != entry["crc32"]:
            raise CorruptionError(f"snapshot file {path} fails its CRC32 check (torn or corrupt)")
        paths.append(path)
        lives.append(int(entry["live"]))
    return paths, lives


def remove_snapshots(directory: Path) -> None:
    """Delete a collection's snapshot directory contents (on drop or when invalid)."""
    if not directory.exists():
        return
    for f in directory.iterdir():
        f.unlink(missing_ok=True)
    with contextlib.suppress(OSError):
        directory.rmdir()
