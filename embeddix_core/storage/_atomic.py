"""The one way Embeddix replaces a file: temp file -> fsync file -> rename -> fsync directory.

Why each step: the rename makes the new content appear all at once (a reader sees the old file or the new
one, never half of one); fsyncing the file before the rename keeps a crash from leaving the new name
pointing at unwritten blocks; fsyncing the directory makes the rename itself durable. The temp name
carries the process id and a random suffix, so two processes writing the same file never share (or
delete) each other's temp file.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable
from pathlib import Path

__all__ = ["atomic_write", "atomic_write_bytes", "fsync_dir", "fsync_file"]


def fsync_file(path: Path) -> None:
    """Flush a file's data to stable storage."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(path: Path) -> None:
    """Make the entries of a directory (renames, new files) durable (the same call, on a directory)."""
    fsync_file(path)


def temp_path(final: Path) -> Path:
    """A temp name beside ``final``, unique to this process and call."""
    return final.with_name(f"{final.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")


def atomic_write(final: Path, write: Callable[[Path], object], *, sync_dir: bool = True) -> int:
    """Replace ``final`` with what ``write`` writes to the temp path it is given.

    Args:
        final: The file to replace.
        write: Writes the new content to the path it gets.
        sync_dir: fsync the directory after the rename (callers replacing several files in one
            directory may do that once, at the end).

    Returns:
        The new file's size in bytes.

    Raises:
        OSError: Writing, syncing or renaming failed; ``final`` is unchanged and no temp file is left.
    """
    tmp = temp_path(final)
    try:
        write(tmp)
        fsync_file(tmp)
        size = tmp.stat().st_size
        os.replace(tmp, final)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if sync_dir:
        fsync_dir(final.parent)
    return size


def atomic_write_bytes(final: Path, data: bytes, *, sync_dir: bool = True) -> None:
    """Replace ``final`` with ``data`` atomically and durably (see :func:`atomic_write`)."""
    atomic_write(final, lambda p: p.write_bytes(data), sync_dir=sync_dir)
