"""Scores users can reason about (issue #15): hybrid and MMR hits score as a plain search would.

A hybrid search orders its hits by reciprocal rank fusion and an MMR search by marginal relevance, but
each hit's ``score`` is the similarity a plain vector search gives the same record, so one threshold
means the same everywhere; the ordering value is ``Hit.rank_score`` and ``hits.plan.ranking`` names it.
A text-only search has no query vector, hence no similarity: it keeps ``-bm25``.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from embeddix_core import Collection, Embeddix, Hit
from embeddix_core.query.fusion import RRF_K, mmr_select

WORDS = ["fox", "dog", "cat", "owl", "eel", "bee", "yak", "emu"]
N = 60


def _collection(db: Embeddix, metric: str, index_threshold: int | None = None) -> Collection:
    """N records with random vectors and documents of two words, so text and vector rankings differ."""
    rng = np.random.default_rng(7)
    col = db.create_collection(
        f"c_{metric}_{index_threshold}", dim=8, metric=metric, index_threshold=index_threshold
    )
    docs = [f"{WORDS[i % 8]} {WORDS[(i * 3 + 1) % 8]} note {i}" for i in range(N)]
    col.add([f"r{i}" for i in range(N)], rng.standard_normal((N, 8)).astype(np.float32), documents=docs)
    return col


def _plain_scores(col: Collection, q: np.ndarray) -> dict[str, float]:
    """Every record's score in a plain (exhaustive) vector search."""
    return {h.id: h.score for h in col.search(q, k=N, ef=N * 2, cache=False)}


@pytest.mark.parametrize("metric", ["cosine", "l2", "ip"])
@pytest.mark.parametrize("index_threshold", [None, 10])  # exact index; HNSW
def test_hybrid_scores_are_the_plain_scores_in_fused_order(metric: str, index_threshold: int | None) -> None:
    with Embeddix.open(None) as db:
        col = _collection(db, metric, index_threshold)
        q = np.random.default_rng(3).standard_normal(8).astype(np.float32)
        plain = _plain_scores(col, q)
        # Text matches outside the vector top fetch_k get their similarity from the stored vector
        # rather than from the vector search: some must be among the hits for this test to mean much.
        hits = col.search(q, k=12, text="fox owl", text_weight=0.5, fetch_k=12, ef=N * 2)
        assert hits.plan is not None and hits.plan.ranking == "rrf"
        plain_rank = {rid: i for i, rid in enumerate(plain)}
        assert len(hits) == 12 and max(plain_rank[h.id] for h in hits) >= 12
        assert {h.metric for h in hits} == {metric}
        for h in hits:
            assert math.isclose(h.score, plain[h.id], rel_tol=1e-5, abs_tol=1e-5), h
        assert all(h.rank_score is not None for h in hits)
        ranks = [h.rank_score or 0.0 for h in hits]
        assert all(0 < r < 1 / RRF_K for r in ranks)
        assert ranks == sorted(ranks, reverse=True)  # the order is the fusion's
        # ... which is not the similarity order: fusion lifted text matches above closer vectors
        assert [h.score for h in hits] != sorted((h.score for h in hits), reverse=True)


def test_hybrid_distance_matches_plain_for_l2() -> None:
    # Before issue #15 a hybrid l2 hit carried the squared distance; it is now the plain search's.
    with Embeddix.open(None) as db:
        col = _collection(db, "l2")
        q = np.zeros(8, np.float32)
        plain = {h.id: h.distance for h in col.search(q, k=N)}
        for h in col.search(q, k=8, text="fox", text_weight=0.5, fetch_k=4):
            assert math.isclose(h.distance, plain[h.id], rel_tol=1e-5, abs_tol=1e-5)


def test_hybrid_text_weight_one_scores_text_matches_by_similarity() -> None:
    with Embeddix.open(None) as db:
        col = _collection(db, "cosine")
        q = np.random.default_rng(4).standard_normal(8).astype(np.float32)
        plain = _plain_scores(col, q)
        hits = col.search(q, k=5, text="eel", text_weight=1.0, include_vectors=True)
        assert all("eel" in (h.document or "") for h in hits)
        assert all(math.isclose(h.score, plain[h.id], abs_tol=1e-5) for h in hits)
        assert all(h.vector is not None and h.rank_score is not None for h in hits)  # the Hit(...) path


def test_mmr_scores_are_the_plain_scores_in_selection_order() -> None:
    with Embeddix.open(None) as db:
        col = db.create_collection("m", dim=2)
        # a near duplicate of the best match, and a diverse record that is less similar
        col.add(["a", "a2", "b"], [[1.0, 0.0], [0.99, 0.14], [0.6, 0.8]])
        q = np.asarray([1.0, 0.0], np.float32)
        plain = _plain_scores(col, q)
        hits = col.search(q, k=3, mmr_lambda=0.4)
        assert hits.plan is not None and hits.plan.ranking == "mmr"
        assert [h.id for h in hits] == ["a", "b", "a2"]  # selection order: diversity first
        for h in hits:
            assert math.isclose(h.score, plain[h.id], abs_tol=1e-6)
        scores = [h.score for h in hits]
        assert scores != sorted(scores, reverse=True)  # similarities, so not necessarily decreasing
        # marginal relevance: lambda * cos(q, c) - (1 - lambda) * max cos(c, picked); never increasing
        assert [h.rank_score for h in hits] == pytest.approx([0.4, 0.4 * 0.6 - 0.6 * 0.6, -0.198], abs=1e-3)


@pytest.mark.parametrize("metric", ["cosine", "l2"])
def test_mmr_order_is_mmr_select_over_the_plain_candidates(metric: str) -> None:
    with Embeddix.open(None) as db:
        col = _collection(db, metric)
        q = np.random.default_rng(5).standard_normal(8).astype(np.float32)
        plain = col.search(q, k=20, include_vectors=True)
        vecs = np.stack([h.vector for h in plain if h.vector is not None])
        picked = mmr_select(q, vecs, 6, 0.5)
        hits = col.search(q, k=6, mmr_lambda=0.5, fetch_k=20)
        assert [h.id for h in hits] == [plain[i].id for i, _ in picked]
        assert [h.rank_score for h in hits] == pytest.approx([m for _, m in picked])
        by_id = {h.id: h.score for h in plain}
        assert all(math.isclose(h.score, by_id[h.id], abs_tol=1e-6) for h in hits)


def test_text_only_search_keeps_bm25() -> None:
    with Embeddix.open(None) as db:
        col = _collection(db, "cosine")
        hits = col.search(None, k=5, text="fox")
        assert hits.plan is not None and hits.plan.ranking == "bm25"
        assert {h.metric for h in hits} == {"bm25"}
        assert all(h.rank_score is None for h in hits)
        scores = [h.score for h in hits]
        assert scores == sorted(scores, reverse=True) and all(s > 0 for s in scores)  # -bm25


def test_plain_hits_have_no_rank_score() -> None:
    with Embeddix.open(None) as db:
        col = _collection(db, "cosine")
        q = np.ones(8, np.float32)
        for hits in (col.search(q, k=3), col.search(q, k=3), col.search(q, k=3, cache=False)):  # cache too
            assert hits.plan is not None and hits.plan.ranking == "vector"
            assert all(h.rank_score is None for h in hits)


def test_hit_stays_frozen_and_positional() -> None:
    hit = Hit("x", 0.5, 0.5)
    assert hit.rank_score is None
    with pytest.raises(dataclasses.FrozenInstanceError):
        hit.rank_score = 1.0  # type: ignore[misc]
    assert Hit("x", 0.5, 0.5, rank_score=0.01).rank_score == 0.01
