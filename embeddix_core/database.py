"""Embeddix: a directory of collections on local disk (or in memory), opened and closed as one.

Process rule: several processes may open the same data directory at once and all work. SQLite (WAL)
serializes their writes; each process keeps its own in-memory index and, before it searches, replays the
writes others committed (by sequence number). Index snapshots are written under an exclusive lock between
processes (``flock`` on ``indexes/<cid>.lock``) and loaded under a shared one, atomically, so a reader never
loads half a snapshot and two writers never undo each other (``storage/locks.py``).

Exit rule: a process may exit without ``close()``. Every committed write is already durable; an exit hook
stops the background threads (calibration, index flush) before the interpreter finalizes, since a thread
torn down inside native code aborts the process.
"""

from __future__ import annotations

import atexit
import re
import threading
import weakref
from collections.abc import Iterable
from pathlib import Path
from types import TracebackType
from typing import Any

from ._memory import limit_mmap_threshold, trim
from ._validate import check_data_path
from .collection import Collection
from .config import PROFILES, CollectionConfig, Durability, EmbeddixSettings
from .embeddings._protocol import Embedder
from .errors import (
    ClosedError,
    CollectionNotFoundError,
    GpuUnavailableError,
    InvalidArgumentError,
    StorageError,
)
from .index._gpu import gpu_unavailable_reason
from .metrics import database_metrics
from .storage.snapshot import remove_snapshots
from .storage.sqlite import Store

__all__ = ["Embeddix"]

_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.:\-]{0,127}$")
DB_FILE = "embeddix.sqlite3"

# Databases open in this process, for the exit hook (weak: an unreferenced database may be collected).
_OPEN: weakref.WeakSet[Embeddix] = weakref.WeakSet()


@atexit.register
def _stop_background_at_exit() -> None:
    """Stop background threads of databases nobody closed (see the module's exit rule)."""
    for db in list(_OPEN):
        db._stop_background()


