"""The same five LangChain calls on Embeddix, langchain-chroma and langchain-qdrant, and what each returns.

Not a timing benchmark: a behaviour comparison for users moving a LangChain app from Chroma or Qdrant to
Embeddix (issue #15). Each store is built with its defaults (what a user who never picked a metric has):
``EmbeddixVectorStore`` in a temp dir (cosine), ``Chroma`` ephemeral in memory (its default space, l2), and
``QdrantVectorStore`` with ``location=":memory:"`` (cosine). All three get the same deterministic
embeddings (:class:`BagOfWordsEmbeddings`: hashed bag of words, unit length, so texts sharing words are
near) and the same seven documents with an int ``year`` and a str ``topic`` in their metadata. The calls:

1. ``add_texts(texts, metadatas, ids)``, then ``add_texts`` again with one of the ids and a new text:
   replaced, duplicated, or an error? (Qdrant accepts only unsigned ints and UUIDs as ids; when it rejects
   ``"d1"``, the error is recorded and the run goes on with ``uuid5`` ids made from the same names.)
2. ``similarity_search_with_score(q, k=3)``: the scores, and whether higher or lower is better.
3. ``similarity_search_with_relevance_scores(q, k=3)``: the relevance scores and their range.
4. A metadata filter ``year > 2020`` in each store's own syntax (a dict for Embeddix and Chroma, a
   ``qdrant_client.models.Filter`` for Qdrant), then the same filter with the string ``"2020"``: does it
   raise, return nothing, or match anyway?
5. ``delete(ids=[...])`` (one of them absent), then ``get_by_ids``.

Each call's result (types, scores rounded to 4 places, the error class and the first line of its message)
goes to benchmarks/results/adapter_compare.json with the package versions, and a markdown table of short
cells is printed (the one in README.md, "Moving from Chroma or Qdrant (LangChain)"). The peers are not
Embeddix dependencies; run it in the git-ignored peers venv, which has all three::

    benchmarks/.peers-venv/bin/pip install langchain-chroma langchain-qdrant qdrant-client langchain-core numpy
    benchmarks/.peers-venv/bin/pip install -e . --no-deps   # plus embeddix's own light deps (pyproject)
    benchmarks/.peers-venv/bin/python benchmarks/adapter_compare.py

``--only embeddix`` (or ``chroma``, ``qdrant``) runs one store and merges its results into the JSON file,
so the stores can also run from different venvs.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import platform
import re
import sys
import tempfile
import uuid
import warnings
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path
from typing import Any

os.environ.setdefault("ANONYMIZED_TELEMETRY", "False")  # chromadb: no telemetry from a benchmark

from langchain_core.embeddings import Embeddings

RESULTS = Path(__file__).resolve().parent / "results"
STORES = ("embeddix", "chroma", "qdrant")
CALLS = (
    "add_texts",
    "similarity_search_with_score",
    "similarity_search_with_relevance_scores",
    "filter",
    "delete",
)
PACKAGES = (
    "embeddix",
    "langchain-core",
    "langchain-chroma",
    "chromadb",
    "langchain-qdrant",
    "qdrant-client",
    "numpy",
)

TEXTS = [
    "The cat sat on the warm mat",
    "A cat and a dog play in the garden",
    "Dogs chase the cat around the garden",
    "Stock markets fell sharply on interest rate fears",
    "Central banks raised interest rates again",
    "The new phone has a faster chip and a better camera",
    "Laptop makers ship faster chips this year",
]
METADATAS: list[dict[str, Any]] = [
    {"year": 2019, "topic": "pets"},
    {"year": 2021, "topic": "pets"},
    {"year": 2022, "topic": "pets"},
    {"year": 2020, "topic": "finance"},
    {"year": 2023, "topic": "finance"},
    {"year": 2021, "topic": "tech"},
    {"year": 2024, "topic": "tech"},
]
IDS = [f"d{i + 1}" for i in range(len(TEXTS))]
READD_TEXT = "The cat slept on the cold mat"
QUERY = "a cat in the garden"
DELETE_IDS = ["d2", "d3", "missing"]
GET_IDS = ["d2", "d3", "d4"]
UUID_NAMESPACE = uuid.UUID("6f1c9d2e-5b0a-4c1e-9a57-1b2f0e6d8c31")


class BagOfWordsEmbeddings(Embeddings):
    """Hashed bag of words, unit length: texts sharing words are near, and every run gives the same vectors.

    Words are lower-cased ``[a-z0-9]+`` runs, each hashed (blake2b, not Python's salted ``hash``) into one
    of ``dim`` buckets; the count vector is divided by its norm. All counts are non-negative, so cosine
    similarities are in [0, 1].
    """

    def __init__(self, dim: int = 128) -> None:
        self.dim = dim

    def _embed(self, text: str) -> list[float]:
        vec = [0.0] * self.dim
        for word in re.findall(r"[a-z0-9]+", text.lower()):
            digest = hashlib.blake2b(word.encode(), digest_size=8).digest()
            vec[int.from_bytes(digest, "little") % self.dim] += 1.0
        norm = math.sqrt(sum(v * v for v in vec)) or 1.0
        return [v / norm for v in vec]

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return [self._embed(t) for t in texts]

    def embed_query(self, text: str) -> list[float]:
        return self._embed(text)


# -- the stores ---------------------------------------------------------------------------------------
class Adapter(ABC):
    """One store, with the few store-specific parts of the five calls (ids, filter syntax, counting)."""

    name = ""
    default_metric = ""

    def __init__(self, store: Any) -> None:
        self.store = store
        self.id_of: Callable[[str], str] = str  # name -> the id the store is given

    def year_filter(self, value: Any) -> Any:
        return {"year": {"$gt": value}}

    def filter_syntax(self) -> str:
        return '{"year": {"$gt": 2020}}'

    def filter_note(self) -> str:
        return ""

    @abstractmethod
    def count(self) -> int:
        """How many documents the store holds."""


class EmbeddixAdapter(Adapter):
    name = "embeddix"
    default_metric = "cosine"

    def count(self) -> int:
        return self.store.collection.count()


class ChromaAdapter(Adapter):
    name = "chroma"
    default_metric = "l2"

    def count(self) -> int:
        return self.store._collection.count()


class QdrantAdapter(Adapter):
    name = "qdrant"
    default_metric = "cosine"

    def year_filter(self, value: Any) -> Any:
        from qdrant_client import models

        return models.Filter(must=[models.FieldCondition(key="metadata.year", range=models.Range(gt=value))])

    def filter_syntax(self) -> str:
        return 'models.Filter(must=[FieldCondition(key="metadata.year", range=Range(gt=2020))])'

    def filter_note(self) -> str:
        return '`models.Filter`, key `"metadata.year"`: '

    def count(self) -> int:
        return self.store.client.count(self.store.collection_name, exact=True).count


@contextmanager
def open_store(name: str, embedding: Embeddings) -> Iterator[Adapter]:
    """The store ``name`` with its defaults, empty, closed on exit."""
    if name == "embeddix":
        from langchain_embeddix import EmbeddixVectorStore

        with tempfile.TemporaryDirectory(prefix="embeddix-compare-") as tmp:
            store = EmbeddixVectorStore(embedding=embedding, collection_name="compare", path=tmp)
            try:
                yield EmbeddixAdapter(store)
            finally:
                store.close()
    elif name == "chroma":
        import chromadb
        from langchain_chroma import Chroma

        client = chromadb.EphemeralClient()
        store = Chroma(collection_name="compare", embedding_function=embedding, client=client)
        try:
            yield ChromaAdapter(store)
        finally:
            client.delete_collection("compare")
    elif name == "qdrant":
        from langchain_qdrant import QdrantVectorStore
        from qdrant_client import QdrantClient, models

        client = QdrantClient(location=":memory:")
        client.create_collection(
            "compare",
            vectors_config=models.VectorParams(size=embedding.dim, distance=models.Distance.COSINE),  # type: ignore[attr-defined]
        )
        store = QdrantVectorStore(client=client, collection_name="compare", embedding=embedding)
        try:
            yield QdrantAdapter(store)
        finally:
            client.close()
    else:
        raise ValueError(f"unknown store {name!r}; expected one of {STORES}")


# -- recording ----------------------------------------------------------------------------------------
def error_info(exc: BaseException) -> dict[str, str]:
    lines = str(exc).strip().splitlines()
    return {
        "error": type(exc).__name__,
        "module": type(exc).__module__,
        "is_value_error": isinstance(exc, ValueError),
        "message": lines[0] if lines else "",
    }


def attempt(fn: Callable[[], Any]) -> tuple[Any, dict[str, Any]]:
    """``fn()``'s value and a record of its warnings, or None and the error it raised."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            value = fn()
            rec: dict[str, Any] = {}
        except Exception as exc:
            value = None
            rec = error_info(exc)
    if caught:
        rec["warnings"] = [f"{w.category.__name__}: {str(w.message).splitlines()[0]}" for w in caught]
    return value, rec


def doc_name(adapter: Adapter, doc: Any) -> str | None:
    """The name (``d1``...) of a returned Document, from its id, else its text."""
    names = {adapter.id_of(n): n for n in IDS}
    if doc.id is not None and str(doc.id) in names:
        return names[str(doc.id)]
    if doc.page_content in TEXTS:
        return IDS[TEXTS.index(doc.page_content)]
    return "d1" if doc.page_content == READD_TEXT else None


def scored(adapter: Adapter, pairs: list[tuple[Any, float]]) -> list[dict[str, Any]]:
    return [
        {
            "name": doc_name(adapter, d),
            "id": d.id,
            "score": round(float(s), 4),
            "score_type": type(s).__name__,
            "metadata": d.metadata,
        }
        for d, s in pairs
    ]


# -- the five calls -----------------------------------------------------------------------------------
def call_add_texts(a: Adapter) -> dict[str, Any]:
    out: dict[str, Any] = {}
    returned, rec = attempt(lambda: a.store.add_texts(TEXTS, metadatas=METADATAS, ids=IDS))
    out["string_ids"] = rec | {"returned": returned}
    if "error" in rec:  # Qdrant: ids must be unsigned ints or UUIDs
        a.id_of = lambda n: str(uuid.uuid5(UUID_NAMESPACE, n))
        ids = [a.id_of(n) for n in IDS]
        returned, rec = attempt(lambda: a.store.add_texts(TEXTS, metadatas=METADATAS, ids=ids))
        out["uuid_ids"] = rec | {"returned": returned}
        if "error" in rec:
            return out
    out["id_scheme"] = "uuid5" if "uuid_ids" in out else "as given"
    out["count_after_add"] = a.count()
    returned, rec = attempt(
        lambda: a.store.add_texts([READD_TEXT], metadatas=[METADATAS[0]], ids=[a.id_of("d1")])
    )
    out["readd"] = rec | {"returned": returned}
    out["count_after_readd"] = a.count()
    got, rec = attempt(lambda: a.store.get_by_ids([a.id_of("d1")]))
    out["get_d1"] = rec | {"texts": [d.page_content for d in got or []]}
    texts = out["get_d1"]["texts"]
    if out["count_after_readd"] == len(TEXTS) and texts == [READD_TEXT]:
        out["readd_outcome"] = "replaced"
    elif out["count_after_readd"] > len(TEXTS):
        out["readd_outcome"] = "duplicated"
    elif "error" in out["readd"]:
        out["readd_outcome"] = "error"
    else:
        out["readd_outcome"] = "unchanged"
    return out


# What a raw score can be, as a function of the cosine of the (unit) query and document vectors.
SCORE_KINDS: dict[str, Callable[[float], float]] = {
    "cosine": lambda c: c,
    "squared L2": lambda c: 2.0 - 2.0 * c,
    "L2": lambda c: math.sqrt(max(0.0, 2.0 - 2.0 * c)),
}


def call_with_score(a: Adapter, embedding: BagOfWordsEmbeddings) -> dict[str, Any]:
    """The scored hits, and which of :data:`SCORE_KINDS` the scores are (from the vectors' cosines)."""
    pairs, rec = attempt(lambda: a.store.similarity_search_with_score(QUERY, k=3))
    out = rec | {"query": QUERY, "hits": scored(a, pairs or [])}
    q = embedding.embed_query(QUERY)
    for hit, (doc, _) in zip(out["hits"], pairs or [], strict=True):
        hit["cosine"] = round(
            sum(x * y for x, y in zip(q, embedding.embed_query(doc.page_content), strict=True)), 4
        )
    out["score_kind"] = next(
        (
            kind
            for kind, fn in SCORE_KINDS.items()
            if out["hits"] and all(abs(fn(h["cosine"]) - h["score"]) < 1e-3 for h in out["hits"])
        ),
        None,
    )
    return out


# How LangChain stores turn a raw score into a relevance, and the range each gives for unit vectors.
RELEVANCE_MAPS: dict[str, tuple[Callable[[float], float], str]] = {
    # clip01 first: for scores already in [0, 1] it and the identity agree, and it is what Embeddix documents
    "clip01(score)": (lambda s: min(1.0, max(0.0, s)), "= cos clipped to [0, 1]"),
    "score": (lambda s: s, "= the score"),
    "(score + 1) / 2": (lambda s: (s + 1.0) / 2.0, "= (cos + 1) / 2, in [0, 1]"),
    "1 - score / sqrt(2)": (lambda s: 1.0 - s / math.sqrt(2), "= 1 − d/√2: below 0 once cos < 0.29"),
    "1 - score": (lambda s: 1.0 - s, "= 1 − d"),
}


def call_relevance(a: Adapter, raw: dict[str, Any]) -> dict[str, Any]:
    """The relevance scores, and which of :data:`RELEVANCE_MAPS` turns ``raw``'s scores into them."""
    pairs, rec = attempt(lambda: a.store.similarity_search_with_relevance_scores(QUERY, k=3))
    out = rec | {"query": QUERY, "hits": scored(a, pairs or [])}
    raw_scores = [h["score"] for h in raw.get("hits", [])]
    rel_scores = [h["score"] for h in out["hits"]]
    if raw_scores and len(raw_scores) == len(rel_scores):
        out["mappings_consistent"] = [
            name
            for name, (fn, _) in RELEVANCE_MAPS.items()
            if all(abs(fn(s) - r) < 1e-3 for s, r in zip(raw_scores, rel_scores, strict=True))
        ]
        out["mapping"] = next(iter(out["mappings_consistent"]), None)
    return out


def call_filter(a: Adapter) -> dict[str, Any]:
    out: dict[str, Any] = {"syntax": a.filter_syntax(), "note": a.filter_note()}
    k = len(TEXTS)
    for label, value in (("int", 2020), ("str", "2020")):
        docs, rec = attempt(
            lambda value=value: a.store.similarity_search(QUERY, k=k, filter=a.year_filter(value))
        )
        out[label] = rec | {
            "filter_value": value,
            "names": sorted(n for n in (doc_name(a, d) for d in docs or []) if n),
            "years": sorted(d.metadata.get("year") for d in docs or []),
        }
    return out


def call_delete(a: Adapter) -> dict[str, Any]:
    ids = [a.id_of(n) for n in DELETE_IDS]
    returned, rec = attempt(lambda: a.store.delete(ids=ids))
    out: dict[str, Any] = {"delete": rec | {"ids": DELETE_IDS, "returned": returned}}
    got, rec = attempt(lambda: a.store.get_by_ids([a.id_of(n) for n in GET_IDS]))
    out["get_by_ids"] = rec | {"ids": GET_IDS, "names": [doc_name(a, d) for d in got or []]}
    out["count_after_delete"] = a.count()
    return out


def run_store(name: str) -> dict[str, Any]:
    embedding = BagOfWordsEmbeddings()
    with open_store(name, embedding) as a:
        result: dict[str, Any] = {"class": type(a.store).__module__ + "." + type(a.store).__name__}
        result["default_metric"] = a.default_metric
        result["add_texts"] = call_add_texts(a)
        result["similarity_search_with_score"] = call_with_score(a, embedding)
        result["similarity_search_with_relevance_scores"] = call_relevance(
            a, result["similarity_search_with_score"]
        )
        result["filter"] = call_filter(a)
        result["delete"] = call_delete(a)
    return result


# -- the table ----------------------------------------------------------------------------------------
def err(rec: dict[str, Any]) -> str:
    return f"`{rec['error']}`" + (
        " (a `ValueError`)" if rec["is_value_error"] and rec["error"] != "ValueError" else ""
    )


def scores_cell(rec: dict[str, Any], relevance: bool) -> str:
    if "error" in rec:
        return err(rec)
    hits = rec["hits"]
    values = ", ".join(f"{h['score']:.2f}" for h in hits)
    names = " ".join(str(h["name"]) for h in hits)
    if relevance:
        mapping = RELEVANCE_MAPS[rec["mapping"]][1] if rec.get("mapping") else "unknown mapping"
        extra = "; warns" if rec.get("warnings") else ""
        return f"{values} ({mapping}){extra}"
    higher = len(hits) < 2 or hits[0]["score"] >= hits[-1]["score"]
    cell = f"{values} ({names}): {'higher' if higher else 'lower'} is better"
    extra_keys = sorted({k for h in hits for k in h["metadata"]} - {k for m in METADATAS for k in m})
    if hits and hits[0]["id"] is None:
        cell += "; `Document.id` is None"
    if extra_keys:
        cell += "; metadata gains " + ", ".join(f"`{k}`" for k in extra_keys)
    return cell


def add_cell(rec: dict[str, Any]) -> str:
    prefix = ""
    if "uuid_ids" in rec:
        prefix = f'`"d1"` ids: {err(rec["string_ids"])}; with UUIDs: '
        if "error" in rec["uuid_ids"]:
            return prefix + err(rec["uuid_ids"])
    elif "error" in rec["string_ids"]:
        return err(rec["string_ids"])
    outcome = rec["readd_outcome"]
    if outcome == "error":
        return prefix + f"re-add: {err(rec['readd'])}"
    return prefix + f"returns ids; re-add {outcome} ({rec['count_after_readd']} docs)"


def filter_cell(rec: dict[str, Any]) -> str:
    def one(r: dict[str, Any]) -> str:
        if "error" in r:
            return err(r)
        if not r["names"]:
            return "`[]`"
        if r is rec["str"] and r["names"] == rec["int"]["names"]:
            return f"the same {len(r['names'])} docs (string taken as a number)"
        return f"{len(r['names'])} docs"

    return rec["note"] + f'`> 2020`: {one(rec["int"])}; `> "2020"`: {one(rec["str"])}'


def delete_cell(rec: dict[str, Any]) -> str:
    d = rec["delete"]
    first = err(d) if "error" in d else f"`{d['returned']!r}` (absent id ok)"
    g = rec["get_by_ids"]
    second = err(g) if "error" in g else f"get_by_ids → {', '.join(n or '?' for n in g['names']) or '[]'}"
    return f"{first}; {second}"


def table(results: dict[str, Any]) -> str:
    stores = [s for s in STORES if s in results]
    heads = {"embeddix": "Embeddix", "chroma": "langchain-chroma", "qdrant": "langchain-qdrant"}
    rows = [
        ("`add_texts(texts, metadatas, ids)`, re-add an id", lambda r: add_cell(r["add_texts"])),
        (
            f'`similarity_search_with_score("{QUERY}", k=3)`',
            lambda r: (
                f"{r['similarity_search_with_score']['score_kind'] or 'unknown'}: "
                + scores_cell(r["similarity_search_with_score"], False)
            ),
        ),
        (
            "`similarity_search_with_relevance_scores(q, k=3)`",
            lambda r: scores_cell(r["similarity_search_with_relevance_scores"], True),
        ),
        ('metadata filter `year > 2020`, then `"2020"`', lambda r: filter_cell(r["filter"])),
        (
            f"`delete(ids={json.dumps(DELETE_IDS)})`, then `get_by_ids({json.dumps(GET_IDS)})`",
            lambda r: delete_cell(r["delete"]),
        ),
    ]
    lines = [
        "| Call | " + " | ".join(heads[s] for s in stores) + " |",
        "|---|" + "---|" * len(stores),
    ]
    for label, cell in rows:
        lines.append(
            f"| {label} | " + " | ".join(cell(results[s]).replace("|", "\\|") for s in stores) + " |"
        )
    return "\n".join(lines)


def versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {"python": platform.python_version()}
    for pkg in PACKAGES:
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = None
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--only", choices=STORES, action="append", help="run these stores only; merge into --out"
    )
    parser.add_argument("--out", type=Path, default=RESULTS / "adapter_compare.json")
    args = parser.parse_args(argv)
    names = args.only or list(STORES)
    doc: dict[str, Any] = {"stores": {}, "versions": {}}
    if args.only and args.out.exists():
        doc = json.loads(args.out.read_text(encoding="utf-8"))
    doc["documents"] = [
        {"id": i, "text": t, "metadata": m} for i, t, m in zip(IDS, TEXTS, METADATAS, strict=True)
    ]
    doc["query"] = QUERY
    doc["embeddings"] = "BagOfWordsEmbeddings(dim=128): hashed bag of words, unit length"
    env = versions()
    for name in names:
        doc["stores"][name] = run_store(name)
        doc["versions"][name] = {"executable": sys.executable} | env
    doc["table"] = table(doc["stores"])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=2, default=repr) + "\n", encoding="utf-8")
    print(doc["table"])
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
