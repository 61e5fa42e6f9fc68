"""The cached queries of a namespace, and the hash tables that find the ones near a new query.

A semantic lookup must first choose which cached queries to try. Two tiers, both only a pre-filter: they
choose which cached queries are tried, never whether a hit is served (that is ``certify.py``'s bound).

* Hash tables (locality-sensitive hashing by random hyperplanes), for the entries that may certify.
* While the namespace holds at most ``_SCAN_MAX`` entries, one matrix-vector product over every cached
  query, which also finds the less similar ones the tables miss.

The parameters. A near duplicate at cosine 0.998 (0.063 rad) lies across a random hyperplane from its
source with probability 0.063 / pi = 2%, so it shares one 16-bit key with it with probability 0.72 and
at least one of six with 0.9995. A lookup also tries, per table, the two keys one bit away where the query
lies closest to the hyperplane (multi-probe), which catches less similar ones. The hyperplanes live in
the subspace of every 4th coordinate (for 384-d: a slice is a view, not a gather): a near duplicate's tilt
spreads over every coordinate, so the angle there is about the same. Measured on MiniLM text, in that
subspace: 98.0% / 71% of near duplicates at cosine 0.99 / 0.95 share a key, 99.97% / 94% with the probes
(0.998: 99.93% without). The planes take 37 KB instead of 147, which matters: lookups run between
searches that flush the CPU caches. A lookup costs one (96 x 96) matrix-vector product and six dict reads
(18 when the probes are needed), ~10 us.

The tables replace an HNSW graph over the cached queries: on the cache benchmark, consulted after the
tables, it added none of the 1,909 semantic hits, at ~60-80 us per lookup and ~100-150 us per stored
entry (cold cache lines both). l2 queries are hashed relative to the namespace's first hashed query, so a
collection far from the origin does not put every query in one bucket.

The same query matrix serves insert invalidation (:meth:`QueryTable.raw`: one product of the new vectors
against every cached query) and the certifier (a cached query's vector and squared norm).
"""

from __future__ import annotations

import threading
from collections.abc import Iterable

import numpy as np

__all__ = ["LSH_OVERHEAD", "QueryTable"]

_SCAN_MAX = 512
_LSH_TABLES = 6
_LSH_BITS = 16  # bits per table: one big-endian uint16 of np.packbits' output
_LSH_DIMS = 96  # about this many coordinates, evenly spaced, span the hyperplanes (all below that)
_LSH_BUCKET = 32  # members of one bucket tried at most (the newest): a crowded bucket stays cheap
# Bytes one entry adds to the hash tables, per table: a dict slot (~50 amortized), its int key (32) and
# the slot number (32; a list of them in the rare shared bucket).
LSH_OVERHEAD = _LSH_TABLES * 112
# dim -> (coordinate step, hyperplanes over those coordinates), shared by the namespaces of that dimension
_PLANES: dict[int, tuple[int, np.ndarray]] = {}
_PLANES_LOCK = threading.Lock()

# A hash table: key -> slot, or a list of slots when several share the key (rare).
_Table = dict[int, int | list[int]]


