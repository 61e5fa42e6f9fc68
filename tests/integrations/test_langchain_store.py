"""langchain_embeddix beyond the standard suite: filters, MMR, relevance scores, persistence, embedders."""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from langchain_core.documents import Document
from langchain_core.embeddings import DeterministicFakeEmbedding, Embeddings

import langchain_embeddix
from embeddix_core import (
    DimensionMismatchError,
    Embeddix,
    InvalidArgumentError,
    InvalidFilterError,
    InvalidMetadataError,
    ModelMismatchError,
)
from embeddix_core.embeddings import HashEmbedder
from langchain_embeddix import (
    EmbeddixEmbeddings,
    EmbeddixHybridRetriever,
    EmbeddixVectorStore,
    LangChainEmbedder,
    to_core_filter,
)


class TableEmbeddings(Embeddings):
    """Embeddings from a fixed table, so geometry (and therefore MMR and scores) is known exactly."""

    def __init__(self, table: dict[str, list[float]], model: str = "table-v1") -> None:
        self.table = table
        self.model = model
        self.calls = 0

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        self.calls += 1
        return [self.table[t] for t in texts]

    def embed_query(self, text: str) -> list[float]:
        self.calls += 1
        return self.table[text]


# -- package surface -----------------------------------------------------------------------------------
def test_exported_names() -> None:
    assert langchain_embeddix.__all__ == [
        "EmbeddixEmbeddings",
        "EmbeddixHybridRetriever",
        "EmbeddixVectorStore",
        "LangChainEmbedder",
        "to_core_filter",
    ]
    assert langchain_embeddix.__all__ == sorted(langchain_embeddix.__all__)
    for name in langchain_embeddix.__all__:
        assert getattr(langchain_embeddix, name) is not None


# -- fixtures ------------------------------------------------------------------------------------------
ROWS: list[dict[str, Any]] = [
    {"source": "a", "page": i, "score": i / 10, "tags": ["x", "y"] if i % 2 else ["y"], "draft": i % 3 == 0}
    for i in range(12)
]


@pytest.fixture
def store() -> Iterator[EmbeddixVectorStore]:
    s = EmbeddixVectorStore(embedding=EmbeddixEmbeddings("hash"))
    texts = [f"document number {i} about topic {i % 4}" for i in range(12)]
    metas = [dict(r, source="a" if i < 6 else "b") for i, r in enumerate(ROWS)]
    s.add_texts(texts, metas, ids=[f"d{i}" for i in range(12)])
    yield s
    s.close()


def _expected(pred: Callable[[dict[str, Any]], bool]) -> set[str]:
    metas = [dict(r, source="a" if i < 6 else "b") for i, r in enumerate(ROWS)]
    return {f"d{i}" for i, m in enumerate(metas) if pred(m)}


# -- filters -------------------------------------------------------------------------------------------
FILTERS: list[tuple[dict[str, Any], Callable[[dict[str, Any]], bool]]] = [
    ({"source": "a"}, lambda m: m["source"] == "a"),
    ({"page": {"$gte": 4}}, lambda m: m["page"] >= 4),
    ({"page": [1, 2, 11]}, lambda m: m["page"] in (1, 2, 11)),
    ({"page": {"$in": [1, 2]}}, lambda m: m["page"] in (1, 2)),
    ({"page": {"$nin": [1, 2]}}, lambda m: m["page"] not in (1, 2)),
    ({"score": {"$between": [0.2, 0.5]}}, lambda m: 0.2 <= m["score"] <= 0.5),
    ({"tags": {"$contains": "x"}}, lambda m: "x" in m["tags"]),
    ({"draft": True}, lambda m: m["draft"] is True),
    ({"source": "b", "page": {"$lt": 9}}, lambda m: m["source"] == "b" and m["page"] < 9),
    ({"$or": [{"page": 0}, {"source": "b"}]}, lambda m: m["page"] == 0 or m["source"] == "b"),
    ({"$and": [{"page": {"$gt": 2}}, {"$not": {"draft": True}}]}, lambda m: m["page"] > 2 and not m["draft"]),
    ({"missing": {"$exists": False}}, lambda m: True),
    ({"page": {"$ne": 3}}, lambda m: m["page"] != 3),
]


