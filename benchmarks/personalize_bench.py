"""Personalization benchmark: simulated users with hidden preferences on the real-text set (issue #17).

Set-up: the first ``--n`` (default 20,000, a subset so that the ingest stays light on a shared machine)
real-text vectors with ``datasets.metadata_for`` metadata, in an on-disk collection (HNSW).

Each simulated user has a hidden preference, by ``--pref``:

* ``region`` (default): a region of the embedding space, the ``--region`` share (default 5%) of records
  most cosine-similar to a centroid (a random record's vector); the user's queries are the real-text
  queries nearest that centroid.
* ``field``: a metadata value, ``tag == u % 10`` (10% of the records, independent of the vectors); the
  user's queries are a random draw of the real-text queries.

Each user has ``3 * rounds`` queries: two per round feed back, the rest are held out. Each of ``--rounds`` (20) rounds: the user searches two queries (personalized,
k = 10) and gives ``relevant=True`` to the shown hits inside the region and ``relevant=False`` to the
others (feedback on the top 10 by that preference).

Measured on the held-out queries only (never fed back):

* NDCG@10 by the hidden preference: gain 1 for a record inside the region *and* among the query's
  exact 50 nearest (relevant to the query as well as to the user), else 0; the ideal ranking puts every
  such record first. Personalized (``user=``) vs plain; queries with no such record are skipped.
* recall@10 of the underlying search against the exact top 10: the plain search's, and the nearest-10
  of the personalized search's candidate pool (what ``user=`` re-ranks).
* p50 latency of plain and personalized searches, interleaved, each query once. A held-out query of one
  user can be another's too (their regions' queries overlap), so the plain search, whose result cache
  all users share, may hit where the personalized one (a per-user cache) misses: the headline p50 counts
  every query, as users meet them, and a second line compares misses with misses.

Run::

    python -m benchmarks.personalize_bench                 # region preferences
    python -m benchmarks.personalize_bench --pref field    # metadata-field preferences

Results: benchmarks/results/personalize_bench.json and .md (``--pref field``: personalize_bench_field.*).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.datasets import load, metadata_for
from benchmarks.default_path_bench import _calibrating
from embeddix_core import Embeddix

RESULTS = Path(__file__).resolve().parent / "results"
DATA = Path(__file__).resolve().parent / "data" / "realtext-100000"


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def _ndcg(ids: list[int], gains: set[int], k: int = 10) -> float:
    dcg = sum(1.0 / np.log2(i + 2) for i, rid in enumerate(ids[:k]) if rid in gains)
    ideal = sum(1.0 / np.log2(i + 2) for i in range(min(k, len(gains))))
    return dcg / ideal


def _plan_label(plan: Any) -> str:
    """What served a search: the result cache's verdict and the beam searched."""
    if plan is None:
        return "?"
    return f"{plan.result_cache} ef={plan.ef}"


