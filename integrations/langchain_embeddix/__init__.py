"""LangChain integration for Embeddix: a ``VectorStore`` on an Embeddix collection, and embeddings both ways.

Quick start::

    from langchain_embeddix import EmbeddixEmbeddings, EmbeddixVectorStore

    store = EmbeddixVectorStore(embedding=EmbeddixEmbeddings(), path="./embeddix-data")
    store.add_texts(["The Moon orbits the Earth."], metadatas=[{"source": "moon.txt"}])
    docs = store.as_retriever(search_kwargs={"k": 3}).invoke("What orbits the Earth?")

* :class:`EmbeddixVectorStore`: the vector store (in memory, on disk, or over a core ``Collection``).
* :class:`EmbeddixEmbeddings`: a LangChain ``Embeddings`` running an Embeddix embedder (offline MiniLM).
* :class:`EmbeddixHybridRetriever`: what ``as_retriever(search_type="hybrid")`` returns (vector + BM25).
* :class:`LangChainEmbedder`: any LangChain ``Embeddings`` as a core ``Embedder``.
"""

from ._embedder import EmbeddixEmbeddings, LangChainEmbedder
from ._filters import to_core_filter
from ._vectorstore import EmbeddixHybridRetriever, EmbeddixVectorStore

__all__ = [
    "EmbeddixEmbeddings",
    "EmbeddixHybridRetriever",
    "EmbeddixVectorStore",
    "LangChainEmbedder",
    "to_core_filter",
]
