"""Changing a collection's index or quantization while it serves: build off to the side, then swap.

``Collection.reconfigure`` starts :func:`start`, which returns a :class:`Reconfiguration` handle at once.
A background thread (at low priority) builds the new index from the store exactly as an open without a
snapshot would (``LiveIndex.rebuild``: for IVF, train on a sample of everything first, then add), reading
one state of the store. Searches and writes go on against the old index meanwhile; writes committed during
the build are in the store, after the state the build read.

The swap, under the collection's write lock: replay onto the new index every write committed since its
build read the store (it is then exactly as current as the old one), store the new config (one SQLite
statement: the on-disk format records the change atomically), put the new index in place (one attribute
assignment: a search holds the index it started with, so it never sees a half-built one), and drop what
was derived from the old index: the calibration curve (measured again in the background), plans and cached
answers. Then a snapshot of the new index is written, and the old index's background work is joined.

Crash safety: before the swap the stored config is the old one and its snapshot still serves; after it,
the stored config is the new one, and an open that finds no snapshot of the new kind rebuilds it from the
store (the store is the source of truth). Nothing acknowledged is lost either way: the index is derived.

Other processes that have the collection open keep their old index until they open it again.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable

from .config import CollectionConfig
from .errors import ClosedError
from .index.live import LiveIndex

__all__ = ["Reconfiguration", "start"]

log = logging.getLogger("embeddix")


class _Cancelled(Exception):
    """The collection closed while the new index was being built."""


class Reconfiguration:
    """A background rebuild started by ``Collection.reconfigure``.

    Attributes:
        config: The configuration being built (the collection's once :attr:`done`).
        previous: The configuration it replaces.
    """

    def __init__(self, config: CollectionConfig, previous: CollectionConfig) -> None:
        self.config = config
        self.previous = previous
        self._done = threading.Event()
        self._progress = 0.0
        self._error: BaseException | None = None
        self._cancel = threading.Event()
        self._thread: threading.Thread | None = None
        self.started = time.monotonic()
        self.seconds: float | None = None

    @property
    def progress(self) -> float:
        """Fraction of the build done, from 0.0 to 1.0 (1.0 once swapped in)."""
        return 1.0 if self._done.is_set() and self._error is None else self._progress

    @property
    def done(self) -> bool:
        """Whether it finished (swapped in, failed, or cancelled by a close)."""
        return self._done.is_set()

    @property
    def error(self) -> BaseException | None:
        """Why it failed (None while running or after success)."""
        return self._error

    def wait(self, timeout: float | None = None) -> CollectionConfig:
        """Wait until the new index serves.

        Args:
            timeout: Seconds to wait at most (None: as long as it takes).

        Returns:
            The collection's new configuration.

        Raises:
            TimeoutError: Still building after ``timeout`` seconds (it goes on).
            EmbeddixError: The build failed (the old index kept serving); ``ClosedError`` if the collection
                was closed first.
        """
        if not self._done.wait(timeout):
            raise TimeoutError(
                f"reconfigure to index={self.config.index!r}, quantization={self.config.quantization!r} "
                f"is still building after {timeout} s ({self._progress:.0%} done); wait() again"
            )
        if self._error is not None:
            raise self._error
        return self.config

    def __repr__(self) -> str:
        state = "done" if self.done else f"{self.progress:.0%}"
        return (
            f"Reconfiguration(index={self.config.index!r}, quantization={self.config.quantization!r}, "
            f"{state})"
        )

    # -- driven by the collection ------------------------------------------------------------------
    def cancel(self) -> None:
        """Stop the build at its next step and wait for the thread (the collection is closing)."""
        self._cancel.set()
        t = self._thread
        if t is not None and t is not threading.current_thread():
            t.join()

    def _step(self, done: int, total: int) -> None:
        if self._cancel.is_set():
            raise _Cancelled
        self._progress = min(done / total, 0.99) if total else 0.99

    def _finish(self, error: BaseException | None) -> None:
        self._error = error
        self.seconds = time.monotonic() - self.started
        self._done.set()


def start(
    live: LiveIndex,
    target: CollectionConfig,
    on_swap: Callable[[CollectionConfig], None],
    release: Callable[[], None],
) -> Reconfiguration:
    """Build ``target``'s index in the background and swap it in (see the module docstring).

    Args:
        live: The collection's live index.
        target: The new configuration (validated).
        on_swap: Called under the write lock right after the new index is in place: stores ``target``
            and drops what was derived from the old index.
        release: Called on the build thread as it ends (gives back its store connection).

    Returns:
        The handle (already running).
    """
    handle = Reconfiguration(target, live.config)

    def run() -> None:
        with contextlib.suppress(OSError, AttributeError):  # searches and writers come first
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 10)
        error: BaseException | None = None
        try:
            shadow = LiveIndex(live.store, live.cid, live.name, target, live.settings, None, lambda: None)
            shadow.vecfile = live.vecfile  # its re-ranks read the collection's vector map
            shadow.rebuild(progress=handle._step)
            with live.write_lock:
                if handle._cancel.is_set():
                    raise _Cancelled
                shadow.replay()  # the writes committed while it was built
                old = live.index
                live.index = shadow.index
                live.applied_seq = shadow.applied_seq
                live.snapshot_seq = -1  # the snapshot on disk is of the old index
                on_swap(target)
            _stop(old)
            live.checkpoint(force=True)
            log.info(
                "collection %r: now index=%s, quantization=%s (rebuilt in %.1f s)",
                live.name,
                target.index,
                target.quantization,
                time.monotonic() - handle.started,
            )
        except _Cancelled:
            error = ClosedError(f"collection {live.name!r} closed before reconfigure finished")
        except BaseException as exc:  # the old index keeps serving; wait() raises this
            log.warning("collection %r: reconfigure failed, the old index keeps serving: %s", live.name, exc)
            error = exc
        finally:
            with contextlib.suppress(Exception):
                release()
            handle._finish(error)

    handle._thread = threading.Thread(target=run, name=f"embeddix-reconfigure-{live.name}", daemon=True)
    handle._thread.start()
    return handle


def _stop(index: object) -> None:
    """Stop an index that no longer serves: its background retrain (IVF) and flush threads."""
    cancel = getattr(index, "cancel", None)
    if cancel is not None:
        cancel()
    join = getattr(index, "join", None)
    if join is not None:
        join()
