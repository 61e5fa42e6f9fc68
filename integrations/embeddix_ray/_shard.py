"""One shard: the embedded engine on the shard's own data directory, serving routed calls. No Ray here.

``_remote.py`` wraps :class:`ShardServer` in a Ray actor; everything it does is plain Python, so it runs (and
is tested) without Ray too.

Durability rule: a call returns after the shard's :class:`~embeddix_core.Embeddix` committed it (SQLite WAL,
``durability="full"`` by default: fsync per commit). A shard process killed at any moment restarts from its
directory with every acknowledged write; Ray restarts it (``max_restarts``) with the same arguments.

Fencing rule (see ``_routing.py``): every collection call carries the epoch of the placement the router used.
:meth:`ShardServer.fence` raises a collection's minimum epoch, stores it durably (``fences.json``), and then
waits until every call that entered with an older epoch has left; a call older than the fence raises
:class:`StaleRoutingError`, and the router re-reads the table. So once a fence returns, no write routed by an
older table lands here: a split can move the records, a drop can remove them.

Threads: the actor runs calls on several threads (``max_concurrency``); the core allows concurrent searches
and serializes writes itself.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Generator, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from embeddix_core import (
    Collection,
    CollectionNotFoundError,
    CorruptionError,
    DuplicateIdError,
    Embeddix,
    EmbeddixError,
    Hits,
    Record,
    SearchStep,
    StorageError,
)

from ._errors import StaleRoutingError
from ._routing import FORMAT_VERSION, atomic_write_json, part_of, read_json

__all__ = ["CALLS", "ShardServer"]

SHARD_FORMAT = "embeddix-ray-shard"
FENCES_FORMAT = "embeddix-ray-fences"
MOVE_BATCH = 1000
CHECKPOINT_S = 30.0  # how often collections written to save an index snapshot (restart time, not safety)
# ...and sooner, once a collection's writes paused this long: a load followed by reads gets its snapshot
# at once (ray_bench killed a 20K-record shard seconds after its load: 6.5 s to rebuild the graph)
CHECKPOINT_QUIET_S = 2.0
WRITES = frozenset({"clear", "compact", "delete", "update", "update_metadata"})
# Collection methods a router may call by name (everything else is refused): the read and write verbs of
# the public API whose arguments and results are plain values.
CALLS = frozenset(
    {
        "__contains__",
        "__len__",
        "cache_clear",
        "cache_info",
        "calibrate",
        "check_model",
        "checkpoint",
        "clear",
        "compact",
        "configure",
        "count",
        "delete",
        "explain",
        "feedback",
        "forget_user",
        "get",
        "personalization",
        "profile",
        "search",
        "search_batch",
        "stats",
        "update",
        "update_metadata",
    }
)


class ShardServer:
    """An :class:`~embeddix_core.Embeddix` database on ``directory``, serving calls routed by collection.

    Args:
        directory: The shard's own data directory (created if missing).
        store_id: The sharded store's id; must match the one written in the directory.
        index: This shard's number in the store.
        must_exist: The directory was made before (by an earlier start): refuse to start on an empty one
            (a shard restarted where its data is not would otherwise serve an empty collection).
        send: ``send(shard, method, *args)`` calls another shard (moves during a split); None: no moves.

    Raises:
        CorruptionError: The directory belongs to another store or another shard.
        StorageError: ``must_exist`` and the directory holds no shard.
    """

    def __init__(
        self,
        directory: str,
        store_id: str,
        index: int,
        *,
        must_exist: bool = False,
        send: Callable[..., Any] | None = None,
        checkpoint_s: float = CHECKPOINT_S,
    ) -> None:
        self.path = Path(directory)
        self.index = index
        self._send = send
        ident = read_json(self.path / "shard.json", SHARD_FORMAT)
        if ident is None:
            if must_exist:
                raise StorageError(
                    f"shard {index} of store {store_id} has no data in {str(self.path)!r}: it started on a "
                    "machine without its directory; run it where the directory is (see embeddix_ray docs)"
                )
            self.path.mkdir(parents=True, exist_ok=True)
            doc = {
                "format": SHARD_FORMAT,
                "format_version": FORMAT_VERSION,
                "store_id": store_id,
                "index": index,
            }
            atomic_write_json(self.path / "shard.json", doc)
        elif ident.get("store_id") != store_id or ident.get("index") != index:
            raise CorruptionError(
                f"{str(self.path)!r} holds shard {ident.get('index')} of store {ident.get('store_id')}, not "
                f"shard {index} of store {store_id}"
            )
        self.db = Embeddix.open(self.path)
        fences = read_json(self.path / "fences.json", FENCES_FORMAT)
        self._fences: dict[str, int] = dict(fences["fences"]) if fences else {}
        self._inflight: dict[str, int] = {}
        self._gate = threading.Condition()
        # open scans: (name, filter, where_document, vectors, token) -> (iterator, records yielded so far)
        self._scans: OrderedDict[tuple[Any, ...], tuple[Iterator[Record], int]] = OrderedDict()
        self._scan_lock = threading.Lock()
        # collections written since their last snapshot: name -> (first, last) write time (_checkpoints)
        self._dirty: dict[str, tuple[float, float]] = {}
        self._stop = threading.Event()
        if checkpoint_s > 0:
            threading.Thread(
                target=self._checkpoints, args=(checkpoint_s,), name="embeddix-shard-checkpoint", daemon=True
            ).start()

    def _mark(self, name: str) -> None:
        now = time.monotonic()
        with self._gate:
            self._dirty[name] = (self._dirty.get(name, (now, now))[0], now)

    def _checkpoints(self, every_s: float) -> None:
        """Save an index snapshot of each collection written to, once its writes paused
        ``CHECKPOINT_QUIET_S`` or at the latest ``every_s`` after its first unsaved write.

        Why: a killed shard reopens from its directory, and a collection without a recent snapshot
        rebuilds its HNSW graph from the store (seconds for tens of thousands of vectors) before it answers;
        with one, it loads the snapshot and replays the last few seconds of writes. Durability does not
        depend on it (every write is in SQLite before it is acknowledged); only restart time does.
        """
        while not self._stop.wait(min(1.0, every_s)):
            now = time.monotonic()
            with self._gate:
                names = [
                    name
                    for name, (first, last) in self._dirty.items()
                    if now - last >= CHECKPOINT_QUIET_S or now - first >= every_s
                ]
                for name in names:
                    del self._dirty[name]
            for name in names:
                with contextlib.suppress(EmbeddixError):  # dropped or closed meanwhile: nothing to save
                    self.db.get_collection(name).checkpoint()

    # -- fencing -----------------------------------------------------------------------------------
    @contextlib.contextmanager
    def _entered(self, name: str, epoch: int) -> Iterator[Collection]:
        """The collection, for a call routed at ``epoch`` (refused if older than the fence)."""
        with self._gate:
            fence = self._fences.get(name, 0)
            if epoch < fence:
                raise StaleRoutingError(f"collection {name!r}: routed at epoch {epoch}, fenced at {fence}")
            self._inflight[name] = self._inflight.get(name, 0) + 1
        try:
            yield self.db.get_collection(name)
        finally:
            with self._gate:
                self._inflight[name] -= 1
                if not self._inflight[name]:
                    del self._inflight[name]
                    self._gate.notify_all()

    def fence(self, name: str, epoch: int) -> None:
        """Refuse calls on ``name`` older than ``epoch`` from now on (durably); wait for those in flight."""
        with self._gate:
            if epoch > self._fences.get(name, 0):
                self._fences[name] = epoch
                atomic_write_json(
                    self.path / "fences.json",
                    {"format": FENCES_FORMAT, "format_version": FORMAT_VERSION, "fences": self._fences},
                )
            self._gate.wait_for(lambda: name not in self._inflight)

    def fences(self) -> dict[str, int]:
        """Every collection's fence (the catalog compares them with the table when it restarts)."""
        with self._gate:
            return dict(self._fences)

    # -- collections -------------------------------------------------------------------------------
    def create(
        self, name: str, epoch: int, dim: int, metric: str, kwargs: dict[str, Any], fresh: bool
    ) -> dict[str, Any]:
        """Create collection ``name`` (``fresh``: the catalog has no entry for it, so a collection of that
        name here is left over from an interrupted drop and is removed first), or check the existing one's
        parameters (not ``fresh``: ``get_or_create`` semantics).

        Returns:
            :meth:`info` of the collection.
        """
        self.fence(name, epoch)
        if fresh and name in self.db:
            self.db.drop_collection(name)
        self.db.create_collection(name, dim, metric, exist_ok=not fresh, **kwargs)
        return self.info(name, epoch)

    def drop(self, name: str, epoch: int) -> None:
        """Fence ``name`` at ``epoch`` and drop it here (absent is fine: drops are retried)."""
        self.fence(name, epoch)
        with contextlib.suppress(CollectionNotFoundError):
            self.db.drop_collection(name)

    def info(self, name: str, epoch: int) -> dict[str, Any]:
        """What a router caches about a collection: its config as creation arguments, index, calibration."""
        with self._entered(name, epoch) as col:
            config = {k: getattr(v, "value", v) for k, v in dataclasses.asdict(col.config).items()}
            return {"config": config, "index_kind": col.index_kind, "calibration": col.calibration}

    def call(self, name: str, epoch: int, method: str, args: Sequence[Any], kwargs: dict[str, Any]) -> Any:
        """``collection.<method>(*args, **kwargs)`` for a method in :data:`CALLS`."""
        if method in WRITES:
            self._mark(name)
        if method not in CALLS:
            raise StaleRoutingError(
                f"method {method!r} is not served by shards"
            )  # a router bug, not user input
        with self._entered(name, epoch) as col:
            return getattr(col, method)(*args, **kwargs)

    def put(
        self,
        name: str,
        epoch: int,
        upsert: bool,
        ids: Any,
        vectors: Any,
        documents: Any,
        metadatas: Any,
        retried: bool = False,
    ) -> tuple[list[str], int]:
        """``add`` or ``upsert`` one batch; returns the ids and the part's record count after it.

        ``retried``: the router sent this batch before and lost the answer (the shard restarted). An
        ``add`` whose ids are then all stored already succeeded the first time (a batch is atomic), so the
        duplicate-id error is the first attempt's success, not the caller's mistake.
        """
        self._mark(name)
        with self._entered(name, epoch) as col:
            try:
                out = (col.upsert if upsert else col.add)(ids, vectors, documents, metadatas)
            except DuplicateIdError:
                wanted = [ids] if isinstance(ids, str) else list(ids)
                if not retried or not all(rid in col for rid in wanted):
                    raise
                out = wanted
            return out, len(col)

    def scan_page(
        self,
        name: str,
        epoch: int,
        filter: Any,
        where_document: Any,
        include_vectors: bool,
        token: str,
        offset: int,
        limit: int,
    ) -> list[Record]:
        """Records ``offset .. offset+limit`` of one scan (``token`` names the scan).

        The scan's iterator stays open here between pages (a few recent scans are kept), so paging costs
        one pass; a page whose iterator is gone (a restart, or evicted) reopens the scan and skips
        ``offset`` records, as paging by offset does.
        """
        key = (name, repr(filter), repr(where_document), include_vectors, token)
        with self._entered(name, epoch) as col:
            with self._scan_lock:
                it, pos = self._scans.pop(key, (None, 0))
            if it is None or pos != offset:
                it = col.scan(
                    filter, where_document=where_document, include_vectors=include_vectors, batch_size=limit
                )
                pos = sum(1 for _ in itertools.islice(it, offset))
            page = list(itertools.islice(it, limit))
            if len(page) == limit:
                with self._scan_lock:
                    self._scans[key] = (it, pos + len(page))
                    while len(self._scans) > 64:
                        self._scans.popitem(last=False)
            return page

    def steps(
        self, name: str, epoch: int, vector: Any, k: int, kwargs: dict[str, Any]
    ) -> Generator[SearchStep]:
        """The steps of ``search_iter``, one at a time (the actor streams them to the router)."""
        with self._entered(name, epoch) as col:
            it = col.search_iter(vector, k, **kwargs)
        try:
            yield from it
        finally:
            it.close()

    def hybrid_parts(
        self, name: str, epoch: int, vector: Any, text: str, fetch_k: int, kwargs: dict[str, Any]
    ) -> tuple[Hits, Hits, Hits]:
        """The rankings a router fuses for a hybrid search over several parts.

        Returns:
            The ``fetch_k`` nearest by vector; the ``fetch_k`` best by BM25 (score ``-bm25``); the same
            text ranking with each hit's vector similarity (a hybrid search weighing text only keeps the
            text order and scores every hit by similarity, as a plain search would).
        """
        with self._entered(name, epoch) as col:
            by_vector = col.search(vector, fetch_k, **{**kwargs, "cache": False})
            text_kwargs = {k: v for k, v in kwargs.items() if k in ("filter", "where_document")}
            by_text = col.search(None, fetch_k, text=text, **text_kwargs)
            vectors = bool(kwargs.get("include_vectors", False))
            scored = col.search(
                vector,
                fetch_k,
                text=text,
                text_weight=1.0,
                fetch_k=fetch_k,
                include_vectors=vectors,
                **text_kwargs,
            )
            return by_vector, by_text, scored

    def move_out(self, name: str, epoch: int, parts: Sequence[int]) -> int:
        """Move every record of ``name`` whose home under ``parts`` is another shard there, then delete it
        here. Idempotent (a move interrupted by a crash is finished by running it again).

        Returns:
            How many records moved.
        """
        if self._send is None:
            raise StaleRoutingError("this shard cannot reach the others")
        moved = 0
        with self._entered(name, epoch) as col:
            batch: list[Record] = []
            for rec in col.scan(include_vectors=True, batch_size=MOVE_BATCH):
                if parts[part_of(rec.id, len(parts))] != self.index:
                    batch.append(rec)
                if len(batch) >= MOVE_BATCH:
                    moved += self._move(col, name, epoch, parts, batch)
                    batch = []
            if batch:
                moved += self._move(col, name, epoch, parts, batch)
        return moved

    def _move(self, col: Collection, name: str, epoch: int, parts: Sequence[int], recs: list[Record]) -> int:
        send = self._send
        if send is None:
            raise StaleRoutingError("this shard cannot reach the others")
        by_home: dict[int, list[Record]] = {}
        for rec in recs:
            by_home.setdefault(parts[part_of(rec.id, len(parts))], []).append(rec)
        for home, group in by_home.items():
            # the stored vectors as given (the store keeps them un-normalized), so scores stay identical
            vectors = np.stack([r.vector for r in group if r.vector is not None])
            send(
                home,
                "put",
                name,
                epoch,
                True,
                [r.id for r in group],
                vectors,
                [r.document for r in group],
                [r.metadata for r in group],
            )
        # deleted here only after every target committed its copy: a crash in between leaves a record on
        # both, and the move run again deletes the copy here
        col.delete([r.id for r in recs])
        return len(recs)

    # -- process -----------------------------------------------------------------------------------
    def pid(self) -> int:
        """This shard's process id (tests kill it)."""
        return os.getpid()

    def close(self) -> None:
        """Close the database (saves index snapshots). Idempotent."""
        self._stop.set()
        self.db.close()
