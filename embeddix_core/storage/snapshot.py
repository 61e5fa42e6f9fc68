"""Index snapshots: a native index file plus a JSON manifest with magic, format version and checksum.

Layout in ``<data>/indexes/<cid>/``::

    manifest.json          {"magic": "embeddix-index", "format_version": 1, "file": "hnsw-<seq>.bin",
                            "seq": ..., "live": ..., "size": ..., "crc32": ..., ...}
    hnsw-<seq>.bin         hnswlib's own save format (no pickle)

Write order (crash-safe at every step): the index goes to ``hnsw-<seq>.bin.tmp`` -> fsync -> rename to
``hnsw-<seq>.bin``; then the manifest goes to ``manifest.json.tmp`` -> fsync -> rename -> fsync the
directory; only then are older ``.bin`` files removed. A crash leaves either the old manifest with its old
file, or the new manifest with its new file; a torn or foreign file fails the size/CRC check and the caller
rebuilds from the store with a warning.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import FormatVersionError, StorageError

__all__ = ["SNAPSHOT_FORMAT", "Snapshot", "read_snapshot", "write_snapshot"]

SNAPSHOT_FORMAT = 1
_MAGIC = "embeddix-index"
_MANIFEST = "manifest.json"


@dataclass(frozen=True, slots=True)
class Snapshot:
    """A verified snapshot on disk."""

    path: Path
    seq: int
    live: int
    params: dict[str, Any]


def _crc32(path: Path) -> int:
    crc = 0
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 24):
            crc = zlib.crc32(chunk, crc)
    return crc


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_snapshot(
    directory: Path, kind: str, seq: int, live: int, params: dict[str, Any], save: Callable[[Path], None]
) -> Snapshot:
    """Save an index atomically with its manifest.

    Args:
        directory: The collection's index directory (created if missing).
        kind: Index kind, e.g. ``"hnsw"``.
        seq: The store sequence number the index contains.
        live: Live vectors in the index.
        params: Index parameters to check on load (dim, space, m, ...).
        save: Writes the native index file to the path it is given.

    Returns:
        The snapshot written.
    """
    directory.mkdir(parents=True, exist_ok=True)
    name = f"{kind}-{seq}.bin"
    final = directory / name
    tmp = directory / (name + ".tmp")
    try:
        save(tmp)
        _fsync_file(tmp)
        size = tmp.stat().st_size
        crc = _crc32(tmp)
        os.replace(tmp, final)
        manifest = {
            "magic": _MAGIC,
            "format_version": SNAPSHOT_FORMAT,
            "kind": kind,
            "file": name,
            "seq": seq,
            "live": live,
            "size": size,
            "crc32": crc,
            "params": params,
            "created": time.time(),
        }
        mtmp = directory / (_MANIFEST + ".tmp")
        with open(mtmp, "w", encoding="utf-8") as fh:
            json.dump(manifest, fh, sort_keys=True)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(mtmp, directory / _MANIFEST)
        _fsync_dir(directory)
    except OSError as exc:
        raise StorageError(f"could not write the index snapshot in {directory}: {exc}") from exc
    finally:
        tmp.unlink(missing_ok=True)
    for old in directory.glob(f"{kind}-*.bin*"):
        if old.name != name:
            old.unlink(missing_ok=True)
    return Snapshot(final, seq, live, params)


def read_snapshot(directory: Path, kind: str, params: dict[str, Any]) -> Snapshot | None:
    """Find and verify the snapshot in ``directory``.

    Returns:
        The snapshot, or None when there is none.

    Raises:
        StorageError: The snapshot is torn, corrupt, or was built with other parameters (the caller
            rebuilds from the store).
        FormatVersionError: It was written by a newer format.
    """
    mpath = directory / _MANIFEST
    if not mpath.exists():
        return None
    try:
        manifest = json.loads(mpath.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise StorageError(f"snapshot manifest {mpath} is unreadable: {exc}") from exc
    if not isinstance(manifest, dict) or manifest.get("magic") != _MAGIC:
        raise StorageError(f"{mpath} is not an Embeddix index manifest")
    if int(manifest.get("format_version", 0)) > SNAPSHOT_FORMAT:
        raise FormatVersionError(
            f"{mpath} has snapshot format {manifest.get('format_version')}; this release reads up to "
            f"{SNAPSHOT_FORMAT}"
        )
    if manifest.get("kind") != kind:
        raise StorageError(f"{mpath} holds a {manifest.get('kind')!r} index; expected {kind!r}")
    stored = manifest.get("params", {})
    for key, value in params.items():
        if stored.get(key) != value:
            raise StorageError(
                f"snapshot {mpath} was built with {key}={stored.get(key)!r}, expected {value!r}"
            )
    path = directory / str(manifest["file"])
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise StorageError(f"snapshot file {path} is missing: {exc}") from exc
    if size != manifest["size"]:
        raise StorageError(f"snapshot file {path} has {size} bytes, the manifest says {manifest['size']}")
    if _crc32(path) != manifest["crc32"]:
        raise StorageError(f"snapshot file {path} fails its CRC32 check (torn or corrupt)")
    return Snapshot(path, int(manifest["seq"]), int(manifest["live"]), stored)


def remove_snapshots(directory: Path) -> None:
    """Delete a collection's snapshot directory contents (on drop or when invalid)."""
    if not directory.exists():
        return
    for f in directory.iterdir():
        f.unlink(missing_ok=True)
    with contextlib.suppress(OSError):
        directory.rmdir()
