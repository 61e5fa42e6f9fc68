"""Result cache with precise invalidation and a verified semantic tier: lookup, store, invalidate.

Every entry keeps, for its query q, the candidate set C: the best K = ``candidate_factor * k`` labels the
search found (with their distances), the top k of which are the served hits, and d_K(q), the distance of
the last candidate (infinite when fewer than K records could be found).

The parts, each in its own module: ``codes.py`` (int8 copies of candidate vectors), ``lsh.py`` (the
cached queries and the hash tables that find near ones), ``certify.py`` (the bound that decides a
semantic hit), ``entry.py`` (one cached answer); ``persist.py`` writes entries to disk for the manager.

Correctness rules (each enforced below or in the module named, where it says so):

* Exact hit: same query bytes (the full vector, not a prefix), k, canonical filter, search parameters,
  profile version and session namespace.
* Insert/upsert of vector v with metadata m drops exactly the entries whose filter matches m and whose
  query lies within d_K of v: only those answers can change. Finding them is one matrix product of the
  new vectors against all cached queries.
* Delete, and update of a record's vector, document or metadata, drops the entries whose candidate set
  holds that record (their hits or their bound would be stale); an update is then treated as an insert.
* Semantic hit, for a new query q' near a cached q: C is re-ranked against q' and served only when
  ``r_k(q') + d(q, q') <= d_K(q)``, with r_k(q') the k-th re-ranked distance and d a true metric
  (Euclidean; for cosine, between unit vectors). Otherwise: a real search. The re-rank is exact where it
  matters and cheap: int8 codes of the candidates (shared by the entries of a namespace, counted in its
  budget) bound every candidate's distance to q' from both sides, so only the few that could be in the
  top k need their distance exactly (see ``certify.py``).
* The ``similarity`` threshold only pre-filters which cached queries are tried; it never decides a hit.

What a semantic hit guarantees:

* Proven: if a record x is closer to q' than the served k-th hit, then d(q, x) <= d(q, q') + d(q', x)
  < d(q, q') + r_k(q') <= d_K(q), so x is within d_K of q. Hence the served answer is exactly the top k
  of q' among all records whenever C holds every record within d_K(q) of q, i.e. whenever the search that
  filled C was exact up to its K-th result. That is the case for exact searches (exact index, exact
  filtered scans): there a semantic hit equals a fresh exact search, always. Floating point cannot break
  it: every bound is widened, and d_K shrunk, by more than the float32 error of the stored distances.
* Not provable for an approximate (HNSW) search, whose C can miss records anywhere, head included.
  Measured on MiniLM text (near duplicates at cosine 0.998): with C from the uncached search's own beam,
  30 of 15,000 served answers were worse than a fresh search, all from records at rank 1-9 of q that the
  cached search missed and the fresh one found (so certifying at a smaller rank, K = 4k, does not help:
  it keeps them and loses a third of the semantic hits). Two measures, both needed:
  1. C of an approximate search may certify only when that search was wider than a fresh one: the
     collection searches default queries with a beam of 2K (twice the uncached beam) and marks only
     those (and exact ones) ``semantic``. Worse than fresh: 2 in 35,000.
  2. A probe: a search for q' itself with a small beam, whose records join the re-rank. It gives the
     lookup the route through the graph a fresh search would take; a record the wide search missed but
     the fresh search finds, the probe finds too. Worse than fresh, with a beam of k: 0 in 35,000 (and 0
     in the checked benchmark). Without the wide beam the probe alone does not do it (24 in 15,000). The
     beam is about 1.6 k (16 for k = 10, see ``certify.probe_width``): a wider route than those
     measurements', and fewer candidates to read from the store.
  Both are the search's own approximation, measured, not a proof. The probe is a real, small search
  (about a third of a semantic hit's time, which its cold cache lines dominate);
  ``CacheSettings.probe`` (``EMBEDDIX_CACHE_PROBE``) turns it off.
* Exact hits serve what the (wide) search returned: never worse than an uncached search in practice
  (its beam is twice as wide), and invalidation keeps them right under writes.

Finding the cached query to try: hash tables over the cached queries (see ``lsh.py``), which find a
near duplicate's source in ~10 us; a pre-filter only.

Threads: one lock per namespace; lookups, stores and invalidations hold it briefly. The parts hold no
lock of their own: every call into them is made under this one.
"""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..query.filters import Filter
from .certify import Certifier, probe_width, true_distance
from .codes import CandidateCodes
from .entry import Entry
from .lsh import LSH_OVERHEAD, QueryTable

