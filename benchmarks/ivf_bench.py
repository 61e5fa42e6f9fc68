"""IVF-PQ + rerank (``embeddix_core.index.faiss_ivf``) next to raw FAISS IVF-PQ without rerank (issue #16).

Each variant runs in its own subprocess so its RSS starts from a clean baseline:

* ``ivfpq_rerank``: :class:`FaissIvfIndex` (``codes="pq"``, default ``pq_m`` / ``nbits`` / rerank width)
  built the way the engine builds it: vectors added in batches of 20,000 (the first batch crosses the
  training threshold and trains on it), then one :meth:`~FaissIvfIndex.retrain` so nlist fits the final
  count. Full-precision vectors for re-ranking are read from a ``np.memmap`` of ``base.npy``: file-backed
  pages (RssFile), not anonymous memory (RssAnon); both are reported.
* ``faiss_ivfpq``: ``faiss.index_factory(d, "IVF<nlist>,PQ<m>x8", METRIC_INNER_PRODUCT)`` with the same
  nlist, m and training sample size, all vectors added at once, no rerank.

Resident bytes per vector = (RssAnon after build - RssAnon before build) / n, measured after
``malloc_trim(0)`` (a retrain frees the previous index; trimming returns that heap to the OS, so what is
left is what the index holds). ``memory_bytes()``'s own accounting is reported beside it.

Searches: one thread (``faiss.omp_set_num_threads(1)``, BLAS pinned to one thread by the parent through
the environment), one query per call over all held-out queries, at several ``ef`` (nprobe = ceil(nlist * ef / 1024));
recall@10 against ``gt_cosine_k100.npy``; p50 / p95 latency per call. Build time is wall time on two
threads.

Run::

    python -m benchmarks.ivf_bench            # synth768-200000, 1,000 queries
    python -m benchmarks.ivf_bench --quick    # first 50,000 base vectors, 300 queries (own exact truth)

Results: ``benchmarks/results/ivf_bench.json`` and ``.md`` (``ivf_bench_quick.*`` for ``--quick``).
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import gc
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

DATA = Path(__file__).resolve().parent / "data" / "synth768-200000"
RESULTS = Path(__file__).resolve().parent / "results"
EFS = (96, 192, 256, 320, 384)
K = 10


def _status() -> dict[str, int]:
    out = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key = line.split(":")[0]
        if key in ("VmRSS", "RssAnon", "RssFile", "VmHWM"):
            out[key] = int(line.split()[1]) * 1024
    return out


def _trim() -> None:
    gc.collect()
    with contextlib.suppress(OSError):  # not glibc
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def _data(quick: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    base = np.load(DATA / "base.npy", mmap_mode="r")
    queries = np.load(DATA / "queries.npy")
    truth = np.load(DATA / "gt_cosine_k100.npy")
    if quick:
        from embeddix_core.eval import exact_knn

        base = base[:50_000]
        queries = queries[:300]
        truth = exact_knn(base, queries, K, "cosine").indices
    return base, np.ascontiguousarray(queries, np.float32), truth


def _time_queries(search: Any, queries: np.ndarray) -> tuple[np.ndarray, list[float]]:
    labels = np.full((len(queries), K), -1, np.int64)
    lat = []
    for i in range(len(queries)):
        t = time.perf_counter()
        lab = search(queries[i : i + 1])
        lat.append((time.perf_counter() - t) * 1e3)
        labels[i, : lab.shape[1]] = lab[0, :K]
    return labels, lat


def _child(variant: str, quick: bool, nlist: int | None, pq_m: int | None) -> dict[str, Any]:
    import faiss

    from embeddix_core.eval import recall_at_k
    from embeddix_core.index.faiss_ivf import FaissIvfIndex, nprobe_for

    base, queries, truth = _data(quick)
    n, dim = base.shape
    faiss.omp_set_num_threads(2)
    # warm-up: BLAS and OpenMP allocate per-thread buffers (tens of MB) on first use; not the index's
    warm = faiss.IndexFlatIP(dim)
    warm.add(np.ascontiguousarray(base[:2048], np.float32))
    warm.search(queries[:64], 10)
    np.asarray(base[:64], np.float32) @ queries[:64].T
    del warm
    _trim()
    before = _status()
    t0 = time.perf_counter()
    out: dict[str, Any] = {"variant": variant, "n": n, "dim": dim, "queries": len(queries)}
    if variant == "ivfpq_rerank":

        def load(labels: np.ndarray) -> np.ndarray:
            return np.asarray(base[labels], np.float32)

        ix = FaissIvfIndex(dim, "ip", load_vectors=load, codes="pq")
        step = 20_000
        for s in range(0, n, step):
            ix.add(np.arange(s, min(s + step, n), dtype=np.int64), base[s : s + step])
            if s == 0:
                out["first_train_nlist"] = ix.nlist
                out["first_train_seconds"] = round(time.perf_counter() - t0, 2)
        out["stream_add_seconds"] = round(time.perf_counter() - t0, 2)
        rep = ix.retrain()
        out["retrain"] = {
            "nlist": rep.nlist,
            "train_seconds": round(rep.train_seconds, 2),
            "total_seconds": round(rep.total_seconds, 2),
        }
        out["build_seconds"] = round(time.perf_counter() - t0, 2)
        out["nlist"], out["pq_m"], out["rerank_width"] = ix.nlist, ix.pq_m, K * ix.rerank_factor
        out["memory_bytes_accounted_per_vector"] = round(ix.memory_bytes() / n, 1)

        def search_at(ef: int) -> Any:
            return lambda q: ix.search(q, K, ef=ef).labels

        nl = ix.nlist
    else:
        nl = nlist or 1
        m = pq_m or 64
        idx = faiss.index_factory(dim, f"IVF{nl},PQ{m}x8", faiss.METRIC_INNER_PRODUCT)
        idx.cp.niter = 10
        idx.cp.max_points_per_centroid = 50
        idx.do_polysemous_training = False
        rng = np.random.default_rng(1234)
        sample = np.sort(rng.choice(n, min(n, max(50 * nl, 9984)), replace=False))
        idx.train(np.ascontiguousarray(base[sample], np.float32))
        for s in range(0, n, 20_000):
            idx.add(np.ascontiguousarray(base[s : s + 20_000], np.float32))
        out["build_seconds"] = round(time.perf_counter() - t0, 2)
        out["nlist"], out["pq_m"], out["rerank_width"] = nl, m, 0
        out["memory_bytes_accounted_per_vector"] = round(
            (idx.ntotal * (idx.code_size + 8) + nl * dim * 4 + 256 * dim * 4) / n, 1
        )

        def search_at(ef: int) -> Any:
            params = faiss.SearchParametersIVF(nprobe=nprobe_for(ef, nl))
            return lambda q: idx.search(q, K, params=params)[1]

    _trim()
    after = _status()
    out["rss_before"], out["rss_after_build"] = before, after
    out["resident_anon_bytes_per_vector"] = round((after["RssAnon"] - before["RssAnon"]) / n, 1)
    out["resident_file_bytes_per_vector"] = round((after["RssFile"] - before["RssFile"]) / n, 1)
    faiss.omp_set_num_threads(1)
    rows = []
    for ef in EFS:
        search = search_at(ef)
        search(queries[:20])  # warm-up
        found, lat = _time_queries(search, queries)
        rows.append(
            {
                "ef": ef,
                "nprobe": nprobe_for(ef, nl),
                "recall_at_10": round(recall_at_k(found, truth[:, :K], K), 4),
                "p50_ms": round(float(np.percentile(lat, 50)), 3),
                "p95_ms": round(float(np.percentile(lat, 95)), 3),
            }
        )
    out["search"] = rows
    out["rss_after_search"] = _status()
    return out


def _md(res: dict[str, Any]) -> str:
    lines = [
        f"# IVF-PQ bench ({res['dataset']}{', --quick' if res['quick'] else ''})",
        "",
        f"Host: {res['host']}; load average before: {res['load_before']}. Single-thread search, k={K}.",
        "",
        "| variant | nlist | m | rerank width | build s | RssAnon B/vec | RssFile B/vec | accounted B/vec |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for v in res["variants"]:
        lines.append(
            f"| {v['variant']} | {v['nlist']} | {v['pq_m']} | {v['rerank_width']} | {v['build_seconds']} "
            f"| {v['resident_anon_bytes_per_vector']} | {v['resident_file_bytes_per_vector']} "
            f"| {v['memory_bytes_accounted_per_vector']} |"
        )
    lines += ["", "| variant | ef | nprobe | recall@10 | p50 ms | p95 ms |", "|---|---|---|---|---|---|"]
    for v in res["variants"]:
        for r in v["search"]:
            lines.append(
                f"| {v['variant']} | {r['ef']} | {r['nprobe']} | {r['recall_at_10']} | {r['p50_ms']} | {r['p95_ms']} |"
            )
    ours = res["variants"][0]
    if "retrain" in ours:
        lines += [
            "",
            f"Embeddix build: streamed adds {ours['stream_add_seconds']} s (first training at nlist "
            f"{ours['first_train_nlist']}: {ours['first_train_seconds']} s), then retrain to nlist "
            f"{ours['retrain']['nlist']}: {ours['retrain']['total_seconds']} s "
            f"(k-means + PQ training {ours['retrain']['train_seconds']} s).",
        ]
    lines += [
        "",
        "RssAnon: anonymous memory over the baseline after build and malloc_trim (index, codes, ids). "
        "RssFile: pages of base.npy the memmap brought in (re-rank reads; file-backed, reclaimable).",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--child", default=None)
    ap.add_argument("--nlist", type=int, default=None)
    ap.add_argument("--pq-m", type=int, default=None)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(_child(args.child, args.quick, args.nlist, args.pq_m)))
        return
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="2", MKL_NUM_THREADS="1")
    load = os.getloadavg()
    variants = []
    extra: list[str] = []
    for name in ("ivfpq_rerank", "faiss_ivfpq"):
        cmd = [sys.executable, "-m", "benchmarks.ivf_bench", "--child", name, *extra]
        if args.quick:
            cmd.append("--quick")
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
        res = json.loads(proc.stdout.strip().splitlines()[-1])
        variants.append(res)
        print(json.dumps(res, indent=1), flush=True)
        extra = ["--nlist", str(res["nlist"]), "--pq-m", str(res["pq_m"])]  # the peer at the same shape
    out = {
        "dataset": DATA.name,
        "quick": args.quick,
        "host": f"{platform.machine()}, {os.cpu_count()} cpus, python {platform.python_version()}",
        "load_before": [round(x, 2) for x in load],
        "variants": variants,
    }
    RESULTS.mkdir(exist_ok=True)
    stem = "ivf_bench_quick" if args.quick else "ivf_bench"
    (RESULTS / f"{stem}.json").write_text(json.dumps(out, indent=1))
    (RESULTS / f"{stem}.md").write_text(_md(out))
    print(_md(out))


if __name__ == "__main__":
    main()
