"""Everything that touches Ray: the shard and catalog actors, joining or starting a cluster, and calls that
outlive a shard restart. Imported only when a store is opened, so ``import embeddix_ray`` works without Ray.

Actors (one set per store, named after the store's data root, in Ray namespace ``embeddix``, detached so
that routers come and go while they stay): ``embeddix-catalog-<key>`` holds the routing table
(:class:`~embeddix_ray._catalog.Catalog`), ``embeddix-shard-<key>-<i>`` serve the shards
(:class:`~embeddix_ray._shard.ShardServer`). Each is created with ``max_restarts=-1``: Ray restarts a killed
one with the same arguments, and it reopens its own directory, where every acknowledged write already is.

Availability rule (:func:`call`): a call that meets a dead or restarting actor (``RayActorError``, whose
outcome is unknown) is sent again, with a short growing pause, until it answers or ``deadline_s`` runs out
(then :class:`ShardUnavailableError`). Every call the routers and the catalog send is safe to send twice:
reads are; ``upsert``, ``update``, deletes, fences and moves are idempotent; a repeated ``add`` is told so
(``retried=True``) and counts ids it finds stored as its own first attempt's. Errors the engine raised on
purpose come back as they were raised (Ray wraps them in ``RayTaskError``; the wrapper is dropped).

Security: Ray's ports accept cloudpickle, which runs code on load. A cluster this module starts listens on
127.0.0.1 only as far as Ray allows (see the package docs); never expose a Ray cluster's ports.
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import ray
from ray.exceptions import RayActorError, RayTaskError

from ._catalog import Catalog
from ._errors import ShardUnavailableError
from ._shard import ShardServer

__all__ = [
    "NAMESPACE",
    "call",
    "catalog_actor",
    "join_cluster",
    "shard_actor",
    "shard_handle",
    "store_key",
    "stream",
    "unwrap",
]

NAMESPACE = "embeddix"
# Actor options every store actor shares. num_cpus=0: an actor holds no CPU slot (a small machine runs
# several shards); threads: concurrent searches run in parallel inside a shard (the engine allows it).
_ACTOR_OPTIONS: dict[str, Any] = {
    "namespace": NAMESPACE,
    "lifetime": "detached",
    "get_if_exists": True,
    "max_restarts": -1,
    "max_task_retries": 0,  # our own retry (call) decides what may be sent twice
    "num_cpus": 0,
    "max_concurrency": 16,
}


def store_key(root: str) -> str:
    """The part of actor names that says which store they serve (its data root's absolute path, hashed)."""
    return hashlib.sha256(os.path.abspath(root).encode()).hexdigest()[:16]


def join_cluster(address: str | None) -> bool:
    """Connect this process to Ray: to the cluster at ``address``, else a local one started now (loopback
    only, no dashboard), unless it is connected already.

    Returns:
        Whether this call connected (the caller then disconnects when done).
    """
    if ray.is_initialized():
        return False
    common: dict[str, Any] = {"namespace": NAMESPACE, "log_to_driver": False, "configure_logging": False}
    if address is None:
        ray.init(_node_ip_address="127.0.0.1", include_dashboard=False, **common)
    else:
        ray.init(address=address, **common)
    return True


def call(submit: Callable[[int], Any], deadline_s: float, what: str) -> Any:
    """``ray.get(submit(attempt))``, sent again while the actor is down, for at most ``deadline_s``.

    Args:
        submit: Sends the call (``attempt`` counts from 0) and returns its object ref.
        deadline_s: How long an unanswered call is retried.
        what: Names the actor in the error.

    Raises:
        ShardUnavailableError: No answer within the deadline.
        EmbeddixError: Whatever the engine raised on purpose, unchanged.
    """
    end = time.monotonic() + deadline_s
    pause = 0.02
    attempt = 0
    while True:
        try:
            return ray.get(submit(attempt))
        except RayTaskError as exc:
            raise unwrap(exc) from None
        except RayActorError as exc:
            if time.monotonic() + pause > end:
                raise ShardUnavailableError(
                    f"{what} did not answer within {deadline_s:g} s ({type(exc).__name__}); check the Ray "
                    "cluster (ray status) and the actor's log"
                ) from exc
            time.sleep(pause)
            pause = min(pause * 2, 0.25)
            attempt += 1


def unwrap(exc: RayTaskError) -> BaseException:
    """The exception the actor raised, without Ray's wrapper (that is what callers catch)."""
    cause = exc.cause
    return cause if isinstance(cause, BaseException) else exc


def stream(start: Callable[[], Any], deadline_s: float, what: str) -> Iterator[Any]:
    """The items of a streaming actor call (``start()`` returns its ref generator); restarted while the
    actor is down, as long as nothing was yielded yet (after that, a failure ends the stream)."""
    end = time.monotonic() + deadline_s
    pause = 0.02
    while True:
        gen = start()
        yielded = False
        try:
            for ref in gen:
                item = ray.get(ref)
                yielded = True
                yield item
            return
        except RayTaskError as exc:
            raise unwrap(exc) from None
        except RayActorError as exc:
            if yielded or time.monotonic() + pause > end:
                raise ShardUnavailableError(f"{what} failed during a progressive search: {exc}") from exc
            time.sleep(pause)
            pause = min(pause * 2, 0.25)


# -- actors ----------------------------------------------------------------------------------------------
def _shard_name(key: str, index: int) -> str:
    return f"embeddix-shard-{key}-{index}"


class _ShardActor:
    """The Ray actor around one :class:`ShardServer` (it adds only the way to reach other shards)."""

    def __init__(
        self, directory: str, store_id: str, index: int, must_exist: bool, key: str, deadline_s: float
    ):
        self._key = key
        self._deadline_s = deadline_s
        self.server = ShardServer(directory, store_id, index, must_exist=must_exist, send=self._send)

    def _send(self, shard: int, method: str, *args: Any) -> Any:
        handle = ray.get_actor(_shard_name(self._key, shard), namespace=NAMESPACE)
        retry = method == "put"
        return call(
            lambda attempt: handle.run.remote(method, *args, *((True,) if retry and attempt else ())),
            self._deadline_s,
            f"shard {shard}",
        )

    def run(self, method: str, *args: Any, **kwargs: Any) -> Any:
        """``ShardServer.<method>(*args, **kwargs)``."""
        if method.startswith("_"):
            raise AttributeError(method)
        return getattr(self.server, method)(*args, **kwargs)

    def steps(self, *args: Any) -> Iterator[Any]:
        """``ShardServer.steps``, streamed."""
        yield from self.server.steps(*args)


class _CatalogActor:
    """The Ray actor around the store's :class:`Catalog`; it also starts the shard actors."""

    def __init__(
        self, root: str, shards: int | None, split_at: int | None, key: str, deadline_s: float, pin: bool
    ):
        self._root = root
        self._key = key
        self._deadline_s = deadline_s
        self._pin = pin
        self._handles: dict[int, Any] = {}
        self._resumed = False
        self._lock = threading.Lock()
        self.catalog = Catalog(root, shards, split_at, self._send)
        if self.catalog.table.live_shards:
            # a restart (Ray's, after this process died): finish what the old one left half done now,
            # not at the next router's open, so that calls waiting on a split do not wait for a router
            threading.Thread(target=self._resume, name="embeddix-resume", daemon=True).start()

    def _resume(self) -> None:
        with self._lock:
            if self._resumed:
                return
            self._resumed = True
        self.catalog.resume()

    def _shard(self, index: int) -> Any:
        with self._lock:
            handle = self._handles.get(index)
            if handle is None:
                t = self.catalog.table
                handle = self._handles[index] = shard_actor(
                    self._root,
                    t.store_id,
                    index,
                    index < t.live_shards,
                    self._key,
                    self._deadline_s,
                    self._pin,
                )
            return handle

    def _send(self, shard: int, method: str, *args: Any) -> Any:
        return call(
            lambda _: self._shard(shard).run.remote(method, *args), self._deadline_s, f"shard {shard}"
        )

    def open(self, shards: int | None, split_at: int | None) -> dict[str, Any]:
        """Grow the store as asked, start every shard actor, finish interrupted work; returns the table."""
        self.catalog.grow(shards, split_at)
        n = self.catalog.table.shards
        for i in range(n):
            self._send(i, "pid")
        self.catalog.mark_live(n)
        self._resume()
        return self.catalog.describe()

    def run(self, method: str, *args: Any) -> Any:
        """``Catalog.<method>(*args)``."""
        if method.startswith("_"):
            raise AttributeError(method)
        return getattr(self.catalog, method)(*args)


def _pinned(resource: str, pin: bool) -> dict[str, Any]:
    """Actor options that keep it on the machine offering ``resource`` (where its directory is)."""
    return {"resources": {resource: 0.001}} if pin else {}


def shard_actor(
    root: str, store_id: str, index: int, must_exist: bool, key: str, deadline_s: float, pin: bool = False
) -> Any:
    """The handle of shard ``index`` of the store at ``root``, created if it is not running."""
    opts = {**_ACTOR_OPTIONS, **_pinned(f"embeddix_shard_{index}", pin)}
    cls = ray.remote(_ShardActor).options(name=_shard_name(key, index), **opts)
    return cls.remote(str(Path(root) / f"shard-{index}"), store_id, index, must_exist, key, deadline_s)


def catalog_actor(
    root: str, shards: int | None, split_at: int | None, deadline_s: float, pin: bool = False
) -> Any:
    """The handle of the catalog of the store at ``root``, created if it is not running.

    ``pin``: every actor asks for a custom resource that names it (``embeddix_catalog``,
    ``embeddix_shard_<i>``), so Ray starts it, and restarts it, only on the machine whose ``ray start
    --resources`` offers that name: the machine where its directory is.
    """
    key = store_key(root)
    opts = {**_ACTOR_OPTIONS, **_pinned("embeddix_catalog", pin)}
    cls = ray.remote(_CatalogActor).options(name=f"embeddix-catalog-{key}", **opts)
    return cls.remote(os.path.abspath(root), shards, split_at, key, deadline_s, pin)


def shard_handle(root: str, index: int) -> Any:
    """The running shard actor ``index`` of the store at ``root`` (the catalog starts them)."""
    return ray.get_actor(_shard_name(store_key(root), index), namespace=NAMESPACE)
