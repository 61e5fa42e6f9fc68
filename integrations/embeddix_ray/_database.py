"""RayEmbeddix: a sharded store of collections served by Ray actors, with the API of ``Embeddix``."""

from __future__ import annotations

import threading
from pathlib import Path
from types import TracebackType
from typing import Any

from embeddix_core import (
    ClosedError,
    CollectionNotFoundError,
    InvalidArgumentError,
    Metric,
    MissingExtraError,
)
from embeddix_core.embeddings import Embedder

from ._collection import RayCollection
from ._routing import check_counts

__all__ = ["RayEmbeddix"]


class RayEmbeddix:
    """A sharded Embeddix store: shard actors on a Ray cluster, each an embedded database on its own
    directory, and a catalog actor holding the routing table; this handle routes calls to them.

    Open with :meth:`open`; use as a context manager or call :meth:`close` (idempotent). The handle holds
    no data: any number of handles (threads, processes, MCP server replicas, machines attached to the same
    cluster) serve one store at once, and closing one leaves the actors running (:meth:`shutdown` stops
    them)::

        with RayEmbeddix.open("/data/embeddix", shards=4, address="auto") as db:
            col = db.get_or_create_collection("docs", dim=384)
            col.add(ids=["a"], vectors=[[0.1] * 384])
            hits = col.search([0.1] * 384, k=10)
    """

    def __init__(self, path: Path, router: Any, connected: bool) -> None:
        self.path = path
        self._router = router
        self._connected = connected
        self._collections: dict[str, RayCollection] = {}
        self._lock = threading.Lock()
        self._closed = False

    @classmethod
    def open(
        cls,
        path: str | Path = "./embeddix-data",
        *,
        shards: int | None = None,
        address: str | None = None,
        split_at: int | None = None,
        deadline_s: float = 30.0,
        wait_s: float = 600.0,
        pin: bool = False,
    ) -> RayEmbeddix:
        """Open (creating if needed) the sharded store whose data root is ``path``.

        Args:
            path: The data root, a directory on the machine(s) that run the actors (``file://`` URIs
                too): ``routing.json`` holds the routing table, ``shard-<i>/`` each shard's database.
            shards: How many shard actors (None: as stored, or 1 for a new store). It can grow (new
                collections go to the least loaded shard), never shrink.
            address: The Ray cluster to join (``"auto"``, ``"host:port"``); None: the cluster this process
                is connected to, else a local one started now, on 127.0.0.1.
            split_at: The size budget: a collection whose part holds more records is split over more
                shards (None: as stored, or 1,000,000 for a new store).
            deadline_s: How long a call to a shard that is down (restarting) is retried before
                :class:`~embeddix_ray.ShardUnavailableError`.
            wait_s: How long a call waits for a split of its collection to finish.
            pin: Keep each actor on the machine that holds its directory: shard ``i`` runs only on a node
                started with the custom resource ``embeddix_shard_<i>``, the catalog on one with
                ``embeddix_catalog`` (``ray start --resources '{"embeddix_shard_0": 1}'``). Needed on
                several machines, where directories are local disks; False: Ray places them anywhere.

        Returns:
            The open handle.

        Raises:
            MissingExtraError: Ray is not installed (``pip install 'embeddix[ray]'``).
            InvalidArgumentError: ``shards`` is fewer than the store has, or an argument is out of range.
        """
        check_counts(shards, split_at)
        root = str(path)[len("file://") :] if str(path).startswith("file://") else str(path)
        if not root or root == ":memory:":
            raise InvalidArgumentError(
                f"RayEmbeddix.open needs a data directory (each shard keeps its data on disk); got {path!r}"
            )
        try:
            from ._remote import call, catalog_actor, join_cluster
            from ._router import Router
        except ImportError as exc:
            raise MissingExtraError.for_extra("RayEmbeddix", "ray", exc) from exc
        connected = join_cluster(address)
        try:
            catalog = catalog_actor(root, shards, split_at, deadline_s, pin)
            table = call(lambda _: catalog.open.remote(shards, split_at), deadline_s, "the catalog")
            router = Router(str(Path(root).absolute()), catalog, table, deadline_s, wait_s)
        except BaseException:
            if connected:
                import ray

                ray.shutdown()
            raise
        return cls(Path(root), router, connected)

    # -- context manager ---------------------------------------------------------------------------
    def __enter__(self) -> RayEmbeddix:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close this handle (the actors keep running; a Ray connection ``open`` made ends). Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._collections.clear()
        if self._connected:
            import ray

            ray.shutdown()

    def shutdown(self) -> None:
        """Close every shard's database (saving index snapshots) and stop the store's actors, then close."""
        self._check()
        import ray

        router = self._router
        for i in range(router.table.shards):
            handle = router.shard(i)
            ray.get(handle.run.remote("close"))
            ray.kill(handle, no_restart=True)
        ray.kill(router.catalog, no_restart=True)
        self.close()

    def __repr__(self) -> str:
        if self._closed:
            return f"RayEmbeddix({str(self.path)!r}, closed)"
        return f"RayEmbeddix({str(self.path)!r}, shards={self.shards}, collections={self.list_collections()})"

    def _check(self) -> None:
        if self._closed:
            raise ClosedError("the store handle is closed; open it again with RayEmbeddix.open(path)")

    @property
    def shards(self) -> int:
        """How many shard actors the store has."""
        return int(self._router.table.shards)

    def shard_pids(self) -> list[int]:
        """Each shard actor's process id, in shard order (for operations and failure tests)."""
        self._check()
        return list(self._router.pids())

    # -- collections -------------------------------------------------------------------------------
    def create_collection(
        self,
        name: str,
        dim: int,
        metric: str = "cosine",
        *,
        exist_ok: bool = False,
        embedder: Embedder | None = None,
        **kwargs: Any,
    ) -> RayCollection:
        """Create a collection on the least loaded shard (see :meth:`embeddix_core.Embeddix.create_collection`
        for every argument; they are passed to the shard's engine unchanged).

        Raises:
            CollectionExistsError: The name exists (and ``exist_ok`` is False or parameters differ).
            InvalidArgumentError: A parameter is out of range.
        """
        self._check()
        if embedder is not None and kwargs.get("embedding_model") is None:
            kwargs["embedding_model"] = str(embedder.model_id)
        kwargs = {key: value for key, value in kwargs.items() if value is not None}
        with self._lock:
            known = self._collections.get(name) if exist_ok else None
        if known is not None and self._same(known, dim, metric, kwargs):
            # the MCP server asks for its collections on every tool call: a known one costs no round trip
            # (one dropped meanwhile by another router is noticed by its next call, through the fence)
            if embedder is not None:
                known.use_embedder(embedder)
            return known
        router = self._router
        router.ask_catalog("create", name, dim, metric, kwargs, exist_ok)
        router.refresh()
        return self._handle(name, embedder)

    @staticmethod
    def _same(col: RayCollection, dim: Any, metric: Any, kwargs: dict[str, Any]) -> bool:
        """Whether ``col`` has the parameters ``get_or_create_collection`` compares."""
        try:
            return (
                dim == col.dim
                and Metric.parse(metric).value == col.metric
                and kwargs.get("quantization", "none") == col.config.quantization
            )
        except InvalidArgumentError:
            return False

    def get_or_create_collection(
        self, name: str, dim: int, metric: str = "cosine", **kwargs: Any
    ) -> RayCollection:
        """:meth:`create_collection` with ``exist_ok=True``."""
        return self.create_collection(name, dim, metric, exist_ok=True, **kwargs)

    def get_collection(self, name: str, *, embedder: Embedder | None = None) -> RayCollection:
        """Return an existing collection.

        Raises:
            CollectionNotFoundError: No collection has that name.
        """
        self._check()
        if not isinstance(name, str):
            raise CollectionNotFoundError(f"no collection named {name!r}: collection names are strings")
        self._router.placement(name)
        return self._handle(name, embedder)

    def _handle(self, name: str, embedder: Embedder | None) -> RayCollection:
        with self._lock:
            col = self._collections.get(name)
        if col is None:
            info = self._router.routed(name, lambda e: self._router.send(e.parts[0], "info", name, e.epoch))
            col = RayCollection(self._router, name, info)
            with self._lock:
                col = self._collections.setdefault(name, col)
        if embedder is not None:
            col.use_embedder(embedder)
        return col

    def list_collections(self) -> list[str]:
        """Names of all collections, sorted."""
        self._check()
        return sorted(self._router.refresh().collections)

    def drop_collection(self, name: str) -> None:
        """Delete a collection and all its records, on every shard holding it.

        Raises:
            CollectionNotFoundError: No collection has that name.
        """
        self._check()
        self._router.ask_catalog("drop", name)
        with self._lock:
            self._collections.pop(name, None)
        self._router.refresh()

    def split(self, name: str, parts: int | None = None) -> tuple[int, ...]:
        """Spread collection ``name`` over ``parts`` shards now (None: twice as many, at most all), moving
        its records by id hash; calls on it wait meanwhile. Collections split themselves when a part
        outgrows ``split_at``; this is for doing it ahead of time.

        Returns:
            The shards that hold it now.
        """
        self._check()
        self._router.ask_catalog("split", name, parts)
        return self._router.placement(name, fresh=True).parts

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str) or self._closed:
            return False
        return name in self._router.refresh().collections
