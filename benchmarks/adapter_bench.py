"""Adapter overhead: LangChain and LlamaIndex searches next to the core search, on one collection.

One in-memory collection of ``--n`` records (384-d; real MiniLM embeddings from the cached
``realtext-100000`` data set when it is complete, else seeded clustered random vectors) is written through
the LlamaIndex adapter, so every record has the node layout LlamaIndex reads: the adapter's layout 2 (the
node's fields in the record; see ``llama_index/vector_stores/embeddix/_nodes.py``), or with ``--layout 1``
LlamaIndex's own layout (``_node_content`` JSON in the metadata), which the adapter wrote before layout 2
and still reads. Then each of three paths searches every one of ``--queries`` precomputed query vectors
once. The three paths take turns call by call (which goes first rotates, so drift on a shared machine
hits all three alike), and the three calls of one turn search three different queries: one query run
through the paths back to back would find its graph nodes still in the CPU caches on the second and third
calls (~40 % faster), which a user's new query never does:

* ``core``: ``Collection.search(vector, k)`` with a float32 array;
* ``langchain``: ``EmbeddixVectorStore.similarity_search_by_vector(list_of_floats, k)``, returning
  ``Document`` objects;
* ``llamaindex``: ``EmbeddixVectorStore.query(VectorStoreQuery(query_embedding=list_of_floats, ...))``,
  returning the stored nodes.

Each path starts from what its user holds: a core user's embedder returns float32 arrays, while LangChain
and LlamaIndex embedding models return lists of floats, so the adapters get lists and their numbers include
turning the list into an array (the core's list path). All three search the same records, so the core's
time includes parsing the same record metadata (node layout included) for its hits. Reported: p50/p95/mean
per path, the overhead ratio ``adapter / core - 1`` at p50 and p95 (target: at most 10 %), and whether each
adapter returned exactly the core's ids; and what the frameworks' own objects cost per query without any
search: a list of floats to an array and k ``Document`` objects (``model_construct``), which no adapter can
avoid, and for reference k ``TextNode`` objects from LlamaIndex's validating constructor and k nodes from
LlamaIndex's own loader reading layout-1 JSON (``TextNode.model_construct`` is no floor: it inspects
default factories, ~0.2 ms a node). Objects made during set-up are frozen out of the garbage collector
first (``gc.freeze``), so a collection pass over them is not charged to whichever call triggers it, and the
core's result cache and auto-calibration are off, so every call really searches with a fixed plan.
``--ef`` times several beam widths (the recall-targeted plans of the core pick wider beams than the
default). Run::

    python -m benchmarks.adapter_bench                 # 50,000 x 384, 1,000 queries, k=10
    python -m benchmarks.adapter_bench --ef 96 1024    # the default beam and a wide one
    python -m benchmarks.adapter_bench --layout 1      # records as written before layout 2

Results go to benchmarks/results/adapter_bench.json.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT / "integrations") not in sys.path:  # the adapters' source root, when not pip-installed
    sys.path.insert(0, str(ROOT / "integrations"))

from langchain_core.documents import Document  # noqa: E402
from langchain_core.embeddings import Embeddings  # noqa: E402
from llama_index.core.schema import TextNode  # noqa: E402
from llama_index.core.vector_stores.types import VectorStoreQuery  # noqa: E402
from llama_index.core.vector_stores.utils import metadata_dict_to_node, node_to_metadata_dict  # noqa: E402
from llama_index.vector_stores.embeddix import EmbeddixVectorStore as LlamaIndexStore  # noqa: E402
from llama_index.vector_stores.embeddix._nodes import FIELDS_KEY, LAYOUT_KEY, _layout_json  # noqa: E402

from benchmarks.datasets import DATA_DIR, load, metadata_for  # noqa: E402
from embeddix_core import Embeddix, EmbeddixSettings, __version__  # noqa: E402
from langchain_embeddix import EmbeddixVectorStore as LangChainStore  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
TARGET_OVERHEAD = 0.10
PATHS = ("core", "langchain", "llamaindex")
_LAYOUTS = {
    1: "layout 1: LlamaIndex's own (node JSON in _node_content), text as document",
    2: "layout 2: the node's metadata as record metadata, other fields in _node_fields when not the "
    "layout's fixed values (none here), text as document",
}


class _QueryVectorsOnly(Embeddings):
    """The LangChain store needs an embeddings object; this benchmark only searches by vector."""

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        raise RuntimeError("adapter_bench searches by vector only")

    def embed_query(self, text: str) -> list[float]:
        raise RuntimeError("adapter_bench searches by vector only")


def _data(n: int, n_queries: int, dim: int, seed: int) -> tuple[np.ndarray, np.ndarray, list[str], str]:
    """Base vectors, query vectors, texts, and the data set's name."""
    cached = DATA_DIR / "realtext-100000"
    if (cached / "meta.json").exists():
        try:
            ds = load(cached)  # never builds: a missing or partial cache raises instead
        except FileNotFoundError:
            ds = None
        if ds is not None and ds.n_base >= n and ds.n_queries >= n_queries:
            texts = ds.base_texts[:n] if ds.base_texts else [f"record {i}" for i in range(n)]
            base = np.ascontiguousarray(ds.base[:n], dtype=np.float32)
            return base, np.ascontiguousarray(ds.queries[:n_queries], dtype=np.float32), texts, ds.name
    rng = np.random.default_rng(seed)
    n_clusters = max(8, n // 200)
    centers = rng.standard_normal((n_clusters, dim)).astype(np.float32)
    spread = rng.uniform(0.3, 0.8, size=n_clusters).astype(np.float32)

    def draw(count: int) -> np.ndarray:
        which = rng.integers(0, n_clusters, size=count)
        pts = centers[which] + spread[which, None] * rng.standard_normal((count, dim)).astype(np.float32)
        return np.ascontiguousarray(pts / np.linalg.norm(pts, axis=1, keepdims=True), dtype=np.float32)

    base, queries = draw(n), draw(n_queries)
    return (
        base,
        queries,
        [f"synthetic record {i} in a clustered data set" for i in range(n)],
        "clustered-random",
    )


def _build(base: np.ndarray, texts: list[str], layout: int = 2, batch: int = 2000) -> LlamaIndexStore:
    # The core's result cache stays off: the three paths run the same query back to back, and a cache
    # would answer the second and third from memory (EmbeddixSettings ignores names it does not know).
    # Auto-calibration stays off too, so the plan does not change (and no thread competes) mid-run.
    db = Embeddix.open(None, settings=EmbeddixSettings(cache_enabled=False, auto_calibrate=False))
    col = db.create_collection("bench", dim=base.shape[1])
    store = LlamaIndexStore(collection=col)
    for start in range(0, len(base), batch):
        stop = min(start + batch, len(base))
        nodes = [
            TextNode(id_=f"r{i}", text=texts[i], metadata=metadata_for(i), embedding=base[i].tolist())
            for i in range(start, stop)
        ]
        if layout == 2:
            store.add(nodes)
        else:  # what the adapter wrote before layout 2: LlamaIndex's own node_to_metadata_dict
            col.upsert(
                [n.node_id for n in nodes],
                base[start:stop],
                [n.text for n in nodes],
                [node_to_metadata_dict(n, remove_text=True) for n in nodes],
            )
    return store


def _stats(ns: list[int]) -> dict[str, float]:
    ms = np.asarray(ns, dtype=np.float64) / 1e6
    return {
        "p50_ms": round(float(np.percentile(ms, 50)), 4),
        "p95_ms": round(float(np.percentile(ms, 95)), 4),
        "mean_ms": round(float(ms.mean()), 4),
    }


def _conversion_floor(
    col: Any, queries: np.ndarray, as_lists: list[list[float]], k: int, sample: int = 200
) -> dict[str, dict[str, float]]:
    """What the frameworks' own objects cost per query, without any search: a list of floats to an array,
    k ``Document`` objects made without validation, k ``TextNode`` objects from LlamaIndex's (validating)
    constructor, and k nodes from LlamaIndex's own loader (what the adapter's node building replaces)."""
    hits = [col.search(queries[i], k) for i in range(min(sample, len(queries)))]
    # The loader reads layout 1 only: give it each node's layout-1 JSON, made outside the timing.
    stored = [
        [
            {
                "_node_content": _layout_json(h.id, h.metadata, h.metadata.get(FIELDS_KEY)),
                "_node_type": "TextNode",
            }
            if LAYOUT_KEY in h.metadata
            else h.metadata
            for h in hs
        ]
        for hs in hits
    ]
    clock = time.perf_counter_ns
    out: dict[str, list[int]] = {"list_to_array": [], "k_documents": [], "k_nodes": [], "k_nodes_loader": []}
    for i, hs in enumerate(hits):
        start = clock()
        np.asarray(as_lists[i], dtype=np.float32)
        out["list_to_array"].append(clock() - start)
        start = clock()
        [Document.model_construct(id=h.id, page_content=h.document or "", metadata=h.metadata) for h in hs]
        out["k_documents"].append(clock() - start)
        start = clock()
        [TextNode(id_=h.id, text=h.document or "", metadata=h.metadata) for h in hs]
        out["k_nodes"].append(clock() - start)
        start = clock()
        [metadata_dict_to_node(md, text=h.document or "") for md, h in zip(stored[i], hs, strict=True)]
        out["k_nodes_loader"].append(clock() - start)
    return {name: _stats(ns) for name, ns in out.items()}


def _time_paths(
    col: Any,
    lc_store: LangChainStore,
    li_store: LlamaIndexStore,
    queries: np.ndarray,
    as_lists: list[list[float]],
    k: int,
    ef: int | None,
    warmup: int,
) -> dict[str, Any]:
    """Time the three paths at one beam width (None: the collection's plan) on every query."""
    knobs: dict[str, Any] = {} if ef is None else {"ef": ef}

    def core(i: int) -> list[str]:
        return [h.id for h in col.search(queries[i], k, **knobs)]

    def langchain(i: int) -> list[str]:
        return [d.id or "" for d in lc_store.similarity_search_by_vector(as_lists[i], k, **knobs)]

    def llamaindex(i: int) -> list[str]:
        query = VectorStoreQuery(query_embedding=as_lists[i], similarity_top_k=k)
        return list(li_store.query(query, **knobs).ids or [])

    calls = {"core": core, "langchain": langchain, "llamaindex": llamaindex}
    for i in range(min(warmup, len(queries))):
        for fn in calls.values():
            fn(i)
    n = len(queries)
    times: dict[str, list[int]] = {p: [0] * n for p in PATHS}  # by query
    got: dict[str, list[list[str]]] = {p: [[] for _ in range(n)] for p in PATHS}
    # Path p runs query (i + p * stride) at step i: each path runs every query once, and the three calls
    # of a step search three different queries. Running one query through the three paths back to back
    # would leave the graph nodes it visits in the CPU caches (~2 MB a query; 32 MB of L3 here), so the
    # second and third calls ran ~40 % faster than the first and the p50 landed between the two modes.
    # A user's query is new to the index, so every call here is too.
    stride = max(1, n // len(PATHS))
    clock = time.perf_counter_ns
    for i in range(n):
        for j in range(len(PATHS)):
            p = (i + j) % len(PATHS)  # which path goes first rotates, so drift hits all three alike
            path, q = PATHS[p], (i + p * stride) % n
            start = clock()
            got[path][q] = calls[path](q)
            times[path][q] = clock() - start
    same = {path: sum(a == b for a, b in zip(got[path], got["core"], strict=True)) for path in PATHS[1:]}
    stats = {p: _stats(times[p]) for p in PATHS}
    overhead = {
        p: {
            "p50": round(stats[p]["p50_ms"] / stats["core"]["p50_ms"] - 1.0, 4),
            "p95": round(stats[p]["p95_ms"] / stats["core"]["p95_ms"] - 1.0, 4),
        }
        for p in ("langchain", "llamaindex")
    }
    # The same query's time through an adapter minus through the core: what the adapter adds, per query.
    core_ns = np.asarray(times["core"], dtype=np.float64)
    extra = {
        p: round(float(np.median(np.asarray(times[p], dtype=np.float64) - core_ns)) / 1e6, 4)
        for p in ("langchain", "llamaindex")
    }
    return {
        "ef": ef if ef is not None else col.config.ef_search,
        "latency": stats,
        "overhead_vs_core": overhead,
        "median_extra_ms_per_query": extra,
        "meets_target": {p: overhead[p]["p50"] <= TARGET_OVERHEAD for p in overhead},
        "same_ids_as_core": {p: round(same[p] / len(queries), 4) for p in same},
    }


def run(
    n: int,
    n_queries: int,
    k: int,
    dim: int,
    seed: int,
    warmup: int,
    efs: list[int | None],
    layout: int = 2,
) -> dict[str, Any]:
    """Build the collection, time the three paths at each beam width, and return the results."""
    t0 = time.perf_counter()
    base, queries, texts, name = _data(n, n_queries, dim, seed)
    t_data = time.perf_counter() - t0
    print(f"data: {name}, base {base.shape}, queries {queries.shape} ({t_data:.1f} s)", flush=True)
    t0 = time.perf_counter()
    li_store = _build(base, texts, layout)
    t_build = time.perf_counter() - t0
    col = li_store.client
    if col is None:
        raise RuntimeError("the LlamaIndex store created no collection")
    print(f"built {col!r} with a {col.index_kind} index in {t_build:.1f} s", flush=True)
    lc_store = LangChainStore(embedding=_QueryVectorsOnly(), collection=col)
    as_lists = [q.tolist() for q in queries]
    # The query lists alone are ~400,000 float objects; without freezing, a full collection triggered by
    # whichever call allocates most would scan them all and charge that call milliseconds of set-up garbage.
    gc.collect()
    gc.freeze()
    runs = []
    for ef in efs:
        result = _time_paths(col, lc_store, li_store, queries, as_lists, k, ef, warmup)
        _print_run(result)
        runs.append(result)
    floor = _conversion_floor(col, queries, as_lists, k)
    return {
        "benchmark": "adapter_bench",
        "dataset": name,
        "n": int(base.shape[0]),
        "dim": int(base.shape[1]),
        "queries": len(queries),
        "k": k,
        "warmup": warmup,
        "index": col.index_kind,
        "ef_search": col.config.ef_search,
        "record_layout": _LAYOUTS[layout],
        "query_vectors": "core: float32 arrays; adapters: lists of floats (what each user holds)",
        "order": "each path searches every query once; the three calls of a turn search different "
        "queries (no path finds a query's graph nodes in the CPU caches from another path's call)",
        "gc": "set-up objects frozen (gc.freeze) before timing",
        "result_cache": "off: every call searches",
        "auto_calibration": "off: the plan is the collection's ef_search unless ef is given",
        "build_seconds": round(t_build, 2),
        "target_overhead": TARGET_OVERHEAD,
        "runs": runs,
        "conversion_floor": floor,
        "host": {
            "python": platform.python_version(),
            "machine": platform.machine(),
            "cpus": os.cpu_count(),
            "embeddix": __version__,
            "numpy": np.__version__,
        },
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def _print_run(result: dict[str, Any]) -> None:
    print(f"ef={result['ef']}:")
    for path in PATHS:
        s = result["latency"][path]
        line = f"{path:>12}: p50 {s['p50_ms']:.3f} ms  p95 {s['p95_ms']:.3f} ms  mean {s['mean_ms']:.3f} ms"
        if path != "core":
            o = result["overhead_vs_core"][path]
            line += (
                f"  overhead p50 {o['p50']:+.1%} p95 {o['p95']:+.1%}  "
                f"median extra {result['median_extra_ms_per_query'][path] * 1000:.1f} us  "
                f"same ids {result['same_ids_as_core'][path]:.1%}"
            )
        print(line, flush=True)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark, print a summary, and write the JSON results."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.adapter_bench", description=main.__doc__)
    parser.add_argument("--n", type=int, default=50_000, help="records (default 50000)")
    parser.add_argument("--queries", type=int, default=1_000, help="timed queries (default 1000)")
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--dim", type=int, default=384, help="dimension of random data (default 384)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--warmup", type=int, default=50)
    parser.add_argument(
        "--ef",
        type=int,
        nargs="*",
        default=[],
        help="beam widths to time (default: the collection's ef_search), e.g. --ef 96 1024",
    )
    parser.add_argument(
        "--layout",
        type=int,
        choices=sorted(_LAYOUTS),
        default=2,
        help="record layout of the nodes (default 2, what the adapter writes; 1: as written before)",
    )
    parser.add_argument("--out", type=Path, default=RESULTS / "adapter_bench.json")
    args = parser.parse_args(argv)
    efs: list[int | None] = list(args.ef) if args.ef else [None]
    result = run(args.n, args.queries, args.k, args.dim, args.seed, args.warmup, efs, args.layout)
    floor = result["conversion_floor"]
    print(
        "framework objects alone (p50): " + ", ".join(f"{n} {v['p50_ms']:.3f} ms" for n, v in floor.items())
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
