"""Memory benchmark (issue #16's acceptance): 1M x 768 in the ``memory`` profile, IVF-PQ, fp16, reconfigure.

Every measured path is the one a user gets: ``EmbeddixSettings()`` (so ``EMBEDDIX_*`` variables apply; the
results list any that were set), caches and background calibration on, ``create_collection`` with only
the argument under test, and held-out queries, each sent once and timed once (no cache ever answers one).
Every part runs in fresh child processes, so its RSS figures start from a clean process. Rows that label
something "diagnostic" change a default (said in the row) and are never the acceptance figure.

How the data is read: :class:`RowReader` reads each batch from ``base.npy`` with ``os.preadv`` into one
reused 5,000-row buffer (15 MB at 768-d), never through a memory map, so the data set's pages sit in the
OS page cache and never in the measuring process's RSS. The engine copies what it keeps (``col.add``
normalizes into a new array and stores bytes); a spot check after the 1M ingest compares 5 stored
vectors with the file.

1. **1,000,000 x 768 clustered synthetic, ``profile="memory"``** (``synth768-1000000``; build it first in its
   own process: ``python -m benchmarks.datasets --synthetic 1000000``, ~3 GB of RAM and ~3 minutes, ground
   truth included). *Ingest child*: ``create_collection("mem", dim=768, profile="memory")``, ``col.add``
   in batches of 5,000 (ids ``"0"``..``"999999"``, no documents or metadata). Build time = the adds, then
   the time until every background training and retrain has ended: first the index's own threads
   (``col._live.index.join()``), then the background calibration, whose curve can start an IVF retrain
   (``DerivedState.after_curve``), repeated until nothing runs; the parts are reported apart, with a
   timeline of the background threads (:class:`BgWatch`). RSS (VmRSS, RssAnon, RssFile and VmHWM, the
   process's peak since it started) every 20 batches, after the adds, after the index's own training,
   after everything settled and after ``close()``; the benchmark trims nothing on this path. *Open child*:
   a fresh process: open time = ``Embeddix.open`` + ``get_collection`` + the first ``search`` (imports
   apart), RSS after open and after the queries, then ``col.search(q, k=10)`` over the held-out queries,
   one at a time from one thread: the first 100 (whatever curve the open found; the 100th real query
   forces a calibration on real queries), then it waits until no calibration or retrain runs (poking with
   query 0 and ``cache=False``, as default_path_bench does, since a search can start the next one) and
   says when that was, then the rest. recall@10 per group against the exact ground truth, p50 / p95 / p99,
   ``col.stats().memory``.
2. **IVF-PQ + rerank at 768-d** (``synth768-200000``): ``create_collection("pq", dim=768,
   quantization="pq")`` with default caches, after a warm-up collection (12,000 rows from the end of the
   file) was trained, searched and closed in the same process, so one-time buffers of BLAS, OpenMP and
   SQLite sit in the baseline (as ivf_bench does). Resident bytes per vector from ``stats().memory``
   (centroids, codes, labels) and from the RssAnon delta over that baseline, raw and after
   ``malloc_trim``, and what ``close()`` gives back; recall@10 and p50 / p95 / p99 of the default search
   (queries 0-99, then after settling 100-599). Diagnostics: if no curve was ever measured, an explicit
   ``col.calibrate()`` and queries 600-999; and the whole part again with every cache budget at 0.
3. **fp16 against none** on ``realtext-100000``: ``benchmarks/quant_bench.py``'s engine child (the same
   code as ``python -m benchmarks.quant_bench``) for ``none`` and ``fp16``: VmRSS, RssAnon and index bytes
   per vector, recall@10 of the default search (target 0.95 for both) and of the explicit path at equal
   ef (``cache=False``, ef 16-128).
4. **reconfigure under 4 search threads** on ``realtext-100000``, its first 90,000 rows added
   (``quantization="none"`` to ``sq8``, or ``--reconfigure-to pq``): after the ingest and its calibration,
   recall of the default search on held-out queries 0-199; then 4 threads search without pause while
   ``reconfigure`` builds and swaps. Their queries: rows 90,000-99,999 (real texts the collection does not
   hold) moved by a little noise, and, once the rebuild started, held-out queries 200-599, one every
   0.1 s (each once). Every answer is checked (10 distinct valid ids, scores in order), errors are counted
   with their traceback; recall during the rebuild from the held-out queries and from every 10th load
   query against exact truth; then recall right after the swap (600-799) and after the new index's
   calibration (800-999).

Load: the machine is shared. Every phase records the load average at its start and end and, from
``/proc/stat`` and the process's CPU time, how many cores the whole machine and this process used
meanwhile (``other_cores``: everyone else's jobs).

Run (``--quick``: part 1 on the first 100,000 rows of ``synth768-200000``, part 2 on its first 50,000,
parts 3-4 on 20,000 real-text rows, 300 queries; ground truth recomputed for a prefix; ~3-4 minutes)::

    python -m benchmarks.memory_bench                 # everything (~25 minutes here)
    python -m benchmarks.memory_bench --quick
    python -m benchmarks.memory_bench --parts 1 --n 1000000

Results: ``benchmarks/results/memory_bench.json`` (``memory_bench_quick.json`` for ``--quick``; another
``--n`` or ``--parts`` adds a suffix), and a Markdown report on stdout. The data directories live in a
temporary directory (``MB_TMP`` picks its parent; the 1M store needs ~4.5 GB), removed at the end unless
``--keep``.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.default_path_bench import _cold, _trim  # noqa: E402

DATA = ROOT / "benchmarks" / "data"
RESULTS = ROOT / "benchmarks" / "results"
K = 10
BATCH = 5_000  # rows per col.add
SAMPLE_EVERY = 20  # batches between RSS samples during an ingest
FIRST = 100  # queries before the reservoir of real queries forces a calibration
CAL_THREAD = "embeddix-calibrate-"
CAL_WAIT_S = 1800.0
SEARCH_THREADS = 4
# Part 4 adds the first 90,000 rows of realtext-100000 (--quick: 20,000); its searchers query these rows
LOAD_ROWS = (90_000, 100_000)
MEM_KEYS = ("VmRSS", "RssAnon", "RssFile", "VmHWM")
# Acceptance of issue #16.
RSS_LIMIT = 1_000_000_000  # 1.0 GB (decimal) for the 1M x 768 memory-profile process
OPEN_LIMIT_S = 5.0
BUILD_LIMIT_S = 300.0
RECALL_TARGET = 0.95
PQ_BYTES_LIMIT = 200.0
P95_LIMIT_MS = 10.0
FP16_RECALL_SLACK = 0.005


# ------------------------------------------------------------------------------------ measuring helpers


def _mem() -> dict[str, int]:
    """This process's memory counters (bytes) from /proc/self/status."""
    out = dict.fromkeys(MEM_KEYS, 0)
    with open("/proc/self/status") as fh:
        for line in fh:
            key, _, rest = line.partition(":")
            if key in out:
                out[key] = int(rest.split()[0]) * 1024
    return out


def _cpu() -> dict[str, Any]:
    """A point for :func:`_cpu_delta`: time, load average, machine CPU jiffies, this process's CPU time."""
    with open("/proc/stat") as fh:
        f = [int(x) for x in fh.readline().split()[1:]]
    busy = f[0] + f[1] + f[2] + f[5] + f[6] + (f[7] if len(f) > 7 else 0)
    t = os.times()
    return {
        "t": time.monotonic(),
        "load": [round(x, 2) for x in os.getloadavg()],
        "busy": busy,
        "own": t.user + t.system,
    }