def _planes(dim: int) -> tuple[int, np.ndarray]:
    """The coordinate step and the hyperplanes (normals, one per hash bit, over the coordinates ``::step``)
    of every namespace of this dimension."""
    with _PLANES_LOCK:
        got = _PLANES.get(dim)
        if got is None:
            step = max(1, dim // _LSH_DIMS)
            rng = np.random.default_rng(0x5EED)  # fixed: keys stay comparable across namespaces and runs
            planes = rng.standard_normal((_LSH_TABLES * _LSH_BITS, len(range(0, dim, step)))).astype(
                np.float32
            )
            got = _PLANES[dim] = (step, planes)
        return got


def _collect(lookups: Iterable[tuple[_Table, int]], found: dict[int, None]) -> None:
    """Add the slots hash tables hold under these (table, key) pairs to ``found`` (an ordered set)."""
    for table, key in lookups:
        got = table.get(key)
        if got is None:
            continue
        if isinstance(got, list):
            found.update(dict.fromkeys(got[-_LSH_BUCKET:]))
        else:
            found[got] = None


class QueryTable:
    """The query vector of every cached entry, by slot, and the hash tables that find near ones.

    Slots are the cache's: it chooses them, and calls :meth:`grow` when it runs out. Not thread-safe on
    its own: the namespace's lock covers every call.

    Args:
        dim: Vector dimension.
        space: ``"ip"`` or ``"l2"``: how raw distances are computed.
        cap: Initial number of slots.
    """

    __slots__ = ("fam", "keys", "live", "origin", "planes", "q", "qn", "space", "step", "tables")

    def __init__(self, dim: int, space: str, cap: int) -> None:
        self.space = space
        self.q = np.zeros((cap, dim), np.float32)
        self.qn = np.zeros(cap, np.float32)  # squared norms (l2)
        self.fam = np.full(cap, -1, np.int64)  # family id per slot (-1: free)
        self.live = 0  # slots in use: the scan stops past _SCAN_MAX of them
        self.step, self.planes = _planes(dim)
        # _LSH_TABLES hash tables per family, over the queries of the entries that may certify
        self.tables: dict[int, list[_Table]] = {}
        self.keys = np.full((cap, _LSH_TABLES), -1, np.int64)  # per slot (-1: not in the tables)
        self.origin: np.ndarray | None = None  # l2: the point hyperplanes pass through

    def grow(self) -> None:
        """Double the number of slots."""
        cap = len(self.fam)
        self.q = np.concatenate([self.q, np.zeros((cap, self.q.shape[1]), np.float32)])
        self.qn = np.concatenate([self.qn, np.zeros(cap, np.float32)])
        self.fam = np.concatenate([self.fam, np.full(cap, -1, np.int64)])
        self.keys = np.concatenate([self.keys, np.full((cap, _LSH_TABLES), -1, np.int64)])

    def put(self, slot: int, query: np.ndarray, family: int, hashed: bool) -> None:
        """Hold a query in a free slot; ``hashed``: also in the hash tables (entries that may certify)."""
        self.q[slot] = query
        if self.space == "l2":  # only l2 distances use the squared norms (ip queries are unit length)
            q64 = query.astype(np.float64)  # a huge finite vector's squared norm overflows float32
            self.qn[slot] = min(float(q64 @ q64), float(np.finfo(np.float32).max))
        self.fam[slot] = family
        self.live += 1
        if hashed:
            self._add(slot, query, family)

    def remove(self, slot: int, family: int) -> None:
        """Free a slot (its query leaves the hash tables and the scan)."""
        self._drop(slot, family)
        self.fam[slot] = -1
        self.live -= 1

    def raw(self, vecs: np.ndarray, rows: slice | np.ndarray) -> np.ndarray:
        """Raw index-space distances (len(vecs), len(rows)) between vectors and cached queries."""
        q = self.q[rows]
        # (cached x new) orientation: for one new vector this is a matrix-vector product (sgemv); the
        # (1 x d) @ (d x n) spelling goes through sgemm, several times slower for this shape
        dots = (q @ vecs.T).T
        if self.space == "ip":
            return 1.0 - dots
        vn = np.einsum("ij,ij->i", vecs, vecs)
        return np.maximum(vn[:, None] - 2.0 * dots + self.qn[rows][None, :], 0.0)

    # -- the two tiers ---------------------------------------------------------------------------
    def scan(self, query: np.ndarray, family: int, limit: float) -> tuple[list[int], list[float]]:
        """The (up to 3) cached queries of the family nearest to ``query``, while there are few (see
        ``_SCAN_MAX``): slots, raw distances. One matrix-vector product over them."""
        if self.live > _SCAN_MAX:
            return [], []
        n = len(self.fam)
        raw = self.raw(query[None, :], slice(0, n))[0]
        raw[self.fam[:n] != family] = np.inf
        m = min(3, n)
        top = np.argpartition(raw, m - 1)[:m] if m < n else np.arange(n)
        top = top[np.argsort(raw[top])]
        keep = [int(t) for t in top if np.isfinite(raw[t])]
        return keep, [float(raw[t]) for t in keep]

    def near(self, query: np.ndarray, family: int, limit: float) -> tuple[list[int], list[float]]:
        """Up to 3 cached queries sharing a key with ``query``, nearest first: slots, raw distances.

        When none of them is within ``limit`` (the similarity pre-filter), the keys one bit away where the
        query is least sure of its side are tried too (see the module docstring): near duplicates rarely
        need them, so they are computed only then.
        """
        tables = self.tables.get(family)
        if tables is None:
            return [], []
        proj = self._project(query)
        keys: list[int] = np.packbits(proj > 0).view(">u2").tolist()  # as _hash
        found: dict[int, None] = {}
        _collect(zip(tables, keys, strict=True), found)
        best = self._nearest(query, found)
        if best[1] and best[1][0] <= limit:
            return best
        # the two bits of each table whose hyperplanes pass closest to the query
        weak = np.argpartition(np.abs(proj).reshape(_LSH_TABLES, _LSH_BITS), 1, axis=1)[:, :2].tolist()
        top = _LSH_BITS - 1
        more: dict[int, None] = {}
        _collect(
            (
                (table, key ^ (1 << (top - bit)))
                for table, key, pair in zip(tables, keys, weak, strict=True)
                for bit in pair
            ),
            more,
        )
        for slot in found:
            more.pop(slot, None)
        if not more:
            return best
        extra = self._nearest(query, more)
        merged = sorted(zip(best[1] + extra[1], best[0] + extra[0], strict=True))[:3]
        return [slot for _, slot in merged], [r for r, _ in merged]

    def _nearest(self, query: np.ndarray, found: dict[int, None]) -> tuple[list[int], list[float]]:
        """The (up to 3) slots of ``found`` nearest to the query, nearest first: slots, raw distances."""
        if not found:
            return [], []
        slots = list(found)
        if len(slots) == 1 and self.space == "ip":  # the usual case: a near duplicate's source alone
            return slots, [1.0 - float(self.q[slots[0]] @ query)]
        if self.space == "ip" and len(slots) <= 4:  # a numpy call per slot beats a gather for a few
            q = self.q
            raw = [1.0 - float(q[slot] @ query) for slot in slots]
        else:
            raw = self.raw(query[None, :], np.asarray(slots, np.int64))[0].tolist()
        best = sorted(zip(raw, slots, strict=True))[:3]
        return [slot for _, slot in best], [r for r, _ in best]

    # -- the hash tables -------------------------------------------------------------------------
    def _project(self, query: np.ndarray) -> np.ndarray:
        """The query's signed distances to the hyperplanes (the hash bits are their signs)."""
        x = query[:: self.step]
        if self.space != "ip":
            if self.origin is None:  # the first query hashed: a point among the data
                self.origin = x.astype(np.float32, copy=True)
            x = x - self.origin
        return self.planes @ x

    @staticmethod
    def _hash(proj: np.ndarray) -> list[int]:
        """The key in each hash table of a query with projections ``proj``."""
        keys: list[int] = np.packbits(proj > 0).view(">u2").tolist()
        return keys

    def _add(self, slot: int, query: np.ndarray, family: int) -> None:
        tables = self.tables.get(family)
        if tables is None:
            tables = self.tables[family] = [{} for _ in range(_LSH_TABLES)]
        keys = self._hash(self._project(query))
        for table, key in zip(tables, keys, strict=True):
            got = table.get(key)
            if got is None:
                table[key] = slot
            elif isinstance(got, list):
                got.append(slot)
            else:
                table[key] = [got, slot]
        self.keys[slot] = keys

    def _drop(self, slot: int, family: int) -> None:
        row = self.keys[slot]
        if row[0] < 0:
            return
        for table, key in zip(self.tables[family], row.tolist(), strict=True):
            got = table.get(key)
            if isinstance(got, list):
                got.remove(slot)
                if len(got) == 1:
                    table[key] = got[0]
            elif got == slot:
                del table[key]
        row[:] = -1