def _searched(plan: Any) -> bool:
    """Whether a search ran (the result cache did not serve it)."""
    return getattr(plan, "result_cache", None) not in ("hit", "semantic-hit")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=20_000)
    ap.add_argument("--users", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--region", type=float, default=0.05)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--pref", choices=("region", "field"), default="region")
    ap.add_argument(
        "--candidate-factor", type=int, default=None, help="col.personalization(candidate_factor=...)"
    )
    ap.add_argument("--out", default=None, help="result file stem (default: by --pref)")
    args = ap.parse_args()
    rng = np.random.default_rng(args.seed)
    ds = load(DATA)
    base = np.ascontiguousarray(ds.base[: args.n], np.float32)
    unit_base = _unit(base.astype(np.float64))
    queries = _unit(np.asarray(ds.queries, np.float64))
    load_avg = os.getloadavg()
    tmp = Path(tempfile.mkdtemp(prefix="embeddix-pz-"))
    out: dict[str, Any] = {
        "n": args.n,
        "users": args.users,
        "rounds": args.rounds,
        "pref": args.pref,
        "region": args.region,
    }
    tags = np.arange(args.n) % 10  # metadata_for(i)["tag"]
    try:
        db = Embeddix.open(tmp / "data", durability="normal")
        col = db.create_collection("pz", dim=ds.dim)
        if args.candidate_factor is not None:
            col.personalization(candidate_factor=args.candidate_factor)
        out["candidate_factor"] = col.personalization().candidate_factor
        t = time.perf_counter()
        for s in range(0, args.n, 5000):
            e = min(s + 5000, args.n)
            col.add(
                [str(i) for i in range(s, e)], base[s:e], metadatas=[metadata_for(i) for i in range(s, e)]
            )
        out["ingest_s"] = round(time.perf_counter() - t, 1)
        out["index"] = col.index_kind
        col.calibrate()
        n_q_user = 3 * args.rounds
        ndcg_plain: list[float] = []
        ndcg_pers: list[float] = []
        rec_plain: list[float] = []
        rec_pool: list[float] = []
        lat_plain: list[float] = []
        lat_pers: list[float] = []
        miss_plain: list[bool] = []  # served by a search, not by the result cache
        miss_pers: list[bool] = []
        skipped = 0
        events = 0
        calibrating = 0
        plans_plain: Counter[str] = Counter()
        plans_pers: Counter[str] = Counter()
        for u in range(args.users):
            user = f"user{u}"
            if args.pref == "region":
                c = unit_base[int(rng.integers(args.n))]
                sims = unit_base @ c
                region = set(np.argsort(-sims)[: int(args.region * args.n)].tolist())
                mine = np.argsort(-(queries @ c))[:n_q_user]
            else:  # the records with the user's tag; any queries
                region = set(np.flatnonzero(tags == u % 10).tolist())
                mine = rng.choice(len(queries), n_q_user, replace=False)
            feed, held = mine[: 2 * args.rounds], mine[2 * args.rounds :]
            for r in range(args.rounds):
                for qi in feed[2 * r : 2 * r + 2]:
                    q = queries[qi].astype(np.float32)
                    for h in col.search(q, 10, user=user):
                        col.feedback(h.id, user=user, relevant=int(h.id) in region, query=q)
                        events += 1
            for qi in held:
                q = queries[qi].astype(np.float32)
                exact = np.argsort(-(unit_base @ queries[qi]))[:50]
                gains = {int(i) for i in exact if int(i) in region}
                t0 = time.perf_counter()
                calibrating += _calibrating()
                plain_hits = col.search(q, 10)
                t1 = time.perf_counter()
                pers_hits = col.search(q, 10, user=user)
                t2 = time.perf_counter()
                plain = [int(h.id) for h in plain_hits]
                pers = [int(h.id) for h in pers_hits]
                plans_plain[_plan_label(plain_hits.plan)] += 1
                plans_pers[_plan_label(pers_hits.plan)] += 1
                lat_plain.append(t1 - t0)
                lat_pers.append(t2 - t1)
                miss_plain.append(_searched(plain_hits.plan))
                miss_pers.append(_searched(pers_hits.plan))
                top10 = set(exact[:10].tolist())
                rec_plain.append(len(top10 & set(plain)) / 10)
                pool = [int(h.id) for h in col.search(q, 10 * out["candidate_factor"], cache=False)][:10]
                rec_pool.append(len(top10 & set(pool)) / 10)
                if not gains:
                    skipped += 1
                    continue
                ndcg_plain.append(_ndcg(plain, gains))
                ndcg_pers.append(_ndcg(pers, gains))
        out["cache_tiers"] = col.cache_info().get("tiers")
        db.close()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    np_, nq = float(np.mean(ndcg_plain)), float(np.mean(ndcg_pers))
    p50_plain, p50_pers = float(np.median(lat_plain)) * 1e3, float(np.median(lat_pers)) * 1e3
    mp = [t for t, m in zip(lat_plain, miss_plain, strict=True) if m]
    mq = [t for t, m in zip(lat_pers, miss_pers, strict=True) if m]
    p50_plain_miss = float(np.median(mp)) * 1e3 if mp else float("nan")
    p50_pers_miss = float(np.median(mq)) * 1e3 if mq else float("nan")
    out.update(
        feedback_events=events,
        heldout_queries=len(lat_plain),
        heldout_scored=len(ndcg_plain),
        heldout_skipped_no_relevant=skipped,
        ndcg10_plain=round(np_, 4),
        ndcg10_personalized=round(nq, 4),
        ndcg_lift=round(nq / np_ - 1.0, 4),
        recall10_plain=round(float(np.mean(rec_plain)), 4),
        recall10_candidate_pool=round(float(np.mean(rec_pool)), 4),
        p50_ms_plain=round(p50_plain, 3),
        p50_ms_personalized=round(p50_pers, 3),
        p50_ratio=round(p50_pers / p50_plain, 3),
        p50_ms_plain_misses=round(p50_plain_miss, 3),
        p50_ms_personalized_misses=round(p50_pers_miss, 3),
        p50_ratio_misses=round(p50_pers_miss / p50_plain_miss, 3),
        misses=[len(mp), len(mq)],
        heldout_while_calibrating=calibrating,
        plans_plain=dict(plans_plain.most_common()),
        plans_personalized=dict(plans_pers.most_common()),
        load_average_at_start=[round(x, 2) for x in load_avg],
        targets={"ndcg_lift": 0.15, "p50_ratio": 1.2},
    )
    out["passed"] = {"ndcg_lift": out["ndcg_lift"] >= 0.15, "p50_ratio": out["p50_ratio"] <= 1.2}
    RESULTS.mkdir(exist_ok=True)
    stem = args.out or ("personalize_bench" if args.pref == "region" else "personalize_bench_field")
    (RESULTS / f"{stem}.json").write_text(json.dumps(out, indent=1) + "\n")
    md = [
        "# Personalization benchmark (simulated users, real-text set)",
        "",
        f"{args.n:,} real-text records (a subset of realtext-100000), {args.users} users, {args.rounds} rounds "
        f"of 2 queries with feedback on the 10 shown hits; "
        + (
            f"hidden preference: region = {args.region:.0%} of records nearest a random centroid. "
            "Command: `python -m benchmarks.personalize_bench`."
            if args.pref == "region"
            else "hidden preference: a metadata value (tag == u % 10, 10% of the records). "
            "Command: `python -m benchmarks.personalize_bench --pref field`."
        ),
        "",
        "| measure | plain | personalized | target |",
        "|---|---|---|---|",
        f"| NDCG@10 by hidden preference (held-out) | {np_:.4f} | {nq:.4f} | lift >= 15% (got {nq / np_ - 1:+.1%}) |",
        f"| recall@10 of the underlying search | {out['recall10_plain']} | {out['recall10_candidate_pool']} (pool) "
        "| unchanged |",
        f"| p50 latency (ms) | {p50_plain:.3f} | {p50_pers:.3f} | <= 1.2x (got {p50_pers / p50_plain:.2f}x) |",
        f"| p50 latency (ms), result-cache misses only ({len(mp)} plain, {len(mq)} personalized) | "
        f"{p50_plain_miss:.3f} | {p50_pers_miss:.3f} | (got {p50_pers_miss / p50_plain_miss:.2f}x) |",
        "",
        f"Load average at start: {out['load_average_at_start']}. Held-out queries: {len(lat_plain)} "
        f"({skipped} without any relevant record skipped for NDCG).",
        "",
        f"Held-out queries timed while a background calibration ran: {calibrating}. "
        f"Plans served (result cache, beam): plain {out['plans_plain']}; personalized "
        f"{out['plans_personalized']}. Cache tiers at the end: {out.get('cache_tiers')}.",
        "",
    ]
    (RESULTS / f"{stem}.md").write_text("\n".join(md))
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
