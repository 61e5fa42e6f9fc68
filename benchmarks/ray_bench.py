"""The sharded store on Ray against the single-node engine: scatter-gather overhead and batch throughput.

Set-up: ``--n`` vectors (the cached ``realtext-100000`` MiniLM set when built, see README.md; else clustered
Gaussian vectors, 384-d) go into the same collection on:

* ``engine``: one :class:`~embeddix_core.Embeddix` in this process (the reference);
* ``ray-1``: :class:`~embeddix_ray.RayEmbeddix` with 1 shard actor (the default placement: a collection
  lives whole on one shard, so every call is one actor round trip, no fan-out);
* ``ray-2``, ``ray-4``: the collection split by id hash over 2 and 4 shard actors (every search is
  scatter-gather with the exact top-k merge);
* ``raw-2``: a plain two-actor Ray scatter-gather whose actors return a constant (Ray's own floor).

Measured per configuration: one query at a time (``--queries`` held-out queries, k=10, after a warm-up):
p50 / p95 / mean latency (result cache off) and the overhead over ``engine``; and ``search_batch`` throughput over
``--batch`` queries (queries per second); recall@10 against the exact (brute-force) top 10, and how many
queries got the engine's very top-10 ids (``same_ids``; HNSW graphs built apart differ slightly).
Then the shard actor holding the collection's first part is killed (SIGKILL): the seconds until a search
answers again (Ray restarts the actor, which reopens its directory) and how many of the queries get the
same top 10 as just before it (and, as a control, how many answers changed between the first pass after
the load and that pass, with no kill: the shards' background work settles plans in the first seconds).

Ray runs on a local runtime inside a network namespace with only loopback (the script re-executes itself
under ``unshare -n`` as the tests do; ``--no-netns`` runs it as is). Never expose a Ray cluster's ports.

Run::

    python -m benchmarks.ray_bench                      # 20,000 vectors, 300 queries, batch of 2,000
    python -m benchmarks.ray_bench --n 5000 --queries 100

Results go to benchmarks/results/ray_bench.json (and a markdown table on stdout).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "results" / "ray_bench.json"
NETNS = "EMBEDDIX_RAY_NETNS"


def _data(n: int, queries: int) -> tuple[np.ndarray, np.ndarray, str]:
    try:
        from benchmarks import datasets

        ds = datasets.real_text()
        return (
            np.asarray(ds.base[:n], np.float32),
            np.asarray(ds.queries[:queries], np.float32),
            "realtext-100000",
        )
    except Exception:
        rng = np.random.default_rng(0)
        centers = rng.standard_normal((50, 384)).astype(np.float32)
        x = centers[rng.integers(0, 50, n + queries)] + 0.4 * rng.standard_normal((n + queries, 384))
        x = x.astype(np.float32)
        return x[:n], x[n:], "clustered-384"


def _times(fn: Any, qs: np.ndarray, warm: int = 30) -> list[float]:
    """Milliseconds of each call (searches pass cache=False: every query is searched, none served)."""
    for q in qs[:warm]:
        fn(q)
    out = []
    for q in qs:
        t0 = time.perf_counter()
        fn(q)
        out.append((time.perf_counter() - t0) * 1000.0)
    return out


def _summary(ms: list[float]) -> dict[str, float]:
    s = sorted(ms)
    return {
        "p50_ms": round(statistics.median(s), 3),
        "p95_ms": round(s[int(0.95 * (len(s) - 1))], 3),
        "mean_ms": round(statistics.fmean(s), 3),
    }


def _batch_qps(search_batch: Any, qs: np.ndarray, rounds: int = 3) -> float:
    search_batch(qs[:50])
    best = float("inf")
    for _ in range(rounds):
        t0 = time.perf_counter()
        search_batch(qs)
        best = min(best, time.perf_counter() - t0)
    return round(len(qs) / best, 1)


def run(args: argparse.Namespace) -> dict[str, Any]:
    import ray
    from embeddix_ray import RayEmbeddix

    from embeddix_core import Embeddix

    base, queries, source = _data(args.n, args.queries)
    batch = np.resize(queries, (args.batch, queries.shape[1]))
    ids = [f"v{i}" for i in range(len(base))]
    work = Path(tempfile.mkdtemp(prefix="ray-bench-"))
    results: dict[str, Any] = {}
    truth: list[list[str]] = []
    # exact ground truth (cosine): recall@10 of every configuration, the engine's included
    unit = base / np.linalg.norm(base, axis=1, keepdims=True)
    qunit = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    exact = [{ids[i] for i in np.argsort(-(unit @ q))[:10]} for q in qunit]

    def recall(found: list[list[str]]) -> float:
        return round(sum(len(exact[i] & set(f)) for i, f in enumerate(found)) / (10 * len(found)), 4)

    try:
        with Embeddix.open(work / "engine") as db:
            col = db.create_collection("bench", base.shape[1])
            for s in range(0, len(base), 5000):
                col.add(ids[s : s + 5000], base[s : s + 5000])
            col.search(queries[0], 10)  # index ready
            results["engine"] = {
                **_summary(_times(lambda q: col.search(q, 10, cache=False), queries)),
                "batch_qps": _batch_qps(lambda qs: col.search_batch(qs, 10), batch),
            }
            truth = [[h.id for h in col.search(q, 10)] for q in queries]
            results["engine"]["index"] = col.index_kind
            results["engine"]["recall@10"] = recall(truth)
        ray.init(
            _node_ip_address="127.0.0.1",
            include_dashboard=False,
            log_to_driver=False,
            configure_logging=False,
        )

        class Noop:
            def search(self, q: Any) -> list[int]:
                return list(range(10))

        noop: Any = ray.remote(num_cpus=0)(Noop)
        actors = [noop.remote() for _ in range(2)]
        ray.get([a.search.remote(None) for a in actors])
        results["raw-2"] = _summary(_times(lambda q: ray.get([a.search.remote(q) for a in actors]), queries))
        for name, shards in (("ray-1", 1), ("ray-2", 2), ("ray-4", 4)):
            t0 = time.perf_counter()
            rdb = RayEmbeddix.open(work / name, shards=shards)
            rcol = rdb.create_collection("bench", base.shape[1])
            if shards > 1:
                rdb.split("bench", shards)
            for s in range(0, len(base), 5000):
                rcol.add(ids[s : s + 5000], base[s : s + 5000])
            rcol.search(queries[0], 10)
            load_s = time.perf_counter() - t0
            found = [[h.id for h in rcol.search(q, 10)] for q in queries]
            same = sum(f == t for f, t in zip(found, truth, strict=True))
            res = {
                **_summary(_times(lambda q, c=rcol: c.search(q, 10, cache=False), queries)),
                "batch_qps": _batch_qps(lambda qs, c=rcol: c.search_batch(qs, 10), batch),
                "shards": shards,
                "parts": len(rcol.parts),
                "index": rcol.index_kind,
                "same_ids": f"{same}/{len(queries)}",
                "recall@10": recall(found),
                "load_s": round(load_s, 1),
            }
            res["overhead_p50_ms"] = round(res["p50_ms"] - results["engine"]["p50_ms"], 3)
            # SIGKILL of the shard actor holding the (first) part: how long until a search answers again
            # (Ray restarts the actor, which reopens its directory), and whether it answers the same as
            # just before the kill. Answers taken right after the load are no reference: the shards'
            # background work (graph flush, calibration) changes the plans in the first seconds, kill or
            # not, so two passes before the kill are compared too (``stable_before_kill``).
            before = [[h.id for h in rcol.search(q, 10, cache=False)] for q in queries]
            res["stable_before_kill"] = (
                f"{sum(a == f for a, f in zip(before, found, strict=True))}/{len(queries)}"
            )
            os.kill(rdb.shard_pids()[rcol.parts[0]], signal.SIGKILL)
            t1 = time.perf_counter()
            rcol.search(queries[0], 10, cache=False)
            res["sigkill_answers_again_s"] = round(time.perf_counter() - t1, 2)
            after = [[h.id for h in rcol.search(q, 10, cache=False)] for q in queries]
            res["sigkill_same_answers"] = (
                f"{sum(a == b for a, b in zip(after, before, strict=True))}/{len(queries)}"
            )
            res["sigkill_count_after"] = len(rcol)
            results[name] = res
            rdb.shutdown()
            print(f"{name}: {res}", file=sys.stderr, flush=True)
    finally:
        if ray.is_initialized():
            ray.shutdown()
        shutil.rmtree(work, ignore_errors=True)
    return {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "ray": ray.__version__},
        "load_before": os.getloadavg()[0] if args.load is None else args.load,
        "data": {
            "source": source,
            "n": len(base),
            "dim": int(base.shape[1]),
            "queries": len(queries),
            "batch": len(batch),
        },
        "results": results,
    }


def table(doc: dict[str, Any]) -> str:
    head = (
        "| config | index | p50 ms | p95 ms | overhead p50 ms | batch q/s | recall@10 | top-10 as engine "
        "| SIGKILL: answers again s | same answers after (as just before) | two passes alike, no kill |"
    )
    rows = [head, "|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, r in doc["results"].items():
        cells = [
            r.get(key, "")
            for key in (
                "index",
                "p50_ms",
                "p95_ms",
                "overhead_p50_ms",
                "batch_qps",
                "recall@10",
                "same_ids",
                "sigkill_answers_again_s",
                "sigkill_same_answers",
                "stable_before_kill",
            )
        ]
        rows.append(f"| {name} | " + " | ".join(str(c) for c in cells) + " |")
    return "\n".join(rows)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=20_000)
    p.add_argument("--queries", type=int, default=300)
    p.add_argument("--batch", type=int, default=2_000)
    p.add_argument("--no-netns", action="store_true", help="run here, not in a loopback-only namespace")
    p.add_argument("--load", type=float, default=None, help=argparse.SUPPRESS)  # the outer run's load
    args = p.parse_args()
    if not args.no_netns and not os.environ.get(NETNS):
        load = os.getloadavg()[0]
        inner = " ".join([sys.executable, "-m", "benchmarks.ray_bench", *sys.argv[1:], "--load", str(load)])
        env = {**os.environ, NETNS: "1"}
        sys.exit(
            subprocess.call(
                ["unshare", "-n", "sh", "-c", f"ip link set lo up && exec {inner}"], cwd=ROOT, env=env
            )
        )
    doc = run(args)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(doc, indent=1) + "\n")
    print(table(doc))
    print(f"\nload average before: {doc['load_before']:.2f}; written to {OUT.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
