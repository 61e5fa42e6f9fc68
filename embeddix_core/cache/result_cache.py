"""Result cache with precise invalidation and a verified semantic tier.

Every entry keeps, for its query q, the candidate set C: the best K = ``candidate_factor * k`` labels the
search found (with their distances), the top k of which are the served hits, and d_K(q), the distance of
the last candidate (infinite when fewer than K records could be found).

Correctness rules (each enforced below, where it says so):

* Exact hit: same query bytes (the full vector, not a prefix), k, canonical filter, search parameters,
  profile version and session namespace.
* Insert/upsert of vector v with metadata m drops exactly the entries whose filter matches m and whose
  query lies within d_K of v: only those answers can change. Finding them is one matrix product of the
  new vectors against all cached queries.
* Delete, and update of a record's vector, document or metadata, drops the entries whose candidate set
  holds that record (their hits or their bound would be stale); an update is then treated as an insert.
* Semantic hit, for a new query q' near a cached q: C is re-ranked against q' and served only when
  ``r_k(q') + d(q, q') <= d_K(q)``, with r_k(q') the k-th re-ranked distance and d a true metric
  (Euclidean; for cosine, between unit vectors). By the triangle inequality no record outside C is
  closer to q' than the served k-th hit, as far as C was the true top-K of q (exact when the search was
  exact; as good as the search itself when it was approximate). Otherwise: a real search.
* The ``similarity`` threshold only pre-filters which cached queries are tried; it never decides a hit.

Threads: one lock per namespace; lookups, stores and invalidations hold it briefly.
"""

from __future__ import annotations

import contextlib
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..query.filters import Filter

__all__ = ["CacheLookup", "ResultCache"]

# Below this many entries a semantic lookup scans the cached queries with one matrix-vector product;
# above it, an HNSW graph over them answers in about O(log n).
_ANN_MIN = 256


@dataclass(slots=True)
class _Entry:
    key: bytes
    slot: int
    family: int
    k: int
    filter: Filter | None
    hits: list[tuple[Any, ...]]  # served rows: (id, score, distance, document, metadata JSON)
    labels: np.ndarray  # candidate labels, best first (K of them, or fewer)
    dists: np.ndarray  # their raw index-space distances
    radius: float  # raw d_K, or inf when the candidate set is not full
    nbytes: int
    expires: float
    seq: int


@dataclass(frozen=True, slots=True)
class CacheLookup:
    """What a lookup found: exact hits, or a verified semantic candidate set re-ranked for the query."""

    kind: str  # "hit" or "semantic-hit"
    hits: list[Any] | None = None  # exact hits (served as they are)
    labels: np.ndarray | None = None  # semantic: the k labels to serve, best first
    dists: np.ndarray | None = None  # semantic: their raw distances to the new query


