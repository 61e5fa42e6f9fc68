"""The engines of the report, one small adapter each over the same five operations.

Every adapter is a *database* holding named namespaces (one per agent; the single-agent workloads use
``"main"``) and maps these calls onto its library's own API, used the way its documentation shows:

* ``create(ns, capacity)``: an empty namespace expected to grow to about ``capacity`` records;
* ``add(ns, rows, vectors, docs, metas)``: one batch (a single insert is a batch of one); ``rows`` are the
  data set's row numbers and become the records' ids (``doc-<row>`` where ids are strings);
* ``finish(ns)``: the end of an ingest (trains what a raw FAISS index trains on the data it was given);
* ``search(ns, q, k, flt)``: the ids of the k nearest, best first, as row numbers;
* ``close()`` (persisting what lives in memory, the way the library saves) and ``reopen()``.

A filter reaches an adapter as :class:`Filter`: the metadata condition (``("eq", "tag", 3)`` or
``("lt", "tag", 5)``) for stores that keep metadata, plus a boolean mask over row numbers for the raw
indexes, which keep none (a user of raw hnswlib or FAISS keeps it beside the index, as this does).

Engines with a search-time knob (beam width, nprobe, recall target) declare it; the report sweeps it for
the recall-vs-QPS curve and runs the other workloads at the smallest value that reaches recall@10 >= 0.95
on the sweep queries (:data:`OPERATING_RECALL`). Engines without one (exact stores, Chroma's default
HNSW, Embeddix as a user gets it) run as they come.

This module imports nothing but the standard library and numpy at import time; each adapter imports its
library when it is built, so a child process loads only the engine it measures.
"""

from __future__ import annotations

import contextlib
import json
import math
import shutil
import warnings
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

__all__ = ["ENGINES", "OPERATING_RECALL", "Engine", "Filter", "engine_class"]

K = 10
OPERATING_RECALL = 0.95
# HNSW build parameters shared by every HNSW engine that lets us choose them (Embeddix's defaults, so the
# raw indexes build the same graph Embeddix builds). Chroma keeps its own defaults (M 16, ef_construction
# 100, ef_search 100): it is measured as a user gets it.
HNSW_M = 16
HNSW_EF_CONSTRUCTION = 200
EF_SWEEP = (10, 16, 24, 32, 48, 64, 96, 128, 192, 256)
NPROBE_SWEEP = (1, 2, 4, 8, 16, 32, 64, 128)
RECALL_TARGETS = (0.80, 0.90, 0.95, 0.98, 0.99)


@dataclass(frozen=True)
class Filter:
    """A metadata filter in both forms: the condition, and the rows it lets through.

    Attributes:
        name: The selectivity label (``"1%"``, ``"10%"``, ``"50%"``).
        op: ``"eq"`` or ``"lt"``.
        field: The metadata field (``tag`` or ``group``).
        value: The operand.
        mask: ``mask[row]`` is True when row ``row`` matches (rows beyond the mask do not).
    """

    name: str
    op: str
    field: str
    value: int
    mask: np.ndarray

    def allows(self, row: int) -> bool:
        """Whether row ``row`` matches."""
        return 0 <= row < len(self.mask) and bool(self.mask[row])

    def matches(self, meta: dict[str, Any]) -> bool:
        """Whether a metadata dict matches (for stores that filter with a Python callback)."""
        got = meta.get(self.field)
        return got == self.value if self.op == "eq" else got is not None and got < self.value


