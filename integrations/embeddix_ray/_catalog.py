"""The catalog: the one writer of the routing table (create, drop, split). No Ray here.

``_remote.py`` runs one :class:`Catalog` per store in a named Ray actor; routers read the table from it and
ask it for every change of placement. It reaches the shards through ``send(shard, method, *args)``.

Ordering rules, each so that a crash at any point leaves a state the next start repairs:

* create: the shard creates the collection (fenced at the new epoch), then the table is written. A crash in
  between leaves a collection no entry names; the next create of that name removes it first (``fresh``).
* drop: the shards are fenced at a new version, the entry is removed from the table, then the shards drop
  the data. A crash after the fence leaves an entry older than its fence: :meth:`Catalog.resume` finishes
  the drop.
* split: the entry is written as ``splitting`` at a new epoch (routers wait), the old parts are fenced
  (writes routed earlier drain), the new parts are created, each old part moves out the records that now
  belong elsewhere (copy, then delete: idempotent), and the entry is written ``ready``. A crash anywhere is
  finished by :meth:`Catalog.resume` running the same steps again.
"""

from __future__ import annotations

import inspect
import logging
import threading
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from embeddix_core import CollectionExistsError, CollectionNotFoundError, Embeddix, InvalidArgumentError

from ._routing import READY, SPLITTING, Placement, RoutingTable

__all__ = ["Catalog"]

log = logging.getLogger("embeddix_ray")


