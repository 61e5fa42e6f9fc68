"""The query planner: declarative recall targets and deadlines instead of hand-tuned ef.

Calibration: a collection measures recall@k against the exact answer and the native latency for a ladder
of ef values, and keeps that curve. The queries are, once the collection has answered enough of them
(``calibration_min_queries``, default 200), a reservoir sample of its real queries. Before that, they are
a sample of its own vectors, each moved off itself by its nearest-neighbour distance in a random
direction; that stand-in is optimistic on real text (measured: 0.97 predicted vs 0.91 held-out recall
at ef=10-16 on MiniLM embeddings), which is why a curve from it is replaced as soon as real queries
exist. Recall is made monotone in ef (a running
maximum) so a higher target never picks a smaller ef. Between rungs, ef is interpolated linearly in recall.

Recalibration rule: when the live count has changed by more than 20% (grown or shrunk), or more than 20%
of the calibrated count has been written (upserts and deletes included) since the curve was measured, or
the curve came from the stand-in sample and enough real queries have now been seen, a new curve is
measured in a background thread. Searches keep using the old curve until the new one is
ready, so calibration never blocks a search.

Deadlines: the planner picks the largest ef whose measured p99 native latency, scaled by a safety factor
for the Python around it, fits the time left. If none fits, it runs the smallest rung and the result is
marked partial. A result is also partial when the deadline forced an ef below what the recall target
asked for.

Plans are cached per (k, filter, recall target, deadline, ef) and dropped whenever the calibration or the
index kind changes.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np

from ..errors import InvalidArgumentError

__all__ = ["DEFAULT_RECALL", "EF_LADDER", "PRIOR", "Calibration", "Plan", "Planner", "calibrate"]

DEFAULT_RECALL = 0.95
EF_LADDER = (
    10, 12, 16, 20, 24, 28, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 256, 320, 384, 512, 768, 1024
)  # fmt: skip
# Margin added to a recall target when picking ef, in standard errors of the calibration's recall
# estimate (binomial over sample x k neighbour slots): a finite sample measures recall with noise.
# 1.645 standard errors, a one-sided 95% bound: the mean recall of queries the calibration never saw
# stays at or above the target unless the calibration sample was a 1-in-20 easy one. One standard error
# (a 1-in-6 chance) was not enough where queries vary: on 1M x 768 IVF-PQ a 100-query curve promised
# 0.957 at ef 250 and the 900 held-out queries got 0.949 there. Where queries vary little the standard
# error is small, so the extra margin costs little beam there.
RECALL_MARGIN_SE = 1.645
# The native call is not all a search costs: row fetch, hit objects and scheduling noise come on top.
DEADLINE_SAFETY = 0.6
RECALIBRATE_FRACTION = 0.2
# Single-query calls per rung that measure the latency tail (see ``calibrate``).
_TIMED = 32
# A curve measured on stand-in queries (records moved off themselves, noise 2) is optimistic only where
# the beam is barely wider than k, and pessimistic above: on 400 held-out MiniLM queries (100K records)
# it predicted 0.895 at ef 12 where real queries got about 0.885, but 0.922 vs 0.911 at ef 16... and
# 0.957 vs 0.966 at ef 40, 0.985 vs 0.991 at ef 96. Until real queries replace it, such a curve never
# picks a beam narrower than this many times k.
SAMPLE_MIN_EF_PER_K = 1.6


def _interpolate(e0: float, e1: float, r0: float, r1: float, want: float) -> float:
    """ef between two rungs where recall reaches ``want``.

    The miss rate ``1 - recall`` of HNSW falls roughly as a power of ef, so the curve is straight in
    log(miss) against log(ef): interpolating there follows its concave shape, where a straight line in
    recall would overshoot ef between widely spaced rungs. Linear when a rung has no misses.
    """
    if r1 <= r0:
        return float(e1)
    m0, m1, mw = 1.0 - r0, 1.0 - r1, 1.0 - want
    if m1 <= 0.0 or mw <= 0.0 or m0 <= 0.0:
        return e0 + (want - r0) / (r1 - r0) * (e1 - e0)
    frac = math.log(m0 / mw) / math.log(m0 / m1)
    return float(e0 * (e1 / e0) ** frac)


@dataclass(frozen=True, slots=True)
class Calibration:
    """A measured recall/latency curve for one collection."""

    k: int
    efs: tuple[int, ...]
    recall: tuple[float, ...]
    latency_us: tuple[float, ...]
    latency_p99_us: tuple[float, ...]
    count: int
    seq: int
    sample: int
    created: float = field(default_factory=time.time)
    source: str = "sample"  # "queries" (real answered queries) or "sample" (stored vectors moved off)
    # Standard deviation of the per-query recall at each rung (empty in curves saved before it was kept):
    # a query's misses come together (a hard query misses several neighbours at once), so the binomial
    # error over sample x k slots understates the noise of the mean. On 1M x 768 IVF-PQ a 100-query curve
    # promised 0.957 at ef 243 (one binomial SE over 0.95) and 900 other queries got 0.948 there.
    recall_sd: tuple[float, ...] = ()

    def ef_for_recall(self, target: float, k: int) -> tuple[int, float]:
        """Smallest ef expected to reach ``target`` recall@k, and the recall expected there.

        ef grows with k beyond the calibrated k (the beam must hold at least k candidates).
        """
        se = math.sqrt(max(target * (1.0 - target), 0.0) / max(self.sample * self.k, 1))
        efs, rec = self.efs, self.recall
        if len(self.recall_sd) == len(rec) and rec:
            # the spread measured where the curve reaches the target (see recall_sd)
            at = next((i for i, r in enumerate(rec) if r >= target), len(rec) - 1)
            se = max(se, self.recall_sd[at] / math.sqrt(max(self.sample, 1)))
        want = min(target + max(RECALL_MARGIN_SE * se, 0.001), 1.0)
        ef: float = efs[-1]
        expected = rec[-1]
        for i, r in enumerate(rec):
            if r >= want:
                if i == 0:
                    ef, expected = efs[0], r
                else:
                    ef = _interpolate(efs[i - 1], efs[i], rec[i - 1], r, want)
                    expected = want
                break
        scale = max(1.0, k / self.k)
        if self.source != "queries":
            ef = max(ef, SAMPLE_MIN_EF_PER_K * self.k)  # stand-ins: see SAMPLE_MIN_EF_PER_K
        return max(math.ceil(ef * scale), k), float(expected)

    def recall_at(self, ef: int, k: int) -> float:
        """Expected recall@k at a given ef (interpolated on the curve)."""
        e = ef / max(1.0, k / self.k)
        return float(np.interp(e, self.efs, self.recall))

    def latency_at(self, ef: int, *, p99: bool = True) -> float:
        """Expected native latency (µs) at a given ef."""
        return float(np.interp(ef, self.efs, self.latency_p99_us if p99 else self.latency_us))

    def ef_for_budget(self, budget_us: float, k: int) -> int | None:
        """Largest ef whose p99 latency fits ``budget_us`` (None when even the smallest does not)."""
        best = None
        for ef, lat in zip(self.efs, self.latency_p99_us, strict=True):
            if lat <= budget_us and ef >= k:
                best = ef
        return best

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> Calibration:
        d = json.loads(text)
        for key in ("efs", "recall", "latency_us", "latency_p99_us", "recall_sd"):
            if key in d:
                d[key] = tuple(d[key])
        return cls(**d)

    def stale(self, count: int, writes_since: int) -> bool:
        """The recalibration rule (see module docstring)."""
        base = max(self.count, 1)
        return (
            abs(count - self.count) > RECALIBRATE_FRACTION * base
            or writes_since > RECALIBRATE_FRACTION * base
        )


# The curve an HNSW collection plans from between the moment it needs a calibration and the moment its
# first one is measured (a bulk load's last minutes and the seconds after it: the background thread runs
# at the lowest priority, so a search right after a 100K ingest came before any curve, and ran at the
# fixed ef_search 96, recall 0.987 where 0.95 was asked, at 2.35x the cost of raw hnswlib at the ef
# that reaches 0.96). Values: raw hnswlib (M 16, ef_construction 200) on 300 held-out real-text MiniLM
# queries over 100,000 records (benchmarks/results/default_path_bench_realtext.md, its sweep; rungs
# above 200 from the same collection's calibration on real queries), each recall lowered by 0.01 so
# that larger or harder collections still get about what they asked for. Latencies: that sweep's p50
# and p95 x 1.3 (for deadlines; the measured curve replaces them). ``source="prior"`` marks it: plans
# made from it say ``calibrated=False``.
PRIOR = Calibration(
    k=10,
    efs=(10, 12, 16, 20, 24, 32, 40, 48, 64, 80, 96, 128, 160, 200, 256, 384, 512),
    recall=(
        0.839, 0.863, 0.895, 0.912, 0.927, 0.944, 0.959, 0.962, 0.967, 0.972, 0.977, 0.980, 0.981,
        0.983, 0.984, 0.9867, 0.9867,
    ),
    latency_us=(116, 127, 154, 175, 207, 230, 273, 313, 379, 445, 514, 624, 753, 956, 1200, 1800, 2400),
    latency_p99_us=(
        235, 260, 287, 316, 393, 432, 467, 534, 645, 785, 892, 1131, 1217, 1585, 2000, 3000, 4000
    ),
    count=100_000,
    seq=-1,
    sample=300,
    created=0.0,
    source="prior",
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class Plan:
    """How a search is (or would be) run; what ``Collection.explain`` returns.

    Attributes:
        index: ``"exact"``, ``"hnsw"`` or ``"ivf"`` (where ``ef`` maps to the lists probed).
        ef: HNSW beam width of the final pass (None for exact search).
        expected_recall: Recall@k the calibration predicts at that ef (1.0 for exact search).
        recall_target: The target asked for (or the collection default).
        deadline_ms: The deadline asked for, if any.
        steps: The beam widths of the progressive passes, smallest first (one entry for a plain search).
        filter_strategy: ``None``, ``"exact-subset"`` (the matches scanned exactly), ``"index-hook"`` (the
            graph searched with a filter callback) or ``"subset-graph"`` (a graph of the matches alone).
        filter_matches: Records matching the filter, when there is one.
        calibrated: Whether a calibration curve chose ef (else the collection's ``ef_search``).
        deadline_limited: The deadline forced a narrower beam than the recall target asked for.
        segments: HNSW segments searched (large collections are split; answers merged exactly).
        parallel_segments: Whether a single query searches its segments at once on a thread pool.
        plan_cached: Whether the plan came from the plan cache.
        result_cache: ``"hit"``, ``"semantic-hit"``, ``"miss"`` or ``"off"`` (filled by the cache layer).
        reason: A short human-readable explanation.
        ranking: How the hits were ordered: ``"vector"`` (by score), ``"rrf"`` (hybrid: by reciprocal
            rank fusion of the vector and BM25 rankings, each hit's ``rank_score``), ``"mmr"`` (maximal
            marginal relevance, in selection order) or ``"bm25"`` (text only, by score).
    """

    index: str
    ef: int | None
    expected_recall: float | None
    recall_target: float | None
    deadline_ms: float | None
    steps: tuple[int, ...] = ()
    filter_strategy: str | None = None
    filter_matches: int | None = None
    calibrated: bool = False
    deadline_limited: bool = False
    segments: int = 1
    parallel_segments: bool = False
    plan_cached: bool = False
    result_cache: str = "off"
    reason: str = ""
    ranking: str = "vector"

    def as_dict(self) -> dict[str, Any]:
        """The plan as plain data."""
        return asdict(self)


def check_recall(recall: Any) -> float | None:
    if recall is None:
        return None
    if isinstance(recall, bool) or not isinstance(recall, int | float) or not 0.0 < float(recall) <= 1.0:
        raise InvalidArgumentError(f"recall must be a number in (0, 1], e.g. 0.95; got {recall!r}")
    return float(recall)


def check_deadline(deadline_ms: Any) -> float | None:
    if deadline_ms is None:
        return None
    if (
        isinstance(deadline_ms, bool)
        or not isinstance(deadline_ms, int | float)
        or not math.isfinite(deadline_ms)
        or deadline_ms <= 0
    ):
        raise InvalidArgumentError(
            f"deadline_ms must be a positive number of milliseconds; got {deadline_ms!r}"
        )
    return float(deadline_ms)


def progressive_steps(final_ef: int, k: int) -> tuple[int, ...]:
    """Beam widths for progressive search: a cheap first pass, then x4 widening up to ``final_ef``."""
    first = max(k, 10)
    if first >= final_ef:
        return (final_ef,)
    steps = [first]
    while steps[-1] * 4 < final_ef:
        steps.append(steps[-1] * 4)
    steps.append(final_ef)
    return tuple(steps)


def _measure_rung(
    search: Callable[[np.ndarray, int, int], np.ndarray],
    search_many: Callable[[np.ndarray, int, int], tuple[np.ndarray, float]] | None,
    queries: np.ndarray,
    k: int,
    ef: int,
    pause: Callable[[], None] | None = None,
) -> tuple[Sequence[Any], float, float]:
    """One rung of the ladder: (labels per query, mean latency us, p99 latency us); see ``calibrate``.

    ``pause`` runs between the single timed searches (every 8): a foreground search must not meet a
    back-to-back stream of them at another ef."""
    n = len(queries)
    if search_many is None:
        times = np.empty(n)
        rows = []
        for i in range(n):
            t0 = time.perf_counter()
            rows.append(search(queries[i : i + 1], k, ef))
            times[i] = time.perf_counter() - t0
        return rows, float(np.mean(times) * 1e6), float(np.percentile(times, 99) * 1e6)
    found, seconds = search_many(queries, k, ef)
    mean = seconds / max(n, 1)
    times = np.empty(min(n, _TIMED))
    for i in range(len(times)):
        if pause is not None and i and i % 8 == 0:
            pause()
        t0 = time.perf_counter()
        search(queries[i : i + 1], k, ef)
        times[i] = time.perf_counter() - t0
    p99 = max(float(np.percentile(times, 99)), mean) if len(times) else mean
    return list(found), mean * 1e6, p99 * 1e6


def calibrate(
    search: Callable[[np.ndarray, int, int], np.ndarray],
    queries: np.ndarray,
    query_labels: np.ndarray,
    truth: np.ndarray,
    *,
    k: int,
    count: int,
    seq: int,
    efs: Sequence[int] = EF_LADDER,
    stop_at: float = 0.999,
    source: str = "sample",
    search_many: Callable[[np.ndarray, int, int], tuple[np.ndarray, float]] | None = None,
    pause: Callable[[], None] | None = None,
) -> Calibration:
    """Measure the recall/latency curve.

    With ``search_many``, each rung is one native call over every query (recall, and the mean latency
    from the call's time) plus single-query calls over the first ``_TIMED`` queries (the p99 the
    deadline model needs): a background calibration then holds Python's GIL for a few microseconds per
    rung instead of per query, so the searches it runs beside keep their core.

    Args:
        search: ``search(query (1, d), k, ef) -> labels (k,)`` calling the native index.
        queries: Sample vectors (taken from the collection).
        query_labels: Their labels (excluded from the answers: leave-one-out).
        truth: Exact top-k labels per query, self excluded.
        k: Recall@k measured.
        count: Live records when calibrating.
        seq: Store sequence number when calibrating.
        efs: The ladder.
        stop_at: Stop climbing once the recall reaches this.
        source: Where the queries came from (``"queries"`` or ``"sample"``).
        search_many: ``search_many(queries (n, d), k, ef) -> (labels (n, k), seconds searching)``: a few
            native calls over every query (the seconds leave out any pause between them).
        pause: Called before each rung (the calibrator yields to searches there).

    Returns:
        The curve.
    """
    rec: list[float] = []
    sd: list[float] = []
    lat: list[float] = []
    p99: list[float] = []
    used: list[int] = []
    truth_sets = [set(row.tolist()) for row in truth]
    n = len(queries)
    per_query = np.zeros(n)
    # one answer more only where a query may find itself (leave-one-out): the answers asked for set an
    # IVF-PQ search's re-rank width, so real queries ask for k, as served searches do
    asked = k + 1 if bool((np.asarray(query_labels) >= 0).any()) else k
    for ef in efs:
        if ef < k:
            continue
        if pause is not None:
            pause()
        rows, mean_us, p99_us = _measure_rung(search, search_many, queries, asked, ef, pause)
        for i in range(n):
            own = int(query_labels[i])
            got = [x for x in rows[i].tolist() if x != own and x >= 0][:k]
            per_query[i] = len(truth_sets[i].intersection(got))
        r = float(per_query.sum()) / (n * k)
        rec.append(max(r, rec[-1]) if rec else r)  # monotone: a wider beam never finds less
        sd.append(float(per_query.std(ddof=1)) / k if n > 1 else 0.0)
        lat.append(mean_us)
        p99.append(p99_us)
        used.append(ef)
        if rec[-1] >= stop_at and len(used) >= 3:
            break
    # latency must not fall with ef either (noise on a busy machine would otherwise invert the model)
    lat = list(np.maximum.accumulate(lat))
    p99 = list(np.maximum.accumulate(p99))
    return Calibration(
        k,
        tuple(used),
        tuple(rec),
        tuple(lat),
        tuple(p99),
        count,
        seq,
        len(queries),
        source=source,
        recall_sd=tuple(sd),
    )


class Planner:
    """Chooses the index pass of each search and remembers the choice (plans are data; see :class:`Plan`).

    Plans are cached per (k, recall, deadline, ef) and dropped when the curve, the index (its kind or
    segment count) or the collection's parameters change. ``variant`` memoizes copies of a plan that say
    how the result cache served it: ``dataclasses.replace`` costs ~10 us, a dict lookup ~0.1 us.

    Args:
        default_recall: The recall target of searches that name none.
    """

    def __init__(self, default_recall: float) -> None:
        self.default_recall = default_recall
        self._plans: dict[tuple[Any, ...], Plan] = {}
        self._variants: dict[tuple[int, str], tuple[Plan, Plan]] = {}
        self._segments = 0
        self._curve: Calibration | None = None  # the curve the cached plans came from

    def has(self, k: int, recall: float | None, deadline_ms: float | None, ef: int | None) -> bool:
        """Whether this plan is cached (for ``explain``)."""
        return (k, recall, deadline_ms, ef) in self._plans

    def clear(self) -> None:
        self._plans.clear()

    def index_changed(self, approximate: bool, segments: int) -> None:
        """After a write: plans made for another index shape are dropped."""
        shape = segments if approximate else 0
        if self._plans and shape != self._segments:
            self._plans.clear()
        self._segments = shape

    def plan(
        self,
        k: int,
        recall: float | None,
        deadline_ms: float | None,
        ef: int | None,
        index: Any,
        ef_search: int,
        curve: Calibration | None,
    ) -> Plan:
        """The plan for a search on ``index`` (a ``VectorIndex``; cached)."""
        if not index.approximate:
            return Plan("exact", None, 1.0, recall, deadline_ms, steps=(0,), reason="exact search")
        if curve is not self._curve:
            # the curve in use changed (none -> the prior -> a measured one): plans from the old go
            self._plans.clear()
            self._curve = curve
        key = (k, recall, deadline_ms, ef)
        plan = self._plans.get(key)
        if plan is not None:
            return plan
        use, limited, reason = self._beam(k, recall, deadline_ms, ef, ef_search, curve)
        segments = index.segments
        plan = Plan(
            "ivf" if index.kind == "ivf" else "hnsw",  # IVF: ef sets the fraction of lists probed
            use,
            curve.recall_at(use, k) if curve is not None else None,
            recall,
            deadline_ms,
            steps=(use,),
            calibrated=curve is not None and curve.source != "prior",
            deadline_limited=limited,
            segments=segments,
            parallel_segments=segments > 1 and (os.cpu_count() or 1) > 1,
            reason=reason,
        )
        if len(self._plans) > 256:
            self._plans.clear()
        self._plans[key] = plan
        return plan

    def _beam(
        self,
        k: int,
        recall: float | None,
        deadline_ms: float | None,
        ef: int | None,
        ef_search: int,
        curve: Calibration | None,
    ) -> tuple[int, bool, str]:
        """(ef, deadline-limited, reason) for an approximate index."""
        target = recall if recall is not None else self.default_recall
        limited = False
        if ef is not None:
            use, reason = max(int(ef), k), "ef given by the caller"
        elif curve is None:
            use, reason = max(ef_search, k), "not calibrated yet: the collection's ef_search"
        else:
            use, _ = curve.ef_for_recall(target, k)
            if curve.source == "prior":
                reason = (
                    f"not calibrated yet: smallest ef whose recall@{curve.k} reaches {target} on the prior "
                    "curve (real-text MiniLM, 100K, less 0.01) until this collection's is measured"
                )
            else:
                reason = f"smallest ef whose calibrated recall@{curve.k} reaches {target}"
            if deadline_ms is not None:
                fit = curve.ef_for_budget(deadline_ms * 1000.0 * DEADLINE_SAFETY, k)
                if fit is None or fit < use:
                    use = fit if fit is not None else max(k, curve.efs[0])
                    limited = True
                    reason = f"deadline {deadline_ms} ms allows ef {use} at most (p99 latency model)"
        return use, limited, reason

    def variant(self, plan: Plan, result_cache: str, *, label: str | None = None, **changes: Any) -> Plan:
        """``plan`` with ``result_cache`` (and ``changes``) set, memoized by plan and ``label``."""
        key = (id(plan), label or result_cache)
        got = self._variants.get(key)
        if got is None or got[0] is not plan:
            if len(self._variants) > 1024:
                self._variants.clear()
            got = self._variants[key] = (plan, replace(plan, result_cache=result_cache, **changes))
        return got[1]
