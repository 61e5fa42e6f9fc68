"""Core engine benchmark: Embeddix next to raw hnswlib at the same parameters, in one run.

For each data set (real-text MiniLM embeddings, synthetic clustered 768-d) it reports: build time, batch
insert rate, single durable insert p50/p95, query p50/p95/p99 and QPS (1 and 2 threads) at recall@10 >=
0.95, filtered query (10% match) latency and recall, RSS and disk bytes per vector, and re-open time.

Every system runs in its own child process so RSS figures are not mixed up. Run::

    python -m benchmarks.core_bench                      # both data sets (builds them on first use)
    python -m benchmarks.core_bench --datasets realtext --n 50000

Results go to benchmarks/results/core_bench.json and core_bench.md.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
EF_LADDER = [16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512]
M, EF_C = 16, 200


def _rss() -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def _dir_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def _load(name: str, n: int | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    from benchmarks import datasets

    ds = datasets.real_text() if name == "realtext" else datasets.synthetic()
    base = np.ascontiguousarray(ds.base if n is None else ds.base[:n], dtype=np.float32)
    queries = np.ascontiguousarray(ds.queries, dtype=np.float32)
    if n is None or n >= len(ds.base):
        gt = np.asarray(ds.gt)[:, :10]
    else:
        from embeddix_core.eval import exact_knn

        gt = exact_knn(base, queries, 10, "cosine").indices
    return base, queries, gt


def _lat(fn: Any, queries: np.ndarray) -> dict[str, float]:
    for q in queries[:50]:
        fn(q)
    ts = np.empty(len(queries))
    for i, q in enumerate(queries):
        t0 = time.perf_counter()
        fn(q)
        ts[i] = time.perf_counter() - t0
    ms = ts * 1e3
    return {
        "p50_ms": float(np.percentile(ms, 50)),
        "p95_ms": float(np.percentile(ms, 95)),
        "p99_ms": float(np.percentile(ms, 99)),
        "qps_1thread": float(len(queries) / ts.sum()),
    }


def _qps_threads(fn: Any, queries: np.ndarray, threads: int) -> float:
    chunks = np.array_split(queries, threads)
    t0 = time.perf_counter()
    ts = [threading.Thread(target=lambda c=c: [fn(q) for q in c]) for c in chunks]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    return float(len(queries) / (time.perf_counter() - t0))


def _recall(found: list[list[int]], gt: np.ndarray) -> float:
    from embeddix_core.eval import recall_at_k

    return float(recall_at_k(found, gt[:, :10], 10))


def _fsync_p50_ms(workdir: Path) -> float:
    """Median latency of fsync after a 4 KiB append on the benchmark's disk (the floor of a durable commit)."""
    import os

    path = workdir / "fsync.probe"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    ts = []
    try:
        for _ in range(100):
            os.write(fd, b"x" * 4096)
            t = time.perf_counter()
            os.fsync(fd)
            ts.append(time.perf_counter() - t)
    finally:
        os.close(fd)
        path.unlink()
    return float(np.percentile(ts, 50) * 1e3)


# Single inserts: a burst of 500 (what an agent's memory sees), then a sustained stream of 3,000 (long
# enough to fill Embeddix's write buffer to its limit, so its rate is the graph's absorption rate), then
# (Embeddix only) 500 more at durability "normal". Both systems end with the same EXTRA vectors added.
BURST, SUSTAINED, NORMAL = 500, 3000, 500
EXTRA = BURST + SUSTAINED + NORMAL
# Raw hnswlib only, after everything else: a batch of this many added on every core to the full graph.
CEILING = 3000


def _extra(dim: int, n: int = EXTRA, seed: int = 1) -> np.ndarray:
    """Unit vectors for the single-insert test (unit length: in "ip" space raw hnswlib would otherwise
    rank these long random vectors above every real neighbour)."""
    x = np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _insert_stats(out: dict[str, Any], key: str, ts: list[float]) -> None:
    out[f"{key}_p50_ms"] = float(np.percentile(ts, 50) * 1e3)
    out[f"{key}_p95_ms"] = float(np.percentile(ts, 95) * 1e3)
    out[f"{key}_p99_ms"] = float(np.percentile(ts, 99) * 1e3)
    out[f"{key}_max_ms"] = float(max(ts) * 1e3)
    out[f"{key}_per_s"] = float(len(ts) / sum(ts))


