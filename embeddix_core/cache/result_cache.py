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
  (Euclidean; for cosine, between unit vectors). Otherwise: a real search. The re-rank is exact where it
  matters and cheap: int8 codes of the candidates (shared by the entries of a namespace, counted in its
  budget) bound every candidate's distance to q' from both sides, so only the few that could be in the
  top k need their distance exactly (see ``_certify``).
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
  2. A probe: a search for q' itself with a beam of k, whose records join the re-rank. It gives the
     lookup the route through the graph a fresh search would take; a record the wide search missed but
     the fresh search finds, the probe finds too. Worse than fresh: 0 in 35,000 (and 0 in the checked
     benchmark). Without the wide beam the probe alone does not do it (24 in 15,000).
  Both are the search's own approximation, measured, not a proof. The probe is a real, small search
  (about a quarter of a semantic hit's time); ``CacheSettings.probe`` turns it off.
* Exact hits serve what the (wide) search returned: never worse than an uncached search in practice
  (its beam is twice as wide), and invalidation keeps them right under writes.

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

__all__ = ["CacheLookup", "Probe", "ResultCache"]

# A cheap search for a query: (query, k) -> (labels, raw distances), best first.
Probe = Callable[[np.ndarray, int], tuple[np.ndarray, np.ndarray]]

# Below this many entries a semantic lookup scans the cached queries with one matrix-vector product;
# above it, an HNSW graph over them answers in about O(log n).
_ANN_MIN = 256
# Bytes a code-table row costs beyond the code: scale, error bound, norm, refcount, label, dict slot.
_CODE_OVERHEAD = 120
# Rounding allowances for distances the index computed in float32 (see ResultCache._certify): absolute
# for ip space (unit vectors: error at most 384 * 2^-24 = 2.3e-5), relative for l2.
_SLACK_IP = 1e-4
_SLACK_L2 = 1e-4


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
    crow: np.ndarray  # code-table row of each candidate (-1: no code; see _Codes)
    semantic: bool  # the candidate set may certify semantic hits (see the module docstring)
    exact: bool = False  # the candidate set came from an exact search (no probe needed)
    allcoded: bool = False  # every candidate has a code


@dataclass(frozen=True, slots=True)
class CacheLookup:
    """What a lookup found: exact hits, or a verified semantic candidate set re-ranked for the query."""

    kind: str  # "hit" or "semantic-hit"
    hits: list[Any] | None = None  # exact hits (served as they are)
    labels: np.ndarray | None = None  # semantic: the k labels to serve, best first
    dists: np.ndarray | None = None  # semantic: their raw distances to the new query


class _Codes:
    """int8 copies of candidate vectors, shared by the entries of one namespace (label -> row, refcounted).

    What they are for: a semantic lookup must know, for each candidate c of a cached query q, its distance
    to the new query q' = q + delta. Write q'.c = q.c + delta.c. The stored distance gives q.c (as the index
    computed it), and with the code c' = scale * code, delta.c = delta.c' + delta.(c - c') where
    |delta.(c - c')| <= |delta| * |c - c'|. ``width`` keeps, per row, an upper bound of |c - c'| plus the
    float32 rounding of delta.c' per unit of |delta|, so |delta| * width bounds the error of the estimate:
    about 6e-4 for a near duplicate at cosine 0.998 of a unit 384-d vector, a sixth of the median gap
    between the 10th and 11th neighbour on MiniLM text. The codes decide which candidates could be in the
    top k, and only those (k plus one or two) are re-ranked exactly: no store round trip for the other ~70.

    A label's code is freed when no entry holds it any more. Every entry holding a label is dropped when
    the record is deleted or changed (``on_labels``), so a code never outlives the vector it copies.
    """

    __slots__ = ("codes", "dim", "free", "label", "refs", "rows", "scale", "width")

    def __init__(self, dim: int) -> None:
        self.dim = dim
        cap = 256
        self.codes = np.zeros((cap, dim), np.int8)
        self.scale = np.zeros(cap, np.float64)
        self.width = np.zeros(cap, np.float64)
        self.refs = np.zeros(cap, np.int64)
        self.label = np.full(cap, -1, np.int64)
        self.rows: dict[int, int] = {}
        self.free = list(range(cap - 1, -1, -1))

    @property
    def row_bytes(self) -> int:
        return self.dim + _CODE_OVERHEAD

    @property
    def nbytes(self) -> int:
        return len(self.rows) * self.row_bytes

    def _grow(self, need: int) -> None:
        cap = len(self.label)
        new = max(cap * 2, cap + need)
        extra = new - cap
        self.codes = np.concatenate([self.codes, np.zeros((extra, self.dim), np.int8)])
        self.scale = np.concatenate([self.scale, np.zeros(extra, np.float64)])
        self.width = np.concatenate([self.width, np.zeros(extra, np.float64)])
        self.refs = np.concatenate([self.refs, np.zeros(extra, np.int64)])
        self.label = np.concatenate([self.label, np.full(extra, -1, np.int64)])
        self.free.extend(range(new - 1, cap - 1, -1))

    def find(self, labels: np.ndarray) -> np.ndarray:
        """Rows of these labels (-1 where there is no code)."""
        get = self.rows.get
        return np.array([get(lb, -1) for lb in labels.tolist()], np.int64)

    def add(self, labels: np.ndarray, vecs: np.ndarray) -> np.ndarray:
        """Encode vectors whose labels have no code yet (non-finite ones, records gone, are skipped).

        Returns:
            The row of each label (-1 for the skipped).
        """
        rows_of = self.rows
        get = rows_of.get
        out = np.array([get(lb, -1) for lb in labels.tolist()], np.int64)
        fresh = np.flatnonzero(out < 0).tolist()
        if not fresh:
            return out
        x = np.asarray(vecs[fresh], np.float32)
        amax = np.abs(x).max(axis=1)
        ok = np.isfinite(amax)  # NaN rows: records gone meanwhile
        if not ok.all():
            fresh = [fresh[j] for j in np.flatnonzero(ok).tolist()]
            x, amax = x[ok], amax[ok]
            if not fresh:
                return out
        scale = np.where(amax > 0, amax / np.float32(127), np.float32(1)).astype(np.float32)
        code = x / scale[:, None]
        np.rint(code, out=code)
        np.clip(code, -127, 127, out=code)
        resid = x - code * scale[:, None]  # code holds small integers: exact in float32
        # |c - c'| from float32 arithmetic: each residual component is off by at most 2^-24 times
        # (|x_i| + |resid_i|), the norm by n * 2^-24 relative; 1e-4 relative and 1e-6 |x|_max * sqrt(n)
        # absolute cover both many times over
        err = np.sqrt(np.einsum("ij,ij->i", resid, resid).astype(np.float64)) * (1 + 1e-4)
        err += 1e-6 * amax.astype(np.float64) * math.sqrt(self.dim)
        norm = np.sqrt(np.einsum("ij,ij->i", x, x).astype(np.float64))
        if len(self.free) < len(fresh):
            self._grow(len(fresh) - len(self.free))
        rows = [self.free.pop() for _ in fresh]
        self.codes[rows] = code.astype(np.int8)
        self.scale[rows] = scale
        # plus the float32 rounding of the product code . delta (n * 2^-24 * |c'| * |delta|, with
        # |c'| <= |c| + err), counted 16 times over
        self.width[rows] = err + 1e-6 * self.dim * (norm + err)
        self.refs[rows] = 0
        sel = labels[fresh]
        self.label[rows] = sel
        rows_of.update(zip(sel.tolist(), rows, strict=True))
        out[fresh] = rows
        return out

    def incref(self, rows: np.ndarray) -> None:
        """Take a reference on each row (rows of one candidate set are distinct; -1 is skipped)."""
        self.refs[rows[rows >= 0]] += 1

    def decref(self, rows: np.ndarray) -> None:
        rows = rows[rows >= 0]
        if not len(rows):
            return
        self.refs[rows] -= 1
        dead = rows[self.refs[rows] <= 0]
        for row in dead.tolist():
            self.rows.pop(int(self.label[row]), None)
            self.label[row] = -1
            self.refs[row] = 0
            self.free.append(row)

    def clear(self) -> None:
        self.__init__(self.dim)  # type: ignore[misc]


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
        self._codes = _Codes(dim)  # int8 copies of candidate vectors (semantic tier), in the budget
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
            "probe_found": 0,  # semantic lookups whose probe found records the candidate set lacked
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
        self._release(entry.crow)
        self.stats[reason] += 1

    def _release(self, rows: np.ndarray) -> None:
        before = self._codes.nbytes
        self._codes.decref(rows)
        self.bytes -= before - self._codes.nbytes

    # -- lookup / store ----------------------------------------------------------------------------
    def lookup(
        self,
        key: bytes,
        query: np.ndarray,
        family: int,
        k: int,
        vectors: Callable[[np.ndarray], np.ndarray],
        probe: Probe | None = None,
    ) -> CacheLookup | None:
        """Find an exact entry, else try the verified semantic tier.

        Args:
            key: The exact key (query bytes + parameters).
            query: The query in index space (unit length for cosine).
            family: ``family(k, filter, params)`` of the query.
            k: Hits wanted.
            vectors: Fetches candidate vectors (index space) by label, for re-ranking.
            probe: A cheap search for the query itself (``probe(query, k) -> (labels, raw distances)``),
                run for candidate sets of approximate searches only (see :meth:`_certify`).
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
            # pre-filter by similarity (cosine for ip space); the bound below is what decides a hit
            limit = (1.0 - self.similarity) if self.space == "ip" else np.inf
            tried = 0
            for slot, r in zip(order, raw, strict=True):
                if r > limit:
                    break
                cand = self._slots[slot]
                if cand is None or cand.expires < now or not cand.semantic or len(cand.labels) < k:
                    continue
                tried += 1
                found = self._certify(cand, query, k, vectors, None if cand.exact else probe)
                if found is not None:
                    self._entries.move_to_end(cand.key)
                    self.stats["semantic_hits"] += 1
                    return CacheLookup("semantic-hit", labels=found[0], dists=found[1])
            if tried:
                self.stats["verified_rejects"] += 1
            self.stats["misses"] += 1
            return None

    def _certify(
        self,
        entry: _Entry,
        query: np.ndarray,
        k: int,
        vectors: Callable[[np.ndarray], np.ndarray],
        probe: Probe | None = None,
    ) -> tuple[np.ndarray, np.ndarray] | None:
        """Re-rank an entry's candidate set for ``query``; its top k when the bound proves them, else None.

        1. Bound every candidate's raw distance to q' from below and above without its vector: from its
           code (see :class:`_Codes`), or, without a code, by the triangle inequality from d(q, c).
        2. At least k candidates lie below U, the k-th smallest upper bound; so only candidates whose lower
           bound is at most U can be in the top k of q' among C. Fetch those (usually k plus one or two)
           and re-rank them exactly (float64 on the stored float32 vectors).
        3. Serve when ``r_k(q') + d(q, q') <= d_K(q)`` (or the set holds every admissible record).

        For a candidate set from an approximate search, the probe (a search for q' with a beam of k) runs
        first: its k records bound r_k from above, the triangle inequality then drops the candidates
        that cannot come that close, and the probe's records join the pool with their index distances.
        Only candidates that could beat the probe's k-th and that it did not return are re-ranked from
        their vectors (none in about half the lookups, one or two otherwise). The bound is unchanged:
        a larger pool only lowers r_k.

        Floating point: the stored distances come from the index in float32 (error at most n*2^-24 of
        the magnitudes summed, 2.3e-5 for unit 384-d vectors); every bound is widened by more than that,
        and d_K is shrunk by it, so rounding can only cost a hit, never serve an unproven one.
        """
        q32 = self._q[entry.slot]
        delta32 = query - q32
        delta = query.astype(np.float64) - q32
        d_qq = math.sqrt(float(delta @ delta))  # the true metric: |q' - q| (unit vectors for cosine)
        ip = self.space == "ip"
        complete = not math.isfinite(entry.radius)
        if complete:
            d_k = math.inf
        else:
            shrunk = entry.radius - _SLACK_IP if ip else entry.radius * (1.0 - _SLACK_L2) - 1e-6 * _SLACK_L2
            d_k = self._true1(shrunk)
        have: dict[int, float] = {}
        u = math.inf
        if probe is not None:
            # The probe's records come with their distances to q' as the index computes them (like a
            # fresh search's); only candidates that could beat its k-th and that it did not return are
            # re-ranked from their vectors: usually none.
            plabels, pdists = probe(query, k)
            have = dict(zip(plabels.tolist(), pdists.tolist(), strict=True))
            if len(plabels) >= k:  # k real records at most this far (float32, hence the slack)
                pk = float(pdists[k - 1])
                u = pk + (_SLACK_IP if ip else _SLACK_L2 * (abs(pk) + 1e-6))
        dists = entry.dists
        if math.isfinite(u):
            # the triangle inequality first: a candidate farther than d(q', .) <= u from q' + d(q, q')
            # cannot matter, and that is most of them
            far = self._true1(u) + d_qq
            reach = far * far / 2.0 if ip else far * far
            reach = reach + _SLACK_IP if ip else reach * (1.0 + _SLACK_L2) + 1e-6 * _SLACK_L2
            cand = np.flatnonzero(dists <= reach)
        else:
            cand = np.arange(len(dists))
        lo, hi = self._bounds(entry, cand, delta32, d_qq, q32)
        if probe is None:
            if len(cand) < k:
                return None
            if not complete and self._true1(float(np.partition(lo, k - 1)[k - 1])) + d_qq > d_k:
                return None  # r_k(q') is at least the k-th smallest lower bound: no fetch
            u = float(np.partition(hi, k - 1)[k - 1])
        elif len(have) < k and len(cand) >= k:
            u = min(u, float(np.partition(hi, k - 1)[k - 1]))
        within = entry.labels[cand[lo <= u]].tolist()
        if have:
            rest = [lb for lb in within if lb not in have]
            # every probe record in C is within u (its distance is at most the probe's k-th), so this
            # tells whether the probe found records the candidate set lacks
            if len(within) - len(rest) < len(have):
                self.stats["probe_found"] += 1
        else:
            rest = within
        labels = np.asarray(list(have) + rest, np.int64)
        pool = np.fromiter(have.values(), np.float64, len(have))
        if rest:
            pool = np.concatenate([pool, self._rerank(query, vectors(np.asarray(rest, np.int64)))])
        if len(pool) < k:
            return None
        top = np.argsort(pool, kind="stable")[:k]
        if not complete:
            # r_k from above: probe distances are the index's float32 ones (widen in raw space, where
            # their error bound holds; the square root would magnify it near zero)
            kth = float(pool[top[-1]])
            kth += _SLACK_IP if ip else _SLACK_L2 * (abs(kth) + 1e-6)
            if self._true1(kth) + d_qq > d_k:
                return None
        return labels[top], pool[top].astype(np.float32)

    def _bounds(
        self, entry: _Entry, cand: np.ndarray, delta32: np.ndarray, d_qq: float, q32: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Lower and upper bounds of the raw distances to q' of the candidates ``cand`` (positions)."""
        dists = entry.dists[cand].astype(np.float64)
        ip = self.space == "ip"
        # raw'(c) = base(c) - mult * delta.c exactly, base and mult known
        if ip:  # raw = 1 - x.c
            base, mult = dists, 1.0
            slack: np.ndarray | float = _SLACK_IP
        else:  # raw = |x - c|^2 = |q - c|^2 + |delta|^2 + 2 delta.q - 2 delta.c
            base = dists + d_qq * d_qq + 2.0 * float(delta32.astype(np.float64) @ q32)
            mult = 2.0
            qn = math.sqrt(float(q32 @ q32))
            slack = _SLACK_L2 * (np.abs(dists) + d_qq * d_qq + 2.0 * d_qq * qn + 1e-6)
        rows = entry.crow[cand]
        cb = self._codes
        if entry.allcoded:  # every candidate has a code (the usual case)
            dot = (cb.codes[rows].astype(np.float32) @ delta32).astype(np.float64)
            dot *= cb.scale[rows]
            est = base - dot if mult == 1.0 else base - mult * dot
            half = cb.width[rows]
            half *= mult * d_qq
            half += slack
            return est - half, est + half
        lo, hi = np.empty(len(cand)), np.empty(len(cand))
        sl = np.broadcast_to(slack, dists.shape)
        coded = rows >= 0
        if coded.any():
            r = rows[coded]
            dot = (cb.codes[r].astype(np.float32) @ delta32).astype(np.float64) * cb.scale[r]
            est = base[coded] - mult * dot
            half = (mult * d_qq) * cb.width[r] + sl[coded]
            lo[coded], hi[coded] = est - half, est + half
        unc = ~coded  # no code: the triangle inequality around d(q, c)
        t = np.asarray(self.true_distance(dists[unc]))
        lo[unc] = self._raw_of(np.maximum(t - d_qq, 0.0)) - sl[unc]
        hi[unc] = self._raw_of(t + d_qq) + sl[unc]
        return lo, hi

    def _true1(self, raw: float) -> float:
        """:meth:`true_distance` of one number."""
        return math.sqrt(max(2.0 * raw if self.space == "ip" else raw, 0.0))

    def _raw_of(self, true: np.ndarray) -> np.ndarray:
        """Euclidean distance -> raw index distance (inverse of :meth:`true_distance`)."""
        return true * true / 2.0 if self.space == "ip" else true * true

    def _near_queries(self, query: np.ndarray, family: int) -> tuple[list[int], list[float]]:
        """The (up to 3) cached queries of the same family nearest to ``query``: slots, raw distances.

        A small vector search of its own: one matrix-vector product over the cached queries while they
        are few; past ``_ANN_MIN`` entries an HNSW graph over them, so a lookup stays ~O(log n).
        """
        n = len(self._slots)
        if self._ann is not None and self._ann_count > 0:
            try:
                # one family: its 3 nearest are the 3 nearest; else look wider and keep the family's
                want = 3 if len(self._families) == 1 else 16
                labels, dists = self._ann.knn_query(query, k=min(want, self._ann_count))
            except RuntimeError:
                pass  # hnswlib found fewer live points than asked (many drops): scan instead
            else:
                slots = labels[0]
                same = self._fam[slots] == family
                if not same.all():
                    slots, d = slots[same][:3], dists[0][same][:3]
                    return slots.tolist(), d.tolist()
                return slots[:3].tolist(), dists[0][:3].tolist()
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
            self._ann.set_ef(24)  # a near duplicate is very close: a short beam finds it (measured)
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
        """Exact raw distances (float64) of candidate vectors to the query; NaN rows (gone) are infinite."""
        c = cvecs.astype(np.float64)
        qq = query.astype(np.float64)
        dots = c @ qq
        if self.space == "ip":
            out = 1.0 - dots
        else:
            out = np.maximum(np.einsum("ij,ij->i", c, c) - 2.0 * dots + float(qq @ qq), 0.0)
        return np.where(np.isnan(out), np.inf, out)

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
        """
        semantic = semantic and self.semantic
        none = labels[:0]
        nbytes = 200 + query.nbytes + 2 * labels.nbytes + dists.nbytes + sum(_hit_bytes(h) for h in hits)
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
                crow = np.full(len(labels), -1, np.int64)
            entry = _Entry(
                key, slot, family, k, flt, hits, labels, dists, radius, nbytes, expires, seq, crow, semantic
            )
            entry.allcoded = bool(len(crow)) and int(crow.min()) >= 0
            entry.exact = exact
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
            return labels[crow < 0] if semantic and key in self._entries else none

    def attach(self, key: bytes, seq: int, labels: np.ndarray, vecs: np.ndarray) -> None:
        """Give an entry's uncoded candidates their codes, from index-space vectors read after :meth:`store`.

        Safe against writes in between: a write that changes or deletes a record drops every entry
        holding it (and so frees its code), so vectors read before such a write can only reach an entry
        the write will drop. ``seq`` (the stored entry's) keeps them off an entry stored under the same
        key after the write.
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
                    entry, [(float(raw[i, slot]), int(labels[i])) for i in rows], vectors[rows]
                ):
                    self._drop(entry, "invalidated")
                    dropped += 1
            return dropped

    def _admit(self, entry: _Entry, new: list[tuple[float, int]], vecs: np.ndarray) -> bool:
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
            self._codes.clear()

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def code_bytes(self) -> int:
        """Bytes of the candidate codes (part of :attr:`bytes`)."""
        return self._codes.nbytes

    def entries(self) -> list[_Entry]:
        with self._lock:
            return list(self._entries.values())


def _hit_bytes(row: Any) -> int:
    """Approximate bytes of a cached row (id, score, distance, document, metadata JSON)."""
    return 150 + len(row[0]) + (len(row[3]) if row[3] else 0) + (len(row[4]) if row[4] else 0)