class Catalog:
    """The routing table of one sharded store and the operations that change it.

    Args:
        root: The store's data root (the table is ``root / routing.json``).
        shards: Shards wanted (None: as stored, or 1 for a new store); the count can grow, never shrink.
        split_at: The size budget in records (None: as stored, or 1,000,000 for a new store).
        send: ``send(shard, method, *args)`` calls a shard's :class:`~embeddix_ray._shard.ShardServer`.

    Threads: table reads never wait; changes run one at a time under a lock, except the record moves of
    a split, which run outside it (the entry says ``splitting`` meanwhile).
    """

    def __init__(self, root: str, shards: int | None, split_at: int | None, send: Callable[..., Any]) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self._send = send
        self._lock = threading.RLock()
        self._done = threading.Condition(self._lock)
        table = RoutingTable.load(self.root)
        if table is None:
            table = RoutingTable.new(shards or 1, split_at or 1_000_000)
            table.save(self.root)
        self.table = table
        self.grow(shards, split_at)

    def describe(self) -> dict[str, Any]:
        """The table as JSON values (what routers cache)."""
        return self.table.to_json()

    def _publish(self, table: RoutingTable) -> None:
        table.save(self.root)  # durable first: a router never sees a placement that a restart would lose
        self.table = table

    def grow(self, shards: int | None, split_at: int | None) -> dict[str, Any]:
        """Raise the shard count to ``shards`` and set the size budget (None: unchanged)."""
        with self._lock:
            t = self.table
            if shards is not None and shards < t.shards:
                raise InvalidArgumentError(
                    f"the store at {str(self.root)!r} has {t.shards} shards; it cannot shrink to {shards} "
                    "(open it with shards=None or a larger number)"
                )
            new = replace(
                t,
                shards=max(t.shards, shards or 0),
                split_at=split_at if split_at is not None else t.split_at,
            )
            if new != t:
                self._publish(new)
            return self.describe()

    def mark_live(self, shards: int) -> None:
        """Record that shards ``0 .. shards-1`` have started (their directories exist from now on)."""
        with self._lock:
            if shards > self.table.live_shards:
                self._publish(replace(self.table, live_shards=shards))

    # -- create and drop ---------------------------------------------------------------------------
    def create(
        self, name: str, dim: int, metric: str, kwargs: dict[str, Any], exist_ok: bool
    ) -> dict[str, Any]:
        """Create collection ``name`` on the least loaded shard, or (``exist_ok``) check the existing one.

        Returns:
            The entry, as JSON values.

        Raises:
            CollectionExistsError: It exists (and ``exist_ok`` is False, or its parameters differ).
            InvalidArgumentError: The shard's engine refused the name or a parameter.
        """
        with self._lock:
            self._wait_ready(name)
            entry = self.table.collections.get(name)
            if entry is not None:
                if not exist_ok:
                    raise CollectionExistsError(
                        f"collection {name!r} already exists; use get_collection, or get_or_create_collection"
                    )
                for p in entry.parts:  # the engine compares dim, metric and quantization
                    self._send(p, "create", name, entry.epoch, dim, metric, kwargs, False)
                return entry.to_json()
            load = self.table.load_by_shard()
            home = min(range(len(load)), key=lambda s: (load[s], s))
            epoch = self.table.version + 1
            self._send(home, "create", name, epoch, dim, metric, kwargs, True)
            entry = Placement((home,), epoch, READY, {"dim": dim, "metric": metric, **kwargs})
            self._publish(self.table.with_entry(name, entry, bump=True))
            return entry.to_json()

    def drop(self, name: str) -> None:
        """Drop collection ``name`` from every shard holding it.

        Raises:
            CollectionNotFoundError: No collection has that name.
        """
        with self._lock:
            self._wait_ready(name)
            entry = self.table.collections.get(name)
            if entry is None:
                raise CollectionNotFoundError(
                    f"no collection named {name!r}; create it with create_collection, or see list_collections"
                )
            epoch = self.table.version + 1
            for p in entry.parts:
                self._send(p, "fence", name, epoch)
            self._publish(self.table.with_entry(name, None, bump=True))
            for p in entry.parts:
                self._send(p, "drop", name, epoch)

    def _wait_ready(self, name: str) -> None:
        """Wait (lock held, released while waiting) until ``name`` is not being split."""
        self._done.wait_for(lambda: (e := self.table.collections.get(name)) is None or e.state != SPLITTING)

    # -- split -------------------------------------------------------------------------------------
    def split(self, name: str, parts: int | None = None, *, only_from: int | None = None) -> dict[str, Any]:
        """Spread collection ``name`` over ``parts`` shards by id hash (None: twice as many as now, at most
        every shard), moving its records; returns when done. A no-op when it already has that many.

        Args:
            name: The collection.
            parts: How many parts it should have.
            only_from: Split only if it still has this many parts (a background request made when it had
                them; another request may have split it meanwhile).

        Returns:
            The entry, as JSON values.

        Raises:
            CollectionNotFoundError: No collection has that name.
            InvalidArgumentError: ``parts`` is fewer than it has, or more than the store's shards.
        """
        with self._lock:
            self._wait_ready(name)
            entry = self.table.collections.get(name)
            if entry is None:
                raise CollectionNotFoundError(f"no collection named {name!r}")
            if only_from is not None and len(entry.parts) != only_from:
                return entry.to_json()
            want = parts if parts is not None else min(self.table.shards, 2 * len(entry.parts))
            if (
                isinstance(want, bool)
                or not isinstance(want, int)
                or not len(entry.parts) <= want <= self.table.shards
            ):
                raise InvalidArgumentError(
                    f"collection {name!r} has {len(entry.parts)} part(s) and the store {self.table.shards} "
                    f"shards: parts must be an integer from {len(entry.parts)} to {self.table.shards}; "
                    f"got {parts!r}"
                )
            if want == len(entry.parts):
                return entry.to_json()
            load = self.table.load_by_shard()
            extra = sorted(
                (s for s in range(self.table.shards) if s not in entry.parts), key=lambda s: (load[s], s)
            )
            new_parts = entry.parts + tuple(extra[: want - len(entry.parts)])
            epoch = self.table.version + 1
            moving = replace(
                entry, parts=new_parts, epoch=epoch, state=SPLITTING, moving_from=entry.parts, prepared=False
            )
            self._publish(self.table.with_entry(name, moving, bump=True))
        return self._finish_split(name)

    def request_split(self, name: str, count: int) -> None:
        """A router saw a part of ``name`` hold ``count`` records: split it in the background if that is
        over the budget and there are shards to spread to (repeated requests are ignored)."""
        with self._lock:
            entry = self.table.collections.get(name)
            if (
                entry is None
                or entry.state != READY
                or count <= self.table.split_at
                or len(entry.parts) >= self.table.shards
            ):
                return
            start = (name, len(entry.parts))
        threading.Thread(target=self._split_quietly, args=start, name="embeddix-split", daemon=True).start()

    def _split_quietly(self, name: str, parts_now: int) -> None:
        try:
            self.split(name, only_from=parts_now)
        except Exception:
            log.exception("splitting collection %r failed; the next request tries again", name)

    def _finish_split(self, name: str) -> dict[str, Any]:
        """Run (or re-run, after a crash) the steps of a split whose entry says ``splitting``."""
        entry = self.table.collections[name]
        sources = entry.moving_from or entry.parts[:1]  # an entry in SPLITTING always names its sources
        for p in sources:
            self._send(p, "fence", name, entry.epoch)
        if not entry.prepared:
            info = self._send(sources[0], "info", name, entry.epoch)
            config = dict(info["config"])
            dim, metric = config.pop("dim"), config.pop("metric")
            kwargs = {k: v for k, v in config.items() if k in _CREATE_KEYS}
            for p in entry.parts:
                if p not in sources:
                    self._send(p, "create", name, entry.epoch, dim, metric, kwargs, True)
            with self._lock:
                entry = replace(entry, prepared=True)
                self._publish(self.table.with_entry(name, entry))
        for p in sources:
            moved = self._send(p, "move_out", name, entry.epoch, list(entry.parts))
            log.info("split %r: shard %d moved %d records", name, p, moved)
        with self._lock:
            entry = replace(entry, state=READY, moving_from=None, prepared=False)
            self._publish(self.table.with_entry(name, entry))
            self._done.notify_all()
        return entry.to_json()

    def resume(self) -> None:
        """Finish what a crash interrupted: splits in progress, and drops whose shards were fenced."""
        for name, entry in list(self.table.collections.items()):
            if entry.state == SPLITTING:
                self._finish_split(name)
        fences: dict[int, dict[str, int]] = {}
        for name, entry in list(self.table.collections.items()):
            for p in entry.parts:
                if p not in fences:
                    fences[p] = self._send(p, "fences")
                if fences[p].get(name, 0) > entry.epoch:
                    log.warning("finishing the interrupted drop of collection %r", name)
                    self.drop(name)
                    break


# The creation arguments a split copies from the old part's config: every keyword of
# ``Embeddix.create_collection`` that is a config field (read from the signature, so new ones come along).
_CREATE_KEYS = frozenset(inspect.signature(Embeddix.create_collection).parameters) - {
    "self",
    "name",
    "dim",
    "metric",
    "exist_ok",
    "embedder",
}