class Engine(ABC):
    """One engine: a database of namespaces (see the module docstring for the calls)."""

    name: ClassVar[str] = ""
    label: ClassVar[str] = ""
    # the distributions whose versions the report prints for this engine
    packages: ClassVar[tuple[str, ...]] = ()
    # the module that must import for the engine to run (checked before a child is started)
    module: ClassVar[str] = ""
    knob: ClassVar[str | None] = None
    knob_values: ClassVar[tuple[float, ...]] = ()
    # how the engine keeps data: said in the report next to its insert and disk figures
    persistence: ClassVar[str] = ""
    # exact engines compare the query with every vector: pure-Python ones hold lists of floats
    python_bytes_per_float: ClassVar[int] = 0
    # environment of the engine's child process (on top of the parent's)
    child_env: ClassVar[dict[str, str]] = {}

    def __init__(self, path: Path, dim: int) -> None:
        self.path = path
        self.dim = dim
        self.knob_value: float | None = None
        path.mkdir(parents=True, exist_ok=True)

    def settings(self) -> dict[str, Any]:
        """The parameters this engine runs with, for the report."""
        return {}

    @abstractmethod
    def create(self, ns: str, capacity: int) -> None:
        """Create the empty namespace ``ns``."""

    @abstractmethod
    def add(
        self,
        ns: str,
        rows: np.ndarray,
        vectors: np.ndarray,
        docs: Sequence[str] | None,
        metas: Sequence[dict[str, Any]],
    ) -> None:
        """Add one batch of records."""

    def finish(self, ns: str) -> None:  # noqa: B027 - most engines need nothing here
        """End of an ingest: whatever the library needs before searching."""

    @abstractmethod
    def search(self, ns: str, q: np.ndarray, k: int = K, flt: Filter | None = None) -> list[int]:
        """The k nearest rows to ``q``, best first."""

    def set_knob(self, value: float, *, sweep: bool = False) -> None:
        """Set the search-time knob (``sweep``: a point of the recall-vs-QPS sweep)."""
        self.knob_value = value

    @abstractmethod
    def close(self) -> None:
        """Persist (if the library keeps data in memory) and release everything."""

    @abstractmethod
    def reopen(self) -> None:
        """Open the persisted data again (after :meth:`close`), every namespace ready to search."""

    def discard(self) -> None:
        """Release everything; what lives only in memory is dropped, not saved (default: :meth:`close`)."""
        self.close()


def _faiss() -> Any:
    """The faiss module, typed loosely: its stubs lack the search-parameter classes used here."""
    import faiss

    return faiss


def _doc_ids(rows: np.ndarray) -> list[str]:
    return [f"doc-{int(r)}" for r in rows]


def _row_of(doc_id: str) -> int:
    return int(doc_id[4:])


# ------------------------------------------------------------------------------------------- Embeddix


class EmbeddixDefault(Engine):
    """Embeddix exactly as a user gets it: ``EmbeddixSettings()``, ``create_collection(name, dim=..,
    metric="cosine")``, ``col.add`` in batches and ``col.search(q, k=10)`` - caches and background
    calibration on, nothing tuned."""

    name = "embeddix"
    label = "Embeddix (as a user gets it)"
    packages = ("embeddix", "hnswlib", "faiss-cpu", "numpy")
    module = "embeddix_core"
    persistence = "durable: every add is fsynced before it returns (SQLite WAL)"

    def __init__(self, path: Path, dim: int) -> None:
        super().__init__(path, dim)
        self.db: Any = None
        self.cols: dict[str, Any] = {}
        self._open()

    def _open(self) -> None:
        from embeddix_core import Embeddix

        self.db = Embeddix.open(self.path / "data")  # default settings: EmbeddixSettings()

    def settings(self) -> dict[str, Any]:
        import json as _json

        from embeddix_core import EmbeddixSettings

        s = _json.loads(EmbeddixSettings().model_dump_json())
        keys = (
            "durability",
            "index_threshold",
            "hnsw_m",
            "ef_construction",
            "default_recall",
            "auto_calibrate",
        )
        return {k: s[k] for k in keys if k in s}

    def create(self, ns: str, capacity: int) -> None:
        self.cols[ns] = self.db.create_collection(ns, dim=self.dim, metric="cosine")

    def add(self, ns: str, rows: np.ndarray, vectors: np.ndarray, docs: Any, metas: Any) -> None:
        self.cols[ns].add(_doc_ids(rows), vectors, documents=docs, metadatas=list(metas))

    def _where(self, flt: Filter | None) -> dict[str, Any] | None:
        if flt is None:
            return None
        return {flt.field: flt.value} if flt.op == "eq" else {flt.field: {"$lt": flt.value}}

    def search(self, ns: str, q: np.ndarray, k: int = K, flt: Filter | None = None) -> list[int]:
        hits = self.cols[ns].search(q, k=k, filter=self._where(flt))
        return [_row_of(h.id) for h in hits]

    def close(self) -> None:
        self.db.close()
        self.cols = {}

    def reopen(self) -> None:
        self._open()
        self.cols = {name: self.db.get_collection(name) for name in self.db.list_collections()}