@pytest.mark.parametrize(("flt", "pred"), FILTERS, ids=[str(f) for f, _ in FILTERS])
def test_filters_match_brute_force(
    store: EmbeddixVectorStore, flt: dict[str, Any], pred: Callable[[dict[str, Any]], bool]
) -> None:
    docs = store.similarity_search("document topic", k=100, filter=flt)
    assert {d.id for d in docs} == _expected(pred)


async def test_async_filters(store: EmbeddixVectorStore) -> None:
    docs = await store.asimilarity_search("document topic", k=100, filter={"source": "b"})
    assert {d.id for d in docs} == _expected(lambda m: m["source"] == "b")


def test_filter_translation() -> None:
    assert to_core_filter(None) is None
    assert to_core_filter({"a": [1, 2]}) == {"a": {"$in": [1, 2]}}
    assert to_core_filter({"a": {"$between": [1, 2]}}) == {"a": {"$gte": 1, "$lte": 2}}
    assert to_core_filter({"$or": [{"a": [1]}, {"b": 2}]}) == {"$or": [{"a": {"$in": [1]}}, {"b": 2}]}
    assert to_core_filter({"$not": {"a": [1]}}) == {"$not": {"a": {"$in": [1]}}}


@pytest.mark.parametrize(
    ("flt", "message"),
    [
        ({"a": {"$like": "x%"}}, "'$like' is not supported"),
        ({"a": {"$ilike": "x%"}}, "case-insensitive"),
        ({"a": {"$between": [1]}}, "takes [low, high]"),
    ],
)
def test_untranslatable_filters_raise(flt: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidFilterError, match=message.replace("[", r"\[").replace("$", r"\$")):
        to_core_filter(flt)


def test_callable_filter_is_rejected(store: EmbeddixVectorStore) -> None:
    with pytest.raises(InvalidFilterError, match="callable filters are not supported"):
        store.similarity_search("x", filter=lambda doc: True)  # type: ignore[arg-type]


def test_malformed_filter_is_the_cores_error(store: EmbeddixVectorStore) -> None:
    with pytest.raises(InvalidFilterError):
        store.similarity_search("x", filter={"page": {"$regex": "1"}})


def test_unknown_search_kwarg_is_a_type_error(store: EmbeddixVectorStore) -> None:
    with pytest.raises(TypeError, match="unexpected search argument"):
        store.similarity_search("x", k=2, fliter={"a": 1})
    assert len(store.similarity_search("document", k=2, ef=64)) == 2
    assert len(store.similarity_search("document", k=2, recall=0.95, deadline_ms=1000.0)) == 2


# -- MMR -----------------------------------------------------------------------------------------------
def _mmr_store() -> EmbeddixVectorStore:
    table = {
        "q": [1.0, 0.0, 0.0],
        "near": [0.99, 0.14, 0.0],
        "near twin": [0.99, 0.14, 0.001],
        "other side": [0.8, 0.0, 0.6],
    }
    store = EmbeddixVectorStore(embedding=TableEmbeddings(table))
    store.add_texts(["near", "near twin", "other side"], ids=["n1", "n2", "o"])
    return store


def test_mmr_prefers_diversity_over_a_near_duplicate() -> None:
    store = _mmr_store()
    assert [d.id for d in store.similarity_search("q", k=2)] in (["n1", "n2"], ["n2", "n1"])
    picked = [d.id for d in store.max_marginal_relevance_search("q", k=2, fetch_k=3, lambda_mult=0.3)]
    assert picked[1] == "o" and picked[0] in ("n1", "n2")
    same = store.max_marginal_relevance_search("q", k=2, fetch_k=3, lambda_mult=1.0)
    assert {d.id for d in same} == {"n1", "n2"}


