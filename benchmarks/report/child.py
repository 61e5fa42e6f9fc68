"""One engine on one data set, in a process of its own: every workload of the report, in this order.

The parent (:mod:`benchmarks.report.runner`) writes a spec (JSON) and the inputs (query pool, exact
ground truth) into a work directory and runs ``python -m benchmarks.report.child SPEC``; this writes the
engine's results to ``spec["out"]``. The order is fixed so that Embeddix as a user gets it is searched
right after its ingest, as a user's program would search it:

1. **Warm-up** (untimed): a scratch store of 1,000 records is built, searched and deleted, so libraries
   an engine loads on first use sit in the memory baseline, for every engine alike.
2. **Ingest** (workload 3): every base row in batches of 1,000, with its document (real-text sets) and
   ``metadata_for(row)``. Batch insert rate = rows / time in the engine's add calls (and FAISS training).
   RSS and peak RSS (VmHWM, reset at the baseline) over the baseline, per vector. Rows are read with
   plain file reads, never through a memory map, so the data set's pages are not in the RSS.
3. **Single agent, recall-heavy** (workload 1): engines with a knob sweep it on the sweep queries (each
   timed once per point, cold L2) and take the smallest value reaching recall@10 >= 0.95; then every
   engine answers the latency queries once each, never repeated (so no cache answers them), then the
   QPS queries on 1 thread and on 2 threads (other fresh queries each).
4. **Filtered** (workload 6) at 1% (``group == 7``), 10% (``tag == 3``) and 50% (``tag < 5``).
5. **Single inserts**: one record per call, then **mixed** (workload 4): four searches, one insert, in
   turn; each read's recall is against the exact answer over everything inserted before it.
6. **Stress ramp** (workload 5): 1, 2, 4, ... threads searching back to back (fresh queries), each level
   for a fixed time, until p95 crosses 100 ms; the level's CPU use says why.
7. **Disk and open time**: ``close()`` (saving what lives in memory), bytes on disk, ``reopen()`` timed,
   and the first search after it.
8. **N agents** (workload 2): a fresh store with 25 namespaces of the same size; N = 1, 4, 16, 25
   threads, each an agent recalling (4 of 5 steps) and remembering (1 of 5) in its own namespace.

Every phase has a time budget: a slow engine stops early and the result says how far it got. An error in
a phase is recorded with the phase and the run goes on with the next phase that can still run.

Fresh queries: the held-out queries and base rows never inserted (the "pool") for everything measured
against ground truth; for the stress ramp and the agents (which need many), blends
``normalize(a + b)`` of two random pool rows, new vectors that are never repeated.

Imports: the standard library, numpy, tqdm and the measured library only, so a child also runs in a
separate virtual environment that holds a peer.
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import sys
import threading
import time
import traceback
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.default_path_bench import NpyRows, _cold, _mem, _ms, _reset_peak, _trim
from benchmarks.report.engines import (
    OPERATING_RECALL,
    Engine,
    Filter,
    K,
    dir_bytes,
    dump_json,
    engine_class,
    remove,
)

BATCH = 1_000
WARM_ROWS = 300  # enough to load every library (FAISS's PQ needs 256 to train)
STRESS_P95_MS = 100.0
AGENT_STEP_WRITE = 5  # every 5th step of an agent is a remember, the others recall
AGENT_ROW_BASE = 10_000_000  # row numbers of agents' new memories (never a data set row)


def _log(engine: str, message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {engine}: {message}", file=sys.stderr, flush=True)


def _bar(total: int, desc: str) -> Any:
    from tqdm import tqdm

    # disable=None: a bar only on a terminal (the test and CI logs get none)
    return tqdm(total=total, desc=desc, unit="q", file=sys.stderr, leave=False, disable=None, mininterval=0.5)


def _recall(found: list[list[int]], truth: np.ndarray) -> list[float]:
    """Per-query recall@10: |found[:10] & truth[:10]| / 10 (a short answer counts its missing hits)."""
    return [len(set(f[:K]) & set(t[:K].tolist())) / K for f, t in zip(found, truth, strict=True)]


def _stats(seconds: list[float]) -> dict[str, Any]:
    out: dict[str, Any] = _ms(seconds)
    if seconds:
        out["qps"] = len(seconds) / sum(seconds)
    return out


def _blends(pool: np.ndarray, seed: int, count: int) -> np.ndarray:
    """``count`` new unit vectors, each the normalized sum of two different random pool rows."""
    rng = np.random.default_rng(seed)
    a = rng.integers(len(pool), size=count)
    b = (a + 1 + rng.integers(len(pool) - 1, size=count)) % len(pool)
    v = pool[a] + pool[b]
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    return np.ascontiguousarray(v, dtype=np.float32)


class Clock:
    """A phase's time budget."""

    def __init__(self, seconds: float) -> None:
        self.end = time.monotonic() + seconds

    def over(self) -> bool:
        return time.monotonic() > self.end