class EmbeddixTuned(EmbeddixDefault):
    """Embeddix with an explicit recall target: ``col.search(q, k=10, recall=r)``. The sweep's points
    repeat the sweep queries, so they pass ``cache=False`` (a cached answer would not be a search); the
    operating point (``recall=0.95``) runs with the caches on, as a user's code would, on fresh queries."""

    name = "embeddix-tuned"
    label = "Embeddix tuned (recall=)"
    knob = "recall"
    knob_values = RECALL_TARGETS

    def __init__(self, path: Path, dim: int) -> None:
        super().__init__(path, dim)
        self.knob_value = OPERATING_RECALL
        self.cache = True

    def set_knob(self, value: float, *, sweep: bool = False) -> None:
        self.knob_value = value
        self.cache = not sweep

    def search(self, ns: str, q: np.ndarray, k: int = K, flt: Filter | None = None) -> list[int]:
        hits = self.cols[ns].search(q, k=k, filter=self._where(flt), recall=self.knob_value, cache=self.cache)
        return [_row_of(h.id) for h in hits]


# ------------------------------------------------------------------------------------------- hnswlib


class Hnswlib(Engine):
    """Raw hnswlib: one ``hnswlib.Index("ip")`` per namespace (unit vectors: inner product = cosine),
    M 16, ef_construction 200, ``add_items`` on every core, ``knn_query`` with the swept ``ef``; a filter
    is hnswlib's Python callback over the labels. Lives in memory; ``close`` saves it with
    ``save_index``."""

    name = "hnswlib"
    label = "hnswlib (raw)"
    packages = ("hnswlib", "numpy")
    module = "hnswlib"
    knob = "ef"
    knob_values = EF_SWEEP
    persistence = "in memory; saved only by an explicit save_index"

    def __init__(self, path: Path, dim: int) -> None:
        super().__init__(path, dim)
        self.idx: dict[str, Any] = {}
        self.knob_value = 10  # hnswlib's default ef

    def settings(self) -> dict[str, Any]:
        return {"space": "ip", "M": HNSW_M, "ef_construction": HNSW_EF_CONSTRUCTION}

    def create(self, ns: str, capacity: int) -> None:
        import hnswlib

        index = hnswlib.Index("ip", self.dim)
        index.init_index(max_elements=max(capacity, 16), M=HNSW_M, ef_construction=HNSW_EF_CONSTRUCTION)
        index.set_ef(int(self.knob_value or 10))
        self.idx[ns] = index

    def add(self, ns: str, rows: np.ndarray, vectors: np.ndarray, docs: Any, metas: Any) -> None:
        index = self.idx[ns]
        need = index.get_current_count() + len(rows)
        if need > index.get_max_elements():  # what a user of raw hnswlib has to do when it fills up
            index.resize_index(max(need, 2 * index.get_max_elements()))
        index.add_items(vectors, np.asarray(rows, dtype=np.int64))

    def set_knob(self, value: float, *, sweep: bool = False) -> None:
        self.knob_value = value
        for index in self.idx.values():
            index.set_ef(int(value))

    def search(self, ns: str, q: np.ndarray, k: int = K, flt: Filter | None = None) -> list[int]:
        try:
            labels, _ = self.idx[ns].knn_query(q, k=k, filter=None if flt is None else flt.allows)
        except RuntimeError:  # hnswlib raises when it finds fewer than k (a narrow filter)
            return []
        return [int(x) for x in labels[0]]

    def close(self) -> None:
        for ns, index in self.idx.items():
            index.save_index(str(self.path / f"{ns}.bin"))
        self.idx = {}

    def discard(self) -> None:
        self.idx = {}

    def reopen(self) -> None:
        import hnswlib

        for file in sorted(self.path.glob("*.bin")):
            index = hnswlib.Index("ip", self.dim)
            index.load_index(str(file))
            index.set_ef(int(self.knob_value or 10))
            self.idx[file.stem] = index


# --------------------------------------------------------------------------------------------- FAISS


