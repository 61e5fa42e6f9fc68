"""Retrieval for RAG with LangChain on Embeddix, fully offline.

Loads the text files of a folder, splits them into paragraph chunks, stores them in an
``EmbeddixVectorStore`` and prints the chunks that best answer a question. With ``--path`` the store is
kept on disk and reused by the next run.

    python examples/langchain_rag.py "How tall is Mount Everest?"
    python examples/langchain_rag.py --embedder hash --k 2 "How do bees find flowers?"
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from langchain_core.documents import Document

from langchain_embeddix import EmbeddixEmbeddings, EmbeddixVectorStore

DATA = Path(__file__).resolve().parent / "data"


def load_chunks(folder: Path, max_chars: int = 400) -> list[Document]:
    """Read every ``*.txt`` file and split it into chunks: paragraphs, cut at sentences when too long."""
    chunks: list[Document] = []
    for file in sorted(folder.glob("*.txt")):
        pieces: list[str] = []
        for paragraph in file.read_text(encoding="utf-8").split("\n\n"):
            piece = ""
            for sentence in re.split(r"(?<=[.!?])\s+", paragraph.strip()):
                if piece and len(piece) + len(sentence) > max_chars:
                    pieces.append(piece)
                    piece = ""
                piece = f"{piece} {sentence}".strip()
            if piece:
                pieces.append(piece)
        chunks.extend(_chunk(file, text, n) for n, text in enumerate(pieces))
    return chunks


def _chunk(file: Path, text: str, n: int) -> Document:
    return Document(page_content=text, metadata={"source": file.name, "chunk": n}, id=f"{file.stem}-{n}")


def main(argv: list[str] | None = None) -> None:
    """Index the folder and print the top chunks for the question."""
    parser = argparse.ArgumentParser(description="Offline RAG retrieval with LangChain on Embeddix.")
    parser.add_argument("question", nargs="?", default="How tall is Mount Everest?")
    parser.add_argument(
        "--embedder",
        choices=["hash", "minilm"],
        default="minilm",
        help="minilm: the offline default model; hash: fast, word-overlap only",
    )
    parser.add_argument("--data", type=Path, default=DATA, help="folder of .txt files")
    parser.add_argument("--path", default=None, help="keep the store in this directory (default: in memory)")
    parser.add_argument("--k", type=int, default=3, help="chunks to print")
    args = parser.parse_args(argv)

    chunks = load_chunks(args.data)
    with EmbeddixVectorStore(
        embedding=EmbeddixEmbeddings(args.embedder), path=args.path, collection_name=f"rag-{args.embedder}"
    ) as store:
        store.add_documents(chunks)  # ids are stable, so a second run replaces instead of duplicating
        print(f"indexed {len(chunks)} chunks from {args.data}")
        print(f"question: {args.question}")
        for rank, (doc, relevance) in enumerate(
            store.similarity_search_with_relevance_scores(args.question, k=args.k), 1
        ):
            print(
                f"{rank}. [{doc.metadata['source']} #{doc.metadata['chunk']}, relevance {relevance:.2f}] "
                f"{doc.page_content}"
            )


if __name__ == "__main__":
    main()
