"""Counters and latency histograms of one process, the ``db.metrics()`` snapshot, and optional tracing.

What is measured, and where:

* every public collection operation that searches or writes (``OPERATIONS``: ``search``, ``search_batch``,
  ``search_iter``, ``add``, ``upsert``, ``update``, ``delete``; ``update_metadata`` counts as the
  ``update`` it makes): one :class:`LatencyHistogram` per collection and
  operation, plus failures counted by exception type. The collection's methods carry :func:`timed`;
  a call that raises is counted in ``errors`` and not in the histogram (so ``count`` is successful calls);
* embedding: every model call (``embed_documents`` of each embedder, which ``embed_query`` goes through),
  per ``model_id``, process-wide (:func:`timed_embed`; an embedding cache hit calls no model and is not
  counted);
* the rest is read at snapshot time from the parts that already keep it: the result cache's counters
  (``Collection.cache_info``), the index (``Collection.stats``), the calibration curve and the background
  work (calibration thread, write buffer, index flush).

Cost rule: the hot path pays the decorator's call, one ``time.perf_counter_ns`` pair, a bucket index from
``int.bit_length`` and three increments under an uncontended ``threading.Lock``: under 1 us a call (0.8 us
on the project's 2-core machine, where a bare method call costs 60 ns; ``benchmarks/metrics_overhead.py``),
against ``col.search``'s ~75 us of Python. About a third of it is the wrapper's argument passing, a fifth
the lock; a lock-free per-thread histogram would save that fifth at the price of a histogram per thread.
Nothing here imports a metrics framework: the MCP server turns :meth:`Embeddix.metrics` into Prometheus
exposition at scrape time.

Histogram layout: log-linear, four buckets per power of two of nanoseconds, so any quantile read from it is
within ~12% of the true value (a bucket spans at most a quarter of an octave), from 8 ns to ~73 min.
Snapshots give the cumulative counts at the octave edges ``EXPORT_EDGES`` (4 us ... 34 s), which are exact
bucket edges, so a Prometheus histogram built from them is exact at every ``le``.

Tracing: when the OpenTelemetry API is importable and a real tracer provider is installed (the API's
default proxy provider means nobody listens), each timed operation is also a span ``embeddix.<operation>``
with the collection's name; :func:`configure_tracing` sets a provider explicitly (or turns spans off). Without
OpenTelemetry, :func:`span` is a no-op and the hot path checks one attribute.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import inspect
import threading
import time
from collections.abc import Callable, Generator, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Concatenate, ParamSpec, Protocol, TypeVar

from .errors import ClosedError

__all__ = [
    "EXPORT_EDGES",
    "OPERATIONS",
    "HistogramSnapshot",
    "LatencyHistogram",
    "Meter",
    "Metered",
    "Recommendation",
    "collection_metrics",
    "configure_tracing",
    "database_metrics",
    "embed_metrics",
    "recommendations",
    "span",
    "timed",
    "timed_embed",
]

P = ParamSpec("P")
R = TypeVar("R")

OPERATIONS: tuple[str, ...] = ("search", "search_batch", "search_iter", "add", "upsert", "update", "delete")
EMBED_OPERATIONS: tuple[str, ...] = ("embed",)
SNAPSHOT_VERSION = 1

_ns = time.perf_counter_ns

# -- histograms -------------------------------------------------------------------------------------------
# Bucket 0 holds [0, 8) ns; bucket 1 + 4 * (b - 4) + s holds [(4 + s) << (b - 3), (5 + s) << (b - 3)) for a
# duration of b bits (b >= 4) whose two bits below the leading one are s. The last bucket also takes every
# longer duration (b > _MAX_BITS).
_MAX_BITS = 42
_NBUCKETS = 1 + 4 * (_MAX_BITS - 3)
_LAST = _NBUCKETS - 1


def _bucket_bounds() -> list[tuple[int, float]]:
    """(lower, upper) bound in ns of each bucket (the last one's upper bound is infinite)."""
    out: list[tuple[int, float]] = [(0, 8.0)]
    for b in range(4, _MAX_BITS + 1):
        for s in range(4):
            out.append(((4 + s) << (b - 3), float((5 + s) << (b - 3))))
    out[-1] = (out[-1][0], float("inf"))
    return out


_BOUNDS = _bucket_bounds()
# The Prometheus ``le`` edges: each power of two from 2^12 ns (4.1 us) to 2^35 ns (34 s). 2^e ns is where
# bucket 1 + 4 * (e - 3) starts, so the cumulative count below it is exact.
EXPORT_EDGES: tuple[tuple[float, int], ...] = tuple((2.0**e / 1e9, 1 + 4 * (e - 3)) for e in range(12, 36))


def _bucket(ns: int) -> int:
    b = ns.bit_length()
    if b < 4:
        return 0
    i = 1 + ((b - 4) << 2) + ((ns >> (b - 3)) & 3)
    return i if i < _LAST else _LAST


class LatencyHistogram:
    """Durations of one operation: log-linear buckets of nanoseconds, their sum and maximum.

    Thread-safe: :meth:`observe` takes an uncontended lock (~40 ns); a read-modify-write of a list slot is
    not atomic under the GIL, and lost counts would make ``count`` disagree with the calls made.
    """

    __slots__ = ("_counts", "_lock", "max_ns", "sum_ns")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts = [0] * _NBUCKETS
        self.sum_ns = 0
        self.max_ns = 0

    def observe(self, ns: int) -> None:
        """Count one duration of ``ns`` nanoseconds."""
        # _bucket inlined: a function call is a quarter of this method's cost
        b = ns.bit_length()
        i = 0 if b < 4 else 1 + ((b - 4) << 2) + ((ns >> (b - 3)) & 3)
        if i > _LAST:
            i = _LAST
        with self._lock:
            self._counts[i] += 1
            self.sum_ns += ns
            if ns > self.max_ns:
                self.max_ns = ns

    def snapshot(self) -> HistogramSnapshot:
        """The counts as of now (a consistent copy)."""
        with self._lock:
            return HistogramSnapshot(tuple(self._counts), self.sum_ns, self.max_ns)


@dataclass(frozen=True, slots=True)
class HistogramSnapshot:
    """A copy of a :class:`LatencyHistogram`: per-bucket counts, sum and maximum in nanoseconds."""

    counts: tuple[int, ...]
    sum_ns: int
    max_ns: int

    @property
    def count(self) -> int:
        """How many durations were observed."""
        return sum(self.counts)

    def quantile(self, q: float) -> float | None:
        """The ``q``-quantile in seconds (linear within its bucket, never above the maximum); None if empty.

        Args:
            q: In [0, 1], e.g. 0.99.
        """
        total = self.count
        if total == 0:
            return None
        rank = q * total
        seen = 0
        for i, n in enumerate(self.counts):
            if n and seen + n >= rank:
                lo, hi = _BOUNDS[i]
                hi = min(hi, float(self.max_ns) + 1.0)
                frac = (rank - seen) / n
                return min(lo + frac * max(hi - lo, 0.0), float(self.max_ns)) / 1e9
            seen += n
        return self.max_ns / 1e9

    def cumulative(self) -> list[list[float]]:
        """``[[le_seconds, count of durations below it], ...]`` at :data:`EXPORT_EDGES`, ``+Inf`` last."""
        out: list[list[float]] = []
        running, upto = 0, 0
        for le, first in EXPORT_EDGES:
            running += sum(self.counts[upto:first])
            upto = first
            out.append([le, running])
        out.append([float("inf"), self.count])
        return out

    def as_dict(self) -> dict[str, Any]:
        """Count, sum, latency percentiles in ms and the finite cumulative buckets (JSON-ready)."""
        n = self.count

        def ms(v: float | None) -> float | None:
            return None if v is None else round(v * 1e3, 4)

        return {
            "count": n,
            "sum_seconds": self.sum_ns / 1e9,
            "latency_ms": {
                "mean": ms(self.sum_ns / n / 1e9) if n else None,
                "p50": ms(self.quantile(0.50)),
                "p90": ms(self.quantile(0.90)),
                "p99": ms(self.quantile(0.99)),
                "max": ms(self.max_ns / 1e9) if n else None,
            },
            "buckets": [[le, c] for le, c in self.cumulative()[:-1]],
        }


class Meter:
    """Latency histograms and error counters of a fixed set of operations (one collection's, or one model's).

    Args:
        operations: The operation names; each gets its histogram now, so each is reported (with zeros)
            before its first call.
    """

    __slots__ = ("_errors", "_lock", "hist", "texts")

    def __init__(self, operations: Iterable[str] = OPERATIONS) -> None:
        self.hist: dict[str, LatencyHistogram] = {op: LatencyHistogram() for op in operations}
        self._errors: dict[tuple[str, str], int] = {}
        self._lock = threading.Lock()
        self.texts = 0  # texts embedded (embedding meters only)

    def failed(self, op: str, exc: BaseException) -> None:
        """Count one failed call of ``op`` by the type of its exception."""
        key = (op, type(exc).__name__)
        with self._lock:
            self._errors[key] = self._errors.get(key, 0) + 1

    def add_texts(self, n: int) -> None:
        """Count ``n`` texts embedded."""
        with self._lock:
            self.texts += n

    def snapshot(self) -> dict[str, dict[str, Any]]:
        """Per operation: ``count`` (successful calls), ``errors`` by type, ``error_count``, latency."""
        with self._lock:
            errors = dict(self._errors)
        out: dict[str, dict[str, Any]] = {}
        for op, h in self.hist.items():
            by_type = {t: n for (o, t), n in sorted(errors.items()) if o == op}
            out[op] = {**h.snapshot().as_dict(), "errors": by_type, "error_count": sum(by_type.values())}
        return out


# -- tracing (optional OpenTelemetry) ---------------------------------------------------------------------
_NEVER = 1 << 62
# perf_counter_ns() from which a timed call must look at tracing: 0 while a tracer is set (every call makes
# a span), the next re-check in auto mode, _NEVER when spans are off. One global read and one comparison
# on the hot path.
_LOOK_AT = 0


class _Tracing:
    """Whether spans are made, and with which tracer; re-checked at most once a second in auto mode.

    A real provider installed globally stays (OpenTelemetry refuses to replace it), so once found, the
    tracer is kept and never looked up again.
    """

    RECHECK_NS = 1_000_000_000

    def __init__(self) -> None:
        self.tracer: Any = None
        self.recheck_at = 0  # perf_counter_ns() after which auto mode looks for a provider again
        self.mode = "auto"  # "auto" | "explicit" | "off"
        self._lock = threading.Lock()

    def set(self, mode: str, tracer: Any, recheck_at: int) -> None:
        """Change the state (call with ``_lock`` held) and the hot path's ``_LOOK_AT`` with it."""
        global _LOOK_AT
        self.mode, self.tracer, self.recheck_at = mode, tracer, recheck_at
        _LOOK_AT = 0 if tracer is not None else recheck_at

    def refresh(self, now: int) -> Any:
        with self._lock:
            if self.mode != "auto" or now < self.recheck_at:
                return self.tracer
            try:
                from opentelemetry import trace
            except ImportError:
                self.set("auto", None, _NEVER)  # not installed: never look again
                return None
            provider = trace.get_tracer_provider()
            if isinstance(provider, trace.ProxyTracerProvider | trace.NoOpTracerProvider):
                # nobody listens: skip the API's per-span cost (~2 us); look again in a second
                self.set("auto", None, now + self.RECHECK_NS)
                return None
            self.set("auto", provider.get_tracer("embeddix_core"), _NEVER)
            return self.tracer


_TRACING = _Tracing()


def configure_tracing(provider: Any = None, *, enabled: bool | None = None) -> None:
    """Choose how spans are made.

    Args:
        provider: An OpenTelemetry ``TracerProvider`` to make spans with (tests, or a provider that is not
            the global one). None: auto mode (the global provider, once one other than the API's default
            is installed).
        enabled: False turns spans off whatever is installed; None or True leave the choice to
            ``provider`` / auto mode.
    """
    t = _TRACING
    with t._lock:
        if enabled is False:
            t.set("off", None, _NEVER)
        elif provider is not None:
            t.set("explicit", provider.get_tracer("embeddix_core"), _NEVER)
        else:
            t.set("auto", None, 0)


def _tracer(now: int) -> Any:
    t = _TRACING
    tracer = t.tracer
    if tracer is None and now >= t.recheck_at:
        tracer = t.refresh(now)
    return tracer


def span(name: str, **attributes: Any) -> contextlib.AbstractContextManager[Any]:
    """A span ``name`` with ``attributes`` (as the current span) when tracing is on, else a no-op.

    Args:
        name: The span's name, e.g. ``"embeddix.search"``.
        **attributes: Span attributes (str, bool, int, float).

    Returns:
        A context manager yielding the span, or None when tracing is off (OpenTelemetry absent, no
        provider installed, or :func:`configure_tracing` turned it off).
    """
    tracer = _tracer(_ns())
    if tracer is None:
        return contextlib.nullcontext()
    return tracer.start_as_current_span(name, attributes=attributes)  # type: ignore[no-any-return]


# -- hooks --------------------------------------------------------------------------------------------
def timed(
    op: str,
) -> Callable[[Callable[Concatenate[Any, P], R]], Callable[Concatenate[Any, P], R]]:
    """Decorate a collection method: time each call into ``self._meter`` and count failures by type.

    A generator method (``search_iter``) is timed by the work done inside its steps, summed, not by how
    long the caller kept it open; closing it early counts as a successful call.

    Args:
        op: The operation's name (one of :data:`OPERATIONS`).
    """

    def deco(fn: Callable[Concatenate[Any, P], R]) -> Callable[Concatenate[Any, P], R]:
        if inspect.isgeneratorfunction(fn):
            return _timed_generator(op, fn)  # type: ignore[return-value]

        @functools.wraps(fn)
        def wrapper(self: Any, /, *args: P.args, **kwargs: P.kwargs) -> R:
            t0 = _ns()
            if t0 >= _LOOK_AT:
                tracer = _tracer(t0)
                if tracer is not None:
                    return _traced(tracer, op, fn, self, args, kwargs)
            try:
                out = fn(self, *args, **kwargs)
            except Exception as exc:
                self._meter.failed(op, exc)
                raise
            ns = _ns() - t0
            # LatencyHistogram.observe inlined: the call would cost a sixth of the hook
            h = self._meter.hist[op]
            b = ns.bit_length()
            i = 0 if b < 4 else 1 + ((b - 4) << 2) + ((ns >> (b - 3)) & 3)
            with h._lock:
                h._counts[i if i < _LAST else _LAST] += 1
                h.sum_ns += ns
                if ns > h.max_ns:
                    h.max_ns = ns
            return out

        return wrapper

    return deco


def _traced(tracer: Any, op: str, fn: Callable[..., R], self: Any, args: Any, kwargs: Any) -> R:
    attributes = {"embeddix.operation": op, "embeddix.collection": getattr(self, "name", "?")}
    with tracer.start_as_current_span(f"embeddix.{op}", attributes=attributes):
        t0 = _ns()
        try:
            out = fn(self, *args, **kwargs)
        except Exception as exc:
            self._meter.failed(op, exc)
            raise  # the span records the exception and sets its status
        self._meter.hist[op].observe(_ns() - t0)
        return out


def _timed_generator(op: str, fn: Callable[..., Generator[Any, None, None]]) -> Callable[..., Any]:
    @functools.wraps(fn)
    def wrapper(self: Any, /, *args: Any, **kwargs: Any) -> Generator[Any, None, None]:
        meter: Meter = self._meter
        it = fn(self, *args, **kwargs)
        tracer = _tracer(_ns())
        sp = None
        if tracer is not None:
            # not the current span: the context must not stay attached across the yields
            sp = tracer.start_span(
                f"embeddix.{op}", attributes={"embeddix.operation": op, "embeddix.collection": self.name}
            )
        busy = 0
        try:
            while True:
                t0 = _ns()
                try:
                    step = next(it)
                except StopIteration:
                    busy += _ns() - t0
                    break
                except Exception as exc:
                    meter.failed(op, exc)
                    if sp is not None:
                        _failed_span(sp, exc)
                    raise
                busy += _ns() - t0
                yield step
            meter.hist[op].observe(busy)
        except GeneratorExit:
            meter.hist[op].observe(busy)  # closed early by the caller: a normal end
            raise
        finally:
            it.close()
            if sp is not None:
                sp.end()

    return wrapper


def _failed_span(sp: Any, exc: Exception) -> None:
    """What ``start_as_current_span`` does on an exception, for a span ended by hand."""
    from opentelemetry.trace import Status, StatusCode  # a span exists: OpenTelemetry is installed

    sp.record_exception(exc)
    sp.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"))


_EMBED: dict[str, Meter] = {}
_EMBED_LOCK = threading.Lock()


def _embed_meter(model_id: str) -> Meter:
    meter = _EMBED.get(model_id)
    if meter is None:
        with _EMBED_LOCK:
            meter = _EMBED.setdefault(model_id, Meter(EMBED_OPERATIONS))
    return meter


def timed_embed(fn: Callable[Concatenate[Any, P], R]) -> Callable[Concatenate[Any, P], R]:
    """Decorate an embedder's model call (``embed_documents``): time it per ``model_id``, count texts.

    Embedding takes milliseconds, so the span and the ``model_id`` lookup cost nothing that shows.
    """

    @functools.wraps(fn)
    def wrapper(self: Any, /, *args: P.args, **kwargs: P.kwargs) -> R:
        meter = _embed_meter(str(self.model_id))
        with span("embeddix.embed", **{"embeddix.model": str(self.model_id)}):
            t0 = _ns()
            try:
                out = fn(self, *args, **kwargs)
            except Exception as exc:
                meter.failed("embed", exc)
                raise
            meter.hist["embed"].observe(_ns() - t0)
        shape: tuple[int, ...] = getattr(out, "shape", ())
        meter.add_texts(int(shape[0]) if len(shape) == 2 else 1)
        return out

    return wrapper


def embed_metrics() -> dict[str, dict[str, Any]]:
    """Per embedding model id, process-wide: ``texts`` embedded and the ``embed`` operation's numbers."""
    with _EMBED_LOCK:
        meters = dict(_EMBED)
    return {model: {"texts": m.texts, **m.snapshot()["embed"]} for model, m in sorted(meters.items())}


# -- snapshots ----------------------------------------------------------------------------------------
_CACHE_COUNTERS = (
    "hits",
    "semantic_hits",
    "misses",
    "verified_rejects",
    "invalidated",
    "evicted",
    "expired",
    "entries",
    "bytes",
    "sessions",
    "hit_rate",
)


class Metered(Protocol):
    """What :func:`collection_metrics` reads of a collection (a Protocol: this module may not import the
    facade, which imports it)."""

    _meter: Meter

    def stats(self) -> Any: ...

    def cache_info(self) -> dict[str, Any]: ...

    @property
    def calibration(self) -> Any: ...


def collection_metrics(col: Metered) -> dict[str, Any]:
    """One collection's numbers: operations, cache, index, calibration and background work.

    Raises:
        ClosedError: The collection was closed or dropped meanwhile.
    """
    stats = dataclasses.asdict(col.stats())  # every field, including ones added after this was written
    params = stats.pop("params", {}) or {}
    info = col.cache_info()
    tiers = info.get("tiers") or {}
    cache = {key: info.get(key, 0) for key in _CACHE_COUNTERS}
    cache["enabled"] = bool(info.get("enabled", False))
    cache["tiers"] = {
        name: {"state": t.get("state"), "reason": t.get("reason")} for name, t in sorted(tiers.items())
    }
    calibrator = getattr(col, "_cal", None)
    running = bool(calibrator is not None and calibrator.thread is not None and calibrator.thread.is_alive())
    writes_since = int(getattr(calibrator, "writes_since", 0))
    curve = col.calibration
    calibration: dict[str, Any] = {
        "calibrated": curve is not None,
        "running": running,
        "writes_since": writes_since,
    }
    if curve is not None:
        calibration.update(
            source=curve.source,
            measured_at_count=curve.count,
            sample=curve.sample,
            k=curve.k,
            age_seconds=max(0.0, time.time() - curve.created),
            stale=curve.stale(stats["count"], writes_since),
            curve=[
                {"ef": ef, "recall": r, "latency_us": lat, "latency_p99_us": p99}
                for ef, r, lat, p99 in zip(
                    curve.efs, curve.recall, curve.latency_us, curve.latency_p99_us, strict=False
                )
            ],
        )
    index = getattr(getattr(col, "_live", None), "index", None)
    reconf = getattr(col, "_reconf", None)  # a Collection.reconfigure rebuild, running or finished
    return {
        "operations": col._meter.snapshot(),
        "index": {**stats, **params, "approximate": bool(getattr(index, "approximate", False))},
        "cache": cache,
        "calibration": calibration,
        "background": {
            "calibrating": running,
            "write_buffered": int(params.get("write_buffered", 0) or 0),
            # the HNSW index's flush thread (None on indexes without a write buffer)
            "flushing": getattr(index, "_flusher", None) is not None,
            "reconfiguring": reconf is not None and not reconf.done,
            "reconfigure_progress": None if reconf is None else float(reconf.progress),
        },
    }


def database_metrics(
    collections: Mapping[str, Metered], names: Iterable[str] | None = None
) -> dict[str, Any]:
    """What :meth:`Embeddix.metrics` returns (see there), from the database's open collections.

    Args:
        collections: The open collections by name (a copy: the database's own dict may change meanwhile).
        names: Report only these (None: all).
    """
    wanted = None if names is None else set(names)
    out: dict[str, Any] = {}
    for name in sorted(collections):
        if wanted is not None and name not in wanted:
            continue
        try:
            out[name] = collection_metrics(collections[name])
        except ClosedError:
            continue  # closed or dropped while we looked: it has nothing to report any more
    return {"version": SNAPSHOT_VERSION, "time": time.time(), "collections": out, "embed": embed_metrics()}


# -- recommendations ----------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Recommendation:
    """One suggestion computed from a collection's own measurements.

    Attributes:
        collection: The collection it is about (None: the whole process, e.g. embedding).
        kind: What it concerns: ``"memory"``, ``"latency"``, ``"cache"``, ``"calibration"``, ``"index"``,
            ``"errors"``, ``"embedding"``.
        level: ``"info"`` (worth knowing), ``"suggest"`` (a change would help) or ``"warn"``.
        message: What to do and why, with the numbers.
        measurement: The measured numbers the message is computed from.
    """

    collection: str | None
    kind: str
    level: str
    message: str
    measurement: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return dataclasses.asdict(self)


# Thresholds of the rules below (policy as data: change a number here, not an if-chain).
RULES: dict[str, float] = {
    "quant_min_saving_bytes": 16 << 20,  # recommend sq8 when it would free at least this much
    "latency_min_calls": 50,  # latency rules need this many searches
    "exact_slow_p50_ms": 2.0,  # an exact search slower than this at the median: HNSW would serve faster
    "tail_ratio": 10.0,  # p99 this many times p50: something stalls searches
    "cache_min_lookups": 200,
    "cache_low_hit_rate": 0.02,
    "tombstone_fraction": 0.2,
    "tombstone_min": 1000,
    "write_buffer_backlog": 512,
    "error_fraction": 0.01,
    "error_min_calls": 20,
    "embed_slow_p50_ms": 50.0,
}
_MB = 1e6


def _mb(n: float) -> str:
    return f"{n / _MB:,.0f} MB" if n >= 10 * _MB else f"{n / _MB:,.1f} MB"


def _quantization(name: str, c: dict[str, Any]) -> Iterator[Recommendation]:
    ix = c["index"]
    count, dim = int(ix.get("count", 0)), int(ix.get("dim", 0))
    if ix.get("quantization", "none") != "none" or not count or not ix.get("approximate"):
        return  # quantization applies to the HNSW graph only (exact search below index_threshold)
    now = count * dim * 4  # float32 vectors inside the graph (hnswlib keeps them with the links)
    saving = count * dim * 3  # sq8: one byte a dimension instead of four
    if saving < RULES["quant_min_saving_bytes"]:
        return
    resident = int(ix.get("memory_bytes", 0) or 0)
    yield Recommendation(
        name,
        "memory",
        "suggest",
        f"sq8 would save {_mb(saving)} (measured: {count:,} vectors x {dim} d float32 = {_mb(now)} of "
        f"vectors, index {_mb(resident)} resident; sq8 keeps {dim} B a vector instead of {4 * dim} B and "
        "re-ranks at full precision). col.reconfigure(quantization='sq8') rebuilds the index in the "
        "background while searches go on (POST /api/v1/performance/profile/balanced on the server).",
        {
            "count": count,
            "dim": dim,
            "bytes_per_vector_now": 4 * dim,
            "bytes_per_vector_sq8": dim,
            "vector_bytes_now": now,
            "vector_bytes_sq8": count * dim,
            "saving_bytes": saving,
            "index_memory_bytes": resident,
            "index": ix.get("index"),
        },
    )


def _latency(name: str, c: dict[str, Any]) -> Iterator[Recommendation]:
    s = c["operations"].get("search", {})
    n = s.get("count", 0)
    if n < RULES["latency_min_calls"]:
        return
    lat = s["latency_ms"]
    p50, p99 = lat["p50"] or 0.0, lat["p99"] or 0.0
    ix = c["index"]
    measured = {"searches": n, "p50_ms": p50, "p90_ms": lat["p90"], "p99_ms": p99, "index": ix.get("index")}
    if not ix.get("approximate") and p50 > RULES["exact_slow_p50_ms"]:
        threshold = int(ix.get("index_threshold", 0) or 0)
        yield Recommendation(
            name,
            "latency",
            "suggest",
            f"exact search of {ix.get('count', 0):,} vectors takes {p50:.2f} ms at the median (p99 "
            f"{p99:.2f} ms over {n:,} searches); HNSW starts at index_threshold={threshold:,}: lower it "
            f"below the count (PUT /api/v1/performance/config, or col.configure(index_threshold=...)) to "
            "search the graph instead.",
            {**measured, "count": ix.get("count"), "index_threshold": threshold},
        )
    if p50 > 0 and p99 > RULES["tail_ratio"] * p50:
        bg = c["background"]
        yield Recommendation(
            name,
            "latency",
            "info",
            f"search p99 is {p99 / p50:.0f}x the median ({p99:.2f} ms vs {p50:.2f} ms over {n:,} searches): "
            f"some searches wait (calibration running: {bg['calibrating']}, write buffer "
            f"{bg['write_buffered']:,} vectors, flushing: {bg['flushing']}).",
            {**measured, **bg},
        )


def _cache(name: str, c: dict[str, Any]) -> Iterator[Recommendation]:
    ca = c["cache"]
    lookups = ca["hits"] + ca["semantic_hits"] + ca["misses"]
    if not ca["enabled"] or lookups < RULES["cache_min_lookups"]:
        return
    measured = {
        "lookups": lookups,
        "hits": ca["hits"],
        "semantic_hits": ca["semantic_hits"],
        "misses": ca["misses"],
        "hit_rate": ca["hit_rate"],
        "bytes": ca["bytes"],
        "tiers": {t: v["state"] for t, v in ca["tiers"].items()},
    }
    if ca["hit_rate"] < RULES["cache_low_hit_rate"]:
        yield Recommendation(
            name,
            "cache",
            "info",
            f"the result cache served {ca['hit_rate']:.1%} of {lookups:,} lookups and holds "
            f"{_mb(ca['bytes'])}: queries rarely repeat here. The auto policy already keeps tiers off where "
            "they do not pay; EMBEDDIX_CACHE_ENABLED=false would free the memory.",
            measured,
        )
    else:
        yield Recommendation(
            name,
            "cache",
            "info",
            f"the result cache served {ca['hit_rate']:.1%} of {lookups:,} lookups ({ca['hits']:,} exact, "
            f"{ca['semantic_hits']:,} semantic hits) with {_mb(ca['bytes'])}.",
            measured,
        )


def _calibration(name: str, c: dict[str, Any]) -> Iterator[Recommendation]:
    ix, cal = c["index"], c["calibration"]
    if not ix.get("approximate"):
        return
    if not cal["calibrated"]:
        yield Recommendation(
            name,
            "calibration",
            "warn" if not cal["running"] else "info",
            f"HNSW over {ix.get('count', 0):,} vectors has no recall/latency curve yet "
            f"({'measuring now' if cal['running'] else 'not measuring'}): searches use ef_search="
            f"{ix.get('ef_search')} with unmeasured recall; col.calibrate() measures it now.",
            {"count": ix.get("count"), "ef_search": ix.get("ef_search"), "running": cal["running"]},
        )
    elif cal.get("stale"):
        yield Recommendation(
            name,
            "calibration",
            "info",
            f"the curve was measured at {cal['measured_at_count']:,} vectors, the collection now holds "
            f"{ix.get('count', 0):,} ({cal['writes_since']:,} writes since): a recalibration is "
            f"{'running' if cal['running'] else 'due'}.",
            {
                "measured_at_count": cal["measured_at_count"],
                "count": ix.get("count"),
                "writes_since": cal["writes_since"],
                "running": cal["running"],
            },
        )


def _index(name: str, c: dict[str, Any]) -> Iterator[Recommendation]:
    ix, bg = c["index"], c["background"]
    tomb, cap, count = int(ix.get("tombstones", 0)), int(ix.get("index_size", 0)), int(ix.get("count", 0))
    if tomb >= RULES["tombstone_min"] and cap and tomb > RULES["tombstone_fraction"] * cap:
        per = (int(ix.get("memory_bytes", 0) or 0) / cap) if cap else 0.0
        yield Recommendation(
            name,
            "index",
            "suggest",
            f"{tomb:,} of {cap:,} index slots are deleted records ({tomb / cap:.0%}); col.compact() would "
            f"reclaim about {_mb(tomb * per)} (measured {per:,.0f} B a slot).",
            {"tombstones": tomb, "capacity": cap, "count": count, "bytes_per_slot": round(per, 1)},
        )
    if bg["write_buffered"] >= RULES["write_buffer_backlog"]:
        yield Recommendation(
            name,
            "index",
            "info",
            f"{bg['write_buffered']:,} written vectors wait for the HNSW graph (flushing: {bg['flushing']}): "
            "writes arrive faster than the graph absorbs them; searches scan the buffer exactly meanwhile.",
            {"write_buffered": bg["write_buffered"], "flushing": bg["flushing"]},
        )


def _errors(name: str, c: dict[str, Any]) -> Iterator[Recommendation]:
    for op, s in c["operations"].items():
        calls = s["count"] + s["error_count"]
        if calls >= RULES["error_min_calls"] and s["error_count"] > RULES["error_fraction"] * calls:
            kinds = ", ".join(f"{t} x{n}" for t, n in s["errors"].items())
            yield Recommendation(
                name,
                "errors",
                "warn",
                f"{op} failed {s['error_count']:,} of {calls:,} calls "
                f"({s['error_count'] / calls:.1%}): {kinds}.",
                {"operation": op, "calls": calls, "errors": s["errors"]},
            )


_COLLECTION_RULES = (_quantization, _latency, _cache, _calibration, _index, _errors)


def recommendations(snapshot: dict[str, Any]) -> list[Recommendation]:
    """Suggestions computed from a :meth:`Embeddix.metrics` snapshot, each with its measurement.

    Args:
        snapshot: What ``db.metrics()`` returned.

    Returns:
        The recommendations, collection by collection (rules in :data:`RULES`), then embedding's.
    """
    out: list[Recommendation] = []
    for name, c in snapshot.get("collections", {}).items():
        for rule in _COLLECTION_RULES:
            out.extend(rule(name, c))
    for model, e in snapshot.get("embed", {}).items():
        p50 = e["latency_ms"]["p50"]
        if e["count"] >= RULES["latency_min_calls"] and p50 is not None and p50 > RULES["embed_slow_p50_ms"]:
            per_text = e["sum_seconds"] / max(e["texts"], 1) * 1e3
            out.append(
                Recommendation(
                    None,
                    "embedding",
                    "info",
                    f"embedding with {model} takes {p50:.1f} ms per call at the median ({per_text:.2f} ms a "
                    f"text over {e['texts']:,} texts): batch texts, or cache them (CachedEmbedder).",
                    {"model": model, "calls": e["count"], "texts": e["texts"], "p50_ms": p50},
                )
            )
    return out
