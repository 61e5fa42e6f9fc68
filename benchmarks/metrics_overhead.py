"""What the metrics hooks (``embeddix_core/metrics.py``) add to a call, in nanoseconds.

Three measurements, each the median of ``--rounds`` rounds (the order of the variants alternates every
round, so drift in CPU frequency or cache state falls on both):

1. **hook**: a method doing nothing, called bare and through ``@timed`` (the wrapper, the
   ``perf_counter_ns`` pair, the bucket index and the locked increment): the overhead itself, at the
   resolution of the clock. Reported as the fastest round (what the code costs; other processes on a
   shared machine only ever add) and the median round. OpenTelemetry's API is installed in the project's venv, so this includes the
   auto mode's check for a tracer provider (none is installed here).
2. **search**: ``col.search`` on an exact 2,000 x 384 collection, default arguments, caching off (a new
   query every call), through the decorated method and through the undecorated function
   (``Collection.search.__wrapped__``) on the same collection: the same difference inside real work, where
   it drowns in the call's own noise (~0.1-0.4 ms a call); the hook figure is the precise one.
3. **traced**: the hook with an OpenTelemetry SDK provider configured (only when ``opentelemetry-sdk`` is
   installed): the price of turning spans on, paid only then.

Run::

    python -m benchmarks.metrics_overhead             # writes benchmarks/results/metrics_overhead.json
    python -m benchmarks.metrics_overhead --rounds 5 --calls 20000

Results: ``benchmarks/results/metrics_overhead.json`` (and the summary printed).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from embeddix_core import Collection, Embeddix
from embeddix_core import metrics as m

RESULTS = Path(__file__).resolve().parent / "results"


class _Probe:
    """The smallest object the ``@timed`` hook accepts: a meter and a name."""

    def __init__(self) -> None:
        self._meter = m.Meter(m.OPERATIONS)
        self.name = "probe"

    def bare(self, x: int, *, k: int = 10) -> int:
        return x

    @m.timed("search")
    def hooked(self, x: int, *, k: int = 10) -> int:
        return x


def _per_call_ns(fn: Callable[[], Any], calls: int) -> float:
    t0 = time.perf_counter_ns()
    for _ in range(calls):
        fn()
    return (time.perf_counter_ns() - t0) / calls


def _paired(
    a: Callable[[], Any], b: Callable[[], Any], calls: int, rounds: int, pick: Callable[[list[float]], float]
) -> tuple[float, float]:
    """``pick`` (min or median) of the rounds' ns per call of ``a`` and of ``b``, alternating the order."""
    ra: list[float] = []
    rb: list[float] = []
    for r in range(rounds):
        if r % 2:
            rb.append(_per_call_ns(b, calls))
            ra.append(_per_call_ns(a, calls))
        else:
            ra.append(_per_call_ns(a, calls))
            rb.append(_per_call_ns(b, calls))
    return pick(ra), pick(rb)


def hook_overhead(calls: int, rounds: int) -> dict[str, float]:
    p = _Probe()
    out: dict[str, float] = {}
    for label, pick in (("min", min), ("median", statistics.median)):
        bare, hooked = _paired(lambda: p.bare(1, k=10), lambda: p.hooked(1, k=10), calls, rounds, pick)
        out[f"bare_call_ns_{label}"] = round(bare, 1)
        out[f"hooked_call_ns_{label}"] = round(hooked, 1)
        out[f"overhead_ns_{label}"] = round(hooked - bare, 1)
    h = m.LatencyHistogram()
    out["observe_ns_min"] = round(
        min(_per_call_ns(lambda: h.observe(123_456), calls) for _ in range(rounds)), 1
    )
    out["perf_counter_ns_ns_min"] = round(
        min(_per_call_ns(time.perf_counter_ns, calls) for _ in range(rounds)), 1
    )
    return out


def search_overhead(calls: int, rounds: int) -> dict[str, Any]:
    rng = np.random.default_rng(0)
    n, dim = 2_000, 384
    with Embeddix.open(None) as db:
        col = db.create_collection("bench", dim=dim)
        col.add([str(i) for i in range(n)], rng.standard_normal((n, dim)).astype(np.float32))
        queries = rng.standard_normal((256, dim)).astype(np.float32)
        undecorated = Collection.search.__wrapped__  # type: ignore[attr-defined]
        i = 0

        def hooked() -> None:
            nonlocal i
            col.search(queries[i & 255], k=10, cache=False)
            i += 1

        def bare() -> None:
            nonlocal i
            undecorated(col, queries[i & 255], k=10, cache=False)
            i += 1

        for _ in range(200):  # warm the row cache and the code paths
            hooked()
            bare()
        b, h = _paired(bare, hooked, calls, rounds, statistics.median)
        count = col._meter.hist["search"].snapshot().count
    return {
        "collection": f"exact, {n:,} x {dim}, cache=False",
        "bare_search_us": round(b / 1e3, 2),
        "hooked_search_us": round(h / 1e3, 2),
        "difference_ns": round(h - b, 1),
        "searches_counted": count,
    }


def traced_overhead(calls: int, rounds: int) -> dict[str, Any] | None:
    try:
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    except ImportError:
        return None
    provider = TracerProvider()
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    p = _Probe()
    m.configure_tracing(provider)
    try:
        bare, hooked = _paired(lambda: p.bare(1), lambda: p.hooked(1), calls, rounds, min)
        exporter.clear()
    finally:
        m.configure_tracing(None)
    return {"traced_overhead_ns": round(hooked - bare, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--calls", type=int, default=200_000, help="calls per round of the hook measurement")
    ap.add_argument("--search-calls", type=int, default=2_000, help="searches per round")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--out", type=Path, default=RESULTS / "metrics_overhead.json")
    args = ap.parse_args()
    hook = hook_overhead(args.calls, args.rounds)
    search = search_overhead(args.search_calls, args.rounds)
    traced = traced_overhead(max(args.calls // 20, 1_000), args.rounds)
    result = {
        "python": sys.version.split()[0],
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "load_average_1min": round(os.getloadavg()[0], 2),
        "rounds": args.rounds,
        "hook": hook,
        "search": search,
        "traced": traced,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(
        f"hook overhead: {hook['overhead_ns_min']:.0f} ns a call, fastest round (median round "
        f"{hook['overhead_ns_median']:.0f} ns; bare call {hook['bare_call_ns_min']:.0f} ns; observe() "
        f"{hook['observe_ns_min']:.0f} ns; perf_counter_ns() {hook['perf_counter_ns_ns_min']:.0f} ns; "
        f"load average {result['load_average_1min']} on {result['cpus']} cpus)"
    )
    print(
        f"col.search ({search['collection']}): bare {search['bare_search_us']:.1f} us, hooked "
        f"{search['hooked_search_us']:.1f} us, difference {search['difference_ns']:.0f} ns (noise-bound)"
    )
    if traced is not None:
        print(f"with an OpenTelemetry SDK provider (spans on): {traced['traced_overhead_ns']:.0f} ns a call")
    print(f"written: {args.out}")


if __name__ == "__main__":
    main()
