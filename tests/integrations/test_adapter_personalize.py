"""Personalized search through LangChain and LlamaIndex entry points (issue #17): ``user=`` in their
usual search kwargs re-ranks by that user's feedback; without it the plain order comes back."""

from __future__ import annotations

from langchain_core.embeddings import Embeddings
from llama_index.core.vector_stores.types import VectorStoreQuery
from llama_index.vector_stores.embeddix import EmbeddixVectorStore as LlamaStore

from langchain_embeddix import EmbeddixVectorStore as LangChainStore

QUERY = "q"
# five documents about equally near the query: feedback decides their order
TABLE = {
    QUERY: [1.0, 0.0, 0.0],
    "d0": [0.99, 0.14, 0.0],
    "d1": [0.98, 0.0, 0.2],
    "d2": [0.97, -0.24, 0.0],
    "d3": [0.96, 0.0, -0.28],
    "d4": [0.95, 0.22, 0.22],
}


class TableEmbeddings(Embeddings):
    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return [TABLE[t] for t in texts]

    def embed_query(self, text: str) -> list[float]:
        return TABLE[text]


def _teach(col, liked: str, disliked: str) -> None:  # type: ignore[no-untyped-def]
    for _ in range(3):
        col.feedback(liked, user="u", relevant=True)
        col.feedback(disliked, user="u", relevant=False)


def test_langchain_retriever_personalizes_with_user_in_search_kwargs() -> None:
    store = LangChainStore(TableEmbeddings())
    docs = [t for t in TABLE if t != QUERY]
    store.add_texts(docs, ids=docs)
    plain = [d.id for d in store.as_retriever(search_kwargs={"k": 5}).invoke(QUERY)]
    assert plain == ["d0", "d1", "d2", "d3", "d4"]
    assert store.collection is not None
    _teach(store.collection, liked="d4", disliked="d0")
    mine = [d.id for d in store.as_retriever(search_kwargs={"k": 5, "user": "u"}).invoke(QUERY)]
    assert mine.index("d4") < plain.index("d4") and mine.index("d0") > plain.index("d0")
    assert [d.id for d in store.similarity_search(QUERY, k=5)] == plain  # no user: plain order
    assert [d.id for d in store.similarity_search(QUERY, k=5, user="someone-else")] == plain


def test_llamaindex_query_personalizes_with_user_kwarg() -> None:
    store = LlamaStore()
    from llama_index.core.schema import TextNode

    nodes = [TextNode(id_=t, text=t, embedding=TABLE[t]) for t in TABLE if t != QUERY]
    store.add(nodes)
    q = VectorStoreQuery(query_embedding=TABLE[QUERY], similarity_top_k=5)
    plain = store.query(q).ids
    assert plain == ["d0", "d1", "d2", "d3", "d4"]
    col = store.client
    _teach(col, liked="d4", disliked="d0")
    mine = store.query(q, user="u").ids
    assert mine is not None and mine.index("d4") < plain.index("d4") and mine.index("d0") > plain.index("d0")
    assert store.query(q).ids == plain
    store.close()