class ResultCache:
    """One cache namespace (the shared one, or one agent/session's).

    Args:
        dim: Vector dimension.
        space: ``"ip"`` or ``"l2"`` (the index space of the stored query vectors).
        metric_ok: Whether index distances map to a true metric (False for raw inner product), which
            the semantic tier needs.
        max_bytes: Memory budget; least recently used entries go first.
        ttl: Seconds an entry lives (None: until evicted or invalidated).
        semantic: Enable the verified semantic tier.
        similarity: Pre-filter for semantic candidates: only cached queries at least this cosine-similar
            (or, for l2, within the matching Euclidean distance) are tried.
        candidate_factor: K = factor * k candidates kept per entry.
    """

    def __init__(
        self,
        dim: int,
        space: str,
        *,
        metric_ok: bool = True,
        max_bytes: int = 64 << 20,
        ttl: float | None = None,
        semantic: bool = True,
        similarity: float = 0.95,
        candidate_factor: int = 8,
    ) -> None:
        self.dim = dim
        self.space = space
        self.max_bytes = max_bytes
        self.ttl = ttl
        self.semantic = semantic and metric_ok
        self.similarity = similarity
        self.candidate_factor = max(1, candidate_factor)
        self._lock = threading.RLock()
        self._entries: OrderedDict[bytes, _Entry] = OrderedDict()
        cap = 64
        self._q = np.zeros((cap, dim), np.float32)
        self._qn = np.zeros(cap, np.float32)  # squared norms (l2)
        self._radius = np.full(cap, -np.inf, np.float32)  # -inf: free slot, never invalidated
        self._fam = np.full(cap, -1, np.int64)
        self._slots: list[_Entry | None] = [None] * cap
        self._free = list(range(cap - 1, -1, -1))
        # candidate labels per slot (padded with -1): deletes and updates find the entries holding a
        # label with one vectorized membership test, so storing an entry costs no per-label work
        self._cand = np.full((cap, 40), -1, np.int64)
        self._families: dict[tuple[Any, ...], int] = {}
        self.bytes = 0
        self._ann: Any = None  # hnswlib graph over cached queries, once there are many
        self._ann_count = 0
        self.stats = {
            "hits": 0,
            "misses": 0,
            "semantic_hits": 0,
            "verified_rejects": 0,
            "invalidated": 0,
            "evicted": 0,
            "expired": 0,
            "updated": 0,
        }

    # -- helpers ---------------------------------------------------------------------------------
    def _raw(self, vecs: np.ndarray, rows: slice | np.ndarray) -> np.ndarray:
        """Raw index-space distances (len(vecs), len(rows)) between vectors and cached queries."""
        q = self._q[rows]
        # (cached x new) orientation: for one new vector this is a matrix-vector product (sgemv); the
        # (1 x d) @ (d x n) spelling goes through sgemm, several times slower for this shape
        dots = (q @ vecs.T).T
        if self.space == "ip":
            return 1.0 - dots
        vn = np.einsum("ij,ij->i", vecs, vecs)
        return np.maximum(vn[:, None] - 2.0 * dots + self._qn[rows][None, :], 0.0)

    def true_distance(self, raw: np.ndarray | float) -> np.ndarray | float:
        """Raw index distance -> Euclidean (ip space holds unit vectors: |a-b|^2 = 2(1 - a.b))."""
        if self.space == "ip":
            return np.sqrt(np.maximum(2.0 * np.asarray(raw, np.float64), 0.0))
        return np.sqrt(np.maximum(np.asarray(raw, np.float64), 0.0))

    def family(self, k: int, canonical_filter: str | None, params: tuple[Any, ...]) -> int:
        key = (k, canonical_filter, params)
        fid = self._families.get(key)
        if fid is None:
            fid = self._families[key] = len(self._families)
        return fid

    def _grow(self) -> None:
        cap = len(self._slots)
        new = cap * 2
        self._q = np.concatenate([self._q, np.zeros((cap, self.dim), np.float32)])
        self._qn = np.concatenate([self._qn, np.zeros(cap, np.float32)])
        self._radius = np.concatenate([self._radius, np.full(cap, -np.inf, np.float32)])
        self._fam = np.concatenate([self._fam, np.full(cap, -1, np.int64)])
        self._slots.extend([None] * cap)
        self._free.extend(range(new - 1, cap - 1, -1))
        self._cand = np.concatenate([self._cand, np.full((cap, self._cand.shape[1]), -1, np.int64)])

    def _drop(self, entry: _Entry, reason: str) -> None:
        if self._entries.pop(entry.key, None) is None:
            return
        slot = entry.slot
        self._ann_drop(slot)
        self._slots[slot] = None
        self._radius[slot] = -np.inf
        self._fam[slot] = -1
        self._free.append(slot)
        self._cand[slot] = -1
        self.bytes -= entry.nbytes
        self.stats[reason] += 1

    # -- lookup / store ----------------------------------------------------------------------------
    def lookup(
        self, key: bytes, query: np.ndarray, family: int, k: int, vectors: Callable[[np.ndarray], np.ndarray]
    ) -> CacheLookup | None:
        """Find an exact entry, else try the verified semantic tier.

        Args:
            key: The exact key (query bytes + parameters).
            query: The query in index space (unit length for cosine).
            family: ``family(k, filter, params)`` of the query.
            k: Hits wanted.
            vectors: Fetches candidate vectors (index space) by label, for re-ranking.
        """
        with self._lock:
            entry = self._entries.get(key)
            now = time.monotonic()
            if entry is not None:
                if entry.expires < now:
                    self._drop(entry, "expired")
                else:
                    self._entries.move_to_end(key)
                    self.stats["hits"] += 1
                    return CacheLookup("hit", hits=entry.hits)
            if not self.semantic or not self._entries:
                self.stats["misses"] += 1
                return None
            order, raw = self._near_queries(query, family)
            if not order:
                self.stats["misses"] += 1
                return None
            # pre-filter by similarity (cosine for ip space); the bound below is what decides a hit
            limit = (1.0 - self.similarity) if self.space == "ip" else np.inf
            tried = 0
            for slot, r in zip(order, raw, strict=True):
                if r > limit:
                    break
                cand = self._slots[slot]
                if cand is None or cand.expires < now:
                    continue
                tried += 1
                d_qq = float(self.true_distance(r))
                if len(cand.labels) < k:
                    continue
                # Only candidates that could be in q''s top k are re-ranked: by the triangle inequality
                # d(q', c) >= d(q, c) - d(q, q'), and q's own top k are within d_k(q) + d(q, q') of q',
                # so a candidate farther than d_k(q) + 2 d(q, q') from q cannot make q''s top k.
                # That is usually k plus a few, instead of all K: fewer vectors to fetch.
                true_c = self.true_distance(cand.dists)
                assert isinstance(true_c, np.ndarray)
                m = int(np.searchsorted(true_c, float(true_c[k - 1]) + 2.0 * d_qq + 1e-6, side="right"))
                m = max(k, min(m, len(cand.labels)))
                rr = self._rerank(query, vectors(cand.labels[:m]))
                top = np.argsort(rr, kind="stable")[:k]
                # A candidate set that is not full holds every record the filter admits: any query's
                # top k is inside it, no bound needed. Otherwise the triangle-inequality bound decides.
                complete = not math.isfinite(cand.radius)
                r_k = float(self.true_distance(rr[top[-1]]))
                d_k = float(self.true_distance(cand.radius)) if not complete else math.inf
                if complete or r_k + d_qq <= d_k * (1.0 - 1e-6):
                    self._entries.move_to_end(cand.key)
                    self.stats["semantic_hits"] += 1
                    return CacheLookup("semantic-hit", labels=cand.labels[:m][top], dists=rr[top])
            if tried:
                self.stats["verified_rejects"] += 1
            self.stats["misses"] += 1
            return None

    def _near_queries(self, query: np.ndarray, family: int) -> tuple[list[int], list[float]]:
        """The (up to 3) cached queries of the same family nearest to ``query``: slots, raw distances.

        A small vector search of its own: one matrix-vector product over the cached queries while they
        are few; past ``_ANN_MIN`` entries an HNSW graph over them, so a lookup stays ~O(log n).
        """
        n = len(self._slots)
        if self._ann is not None and self._ann_count > 0:
            try:
                labels, dists = self._ann.knn_query(query, k=min(16, self._ann_count))
            except RuntimeError:
                pass  # hnswlib found fewer live points than asked (many drops): scan instead
            else:
                out = [
                    (int(s), float(d))
                    for s, d in zip(labels[0], dists[0], strict=True)
                    if self._fam[s] == family
                ]
                return [s for s, _ in out[:3]], [d for _, d in out[:3]]
        raw = self._raw(query[None, :], slice(0, n))[0]
        raw[self._fam[:n] != family] = np.inf
        m = min(3, n)
        top = np.argpartition(raw, m - 1)[:m] if m < n else np.arange(n)
        top = top[np.argsort(raw[top])]
        keep = [int(t) for t in top if np.isfinite(raw[t])]
        return keep, [float(raw[t]) for t in keep]

    def _ann_add(self, slot: int, query: np.ndarray) -> None:
        if self._ann is None:
            if len(self._entries) < _ANN_MIN:
                return
            import hnswlib

            self._ann = hnswlib.Index(space=self.space, dim=self.dim)
            self._ann.init_index(max_elements=len(self._slots), M=8, ef_construction=40)
            self._ann.set_ef(48)
            self._ann.set_num_threads(1)
            live = [e.slot for e in self._entries.values()]
            self._ann.add_items(self._q[live], live)
            self._ann_count = len(live)
            return
        if slot >= self._ann.get_max_elements():
            self._ann.resize_index(len(self._slots))
        # a reused slot's label was tombstoned when it was freed; a new slot is simply not there yet
        with contextlib.suppress(RuntimeError):
            self._ann.unmark_deleted(slot)
        self._ann.add_items(query[None, :], [slot])
        self._ann_count += 1

    def _ann_drop(self, slot: int) -> None:
        if self._ann is not None:
            try:
                self._ann.mark_deleted(slot)
                self._ann_count -= 1
            except RuntimeError:
                pass

    def _rerank(self, query: np.ndarray, cvecs: np.ndarray) -> np.ndarray:
        dots = cvecs @ query
        if self.space == "ip":
            out = (1.0 - dots).astype(np.float32)
        else:
            out = np.maximum(np.einsum("ij,ij->i", cvecs, cvecs) - 2.0 * dots + float(query @ query), 0.0)
        return np.where(np.isnan(out), np.inf, out).astype(np.float32)  # NaN: a record gone meanwhile

    def store(
        self,
        key: bytes,
        query: np.ndarray,
        family: int,
        k: int,
        flt: Filter | None,
        hits: list[Any],
        labels: np.ndarray,
        dists: np.ndarray,
        full: bool,
        seq: int,
    ) -> None:
        """Keep a search result.

        Args:
            key: The exact key.
            query: The query in index space.
            family: Its family id.
            k: Hits served.
            flt: The filter (for insert invalidation).
            hits: The served hits.
            labels: Candidate labels, best first.
            dists: Their raw distances.
            full: Whether the candidate set is full (K found); if not, d_K is infinite.
            seq: The collection's sequence number the answer reflects.
        """
        nbytes = 200 + query.nbytes + labels.nbytes + dists.nbytes + sum(_hit_bytes(h) for h in hits)
        if nbytes > self.max_bytes:
            return
        with self._lock:
            old = self._entries.get(key)
            if old is not None:
                self._drop(old, "evicted")
            if not self._free:
                self._grow()
            slot = self._free.pop()
            radius = float(dists[-1]) if full and len(dists) else math.inf
            expires = time.monotonic() + self.ttl if self.ttl else math.inf
            entry = _Entry(key, slot, family, k, flt, hits, labels, dists, radius, nbytes, expires, seq)
            self._entries[key] = entry
            self._slots[slot] = entry
            self._q[slot] = query
            self._qn[slot] = float(query @ query)
            self._radius[slot] = radius
            self._fam[slot] = family
            width = self._cand.shape[1]
            if len(labels) > width:
                grown = np.full((len(self._slots), len(labels)), -1, np.int64)
                grown[:, :width] = self._cand
                self._cand = grown
            self._cand[slot, : len(labels)] = labels
            self._cand[slot, len(labels) :] = -1
            if self.semantic:
                self._ann_add(slot, query)
            self.bytes += nbytes
            while self.bytes > self.max_bytes and self._entries:
                self._drop(next(iter(self._entries.values())), "evicted")

    # -- invalidation ------------------------------------------------------------------------------
    def on_insert(
        self, vectors: np.ndarray, metadatas: Sequence[dict[str, Any]], labels: Sequence[int] | None = None
    ) -> int:
        """Apply new records to the entries they could enter (see module docstring).

        A record closer to an entry's query than its k-th hit changes the answer: the entry is dropped.
        A record between the k-th hit and the last candidate changes only the candidate set: when its
        label is known it is put in its place (the last candidate falls out, d_K shrinks), so the entry
        keeps serving exact hits and stays a valid semantic certificate; otherwise the entry is dropped.

        Returns:
            How many entries were dropped.
        """
        with self._lock:
            if not self._entries:
                return 0
            n = len(self._slots)
            raw = self._raw(vectors, slice(0, n))
            hit = raw <= self._radius[None, :n]
            slots = np.flatnonzero(hit.any(axis=0))
            dropped = 0
            for slot in slots.tolist():
                entry = self._slots[slot]
                if entry is None:
                    continue
                rows = [
                    i
                    for i in np.flatnonzero(hit[:, slot]).tolist()
                    if entry.filter is None or entry.filter.matches(metadatas[i])
                ]
                if not rows:
                    continue
                if labels is None or not self._admit(
                    entry, [(float(raw[i, slot]), int(labels[i])) for i in rows]
                ):
                    self._drop(entry, "invalidated")
                    dropped += 1
            return dropped

    def _admit(self, entry: _Entry, new: list[tuple[float, int]]) -> bool:
        """Put new candidates into an entry's candidate set; False when one would change its hits."""
        k = entry.k
        kth = float(entry.dists[min(k, len(entry.dists)) - 1]) if len(entry.dists) else math.inf
        if len(entry.dists) < k or any(d <= kth for d, _ in new):
            return False
        size = len(entry.labels) if math.isfinite(entry.radius) else len(entry.labels) + len(new)
        dists = np.concatenate([entry.dists, np.asarray([d for d, _ in new], np.float32)])
        labels = np.concatenate([entry.labels, np.asarray([lb for _, lb in new], np.int64)])
        order = np.argsort(dists, kind="stable")[:size]
        entry.dists, entry.labels = dists[order], labels[order]
        if math.isfinite(entry.radius):
            entry.radius = float(entry.dists[-1])
        slot = entry.slot
        self._radius[slot] = entry.radius
        width = self._cand.shape[1]
        if len(entry.labels) > width:
            grown = np.full((len(self._slots), len(entry.labels)), -1, np.int64)
            grown[:, :width] = self._cand
            self._cand = grown
        self._cand[slot] = -1
        self._cand[slot, : len(entry.labels)] = entry.labels
        self.stats["updated"] += 1
        return True

    def on_labels(self, labels: Sequence[int]) -> int:
        """Drop the entries whose candidate sets hold any of these labels (deleted or changed)."""
        with self._lock:
            if not self._entries:
                return 0
            n = len(self._slots)
            hit = np.isin(self._cand[:n], np.asarray(labels, np.int64)).any(axis=1)
            dropped = 0
            for slot in np.flatnonzero(hit).tolist():
                entry = self._slots[slot]
                if entry is not None:
                    self._drop(entry, "invalidated")
                    dropped += 1
            return dropped

    def clear(self) -> None:
        with self._lock:
            for entry in list(self._entries.values()):
                self._drop(entry, "invalidated")

    def __len__(self) -> int:
        return len(self._entries)

    def entries(self) -> list[_Entry]:
        with self._lock:
            return list(self._entries.values())


def _hit_bytes(row: Any) -> int:
    """Approximate bytes of a cached row (id, score, distance, document, metadata JSON)."""
    return 150 + len(row[0]) + (len(row[3]) if row[3] else 0) + (len(row[4]) if row[4] else 0)
