"""LlamaIndex integration for Embeddix: a vector store on an Embeddix collection, and embeddings both ways.

Quick start::

    from llama_index.core import StorageContext, VectorStoreIndex
    from llama_index.vector_stores.embeddix import EmbeddixEmbedding, EmbeddixVectorStore

    store = EmbeddixVectorStore(path="./embeddix-data")
    context = StorageContext.from_defaults(vector_store=store)
    index = VectorStoreIndex.from_documents(docs, storage_context=context, embed_model=EmbeddixEmbedding())
    nodes = index.as_retriever(similarity_top_k=3).retrieve("What orbits the Earth?")

* :class:`EmbeddixVectorStore`: the vector store (in memory, on disk, or over a core ``Collection``).
* :class:`EmbeddixEmbedding`: a LlamaIndex embedding model running an Embeddix embedder (offline MiniLM).
* :class:`LlamaIndexEmbedder`: any LlamaIndex embedding model as a core ``Embedder``.
* :func:`to_core_filter`: ``MetadataFilters`` to the core filter language.
"""

from ._embedding import EmbeddixEmbedding, LlamaIndexEmbedder
from ._filters import to_core_filter
from ._store import EmbeddixVectorStore

__all__ = ["EmbeddixEmbedding", "EmbeddixVectorStore", "LlamaIndexEmbedder", "to_core_filter"]