class _Faiss(Engine):
    """Raw FAISS, inner product on unit vectors. FAISS numbers vectors 0, 1, ... in insertion order; the
    adapter keeps the row of each (as a user keeps their ids beside the index) and builds an
    ``IDSelectorBitmap`` over those numbers for a filter."""

    packages = ("faiss-cpu", "numpy")
    module = "faiss"
    persistence = "in memory; saved only by an explicit write_index"
    # FAISS's k-means calls BLAS inside its own OpenMP threads; OpenBLAS threads on top oversubscribe the
    # 2 cores (FAISS's wiki advises one BLAS thread when FAISS parallelizes itself)
    child_env: ClassVar[dict[str, str]] = {"OPENBLAS_NUM_THREADS": "1"}

    def __init__(self, path: Path, dim: int) -> None:
        super().__init__(path, dim)
        self.idx: dict[str, Any] = {}
        self.rows: dict[str, list[np.ndarray]] = {}
        self.pending: dict[str, list[np.ndarray]] = {}  # untrained: vectors waiting for train()
        self.capacity: dict[str, int] = {}
        self._sel: dict[tuple[str, str, int], Any] = {}

    @abstractmethod
    def _new(self, capacity: int) -> Any:
        """An empty index."""

    def _train_size(self, capacity: int) -> int:
        return 0

    def create(self, ns: str, capacity: int) -> None:
        self.idx[ns] = self._new(capacity)
        self.rows[ns] = []
        self.pending[ns] = []
        self.capacity[ns] = capacity

    def add(self, ns: str, rows: np.ndarray, vectors: np.ndarray, docs: Any, metas: Any) -> None:
        index = self.idx[ns]
        self.rows[ns].append(np.asarray(rows, dtype=np.int64))
        if index.is_trained:
            index.add(np.ascontiguousarray(vectors, dtype=np.float32))
            return
        self.pending[ns].append(np.ascontiguousarray(vectors, dtype=np.float32))
        if sum(len(p) for p in self.pending[ns]) >= self._train_size(self.capacity[ns]):
            self.finish(ns)

    def finish(self, ns: str) -> None:
        index = self.idx[ns]
        if index.is_trained or not self.pending[ns]:
            return
        data = np.concatenate(self.pending[ns])
        index.train(data)
        index.add(data)
        self.pending[ns] = []

    def _row_array(self, ns: str) -> np.ndarray:
        parts = self.rows[ns]
        if len(parts) > 1:
            parts[:] = [np.concatenate(parts)]
        return parts[0] if parts else np.empty(0, np.int64)

    def _selector(self, ns: str, flt: Filter) -> Any:
        faiss = _faiss()

        rows = self._row_array(ns)
        key = (ns, flt.name, len(rows))
        if key not in self._sel:
            inside = rows < len(flt.mask)
            allowed = np.zeros(len(rows), bool)
            allowed[inside] = flt.mask[rows[inside]]
            bits = np.packbits(allowed, bitorder="little")
            # the bitmap must outlive the selector: keep both
            self._sel[key] = (faiss.IDSelectorBitmap(len(rows), faiss.swig_ptr(bits)), bits)
        return self._sel[key][0]

    @abstractmethod
    def _params(self, sel: Any) -> Any:
        """Search parameters at the current knob, with a selector or None."""

    def search(self, ns: str, q: np.ndarray, k: int = K, flt: Filter | None = None) -> list[int]:
        sel = None if flt is None else self._selector(ns, flt)
        _, labels = self.idx[ns].search(q[None, :], k, params=self._params(sel))
        rows = self._row_array(ns)
        return [int(rows[i]) for i in labels[0] if i >= 0]

    def close(self) -> None:
        faiss = _faiss()

        for ns, index in self.idx.items():
            self.finish(ns)
            faiss.write_index(index, str(self.path / f"{ns}.faiss"))
            np.save(self.path / f"{ns}.rows.npy", self._row_array(ns))
        self.idx = {}
        self._sel = {}

    def discard(self) -> None:
        self.idx = {}
        self._sel = {}

    def reopen(self) -> None:
        faiss = _faiss()

        for file in sorted(self.path.glob("*.faiss")):
            ns = file.stem
            self.idx[ns] = faiss.read_index(str(file))
            self.rows[ns] = [np.load(self.path / f"{ns}.rows.npy")]
            self.pending[ns] = []