# Calibration runs in the background after writes pause; the benchmark pins ef itself, so it is off
# here to keep its CPU out of the timings. The index path is timed with cache=False (the result cache is
# measured by cache_bench); the default path (cache on, every query new) is reported next to it.
SETTINGS = {"auto_calibrate": False}


# -- children ----------------------------------------------------------------------------------------
def child_build(system: str, name: str, n: int | None, workdir: Path) -> dict[str, Any]:
    """Build the index, time inserts, and save it to ``workdir``."""
    base, _, _ = _load(name, n)
    n_base, dim = base.shape
    out: dict[str, Any] = {"n": n_base, "dim": dim}
    tags = np.arange(n_base) % 10
    if system == "raw":
        import hnswlib

        idx = hnswlib.Index("ip", dim)
        idx.init_index(n_base + EXTRA, M=M, ef_construction=EF_C)
        t0 = time.perf_counter()
        idx.add_items(base, np.arange(n_base), num_threads=-1)
        out["build_s"] = time.perf_counter() - t0
        out["batch_insert_per_s"] = n_base / out["build_s"]
        extra = _extra(dim)
        ts = []
        for i in range(EXTRA):
            t = time.perf_counter()
            idx.add_items(extra[i : i + 1], [n_base + i], num_threads=1)
            ts.append(time.perf_counter() - t)
        _insert_stats(out, "single_insert", ts[:BURST])
        _insert_stats(out, "single_insert_sustained", ts[BURST : BURST + SUSTAINED])
        idx.save_index(str(workdir / "raw.bin"))
        out["disk_bytes_per_vector"] = (workdir / "raw.bin").stat().st_size / (n_base + EXTRA)
        # The ceiling of any sustained stream into this graph: a batch add_items on every core at full
        # size, with no store behind it (the build's rate above averages over a graph from empty to
        # full, and inserting into a small graph is cheaper). After the save, so the index the query
        # child loads holds the same vectors as Embeddix's.
        more = _extra(dim, CEILING, seed=2)
        idx.resize_index(n_base + EXTRA + CEILING)
        t0 = time.perf_counter()
        idx.add_items(more, np.arange(n_base + EXTRA, n_base + EXTRA + CEILING), num_threads=-1)
        out["batch_insert_full_size_per_s"] = CEILING / (time.perf_counter() - t0)
        return out
    from embeddix_core import Embeddix, EmbeddixSettings

    db = Embeddix.open(workdir / "data", durability="full", settings=EmbeddixSettings(**SETTINGS))
    col = db.create_collection(
        "bench", dim=dim, metric="cosine", hnsw_m=M, ef_construction=EF_C, index_threshold=0
    )
    ids = [f"doc-{i}" for i in range(n_base)]
    metas = [{"tag": int(t)} for t in tags]
    t0 = time.perf_counter()
    step = 10_000
    for s in range(0, n_base, step):
        col.add(ids[s : s + step], base[s : s + step], metadatas=metas[s : s + step])
    out["build_s"] = time.perf_counter() - t0
    out["batch_insert_per_s"] = n_base / out["build_s"]
    extra = _extra(dim)
    # Single inserts at both durability levels: "full" (the default) fsyncs every commit and so
    # survives power loss; its rate is bound by this disk's fsync latency (measured alongside).
    # "normal" survives kill -9 (the project's durability standard): the commit reaches the OS
    # before the call returns.
    out["fsync_p50_ms"] = _fsync_p50_ms(workdir)
    ts = []
    for i in range(BURST + SUSTAINED):
        t = time.perf_counter()
        col.add(f"extra-{i}", extra[i], metadatas={"tag": 99})
        ts.append(time.perf_counter() - t)
    _insert_stats(out, "single_insert", ts[:BURST])
    _insert_stats(out, "single_insert_sustained", ts[BURST:])
    db.close()
    db = Embeddix.open(workdir / "data", durability="normal", settings=EmbeddixSettings(**SETTINGS))
    col = db.get_collection("bench")
    ts = []
    for i in range(BURST + SUSTAINED, EXTRA):
        t = time.perf_counter()
        col.add(f"extra-{i}", extra[i], metadatas={"tag": 99})
        ts.append(time.perf_counter() - t)
    _insert_stats(out, "single_insert_normal", ts)
    t0 = time.perf_counter()
    db.close()  # writes the snapshot
    out["close_snapshot_s"] = time.perf_counter() - t0
    out["disk_bytes_per_vector"] = _dir_bytes(workdir / "data") / (n_base + EXTRA)
    return out