class Embeddix:
    """An embedded Embeddix database.

    Open with :meth:`open`; use as a context manager or call :meth:`close` (idempotent)::

        with Embeddix.open("./embeddix-data") as db:
            col = db.get_or_create_collection("docs", dim=384)
    """

    def __init__(self, path: Path | None, settings: EmbeddixSettings) -> None:
        self.path = path
        self.settings = settings
        if path is not None:
            if path.exists() and not path.is_dir():
                raise InvalidArgumentError(
                    f"Embeddix.open expects a data directory; {str(path)!r} is a file. Pass a directory "
                    "path (it is created if missing), or None for an in-memory database"
                )
            try:
                path.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise StorageError(f"cannot create the data directory {str(path)!r}: {exc}") from exc
        if settings.gpu == "on":
            # "on" means required: fail at open, not in the middle of a training or a search
            reason = gpu_unavailable_reason()
            if reason is not None:
                raise GpuUnavailableError(
                    f"gpu='on' needs a CUDA build of FAISS and a visible GPU, but {reason}; set "
                    "gpu='auto' (EMBEDDIX_GPU=auto) to fall back to the CPU"
                )
        limit_mmap_threshold(settings.malloc_mmap_threshold)
        self._store = Store(
            None if path is None else path / DB_FILE,
            settings.durability,
            settings.busy_timeout_ms,
            settings.sqlite_cache_bytes,
        )
        self._collections: dict[str, Collection] = {}
        self._lock = threading.RLock()
        self._closed = False
        _OPEN.add(self)

    @classmethod
    def open(
        cls,
        path: str | Path | None = "./embeddix-data",
        *,
        settings: EmbeddixSettings | None = None,
        durability: Durability | str | None = None,
    ) -> Embeddix:
        """Open (creating if needed) a database.

        Args:
            path: Data directory on local disk, or None for a private in-memory database.
            settings: Process defaults; by default read from ``EMBEDDIX_*`` environment variables.
            durability: ``"full"`` (fsync every commit, the default) or ``"normal"``.

        Returns:
            The open database.
        """
        where = check_data_path(path)
        s = settings or EmbeddixSettings()
        if durability is not None:
            try:
                s = s.model_copy(update={"durability": Durability(durability)})
            except ValueError:
                raise InvalidArgumentError(
                    f"durability must be one of {[d.value for d in Durability]}; got {durability!r}"
                ) from None
        return cls(where, s)

    # -- context manager ---------------------------------------------------------------------------
    def __enter__(self) -> Embeddix:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        """Save index snapshots and close the store. Idempotent."""
        with self._lock:
            if self._closed:
                return
            for col in self._collections.values():
                col._close(checkpoint=True)
            self._collections.clear()
            self._store.close()
            self._closed = True
            _OPEN.discard(self)
        trim(force=True)  # the collections' indexes and caches were freed: give the memory back

    def _stop_background(self) -> None:
        for col in list(self._collections.values()):
            col._stop_background()

    def __repr__(self) -> str:
        where = "memory" if self.path is None else str(self.path)
        return f"Embeddix({where!r}, collections={self.list_collections() if not self._closed else '?'})"

    def _check(self) -> None:
        if self._closed:
            raise ClosedError("the database is closed; open it again with Embeddix.open(path)")

    @staticmethod
    def _check_name(name: Any) -> str:
        if not isinstance(name, str) or not _NAME.fullmatch(name):
            raise InvalidArgumentError(
                f"collection name must be 1-128 characters of letters, digits, '_', '-', '.', ':' "
                f"(not starting with '-', '.' or ':'); got {name!r}"
            )
        return name

    # -- collections -------------------------------------------------------------------------------
    def create_collection(
        self,
        name: str,
        dim: int,
        metric: str = "cosine",
        *,
        hnsw_m: int | None = None,
        ef_construction: int | None = None,
        ef_search: int | None = None,
        index_threshold: int | None = None,
        embedding_model: str | None = None,
        segment_size: int | None = None,
        quantization: str | None = None,
        index: str | None = None,
        profile: str | None = None,
        exist_ok: bool = False,
        embedder: Embedder | None = None,
    ) -> Collection:
        """Create a collection.

        Args:
            name: Unique name.
            dim: Vector dimension (fixed forever).
            metric: ``"cosine"`` (default), ``"l2"`` or ``"ip"`` (fixed forever).
            hnsw_m: HNSW graph degree (fixed; default from settings).
            ef_construction: HNSW build beam width (fixed; default from settings).
            ef_search: Default query beam width (changeable with ``configure``).
            index_threshold: Record count above which HNSW replaces exact search.
            embedding_model: Id of the embedding model the vectors come from (checked by adapters).
            segment_size: HNSW vectors per segment (fixed; default from settings, 0 = one graph).
            quantization: What the approximate index keeps per vector: ``"none"`` (float32, the
                default), ``"fp16"`` (half precision, HNSW), ``"sq8"`` (8-bit codes, HNSW, trained on
                the collection's vectors when it outgrows ``index_threshold``) or ``"pq"`` (product
                quantization in IVF lists, trained from 10,000 vectors; exact search until then).
                Quantized searches re-rank their candidates with the stored full-precision vectors.
                Change it later with :meth:`Collection.reconfigure`.
            index: ``"auto"`` (default: exact while small, then HNSW, or IVF for ``"pq"``), ``"flat"``
                (exact at every size), ``"hnsw"`` or ``"ivf"`` (IVF-Flat, or IVF-PQ with ``"pq"``).
            profile: A preset of index, quantization and cache budgets (``embeddix_core.config.PROFILES``):
                ``"latency"`` (float32 HNSW, large caches), ``"balanced"`` (SQ8 HNSW) or ``"memory"``
                (IVF-PQ, small caches). Explicit arguments win over it; it is stored with the collection
                (``col.config.profile``).
            exist_ok: Return the existing collection instead of raising when the name exists and its
                dimension and metric match.
            embedder: Embeds documents added without vectors and text queries (see
                :meth:`Collection.use_embedder`); its ``model_id`` is recorded as ``embedding_model``
                unless one is given.

        Raises:
            CollectionExistsError: The name exists (and ``exist_ok`` is False or parameters differ).
            InvalidArgumentError: A parameter is out of range, or ``quantization``, ``index`` or
                ``profile`` is not one of the choices or they do not fit together (the message says).
        """
        self._check()
        self._check_name(name)
        s = self.settings
        if profile is not None and profile not in PROFILES:
            raise InvalidArgumentError(f"profile must be None or one of {sorted(PROFILES)}; got {profile!r}")
        preset = PROFILES[profile] if profile is not None else None
        if quantization is None:
            quantization = preset.quantization if preset is not None else "none"
        if index is None:
            index = preset.index if preset is not None and preset.quantization == quantization else "auto"
        cfg = CollectionConfig(
            dim=dim,
            metric=metric,  # type: ignore[arg-type]
            hnsw_m=hnsw_m if hnsw_m is not None else s.hnsw_m,
            ef_construction=ef_construction if ef_construction is not None else s.ef_construction,
            ef_search=ef_search if ef_search is not None else s.ef_search,
            index_threshold=index_threshold if index_threshold is not None else s.index_threshold,
            embedding_model=embedding_model
            if embedding_model is not None or embedder is None
            else str(embedder.model_id),
            segment_size=segment_size if segment_size is not None else s.segment_size,
            quantization=quantization,
            index=index,
            profile=profile,
        )
        with self._lock:
            if exist_ok and self._store.get_collection(name) is not None:
                col = self.get_collection(name)
                have = col.config
                if (
                    col.dim != cfg.dim
                    or col.metric != cfg.metric.value
                    or have.quantization != cfg.quantization
                    or have.approximate != cfg.approximate
                ):
                    from .errors import CollectionExistsError

                    raise CollectionExistsError(
                        f"collection {name!r} exists with dim={col.dim}, metric={col.metric!r}, "
                        f"quantization={have.quantization!r}, index={have.index!r}; asked for "
                        f"dim={cfg.dim}, metric={cfg.metric.value!r}, quantization={cfg.quantization!r}, "
                        f"index={cfg.index!r}"
                    )
                if embedder is not None:
                    col.use_embedder(embedder)
                return col
            row = self._store.create_collection(name, cfg.to_json())
            if self.path is not None:
                # collection ids are never reused within a store, so files here belong to another
                # (deleted or replaced) store: never let the new collection meet them
                remove_snapshots(self.path / "indexes" / str(row.cid))
            col = Collection(self._store, self.path, row, s)
            self._collections[name] = col
            if embedder is not None:
                col.use_embedder(embedder)
            return col

    def get_or_create_collection(
        self, name: str, dim: int, metric: str = "cosine", **kwargs: Any
    ) -> Collection:
        """:meth:`create_collection` with ``exist_ok=True``."""
        return self.create_collection(name, dim, metric, exist_ok=True, **kwargs)

    def get_collection(self, name: str, *, embedder: Embedder | None = None) -> Collection:
        """Return an existing collection.

        Args:
            name: Its name.
            embedder: Embeds documents added without vectors and text queries (see
                :meth:`Collection.use_embedder`); None leaves the handle's embedder as it is.

        Raises:
            CollectionNotFoundError: No collection has that name.
        """
        self._check()
        if not isinstance(name, str):
            raise CollectionNotFoundError(f"no collection named {name!r}: collection names are strings")
        with self._lock:
            col = self._collections.get(name)
            row = self._store.get_collection(name)
            if col is not None and row is not None and row.cid == col._cid and not col._closed:
                if embedder is not None:
                    col.use_embedder(embedder)
                return col
            if col is not None:
                # dropped (and perhaps recreated) by another process: the old handle is finished
                col._close(checkpoint=False)
                self._collections.pop(name, None)
            if row is None:
                # the message names no other collection: servers may show it to a caller who must not
                # learn other tenants' names
                raise CollectionNotFoundError(
                    f"no collection named {name!r}; create it with create_collection, or see list_collections"
                )
            col = Collection(self._store, self.path, row, self.settings)
            self._collections[name] = col
            if embedder is not None:
                col.use_embedder(embedder)
            return col

    def list_collections(self) -> list[str]:
        """Names of all collections, sorted."""
        self._check()
        return self._store.list_collections()

    def drop_collection(self, name: str) -> None:
        """Delete a collection and all its records.

        Raises:
            CollectionNotFoundError: No collection has that name.
        """
        col = self.get_collection(name)
        with self._lock:
            with col._write_lock:
                self._store.drop_collection(col._cid)
                col._drop_files()
            self._collections.pop(name, None)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and not self._closed and self._store.get_collection(name) is not None

    def metrics(self, collections: Iterable[str] | None = None) -> dict[str, Any]:
        """This process's measurements of its open collections, as a plain dict (``metrics.py``).

        Per collection: ``operations`` (count, errors by type and latency percentiles of search,
        search_batch, search_iter, add, upsert, update, delete), ``cache`` (the result cache's hits and
        misses per tier), ``index`` (kind, sizes, parameters: ``stats()``), ``calibration`` and
        ``background`` (the calibration thread, the write buffer and its flush, a running reconfigure);
        ``embed``: per embedding model, process-wide.

        Args:
            collections: Report only these names (None: every collection this handle has open).

        Returns:
            ``{"version", "time", "collections": {name: {...}}, "embed": {model_id: {...}}}``; JSON-ready
            (latencies in ms; histogram buckets as ``[le_seconds, cumulative count]``, ``+Inf`` being
            ``count``).

        Raises:
            ClosedError: The database is closed.
        """
        self._check()
        with self._lock:
            cols = dict(self._collections)
        return database_metrics(cols, collections)
