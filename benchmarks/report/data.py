"""The report's inputs, prepared once per data set in the parent and shared by every engine's child.

* **Base**: the first ``n`` rows of the data set's ``base.npy`` (the children read them from that file).
* **Query pool**: the data set's held-out queries first, then base rows beyond ``n`` (never inserted, so
  just as held out), cut into disjoint sets: ``lat`` (the latency and recall queries; the held-out queries
  come first, so on the real-text set these are real held-out texts), ``sweep``, ``filt`` (three slices:
  1%, 10%, 50%), ``mixed``, ``qps1`` and ``qps2``. No query is sent to an engine twice except the sweep's
  (a knob sweep repeats its queries at every point; see ``engines.EmbeddixTuned``).
* **Insert rows**: further base rows beyond ``n``, for the single inserts and the writes of the mixed
  workload.
* **Ground truth**: exact cosine top 10 (``embeddix_core.eval.exact_knn``, float64, ties by lower row)
  over the first ``n`` rows for ``lat`` and ``sweep``; over the matching rows for each filter; and, for each
  read of the mixed workload, over the base plus every record inserted before it.

Sets: ``realtext`` (``benchmarks/data/realtext-100000``, 384-d MiniLM), ``synth768``
(``synth768-200000``, 768-d) and ``tiny`` (a 3,500 x 32 synthetic set generated in the work directory:
for the test, it needs none of the git-ignored data).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks import datasets
from embeddix_core.eval import exact_knn

__all__ = ["FILTERS", "SETS", "TINY_PARAMS", "Prepared", "Sizes", "prepare", "sizes_for"]

K = 10
SETS = ("realtext", "synth768", "tiny")
# metadata_for(i): group == 7 is 1% of the rows, tag == 3 10%, tag < 5 50%
FILTERS: tuple[dict[str, Any], ...] = (
    {"name": "1%", "op": "eq", "field": "group", "value": 7},
    {"name": "10%", "op": "eq", "field": "tag", "value": 3},
    {"name": "50%", "op": "lt", "field": "tag", "value": 5},
)
TINY_PARAMS: dict[str, Any] = {"n_base": 3_500, "dim": 32, "n_queries": 200, "seed": 0}
AGENT_LEVELS = (1, 4, 16, 25)
STRESS_LEVELS = (1, 2, 4, 8, 16, 32, 64)


@dataclass(frozen=True)
class Sizes:
    """How much of each workload one run does.

    Attributes:
        n: Base rows inserted (None: every row but ``reserve``).
        reserve: Base rows kept out of the store as extra queries and inserts (when ``n`` is None).
        lat: Latency/recall queries, each sent once.
        qps: Queries of each QPS run (1 thread, 2 threads).
        sweep: Queries of each knob-sweep point.
        filt: Queries per filter.
        mixed_reads, mixed_writes: The mixed workload's searches and inserts.
        singles: Single-record inserts.
        agent_records: Records in each agent's namespace before the agents start.
        agent_steps: Steps of each agent (4 recalls : 1 remember).
        agent_levels: How many agents run at once, per level.
        stress_levels: Threads per level of the stress ramp.
        stress_s: Seconds per stress level.
        budget_s: Time budget of one phase; a slower engine stops early and says so.
        timeout_s: Limit of one engine's child process.
    """

    n: int | None
    reserve: int
    lat: int
    qps: int
    sweep: int
    filt: int
    mixed_reads: int
    mixed_writes: int
    singles: int
    agent_records: int
    agent_steps: int
    stress_s: float
    budget_s: float
    timeout_s: float
    agent_levels: tuple[int, ...] = AGENT_LEVELS
    stress_levels: tuple[int, ...] = STRESS_LEVELS

    def child(self) -> dict[str, Any]:
        """The part a child needs."""
        out = asdict(self)
        out["agent_levels"] = list(self.agent_levels)
        out["stress_levels"] = list(self.stress_levels)
        return out


# quick: just above Embeddix's index_threshold (10,000), so it searches HNSW as the full run does
QUICK = Sizes(
    n=12_000, reserve=0, lat=200, qps=200, sweep=100, filt=100, mixed_reads=80, mixed_writes=20,
    singles=100, agent_records=300, agent_steps=20, stress_s=0.4, budget_s=3.0, timeout_s=150.0,
)  # fmt: skip
FULL = Sizes(
    n=None, reserve=5_000, lat=500, qps=500, sweep=300, filt=200, mixed_reads=320, mixed_writes=80,
    singles=500, agent_records=1_000, agent_steps=100, stress_s=2.0, budget_s=12.0, timeout_s=2_400.0,
)  # fmt: skip
# Base rows of a full run where the set's own size would not fit the run in about an hour on 2 cores:
# synth768 is 200,000 x 768, and Qdrant's local mode alone ingests about 400 records/s here.
FULL_N = {"realtext": None, "synth768": 50_000}
TINY = Sizes(
    n=3_000, reserve=0, lat=100, qps=100, sweep=50, filt=40, mixed_reads=40, mixed_writes=10,
    singles=20, agent_records=300, agent_steps=10, stress_s=0.2, budget_s=5.0, timeout_s=120.0,
    stress_levels=(1, 2, 4, 8, 16),
)  # fmt: skip


def sizes_for(set_name: str, *, quick: bool, n: int | None = None) -> Sizes:
    """The sizes of a run: ``tiny`` always uses its own, the others the quick or full ones (``n`` overrides
    the number of base rows)."""
    base = TINY if set_name == "tiny" else QUICK if quick else replace(FULL, n=FULL_N.get(set_name))
    return replace(base, n=n) if n is not None else base


@dataclass
class Prepared:
    """One data set ready for the children: files in ``work`` and what the report says about them."""

    name: str
    dataset: str
    n: int
    dim: int
    base: Path
    texts: Path | None
    qpool: Path
    truth: Path
    sets: dict[str, list[int]]
    insert_rows: list[int]
    pool_source: list[list[Any]]
    info: dict[str, Any] = field(default_factory=dict)


def _load(set_name: str, work: Path) -> tuple[datasets.Dataset, dict[str, Any]]:
    if set_name == "realtext":
        return datasets.real_text(), {"loader": "benchmarks.datasets.real_text()"}
    if set_name == "synth768":
        return datasets.synthetic(), {"loader": "benchmarks.datasets.synthetic()"}
    if set_name == "tiny":
        ds = datasets.synthetic(**TINY_PARAMS, data_dir=work / "data")
        return ds, {"loader": "benchmarks.datasets.synthetic", "params": dict(TINY_PARAMS)}
    raise ValueError(f"unknown data set {set_name!r}; known: {', '.join(SETS)}")


def prepare(set_name: str, sizes: Sizes, work: Path) -> Prepared:
    """Write the query pool and the exact ground truth of ``set_name`` into ``work``.

    Args:
        set_name: One of :data:`SETS`.
        sizes: The run's sizes.
        work: A directory of this run (created).

    Returns:
        The :class:`Prepared` set.

    Raises:
        ValueError: The data set is too small for these sizes.
    """
    work.mkdir(parents=True, exist_ok=True)
    ds, info = _load(set_name, work)
    if ds.path is None:
        raise ValueError(f"{ds.name} has no cache directory")
    n = sizes.n if sizes.n is not None else ds.n_base - sizes.reserve
    n = min(n, ds.n_base)
    order = ("lat", "sweep", "filt", "mixed", "qps1", "qps2")
    counts = {
        "lat": sizes.lat,
        "sweep": sizes.sweep,
        "filt": 3 * sizes.filt,
        "mixed": sizes.mixed_reads,
        "qps1": sizes.qps,
        "qps2": sizes.qps,
    }
    need_q = sum(counts.values())
    need_ins = sizes.singles + sizes.mixed_writes
    from_held = min(ds.n_queries, need_q)
    from_base = need_q - from_held
    if n + from_base + need_ins > ds.n_base:
        raise ValueError(
            f"{ds.name}: {n:,} base rows + {from_base:,} extra queries + {need_ins:,} inserts > {ds.n_base:,} rows"
        )
    base = ds.base
    pool = np.concatenate(
        [np.asarray(ds.queries[:from_held], np.float32), np.asarray(base[n : n + from_base], np.float32)]
    )
    pool_source = [["q", i] for i in range(from_held)] + [["b", n + i] for i in range(from_base)]
    insert_rows = list(range(n + from_base, n + from_base + need_ins))
    sets: dict[str, list[int]] = {}
    at = 0
    for key in order:
        sets[key] = [at, at + counts[key]]
        at += counts[key]
    truth: dict[str, np.ndarray] = {}
    head = base[:n]
    for key in ("lat", "sweep"):
        a, b = sets[key]
        truth[key] = exact_knn(head, pool[a:b], K).indices
    meta = [datasets.metadata_for(i) for i in range(n)]
    a = sets["filt"][0]
    for i, f in enumerate(FILTERS):
        values = np.array([m[f["field"]] for m in meta])
        rows = np.flatnonzero(values == f["value"] if f["op"] == "eq" else values < f["value"])
        sub = np.asarray(base[rows], np.float32)
        q = pool[a + i * sizes.filt : a + (i + 1) * sizes.filt]
        truth[f"filt{i}"] = rows[exact_knn(sub, q, K).indices]
    truth["mixed"] = _mixed_truth(ds, n, pool[sets["mixed"][0] : sets["mixed"][1]], insert_rows, sizes)
    np.save(work / "qpool.npy", pool)
    np.savez(work / "truth.npz", **truth)  # type: ignore[arg-type]  # numpy's stub types **kwds as bool
    texts = ds.path / "base_texts.jsonl" if ds.base_texts is not None else None
    info.update({"dataset": ds.name, "n_base_file": ds.n_base, "held_out_queries": ds.n_queries})
    return Prepared(
        name=set_name,
        dataset=ds.name,
        n=n,
        dim=ds.dim,
        base=ds.path / "base.npy",
        texts=texts,
        qpool=work / "qpool.npy",
        truth=work / "truth.npz",
        sets=sets,
        insert_rows=insert_rows,
        pool_source=pool_source,
        info=info,
    )


def writes_before_reads(reads: int, writes: int, every: int = 5) -> list[int]:
    """How many inserts the mixed workload has made before each of its reads (every ``every``-th op
    writes while writes remain; the child runs the same sequence)."""
    out = []
    ri = wi = step = 0
    while ri < reads or wi < writes:
        if step % every == every - 1 and wi < writes:
            wi += 1
        elif ri < reads:
            out.append(wi)
            ri += 1
        step += 1
    return out


def _mixed_truth(
    ds: datasets.Dataset, n: int, reads: np.ndarray, insert_rows: list[int], sizes: Sizes
) -> np.ndarray:
    """Exact top 10 of each mixed read over the base, the single inserts and the writes before it."""
    base_hit = exact_knn(ds.base[:n], reads, K)
    inserted = np.asarray(ds.base[insert_rows[0] : insert_rows[-1] + 1], np.float32)
    m = sizes.singles + sizes.mixed_writes
    ins_hit = exact_knn(inserted[:m], reads, m)
    before = writes_before_reads(sizes.mixed_reads, sizes.mixed_writes)
    out = np.empty((len(reads), K), np.int64)
    for j in range(len(reads)):
        visible = sizes.singles + before[j]
        cands = [(float(d), int(r)) for d, r in zip(base_hit.distances[j], base_hit.indices[j], strict=True)]
        cands += [
            (float(d), insert_rows[int(i)])
            for d, i in zip(ins_hit.distances[j], ins_hit.indices[j], strict=True)
            if i < visible
        ]
        cands.sort()
        out[j] = [r for _, r in cands[:K]]
    return out