async def test_async_mmr_matches_sync() -> None:
    store = _mmr_store()
    sync = [d.id for d in store.max_marginal_relevance_search("q", k=2, fetch_k=3, lambda_mult=0.3)]
    both = await store.amax_marginal_relevance_search("q", k=2, fetch_k=3, lambda_mult=0.3)
    by_vec = await store.amax_marginal_relevance_search_by_vector(
        [1.0, 0.0, 0.0], k=2, fetch_k=3, lambda_mult=0.3
    )
    assert [d.id for d in both] == sync == [d.id for d in by_vec]


# -- hybrid search (issue #15) -------------------------------------------------------------------------
HYBRID_QUERY = "zebra stripes"


def _hybrid_store() -> EmbeddixVectorStore:
    # The vector ranking and the text ranking disagree: "apple pie" is the query's vector, but only
    # "zebra crossing" shares its words.
    table = {
        HYBRID_QUERY: [1.0, 0.0],
        "apple pie": [1.0, 0.0],
        "banana bread": [0.8, 0.6],
        "zebra crossing": [0.0, 1.0],
    }
    store = EmbeddixVectorStore(embedding=TableEmbeddings(table))
    store.add_texts(
        ["apple pie", "banana bread", "zebra crossing"],
        [{"kind": "food"}, {"kind": "food"}, {"kind": "road"}],
        ids=["apple", "banana", "zebra"],
    )
    return store


def test_hybrid_similarity_search_fuses_text_and_vector() -> None:
    store = _hybrid_store()
    assert [d.id for d in store.similarity_search(HYBRID_QUERY, k=1)] == ["apple"]
    assert [d.id for d in store.similarity_search(HYBRID_QUERY, k=1, text_weight=1.0)] == ["zebra"]
    assert [d.id for d in store.similarity_search(HYBRID_QUERY, k=1, text_weight=0.0)] == ["apple"]
    assert [d.id for d in store.similarity_search(HYBRID_QUERY, k=1, text_weight=None)] == ["apple"]
    mixed = store.similarity_search_with_score(HYBRID_QUERY, k=3, text_weight=0.5)
    col = store.collection
    assert col is not None
    core = col.search([1.0, 0.0], 3, text=HYBRID_QUERY, text_weight=0.5)
    assert core[0].metric == "cosine" and core.plan is not None and core.plan.ranking == "rrf"
    assert [(d.id, s) for d, s in mixed] == [(h.id, h.score) for h in core]
    assert {d.id for d, _ in mixed} == {"apple", "banana", "zebra"}
    assert mixed[0][0].page_content and mixed[0][0].metadata["kind"] in ("food", "road")
    # The metadata filter and the tuning knobs still apply.
    food = store.similarity_search(HYBRID_QUERY, k=3, text_weight=1.0, filter={"kind": "food"}, ef=16)
    assert {d.id for d in food} <= {"apple", "banana"} and "zebra" not in {d.id for d in food}


async def test_async_hybrid_matches_sync() -> None:
    store = _hybrid_store()
    sync = store.similarity_search_with_score(HYBRID_QUERY, k=3, text_weight=0.7)
    assert await store.asimilarity_search_with_score(HYBRID_QUERY, k=3, text_weight=0.7) == sync
    assert [d.id for d in await store.asimilarity_search(HYBRID_QUERY, k=1, text_weight=1.0)] == ["zebra"]


def test_hybrid_arguments_are_checked() -> None:
    store = _hybrid_store()
    with pytest.raises(InvalidArgumentError, match="text_weight"):
        store.similarity_search(HYBRID_QUERY, k=1, text_weight=1.5)
    with pytest.raises(TypeError, match="unexpected search argument"):
        store.similarity_search_by_vector([1.0, 0.0], k=1, text_weight=0.5)


