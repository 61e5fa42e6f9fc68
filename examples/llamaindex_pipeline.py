"""A LlamaIndex retrieval pipeline on Embeddix, fully offline (no LLM needed).

documents (examples/data/*.txt) -> sentence splitter -> VectorStoreIndex on an ``EmbeddixVectorStore``
-> retriever -> the best nodes, printed with their scores. With ``--path`` the index lives on disk and a
later run (``--reuse``) retrieves from it without re-indexing.

    python examples/llamaindex_pipeline.py "Who first climbed Everest?"
    python examples/llamaindex_pipeline.py --embedder hash --file honeybees.txt "waggle dance direction"
"""

from __future__ import annotations

import argparse
from pathlib import Path

from llama_index.core import SimpleDirectoryReader, StorageContext, VectorStoreIndex
from llama_index.core.node_parser import SentenceSplitter
from llama_index.core.vector_stores import MetadataFilter, MetadataFilters
from llama_index.vector_stores.embeddix import EmbeddixEmbedding, EmbeddixVectorStore

DATA = Path(__file__).resolve().parent / "data"


def main(argv: list[str] | None = None) -> None:
    """Build (or reopen) the index and print the nodes retrieved for the question."""
    parser = argparse.ArgumentParser(description="Offline LlamaIndex retrieval on Embeddix.")
    parser.add_argument("question", nargs="?", default="Who first climbed Mount Everest?")
    parser.add_argument(
        "--embedder",
        choices=["hash", "minilm"],
        default="minilm",
        help="minilm: the offline default model; hash: fast, word-overlap only",
    )
    parser.add_argument("--data", type=Path, default=DATA, help="folder of .txt files")
    parser.add_argument("--path", default=None, help="keep the index in this directory (default: in memory)")
    parser.add_argument(
        "--reuse", action="store_true", help="retrieve from the index at --path, don't re-index"
    )
    parser.add_argument("--file", default=None, help="only retrieve from this file name (a metadata filter)")
    parser.add_argument("--k", type=int, default=3, help="nodes to print")
    args = parser.parse_args(argv)

    embed_model = EmbeddixEmbedding(args.embedder)
    store = EmbeddixVectorStore(path=args.path, collection_name=f"pipeline-{args.embedder}")
    try:
        if args.reuse:
            index = VectorStoreIndex.from_vector_store(store, embed_model=embed_model)
        else:
            documents = SimpleDirectoryReader(str(args.data), required_exts=[".txt"]).load_data()
            index = VectorStoreIndex.from_documents(
                documents,
                storage_context=StorageContext.from_defaults(vector_store=store),
                embed_model=embed_model,
                transformations=[SentenceSplitter(chunk_size=96, chunk_overlap=0)],
            )
            print(f"indexed {len(documents)} documents from {args.data}")
        filters = None
        if args.file:
            filters = MetadataFilters(filters=[MetadataFilter(key="file_name", value=args.file)])
        retriever = index.as_retriever(similarity_top_k=args.k, filters=filters)
        print(f"question: {args.question}")
        for rank, hit in enumerate(retriever.retrieve(args.question), 1):
            text = " ".join(hit.node.get_content().split())
            print(f"{rank}. [{hit.node.metadata.get('file_name')}, score {hit.score:.3f}] {text}")
    finally:
        store.close()


if __name__ == "__main__":
    main()
