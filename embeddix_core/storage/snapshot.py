"""Index snapshots: a native index file plus a JSON manifest with magic, format version and checksum.

Layout in ``<data>/indexes/<cid>/``::

    manifest.json          {"magic": "embeddix-index", "format_version": 1, "seq": ..., "live": ...,
                            "files": [{"file": "hnsw-<seq>-0.bin", "size", "crc32", "live"}, ...],
                            "extra": {"bounds": [...]}, "params": {...}}
    hnsw-<seq>-<i>.bin     one file per index segment, in hnswlib's own save format (no pickle)

Write order (crash-safe at every step): each segment goes to ``hnsw-<seq>-<i>.bin.tmp`` -> fsync -> rename
to ``hnsw-<seq>-<i>.bin``; then the manifest goes to ``manifest.json.tmp`` -> fsync -> rename -> fsync the
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
from collections.abc import Callable, Sequence
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
    """A verified snapshot on disk: one file per segment."""

    paths: list[Path]
    lives: list[int]
    seq: int
    live: int
    params: dict[str, Any]
    extra: dict[str, Any]


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
    directory: Path,
    kind: str,
    seq: int,
    params: dict[str, Any],
    segments: Sequence[tuple[int, Callable[[Path], None]]],
    extra: dict[str, Any] | None = None,
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

    Returns:
        The snapshot written.
    """
    directory.mkdir(parents=True, exist_ok=True)
    files: list[dict[str, Any]] = []
    written: list[Path] = []
    tmp: Path | None = None
    try:
        for i, (live, save) in enumerate(segments):
            name = f"{kind}-{seq}-{i}.bin"
            final = directory / name
            tmp = directory / f"{name}.{os.getpid()}.tmp"
            save(tmp)
            _fsync_file(tmp)
            files.append({"file": name, "size": tmp.stat().st_size, "crc32": _crc32(tmp), "live": live})
            os.replace(tmp, final)
            written.append(final)
        manifest = {
            "magic": _MAGIC,
            "format_version": SNAPSHOT_FORMAT,
            "kind": kind,
            "seq": seq,
            "live": sum(f["live"] for f in files),
            "files": files,
            "params": params,
            "extra": extra or {},
            "created": time.time(),
        }
        mtmp = directory / f"{_MANIFEST}.{os.getpid()}.tmp"
        with open(mtmp, "w", encoding="utf-8") as fh:
            json.dump(manifest, fh, sort_keys=True)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(mtmp, directory / _MANIFEST)
        _fsync_dir(directory)
    except OSError as exc:
        raise StorageError(f"could not write the index snapshot in {directory}: {exc}") from exc
    finally:
        if tmp is not None:
            tmp.unlink(missing_ok=True)
    keep = {p.name for p in written}
    for old in directory.glob(f"{kind}-*.bin*"):
        if old.name not in keep:
            old.unlink(missing_ok=True)
    return Snapshot(written, [f["live"] for f in files], seq, manifest["live"], params, extra or {})


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
    paths: list[Path] = []
    lives: list[int] = []
    for entry in manifest.get("files", []):
        path = directory / str(entry["file"])
        try:
            size = path.stat().st_size
        except OSError as exc:
            raise StorageError(f"snapshot file {path} is missing: {exc}") from exc
        if size != entry["size"]:
            raise StorageError(f"snapshot file {path} has {size} bytes, the manifest says {entry['size']}")
        if _crc32(path) != entry["crc32"]:
            raise StorageError(f"snapshot file {path} fails its CRC32 check (torn or corrupt)")
        paths.append(path)
        lives.append(int(entry["live"]))
    if not paths:
        raise StorageError(f"snapshot manifest {mpath} lists no files")
    return Snapshot(
        paths, lives, int(manifest["seq"]), int(manifest["live"]), stored, manifest.get("extra", {})
    )


def remove_snapshots(directory: Path) -> None:
    """Delete a collection's snapshot directory contents (on drop or when invalid)."""
    if not directory.exists():
        return
    for f in directory.iterdir():
        f.unlink(missing_ok=True)
    with contextlib.suppress(OSError):
        directory.rmdir()
