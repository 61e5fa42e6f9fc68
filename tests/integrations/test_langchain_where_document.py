"""langchain_embeddix: langchain-chroma's ``where_document`` through LangChain's own entry points."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from langchain_core.documents import Document

from embeddix_core import InvalidFilterError
from langchain_embeddix import EmbeddixEmbeddings, EmbeddixVectorStore

TEXTS = {
    "fox1": "The quick brown fox jumps over the lazy dog",
    "fox2": "A Fox is a small omnivorous mammal",
    "whale": "The blue whale is the largest animal on Earth",
    "bees": "Honeybees dance to tell the hive where flowers are",
    "tea": "Green tea is brewed at about 80 degrees Celsius",
    "fox3": "Arctic fox fur turns white in winter",
}
META = {k: {"kind": "animal" if k != "tea" else "drink", "n": i} for i, k in enumerate(TEXTS)}
QUERY = "animals in the wild"


@pytest.fixture
def store() -> Iterator[EmbeddixVectorStore]:
    s = EmbeddixVectorStore(embedding=EmbeddixEmbeddings("hash"))
    s.add_texts(list(TEXTS.values()), [META[k] for k in TEXTS], ids=list(TEXTS))
    yield s
    s.close()


def _ids(docs: list[Document]) -> set[str]:
    return {d.id for d in docs if d.id is not None}


def _expected(pred: Any, meta: Any = lambda m: True) -> set[str]:
    return {k for k, t in TEXTS.items() if pred(t) and meta(META[k])}


CASES: list[tuple[dict[str, Any], Any]] = [
    ({"$contains": "fox"}, lambda t: "fox" in t),
    ({"$contains": "Fox"}, lambda t: "Fox" in t),
    ({"$not_contains": "fox"}, lambda t: "fox" not in t),
    ({"$regex": "^(The|A) "}, lambda t: t.startswith(("The ", "A "))),
    ({"$or": [{"$contains": "whale"}, {"$contains": "tea"}]}, lambda t: "whale" in t or "tea" in t),
]


@pytest.mark.parametrize(("wd", "pred"), CASES, ids=[str(c) for c, _ in CASES])
def test_every_search_method_restricts_by_document(
    store: EmbeddixVectorStore, wd: dict[str, Any], pred: Any
) -> None:
    want = _expected(pred)
    assert _ids(store.similarity_search(QUERY, k=10, where_document=wd)) == want
    assert {d.id for d, _ in store.similarity_search_with_score(QUERY, k=10, where_document=wd)} == want
    vector = store.embeddings.embed_query(QUERY)
    assert _ids(store.similarity_search_by_vector(vector, k=10, where_document=wd)) == want
    assert _ids(store.max_marginal_relevance_search(QUERY, k=10, fetch_k=20, where_document=wd)) == want
    assert (
        _ids(store.max_marginal_relevance_search_by_vector(vector, k=10, fetch_k=20, where_document=wd))
        == want
    )
    pairs = store.similarity_search_with_relevance_scores(QUERY, k=10, where_document=wd)
    assert {d.id for d, _ in pairs} == want
    # hybrid: BM25 ranking fused with the vector one, restricted the same way
    assert _ids(store.similarity_search(QUERY, k=10, text_weight=0.5, where_document=wd)) == want


def test_with_a_metadata_filter(store: EmbeddixVectorStore) -> None:
    got = store.similarity_search(QUERY, k=10, filter={"n": {"$gte": 1}}, where_document={"$contains": "fox"})
    assert _ids(got) == _expected(lambda t: "fox" in t, lambda m: m["n"] >= 1) == {"fox3"}


@pytest.mark.parametrize("search_type", ["similarity", "mmr", "similarity_score_threshold", "hybrid"])
def test_retrievers_take_it_in_search_kwargs(store: EmbeddixVectorStore, search_type: str) -> None:
    search_kwargs: dict[str, Any] = {"k": 10, "where_document": {"$contains": "fox"}}
    if search_type == "similarity_score_threshold":
        search_kwargs["score_threshold"] = 0.0
    retriever = store.as_retriever(search_type=search_type, search_kwargs=search_kwargs)
    assert _ids(retriever.invoke(QUERY)) == {"fox1", "fox3"}


async def test_async_forms(store: EmbeddixVectorStore) -> None:
    wd = {"$not_contains": "fox"}
    assert _ids(await store.asimilarity_search(QUERY, k=10, where_document=wd)) == _expected(
        lambda t: "fox" not in t
    )
    retriever = store.as_retriever(search_kwargs={"k": 10, "where_document": {"$contains": "whale"}})
    assert _ids(await retriever.ainvoke(QUERY)) == {"whale"}


def test_delete_by_where_document(store: EmbeddixVectorStore) -> None:
    store.delete(where_document={"$contains": "fox"})
    assert _ids(store.similarity_search(QUERY, k=10)) == set(TEXTS) - {"fox1", "fox3"}
    store.delete(filter={"kind": "drink"}, where_document={"$contains": "tea"})
    assert _ids(store.similarity_search(QUERY, k=10)) == {"fox2", "whale", "bees"}


def test_malformed_where_document_is_the_cores_error(store: EmbeddixVectorStore) -> None:
    with pytest.raises(InvalidFilterError, match="unknown; expected one of"):
        store.similarity_search(QUERY, where_document={"$like": "fox"})
    with pytest.raises(InvalidFilterError, match="must be a non-empty string"):
        store.as_retriever(search_kwargs={"where_document": {"$contains": 1}}).invoke(QUERY)
