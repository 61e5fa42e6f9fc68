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
  2. A probe: a search for q' itself with a small beam, whose records join the re-rank. It gives the
     lookup the route through the graph a fresh search would take; a record the wide search missed but
     the fresh search finds, the probe finds too. Worse than fresh, with a beam of k: 0 in 35,000 (and 0
     in the checked benchmark). Without the wide beam the probe alone does not do it (24 in 15,000). The
     beam is about 1.6 k (16 for k = 10, see ``_probe_width``): a wider route than those measurements',
     and fewer candidates to read from the store.
  Both are the search's own approximation, measured, not a proof. The probe is a real, small search
  (about a third of a semantic hit's time, which its cold cache lines dominate);
  ``CacheSettings.probe`` (``EMBEDDIX_CACHE_PROBE``) turns it off.
* Exact hits serve what the (wide) search returned: never worse than an uncached search in practice
  (its beam is twice as wide), and invalidation keeps them right under writes.

Finding the cached query to try: hash tables over the cached queries (see ``_SCAN_MAX``), which find a
near duplicate's source in ~10 us; a pre-filter only.

Threads: one lock per namespace; lookups, stores and invalidations hold it briefly.
"""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from operator import itemgetter
from typing import Any

import numpy as np

from ..query.filters import Filter

__all__ = ["CacheLookup", "Probe", "ResultCache"]

# A cheap search for a query: (query, k) -> (labels, raw distances), best first.
Probe = Callable[[np.ndarray, int], tuple[np.ndarray, np.ndarray]]

# Where a semantic lookup finds the cached queries to try: hash tables (locality-sensitive hashing by
# random hyperplanes), plus, while the namespace holds at most _SCAN_MAX entries, one matrix-vector product
# over every cached query.
#
# A near duplicate at cosine 0.998 (0.063 rad) lies across a random hyperplane from its source with
# probability 0.063 / pi = 2%, so it shares one 16-bit key with it with probability 0.72 and at least one
# of six with 0.9995. A lookup also tries, per table, the two keys one bit away where the query lies
# closest to the hyperplane (multi-probe), which catches less similar ones. The hyperplanes live in the
# subspace of every 4th coordinate (for 384-d: a slice is a view, not a gather): a near duplicate's tilt
# spreads over every coordinate, so the angle there is about the same. Measured on MiniLM text, in that
# subspace: 98.0% / 71% of near duplicates at cosine 0.99 / 0.95 share a key, 99.97% / 94% with the
# probes (0.998: 99.93% without). The planes take 37 KB instead of 147, which matters: lookups run between
# searches that flush the CPU caches. A lookup costs one (96 x 96) matrix-vector product and six dict
# reads (18 when the probes are needed), ~10 us.
#
# The tables replace an HNSW graph over the cached queries: on the cache benchmark, consulted after the
# tables, it added none of the 1,909 semantic hits, at ~60-80 us per lookup and ~100-150 us per stored
# entry (cold cache lines both). l2 queries are hashed relative to the namespace's first query, so a
# collection far from the origin does not put every query in one bucket. The tiers only choose which
# cached queries are tried, never whether a hit is served.
_SCAN_MAX = 512
_LSH_TABLES = 6
_LSH_BITS = 16  # bits per table: one big-endian uint16 of np.packbits' output
_LSH_DIMS = 96  # about this many coordinates, evenly spaced, span the hyperplanes (all below that)
_LSH_BUCKET = 32  # members of one bucket tried at most (the newest): a crowded bucket stays cheap
# Bytes one entry adds to the hash tables, per table: a dict slot (~50 amortized), its int key (32) and
# the slot number (32; a list of them in the rare shared bucket).
_LSH_OVERHEAD = _LSH_TABLES * 112
# dim -> (coordinate step, hyperplanes over those coordinates), shared by the namespaces of that dimension
_PLANES: dict[int, tuple[int, np.ndarray]] = {}
_PLANES_LOCK = threading.Lock()
_second = itemgetter(1)


def _probe_width(k: int) -> int:
    """How many records (and so the beam) the probe asks for, for k hits: 16 for k = 10.

    More than k: every record the probe returns comes with its distance, and a candidate of the served k
    that the probe missed costs a read from the store. Measured on the cache benchmark's workload (k =
    10, MiniLM text, 90K records; two runs each): a beam of 10 left 56% of semantic lookups reading a
    vector, 16 left 38%, 24 left 27%; the probe took 100-108, 116-125 and 163-177 us (p50), the semantic
    hit 289-316, 273-292 and 321-357 us.
    """
    return max(k + 6, -(-k * 8 // 5))


# Bytes a code-table row costs beyond the code: scale, error bound, norm, refcount, label, dict slot.
_CODE_OVERHEAD = 120
# Rounding allowances for distances the index computed in float32 (see ResultCache._certify): absolute
# for ip space (unit vectors: error at most 384 * 2^-24 = 2.3e-5), relative for l2 plus a share of the
# vectors' magnitude (see ResultCache._l2_err).
_SLACK_IP = 1e-4
_SLACK_L2 = 1e-4


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


def _collect(lookups: Iterable[tuple[dict[int, int | list[int]], int]], found: dict[int, None]) -> None:
    """Add the slots hash tables hold under these (table, key) pairs to ``found`` (an ordered set)."""
    for table, key in lookups:
        got = table.get(key)
        if got is None:
            continue
        if isinstance(got, list):
            found.update(dict.fromkeys(got[-_LSH_BUCKET:]))
        else:
            found[got] = None


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
    labels: list[int] | None = None  # semantic: the k labels to serve, best first
    dists: list[float] | None = None  # semantic: their raw distances to the new query (exact re-rank)


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

    Layout: a row's code, scale and width sit side by side in ``buf``, a structured array (``codes``,
    ``scale`` and ``width`` are views of its fields), so a lookup gathers a candidate's three in one read:
    rows are scattered over the table, and a lookup runs after searches that flushed the CPU caches.
    """

    __slots__ = ("buf", "codes", "dim", "free", "label", "refs", "rows", "scale", "width")

    def __init__(self, dim: int) -> None:
        self.dim = dim
        cap = 256
        row = np.dtype([("code", np.int8, (dim,)), ("scale", np.float64), ("width", np.float64)], align=True)
        self._views(np.zeros(cap, row))
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

    def _views(self, buf: np.ndarray) -> None:
        self.buf = buf
        self.codes, self.scale, self.width = buf["code"], buf["scale"], buf["width"]

    def parts(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Codes (int8), scales and widths (float64) of these rows, gathered in one read."""
        got = self.buf[rows]
        return got["code"], got["scale"], got["width"]

    def _grow(self, need: int) -> None:
        cap = len(self.label)
        new = max(cap * 2, cap + need)
        extra = new - cap
        self._views(np.concatenate([self.buf, np.zeros(extra, self.buf.dtype)]))
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
        # hash tables over the semantic entries' queries (see _SCAN_MAX), _LSH_TABLES per family: key ->
        # slot, or a list of slots when several share it
        self._lsh_step, self._planes = _planes(dim)
        self._lsh: dict[int, list[dict[int, int | list[int]]]] = {}
        self._lsh_keys = np.full((cap, _LSH_TABLES), -1, np.int64)  # per slot (-1: not in the tables)
        self._lsh_origin: np.ndarray | None = None  # l2: the point hyperplanes pass through
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
        self._lsh_keys = np.concatenate([self._lsh_keys, np.full((cap, _LSH_TABLES), -1, np.int64)])

    def _drop(self, entry: _Entry, reason: str) -> None:
        if self._entries.pop(entry.key, None) is None:
            return
        slot = entry.slot
        self._lsh_drop(slot, entry.family)
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
                run (at most once per lookup) for candidate sets of approximate searches only (see
                :meth:`_certify`).
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
            # pre-filter by similarity (cosine for ip space); the bound below is what decides a hit
            limit = (1.0 - self.similarity) if self.space == "ip" else math.inf
            tried: set[int] = set()
            attempts = 0
            probed: tuple[np.ndarray, np.ndarray] | None = None  # the probe depends on the query only
            # The hash tables first: they find a near duplicate's source in ~10 us. While the namespace is
            # small, a scan then finds the nearest cached queries whatever their similarity.
            for near in (self._lsh_near, self._scan_near):
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
                            probed = probe(query, _probe_width(k))
                        use = probed
                    found = self._certify(cand, query, k, vectors, use)
                    if found is not None:
                        self._entries.move_to_end(cand.key)
                        self.stats["semantic_hits"] += 1
                        return CacheLookup("semantic-hit", labels=found[0], dists=found[1])
            if attempts:
                self.stats["verified_rejects"] += 1
            self.stats["misses"] += 1
            return None

    def _certify(
        self,
        entry: _Entry,
        query: np.ndarray,
        k: int,
        vectors: Callable[[np.ndarray], np.ndarray],
        probed: tuple[np.ndarray, np.ndarray] | None = None,
    ) -> tuple[list[int], list[float]] | None:
        """Re-rank an entry's candidate set for ``query``; its top k when the bound proves them, else None.

        1. Bound every candidate's raw distance to q' from below and above without its vector: from its
           code (see :class:`_Codes`), or, without a code, by the triangle inequality from d(q, c).
        2. At least k candidates lie below U, the k-th smallest upper bound; so only candidates whose lower
           bound is at most U can be in the top k of q' among C. Fetch those (usually k plus one or two)
           and re-rank them exactly (float64 on the stored float32 vectors).
        3. Serve when ``r_k(q') + d(q, q') <= d_K(q)`` (or the set holds every admissible record).

        For a candidate set from an approximate search, ``probed`` holds what the probe (a search for q'
        with a small beam, see ``_probe_width``) found: its k-th record bounds r_k from above, the
        triangle inequality then drops the candidates that cannot come that close, and the probe's
        records join the pool with their index distances. Only candidates that could beat the probe's k-th
        and that it did not return are re-ranked from their vectors (none in about 60% of the lookups, one
        or two otherwise). The bound is unchanged: a larger pool only lowers r_k.

        Floating point: the stored distances come from the index in float32 (error at most n*2^-24 of
        the magnitudes summed, 2.3e-5 for unit 384-d vectors); every bound is widened by more than that,
        and d_K is shrunk by it, so rounding can only cost a hit, never serve an unproven one.
        """
        q32 = self._q[entry.slot]
        delta32 = query - q32
        ip = self.space == "ip"
        # the true metric: |q' - q| (unit vectors for cosine)
        if ip:
            # from float32, rounded up: each difference is off by at most 2^-24 of itself and the sum of
            # squares by dim * 2^-24 of itself, so 4 * dim * 2^-24 more bounds |q' - q| from above,
            # which is all ip space uses it for (an error term's multiplier, the triangle inequality)
            d_qq = math.sqrt(float(delta32 @ delta32) * (1.0 + self.dim * 2.0**-22) + 1e-30)
        else:  # l2's bounds also use |q' - q|^2 in an identity: exactly (float64)
            delta = query.astype(np.float64) - q32
            d_qq = math.sqrt(float(delta @ delta))
        complete = not math.isfinite(entry.radius)
        if complete:
            d_k = math.inf
        else:
            if ip:
                shrunk = entry.radius - _SLACK_IP
            else:
                qn = math.sqrt(float(self._qn[entry.slot]))
                shrunk = entry.radius * (1.0 - _SLACK_L2) - 1e-6 * _SLACK_L2 - self._l2_err(entry.radius, qn)
            d_k = self._true1(shrunk)
        if probed is not None and len(probed[0]) >= k:
            return self._certify_probed(entry, query, k, vectors, probed, delta32, d_qq, d_k, q32)
        # the general path: no probe (exact candidate sets, or the probe switched off), or a probe that
        # found fewer than k records (a filter that admits few, tombstones)
        have: dict[int, float] = {}
        if probed is not None:
            have = dict(zip(probed[0].tolist(), probed[1].tolist(), strict=True))
        dists = entry.dists
        cand = np.arange(len(dists))
        lo, hi = self._bounds(entry, cand, delta32, d_qq, q32)
        u = math.inf
        if probed is None:
            if len(cand) < k:
                return None
            if not complete and self._true1(float(np.partition(lo, k - 1)[k - 1])) + d_qq > d_k:
                return None  # r_k(q') is at least the k-th smallest lower bound: no fetch
            u = float(np.partition(hi, k - 1)[k - 1])
        elif len(cand) >= k:
            u = float(np.partition(hi, k - 1)[k - 1])
        within = entry.labels[cand[lo <= u]].tolist()
        rest = [lb for lb in within if lb not in have] if have else within
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
            if ip:
                kth += _SLACK_IP
            else:
                kth += _SLACK_L2 * (abs(kth) + 1e-6) + self._l2_err(kth, math.sqrt(float(query @ query)))
            if self._true1(kth) + d_qq > d_k:
                return None
        if have:  # as in _certify_probed: a served record outside ``within`` is the probe's alone
            inside = set(within)
            if any(lb not in inside for lb in labels[top].tolist()):
                self.stats["probe_found"] += 1
        return labels[top].tolist(), pool[top].tolist()

    def _certify_probed(
        self,
        entry: _Entry,
        query: np.ndarray,
        k: int,
        vectors: Callable[[np.ndarray], np.ndarray],
        probed: tuple[np.ndarray, np.ndarray],
        delta32: np.ndarray,
        d_qq: float,
        d_k: float,
        q32: np.ndarray,
    ) -> tuple[list[int], list[float]] | None:
        """:meth:`_certify` when the probe found k records: the semantic hit's usual path.

        The same steps as the general path, on fewer numbers: the probe's k-th distance u bounds r_k(q')
        from above, so only candidates within d(q, c) <= sqrt(u) + d(q, q') (a prefix: candidates are kept
        sorted by d(q, c)) need bounds, and only their lower bounds (against u). Every small step is plain
        Python, which beats a numpy call on a dozen numbers.
        """
        ip = self.space == "ip"
        plabels, pdists = probed
        have = dict(zip(plabels.tolist(), pdists.tolist(), strict=True))
        best = sorted(have.values())  # a label twice (a flush in progress) counts once
        if len(best) < k:
            return None
        pk = best[k - 1]
        # k real records at most u away (the probe's distances are the index's float32 ones)
        qn2 = 0.0 if ip else math.sqrt(float(query @ query))  # |q'|, for l2's rounding allowance
        u = pk + _SLACK_IP if ip else pk + _SLACK_L2 * (abs(pk) + 1e-6) + self._l2_err(pk, qn2)
        # the triangle inequality: a candidate farther than d(q', .) <= u from q' + d(q, q') cannot
        # matter, and that is most of them
        far = math.sqrt(max(2.0 * u if ip else u, 0.0)) + d_qq
        if ip:
            reach = far * far / 2.0 + _SLACK_IP
        else:
            qn = math.sqrt(float(self._qn[entry.slot]))
            reach = far * far * (1.0 + _SLACK_L2) + 1e-6 * _SLACK_L2 + self._l2_err(far * far, qn)
        n = int(entry.dists.searchsorted(reach, "right"))
        labs: list[int] = []
        rest: list[int] = []
        if n:
            labs = entry.labels[:n].tolist()
            if ip and entry.allcoded:  # _lower inlined: this is most of a semantic hit's own work
                got = self._codes.buf[entry.crow[:n]]
                lo = entry.dists[:n] - (got["code"].astype(np.float32) @ delta32) * got["scale"]
                lo -= got["width"] * d_qq
                keep = (lo <= u + _SLACK_IP).tolist()
            else:
                keep = (self._lower(entry, n, delta32, d_qq, q32) <= u).tolist()
            # the probe's records come with their distances: the others within u are re-ranked
            rest = [lb for lb, ok in zip(labs, keep, strict=True) if ok and lb not in have]
        pool = list(have.items())
        if rest:
            exact = self._rerank(query, vectors(np.asarray(rest, np.int64))).tolist()
            pool.extend(zip(rest, exact, strict=True))
        pool.sort(key=_second)  # stable: ties keep the general path's order (probe records first)
        top = pool[:k]
        if math.isfinite(d_k):
            # r_k from above: probe distances are the index's float32 ones (widen in raw space, where
            # their error bound holds; the square root would magnify it near zero)
            kth = top[-1][1]
            kth += _SLACK_IP if ip else _SLACK_L2 * (abs(kth) + 1e-6) + self._l2_err(kth, qn2)
            if self._true1(kth) + d_qq > d_k:
                return None
        served = [lb for lb, _ in top]
        # a served record of C is within reach, so a served record outside ``labs`` is one the probe
        # found and the candidate set lacked
        if not set(labs).issuperset(served):
            self.stats["probe_found"] += 1
        return served, [d for _, d in top]

    def _lower(self, entry: _Entry, n: int, delta32: np.ndarray, d_qq: float, q32: np.ndarray) -> np.ndarray:
        """Lower bounds of the raw distances to q' of the first ``n`` candidates (as :meth:`_bounds`)."""
        if not entry.allcoded or self.space != "ip":
            return self._bounds(entry, np.arange(n), delta32, d_qq, q32)[0]
        codes, scale, width = self._codes.parts(entry.crow[:n])
        # _bounds' arithmetic, fused: d(q', c) >= d(q, c) - delta.c' - (|delta| * width + slack)
        dot = (codes.astype(np.float32) @ delta32) * scale
        lo = entry.dists[:n] - dot
        lo -= width * d_qq + _SLACK_IP
        return lo

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
            slack = _SLACK_L2 * (np.abs(dists) + d_qq * d_qq + 2.0 * d_qq * qn + 1e-6) + self._l2_err(
                dists, qn
            )
        rows = entry.crow[cand]
        cb = self._codes
        if entry.allcoded:  # every candidate has a code (the usual case)
            codes, scale, width = cb.parts(rows)
            dot = (codes.astype(np.float32) @ delta32).astype(np.float64)
            dot *= scale
            est = base - dot if mult == 1.0 else base - mult * dot
            half = width * (mult * d_qq)
            half += slack
            return est - half, est + half
        lo, hi = np.empty(len(cand)), np.empty(len(cand))
        sl = np.broadcast_to(slack, dists.shape)
        coded = rows >= 0
        if coded.any():
            codes, scale, width = cb.parts(rows[coded])
            dot = (codes.astype(np.float32) @ delta32).astype(np.float64) * scale
            est = base[coded] - mult * dot
            half = (mult * d_qq) * width + sl[coded]
            lo[coded], hi[coded] = est - half, est + half
        unc = ~coded  # no code: the triangle inequality around d(q, c)
        t = np.asarray(self.true_distance(dists[unc]))
        lo[unc] = self._raw_of(np.maximum(t - d_qq, 0.0)) - sl[unc]
        hi[unc] = self._raw_of(t + d_qq) + sl[unc]
        return lo, hi

    def _true1(self, raw: float) -> float:
        """:meth:`true_distance` of one number."""
        return math.sqrt(max(2.0 * raw if self.space == "ip" else raw, 0.0))

    def _l2_err(self, raw: Any, norm: float) -> Any:
        """How far an index's float32 squared l2 distance ``raw`` from a vector of norm ``norm`` can be off,
        beyond ``_SLACK_L2``'s relative share (a float, or an array for an array).

        The expanded form |x|^2 - 2 x.c + |c|^2 (the exact index, faiss, the HNSW write buffer) loses up
        to about (dim + 3) * 2^-24 * (|x| + |c|)^2 to rounding, with |c| <= |x| + sqrt(raw): far from the
        origin, more than the relative share (on data 50 from the origin, a semantic hit served the 6th
        neighbour for the 5th). Counted twice over.
        """
        g = 2.0 * (self.dim + 4) * 2.0**-24
        if isinstance(raw, np.ndarray):
            return g * (2.0 * norm + np.sqrt(np.maximum(raw, 0.0))) ** 2
        return g * (2.0 * norm + math.sqrt(max(raw, 0.0))) ** 2

    def _raw_of(self, true: np.ndarray) -> np.ndarray:
        """Euclidean distance -> raw index distance (inverse of :meth:`true_distance`)."""
        return true * true / 2.0 if self.space == "ip" else true * true

    def _scan_near(self, query: np.ndarray, family: int, limit: float) -> tuple[list[int], list[float]]:
        """The (up to 3) cached queries of the family nearest to ``query``, while there are few (see
        ``_SCAN_MAX``): slots, raw distances. One matrix-vector product over them."""
        if len(self._entries) > _SCAN_MAX:
            return [], []
        n = len(self._slots)
        raw = self._raw(query[None, :], slice(0, n))[0]
        raw[self._fam[:n] != family] = np.inf
        m = min(3, n)
        top = np.argpartition(raw, m - 1)[:m] if m < n else np.arange(n)
        top = top[np.argsort(raw[top])]
        keep = [int(t) for t in top if np.isfinite(raw[t])]
        return keep, [float(raw[t]) for t in keep]

    def _lsh_project(self, query: np.ndarray) -> np.ndarray:
        """The query's signed distances to the hyperplanes (the hash bits are their signs)."""
        x = query[:: self._lsh_step]
        if self.space != "ip":
            if self._lsh_origin is None:  # the first query stored: a point among the data
                self._lsh_origin = x.astype(np.float32, copy=True)
            x = x - self._lsh_origin
        return self._planes @ x

    @staticmethod
    def _lsh_hash(proj: np.ndarray) -> list[int]:
        """The key in each hash table of a query with projections ``proj``."""
        keys: list[int] = np.packbits(proj > 0).view(">u2").tolist()
        return keys

    def _lsh_add(self, slot: int, query: np.ndarray, family: int) -> None:
        tables = self._lsh.get(family)
        if tables is None:
            tables = self._lsh[family] = [{} for _ in range(_LSH_TABLES)]
        keys = self._lsh_hash(self._lsh_project(query))
        for table, key in zip(tables, keys, strict=True):
            got = table.get(key)
            if got is None:
                table[key] = slot
            elif isinstance(got, list):
                got.append(slot)
            else:
                table[key] = [got, slot]
        self._lsh_keys[slot] = keys

    def _lsh_drop(self, slot: int, family: int) -> None:
        row = self._lsh_keys[slot]
        if row[0] < 0:
            return
        for table, key in zip(self._lsh[family], row.tolist(), strict=True):
            got = table.get(key)
            if isinstance(got, list):
                got.remove(slot)
                if len(got) == 1:
                    table[key] = got[0]
            elif got == slot:
                del table[key]
        row[:] = -1

    def _lsh_near(self, query: np.ndarray, family: int, limit: float) -> tuple[list[int], list[float]]:
        """Up to 3 cached queries sharing a key with ``query``, nearest first: slots, raw distances.

        When none of them is within ``limit`` (the similarity pre-filter), the keys one bit away where the
        query is least sure of its side are tried too (see ``_SCAN_MAX``): near duplicates rarely need
        them, so they are computed only then.
        """
        tables = self._lsh.get(family)
        if tables is None:
            return [], []
        proj = self._lsh_project(query)
        keys: list[int] = np.packbits(proj > 0).view(">u2").tolist()  # as _lsh_hash
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
            return slots, [1.0 - float(self._q[slots[0]] @ query)]
        if self.space == "ip" and len(slots) <= 4:  # a numpy call per slot beats a gather for a few
            q = self._q
            raw = [1.0 - float(q[slot] @ query) for slot in slots]
        else:
            raw = self._raw(query[None, :], np.asarray(slots, np.int64))[0].tolist()
        best = sorted(zip(raw, slots, strict=True))[:3]
        return [slot for _, slot in best], [r for r, _ in best]

    def _rerank(self, query: np.ndarray, cvecs: np.ndarray) -> np.ndarray:
        """Exact raw distances (float64) of candidate vectors to the query; NaN rows (gone) are infinite."""
        c = cvecs.astype(np.float64)
        qq = query.astype(np.float64)
        if self.space == "ip":
            out = c @ qq
            np.subtract(1.0, out, out=out)
        else:
            out = np.maximum(np.einsum("ij,ij->i", c, c) - 2.0 * (c @ qq) + float(qq @ qq), 0.0)
        gone = np.isnan(out)
        if gone.any():
            out[gone] = np.inf
        return out

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
        if len(dists) > 1 and not bool((dists[1:] >= dists[:-1]).all()):
            # lookups take the candidates within a distance of q as a prefix (see _certify_probed)
            order = np.argsort(dists, kind="stable")
            labels, dists = labels[order], dists[order]
        nbytes = 200 + query.nbytes + 2 * labels.nbytes + dists.nbytes + sum(_hit_bytes(h) for h in hits)
        if semantic:
            nbytes += _LSH_OVERHEAD
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
            if semantic:
                self._lsh_add(slot, query, family)
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