async def test_hybrid_retriever() -> None:
    store = _hybrid_store()
    retriever = store.as_retriever(search_type="hybrid", search_kwargs={"k": 1, "text_weight": 1.0})
    assert isinstance(retriever, EmbeddixHybridRetriever)
    assert [d.id for d in retriever.invoke(HYBRID_QUERY)] == ["zebra"]
    assert [d.id for d in await retriever.ainvoke(HYBRID_QUERY)] == ["zebra"]
    # Without a text_weight the retriever fuses at 0.5: the same as the store asked for 0.5.
    half = store.as_retriever(search_type="hybrid", search_kwargs={"k": 3})
    expected = [d.id for d in store.similarity_search(HYBRID_QUERY, k=3, text_weight=0.5)]
    assert [d.id for d in half.invoke(HYBRID_QUERY)] == expected
    filtered = store.as_retriever(
        search_type="hybrid", search_kwargs={"k": 3, "text_weight": 1.0, "filter": {"kind": "food"}}
    )
    assert "zebra" not in {d.id for d in filtered.invoke(HYBRID_QUERY)}
    # LangChain's own search types still work, and an unknown one is still refused.
    assert [d.id for d in store.as_retriever(search_kwargs={"k": 1}).invoke(HYBRID_QUERY)] == ["apple"]
    assert (
        len(store.as_retriever(search_type="mmr", search_kwargs={"k": 2, "fetch_k": 3}).invoke(HYBRID_QUERY))
        == 2
    )
    with pytest.raises(ValueError, match="not allowed"):
        store.as_retriever(search_type="keyword")
    with pytest.raises(ValueError, match="not allowed"):
        EmbeddixHybridRetriever(vectorstore=store, search_type="mmr")


# -- scores and relevance ------------------------------------------------------------------------------
def _geometry_store(metric: str) -> EmbeddixVectorStore:
    table = {
        "q": [1.0, 0.0],
        "same": [1.0, 0.0],
        "diag": [math.sqrt(0.5), math.sqrt(0.5)],
        "ortho": [0.0, 1.0],
        "opposite": [-1.0, 0.0],
    }
    store = EmbeddixVectorStore(embedding=TableEmbeddings(table), metric=metric)
    store.add_texts(["same", "diag", "ortho", "opposite"], ids=["same", "diag", "ortho", "opposite"])
    return store