class FaissHnsw(_Faiss):
    """``faiss.IndexHNSWFlat`` (M 16, efConstruction 200), swept over efSearch."""

    name = "faiss-hnsw"
    label = "FAISS HNSW (raw)"
    knob = "efSearch"
    knob_values = EF_SWEEP

    def __init__(self, path: Path, dim: int) -> None:
        super().__init__(path, dim)
        self.knob_value = 16  # FAISS's default efSearch

    def settings(self) -> dict[str, Any]:
        return {"index": "IndexHNSWFlat", "M": HNSW_M, "efConstruction": HNSW_EF_CONSTRUCTION}

    def _new(self, capacity: int) -> Any:
        faiss = _faiss()

        index = faiss.IndexHNSWFlat(self.dim, HNSW_M, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = HNSW_EF_CONSTRUCTION
        return index

    def _params(self, sel: Any) -> Any:
        faiss = _faiss()

        return faiss.SearchParametersHNSW(efSearch=int(self.knob_value or 16), sel=sel)


class FaissHnswSq8(FaissHnsw):
    """``faiss.IndexHNSWSQ`` with 8-bit scalar quantization (trained on the first 10,000 vectors, no
    re-ranking), M 16, efConstruction 200, swept over efSearch."""

    name = "faiss-hnsw-sq8"
    label = "FAISS HNSW-SQ8 (raw)"

    def settings(self) -> dict[str, Any]:
        return {"index": "IndexHNSWSQ QT_8bit", "M": HNSW_M, "efConstruction": HNSW_EF_CONSTRUCTION}

    def _train_size(self, capacity: int) -> int:
        return min(capacity, 10_000)

    def _new(self, capacity: int) -> Any:
        faiss = _faiss()

        index = faiss.IndexHNSWSQ(self.dim, faiss.ScalarQuantizer.QT_8bit, HNSW_M, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = HNSW_EF_CONSTRUCTION
        return index


class FaissIvfPq(_Faiss):
    """``faiss.index_factory(d, "IVF<nlist>,PQ<dim/8>x8")``, nlist = 2 sqrt(n) (at least 8), trained on
    up to 50 vectors per list (the first rows of the ingest; the adapter holds them until then), no
    polysemous training, no re-ranking; swept over nprobe."""

    name = "faiss-ivfpq"
    label = "FAISS IVF-PQ (raw)"
    knob = "nprobe"
    knob_values = NPROBE_SWEEP

    def __init__(self, path: Path, dim: int) -> None:
        super().__init__(path, dim)
        self.knob_value = 1  # FAISS's default nprobe
        self.nlist: dict[str, int] = {}

    def settings(self) -> dict[str, Any]:
        return {"index": f"IVF<2 sqrt(n)>,PQ{self._m()}x8", "nlist": dict(self.nlist)}

    def _m(self) -> int:
        m = max(1, self.dim // 8)
        while self.dim % m:
            m -= 1
        return m

    def _nlist(self, capacity: int) -> int:
        return max(8, round(2 * math.sqrt(max(capacity, 1))))

    def _train_size(self, capacity: int) -> int:
        return min(capacity, 50 * self._nlist(capacity))

    def create(self, ns: str, capacity: int) -> None:
        super().create(ns, capacity)
        self.nlist[ns] = self._nlist(capacity)

    def _new(self, capacity: int) -> Any:
        faiss = _faiss()

        spec = f"IVF{self._nlist(capacity)},PQ{self._m()}x8"
        index = faiss.index_factory(self.dim, spec, faiss.METRIC_INNER_PRODUCT)
        # the factory turns on polysemous training, which only a polysemous (Hamming) search uses: it made
        # training on 300 vectors take 77 s here instead of 0.03 s (benchmarks/ivf_bench.py does the same)
        index.do_polysemous_training = False
        return index

    def _params(self, sel: Any) -> Any:
        faiss = _faiss()

        return faiss.SearchParametersIVF(nprobe=int(self.knob_value or 1), sel=sel)


# -------------------------------------------------------------------------------------------- Chroma


class Chroma(Engine):
    """Chroma embedded: ``chromadb.PersistentClient(path)``, ``create_collection(name)`` with its defaults
    (HNSW, space l2 - the same order as cosine on unit vectors - M 16, ef_construction 100, ef_search 100),
    ``col.add`` in batches and ``col.query(query_embeddings=..., n_results=10, where=...)``."""

    name = "chroma"
    label = "Chroma (embedded)"
    packages = ("chromadb",)
    module = "chromadb"
    persistence = "on disk (SQLite + HNSW files), written as it goes"

    def __init__(self, path: Path, dim: int) -> None:
        super().__init__(path, dim)
        self.client: Any = None
        self.cols: dict[str, Any] = {}
        self._open()

    def _open(self) -> None:
        import chromadb
        from chromadb.config import Settings

        self.client = chromadb.PersistentClient(
            path=str(self.path / "chroma"), settings=Settings(anonymized_telemetry=False)
        )

    def settings(self) -> dict[str, Any]:
        return {"client": "PersistentClient", "collection": "defaults (hnsw space l2, ef_search 100)"}

    @staticmethod
    def _name(ns: str) -> str:
        return f"ns-{ns}"  # Chroma wants 3-512 characters

    def create(self, ns: str, capacity: int) -> None:
        self.cols[ns] = self.client.create_collection(self._name(ns))

    def add(self, ns: str, rows: np.ndarray, vectors: np.ndarray, docs: Any, metas: Any) -> None:
        self.cols[ns].add(
            ids=_doc_ids(rows),
            embeddings=vectors,
            documents=None if docs is None else list(docs),
            metadatas=list(metas),
        )

    def search(self, ns: str, q: np.ndarray, k: int = K, flt: Filter | None = None) -> list[int]:
        where = None
        if flt is not None:
            where = {flt.field: flt.value} if flt.op == "eq" else {flt.field: {"$lt": flt.value}}
        res = self.cols[ns].query(query_embeddings=q[None, :], n_results=k, where=where, include=[])
        return [_row_of(i) for i in res["ids"][0]]

    def close(self) -> None:
        from chromadb.api.client import SharedSystemClient

        with contextlib.suppress(Exception):
            self.client.close()
        # Chroma keeps one system per path in the process; without this a reopen would be free
        SharedSystemClient.clear_system_cache()
        self.cols = {}
        self.client = None

    def reopen(self) -> None:
        self._open()
        for col in self.client.list_collections():
            name = col.name if hasattr(col, "name") else str(col)
            self.cols[name[3:]] = self.client.get_collection(name)


# -------------------------------------------------------------------------------------------- Qdrant


class Qdrant(Engine):
    """qdrant-client in local mode: ``QdrantClient(path=...)`` (no server), one collection per namespace
    with ``Distance.COSINE``, ``upsert`` of a ``Batch`` (payload: the metadata and the document) and
    ``query_points``. Local mode searches exactly (numpy over every vector) and warns past 20,000 points
    that it is meant for tests and prototypes."""

    name = "qdrant"
    label = "Qdrant (client local mode)"
    packages = ("qdrant-client",)
    module = "qdrant_client"
    persistence = "on disk (SQLite), every point written as it goes"

    def __init__(self, path: Path, dim: int) -> None:
        super().__init__(path, dim)
        self.client: Any = None
        self._open()

    def _open(self) -> None:
        from qdrant_client import QdrantClient

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self.client = QdrantClient(path=str(self.path / "qdrant"))

    def settings(self) -> dict[str, Any]:
        return {"client": "QdrantClient(path=...)", "distance": "Cosine"}

    def create(self, ns: str, capacity: int) -> None:
        from qdrant_client import models

        self.client.create_collection(
            ns, vectors_config=models.VectorParams(size=self.dim, distance=models.Distance.COSINE)
        )

    def add(self, ns: str, rows: np.ndarray, vectors: np.ndarray, docs: Any, metas: Any) -> None:
        from qdrant_client import models

        payloads = [dict(m) for m in metas]
        if docs is not None:
            for p, d in zip(payloads, docs, strict=True):
                p["document"] = d
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the "more than 20,000 points in local mode" warning
            self.client.upsert(
                ns,
                points=models.Batch(ids=[int(r) for r in rows], vectors=vectors.tolist(), payloads=payloads),
            )

    def search(self, ns: str, q: np.ndarray, k: int = K, flt: Filter | None = None) -> list[int]:
        from qdrant_client import models

        query_filter = None
        if flt is not None:
            cond = (
                models.FieldCondition(key=flt.field, match=models.MatchValue(value=flt.value))
                if flt.op == "eq"
                else models.FieldCondition(key=flt.field, range=models.Range(lt=flt.value))
            )
            query_filter = models.Filter(must=[cond])
        res = self.client.query_points(
            ns, query=q.tolist(), limit=k, query_filter=query_filter, with_payload=False
        )
        return [int(p.id) for p in res.points]

    def close(self) -> None:
        self.client.close()
        self.client = None

    def reopen(self) -> None:
        self._open()


# ------------------------------------------------------------------------------------------- LanceDB


class LanceDb(Engine):
    """LanceDB embedded: ``lancedb.connect(path)``, one table per namespace created from the first batch
    (``id``, ``vector``, ``document``, the metadata as columns), ``table.add`` for the rest, and
    ``table.search(q).where(..., prefilter=True).limit(10)``. No vector index is created (LanceDB's
    default: an exact scan; its docs suggest an index from about 100,000 rows), so its recall is 1."""

    name = "lancedb"
    label = "LanceDB (embedded)"
    packages = ("lancedb", "pylance", "pyarrow")
    module = "lancedb"
    persistence = "on disk (Lance files), one new data version per add"

    def __init__(self, path: Path, dim: int) -> None:
        super().__init__(path, dim)
        self.db: Any = None
        self.tables: dict[str, Any] = {}
        self._open()

    def _open(self) -> None:
        import lancedb

        self.db = lancedb.connect(str(self.path / "lance"))

    def settings(self) -> dict[str, Any]:
        return {
            "index": "none (exact scan, the default)",
            "metric": "l2 (the default; cosine order on unit vectors)",
        }

    def create(self, ns: str, capacity: int) -> None:
        self.tables.pop(ns, None)

    def _batch(self, rows: np.ndarray, vectors: np.ndarray, docs: Any, metas: Any) -> Any:
        import pyarrow as pa

        flat = pa.array(np.ascontiguousarray(vectors, dtype=np.float32).ravel())
        cols: dict[str, Any] = {
            "id": pa.array(np.asarray(rows, dtype=np.int64)),
            "vector": pa.FixedSizeListArray.from_arrays(flat, self.dim),
        }
        if docs is not None:
            cols["document"] = pa.array(list(docs), pa.string())
        for key in metas[0]:
            cols[key] = pa.array([m[key] for m in metas])
        return pa.table(cols)

    def add(self, ns: str, rows: np.ndarray, vectors: np.ndarray, docs: Any, metas: Any) -> None:
        data = self._batch(rows, vectors, docs, metas)
        if ns in self.tables:
            self.tables[ns].add(data)
        else:
            self.tables[ns] = self.db.create_table(f"ns_{ns}", data=data)

    def search(self, ns: str, q: np.ndarray, k: int = K, flt: Filter | None = None) -> list[int]:
        query = self.tables[ns].search(q).limit(k).select(["id", "_distance"])
        if flt is not None:
            sql = f"`{flt.field}` = {flt.value}" if flt.op == "eq" else f"`{flt.field}` < {flt.value}"
            query = query.where(sql, prefilter=True)
        return [int(i) for i in query.to_arrow()["id"].to_pylist()]

    def close(self) -> None:
        self.tables = {}
        self.db = None

    def reopen(self) -> None:
        self._open()
        names = self.db.table_names() if hasattr(self.db, "table_names") else self.db.list_tables()
        for name in names:
            self.tables[name[3:]] = self.db.open_table(name)


# ---------------------------------------------------------------------------------- LangChain in memory


class _GivenVectors:
    """A LangChain ``Embeddings`` that hands back the vectors it was just given: the data set's
    embeddings are already computed, and ``InMemoryVectorStore.add_documents`` asks its embedder."""

    def __init__(self) -> None:
        self.next: list[list[float]] = []

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        out, self.next = self.next, []
        return out

    def embed_query(self, text: str) -> list[float]:
        raise NotImplementedError("the report searches by vector")


class LangChainInMemory(Engine):
    """langchain-core's ``InMemoryVectorStore``: ``add_documents`` (the vectors given through the
    embedder), ``similarity_search_with_score_by_vector(q, k, filter=callable)``; exact cosine over a
    Python list of every vector. Saved with ``dump`` (JSON), reopened with ``load``."""

    name = "langchain"
    label = "LangChain InMemoryVectorStore"
    packages = ("langchain-core",)
    module = "langchain_core"
    persistence = "in memory; saved only by an explicit dump (JSON)"
    python_bytes_per_float = 32  # a float object and its list slot

    def __init__(self, path: Path, dim: int) -> None:
        super().__init__(path, dim)
        self.emb = _GivenVectors()
        self.stores: dict[str, Any] = {}

    def create(self, ns: str, capacity: int) -> None:
        from langchain_core.vectorstores import InMemoryVectorStore

        self.stores[ns] = InMemoryVectorStore(embedding=self.emb)  # type: ignore[arg-type]

    def add(self, ns: str, rows: np.ndarray, vectors: np.ndarray, docs: Any, metas: Any) -> None:
        from langchain_core.documents import Document

        ids = _doc_ids(rows)
        texts = list(docs) if docs is not None else [""] * len(ids)
        self.emb.next = vectors.tolist()
        documents = [
            Document(page_content=t, metadata=dict(m), id=i)
            for t, m, i in zip(texts, metas, ids, strict=True)
        ]
        self.stores[ns].add_documents(documents, ids=ids)

    def search(self, ns: str, q: np.ndarray, k: int = K, flt: Filter | None = None) -> list[int]:
        fn: Callable[[Any], bool] | None = None
        if flt is not None:
            fn = lambda doc: flt.matches(doc.metadata)  # noqa: E731
        hits = self.stores[ns].similarity_search_with_score_by_vector(q.tolist(), k=k, filter=fn)
        return [_row_of(doc.id) for doc, _ in hits]

    def close(self) -> None:
        for ns, store in self.stores.items():
            store.dump(str(self.path / f"{ns}.json"))
        self.stores = {}

    def discard(self) -> None:
        self.stores = {}

    def reopen(self) -> None:
        from langchain_core.vectorstores import InMemoryVectorStore

        for file in sorted(self.path.glob("*.json")):
            self.stores[file.stem] = InMemoryVectorStore.load(str(file), embedding=self.emb)  # type: ignore[arg-type]


# ------------------------------------------------------------------------------ LlamaIndex simple store


class LlamaIndexSimple(Engine):
    """llama-index-core's ``SimpleVectorStore``: ``add`` of ``TextNode``s with their embeddings,
    ``query(VectorStoreQuery(query_embedding=..., similarity_top_k=10, filters=MetadataFilters(...)))``;
    exact cosine over a dict of Python lists. It keeps embeddings and metadata only (the texts live in
    LlamaIndex's docstore, not measured here). Saved with ``persist`` (JSON)."""

    name = "llamaindex"
    label = "LlamaIndex SimpleVectorStore"
    packages = ("llama-index-core",)
    module = "llama_index.core"
    persistence = "in memory; saved only by an explicit persist (JSON)"
    python_bytes_per_float = 32

    def __init__(self, path: Path, dim: int) -> None:
        super().__init__(path, dim)
        self.stores: dict[str, Any] = {}

    def create(self, ns: str, capacity: int) -> None:
        from llama_index.core.vector_stores import SimpleVectorStore

        self.stores[ns] = SimpleVectorStore()

    def add(self, ns: str, rows: np.ndarray, vectors: np.ndarray, docs: Any, metas: Any) -> None:
        from llama_index.core.schema import TextNode

        ids = _doc_ids(rows)
        texts = list(docs) if docs is not None else [""] * len(ids)
        nodes = [
            TextNode(id_=i, text=t, embedding=v, metadata=dict(m))
            for i, t, v, m in zip(ids, texts, vectors.tolist(), metas, strict=True)
        ]
        self.stores[ns].add(nodes)

    def search(self, ns: str, q: np.ndarray, k: int = K, flt: Filter | None = None) -> list[int]:
        from llama_index.core.vector_stores import (
            FilterOperator,
            MetadataFilter,
            MetadataFilters,
            VectorStoreQuery,
        )

        filters = None
        if flt is not None:
            op = FilterOperator.EQ if flt.op == "eq" else FilterOperator.LT
            filters = MetadataFilters(filters=[MetadataFilter(key=flt.field, value=flt.value, operator=op)])
        res = self.stores[ns].query(
            VectorStoreQuery(query_embedding=q.tolist(), similarity_top_k=k, filters=filters)
        )
        return [_row_of(i) for i in res.ids or []]

    def close(self) -> None:
        for ns, store in self.stores.items():
            store.persist(str(self.path / f"{ns}.json"))
        self.stores = {}

    def discard(self) -> None:
        self.stores = {}

    def reopen(self) -> None:
        from llama_index.core.vector_stores import SimpleVectorStore

        for file in sorted(self.path.glob("*.json")):
            self.stores[file.stem] = SimpleVectorStore.from_persist_path(str(file))


ENGINES: dict[str, type[Engine]] = {
    cls.name: cls
    for cls in (
        EmbeddixDefault,
        EmbeddixTuned,
        Hnswlib,
        FaissHnsw,
        FaissHnswSq8,
        FaissIvfPq,
        Chroma,
        LanceDb,
        Qdrant,
        LangChainInMemory,
        LlamaIndexSimple,
    )
}


def engine_class(name: str) -> type[Engine]:
    """The adapter class of engine ``name`` (one of :data:`ENGINES`)."""
    try:
        return ENGINES[name]
    except KeyError:
        raise ValueError(f"unknown engine {name!r}; known: {', '.join(ENGINES)}") from None


def dir_bytes(path: Path) -> int:
    """Bytes of every file under ``path`` (0 if it does not exist)."""
    if not path.exists():
        return 0
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def remove(path: Path) -> None:
    """Delete a directory tree, ignoring what is already gone."""
    shutil.rmtree(path, ignore_errors=True)


def dump_json(path: Path, value: Any) -> None:
    """Write ``value`` as indented JSON (numpy scalars as plain numbers)."""
    path.write_text(json.dumps(value, indent=1, default=_plain) + "\n", encoding="utf-8")


def _plain(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"cannot write {type(value).__name__} as JSON")