def _cpu_delta(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    """What the machine did between two :func:`_cpu` points: cores busy, ours, and the others'."""
    wall = b["t"] - a["t"]
    out: dict[str, Any] = {"wall_s": round(wall, 2), "load_start": a["load"], "load_end": b["load"]}
    if wall < 1.0:  # jiffies (10 ms) and os.times() are too coarse for a rate over less than a second
        return out | {"machine_busy_cores": None, "own_cores": None, "other_cores": None}
    machine = (b["busy"] - a["busy"]) / os.sysconf("SC_CLK_TCK") / wall
    own = (b["own"] - a["own"]) / wall
    return out | {
        "machine_busy_cores": round(machine, 2),
        "own_cores": round(own, 2),
        "other_cores": round(max(machine - own, 0.0), 2),
    }


def _ms(seconds: Sequence[float]) -> dict[str, float | int]:
    if not seconds:
        return {"n": 0}
    a = np.asarray(seconds) * 1e3
    return {
        "n": len(a),
        "p50_ms": round(float(np.percentile(a, 50)), 3),
        "p95_ms": round(float(np.percentile(a, 95)), 3),
        "p99_ms": round(float(np.percentile(a, 99)), 3),
        "max_ms": round(float(a.max()), 3),
        "mean_ms": round(float(a.mean()), 3),
    }


def _recall(found: Sequence[Sequence[int]], truth: np.ndarray) -> float | None:
    if not len(found):
        return None
    return float(
        np.mean([len(set(f[:K]) & set(t[:K].tolist())) / K for f, t in zip(found, truth, strict=True)])
    )


def _calibrating() -> bool:
    return any(t.name.startswith(CAL_THREAD) and t.is_alive() for t in threading.enumerate())


def _curve(col: Any) -> dict[str, Any] | None:
    cal = col.calibration
    if cal is None:
        return None
    return {
        "source": cal.source,
        "sample": cal.sample,
        "count": cal.count,
        "efs": list(cal.efs),
        "recall": [round(r, 4) for r in cal.recall],
    }


def _index_state(col: Any) -> dict[str, Any]:
    """The live index's kind and, for IVF, whether it is trained, its lists and background work."""
    ix = col._live.index
    t = getattr(ix, "_retrainer", None)
    return {
        "kind": getattr(ix, "kind", type(ix).__name__),
        "count": len(ix),
        "trained": getattr(ix, "trained", None),
        "nlist": getattr(ix, "nlist", None),
        "retrains": getattr(ix, "retrains", None),
        "training": bool(t is not None and t.is_alive()),
        "calibrating": _calibrating(),
    }


def _settle(col: Any) -> float:
    """Join the live index's background work (IVF training and retrains, HNSW flushes) until none runs."""
    t0 = time.perf_counter()
    while True:
        ix = col._live.index
        ix.join()
        t = getattr(ix, "_retrainer", None)
        busy = (t is not None and t.is_alive()) or getattr(ix, "_journal", None) is not None
        if col._live.index is ix and not busy:
            return time.perf_counter() - t0
        time.sleep(0.05)


def _wait_calibration(limit: float = CAL_WAIT_S) -> tuple[float, bool]:
    t0 = time.perf_counter()
    while _calibrating():
        if time.perf_counter() - t0 > limit:
            return time.perf_counter() - t0, True
        time.sleep(0.1)
    return time.perf_counter() - t0, False


class BgWatch:
    """Records the background work of a collection as it happens (a thread polling every 50 ms): when a
    calibration thread runs, when an IVF training or retrain thread runs, when the curve or nlist changes."""

    def __init__(self, col: Any, t0: float) -> None:
        self._col, self._t0 = col, t0
        self.events: list[dict[str, Any]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="memory-bench-watch", daemon=True)

    def start(self) -> BgWatch:
        self._thread.start()
        return self

    def _state(self) -> tuple[bool, bool, int, Any]:
        ix = self._col._live.index
        t = getattr(ix, "_retrainer", None)
        return (
            _calibrating(),
            bool(t is not None and t.is_alive()),
            id(self._col.calibration),
            getattr(ix, "nlist", None),
        )

    def _run(self) -> None:
        last = self._state()
        self.events.append(self._event("watch started", last))
        names = ("calibration", "IVF training/retrain")
        while True:
            stopping = self._stop.wait(0.05)
            now = self._state()  # once more after stop(): what ended just before it is recorded
            for j in (0, 1):
                if now[j] != last[j]:
                    self.events.append(self._event(f"{names[j]} {'started' if now[j] else 'ended'}", now))
            if now[2] != last[2]:
                self.events.append(self._event("new curve", now))
            if now[3] != last[3]:
                self.events.append(self._event("nlist changed", now))
            last = now
            if stopping:
                return

    def _event(self, what: str, state: tuple[bool, bool, int, Any]) -> dict[str, Any]:
        c = _curve(self._col)
        return {
            "t_s": round(time.perf_counter() - self._t0, 2),
            "event": what,
            "calibrating": state[0],
            "ivf_training": state[1],
            "nlist": state[3],
            "rows": len(self._col._live.index),
            "curve_source": c and c["source"],
            "curve_count": c and c["count"],
        }

    def stop(self) -> list[dict[str, Any]]:
        self._stop.set()
        self._thread.join()
        return self.events


def _settle_all(col: Any, poke: Callable[[], object] | None = None) -> dict[str, Any]:
    """Wait until no background work runs: the index's own (:func:`_settle`), then the calibration, which may
    start an IVF retrain when its curve says ef_search misses the target (``DerivedState.after_curve``), and
    again until neither runs.

    ``poke``: a search of an already-sent query with ``cache=False`` (as default_path_bench does). A search
    can start a calibration (the reservoir of real queries filled while another calibration ran forces a
    new one at the next search), so after each quiet moment one poke checks that none starts (at most 5).
    """
    t0 = time.perf_counter()
    index_s = cal_s = 0.0
    rounds = pokes = 0
    while True:
        rounds += 1
        index_s += _settle(col)
        waited, timed_out = _wait_calibration()
        cal_s += waited
        ix = col._live.index
        t = getattr(ix, "_retrainer", None)
        if timed_out:
            break
        if (t is not None and t.is_alive()) or _calibrating():
            continue
        if poke is None or pokes >= 5:
            break
        poke()
        pokes += 1
        t = getattr(col._live.index, "_retrainer", None)
        if not ((t is not None and t.is_alive()) or _calibrating()):
            break
    return {
        "seconds": time.perf_counter() - t0,
        "index_threads_s": round(index_s, 2),
        "calibration_s": round(cal_s, 2),
        "rounds": rounds,
        "pokes": pokes,
    }


class RowReader:
    """Rows of a C-ordered float32 ``.npy`` file read with ``os.preadv`` into one reused buffer.

    No memory map: the file's pages stay in the OS page cache, outside this process's RSS, and the
    buffer (``batch`` rows) is the only copy of the data set the process holds. The array :meth:`read`
    returns is overwritten by the next call.
    """

    def __init__(self, path: Path, batch: int) -> None:
        with path.open("rb") as fh:
            version = np.lib.format.read_magic(fh)
            shape, fortran, dtype = (
                np.lib.format.read_array_header_1_0(fh)
                if version == (1, 0)
                else np.lib.format.read_array_header_2_0(fh)
            )
            self.offset = fh.tell()
        if fortran or dtype != np.dtype("<f4") or len(shape) != 2:
            raise ValueError(f"{path}: expected a C-ordered float32 matrix; got {dtype} {shape}")
        self.rows, self.dim = int(shape[0]), int(shape[1])
        self._fd = os.open(path, os.O_RDONLY)
        self._buf = np.empty((batch, self.dim), np.float32)

    def read(self, start: int, stop: int) -> np.ndarray:
        """Rows ``[start, stop)`` (at most ``batch``) in the reused buffer."""
        out = self._buf[: min(stop, self.rows) - start]
        view = out.data.cast("B")
        got = 0
        while got < view.nbytes:
            n = os.preadv(self._fd, [view[got:]], self.offset + start * self.dim * 4 + got)
            if not n:
                raise EOFError(f"short read at row {start}")
            got += n
        return out

    def read_rows(self, rows: np.ndarray) -> np.ndarray:
        """Scattered rows, as a new array (spot checks, load queries)."""
        return np.stack([self.read(int(r), int(r) + 1)[0].copy() for r in rows])

    def close(self) -> None:
        os.close(self._fd)


def _ingest(col: Any, reader: RowReader, n: int, t0: float) -> tuple[float, list[dict[str, Any]]]:
    """``col.add`` in batches of :data:`BATCH`; returns the seconds the adds took and RSS samples."""
    samples = []
    batches = (n + BATCH - 1) // BATCH
    for b in range(batches):
        s = b * BATCH
        rows = reader.read(s, min(s + BATCH, n))
        col.add([str(i) for i in range(s, s + len(rows))], rows)
        if (b + 1) % SAMPLE_EVERY == 0 or b + 1 == batches:
            sample = {
                "rows": s + len(rows),
                "t_s": round(time.perf_counter() - t0, 2),
                "load1": round(os.getloadavg()[0], 2),
                **_mem(),
                **_index_state(col),
            }
            samples.append(sample)
            _log(
                f"  {sample['rows']:,} rows {sample['t_s']:.0f} s  VmRSS {sample['VmRSS'] / 1e6:.0f} MB  "
                f"{sample['kind']} nlist {sample['nlist']} training={sample['training']} "
                f"calibrating={sample['calibrating']} load {sample['load1']}"
            )
    return time.perf_counter() - t0, samples


def _spot_check(col: Any, reader: RowReader, n: int) -> int:
    """Stored vectors of 5 rows against the file (the reused read buffer must not leak into the store)."""
    rows = np.random.default_rng(7).choice(n, 5, replace=False)
    want = reader.read_rows(rows)
    bad = 0
    for r, w in zip(rows, want, strict=True):
        got = np.asarray(col[str(int(r))].vector, np.float32)
        bad += int(not np.allclose(got, w, atol=1e-6))
    return bad


def _search_block(col: Any, queries: np.ndarray, truth: np.ndarray, rows: range) -> dict[str, Any]:
    """Default ``col.search(q, k=10)`` on each query of ``rows`` once, one at a time, cold L2 each."""
    found: list[list[int]] = []
    lat: list[float] = []
    calibrating = 0
    efs: Counter[str] = Counter()
    cache: Counter[str] = Counter()
    for i in rows:
        _cold()
        calibrating += _calibrating()
        t = time.perf_counter()
        hits = col.search(queries[i], k=K)
        lat.append(time.perf_counter() - t)
        found.append([int(h.id) for h in hits])
        plan = getattr(hits, "plan", None)
        efs[str(getattr(plan, "ef", None))] += 1
        cache[str(getattr(plan, "result_cache", None))] += 1
    return {
        "queries": [rows.start, rows.stop],
        "recall_at_10": _recall(found, truth[rows.start : rows.stop]),
        **_ms(lat),
        "while_calibrating": calibrating,
        "plan_ef": dict(efs),
        "result_cache": dict(cache),
        "latency_ms": [round(x * 1e3, 3) for x in lat],
    }


def _memory_stats(col: Any) -> dict[str, Any]:
    st = col.stats()
    return {"memory": st.memory, "index": st.index, "count": st.count, "params": st.params}


def _truth(spec: dict[str, Any], nq: int) -> tuple[np.ndarray, np.ndarray]:
    queries = np.ascontiguousarray(np.load(spec["queries"])[:nq], np.float32)
    truth = np.load(spec["truth"])[:nq, :K]
    return queries, truth


def _log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------------------------- children


def child_build(spec: dict[str, Any]) -> dict[str, Any]:
    """Part 1, ingest: the memory profile, batches of 5,000, RSS as it goes, settle, close."""
    c_start = _cpu()
    t_imp = time.perf_counter()
    from embeddix_core import Embeddix, EmbeddixSettings

    out: dict[str, Any] = {"import_s": round(time.perf_counter() - t_imp, 3)}
    reader = RowReader(Path(spec["base"]), BATCH)
    n = spec["n"]
    out["rss_baseline"] = _mem()
    db = Embeddix.open(spec["path"], settings=EmbeddixSettings())
    col = db.create_collection("mem", dim=reader.dim, profile=spec.get("profile"))
    out["config"] = repr(col.config)
    out["rss_created"] = _mem()
    c0 = _cpu()
    t0 = time.perf_counter()
    watch = BgWatch(col, t0).start()
    out["adds_s"], out["samples"] = _ingest(col, reader, n, t0)
    c_adds = _cpu()
    out["rss_after_adds"] = _mem()
    out["index_after_adds"] = _index_state(col)
    # the index's own background work (first training, growth retrains started by the adds)
    out["index_settle_s"] = _settle(col)
    out["build_index_only_s"] = time.perf_counter() - t0
    c_index = _cpu()
    out["rss_after_index_settle"] = _mem()
    # then the calibration, and any retrain its curve starts, until nothing runs: the build is done
    out["settle_all"] = _settle_all(col)
    out["build_s"] = time.perf_counter() - t0
    out["settle_s"] = out["build_s"] - out["adds_s"]
    c_settled = _cpu()
    out["background_events"] = watch.stop()
    out["rss_after_build"] = _mem()
    out["index_after_build"] = _index_state(col)
    out["stats_after_build"] = _memory_stats(col)
    out["curve"] = _curve(col)
    out["cache_info"] = col.cache_info()
    out["spot_check_mismatches"] = _spot_check(col, reader, n)
    t = time.perf_counter()
    db.close()
    out["close_s"] = time.perf_counter() - t
    out["rss_after_close"] = _mem()
    out["cpu"] = {
        "adds": _cpu_delta(c0, c_adds),
        "index_settle": _cpu_delta(c_adds, c_index),
        "calibration_and_retrains": _cpu_delta(c_index, c_settled),
        "whole_child": _cpu_delta(c_start, _cpu()),
    }
    out["disk_bytes"] = _dir_bytes(Path(spec["path"]))
    reader.close()
    return out


def child_open(spec: dict[str, Any]) -> dict[str, Any]:
    """Part 1, a fresh process: open + first search, the held-out queries, RSS and stats."""
    c_start = _cpu()
    t_imp = time.perf_counter()
    from embeddix_core import Embeddix, EmbeddixSettings

    out: dict[str, Any] = {"import_s": round(time.perf_counter() - t_imp, 3)}
    queries, truth = _truth(spec, spec["nq"])
    _trim()
    out["rss_baseline"] = _mem()
    t0 = time.perf_counter()
    db = Embeddix.open(spec["path"], settings=EmbeddixSettings())
    out["open_db_s"] = time.perf_counter() - t0
    col = db.get_collection("mem")
    out["get_collection_s"] = time.perf_counter() - t0
    watch = BgWatch(col, t0).start()
    hits = col.search(queries[0], k=K)
    out["open_s"] = time.perf_counter() - t0
    out["rss_after_open"] = _mem()
    out["curve_at_open"] = _curve(col)
    first_ids = [int(h.id) for h in hits]
    c_open = _cpu()
    first = _search_block(col, queries, truth, range(1, FIRST))
    # query 0 (part of the open) belongs to the first group's recall
    found0 = len(set(first_ids) & set(truth[0].tolist())) / K
    first["recall_at_10"] = (found0 + first["recall_at_10"] * (FIRST - 1)) / FIRST
    first["queries"] = [0, FIRST]
    out["first"] = first
    c_first = _cpu()
    out["rss_after_first"] = _mem()
    # the calibration and any retrain it starts (query 0, already sent, pokes with cache=False)
    out["settle_after_first"] = _settle_all(col, lambda: col.search(queries[0], k=K, cache=False))
    out["calibration_wait_s"] = out["settle_after_first"]["seconds"]
    out["calibration_done_at_s"] = round(time.perf_counter() - t0, 2)
    c_cal = _cpu()
    out["curve_after_wait"] = _curve(col)
    out["rest"] = _search_block(col, queries, truth, range(FIRST, len(queries)))
    c_rest = _cpu()
    out["background_events"] = watch.stop()
    out["rss_after_queries"] = _mem()
    out["stats"] = _memory_stats(col)
    out["cache_info"] = col.cache_info()
    out["index"] = _index_state(col)
    db.close()
    out["rss_after_close"] = _mem()
    out["cpu"] = {
        "open": _cpu_delta(c_start, c_open),
        "first_queries": _cpu_delta(c_open, c_first),
        "calibration_wait": _cpu_delta(c_first, c_cal),
        "rest_queries": _cpu_delta(c_cal, c_rest),
    }
    return out


def child_pq(spec: dict[str, Any]) -> dict[str, Any]:
    """Part 2: quantization="pq" at 768-d: resident bytes per vector, recall and latency."""
    from embeddix_core import Embeddix, EmbeddixSettings

    reader = RowReader(Path(spec["base"]), BATCH)
    queries, truth = _truth(spec, spec["nq"])
    n = spec["n"]
    out: dict[str, Any] = {"n": n, "caches_off": spec["caches_off"]}
    # the diagnostic row turns every cache budget off (labelled in the report); the measured row is default
    settings = EmbeddixSettings()
    if spec["caches_off"]:
        settings = EmbeddixSettings(
            row_cache_bytes=0, vector_cache_bytes=0, cache_enabled=False, filter_matrix_bytes=0
        )
    out["rss_imports"] = imports = _mem()
    # Warm-up, as in ivf_bench: a 12,000-row IVF-PQ collection (rows from the end of the file, outside the
    # measured prefix) trained, searched and closed, so the one-time buffers of BLAS, OpenMP and SQLite
    # sit in the baseline and the delta is what the measured collection holds per vector
    warm = Path(spec["path"] + "-warm")
    wdb = Embeddix.open(warm, settings=settings)
    wcol = wdb.create_collection("warm", dim=reader.dim, quantization="pq")
    for s in range(reader.rows - 12_000, reader.rows, BATCH):
        wcol.add([str(i) for i in range(s, min(s + BATCH, reader.rows))], reader.read(s, s + BATCH))
    _settle(wcol)
    wcol.search(reader.read(0, 1)[0], k=K)
    wdb.close()
    shutil.rmtree(warm, ignore_errors=True)
    db = Embeddix.open(spec["path"], settings=settings)
    col = db.create_collection("pq", dim=reader.dim, quantization="pq")
    _trim()
    out["rss_baseline"] = base = _mem()
    c0 = _cpu()
    t0 = time.perf_counter()
    out["adds_s"], out["samples"] = _ingest(col, reader, n, t0)
    out["settle_s"] = _settle(col)
    out["settle_all"] = _settle_all(col)
    out["build_s"] = time.perf_counter() - t0
    c1 = _cpu()
    out["rss_after_ingest"] = raw = _mem()
    _trim()
    out["rss_after_ingest_trimmed"] = trimmed = _mem()
    out["rss_anon_per_vector"] = round((raw["RssAnon"] - base["RssAnon"]) / n, 1)
    out["rss_anon_per_vector_trimmed"] = round((trimmed["RssAnon"] - base["RssAnon"]) / n, 1)
    out["rss_anon_per_vector_trimmed_over_imports"] = round((trimmed["RssAnon"] - imports["RssAnon"]) / n, 1)
    out["stats_after_ingest"] = _memory_stats(col)
    out["cache_info_after_ingest"] = col.cache_info()
    out["curve"] = _curve(col)
    c2 = _cpu()
    out["first"] = _search_block(col, queries, truth, range(0, FIRST))
    out["settle_after_first"] = _settle_all(col, lambda: col.search(queries[0], k=K, cache=False))
    nq = len(queries)
    out["rest"] = _search_block(col, queries, truth, range(FIRST, 6 * nq // 10))
    c3 = _cpu()
    out["curve_after"] = _curve(col)
    if col.calibration is None:
        # diagnostic: the background calibration never measured a curve (see the report); what the
        # default search gives once one exists, via the public col.calibrate()
        t = time.perf_counter()
        col.calibrate()
        out["diag_calibrate_s"] = round(time.perf_counter() - t, 2)
        out["diag_curve"] = _curve(col)
        out["diag_after_calibrate"] = _search_block(col, queries, truth, range(6 * nq // 10, nq))
    out["rss_after_queries"] = after = _mem()
    out["rss_anon_per_vector_after_queries"] = round((after["RssAnon"] - base["RssAnon"]) / n, 1)
    out["stats_after_queries"] = _memory_stats(col)
    out["cache_info_after_queries"] = col.cache_info()
    out["index"] = _index_state(col)
    out["cpu"] = {"ingest": _cpu_delta(c0, c1), "queries": _cpu_delta(c2, c3)}
    _trim()
    held = _mem()
    db.close()
    _trim()
    # what closing the collection gave back: its index, caches and connections, without the process's
    # one-time buffers and whatever glibc keeps fragmented
    out["rss_anon_freed_by_close_per_vector"] = round((held["RssAnon"] - _mem()["RssAnon"]) / n, 1)
    reader.close()
    return out


def child_reconfigure(spec: dict[str, Any]) -> dict[str, Any]:
    """Part 4: reconfigure while 4 threads search; errors, answers during the rebuild, recall around it."""
    from embeddix_core import Embeddix, EmbeddixSettings

    reader = RowReader(Path(spec["base"]), BATCH)
    queries, truth = _truth(spec, spec["nq"])
    n, nq, target = spec["n"], len(queries), spec["target"]
    cut = [0, nq // 5, 3 * nq // 5, 4 * nq // 5, nq]  # before | during (threads) | after | after calibration
    out: dict[str, Any] = {"n": n, "target": target}
    db = Embeddix.open(spec["path"], settings=EmbeddixSettings())
    col = db.create_collection("rc", dim=reader.dim)
    c0 = _cpu()
    t0 = time.perf_counter()
    out["adds_s"], _ = _ingest(col, reader, n, t0)
    out["settle_s"] = _settle(col)
    out["calibration_wait_s"], _ = _wait_calibration()
    out["config_before"] = repr(col.config)
    out["stats_before"] = _memory_stats(col)
    out["before"] = _search_block(col, queries, truth, range(cut[0], cut[1]))
    out["calibration_wait_after_before_s"], _ = _wait_calibration()  # the real-query curve, if it started
    c1 = _cpu()
    # the searchers' queries: rows LOAD_ROWS of the data set, never added (real texts the collection does not
    # hold, like the held-out queries; a cache-friendlier load, such as stored rows, calibrates the new
    # index on easier queries than users send), each moved by a little noise so none repeats exactly
    load_rows = reader.read_rows(np.arange(*LOAD_ROWS))

    held_out = list(range(cut[2] - 1, cut[1] - 1, -1))  # popped from the end: cut[1] first
    next_held = [0.0]  # earliest time the next held-out query may be sent (paced over the rebuild)
    rebuilding, stop = threading.Event(), threading.Event()
    t_rc = [time.perf_counter()]  # set again when the reconfigure starts
    # start, end, held-out index (-1: a load query), ids (held-out only), valid, how the cache served it;
    # and every 10th load query's vector and ids
    log: list[tuple[float, float, int, list[int], bool, str]] = []
    load_kept: list[tuple[float, np.ndarray, list[int]]] = []
    errors: list[str] = []
    lock = threading.Lock()

    def worker(seed: int) -> None:
        rng = np.random.default_rng(seed)
        sent = 0
        while not stop.is_set():
            i = -1
            if rebuilding.is_set():
                with lock:
                    now = time.perf_counter()
                    if held_out and now >= next_held[0]:
                        i = held_out.pop()
                        next_held[0] = now + spec["held_pace_s"]
            if i >= 0:
                q = queries[i]
            else:
                row = load_rows[rng.integers(len(load_rows))]
                q = row + rng.standard_normal(row.shape).astype(np.float32) * 0.02
                q /= np.linalg.norm(q)
            ts = time.perf_counter()
            try:
                hits = col.search(q, k=K)
                ids = [int(h.id) for h in hits]
                scores = [h.score for h in hits]
                ok = len(ids) == K and len(set(ids)) == K and all(0 <= x < n for x in ids)
                ok = ok and all(a >= b - 1e-6 for a, b in itertools.pairwise(scores))
            except Exception as exc:  # counted, never raised: the acceptance is zero of these
                with lock:
                    errors.append(
                        f"{type(exc).__name__}: {exc} at {time.perf_counter() - t_rc[0]:.1f} s; "
                        + " | ".join(traceback.format_exc().strip().splitlines()[-12:])
                    )
                continue
            te = time.perf_counter()
            sent += 1
            cache = str(getattr(getattr(hits, "plan", None), "result_cache", None))
            with lock:
                log.append((ts, te, i, ids if i >= 0 else [], ok, cache))
                if i < 0 and sent % 10 == 0:
                    load_kept.append((ts, q.copy(), ids))

    threads = [
        threading.Thread(target=worker, args=(s,), name=f"searcher-{s}") for s in range(SEARCH_THREADS)
    ]
    for th in threads:
        th.start()
    time.sleep(2.0)  # the searchers run before the rebuild starts
    progress: list[tuple[float, float, float]] = []
    t_rc[0] = time.perf_counter()
    handle = col.reconfigure(quantization=target)
    rebuilding.set()
    while not handle.done:
        progress.append(
            (round(time.perf_counter() - t_rc[0], 2), round(handle.progress, 3), os.getloadavg()[0])
        )
        time.sleep(0.5)
        if time.perf_counter() - t_rc[0] > spec["timeout"]:
            break
    t_done = time.perf_counter()
    timed_out = not handle.done
    time.sleep(2.0)  # and after the swap
    stop.set()
    for th in threads:
        th.join()
    c2 = _cpu()
    out["reconfigure"] = {
        "timed_out": timed_out,
        "seconds": handle.seconds,
        "wall_s": round(t_done - t_rc[0], 2),
        "error": repr(handle.error) if handle.error else None,
        "progress": progress,
    }
    during = [e for e in log if e[0] >= t_rc[0] and e[1] <= t_done]
    held = [e for e in during if e[2] >= 0]
    out["searches"] = {
        "total": len(log),
        "errors": len(errors),
        "error_samples": errors[:5],
        "invalid_answers": sum(not e[4] for e in log),
        "answered_during_rebuild": len(during),
        "answered_during_rebuild_per_s": round(len(during) / max(t_done - t_rc[0], 1e-9), 1),
        "latency_during_rebuild": _ms([e[1] - e[0] for e in during]),
        "latency_outside_rebuild": _ms([e[1] - e[0] for e in log if e[1] < t_rc[0] or e[0] > t_done]),
        "heldout_during_rebuild": len(held),
        "heldout_span_s": [round(held[0][0] - t_rc[0], 2), round(held[-1][1] - t_rc[0], 2)] if held else None,
        "recall_during_rebuild": _recall([e[3] for e in held], truth[[e[2] for e in held]]) if held else None,
        "result_cache_during_rebuild": dict(Counter(e[5] for e in during)),
        "load_query_recall": _load_recall(spec, load_kept, t_rc[0], t_done),
    }
    _settle(col)
    out["config_after"] = repr(col.config)
    out["stats_after"] = _memory_stats(col)
    out["after"] = _search_block(col, queries, truth, range(cut[2], cut[3]))
    out["calibration_wait_after_swap_s"], _ = _wait_calibration()
    out["after_calibrated"] = _search_block(col, queries, truth, range(cut[3], cut[4]))
    out["curve_after"] = _curve(col)
    out["cpu"] = {"ingest": _cpu_delta(c0, c1), "reconfigure": _cpu_delta(c1, c2)}
    db.close()
    reader.close()
    return out


def _load_recall(
    spec: dict[str, Any], kept: list[tuple[float, np.ndarray, list[int]]], t_rc: float, t_done: float
) -> dict[str, Any]:
    """recall@10 of the sampled load queries against the exact answer, before / during / after the rebuild
    (every 10th load query of each thread, so the whole rebuild is covered, not only where the held-out
    queries fell)."""
    from embeddix_core.eval import exact_knn

    if not kept:
        return {}
    base = np.load(spec["base"], mmap_mode="r")[: spec["n"]]
    truth = exact_knn(base, np.stack([k[1] for k in kept]), K, "cosine").indices
    out: dict[str, Any] = {}
    for name, pick in (
        ("before", lambda t: t < t_rc),
        ("during", lambda t: t_rc <= t <= t_done),
        ("after", lambda t: t > t_done),
    ):
        rows = [j for j, k in enumerate(kept) if pick(k[0])]
        out[name] = {
            "n": len(rows),
            "recall_at_10": _recall([kept[j][2] for j in rows], truth[rows]) if rows else None,
        }
    return out


CHILDREN: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    "build": child_build,
    "open": child_open,
    "pq": child_pq,
    "reconfigure": child_reconfigure,
}


def _run_child(name: str, spec: dict[str, Any]) -> dict[str, Any]:
    """Run a child in a fresh interpreter (stderr shown as it goes); its last stdout line is the JSON."""
    before = _cpu()
    cmd = [sys.executable, "-m", "benchmarks.memory_bench", "--child", name, json.dumps(spec)]
    res = subprocess.run(cmd, cwd=ROOT, stdout=subprocess.PIPE, text=True, check=False)
    if res.returncode != 0:
        raise RuntimeError(f"child {name} exited with {res.returncode}")
    out = json.loads(res.stdout.strip().splitlines()[-1])
    out["machine_during_child"] = _cpu_delta(before, _cpu())
    return out


def _dir_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


# ------------------------------------------------------------------------------------------------ parts


def _dataset(name: str) -> Path:
    path = DATA / name
    if not (path / "meta.json").exists():
        size = name.split("-")[-1]
        flag = "--realtext" if name.startswith("realtext") else "--synthetic"
        raise SystemExit(
            f"{path} is missing: build it first with `python -m benchmarks.datasets {flag} {size}`"
        )
    return path


def _prefix_truth(src: Path, n: int, nq: int, work: Path) -> str:
    """Exact top-10 of the first ``nq`` queries over the first ``n`` base rows (a prefix of a data set)."""
    from embeddix_core.eval import exact_knn

    out = work / f"gt-{src.name}-{n}.npy"
    if not out.exists():
        base = np.load(src / "base.npy", mmap_mode="r")[:n]
        np.save(out, exact_knn(base, np.load(src / "queries.npy")[:nq], K, "cosine").indices)
    return str(out)


def _spec(src: Path, n: int, nq: int, work: Path) -> dict[str, Any]:
    full = int(json.loads((src / "meta.json").read_text())["n_base"])
    if n > full:
        raise SystemExit(f"{src.name} holds {full:,} rows; asked for {n:,}")
    truth = str(src / "gt_cosine_k100.npy") if n == full else _prefix_truth(src, n, nq, work)
    return {
        "base": str(src / "base.npy"),
        "queries": str(src / "queries.npy"),
        "truth": truth,
        "n": n,
        "nq": nq,
    }


def part1(n: int, nq: int, work: Path) -> dict[str, Any]:
    src = _dataset("synth768-1000000") if n > 200_000 else _dataset("synth768-200000")
    spec = {**_spec(src, n, nq, work), "path": str(work / "p1"), "profile": "memory"}
    _log(f"part 1: {n:,} x 768 from {src.name}, profile=memory: ingest child")
    build = _run_child("build", spec)
    _log(f"part 1: build {build['build_s']:.1f} s; open child")
    opened = _run_child("open", spec)
    return {"dataset": src.name, "n": n, "queries": nq, "build": build, "open": opened}


def part2(n: int, nq: int, work: Path) -> dict[str, Any]:
    src = _dataset("synth768-200000")
    spec = _spec(src, n, nq, work)
    _log(f"part 2: IVF-PQ on {n:,} x 768 from {src.name}")
    out = _run_child("pq", {**spec, "path": str(work / "p2"), "caches_off": False})
    _log("part 2: diagnostic run with every cache budget at 0")
    diag = _run_child("pq", {**spec, "path": str(work / "p2-diag"), "caches_off": True})
    return {"dataset": src.name, **out, "diagnostic_caches_off": diag}


def part3(quick: bool) -> dict[str, Any]:
    from benchmarks import quant_bench

    n, nq = (20_000, 300) if quick else (100_000, 1_000)
    _log(f"part 3: quant_bench engine children none and fp16 ({n:,} x 384)")
    out: dict[str, Any] = {"dataset": quant_bench.DATA.name, "n": n, "queries": nq}
    out["command"] = "python -m benchmarks.quant_bench" + (" --quick" if quick else "")
    for q in ("none", "fp16"):
        before = _cpu()
        res = quant_bench._run_child("engine", q, n, nq)
        res["machine_during_child"] = _cpu_delta(before, _cpu())
        out[q] = res
    return out


def part4(n: int, nq: int, work: Path, target: str, timeout: float) -> dict[str, Any]:
    src = _dataset("realtext-100000")
    _log(f"part 4: reconfigure none -> {target} under {SEARCH_THREADS} search threads ({n:,} x 384)")
    spec = {
        **_spec(src, n, nq, work),
        "path": str(work / "p4"),
        "target": target,
        "timeout": timeout,
        "held_pace_s": 0.1,
    }
    return {"dataset": src.name, **_run_child("reconfigure", spec)}


# ----------------------------------------------------------------------------------------------- report


def _mb(b: float | None) -> str:
    return "-" if b is None else f"{b / 1e6:,.0f} MB"


def _f(v: Any, nd: int = 3) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.{nd}f}"
    return str(v)


def _sweep_diffs(none: dict[str, Any], fp16: dict[str, Any]) -> list[tuple[int, float]]:
    """(ef, fp16 recall - none recall) at every ef both of quant_bench's explicit sweeps measured."""
    a = {p["ef"]: p["recall_at_10"] for p in none.get("sweep", [])}
    return [(p["ef"], p["recall_at_10"] - a[p["ef"]]) for p in fp16.get("sweep", []) if p["ef"] in a]


def _checks(res: dict[str, Any]) -> list[tuple[str, str, str, bool | None]]:
    """(check, limit, measured, passed) per acceptance line."""
    out: list[tuple[str, str, str, bool | None]] = []
    p1 = res["parts"].get("1")
    if p1:
        b, o = p1["build"], p1["open"]
        name = f"{p1['n']:,} x 768 memory profile"
        for label, mem in (
            ("RSS after adds (ingest process)", b["rss_after_adds"]),
            ("RSS after build, all background work done (ingest process)", b["rss_after_build"]),
            ("RSS after queries (fresh process)", o["rss_after_queries"]),
        ):
            out.append((f"{name}: {label}, VmRSS", "< 1.0 GB", _mb(mem["VmRSS"]), mem["VmRSS"] < RSS_LIMIT))
        out.append(
            (
                f"{name}: peak VmHWM, ingest process",
                "< 1.0 GB",
                _mb(b["rss_after_close"]["VmHWM"]),
                b["rss_after_close"]["VmHWM"] < RSS_LIMIT,
            )
        )
        out.append(
            (
                f"{name}: peak VmHWM, fresh process",
                "< 1.0 GB",
                _mb(o["rss_after_close"]["VmHWM"]),
                o["rss_after_close"]["VmHWM"] < RSS_LIMIT,
            )
        )
        out.append(
            (
                f"{name}: open + get_collection + first search",
                "< 5 s",
                f"{o['open_s']:.2f} s",
                o["open_s"] < OPEN_LIMIT_S,
            )
        )
        load = b["cpu"]["adds"]["load_start"][0], b["cpu"]["calibration_and_retrains"]["load_end"][0]
        out.append(
            (
                f"{name}: build (adds {b['adds_s']:.0f} s + until every training/retrain ended "
                f"{b['settle_s']:.0f} s), load {load[0]}-{load[1]}",
                "< 300 s",
                f"{b['build_s']:.0f} s",
                b["build_s"] < BUILD_LIMIT_S,
            )
        )
        out.append(
            (
                f"{name}: recall@10, first {FIRST} queries",
                ">= 0.95 (reported)",
                _f(o["first"]["recall_at_10"], 4),
                None,
            )
        )
        out.append(
            (
                f"{name}: recall@10, the rest, after calibration",
                ">= 0.95",
                _f(o["rest"]["recall_at_10"], 4),
                o["rest"]["recall_at_10"] >= RECALL_TARGET,
            )
        )
    p2 = res["parts"].get("2")
    if p2:
        per = p2["stats_after_ingest"]["memory"]["per_vector"]["resident"]
        out.append(
            ("IVF-PQ 768-d: resident bytes/vector, stats().memory", "< 200", _f(per, 1), per < PQ_BYTES_LIMIT)
        )
        anon = p2["rss_anon_per_vector_trimmed"]
        out.append(
            (
                "IVF-PQ 768-d: RssAnon delta/vector (trimmed, caches included)",
                "< 200",
                _f(anon, 1),
                anon < PQ_BYTES_LIMIT,
            )
        )
        q = p2["rest"]["queries"]
        rec = p2["rest"]["recall_at_10"]
        out.append(
            (
                f"IVF-PQ 768-d: recall@10, default search, queries {q[0]}-{q[1]}",
                ">= 0.95",
                _f(rec, 4),
                rec >= RECALL_TARGET,
            )
        )
        p95 = p2["rest"]["p95_ms"]
        out.append(
            (
                f"IVF-PQ 768-d: p95 single thread, default search, queries {q[0]}-{q[1]}",
                "< 10 ms",
                f"{p95:.2f} ms",
                p95 < P95_LIMIT_MS,
            )
        )
        diag = p2.get("diag_after_calibrate")
        if diag:
            out.append(
                (
                    "(diagnostic: after an explicit col.calibrate()) IVF-PQ recall@10 / p95",
                    ">= 0.95 / < 10 ms",
                    f"{_f(diag['recall_at_10'], 4)} / {diag['p95_ms']:.2f} ms",
                    None,
                )
            )
        off = p2.get("diagnostic_caches_off")
        if off:
            out.append(
                (
                    "(diagnostic: every cache budget 0) IVF-PQ RssAnon delta/vector, trimmed",
                    "< 200",
                    _f(off["rss_anon_per_vector_trimmed"], 1),
                    None,
                )
            )
    p3 = res["parts"].get("3")
    if p3:
        none, fp16 = p3["none"], p3["fp16"]
        half = 384 * 2  # half of a float32 384-d vector: what fp16 should save per vector
        for label, key in (
            ("index bytes/vector (stats)", "index_bytes_per_vector"),
            ("RssAnon bytes/vector", "rss_anon_bytes_per_vector"),
            ("VmRSS bytes/vector (RssAnon + RssFile)", "rss_bytes_per_vector"),
        ):
            saved = none[key] - fp16[key]
            out.append(
                (
                    f"fp16 vs none: {label} saved (half a float32 vector = 768)",
                    ">= 0.9 x 768",
                    f"{saved:.0f} ({none[key]:.0f} -> {fp16[key]:.0f})",
                    saved >= 0.9 * half,
                )
            )
        d = fp16["recall_at_10"] - none["recall_at_10"]
        out.append(
            (
                "fp16 vs none: recall@10 difference, default search (target 0.95 for both)",
                "|d| <= 0.005",
                f"{d:+.4f}",
                abs(d) <= FP16_RECALL_SLACK,
            )
        )
        diffs = _sweep_diffs(none, fp16)
        if diffs:
            worst = min(diffs, key=lambda x: x[1])
            big = max(diffs, key=lambda x: abs(x[1]))
            out.append(
                (
                    "fp16 vs none: recall@10 lost at equal ef (cache=False), worst over ef "
                    + ", ".join(str(e) for e, _ in diffs)
                    + f" (largest |d| {big[1]:+.4f} at ef {big[0]}: fp16 re-ranks, float32 does not)",
                    "d >= -0.005",
                    f"{worst[1]:+.4f} at ef {worst[0]}",
                    worst[1] >= -FP16_RECALL_SLACK,
                )
            )
    p4 = res["parts"].get("4")
    if p4:
        s = p4["searches"]
        out.append(
            (f"reconfigure none -> {p4['target']}: search errors", "0", str(s["errors"]), s["errors"] == 0)
        )
        out.append(
            ("reconfigure: invalid answers", "0", str(s["invalid_answers"]), s["invalid_answers"] == 0)
        )
        out.append(
            (
                "reconfigure: searches answered during the rebuild",
                "> 0",
                str(s["answered_during_rebuild"]),
                s["answered_during_rebuild"] > 0,
            )
        )
        for key, label in (
            ("before", "before"),
            ("after", "right after the swap"),
            ("after_calibrated", "after recalibration"),
        ):
            r = p4[key]["recall_at_10"]
            out.append((f"reconfigure: recall@10 {label}", ">= 0.95", _f(r, 4), r >= RECALL_TARGET))
        r = s["recall_during_rebuild"]
        out.append(
            (
                "reconfigure: recall@10 during the rebuild",
                ">= 0.95",
                _f(r, 4),
                None if r is None else r >= RECALL_TARGET,
            )
        )
    return out


def render(res: dict[str, Any]) -> str:
    lines = [
        f"# Memory benchmark (issue #16){' --quick' if res['quick'] else ''}",
        "",
        f"Command: `{res['command']}`  ",
        f"Machine: {res['machine']['nproc']} cores, {res['machine']['mem_total_bytes'] / 2**30:.0f} GiB; "
        f"load average at start {res['load_start']}, at end {res['load_end']}; git {res['machine']['git_rev'][:10]} "
        f"({len(res['machine']['git_dirty_files'])} modified files)",
        "",
        "## Acceptance",
        "",
        "| check | limit | measured | |",
        "|---|---|---|---|",
    ]
    for check, limit, value, ok in _checks(res):
        lines.append(f"| {check} | {limit} | {value} | {'-' if ok is None else 'PASS' if ok else 'FAIL'} |")
    p1 = res["parts"].get("1")
    if p1:
        b, o = p1["build"], p1["open"]
        lines += ["", f"## 1. {p1['n']:,} x 768 ({p1['dataset']}), profile=memory", ""]
        lines += [
            "| ingest process | VmRSS | RssAnon | RssFile | VmHWM (peak so far) | at |",
            "|---|---|---|---|---|---|",
        ]
        for key, at in (
            ("rss_baseline", "after imports"),
            ("rss_created", "collection created"),
            ("rss_after_adds", f"adds done ({b['adds_s']:.0f} s)"),
            ("rss_after_index_settle", f"ingest's own IVF training done (+{b['index_settle_s']:.0f} s)"),
            (
                "rss_after_build",
                f"calibration and the retrains it started done (+{b['settle_all']['seconds']:.0f} s)",
            ),
            ("rss_after_close", f"closed ({b['close_s']:.1f} s)"),
        ):
            m = b[key]
            lines.append(
                f"| {key.removeprefix('rss_')} | {_mb(m['VmRSS'])} | {_mb(m['RssAnon'])} | {_mb(m['RssFile'])} | {_mb(m['VmHWM'])} | {at} |"
            )
        lines += [""]
        for phase, c in b["cpu"].items():
            lines.append(
                f"- {phase}: {c['wall_s']} s, load {c['load_start']} -> {c['load_end']}, machine busy {c['machine_busy_cores']} "
                f"cores, this process {c['own_cores']}, others {c['other_cores']}"
            )
        ib = b["index_after_build"]
        lines.append(
            f"- index after build: {ib['kind']}, nlist {ib['nlist']}, background retrains {ib['retrains']}; "
            f"stats().memory per vector {b['stats_after_build']['memory'].get('per_vector')}; disk {_mb(b['disk_bytes'])}; "
            f"spot check mismatches {b['spot_check_mismatches']}"
        )
        lines += ["", "Background work during the build (seconds from the first add):", ""]
        lines += [
            f"- {e['t_s']} s: {e['event']} (rows {e['rows']:,}, nlist {e['nlist']}, curve {e['curve_source']})"
            for e in b["background_events"]
        ]
        lines += ["", "| fresh process | VmRSS | RssAnon | RssFile | VmHWM |", "|---|---|---|---|---|"]
        for key in (
            "rss_baseline",
            "rss_after_open",
            "rss_after_first",
            "rss_after_queries",
            "rss_after_close",
        ):
            m = o[key]
            lines.append(
                f"| {key.removeprefix('rss_')} | {_mb(m['VmRSS'])} | {_mb(m['RssAnon'])} | {_mb(m['RssFile'])} | {_mb(m['VmHWM'])} |"
            )
        lines += [
            "",
            f"Open: Embeddix.open {o['open_db_s']:.2f} s, + get_collection {o['get_collection_s']:.2f} s, + first search "
            f"{o['open_s']:.2f} s (imports before it: {o['import_s']:.2f} s). Calibration after the first {FIRST} queries "
            f"took {o['calibration_wait_s']:.1f} s more; finished {o['calibration_done_at_s']:.1f} s after the open.",
            "",
            "| queries | recall@10 | p50 ms | p95 ms | p99 ms | max ms | sent while calibrating | plan ef |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for key in ("first", "rest"):
            q = o[key]
            lines.append(
                f"| {q['queries'][0]}-{q['queries'][1]} | {_f(q['recall_at_10'], 4)} | {q.get('p50_ms')} | {q.get('p95_ms')} | "
                f"{q.get('p99_ms')} | {q.get('max_ms')} | {q['while_calibrating']} | {q['plan_ef']} |"
            )
        lines += ["", "Background work in the fresh process (seconds from the open):", ""]
        lines += [
            f"- {e['t_s']} s: {e['event']} (rows {e['rows']:,}, nlist {e['nlist']}, curve {e['curve_source']})"
            for e in o["background_events"]
        ]
        lines.append("")
        lines.append(f"stats().memory after the queries: `{json.dumps(o['stats']['memory'])}`")
    p2 = res["parts"].get("2")
    if p2:
        mem = p2["stats_after_ingest"]["memory"]
        lines += [
            "",
            f'## 2. IVF-PQ + rerank, {p2["n"]:,} x 768 ({p2["dataset"]}), quantization="pq"',
            "",
            f"- stats().memory resident: {mem['resident']} = {mem['per_vector']['resident']} bytes/vector",
            f"- RssAnon over the baseline (after a warm-up collection was trained, searched and closed, then create_collection): {p2['rss_anon_per_vector']} bytes/vector "
            f"({p2['rss_anon_per_vector_trimmed']} after malloc_trim; {p2['rss_anon_per_vector_after_queries']} after the queries; over the RssAnon right after the imports, before the warm-up, trimmed: {p2['rss_anon_per_vector_trimmed_over_imports']}; RssAnon given back by close(), after the queries: {p2['rss_anon_freed_by_close_per_vector']}); "
            f"result cache {p2['cache_info_after_ingest'].get('bytes')} bytes after ingest, {p2['cache_info_after_queries'].get('bytes')} after the queries",
            f"- build {p2['build_s']:.0f} s (adds {p2['adds_s']:.0f} s + settle {p2['settle_s']:.0f} s); "
            f"load {p2['cpu']['ingest']['load_start']} -> {p2['cpu']['ingest']['load_end']}, others used {p2['cpu']['ingest']['other_cores']} cores",
            "",
            "| queries | recall@10 | p50 ms | p95 ms | p99 ms | sent while calibrating | plan ef |",
            "|---|---|---|---|---|---|---|",
        ]
        rows = [
            ("", p2, "first"),
            ("", p2, "rest"),
            ("diagnostic: after col.calibrate() ", p2, "diag_after_calibrate"),
        ]
        off = p2.get("diagnostic_caches_off") or {}
        rows += [("diagnostic, caches off: ", off, k) for k in ("first", "rest", "diag_after_calibrate")]
        for label, src, key in rows:
            q = src.get(key)
            if not q:
                continue
            lines.append(
                f"| {label}{q['queries'][0]}-{q['queries'][1]} | {_f(q['recall_at_10'], 4)} | {q.get('p50_ms')} | {q.get('p95_ms')} | "
                f"{q.get('p99_ms')} | {q['while_calibrating']} | {q['plan_ef']} |"
            )
        if off:
            lines.append(
                f"\nDiagnostic run with every cache budget 0 (not the default): RssAnon {off['rss_anon_per_vector']} "
                f"bytes/vector ({off['rss_anon_per_vector_trimmed']} after malloc_trim), stats().memory "
                f"{off['stats_after_ingest']['memory']['per_vector']['resident']}."
            )
        if p2.get("diag_curve"):
            lines.append(
                f"\nCurve measured by the explicit calibrate() ({p2['diag_calibrate_s']} s): {p2['diag_curve']}"
            )
    p3 = res["parts"].get("3")
    if p3:
        lines += [
            "",
            f"## 3. fp16 vs none ({p3['dataset']}, {p3['n']:,} x 384; quant_bench's engine child, `{p3['command']}`)",
            "",
            "| quantization | VmRSS bytes/vector | RssAnon bytes/vector | index bytes/vector | recall@10 | p50 ms | p95 ms | ingest s |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for q in ("none", "fp16"):
            e = p3[q]
            lines.append(
                f"| {q} | {e['rss_bytes_per_vector']:.0f} | {e['rss_anon_bytes_per_vector']:.0f} | {e['index_bytes_per_vector']:.0f} | {e['recall_at_10']:.4f} | "
                f"{e['p50_ms']:.3f} | {e['p95_ms']:.3f} | {e['ingest_s']:.0f} |"
            )
        lines.append(
            "\nEqual ef, cache=False (fp16 - none recall@10): "
            + ", ".join(f"ef {ef}: {d:+.4f}" for ef, d in _sweep_diffs(p3["none"], p3["fp16"]))
        )
    p4 = res["parts"].get("4")
    if p4:
        s, r = p4["searches"], p4["reconfigure"]
        lines += [
            "",
            f"## 4. reconfigure none -> {p4['target']} under {SEARCH_THREADS} search threads ({p4['dataset']}, {p4['n']:,} x 384)",
            "",
            f"- rebuild {r['seconds'] and round(r['seconds'], 1)} s (wall {r['wall_s']} s; timed out: {r['timed_out']}; error: {r['error']}); "
            f"load {p4['cpu']['reconfigure']['load_start']} -> {p4['cpu']['reconfigure']['load_end']}",
            f"- searches: {s['total']} total, {s['errors']} errors, {s['invalid_answers']} invalid; "
            f"{s['answered_during_rebuild']} answered during the rebuild ({s['answered_during_rebuild_per_s']}/s), "
            f"latency during {s['latency_during_rebuild']}, outside {s['latency_outside_rebuild']}",
            f"- resident bytes/vector before {p4['stats_before']['memory']['per_vector']}, after {p4['stats_after']['memory']['per_vector']}",
            "",
            "| default search | queries | recall@10 | p50 ms | p95 ms |",
            "|---|---|---|---|---|",
        ]
        for key in ("before", "after", "after_calibrated"):
            q = p4[key]
            lines.append(
                f"| {key} | {q['queries'][0]}-{q['queries'][1]} | {_f(q['recall_at_10'], 4)} | {q.get('p50_ms')} | {q.get('p95_ms')} |"
            )
        lines.append(
            f"| during the rebuild (4 threads) | {s['heldout_during_rebuild']} held-out | {_f(s['recall_during_rebuild'], 4)} | "
            f"{s['latency_during_rebuild'].get('p50_ms')} | {s['latency_during_rebuild'].get('p95_ms')} |"
        )
        lr = s.get("load_query_recall") or {}
        lines += [
            "",
            "Searchers' own queries (every 10th, against exact truth): "
            + ", ".join(f"{k}: {_f(v['recall_at_10'], 4)} (n={v['n']})" for k, v in lr.items())
            + f"; how the result cache served those during the rebuild: {s.get('result_cache_during_rebuild')}; "
            f"held-out queries sent between {s.get('heldout_span_s')} s after the reconfigure started.",
            f"Progress (s, fraction, load1): {r['progress'][:: max(1, len(r['progress']) // 12)]}",
        ]
        for e in s["error_samples"]:
            lines.append(f"- error: `{e}`")
    return "\n".join(lines) + "\n"


def _machine() -> dict[str, Any]:
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True).stdout.strip()

    mem_total = 0
    with contextlib.suppress(OSError), open("/proc/meminfo") as fh:
        mem_total = int(next(line for line in fh if line.startswith("MemTotal")).split()[1]) * 1024
    return {
        "nproc": os.cpu_count(),
        "mem_total_bytes": mem_total,
        "python": platform.python_version(),
        "numpy": np.__version__,
        "git_rev": git("rev-parse", "HEAD"),
        "git_dirty_files": git("status", "--porcelain", "--untracked-files=no").splitlines(),
        "embeddix_env": {k: v for k, v in os.environ.items() if k.startswith("EMBEDDIX_")},
        "thread_env": {k: v for k, v in os.environ.items() if k.endswith("_NUM_THREADS")},
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m benchmarks.memory_bench", description=__doc__.splitlines()[0]
    )
    ap.add_argument("--quick", action="store_true", help="small sizes, 300 queries (about 3 minutes)")
    ap.add_argument("--n", type=int, default=None, help="part 1 rows (default 1,000,000; --quick 100,000)")
    ap.add_argument("--parts", default="1,2,3,4", help="which parts to run, e.g. 1 or 2,4 (default all)")
    ap.add_argument("--reconfigure-to", default="sq8", choices=("sq8", "pq"), help="part 4's target")
    ap.add_argument("--reconfigure-timeout", type=float, default=1800.0, help="part 4 gives up after this")
    ap.add_argument("--keep", action="store_true", help="keep the data directories (path printed)")
    ap.add_argument("--child", nargs=2, metavar=("NAME", "SPEC"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        print(json.dumps(CHILDREN[args.child[0]](json.loads(args.child[1])), default=str))
        return 0
    parts = sorted(set(args.parts.split(",")))
    n1 = args.n or (100_000 if args.quick else 1_000_000)
    nq = 300 if args.quick else 1_000
    cmd = "python -m benchmarks.memory_bench " + " ".join(argv if argv is not None else sys.argv[1:])
    work = Path(tempfile.mkdtemp(prefix="memory_bench-", dir=os.environ.get("MB_TMP")))
    start = _cpu()
    res: dict[str, Any] = {
        "command": cmd.strip(),
        "quick": args.quick,
        "machine": _machine(),
        "load_start": start["load"],
        "targets": {
            "rss_bytes": RSS_LIMIT,
            "open_s": OPEN_LIMIT_S,
            "build_s": BUILD_LIMIT_S,
            "recall_at_10": RECALL_TARGET,
            "pq_resident_bytes_per_vector": PQ_BYTES_LIMIT,
            "pq_p95_ms": P95_LIMIT_MS,
            "fp16_recall_slack": FP16_RECALL_SLACK,
        },
        "parts": {},
    }
    try:
        if "1" in parts:
            res["parts"]["1"] = part1(n1, nq, work)
        if "2" in parts:
            res["parts"]["2"] = part2(50_000 if args.quick else 200_000, nq, work)
        if "3" in parts:
            res["parts"]["3"] = part3(args.quick)
        if "4" in parts:
            res["parts"]["4"] = part4(
                20_000 if args.quick else LOAD_ROWS[0],
                nq,
                work,
                args.reconfigure_to,
                args.reconfigure_timeout,
            )
    finally:
        if args.keep:
            _log(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    res["load_end"] = [round(x, 2) for x in os.getloadavg()]
    res["machine_during_run"] = _cpu_delta(start, _cpu())
    res["checks"] = [
        {"check": c, "limit": lim, "measured": v, "passed": ok} for c, lim, v, ok in _checks(res)
    ]
    stem = "memory_bench" + ("_quick" if args.quick else "")
    if args.n and args.n != (100_000 if args.quick else 1_000_000):
        stem += f"_n{args.n}"
    if parts != ["1", "2", "3", "4"]:
        stem += "_parts" + "".join(parts)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{stem}.json").write_text(json.dumps(res, indent=1, default=str) + "\n")
    print(render(res))
    _log(f"wrote {RESULTS / f'{stem}.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