def test_cosine_scores_and_relevance() -> None:
    store = _geometry_store("cosine")
    scores = {d.id: s for d, s in store.similarity_search_with_score("q", k=4)}
    assert scores == pytest.approx(
        {"same": 1.0, "diag": math.sqrt(0.5), "ortho": 0.0, "opposite": -1.0}, abs=1e-6
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # LangChain warns when a relevance leaves [0, 1]
        rel = {d.id: r for d, r in store.similarity_search_with_relevance_scores("q", k=4)}
    assert rel == pytest.approx(
        {"same": 1.0, "diag": math.sqrt(0.5), "ortho": 0.0, "opposite": 0.0}, abs=1e-6
    )
    kept = store.similarity_search_with_relevance_scores("q", k=4, score_threshold=0.5)
    assert [d.id for d, _ in kept] == ["same", "diag"]


def test_l2_relevance_is_the_core_score() -> None:
    store = _geometry_store("l2")
    rel = {d.id: r for d, r in store.similarity_search_with_relevance_scores("q", k=4)}
    distances = {
        "same": 0.0,
        "diag": math.dist([1, 0], [math.sqrt(0.5)] * 2),
        "ortho": math.sqrt(2),
        "opposite": 2.0,
    }
    assert rel == pytest.approx({k: 1 / (1 + d) for k, d in distances.items()}, abs=1e-6)
    assert all(0.0 <= r <= 1.0 for r in rel.values())


def test_ip_relevance_is_clipped_similarity() -> None:
    store = _geometry_store("ip")
    rel = dict((d.id, r) for d, r in store.similarity_search_with_relevance_scores("q", k=4))
    assert rel == pytest.approx(
        {"same": 1.0, "diag": math.sqrt(0.5), "ortho": 0.0, "opposite": 0.0}, abs=1e-6
    )


async def test_async_relevance_and_retriever() -> None:
    store = _geometry_store("cosine")
    pairs = await store.asimilarity_search_with_relevance_scores("q", k=2)
    assert [d.id for d, _ in pairs] == ["same", "diag"]
    retriever = store.as_retriever(
        search_type="similarity_score_threshold", search_kwargs={"score_threshold": 0.9, "k": 4}
    )
    assert [d.id for d in retriever.invoke("q")] == ["same"]
    assert [d.id for d in await retriever.ainvoke("q")] == ["same"]
    mmr = store.as_retriever(search_type="mmr", search_kwargs={"k": 2, "fetch_k": 4})
    assert len(mmr.invoke("q")) == 2


# -- writes, ids, metadata -----------------------------------------------------------------------------
def test_ids_generated_honoured_and_replaced() -> None:
    store = EmbeddixVectorStore(embedding=EmbeddixEmbeddings("hash"))
    ids = store.add_documents([Document(page_content="alpha", id="a1"), Document(page_content="beta")])
    assert ids[0] == "a1" and len(ids[1]) == 36
    store.add_texts(["alpha v2"], [{"v": 2}], ids=["a1"])
    (doc,) = store.get_by_ids(["a1", "absent"])
    assert doc == Document(id="a1", page_content="alpha v2", metadata={"v": 2})
    assert len(store.collection or []) == 2
    store.add_texts(["alpha v3"], ids=["a1"])  # a Document without metadata replaces it too (#15)
    assert store.get_by_ids(["a1"]) == [Document(id="a1", page_content="alpha v3", metadata={})]
    with pytest.raises(InvalidArgumentError, match="2 ids for 1 texts"):
        store.add_texts(["x"], ids=["a", "b"])
    assert store.add_texts([]) == []


def test_metadata_round_trip_and_decisions() -> None:
    store = EmbeddixVectorStore(embedding=EmbeddixEmbeddings("hash"))
    meta = {"s": "x", "i": 3, "f": 0.5, "b": False, "l": ["a", "b"], "n": None}
    store.add_texts(["text"], [meta], ids=["m"])
    (doc,) = store.get_by_ids(["m"])
    assert doc.metadata == {"s": "x", "i": 3, "f": 0.5, "b": False, "l": ["a", "b"]}  # None is dropped
    with pytest.raises(InvalidMetadataError, match="must be flat"):
        store.add_texts(["nested"], [{"author": {"name": "x"}}])


def test_delete_by_ids_filter_and_all(store: EmbeddixVectorStore) -> None:
    assert store.delete(["d0", "absent"]) is True
    assert store.get_by_ids(["d0"]) == []
    store.delete(filter={"source": "b"})
    assert {d.id for d in store.similarity_search("document", k=100)} == {f"d{i}" for i in range(1, 6)}
    col = store.collection
    assert store.delete() is True
    assert store.similarity_search("document", k=100) == []
    # Delete-all is the core's Collection.clear(): the collection and its settings stay.
    assert store.collection is col and col is not None and len(col) == 0
    store.add_texts(["again"], ids=["g"])
    assert [d.id for d in store.similarity_search("again", k=5)] == ["g"]
    with pytest.raises(TypeError):
        store.delete(["d1"], bogus=True)


async def test_async_writes_and_reads() -> None:
    store = EmbeddixVectorStore(embedding=DeterministicFakeEmbedding(size=8))
    assert await store.asimilarity_search("x") == []
    ids = await store.aadd_texts(["one", "two"], [{"n": 1}, {"n": 2}], ids=["1", "2"])
    assert ids == ["1", "2"]
    assert [d.id for d in await store.aget_by_ids(["2", "1"])] == ["2", "1"]
    docs = await store.asimilarity_search_by_vector(store.embeddings.embed_query("two"), k=1)
    assert docs[0].id == "2"
    await store.adelete(["1"])
    assert [d.id for d in await store.asimilarity_search("one", k=5)] == ["2"]
    again = await EmbeddixVectorStore.afrom_texts(["x"], DeterministicFakeEmbedding(size=8), ids=["x"])
    assert [d.id for d in again.similarity_search("x")] == ["x"]


def test_empty_store_searches_without_embedding() -> None:
    emb = TableEmbeddings({})
    store = EmbeddixVectorStore(embedding=emb)
    assert store.similarity_search("never embedded") == []
    assert store.max_marginal_relevance_search("never embedded") == []
    assert store.get_by_ids(["a"]) == []
    assert store.delete(["a"]) is True
    assert emb.calls == 0 and store.collection is None


def test_from_texts_and_documents() -> None:
    emb = EmbeddixEmbeddings("hash")
    s1 = EmbeddixVectorStore.from_texts(["red apple", "blue sky"], emb, metadatas=[{"c": "r"}, {"c": "b"}])
    assert s1.similarity_search("apple", k=1)[0].metadata == {"c": "r"}
    s2 = EmbeddixVectorStore.from_documents(
        [Document(page_content="green leaf", id="g")], emb, collection_name="g"
    )
    assert s2.get_by_ids(["g"])[0].page_content == "green leaf"
    assert s2.collection is not None and s2.collection.name == "g"


# -- persistence and existing collections --------------------------------------------------------------
def test_persistence_on_disk(tmp_path: Path) -> None:
    emb = EmbeddixEmbeddings("hash")
    with EmbeddixVectorStore(embedding=emb, path=tmp_path, collection_name="kb") as store:
        store.add_texts(
            ["the moon orbits the earth", "bees make honey"],
            [{"t": "space"}, {"t": "bio"}],
            ids=["moon", "bees"],
        )
    with EmbeddixVectorStore(embedding=emb, path=tmp_path, collection_name="kb") as again:
        docs = again.similarity_search("moon earth", k=1, filter={"t": "space"})
        assert docs == [
            Document(id="moon", page_content="the moon orbits the earth", metadata={"t": "space"})
        ]
        assert again.collection is not None and again.collection.embedding_model == "hash-384-v1"
    with pytest.raises(InvalidArgumentError, match="exists with metric 'cosine'"):
        EmbeddixVectorStore(embedding=emb, path=tmp_path, collection_name="kb", metric="l2")
    with (
        EmbeddixVectorStore(
            embedding=EmbeddixEmbeddings("hash-384-seed3"), path=tmp_path, collection_name="kb"
        ) as other_model,
        pytest.raises(ModelMismatchError),
    ):
        other_model.add_texts(["x"])
    with EmbeddixVectorStore(
        embedding=EmbeddixEmbeddings("hash-384-seed3"), path=tmp_path, collection_name="kb"
    ) as other_model:
        with pytest.raises(ModelMismatchError):
            other_model.similarity_search("moon")
        assert other_model.similarity_search_by_vector([1.0] * 384, k=1)  # a vector is the caller's business


def test_wraps_an_existing_core_collection() -> None:
    db = Embeddix.open(None)
    col = db.create_collection("core", dim=384)
    hash_embedder = HashEmbedder()
    col.add(
        ["c1", "c2"],
        hash_embedder.embed_documents(["cats purr", "dogs bark"]),
        ["cats purr", "dogs bark"],
        [{"k": 1}, {"k": 2}],
    )
    store = EmbeddixVectorStore(embedding=EmbeddixEmbeddings(hash_embedder), collection=col)
    assert store.similarity_search("cats", k=1) == [
        Document(id="c1", page_content="cats purr", metadata={"k": 1})
    ]
    store.close()  # does not close a collection it did not open
    assert len(col) == 2
    db.close()


# -- embedders -----------------------------------------------------------------------------------------
def test_langchain_embedder_is_a_core_embedder() -> None:
    emb = TableEmbeddings({"a": [1.0, 0.0, 0.0], "b": [0.0, 1.0, 0.0], "dimension probe": [0.0, 0.0, 1.0]})
    core = LangChainEmbedder(emb)
    assert core.model_id == "table-v1"
    assert core.dim == 3 and core.dim == 3 and emb.calls == 1  # probed once
    mat = core.embed_documents(["a", "b"])
    assert mat.dtype == np.float32 and mat.shape == (2, 3) and mat.flags.c_contiguous
    assert core.embed_query("b").tolist() == [0.0, 1.0, 0.0]
    assert core.embed_documents([]).shape == (0, 3)
    with pytest.raises(InvalidArgumentError, match="single str"):
        core.embed_documents("a")  # type: ignore[arg-type]
    bad = LangChainEmbedder(TableEmbeddings({"a": [1.0], "b": [1.0, 2.0]}))
    bad.embed_query("a")
    with pytest.raises(DimensionMismatchError, match="2-d vectors after 1-d"):
        bad.embed_query("b")


async def test_langchain_embedder_async_uses_the_models_async_api() -> None:
    emb = TableEmbeddings({"a": [1.0, 0.0], "b": [0.0, 1.0]})
    core = LangChainEmbedder(emb)
    mat = await core.aembed_documents(["a", "b"])
    assert mat.dtype == np.float32 and mat.tolist() == [[1.0, 0.0], [0.0, 1.0]]
    assert (await core.aembed_query("b")).tolist() == [0.0, 1.0]
    assert (await core.aembed_documents([])).shape == (0, 2)
    with pytest.raises(InvalidArgumentError, match="single str"):
        await core.aembed_documents("a")  # type: ignore[arg-type]
    core.embeddings = TableEmbeddings({"a": [1.0, 0.0, 0.0]})  # the public attribute is read on each call
    with pytest.raises(DimensionMismatchError, match="3-d vectors after 2-d"):
        await core.aembed_query("a")


def test_model_ids() -> None:
    assert LangChainEmbedder(DeterministicFakeEmbedding(size=4)).model_id == "DeterministicFakeEmbedding"
    assert LangChainEmbedder(EmbeddixEmbeddings("hash-64")).model_id == "hash-64-v1"
    assert LangChainEmbedder(TableEmbeddings({}), model_id="explicit").model_id == "explicit"


def test_embeddix_embeddings_returns_lists() -> None:
    emb = EmbeddixEmbeddings("hash-16")
    vecs = emb.embed_documents(["a b", "c"])
    assert len(vecs) == 2 and len(vecs[0]) == 16 and isinstance(vecs[0][0], float)
    assert emb.embed_query("a b") == pytest.approx(vecs[0])
    assert emb.embedder.model_id == "hash-16-v1"


# -- the real default model ----------------------------------------------------------------------------
@pytest.mark.slow
def test_end_to_end_with_minilm(tmp_path: Path) -> None:
    texts = [
        "The car would not start because the battery was flat.",
        "Honeybees communicate the direction of flowers with a waggle dance.",
        "The recipe needs two eggs, flour and a cup of milk.",
    ]
    with EmbeddixVectorStore.from_texts(
        texts, EmbeddixEmbeddings(), path=tmp_path, ids=["car", "bee", "food"]
    ) as s:
        assert s.similarity_search("automobile engine trouble", k=1)[0].id == "car"
        assert s.similarity_search("insects and pollen", k=1)[0].id == "bee"
        rel = s.similarity_search_with_relevance_scores("baking a cake", k=3)
        assert rel[0][0].id == "food" and all(0.0 <= r <= 1.0 for _, r in rel)


def test_documents_from_hits_equal_validated_documents() -> None:
    from langchain_core.documents import Document

    from langchain_embeddix._vectorstore import _make_document

    made = _make_document("id-1", "text", {"a": [1, 2]})
    assert made == Document(id="id-1", page_content="text", metadata={"a": [1, 2]})
    assert made.model_dump() == Document(id="id-1", page_content="text", metadata={"a": [1, 2]}).model_dump()
    other = _make_document("id-2", "t", {})
    made.metadata["b"] = 1
    made.page_content = "changed"  # documents are mutable in LangChain; each one is its own object
    assert other.metadata == {} and other.page_content == "t"
    assert made.__pydantic_fields_set__ is not other.__pydantic_fields_set__
