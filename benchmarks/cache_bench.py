"""Cache benchmark: a replayed agent workload on the real-text set.

10,000 recalls: 40% repeat an earlier query exactly, 20% are near-duplicates of an earlier query (plus
noise, cosine >= 0.998 to it), 40% are new; run read-only and again with one remember (insert) per five
recalls. For every served hit, the served results are checked against the exact answer next to a fresh
search (``cache=False``): served recall must never be below the fresh search's (``served_better_than_fresh``
counts the other direction: cached answers come from a beam twice as wide as an uncached search's).
Also measured: cached query p50 (exact hit) and semantic hit p50, entries surviving the write stream,
the bytes of candidate codes in the cache budget, and ``probe_found``: semantic hits that served a record
only the probe found (``--no-probe`` runs without it); the opt-in unverified mode is not offered: only
verified hits are served.

The collection holds the first 90,000 real-text vectors; the other 10,000 plus the 1,000 held-out queries
feed new queries and the remembered records.

Run::

    python -m benchmarks.cache_bench

Results: benchmarks/results/cache_bench.json and .md.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.stores import load_dataset
from embeddix_core import Embeddix, EmbeddixSettings

RESULTS = Path(__file__).resolve().parent / "results"
N_BASE = 90_000


def _near(q: np.ndarray, rng: np.random.Generator, cos: float = 0.998) -> np.ndarray:
    """A near-duplicate of unit vector q at cosine ``cos`` (a random orthogonal tilt)."""
    noise = rng.standard_normal(q.shape).astype(np.float32)
    noise -= (noise @ q) * q
    noise /= np.linalg.norm(noise)
    angle = np.arccos(cos)
    out = np.cos(angle) * q + np.sin(angle) * noise
    return (out / np.linalg.norm(out)).astype(np.float32)


def workload(n: int, new_pool: np.ndarray, seed: int) -> list[tuple[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    seen: list[np.ndarray] = []
    out: list[tuple[str, np.ndarray]] = []
    fresh = iter(new_pool)
    for _ in range(n):
        r = rng.random()
        if not seen or r < 0.40:
            kind, q = "new", next(fresh)
        elif r < 0.80:
            kind, q = "repeat", seen[int(rng.integers(len(seen)))]
        else:
            kind, q = "near", _near(seen[int(rng.integers(len(seen)))], rng)
        if kind == "new":
            seen.append(q)
        out.append((kind, np.ascontiguousarray(q, dtype=np.float32)))
    return out


def run(write_every: int | None, settings: EmbeddixSettings, check: bool = True) -> dict[str, Any]:
    ds = load_dataset("realtext")
    base = np.asarray(ds.base, dtype=np.float32)
    pool = np.concatenate([base[N_BASE:], np.asarray(ds.queries, dtype=np.float32)])
    rng = np.random.default_rng(0)
    order = rng.permutation(len(pool))
    new_queries, remember = pool[order[:4_500]], pool[order[4_500:]]
    work = tempfile.mkdtemp(prefix="embeddix-cache-bench-")
    try:
        db = Embeddix.open(Path(work) / "d", settings=settings, durability="normal")
        col = db.create_collection("mem", dim=ds.dim, index_threshold=0)
        for s in range(0, N_BASE, 10_000):
            col.add([f"doc-{i}" for i in range(s, s + 10_000)], base[s : s + 10_000])
        live = np.empty((N_BASE + len(remember), ds.dim), np.float32)
        live[:N_BASE] = base[:N_BASE]
        n_live = N_BASE
        live_ids = list(range(N_BASE))
        col.calibrate()
        col.cache_clear()
        wl = workload(10_000, new_queries, seed=1)
        kinds = {"hit": [], "semantic-hit": [], "miss": []}  # latencies
        by_kind: dict[str, dict[str, int]] = {}
        worse = better = 0
        worse_by: dict[str, int] = {}
        checked = 0
        writes = 0
        rem = iter(remember)
        for i, (kind, q) in enumerate(wl):
            if write_every and i and i % write_every == 0:
                v = next(rem)
                col.add(f"mem-{writes}", v)
                live[n_live] = v
                n_live += 1
                live_ids.append(-1 - writes)
                writes += 1
            t0 = time.perf_counter()
            hits = col.search(q, k=10)
            dt = time.perf_counter() - t0
            src = hits.plan.result_cache if hits.plan is not None else "miss"
            kinds[src].append(dt)
            d = by_kind.setdefault(kind, {"hit": 0, "semantic-hit": 0, "miss": 0})
            d[src] += 1
            if check and src != "miss":
                # served vs fresh, both against the exact answer over the live records
                fresh = col.search(q, k=10, cache=False)
                sims = live[:n_live] @ q
                truth = set(np.argpartition(-sims, 10)[:10].tolist())
                truth_ids = {
                    f"doc-{live_ids[j]}" if live_ids[j] >= 0 else f"mem-{-1 - live_ids[j]}" for j in truth
                }
                r_served = len(truth_ids & {h.id for h in hits})
                r_fresh = len(truth_ids & {h.id for h in fresh})
                if r_served < r_fresh:
                    worse += 1
                    worse_by[src] = worse_by.get(src, 0) + 1
                better += r_served > r_fresh
                checked += 1
        info = col.cache_info()
        served = len(kinds["hit"]) + len(kinds["semantic-hit"])
        out = {
            "writes": writes,
            "hit_rate": served / len(wl),
            "exact_hits": len(kinds["hit"]),
            "semantic_hits": len(kinds["semantic-hit"]),
            "misses": len(kinds["miss"]),
            "by_query_kind": by_kind,
            "served_checked": checked,
            "served_worse_than_fresh": worse,
            "served_worse_by_kind": worse_by,
            "served_better_than_fresh": better,
            "exact_hit_p50_us": float(np.median(kinds["hit"]) * 1e6) if kinds["hit"] else None,
            "semantic_hit_p50_us": float(np.median(kinds["semantic-hit"]) * 1e6)
            if kinds["semantic-hit"]
            else None,
            "miss_p50_us": float(np.median(kinds["miss"]) * 1e6) if kinds["miss"] else None,
            "verified_rejects": info["verified_rejects"],
            "probe_found": info["probe_found"],
            "invalidated": info["invalidated"],
            "entries_at_end": info["entries"],
            "bytes_at_end": info["bytes"],
            "code_bytes_at_end": info["code_bytes"],
        }
        db.close()
        return out
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--candidate-factor", type=int, default=None)
    p.add_argument("--no-probe", action="store_true", help="semantic lookups without the probe search")
    p.add_argument("--no-check", action="store_true", help="skip the per-hit recall check (faster)")
    p.add_argument("--out", default="cache_bench", help="result file stem under benchmarks/results")
    a = p.parse_args()
    s = EmbeddixSettings(auto_calibrate=False)
    if a.candidate_factor:
        s = s.model_copy(update={"cache_candidate_factor": a.candidate_factor})
    if a.no_probe:
        s = s.model_copy(update={"cache_probe": False})
    report = {
        "candidate_factor": s.cache_candidate_factor,
        "probe": s.cache_probe,
        "read_only": run(None, s, not a.no_check),
        "one_write_per_5_reads": run(5, s, not a.no_check),
    }
    ro, rw = report["read_only"], report["one_write_per_5_reads"]
    report["write_over_read_only_hit_rate"] = rw["hit_rate"] / ro["hit_rate"]
    # The checked runs interleave an exact scan of the whole collection between timed searches, which
    # evicts CPU caches; latency comes from a third, unchecked read-only run of the same workload.
    timing = run(None, s, False)
    report["latency_run"] = {
        key: timing[key] for key in ("exact_hit_p50_us", "semantic_hit_p50_us", "miss_p50_us", "hit_rate")
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{a.out}.json").write_text(json.dumps(report, indent=2))
    lines = [
        "# Cache benchmark (replayed agent workload, real-text set, 10,000 recalls)",
        "",
        "| | read-only | 1 write per 5 reads |",
        "|---|---|---|",
    ]
    for key in (
        "hit_rate",
        "exact_hits",
        "semantic_hits",
        "misses",
        "verified_rejects",
        "probe_found",
        "served_checked",
        "served_worse_than_fresh",
        "served_better_than_fresh",
        "exact_hit_p50_us",
        "semantic_hit_p50_us",
        "miss_p50_us",
        "writes",
        "invalidated",
        "entries_at_end",
        "bytes_at_end",
        "code_bytes_at_end",
    ):
        f = lambda v: f"{v:.4g}" if isinstance(v, float) else str(v)  # noqa: E731
        lines.append(f"| {key} | {f(ro[key])} | {f(rw[key])} |")
    lines += [
        "",
        f"Hit rate with writes / read-only: {report['write_over_read_only_hit_rate']:.2f}",
        f"Latency (unchecked read-only run): exact hit p50 {report['latency_run']['exact_hit_p50_us']:.1f} us, "
        f"semantic hit p50 {report['latency_run']['semantic_hit_p50_us']:.1f} us, "
        f"miss p50 {report['latency_run']['miss_p50_us']:.1f} us",
        f"By query kind (read-only): {ro['by_query_kind']}",
        "",
    ]
    (RESULTS / f"{a.out}.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