__all__ = ["CacheLookup", "Probe", "ResultCache"]

# A cheap search for a query: (query, k) -> (labels, raw distances), best first.
Probe = Callable[[np.ndarray, int], tuple[np.ndarray, np.ndarray]]


@dataclass(frozen=True, slots=True)
class CacheLookup:
    """What a lookup found: exact hits, or a verified semantic candidate set re-ranked for the query."""

    kind: str  # "hit" or "semantic-hit"
    hits: list[Any] | None = None  # exact hits (served as they are)
    labels: list[int] | None = None  # semantic: the k labels to serve, best first
    dists: list[float] | None = None  # semantic: their raw distances to the new query (exact re-rank)


class ResultCache:
    """One cache namespace (the shared one, or one agent/session's): serves, keeps and invalidates answers.

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
        self._entries: OrderedDict[bytes, Entry] = OrderedDict()  # LRU order: the oldest first
        cap = 64
        self._queries = QueryTable(dim, space, cap)  # each entry's query, in its slot
        self._radius = np.full(cap, -np.inf, np.float32)  # -inf: free slot, never invalidated
        self._slots: list[Entry | None] = [None] * cap
        self._free = list(range(cap - 1, -1, -1))
        # candidate labels per slot (padded with -1): deletes and updates find the entries holding a
        # label with one vectorized membership test, so storing an entry costs no per-label work
        self._cand = np.full((cap, 40), -1, np.int64)
        self._families: dict[tuple[Any, ...], int] = {}
        self._codes = CandidateCodes(dim)  # int8 copies of candidate vectors (semantic tier), in the budget
        self._certifier = Certifier(dim, space, self._codes, self._queries)
        self.bytes = 0
        self.stats = {
            "hits": 0,
            "misses": 0,
            "semantic_hits": 0,
            "verified_rejects": 0,
            "invalidated": 0,
            "evicted": 0,
            "expired": 0,
            "updated": 0,
            "probe_found": 0,  # semantic hits serving records the probe found and the candidate set lacked
        }

    # -- helpers ---------------------------------------------------------------------------------
    def true_distance(self, raw: np.ndarray | float) -> np.ndarray | float:
        """Raw index distance -> Euclidean (ip space holds unit vectors: |a-b|^2 = 2(1 - a.b))."""
        return true_distance(self.space, raw)

    def family(self, k: int, canonical_filter: str | None, params: tuple[Any, ...]) -> int:
        """The id of a query family: entries of one family (same k, filter and parameters) may certify
        each other's queries; no other may."""
        key = (k, canonical_filter, params)
        fid = self._families.get(key)
        if fid is None:
            fid = self._families[key] = len(self._families)
        return fid

    def family_key(self, fid: int) -> tuple[Any, ...] | None:
        """``(k, canonical filter, params)`` of a family id (None if unknown), as given to :meth:`family`."""
        return next((key for key, got in self._families.items() if got == fid), None)

    def _grow(self) -> None:
        cap = len(self._slots)
        new = cap * 2
        self._queries.grow()
        self._radius = np.concatenate([self._radius, np.full(cap, -np.inf, np.float32)])
        self._slots.extend([None] * cap)
        self._free.extend(range(new - 1, cap - 1, -1))
        self._cand = np.concatenate([self._cand, np.full((cap, self._cand.shape[1]), -1, np.int64)])

    def _set_candidates(self, slot: int, labels: np.ndarray) -> None:
        """Record a slot's candidate labels for :meth:`on_labels` (widening the table when needed)."""
        width = self._cand.shape[1]
        if len(labels) > width:
            grown = np.full((len(self._slots), len(labels)), -1, np.int64)
            grown[:, :width] = self._cand
            self._cand = grown
        self._cand[slot, : len(labels)] = labels
        self._cand[slot, len(labels) :] = -1

    def _drop(self, entry: Entry, reason: str) -> None:
        if self._entries.pop(entry.key, None) is None:
            return
        slot = entry.slot
        self._queries.remove(slot, entry.family)
        self._slots[slot] = None
        self._radius[slot] = -np.inf
        self._free.append(slot)
        self._cand[slot] = -1
        self.bytes -= entry.nbytes
        self._release(entry.crow)
        self.stats[reason] += 1

    def _release(self, rows: np.ndarray) -> None:
        before = self._codes.nbytes
        self._codes.decref(rows)
        self.bytes -= before - self._codes.nbytes

    def _evict(self) -> None:
        """Drop least recently used entries until the namespace is within its budget."""
        while self.bytes > self.max_bytes and self._entries:
            self._drop(next(iter(self._entries.values())), "evicted")

    # -- lookup / store ----------------------------------------------------------------------------
    def lookup(
        self,
        key: bytes,
        query: np.ndarray,
        family: int,
        k: int,
        vectors: Callable[[np.ndarray], np.ndarray],
        probe: Probe | None = None,
        *,
        semantic: bool = True,
    ) -> CacheLookup | None:
        """Find an exact entry, else (with ``semantic``) try the verified semantic tier.

        Args:
            key: The exact key (query bytes + parameters).
            query: The query in index space (unit length for cosine).
            family: ``family(k, filter, params)`` of the query.
            k: Hits wanted.
            vectors: Fetches candidate vectors (index space) by label, for re-ranking.
            probe: A cheap search for the query itself (``probe(query, k) -> (labels, raw distances)``),
                run (at most once per lookup) for candidate sets of approximate searches only (see
                :meth:`Certifier.certify <embeddix_core.cache.certify.Certifier.certify>`).
            semantic: Whether to try the semantic tier (the tier policy says whether it pays back; see
                ``policy.py``).

        Returns:
            The hit, or None for a miss (the caller searches and may :meth:`store` the answer).
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
            if not (semantic and self.semantic) or not self._entries:
                self.stats["misses"] += 1
                return None
            # pre-filter by similarity (cosine for ip space); the bound in certify is what decides a hit
            limit = (1.0 - self.similarity) if self.space == "ip" else math.inf
            tried: set[int] = set()
            attempts = 0
            probed: tuple[np.ndarray, np.ndarray] | None = None  # the probe depends on the query only
            # The hash tables first: they find a near duplicate's source in ~10 us. While the namespace is
            # small, a scan then finds the nearest cached queries whatever their similarity.
            for near in (self._queries.near, self._queries.scan):
                order, raw = near(query, family, limit)
                for slot, r in zip(order, raw, strict=True):
                    if r > limit:
                        break
                    if slot in tried:
                        continue
                    tried.add(slot)
                    cand = self._slots[slot]
                    if cand is None or cand.expires < now or not cand.semantic or len(cand.labels) < k:
                        continue
                    attempts += 1
                    use = None
                    if probe is not None and not cand.exact:
                        if probed is None:
                            probed = probe(query, probe_width(k))
                        use = probed
                    found = self._certifier.certify(cand, query, k, vectors, use)
                    if found is not None:
                        self._entries.move_to_end(cand.key)
                        if found[2]:
                            self.stats["probe_found"] += 1
                        self.stats["semantic_hits"] += 1
                        return CacheLookup("semantic-hit", labels=found[0], dists=found[1])
            if attempts:
                self.stats["verified_rejects"] += 1
            self.stats["misses"] += 1
            return None

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
        *,
        semantic: bool = True,
        exact: bool = False,
        presorted: bool = False,
    ) -> np.ndarray:
        """Keep a search result; returns the candidate labels that have no code yet (see :meth:`attach`).

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
            semantic: Whether the candidate set may certify semantic hits: True only when it came from an
                exact search or from a beam wider than an uncached search's (see the module docstring).
            exact: Whether it came from an exact search (then a semantic hit needs no probe).
            presorted: The caller knows ``dists`` ascend (a search's own order): no check.

        Cost: this runs on every kept miss, right after a search evicted the CPU caches, where each
        numpy call costs 5-20 us instead of 1; hence no check the caller can vouch for, and no
        per-candidate array for an entry that keeps no codes.
        """
        semantic = semantic and self.semantic
        none = labels[:0]
        if not presorted and len(dists) > 1 and not bool((dists[1:] >= dists[:-1]).all()):
            # lookups take the candidates within a distance of q as a prefix (see certify)
            order = np.argsort(dists, kind="stable")
            labels, dists = labels[order], dists[order]
        nbytes = 200 + query.nbytes + 2 * labels.nbytes + dists.nbytes + 150 * len(hits)
        nbytes += sum([len(h[0]) + (len(h[3]) if h[3] else 0) + (len(h[4]) if h[4] else 0) for h in hits])
        if semantic:
            nbytes += LSH_OVERHEAD
        if nbytes > self.max_bytes:
            return none
        with self._lock:
            old = self._entries.get(key)
            if old is not None:
                self._drop(old, "evicted")
            if not self._free:
                self._grow()
            slot = self._free.pop()
            radius = float(dists[-1]) if full and len(dists) else math.inf
            expires = time.monotonic() + self.ttl if self.ttl else math.inf
            if semantic:
                crow = self._codes.find(labels)
                self._codes.incref(crow)
            else:
                crow = _no_codes(len(labels))
            entry = Entry(
                key, slot, family, k, flt, hits, labels, dists, radius, nbytes, expires, seq, crow, semantic
            )
            entry.allcoded = semantic and bool(len(crow)) and int(crow.min()) >= 0
            entry.exact = exact
            self._entries[key] = entry
            self._slots[slot] = entry
            self._queries.put(slot, query, family, semantic)
            self._radius[slot] = radius
            self._set_candidates(slot, labels)
            self.bytes += nbytes
            self._evict()
            return labels[crow < 0] if semantic and key in self._entries else none

    def attach(self, key: bytes, seq: int, labels: np.ndarray, vecs: np.ndarray) -> None:
        """Give an entry's uncoded candidates their codes, from index-space vectors read after :meth:`store`.

        Safe against writes in between: a write that changes or deletes a record drops every entry
        holding it (and so frees its code), so vectors read before such a write can only reach an entry
        the write will drop. ``seq`` (the stored entry's) keeps them off an entry stored under the same
        key after the write.

        Args:
            key: The entry's exact key.
            seq: The sequence number it was stored with.
            labels: The labels :meth:`store` returned.
            vecs: Their index-space vectors (NaN rows for records gone: they get no code).
        """
        with self._lock:
            entry = self._entries.get(key)
            if entry is None or entry.seq != seq or not entry.semantic or entry.allcoded:
                return
            before = self._codes.nbytes
            rows = self._codes.add(labels, vecs)
            missing = np.flatnonzero(entry.crow < 0)
            if not np.array_equal(entry.labels[missing], labels):  # the set changed meanwhile
                rows = self._codes.find(entry.labels[missing])
            self._codes.incref(rows)
            entry.crow[missing] = rows
            entry.allcoded = bool(len(entry.crow)) and int(entry.crow.min()) >= 0
            self.bytes += self._codes.nbytes - before
            self._evict()

    # -- invalidation ------------------------------------------------------------------------------
    def on_insert(
        self, vectors: np.ndarray, metadatas: Sequence[dict[str, Any]], labels: Sequence[int] | None = None
    ) -> int:
        """Apply new records to the entries they could enter (see module docstring).

        A record closer to an entry's query than its k-th hit changes the answer: the entry is dropped.
        A record between the k-th hit and the last candidate changes only the candidate set: when its
        label is known it is put in its place (the last candidate falls out, d_K shrinks), so the entry
        keeps serving exact hits and stays a valid semantic certificate; otherwise the entry is dropped.

        Args:
            vectors: The new records' index-space vectors.
            metadatas: Their metadata (an entry's filter must admit a record for it to matter).
            labels: Their labels, when known (then an entry can take them in instead of being dropped).

        Returns:
            How many entries were dropped.
        """
        with self._lock:
            if not self._entries:
                return 0
            n = len(self._slots)
            raw = self._queries.raw(vectors, slice(0, n))
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
                    entry, [(float(raw[i, slot]), int(labels[i])) for i in rows], vectors[rows]
                ):
                    self._drop(entry, "invalidated")
                    dropped += 1
            return dropped

    def _admit(self, entry: Entry, new: list[tuple[float, int]], vecs: np.ndarray) -> bool:
        """Put new candidates into an entry's candidate set; False when one would change its hits."""
        k = entry.k
        kth = float(entry.dists[min(k, len(entry.dists)) - 1]) if len(entry.dists) else math.inf
        if len(entry.dists) < k or any(d <= kth for d, _ in new):
            return False
        size = len(entry.labels) if math.isfinite(entry.radius) else len(entry.labels) + len(new)
        new_labels = np.asarray([lb for _, lb in new], np.int64)
        new_rows = np.full(len(new), -1, np.int64)
        if entry.semantic:
            before = self._codes.nbytes
            new_rows = self._codes.add(new_labels, vecs)  # vectors at hand: new candidates get codes too
            self._codes.incref(new_rows)
            self.bytes += self._codes.nbytes - before
        dists = np.concatenate([entry.dists, np.asarray([d for d, _ in new], np.float32)])
        labels = np.concatenate([entry.labels, new_labels])
        crow = np.concatenate([entry.crow, new_rows])
        order = np.argsort(dists, kind="stable")
        self._release(crow[order[size:]])  # candidates pushed out of the set
        order = order[:size]
        entry.dists, entry.labels, entry.crow = dists[order], labels[order], crow[order]
        entry.allcoded = bool(len(entry.crow)) and int(entry.crow.min()) >= 0
        if math.isfinite(entry.radius):
            entry.radius = float(entry.dists[-1])
        self._radius[entry.slot] = entry.radius
        self._set_candidates(entry.slot, entry.labels)
        self.stats["updated"] += 1
        return True

    def on_labels(self, labels: Sequence[int]) -> int:
        """Drop the entries whose candidate sets hold any of these labels (deleted or changed).

        Returns:
            How many entries were dropped.
        """
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
        """Drop every entry (counted as invalidated) and every code."""
        with self._lock:
            for entry in list(self._entries.values()):
                self._drop(entry, "invalidated")
            self._codes.clear()

    def __len__(self) -> int:
        """How many entries the namespace holds."""
        return len(self._entries)

    @property
    def code_bytes(self) -> int:
        """Bytes of the candidate codes (part of :attr:`bytes`)."""
        return self._codes.nbytes

    def entries(self) -> list[Entry]:
        """A snapshot of the entries, least recently used first."""
        with self._lock:
            return list(self._entries.values())


_NO_CODES: dict[int, np.ndarray] = {}


def _no_codes(n: int) -> np.ndarray:
    """A read-only all -1 code-row array of length n, shared (entries without codes never write it)."""
    got = _NO_CODES.get(n)
    if got is None:
        got = np.full(n, -1, np.int64)
        got.flags.writeable = False
        _NO_CODES[n] = got
    return got
