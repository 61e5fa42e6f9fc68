"""Bound certification: whether a cached candidate set proves the top k of a new, nearby query.

For a new query q' near a cached query q with candidate set C (K records, the last at d_K(q)), a
semantic hit serves the top k of C re-ranked for q', and only when ``r_k(q') + d(q, q') <= d_K(q)``, with
r_k(q') the k-th re-ranked distance and d a true metric (Euclidean; for cosine, between unit vectors).
Why that suffices: a record x closer to q' than the served k-th hit has d(q, x) <= d(q, q') + d(q', x)
< d(q, q') + r_k(q') <= d_K(q), so x is within d_K of q, inside C whenever the search that filled C found
everything within d_K (see result_cache's docstring for what holds for approximate searches).

The work is in re-ranking cheaply. Every candidate's raw distance to q' is bounded from both sides
without its vector: from its int8 code (``codes.py``), or, without one, by the triangle inequality from
d(q, c). Only the candidates whose lower bound could put them in the top k are read and re-ranked
exactly (float64): usually k plus one or two of the ~80.

Floating point: the stored distances come from the index in float32 (error at most n * 2^-24 of the
magnitudes summed, 2.3e-5 for unit 384-d vectors). Every bound is widened by more than that and d_K is
shrunk by it, so rounding can only cost a hit, never serve an unproven one.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from operator import itemgetter
from typing import Any

import numpy as np

from .codes import CandidateCodes
from .entry import Entry
from .lsh import QueryTable

__all__ = ["Certifier", "probe_width", "true_distance"]

# Rounding allowances for distances the index computed in float32: absolute for ip space (unit vectors:
# error at most 384 * 2^-24 = 2.3e-5), relative for l2 plus a share of the vectors' magnitude (see
# Certifier._l2_err).
_SLACK_IP = 1e-4
_SLACK_L2 = 1e-4
_second = itemgetter(1)

# What a certification serves: the k labels, their raw distances to the new query, and whether a served
# record is one only the probe found (the cache counts those as ``probe_found``).
Certified = tuple[list[int], list[float], bool]


def probe_width(k: int) -> int:
    """How many records (and so the beam) the probe asks for, for k hits: 16 for k = 10.

    More than k: every record the probe returns comes with its distance, and a candidate of the served k
    that the probe missed costs a read from the store. Measured on the cache benchmark's workload (k =
    10, MiniLM text, 90K records; two runs each): a beam of 10 left 56% of semantic lookups reading a
    vector, 16 left 38%, 24 left 27%; the probe took 100-108, 116-125 and 163-177 us (p50), the semantic
    hit 289-316, 273-292 and 321-357 us.
    """
    return max(k + 6, -(-k * 8 // 5))


def true_distance(space: str, raw: np.ndarray | float) -> np.ndarray | float:
    """Raw index distance -> Euclidean (ip space holds unit vectors: |a-b|^2 = 2(1 - a.b))."""
    if space == "ip":
        return np.sqrt(np.maximum(2.0 * np.asarray(raw, np.float64), 0.0))
    return np.sqrt(np.maximum(np.asarray(raw, np.float64), 0.0))


class Certifier:
    """Decides, for one namespace, whether an entry's candidate set proves the top k of a new query.

    Reads the namespace's codes and cached queries; changes nothing. The namespace's lock covers every
    call.

    Args:
        dim: Vector dimension.
        space: ``"ip"`` or ``"l2"`` (the index space).
        codes: The namespace's candidate codes.
        queries: The namespace's cached queries (an entry's query is ``queries.q[entry.slot]``).
    """

    __slots__ = ("codes", "dim", "queries", "space")

    def __init__(self, dim: int, space: str, codes: CandidateCodes, queries: QueryTable) -> None:
        self.dim = dim
        self.space = space
        self.codes = codes
        self.queries = queries

    def certify(
        self,
        entry: Entry,
        query: np.ndarray,
        k: int,
        vectors: Callable[[np.ndarray], np.ndarray],
        probed: tuple[np.ndarray, np.ndarray] | None = None,
    ) -> Certified | None:
        """Re-rank an entry's candidate set for ``query``; its top k when the bound proves them, else None.

        1. Bound every candidate's raw distance to q' from below and above without its vector (see
           :meth:`_bounds`).
        2. At least k candidates lie below U, the k-th smallest upper bound; so only candidates whose lower
           bound is at most U can be in the top k of q' among C. Fetch those (usually k plus one or two)
           and re-rank them exactly (float64 on the stored float32 vectors).
        3. Serve when ``r_k(q') + d(q, q') <= d_K(q)`` (or the set holds every admissible record).

        For a candidate set from an approximate search, ``probed`` holds what the probe (a search for q'
        with a small beam, see :func:`probe_width`) found: its k-th record bounds r_k from above, the
        triangle inequality then drops the candidates that cannot come that close, and the probe's
        records join the pool with their index distances. Only candidates that could beat the probe's k-th
        and that it did not return are re-ranked from their vectors (none in about 60% of the lookups, one
        or two otherwise). The bound is unchanged: a larger pool only lowers r_k.

        Args:
            entry: The cached entry whose candidate set is tried.
            query: The new query q' in index space.
            k: Hits wanted.
            vectors: Fetches candidate vectors (index space) by label; NaN rows for records gone.
            probed: The probe's (labels, raw distances), or None (exact candidate sets, probe off).

        Returns:
            ``(labels, raw distances, probe_found)`` of the k to serve, best first; None when unproven.
        """
        q32 = self.queries.q[entry.slot]
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
        if not math.isfinite(entry.radius):  # the set holds every admissible record: no bound needed
            d_k = math.inf
        else:
            # d_K shrunk by more than the float32 error of the index's distance
            if ip:
                shrunk = entry.radius - _SLACK_IP
            else:
                qn = math.sqrt(float(self.queries.qn[entry.slot]))
                shrunk = entry.radius * (1.0 - _SLACK_L2) - 1e-6 * _SLACK_L2 - self._l2_err(entry.radius, qn)
            d_k = self._true1(shrunk)
        if probed is not None and len(probed[0]) >= k:
            return self._certify_probed(entry, query, k, vectors, probed, delta32, d_qq, d_k, q32)
        return self._certify_general(entry, query, k, vectors, probed, delta32, d_qq, d_k, q32)

    def _certify_general(
        self,
        entry: Entry,
        query: np.ndarray,
        k: int,
        vectors: Callable[[np.ndarray], np.ndarray],
        probed: tuple[np.ndarray, np.ndarray] | None,
        delta32: np.ndarray,
        d_qq: float,
        d_k: float,
        q32: np.ndarray,
    ) -> Certified | None:
        """:meth:`certify` without a probe (exact candidate sets, or the probe switched off), or with a
        probe that found fewer than k records (a filter that admits few, tombstones): every candidate
        gets both bounds."""
        ip = self.space == "ip"
        complete = not math.isfinite(d_k)
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
            pool = np.concatenate([pool, self.rerank(query, vectors(np.asarray(rest, np.int64)))])
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
        found = False
        if have:  # as in _certify_probed: a served record outside ``within`` is the probe's alone
            inside = set(within)
            found = any(lb not in inside for lb in labels[top].tolist())
        return labels[top].tolist(), pool[top].tolist(), found

    def _certify_probed(
        self,
        entry: Entry,
        query: np.ndarray,
        k: int,
        vectors: Callable[[np.ndarray], np.ndarray],
        probed: tuple[np.ndarray, np.ndarray],
        delta32: np.ndarray,
        d_qq: float,
        d_k: float,
        q32: np.ndarray,
    ) -> Certified | None:
        """:meth:`certify` when the probe found k records: the semantic hit's usual path.

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
            qn = math.sqrt(float(self.queries.qn[entry.slot]))
            reach = far * far * (1.0 + _SLACK_L2) + 1e-6 * _SLACK_L2 + self._l2_err(far * far, qn)
        n = int(entry.dists.searchsorted(reach, "right"))
        labs: list[int] = []
        rest: list[int] = []
        if n:
            labs = entry.labels[:n].tolist()
            if ip and entry.allcoded:  # _lower inlined: this is most of a semantic hit's own work
                got = self.codes.buf[entry.crow[:n]]
                lo = entry.dists[:n] - (got["code"].astype(np.float32) @ delta32) * got["scale"]
                lo -= got["width"] * d_qq
                keep = (lo <= u + _SLACK_IP).tolist()
            else:
                keep = (self._lower(entry, n, delta32, d_qq, q32) <= u).tolist()
            # the probe's records come with their distances: the others within u are re-ranked
            rest = [lb for lb, ok in zip(labs, keep, strict=True) if ok and lb not in have]
        pool = list(have.items())
        if rest:
            exact = self.rerank(query, vectors(np.asarray(rest, np.int64))).tolist()
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
        return served, [d for _, d in top], not set(labs).issuperset(served)

    # -- bounds ----------------------------------------------------------------------------------
    def _lower(self, entry: Entry, n: int, delta32: np.ndarray, d_qq: float, q32: np.ndarray) -> np.ndarray:
        """Lower bounds of the raw distances to q' of the first ``n`` candidates (as :meth:`_bounds`)."""
        if not entry.allcoded or self.space != "ip":
            return self._bounds(entry, np.arange(n), delta32, d_qq, q32)[0]
        codes, scale, width = self.codes.parts(entry.crow[:n])
        # _bounds' arithmetic, fused: d(q', c) >= d(q, c) - delta.c' - (|delta| * width + slack)
        dot = (codes.astype(np.float32) @ delta32) * scale
        lo = entry.dists[:n] - dot
        lo -= width * d_qq + _SLACK_IP
        return lo

    def _bounds(
        self, entry: Entry, cand: np.ndarray, delta32: np.ndarray, d_qq: float, q32: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Lower and upper bounds of the raw distances to q' of the candidates ``cand`` (positions).

        With a code c' for c: raw'(c) = base - mult * delta.c, and delta.c = delta.c' +- |delta| * width
        (``width`` bounds |c - c'| and the rounding of delta.c', see :class:`CandidateCodes`), so the
        estimate from c' plus or minus ``mult * |delta| * width`` and the float32 slack brackets it.
        Without a code, the triangle inequality: |d(q', c) - d(q, c)| <= d(q, q').
        """
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
        cb = self.codes
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
        t = np.asarray(true_distance(self.space, dists[unc]))
        lo[unc] = self._raw_of(np.maximum(t - d_qq, 0.0)) - sl[unc]
        hi[unc] = self._raw_of(t + d_qq) + sl[unc]
        return lo, hi

    def _true1(self, raw: float) -> float:
        """:func:`true_distance` of one number."""
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
        """Euclidean distance -> raw index distance (inverse of :func:`true_distance`)."""
        return true * true / 2.0 if self.space == "ip" else true * true

    def rerank(self, query: np.ndarray, cvecs: np.ndarray) -> np.ndarray:
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