class Child:
    """The run of one engine (see the module docstring)."""

    def __init__(self, spec: dict[str, Any]) -> None:
        from benchmarks.datasets import metadata_for

        self.spec = spec
        self.size: dict[str, Any] = spec["size"]
        self.name: str = spec["engine"]
        self.cls = engine_class(self.name)
        self.work = Path(spec["work"])
        self.n: int = spec["n"]
        self.dim: int = spec["dim"]
        self.metadata_for = metadata_for
        self.reader = NpyRows(spec["base"])
        self.texts: list[str] | None = None
        if spec.get("texts"):
            with open(spec["texts"], encoding="utf-8") as fh:
                self.texts = [json.loads(line)["text"] for line in fh]
        self.pool = np.load(spec["qpool"])
        self.sets: dict[str, list[int]] = spec["sets"]
        truth = np.load(spec["truth"])
        self.truth = {key: truth[key] for key in truth.files}
        self.inserts = np.asarray(spec["insert_rows"], dtype=np.int64)
        top = int(max(self.n, int(self.inserts.max()) + 1 if len(self.inserts) else 0))
        self.filters = [self._filter(f, top) for f in spec["filters"]]
        self.out: dict[str, Any] = {
            "engine": self.name,
            "label": self.cls.label,
            "status": "ok",
            "python": sys.executable,
            "versions": self._versions(),
            "persistence": self.cls.persistence,
            "knob": self.cls.knob,
            "errors": {},
            "budget_stops": {},
            "notes": [],
        }
        self.engine: Engine | None = None

    # -- inputs -----------------------------------------------------------------------------------
    def _filter(self, f: dict[str, Any], top: int) -> Filter:
        values = np.fromiter(
            (self.metadata_for(i)[f["field"]] for i in range(top)), dtype=np.int64, count=top
        )
        mask = values == f["value"] if f["op"] == "eq" else values < f["value"]
        return Filter(name=f["name"], op=f["op"], field=f["field"], value=f["value"], mask=mask)

    def _versions(self) -> dict[str, str | None]:
        out: dict[str, str | None] = {}
        for pkg in self.cls.packages:
            try:
                out[pkg] = metadata.version(pkg)
            except metadata.PackageNotFoundError:
                out[pkg] = None
        return out

    def _docs(self, rows: np.ndarray) -> list[str] | None:
        if self.texts is None:
            return None
        return [self.texts[r] if r < len(self.texts) else f"memory {r}" for r in rows]

    def _metas(self, rows: np.ndarray) -> list[dict[str, Any]]:
        return [self.metadata_for(int(r)) for r in rows]

    def _queries(self, key: str) -> np.ndarray:
        a, b = self.sets[key]
        return self.pool[a:b]

    @contextlib.contextmanager
    def phase(self, key: str) -> Iterator[None]:
        t0 = time.perf_counter()
        _log(self.name, f"{key} ...")
        try:
            yield
        except Exception as exc:  # one phase failing must not lose the others' results
            self.out["errors"][key] = f"{type(exc).__name__}: {' '.join(str(exc).split())[:400]}"
            self.out.setdefault("tracebacks", {})[key] = traceback.format_exc()[-3000:]
            _log(self.name, f"{key} failed: {self.out['errors'][key]}")
        finally:
            self.out.setdefault("phase_seconds", {})[key] = round(time.perf_counter() - t0, 2)

    def _stop(self, key: str, done: int, total: int) -> None:
        if done < total:
            self.out["budget_stops"][key] = f"{done} of {total} (phase budget {self.size['budget_s']} s)"

    # -- the run ------------------------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        with self.phase("warm_up"):
            self.warm_up()
        _trim()
        mem0 = _mem()
        peak_ok = _reset_peak()
        self.out["mem_baseline"] = mem0
        with self.phase("ingest"):
            self.ingest(mem0, peak_ok)
        if "ingest" in self.out["errors"]:
            self.out["status"] = "failed"
            return self.out
        assert self.engine is not None
        self.out["settings"] = self.engine.settings()
        with self.phase("single_agent"):
            self.single_agent()
        with self.phase("filtered"):
            self.filtered()
        with self.phase("single_insert"):
            self.single_insert()
        with self.phase("mixed"):
            self.mixed()
        with self.phase("stress"):
            self.stress()
        with self.phase("reopen"):
            self.reopen(mem0)
        with self.phase("multi_agent"):
            self.multi_agent()
        if self.out["errors"]:
            self.out["status"] = "partial"
        return self.out

    def warm_up(self) -> None:
        path = self.work / "warm-up"
        eng = self.cls(path, self.dim)
        rows = np.arange(WARM_ROWS)
        eng.create("warm", WARM_ROWS)
        eng.add("warm", rows, self.reader.read(0, WARM_ROWS), self._docs(rows), self._metas(rows))
        eng.finish("warm")
        for q in self.pool[:5]:
            eng.search("warm", q)
            eng.search("warm", q, flt=self.filters[1])
        eng.discard()
        del eng
        remove(path)

    # -- workload 3: ingest -------------------------------------------------------------------------
    def ingest(self, mem0: dict[str, int], peak_ok: bool) -> None:
        n = self.n
        capacity = n + len(self.inserts)
        t_open = time.perf_counter()
        self.engine = eng = self.cls(self.work / "store", self.dim)
        eng.create("main", capacity)
        add_s = time.perf_counter() - t_open
        samples = []
        with _bar(n, f"{self.name} ingest") as bar:
            for b, s in enumerate(range(0, n, BATCH)):
                e = min(n, s + BATCH)
                rows = np.arange(s, e)
                vectors, docs, metas = self.reader.read(s, e), self._docs(rows), self._metas(rows)
                t0 = time.perf_counter()
                eng.add("main", rows, vectors, docs, metas)
                add_s += time.perf_counter() - t0
                if (b + 1) % 10 == 0:
                    samples.append(_mem())
                bar.update(e - s)
        t0 = time.perf_counter()
        eng.finish("main")
        add_s += time.perf_counter() - t0
        _trim()  # heap an engine freed (training buffers, batches) back to the OS: RSS shows what is live
        after = _mem()
        peak = max([*samples, after], key=lambda m: m["VmRSS"])
        self.out["ingest"] = {
            "n": n,
            "batch": BATCH,
            "documents": self.texts is not None,
            "seconds": add_s,
            "per_s": n / add_s,
            "rss_bytes_per_vector": (after["VmRSS"] - mem0["VmRSS"]) / n,
            "peak_rss_bytes_per_vector": (
                (after["VmHWM"] - mem0["VmRSS"]) / n if peak_ok else (peak["VmRSS"] - mem0["VmRSS"]) / n
            ),
            "mem_after": after,
        }
        _log(self.name, f"ingested {n:,} in {add_s:.1f} s ({n / add_s:,.0f}/s)")

    # -- workload 1: one agent, recall-heavy --------------------------------------------------------
    def _timed(
        self, queries: np.ndarray, key: str, flt: Filter | None = None
    ) -> tuple[list[float], list[list[int]]]:
        eng = self.engine
        assert eng is not None
        clock = Clock(self.size["budget_s"])
        lat: list[float] = []
        found: list[list[int]] = []
        with _bar(len(queries), f"{self.name} {key}") as bar:
            for q in queries:
                if clock.over():
                    break
                _cold()
                t0 = time.perf_counter()
                rows = eng.search("main", q, K, flt)
                lat.append(time.perf_counter() - t0)
                found.append(rows)
                bar.update()
        self._stop(key, len(lat), len(queries))
        return lat, found

    def single_agent(self) -> None:
        eng = self.engine
        assert eng is not None
        sweep: list[dict[str, Any]] = []
        if self.cls.knob:
            queries, truth = self._queries("sweep"), self.truth["sweep"]
            for value in self.cls.knob_values:
                eng.set_knob(value, sweep=True)
                lat, found = self._timed(queries, f"sweep {self.cls.knob}={value}")
                rec = _recall(found, truth[: len(found)])
                sweep.append({"knob": value, "recall_at_10": float(np.mean(rec)), **_stats(lat)})
            reached = [p for p in sweep if p["recall_at_10"] >= OPERATING_RECALL]
            op = reached[0] if reached else max(sweep, key=lambda p: p["recall_at_10"])
            eng.set_knob(op["knob"])
            self.out["operating_knob"] = op["knob"]
            self.out["operating_rule"] = (
                f"smallest {self.cls.knob} with sweep recall@10 >= {OPERATING_RECALL}"
                if reached
                else f"no {self.cls.knob} reached recall@10 {OPERATING_RECALL}: the best one"
            )
        lat, found = self._timed(self._queries("lat"), "latency")
        rec = _recall(found, self.truth["lat"][: len(found)])
        a = self.sets["lat"][0]
        self.out["single_agent"] = {
            "recall_at_10": float(np.mean(rec)),
            **_stats(lat),
            "query_pool_rows": list(range(a, a + len(found))),
            "found": found,
            "latency_us": [round(t * 1e6, 1) for t in lat],
        }
        if not self.cls.knob:
            sweep = [{"knob": None, "recall_at_10": float(np.mean(rec)), **_stats(lat)}]
        self.out["sweep"] = sweep
        self.out["qps"] = {"1": self._qps("qps1", 1), "2": self._qps("qps2", 2)}
        sa = self.out["single_agent"]
        _log(self.name, f"recall@10 {sa['recall_at_10']:.4f}, p50 {sa.get('p50_ms', 0):.3f} ms")

    def _qps(self, key: str, threads: int) -> dict[str, Any]:
        eng = self.engine
        assert eng is not None
        queries = self._queries(key)
        nxt = iter(range(len(queries)))
        lock = threading.Lock()
        end = time.monotonic() + self.size["budget_s"]
        done = [0] * threads

        def worker(t: int) -> None:
            while time.monotonic() < end:
                with lock:
                    i = next(nxt, None)
                if i is None:
                    return
                eng.search("main", queries[i], K)
                done[t] += 1

        pool = [threading.Thread(target=worker, args=(t,)) for t in range(threads)]
        t0 = time.perf_counter()
        for th in pool:
            th.start()
        for th in pool:
            th.join()
        wall = time.perf_counter() - t0
        self._stop(f"qps {threads} threads", sum(done), len(queries))
        return {"threads": threads, "queries": sum(done), "seconds": wall, "qps": sum(done) / wall}

    # -- workload 6: filtered -----------------------------------------------------------------------
    def filtered(self) -> None:
        a, _ = self.sets["filt"]
        per = self.size["filt"]
        out: dict[str, Any] = {}
        for i, flt in enumerate(self.filters):
            queries = self.pool[a + i * per : a + (i + 1) * per]
            truth = self.truth[f"filt{i}"]
            try:
                lat, found = self._timed(queries, f"filter {flt.name}", flt)
            except Exception as exc:  # an engine that cannot run this filter at all
                out[flt.name] = {"error": f"{type(exc).__name__}: {' '.join(str(exc).split())[:300]}"}
                continue
            short = sum(len(f) < K for f in found)
            rec = _recall(found, truth[: len(found)])
            out[flt.name] = {
                "filter": f"{flt.field} {'==' if flt.op == 'eq' else '<'} {flt.value}",
                "matching": int(flt.mask[: self.n].sum()),
                "recall_at_10": float(np.mean(rec)) if rec else None,
                "short_answers": short,
                "query_pool_rows": list(range(a + i * per, a + i * per + len(found))),
                "found": found,
                **_stats(lat),
            }
        self.out["filtered"] = out

    # -- single inserts and workload 4: mixed -------------------------------------------------------
    def _one(self, ns: str, row: int, vector: np.ndarray) -> float:
        eng = self.engine
        assert eng is not None
        rows = np.array([row])
        docs, metas = self._docs(rows), self._metas(rows)
        t0 = time.perf_counter()
        eng.add(ns, rows, vector[None, :], docs, metas)
        return time.perf_counter() - t0

    def single_insert(self) -> None:
        rows = self.inserts[: self.size["singles"]]
        vectors = self._read(rows)
        clock = Clock(self.size["budget_s"])
        lat = []
        for r, v in zip(rows, vectors, strict=True):
            if clock.over():
                break
            lat.append(self._one("main", int(r), v))
        self.out["single_insert"] = {"n": len(lat), "per_s": len(lat) / sum(lat) if lat else None, **_ms(lat)}
        self.singles_done = len(lat)
        self._stop("single_insert", len(lat), len(rows))

    def _read(self, rows: np.ndarray) -> np.ndarray:
        """Base rows ``rows`` (any order), read in contiguous runs with plain file reads."""
        if not len(rows):
            return np.empty((0, self.dim), np.float32)
        if np.all(np.diff(rows) == 1):
            return self.reader.read(int(rows[0]), int(rows[-1]) + 1)
        return np.concatenate([self.reader.read(int(r), int(r) + 1) for r in rows])

    def mixed(self) -> None:
        eng = self.engine
        assert eng is not None
        singles = self.size["singles"]
        if getattr(self, "singles_done", singles) < singles:
            self.out["notes"].append("mixed skipped: the single inserts did not finish in their budget")
            return
        reads = self._queries("mixed")
        truth = self.truth["mixed"]
        n_writes = self.size["mixed_writes"]
        write_rows = self.inserts[singles : singles + n_writes]
        write_vecs = self._read(write_rows)
        clock = Clock(self.size["budget_s"])
        r_lat: list[float] = []
        w_lat: list[float] = []
        found: list[list[int]] = []
        ri = wi = 0
        step = 0
        while ri < len(reads) or wi < len(write_rows):
            if clock.over():
                break
            if step % AGENT_STEP_WRITE == AGENT_STEP_WRITE - 1 and wi < len(write_rows):
                w_lat.append(self._one("main", int(write_rows[wi]), write_vecs[wi]))
                wi += 1
            elif ri < len(reads):
                _cold()
                t0 = time.perf_counter()
                found.append(eng.search("main", reads[ri], K))
                r_lat.append(time.perf_counter() - t0)
                ri += 1
            step += 1
        rec = _recall(found, truth[: len(found)])
        self.out["mixed"] = {
            "ratio": f"{AGENT_STEP_WRITE - 1} searches : 1 insert",
            "read": {"recall_at_10": float(np.mean(rec)) if rec else None, **_stats(r_lat)},
            "write": _ms(w_lat),
        }
        self._stop("mixed", ri + wi, len(reads) + len(write_rows))

    # -- workload 5: stress ramp --------------------------------------------------------------------
    def stress(self) -> None:
        ncpu = len(os.sched_getaffinity(0))
        levels: list[dict[str, Any]] = []
        crossed = None
        for li, threads in enumerate(self.size["stress_levels"]):
            level = self._stress_level(li, threads, ncpu)
            levels.append(level)
            _log(
                self.name,
                f"stress {threads} threads: {level['qps']:.0f} QPS, p95 {level.get('p95_ms', 0):.2f} ms",
            )
            if level.get("p95_ms", 0) > STRESS_P95_MS:
                crossed = threads
                break
        self.out["stress"] = {
            "levels": levels,
            "crossed_at_threads": crossed,
            "why": self._why(levels, crossed, ncpu),
            "cores": ncpu,
            "seconds_per_level": self.size["stress_s"],
        }

    def _stress_level(self, li: int, threads: int, ncpu: int) -> dict[str, Any]:
        """``threads`` threads searching fresh queries back to back for the level's time."""
        eng = self.engine
        assert eng is not None
        lats: list[list[float]] = [[] for _ in range(threads)]
        errors = [0] * threads
        start = threading.Barrier(threads + 1)
        stop_at = [0.0]

        def worker(t: int) -> None:
            chunk = 0
            start.wait()
            while time.monotonic() < stop_at[0]:
                batch = _blends(self.pool, 1_000_000 + li * 10_000 + t * 100 + chunk, 32)
                chunk += 1
                for q in batch:
                    if time.monotonic() >= stop_at[0]:
                        return
                    t0 = time.perf_counter()
                    try:
                        eng.search("main", q, K)
                    except Exception:
                        errors[t] += 1
                    lats[t].append(time.perf_counter() - t0)

        pool = [threading.Thread(target=worker, args=(t,)) for t in range(threads)]
        for th in pool:
            th.start()
        r0 = resource.getrusage(resource.RUSAGE_SELF)
        t0 = time.perf_counter()
        stop_at[0] = time.monotonic() + self.size["stress_s"]
        start.wait()
        for th in pool:
            th.join()
        wall = time.perf_counter() - t0
        r1 = resource.getrusage(resource.RUSAGE_SELF)
        cpu = (r1.ru_utime - r0.ru_utime + r1.ru_stime - r0.ru_stime) / (wall * ncpu)
        flat = [x for lat in lats for x in lat]
        return {
            "threads": threads,
            "qps": len(flat) / wall,
            "cpu_busy": cpu,
            "errors": sum(errors),
            **_ms(flat),
        }

    def _why(self, levels: list[dict[str, Any]], crossed: int | None, ncpu: int) -> str:
        last = levels[-1]
        if crossed is None:
            return f"not reached: p95 {last.get('p95_ms', 0):.3g} ms at {last['threads']} threads, the largest level"
        if crossed == levels[0]["threads"]:
            return (
                f"one search alone takes p95 {last['p95_ms']:.0f} ms "
                f"(p50 {last['p50_ms']:.0f} ms): the per-query cost, before any concurrency"
            )
        best = max(levels, key=lambda lv: lv["qps"])
        queue_ms = last["threads"] / last["qps"] * 1e3 if last["qps"] else 0.0
        if last["cpu_busy"] >= 0.8:
            kind = f"CPU-bound: {last['cpu_busy']:.0%} of {ncpu} cores busy"
        elif last["cpu_busy"] < 0.6:
            kind = f"serialized: only {last['cpu_busy']:.0%} of {ncpu} cores busy (a lock or the GIL)"
        else:
            kind = f"{last['cpu_busy']:.0%} of {ncpu} cores busy"
        return (
            f"{kind}; throughput peaked at {best['qps']:,.0f} QPS ({best['threads']} threads) and was "
            f"{last['qps']:,.0f} QPS at {last['threads']}, so each search queues behind the others "
            f"(threads / QPS = {queue_ms:.0f} ms)"
        )

    # -- disk, close and reopen ---------------------------------------------------------------------
    def reopen(self, mem0: dict[str, int]) -> None:
        eng = self.engine
        assert eng is not None
        count = self.n + getattr(self, "singles_done", 0) + self.size["mixed_writes"]
        mem = _mem()
        t0 = time.perf_counter()
        eng.close()
        close_s = time.perf_counter() - t0
        disk = dir_bytes(self.work / "store")
        t0 = time.perf_counter()
        eng.reopen()
        open_s = time.perf_counter() - t0
        q = _blends(self.pool, 7, 1)[0]
        t0 = time.perf_counter()
        eng.search("main", q, K)
        first_ms = (time.perf_counter() - t0) * 1e3
        eng.close()
        self.out["storage"] = {
            "records": count,
            "rss_bytes_per_vector_after_workloads": (mem["VmRSS"] - mem0["VmRSS"]) / count,
            "close_s": close_s,
            "disk_bytes": disk,
            "disk_bytes_per_vector": disk / count,
            "open_s": open_s,
            "first_search_after_open_ms": first_ms,
        }
        remove(self.work / "store")
        self.engine = None

    # -- workload 2: N agents -----------------------------------------------------------------------
    def multi_agent(self) -> None:
        per = self.size["agent_records"]
        steps = self.size["agent_steps"]
        levels: list[int] = self.size["agent_levels"]
        most = max(levels)
        eng = self.cls(self.work / "agents", self.dim)
        self.engine = eng
        t0 = time.perf_counter()
        with _bar(most * per, f"{self.name} agents' namespaces") as bar:
            for a in range(most):
                # the agents' records: base rows, wrapping around on a small data set
                rows = np.arange(a * per, (a + 1) * per) % self.reader.rows
                eng.create(f"a{a}", per + len(levels) * steps)
                eng.add(f"a{a}", rows, self._read(rows), self._docs(rows), self._metas(rows))
                eng.finish(f"a{a}")
                bar.update(per)
        out: dict[str, Any] = {
            "records_per_agent": per,
            "steps_per_agent": steps,
            "fill_s": time.perf_counter() - t0,
        }
        for li, agents in enumerate(levels):
            lv = out[str(agents)] = self._agent_level(eng, li, agents)
            _log(
                self.name,
                f"{agents} agents: recall p95 {lv['recall'].get('p95_ms', 0):.2f} ms, "
                f"{lv['ops_per_s']:.0f} ops/s, {lv['errors']} errors",
            )
        self.out["multi_agent"] = out
        eng.discard()  # the agents' stores are not measured on disk: nothing to save
        remove(self.work / "agents")
        self.engine = None

    def _agent_level(self, eng: Engine, li: int, agents: int) -> dict[str, Any]:
        """``agents`` threads, each an agent recalling and remembering in its own namespace."""
        steps = self.size["agent_steps"]
        recall_lat: list[list[float]] = [[] for _ in range(agents)]
        write_lat: list[list[float]] = [[] for _ in range(agents)]
        errors: list[list[str]] = [[] for _ in range(agents)]
        start = threading.Barrier(agents)
        end = [time.monotonic() + 3600]

        def agent(i: int) -> None:
            queries = _blends(self.pool, 2_000_000 + li * 1000 + i, steps)
            start.wait()
            end[0] = min(end[0], time.monotonic() + self.size["budget_s"])
            for j in range(steps):
                if time.monotonic() > end[0]:
                    return
                try:
                    if j % AGENT_STEP_WRITE == AGENT_STEP_WRITE - 1:
                        row = AGENT_ROW_BASE + li * 100_000 + i * 1_000 + j
                        rows = np.array([row])
                        docs = None if self.texts is None else [f"memory {row}"]
                        t0 = time.perf_counter()
                        eng.add(f"a{i}", rows, queries[j][None, :], docs, self._metas(rows))
                        write_lat[i].append(time.perf_counter() - t0)
                    else:
                        t0 = time.perf_counter()
                        eng.search(f"a{i}", queries[j], K)
                        recall_lat[i].append(time.perf_counter() - t0)
                except Exception as exc:
                    errors[i].append(f"{type(exc).__name__}: {' '.join(str(exc).split())[:200]}")

        pool = [threading.Thread(target=agent, args=(i,)) for i in range(agents)]
        t0 = time.perf_counter()
        for th in pool:
            th.start()
        for th in pool:
            th.join()
        wall = time.perf_counter() - t0
        r = [x for lat in recall_lat for x in lat]
        w = [x for lat in write_lat for x in lat]
        errs = [e for es in errors for e in es]
        return {
            "agents": agents,
            "recall": _ms(r),
            "remember": _ms(w),
            "ops_per_s": (len(r) + len(w)) / wall,
            "ops": len(r) + len(w),
            "ops_planned": agents * steps,
            "errors": len(errs),
            "error_samples": sorted(set(errs))[:3],
        }


def main(argv: list[str] | None = None) -> int:
    """Run the engine of the spec file ``argv[0]`` and write its results to the spec's ``out``."""
    args = sys.argv[1:] if argv is None else argv
    spec = json.loads(Path(args[0]).read_text(encoding="utf-8"))
    child = Child(spec)
    t0 = time.perf_counter()
    try:
        out = child.run()
    except Exception as exc:
        out = child.out
        out["status"] = "failed"
        out["errors"]["run"] = f"{type(exc).__name__}: {' '.join(str(exc).split())[:400]}"
        out.setdefault("tracebacks", {})["run"] = traceback.format_exc()[-3000:]
    out["seconds"] = time.perf_counter() - t0
    dump_json(Path(spec["out"]), out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
