"""A lock between processes for one collection's index snapshots (``flock`` on a small lock file).

Why ``flock`` and not ``fcntl``/``lockf``: POSIX record locks belong to the process and vanish when *any*
descriptor of the file is closed, even one opened elsewhere in the process; ``flock`` locks belong to the
open file description, so they are held exactly as long as this object holds them. The lock file is never
one of SQLite's own files (see ``sqlite.py`` on why that matters).

Rules (enforced by the collection):
- Writing a snapshot, recording it in the store and pruning the deletions it contains happen under the
  exclusive lock, after a replay of every committed write. So a snapshot never goes back in time, two
  processes never delete each other's files, and no deletion is pruned while an older snapshot can
  still be loaded.
- Loading a snapshot holds the shared lock, so its files cannot be deleted while they are read.

The lock is re-entrant within one holder (a checkpoint's replay may load a snapshot); threads of one
process are already serialized by the collection's write lock.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import threading
from collections.abc import Iterator
from pathlib import Path

__all__ = ["SnapshotLock"]


class SnapshotLock:
    """A re-entrant shared/exclusive lock on ``path`` across processes.

    Args:
        path: The lock file (created if missing). None makes every operation a no-op (in-memory
            databases have no snapshots).
    """

    def __init__(self, path: Path | None) -> None:
        self._path = path
        self._fd: int | None = None
        self._depth = 0
        self._mode = 0
        self._guard = threading.RLock()

    @contextlib.contextmanager
    def hold(self, *, exclusive: bool) -> Iterator[None]:
        """Hold the lock (shared or exclusive) for the ``with`` block; waits for other processes."""
        if self._path is None:
            yield
            return
        with self._guard:
            if self._depth == 0:
                self._path.parent.mkdir(parents=True, exist_ok=True)
                fd = os.open(self._path, os.O_RDWR | os.O_CREAT, 0o600)
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
                except BaseException:
                    os.close(fd)
                    raise
                self._fd, self._mode = fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH
            elif exclusive and self._mode != fcntl.LOCK_EX:
                # never upgrade a held shared lock (two upgraders would deadlock): callers take the
                # exclusive lock first when they may need it
                raise RuntimeError("snapshot lock: exclusive requested while holding it shared")
            self._depth += 1
            try:
                yield
            finally:
                self._depth -= 1
                if self._depth == 0 and self._fd is not None:
                    fd, self._fd = self._fd, None
                    fcntl.flock(fd, fcntl.LOCK_UN)
                    os.close(fd)
