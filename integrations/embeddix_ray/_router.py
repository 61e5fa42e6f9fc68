"""The router: one per open store in a process. It caches the routing table and sends each call to the
shards the table names, scatter-gather when there are several. Stateless beyond that cache: any number of
routers (processes, MCP replicas, machines) serve one store at once.

Staleness rule: the cached table is read again when a collection is not in it, when a shard answers that a
call's placement is older than its fence (``StaleRoutingError``), and while a collection is being split
(calls wait for the split, up to ``wait_s``). A call never lands on a shard by an out-of-date placement.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import ray
from ray.exceptions import RayActorError, RayTaskError

from embeddix_core import CollectionNotFoundError

from ._errors import ShardUnavailableError, StaleRoutingError
from ._remote import call, shard_handle, stream, unwrap
from ._routing import SPLITTING, Placement, RoutingTable

__all__ = ["Job", "Router"]

T = TypeVar("T")
Job = tuple[int, str, tuple[Any, ...]]  # (shard, ShardServer method, arguments)


class Router:
    """Routes calls for the store whose catalog actor is ``catalog``.

    Args:
        root: The store's data root (names its actors).
        catalog: The catalog actor's handle.
        table: The routing table as the catalog sent it.
        deadline_s: How long a call to a down actor is retried (see ``_remote.call``).
        wait_s: How long a call waits for a split of its collection to finish.
    """

    def __init__(
        self, root: str, catalog: Any, table: dict[str, Any], deadline_s: float, wait_s: float
    ) -> None:
        self.root = root
        self.catalog = catalog
        self.deadline_s = deadline_s
        self.wait_s = wait_s
        self.table = RoutingTable.from_json(table)
        self._handles: dict[int, Any] = {}
        self._lock = threading.Lock()

    # -- the table ---------------------------------------------------------------------------------
    def ask_catalog(self, method: str, *args: Any) -> Any:
        """``Catalog.<method>(*args)`` on the catalog actor (retried while it restarts)."""
        return call(lambda _: self.catalog.run.remote(method, *args), self.deadline_s, "the catalog")

    def refresh(self) -> RoutingTable:
        """Read the table from the catalog again."""
        self.table = RoutingTable.from_json(self.ask_catalog("describe"))
        return self.table

    def adopt(self, table: dict[str, Any]) -> None:
        """Take a table the catalog just returned (after a change this router asked for)."""
        new = RoutingTable.from_json(table)
        if new.version >= self.table.version:
            self.table = new

    def placement(self, name: str, *, fresh: bool = False) -> Placement:
        """Where collection ``name`` lives.

        Raises:
            CollectionNotFoundError: No collection has that name.
        """
        entry = None if fresh else self.table.collections.get(name)
        if entry is None:
            entry = self.refresh().collections.get(name)
        if entry is None:
            raise CollectionNotFoundError(
                f"no collection named {name!r}; create it with create_collection, or see list_collections"
            )
        return entry

    def routed(self, name: str, op: Callable[[Placement], T]) -> T:
        """``op(placement)``, run again with a fresh placement when a shard says it was stale or while the
        collection is being split (for at most ``wait_s``)."""
        end = time.monotonic() + self.wait_s
        fresh = False
        while True:
            entry = self.placement(name, fresh=fresh)
            if entry.state != SPLITTING:
                try:
                    return op(entry)
                except StaleRoutingError:
                    pass
            if time.monotonic() > end:
                raise ShardUnavailableError(
                    f"collection {name!r} stayed unavailable for {self.wait_s:g} s (state {entry.state!r}); "
                    "a split may still be running: see the catalog actor's log"
                )
            fresh = True
            # a fence lands before the catalog publishes the table that explains it: ask again shortly
            time.sleep(0.05 if entry.state == SPLITTING else 0.01)

    # -- shards ------------------------------------------------------------------------------------
    def _shard(self, index: int, again: bool = False) -> Any:
        with self._lock:
            handle = None if again else self._handles.get(index)
        if handle is None:
            try:
                handle = shard_handle(self.root, index)
            except (
                ValueError
            ):  # not running at all (never started, or killed for good): the catalog starts it
                call(lambda _: self.catalog.open.remote(None, None), self.deadline_s, "the catalog")
                handle = shard_handle(self.root, index)
            with self._lock:
                self._handles[index] = handle
        return handle

    def shard(self, index: int) -> Any:
        """The actor handle of shard ``index``."""
        return self._shard(index)

    def _retry(self, job: Job, *, resent: bool = False) -> Any:
        shard, method, args = job

        def submit(attempt: int) -> Any:
            # a put sent again says so: its first attempt may have committed (see ShardServer.put)
            extra = (True,) if method == "put" and (attempt or resent) else ()
            return self._shard(shard, again=attempt > 0).run.remote(method, *args, *extra)

        return call(submit, self.deadline_s, f"shard {shard}")

    def send(self, shard: int, method: str, *args: Any) -> Any:
        """``ShardServer.<method>(*args)`` on one shard."""
        return self._retry((shard, method, args))

    def gather(self, jobs: Sequence[Job], *, errors: bool = False) -> list[Any]:
        """Run the jobs on their shards at once and return their results in order.

        Args:
            jobs: (shard, method, arguments) each.
            errors: Return an error a job raised in its place instead of raising the first one.
        """
        refs = [self._shard(s).run.remote(m, *a) for s, m, a in jobs]
        out: list[Any] = []
        for job, ref in zip(jobs, refs, strict=True):
            try:
                try:
                    out.append(ray.get(ref))
                except RayTaskError as exc:
                    raise unwrap(exc) from None
                except RayActorError:
                    # the shard went down mid-call: this job alone is sent again (see Router._retry)
                    out.append(self._retry(job, resent=True))
            except StaleRoutingError:
                raise
            except Exception as exc:
                if not errors:
                    raise
                out.append(exc)
        return out

    def stream(self, shard: int, *args: Any) -> Any:
        """The streamed steps of ``ShardServer.steps(*args)`` on one shard."""

        def start() -> Any:
            return self._shard(shard).steps.options(num_returns="streaming").remote(*args)

        return stream(start, self.deadline_s, f"shard {shard}")

    def pids(self) -> list[int]:
        """Each shard's process id."""
        return self.gather([(i, "pid", ()) for i in range(self.table.shards)])