def child_query(system: str, name: str, n: int | None, workdir: Path, ef: int | None) -> dict[str, Any]:
    """Re-open the saved index in a fresh process; measure RSS, re-open time, recall and latency."""
    base, queries, gt = _load(name, n)
    n_base, dim = base.shape
    tags = np.arange(n_base) % 10
    sub = np.flatnonzero(tags == 3)
    del base
    import gc

    gc.collect()
    out: dict[str, Any] = {}
    if system == "raw":
        import hnswlib

        rss0 = _rss()
        t0 = time.perf_counter()
        idx = hnswlib.Index("ip", dim)
        idx.load_index(str(workdir / "raw.bin"))
        idx.set_num_threads(1)
        out["reopen_s"] = time.perf_counter() - t0
        out["rss_bytes_per_vector"] = (_rss() - rss0) / (n_base + EXTRA)
        sub_set = set(sub.tolist())

        def search_ef(e: int) -> Any:
            idx.set_ef(e)
            return lambda q: idx.knn_query(q, k=10, num_threads=1)[0][0]

        def search_filtered(q: np.ndarray) -> Any:
            return idx.knn_query(q, k=10, num_threads=1, filter=sub_set.__contains__)[0][0]
    else:
        from embeddix_core import Embeddix

        rss0 = _rss()
        t0 = time.perf_counter()
        from embeddix_core import EmbeddixSettings

        db = Embeddix.open(workdir / "data", settings=EmbeddixSettings(**SETTINGS))
        col = db.get_collection("bench")
        col.search(queries[0], k=10)
        out["reopen_s"] = time.perf_counter() - t0
        out["rss_bytes_per_vector"] = (_rss() - rss0) / (n_base + EXTRA)
        out["index"] = col.index_kind
        ids_to_int = lambda hits: [int(h.id[4:]) for h in hits if h.id.startswith("doc-")]  # noqa: E731

        def search_ef(e: int) -> Any:
            return lambda q: ids_to_int(col.search(q, k=10, ef=e, cache=False))

        def search_filtered(q: np.ndarray) -> Any:
            return ids_to_int(col.search(q, k=10, ef=chosen, filter={"tag": 3}, cache=False))

    # recall curve, then the smallest ef reaching recall 0.95 (or the one the parent fixed)
    curve = {}
    chosen = ef
    for e in EF_LADDER if ef is None else [ef]:
        fn = search_ef(e)
        found = [list(map(int, fn(q))) for q in queries]
        curve[e] = _recall(found, gt)
        if chosen is None and curve[e] >= 0.95:
            chosen = e
            break
    chosen = chosen or EF_LADDER[-1]
    out["ef"] = chosen
    out["recall_at_10"] = curve[chosen]
    fn = search_ef(chosen)
    out.update(_lat(fn, queries))
    out["qps_2threads"] = _qps_threads(fn, np.concatenate([queries, queries]), 2)
    if system != "raw":
        # the default path: the result cache on, every query new (all misses but the 50 warm-up ones)
        cached = _lat(lambda q: col.search(q, k=10, ef=chosen), queries)
        out["default_path_p50_ms"], out["default_path_p95_ms"] = cached["p50_ms"], cached["p95_ms"]
    # filtered (10% match)
    fgt = sub[_exact_sub(workdir, name, n, sub, queries)]
    found = [list(map(int, search_filtered(q))) for q in queries]
    out["filtered_recall_at_10"] = _recall(found, fgt)
    flat = _lat(search_filtered, queries[:300])
    out["filtered_p50_ms"], out["filtered_p95_ms"] = flat["p50_ms"], flat["p95_ms"]
    # memory once caches are warm (the row cache, SQLite's page cache, filter match sets)
    out["rss_after_queries_bytes_per_vector"] = (_rss() - rss0) / (n_base + EXTRA)
    if system != "raw":
        # the first filtered query pays for evaluating the filter; later ones reuse the match set
        db.close()
    return out


