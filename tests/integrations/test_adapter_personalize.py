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


class _TableEmbedder:
    """A core Embedder over TABLE (texts are the keys)."""

    model_id = "table-v1"
    dim = 3

    def embed_documents(self, texts):  # type: ignore[no-untyped-def]
        import numpy as np

        return np.asarray([TABLE[t] for t in texts], np.float32)

    def embed_query(self, text):  # type: ignore[no-untyped-def]
        import numpy as np

        return np.asarray(TABLE[text], np.float32)


async def test_autogen_memory_personalizes_for_its_user() -> None:
    from autogen_core.memory import MemoryContent, MemoryMimeType

    from autogen_embeddix import EmbeddixMemory

    plain_mem = EmbeddixMemory(k=5, embedder=_TableEmbedder())  # type: ignore[arg-type]
    for t in TABLE:
        if t != QUERY:
            await plain_mem.add(MemoryContent(content=t, mime_type=MemoryMimeType.TEXT))
    got = await plain_mem.query(QUERY)
    plain = [m.content for m in got.results]
    assert plain == ["d0", "d1", "d2", "d3", "d4"]
    ids = {m.content: (m.metadata or {})["id"] for m in got.results}
    _teach_by_id(plain_mem.collection, liked=ids["d4"], disliked=ids["d0"])
    mine = [m.content for m in (await plain_mem.query(QUERY, user="u")).results]
    assert mine.index("d4") < plain.index("d4") and mine.index("d0") > plain.index("d0")
    assert [m.content for m in (await plain_mem.query(QUERY)).results] == plain
    # the user set on the memory personalizes every query, and its component config keeps it
    user_mem = EmbeddixMemory(k=5, embedder=_TableEmbedder(), user="u")  # type: ignore[arg-type]
    assert user_mem.dump_component().config["user"] == "u"
    user_mem._collection = plain_mem.collection  # the same in-memory collection
    assert [m.content for m in (await user_mem.query(QUERY)).results] == mine
    await plain_mem.close()


def _teach_by_id(col, liked: str, disliked: str) -> None:  # type: ignore[no-untyped-def]
    _teach(col, liked, disliked)
