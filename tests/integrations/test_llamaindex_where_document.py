"""llama_index.vector_stores.embeddix: Chroma's ``where_document`` query keyword, through LlamaIndex."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from llama_index.core import Document, StorageContext, VectorStoreIndex
from llama_index.core.vector_stores.types import (
    MetadataFilter,
    MetadataFilters,
    VectorStoreQuery,
    VectorStoreQueryMode,
)
from llama_index.vector_stores.embeddix import EmbeddixEmbedding, EmbeddixVectorStore

from embeddix_core import InvalidFilterError

TEXTS = {
    "fox": "The quick brown fox jumps over the lazy dog.",
    "arctic": "Arctic fox fur turns white in winter.",
    "whale": "The blue whale is the largest animal on Earth.",
    "bees": "Honeybees dance to tell the hive where flowers are.",
    "tea": "Green tea is brewed at about 80 degrees Celsius.",
}
QUESTION = "animals in the wild"


def _docs() -> list[Document]:
    return [Document(text=t, id_=k, metadata={"topic": k}) for k, t in TEXTS.items()]


@pytest.fixture(params=[False, True], ids=["no-docstore", "store_nodes_override"])
def index(request: pytest.FixtureRequest) -> Iterator[VectorStoreIndex]:
    store = EmbeddixVectorStore()
    yield VectorStoreIndex.from_documents(
        _docs(),
        storage_context=StorageContext.from_defaults(vector_store=store),
        embed_model=EmbeddixEmbedding("hash"),
        store_nodes_override=request.param,
    )
    store.close()


def _refs(hits: list[Any]) -> set[str]:
    return {h.node.ref_doc_id for h in hits}


@pytest.mark.parametrize(
    ("wd", "want"),
    [
        ({"$contains": "fox"}, {"fox", "arctic"}),
        ({"$contains": "Fox"}, set()),
        ({"$not_contains": "fox"}, {"whale", "bees", "tea"}),
        ({"$regex": r"\bwh[a-z]+"}, {"arctic", "whale", "bees"}),
        ({"$and": [{"$contains": "The"}, {"$not_regex": "fox"}]}, {"whale"}),
    ],
)
def test_retriever_takes_it_in_vector_store_kwargs(
    index: VectorStoreIndex, wd: dict[str, Any], want: set[str]
) -> None:
    retriever = index.as_retriever(similarity_top_k=5, vector_store_kwargs={"where_document": wd})
    assert _refs(retriever.retrieve(QUESTION)) == want
    hybrid = index.as_retriever(
        similarity_top_k=5,
        vector_store_query_mode="hybrid",
        alpha=0.5,
        vector_store_kwargs={"where_document": wd},
    )
    assert _refs(hybrid.retrieve(QUESTION)) == want


def test_with_filters_and_doc_ids(index: VectorStoreIndex) -> None:
    fox = {"where_document": {"$contains": "fox"}}
    filters = MetadataFilters(filters=[MetadataFilter(key="topic", value="arctic")])
    assert _refs(index.as_retriever(filters=filters, vector_store_kwargs=fox).retrieve(QUESTION)) == {
        "arctic"
    }
    only = index.as_retriever(doc_ids=["fox", "whale"], vector_store_kwargs=fox)
    assert _refs(only.retrieve(QUESTION)) == {"fox"}


def test_every_query_mode_of_the_store() -> None:
    emb = EmbeddixEmbedding("hash")
    store = EmbeddixVectorStore()
    index = VectorStoreIndex.from_documents(
        _docs(), storage_context=StorageContext.from_defaults(vector_store=store), embed_model=emb
    )
    assert index is not None
    wd = {"$contains": "fox"}
    vector = emb.get_query_embedding("fox fur")
    for mode in (VectorStoreQueryMode.DEFAULT, VectorStoreQueryMode.MMR, VectorStoreQueryMode.HYBRID):
        q = VectorStoreQuery(query_embedding=vector, query_str="fox fur", similarity_top_k=5, mode=mode)
        res = store.query(q, where_document=wd)
        assert res.nodes is not None
        assert {n.ref_doc_id for n in res.nodes} == {"fox", "arctic"}, mode
    text = VectorStoreQuery(query_str="fox", similarity_top_k=5, mode=VectorStoreQueryMode.TEXT_SEARCH)
    res = store.query(text, where_document={"$not_contains": "Arctic"})
    assert res.nodes is not None and {n.ref_doc_id for n in res.nodes} == {"fox"}
    store.close()


def test_malformed_where_document_raises(index: VectorStoreIndex) -> None:
    retriever = index.as_retriever(vector_store_kwargs={"where_document": {"$contains": ""}})
    with pytest.raises(InvalidFilterError, match="non-empty string"):
        retriever.retrieve(QUESTION)