def _exact_sub(workdir: Path, name: str, n: int | None, sub: np.ndarray, queries: np.ndarray) -> np.ndarray:
    cache = workdir / "filtered_gt.npy"
    if cache.exists():
        return np.load(cache)
    from embeddix_core.eval import exact_knn

    base, _, _ = _load(name, n)
    idx = exact_knn(np.ascontiguousarray(base[sub]), queries, 10, "cosine").indices
    np.save(cache, idx)
    return idx


# -- parent ------------------------------------------------------------------------------------------
def _child(args: list[str]) -> dict[str, Any]:
    res = subprocess.run(
        [sys.executable, "-m", "benchmarks.core_bench", *args], cwd=ROOT, capture_output=True, text=True
    )
    if res.returncode != 0:
        raise RuntimeError(f"child {args} failed:\n{res.stderr[-4000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def run(datasets: list[str], n: int | None) -> dict[str, Any]:
    report: dict[str, Any] = {
        "machine": {"cores": os.cpu_count()},
        "params": {"M": M, "ef_construction": EF_C},
        "datasets": {},
    }
    for name in datasets:
        work = Path(tempfile.mkdtemp(prefix=f"embeddix-bench-{name}-"))
        try:
            entry: dict[str, Any] = {}
            for system in ("raw", "embeddix"):
                print(f"[{name}] building {system} ...", flush=True)
                entry[system] = _child(
                    [
                        "--child",
                        "build",
                        "--system",
                        system,
                        "--dataset",
                        name,
                        "--workdir",
                        str(work),
                        *(["--n", str(n)] if n else []),
                    ]
                )
            print(f"[{name}] querying raw ...", flush=True)
            entry["raw"].update(
                _child(
                    [
                        "--child",
                        "query",
                        "--system",
                        "raw",
                        "--dataset",
                        name,
                        "--workdir",
                        str(work),
                        *(["--n", str(n)] if n else []),
                    ]
                )
            )
            ef = entry["raw"]["ef"]
            print(f"[{name}] querying embeddix at ef={ef} ...", flush=True)
            entry["embeddix"].update(
                _child(
                    [
                        "--child",
                        "query",
                        "--system",
                        "embeddix",
                        "--dataset",
                        name,
                        "--workdir",
                        str(work),
                        "--ef",
                        str(ef),
                        *(["--n", str(n)] if n else []),
                    ]
                )
            )
            r, e = entry["raw"], entry["embeddix"]
            entry["ratios"] = {
                "query_p50": e["p50_ms"] / r["p50_ms"],
                "query_p95": e["p95_ms"] / r["p95_ms"],
                "rss_per_vector": e["rss_bytes_per_vector"] / r["rss_bytes_per_vector"],
                "batch_insert_rate": e["batch_insert_per_s"] / r["batch_insert_per_s"],
                # durable single inserts against what the bare graph absorbs on every core at full size
                "sustained_vs_raw_full_size_batch": e["single_insert_sustained_per_s"]
                / r["batch_insert_full_size_per_s"],
            }
            report["datasets"][name] = entry
        finally:
            shutil.rmtree(work, ignore_errors=True)
    return report


def write_report(report: dict[str, Any]) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "core_bench.json").write_text(json.dumps(report, indent=2))
    lines = ["# Core benchmark: Embeddix vs raw hnswlib (same M, ef_construction, ef)", ""]
    keys = [
        ("n", "vectors"),
        ("dim", "dim"),
        ("build_s", "build s"),
        ("batch_insert_per_s", "batch insert /s"),
        ("single_insert_p50_ms", f"single insert p50 ms (first {BURST}, durability full)"),
        ("single_insert_p95_ms", f"single insert p95 ms (first {BURST}, durability full)"),
        ("single_insert_p99_ms", f"single insert p99 ms (first {BURST}, durability full)"),
        ("single_insert_max_ms", f"single insert max ms (first {BURST}, durability full)"),
        ("single_insert_per_s", f"single inserts /s (first {BURST}, durability full)"),
        ("single_insert_sustained_p50_ms", f"single insert p50 ms (next {SUSTAINED}, full)"),
        ("single_insert_sustained_p95_ms", f"single insert p95 ms (next {SUSTAINED}, full)"),
        ("single_insert_sustained_p99_ms", f"single insert p99 ms (next {SUSTAINED}, full)"),
        ("single_insert_sustained_max_ms", f"single insert max ms (next {SUSTAINED}, full)"),
        ("single_insert_sustained_per_s", f"single inserts /s (next {SUSTAINED}, full)"),
        (
            "batch_insert_full_size_per_s",
            f"batch insert /s into the full graph ({CEILING}, all cores, no store)",
        ),
        ("single_insert_normal_p50_ms", f"single insert p50 ms ({NORMAL}, durability normal)"),
        ("single_insert_normal_p95_ms", f"single insert p95 ms ({NORMAL}, durability normal)"),
        ("single_insert_normal_per_s", f"single inserts /s ({NORMAL}, durability normal)"),
        ("fsync_p50_ms", "disk fsync p50 ms"),
        ("ef", "ef"),
        ("recall_at_10", "recall@10"),
        ("p50_ms", "query p50 ms"),
        ("p95_ms", "query p95 ms"),
        ("p99_ms", "query p99 ms"),
        ("qps_1thread", "QPS 1 thread"),
        ("qps_2threads", "QPS 2 threads"),
        ("filtered_recall_at_10", "filtered (10%) recall@10"),
        ("filtered_p50_ms", "filtered p50 ms"),
        ("filtered_p95_ms", "filtered p95 ms"),
        ("default_path_p50_ms", "default path (cache on, new queries) p50 ms"),
        ("default_path_p95_ms", "default path (cache on, new queries) p95 ms"),
        ("rss_bytes_per_vector", "RSS bytes/vector"),
        ("rss_after_queries_bytes_per_vector", "RSS bytes/vector after the query runs"),
        ("disk_bytes_per_vector", "disk bytes/vector"),
        ("reopen_s", "re-open s"),
    ]
    for name, entry in report["datasets"].items():
        lines += [f"## {name}", "", "| metric | raw hnswlib | embeddix |", "|---|---|---|"]
        for key, label in keys:
            r, e = entry["raw"].get(key, ""), entry["embeddix"].get(key, "")
            fmt = lambda v: f"{v:.4g}" if isinstance(v, float) else str(v)  # noqa: E731
            lines.append(f"| {label} | {fmt(r)} | {fmt(e)} |")
        lines += [
            "",
            "Ratios (embeddix / raw): " + ", ".join(f"{k} {v:.2f}" for k, v in entry["ratios"].items()),
            "",
        ]
    (RESULTS / "core_bench.md").write_text("\n".join(lines))
    print("\n".join(lines))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--datasets", nargs="+", default=["realtext", "synth768"], choices=["realtext", "synth768"]
    )
    p.add_argument("--n", type=int, default=None, help="use only the first n base vectors")
    p.add_argument("--child", choices=["build", "query"])
    p.add_argument("--system", choices=["raw", "embeddix"])
    p.add_argument("--dataset", choices=["realtext", "synth768"])
    p.add_argument("--workdir", type=Path)
    p.add_argument("--ef", type=int)
    a = p.parse_args()
    if a.child == "build":
        print(json.dumps(child_build(a.system, a.dataset, a.n, a.workdir)))
    elif a.child == "query":
        print(json.dumps(child_query(a.system, a.dataset, a.n, a.workdir, a.ef)))
    else:
        write_report(run(a.datasets, a.n))


if __name__ == "__main__":
    main()
