"""What a score means, through each framework's own entry points (issue #15, "Scores users can reason about").

Hybrid and MMR results score each document as a plain vector search does (cosine similarity here), so a
framework's similarity cutoff or relevance threshold keeps its meaning in every mode. Before, a hybrid
hit's score was its reciprocal-rank-fusion value (about 0.016 at best), which LlamaIndex's
``SimilarityPostprocessor(similarity_cutoff=0.5)`` dropped every time.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
from autogen_core.memory import MemoryContent, MemoryMimeType
from langchain_core.embeddings import Embeddings
from llama_index.core import Document, StorageContext, VectorStoreIndex
from llama_index.core.embeddings import BaseEmbedding
from llama_index.core.postprocessor import SimilarityPostprocessor
from llama_index.vector_stores.embeddix import EmbeddixVectorStore as LlamaStore

from autogen_embeddix import EmbeddixMemory
from embeddix_core import Embeddix
from embeddix_mcp.search import similarity
from langchain_embeddix import EmbeddixVectorStore as LangChainStore

# -- LlamaIndex ----------------------------------------------------------------------------------------
# A topic embedding: one axis per topic counting its words, plus a constant axis so no text is the zero
# vector. Cosine similarity is then ~1 within a topic and ~0 across topics, whatever the fusion does.
TOPICS = [
    {"honeybees", "bees", "hive", "flowers", "dance", "waggle"},
    {"tea", "green", "brewed"},
    {"moon", "orbits", "earth"},
    {"everest", "mountain", "highest"},
]
DOCS = {
    "bees": "Honeybees dance to tell the hive where flowers are.",
    "bees2": "A waggle dance points bees to flowers.",
    "tea": "Green tea is brewed at about 80 degrees and tastes like a dance of leaves.",
    "moon": "The Moon orbits the Earth once every 27 days.",
    "everest": "Mount Everest is the highest mountain above sea level.",
}


def _topic_vector(text: str) -> list[float]:
    words = [w.strip(".,;:").lower() for w in text.split()]
    return [float(sum(w in topic for w in words)) for topic in TOPICS] + [0.1]


class TopicEmbedding(BaseEmbedding):
    def _get_query_embedding(self, query: str) -> list[float]:
        return _topic_vector(query)

    async def _aget_query_embedding(self, query: str) -> list[float]:
        return _topic_vector(query)

    def _get_text_embedding(self, text: str) -> list[float]:
        return _topic_vector(text)


def _cos(a: list[float], b: list[float]) -> float:
    va, vb = np.asarray(a), np.asarray(b)
    return float(va @ vb / (np.linalg.norm(va) * np.linalg.norm(vb)))


@pytest.mark.parametrize("mode", ["default", "hybrid", "mmr"])
def test_llamaindex_similarity_cutoff_keeps_relevant_hits_in_every_mode(mode: str) -> None:
    store = LlamaStore()
    index = VectorStoreIndex.from_documents(
        [Document(text=t, id_=k) for k, t in DOCS.items()],
        storage_context=StorageContext.from_defaults(vector_store=store),
        embed_model=TopicEmbedding(),
    )
    question = "honeybees waggle dance"
    retriever = index.as_retriever(similarity_top_k=4, vector_store_query_mode=mode, alpha=0.5)
    found = retriever.retrieve(question)
    assert len(found) == 4
    # "tea" shares the word "dance": the text ranking lifts it, yet its similarity stays ~0
    kept = SimilarityPostprocessor(similarity_cutoff=0.5).postprocess_nodes(found)
    kept_ids = sorted(n.node.ref_doc_id or "" for n in kept)
    # MMR passes over "bees2", a near duplicate of "bees", for diversity; the cutoff drops the rest
    assert kept_ids == (["bees"] if mode == "mmr" else ["bees", "bees2"])
    q = _topic_vector(question)
    for n in found:
        expected = _cos(q, _topic_vector(DOCS[n.node.ref_doc_id or ""]))
        assert n.score is not None and math.isclose(n.score, expected, abs_tol=1e-5)
    store.close()


# -- LangChain -----------------------------------------------------------------------------------------
class TableEmbeddings(Embeddings):
    def __init__(self, table: dict[str, list[float]]) -> None:
        self.table = table

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return [self.table[t] for t in texts]

    def embed_query(self, text: str) -> list[float]:
        return self.table[text]


QUERY = "zebra stripes"
# The vector ranking and the text ranking disagree: "apple pie" is the query's vector (cosine 1.0),
# "banana bread" is near it (0.8), and only "zebra crossing" (cosine 0.0) shares the query's words.
TABLE = {
    QUERY: [1.0, 0.0],
    "apple pie": [1.0, 0.0],
    "banana bread": [0.8, 0.6],
    "zebra crossing": [0.0, 1.0],
    "q": [1.0, 0.0, 0.0],
}


def _langchain_store() -> LangChainStore:
    store = LangChainStore(embedding=TableEmbeddings(TABLE))
    store.add_texts(["apple pie", "banana bread", "zebra crossing"], ids=["apple", "banana", "zebra"])
    return store


async def test_langchain_hybrid_scores_are_relevance_in_unit_interval() -> None:
    store = _langchain_store()
    plain = dict((d.id, s) for d, s in store.similarity_search_with_relevance_scores(QUERY, k=3))
    assert plain == pytest.approx({"apple": 1.0, "banana": 0.8, "zebra": 0.0}, abs=1e-6)
    # text_weight 0.7: the text ranking wins, "zebra crossing" comes first, with its similarity
    hybrid = store.similarity_search_with_relevance_scores(QUERY, k=3, text_weight=0.7)
    assert hybrid[0][0].id == "zebra"
    assert all(0.0 <= s <= 1.0 for _, s in hybrid)  # LangChain warns otherwise (an error in this suite)
    assert {d.id: s for d, s in hybrid} == pytest.approx(plain, abs=1e-6)
    with_score = store.similarity_search_with_score(QUERY, k=3, text_weight=0.7)
    assert [s for _, s in with_score] == pytest.approx([0.0, 1.0, 0.8], abs=1e-6)

    retriever = store.as_retriever(search_type="hybrid", search_kwargs={"k": 3, "text_weight": 0.7})
    assert [d.id for d in retriever.invoke(QUERY)] == [d.id for d, _ in hybrid]
    strict = store.as_retriever(
        search_type="hybrid", search_kwargs={"k": 3, "text_weight": 0.7, "score_threshold": 0.5}
    )
    assert [d.id for d in strict.invoke(QUERY)] == ["apple", "banana"]  # fused order, below 0.5 dropped
    assert [d.id for d in await strict.ainvoke(QUERY)] == ["apple", "banana"]
    # the same threshold as LangChain's own similarity_score_threshold search type
    plain_strict = store.as_retriever(
        search_type="similarity_score_threshold", search_kwargs={"k": 3, "score_threshold": 0.5}
    )
    assert {d.id for d in plain_strict.invoke(QUERY)} == {"apple", "banana"}


def test_langchain_mmr_comes_in_selection_order_with_plain_scores() -> None:
    # a near duplicate pair, and a less similar but diverse document the MMR picks second
    table = {"near": [0.99, 0.14, 0.0], "near twin": [0.99, 0.14, 0.001], "other side": [0.6, 0.0, 0.8]}
    store = LangChainStore(embedding=TableEmbeddings(TABLE | table))
    store.add_texts(list(table), ids=["n1", "n2", "o"])
    picked = store.max_marginal_relevance_search("q", k=3, fetch_k=3, lambda_mult=0.4)
    ids = [d.id or "" for d in picked]
    assert ids[1] == "o" and sorted([ids[0], ids[2]]) == ["n1", "n2"]
    via_retriever = store.as_retriever(
        search_type="mmr", search_kwargs={"k": 3, "fetch_k": 3, "lambda_mult": 0.4}
    )
    assert [d.id for d in via_retriever.invoke("q")] == [d.id for d in picked]
    col = store.collection
    assert col is not None
    hits = col.search(TABLE["q"], 3, mmr_lambda=0.4, fetch_k=3)
    plain = {h.id: h.score for h in col.search(TABLE["q"], 3)}
    assert [h.id for h in hits] == ids
    assert [h.score for h in hits] == pytest.approx([plain[h.id] for h in hits], abs=1e-6)
    assert [h.score for h in hits][1] == pytest.approx(0.6, abs=1e-6)  # not decreasing: 0.99.., 0.6, 0.99..


# -- AutoGen -------------------------------------------------------------------------------------------
async def test_autogen_score_is_cosine_similarity() -> None:
    memory = EmbeddixMemory(embedder="hash")
    for fact in ("The user lives in Lyon", "The user is allergic to peanuts"):
        await memory.add(MemoryContent(content=fact, mime_type=MemoryMimeType.TEXT))
    result = await memory.query("Where does the user live? Lyon", k=2)
    q = memory._embedder.embed_query("Where does the user live? Lyon")  # the memory's own embedder
    for m in result.results:
        assert m.metadata is not None
        stored = memory.collection[m.metadata["id"]].vector
        assert stored is not None
        assert math.isclose(m.metadata["score"], _cos(list(q), list(stored)), abs_tol=1e-5)
    await memory.close()


# -- MCP -----------------------------------------------------------------------------------------------
def test_mcp_reports_similarity_and_the_fused_score_apart() -> None:
    with Embeddix.open(None) as db:
        col = db.create_collection("m", dim=2)
        col.add(["apple", "zebra"], [[1.0, 0.0], [0.0, 1.0]], documents=["apple pie", "zebra crossing"])
        hits = col.search([1.0, 0.0], 2, text="zebra", text_weight=0.7)
        pairs: dict[str, Any] = {h.id: similarity(h) for h in hits}
        assert [h.id for h in hits] == ["zebra", "apple"]
        assert pairs["zebra"][0] == pytest.approx(0.0, abs=1e-6) and pairs["apple"][0] == pytest.approx(1.0)
        assert all(fused is not None and 0 < fused < 0.02 for _, fused in pairs.values())
