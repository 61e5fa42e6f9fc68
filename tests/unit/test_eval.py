"""Tests for embeddix_core.eval: exact_knn against a naive per-pair loop, and the recall arithmetic."""

from __future__ import annotations

import math

import numpy as np
import pytest

from embeddix_core.errors import DimensionMismatchError, InvalidArgumentError, InvalidVectorError
from embeddix_core.eval import KnnResult, exact_knn, recall_at_k, recall_per_query

METRICS = ["cosine", "l2", "ip"]


def naive_knn(data: np.ndarray, queries: np.ndarray, k: int, metric: str) -> tuple[list[list[int]], list]:
    """One Python-float distance per pair, sorted by (distance, index): the definition, not a shortcut."""
    all_idx, all_dist = [], []
    for q in queries.astype(np.float64).tolist():
        rows = []
        for i, x in enumerate(data.astype(np.float64).tolist()):
            dot = math.fsum(a * b for a, b in zip(q, x, strict=True))
            if metric == "cosine":
                nq = math.sqrt(math.fsum(a * a for a in q)) or 1.0
                nx = math.sqrt(math.fsum(b * b for b in x)) or 1.0
                d = 1.0 - dot / (nq * nx)
            elif metric == "l2":
                d = math.sqrt(math.fsum((a - b) ** 2 for a, b in zip(q, x, strict=True)))
            else:
                d = 1.0 - dot
            rows.append((d, i))
        rows.sort()
        all_idx.append([i for _, i in rows[:k]])
        all_dist.append([d for d, _ in rows[:k]])
    return all_idx, all_dist


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize("block_size", [7, 64, 8192])
def test_exact_knn_matches_naive_loop(rng: np.random.Generator, metric: str, block_size: int) -> None:
    data = rng.standard_normal((150, 12)).astype(np.float32)
    queries = rng.standard_normal((9, 12)).astype(np.float32)
    res = exact_knn(data, queries, 10, metric, block_size=block_size)
    want_idx, want_dist = naive_knn(data, queries, 10, metric)
    assert isinstance(res, KnnResult)
    assert res.metric == metric
    assert res.indices.dtype == np.int64 and res.indices.shape == (9, 10)
    assert res.distances.dtype == np.float32 and res.distances.shape == (9, 10)
    np.testing.assert_array_equal(res.indices, np.array(want_idx))
    np.testing.assert_allclose(res.distances, np.array(want_dist), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("metric", METRICS)
def test_float32_precision_agrees_with_naive_loop(rng: np.random.Generator, metric: str) -> None:
    data = rng.standard_normal((300, 32)).astype(np.float32)
    queries = rng.standard_normal((20, 32)).astype(np.float32)
    res = exact_knn(data, queries, 10, metric, block_size=50, precision="float32")
    want_idx, want_dist = naive_knn(data, queries, 10, metric)
    assert recall_at_k(res.indices, want_idx, 10) == 1.0
    np.testing.assert_allclose(res.distances, np.array(want_dist), rtol=1e-4, atol=1e-4)


def test_distance_conventions() -> None:
    data = np.array([[1.0, 0.0], [0.0, 2.0], [-3.0, 0.0]], dtype=np.float32)
    q = np.array([[2.0, 0.0]], dtype=np.float32)
    cos = exact_knn(data, q, 3, "cosine")
    np.testing.assert_array_equal(cos.indices, [[0, 1, 2]])
    np.testing.assert_allclose(cos.distances, [[0.0, 1.0, 2.0]], atol=1e-7)
    l2 = exact_knn(data, q, 3, "l2")
    np.testing.assert_array_equal(l2.indices, [[0, 1, 2]])
    np.testing.assert_allclose(l2.distances, [[1.0, math.sqrt(8.0), 5.0]], atol=1e-6)
    ip = exact_knn(data, q, 3, "ip")
    np.testing.assert_array_equal(ip.indices, [[0, 1, 2]])
    np.testing.assert_allclose(ip.distances, [[1.0 - 2.0, 1.0, 1.0 + 6.0]], atol=1e-7)


@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize("block_size", [1, 3, 100])
def test_ties_go_to_the_lower_index(metric: str, block_size: int) -> None:
    # 20 identical rows, with one better row in the middle: ties must come out 0, 1, 2, ... after it.
    data = np.ones((20, 4), dtype=np.float32)
    data[11] = [2.0, 2.0, 2.0, 2.0] if metric != "cosine" else [1.0, 1.0, 1.0, 1.01]
    q = np.ones((2, 4), dtype=np.float32)
    res = exact_knn(data, q, 6, metric, block_size=block_size)
    # For cosine row 11 is slightly off-direction and for l2 it is far away, so it comes after every
    # exact match; for ip it has the largest product and comes first.
    expected = [11, 0, 1, 2, 3, 4] if metric == "ip" else [0, 1, 2, 3, 4, 5]
    np.testing.assert_array_equal(res.indices, [expected, expected])


@pytest.mark.parametrize("metric", ["l2", "ip"])
@pytest.mark.parametrize("block_size", [5, 16, 1000])
def test_many_exact_ties_match_naive_loop(rng: np.random.Generator, metric: str, block_size: int) -> None:
    # Small-integer vectors give exactly representable scores, so ties are real and plentiful.
    data = rng.integers(0, 2, size=(120, 5)).astype(np.float32)
    queries = rng.integers(0, 2, size=(15, 5)).astype(np.float32)
    res = exact_knn(data, queries, 25, metric, block_size=block_size)
    want_idx, _ = naive_knn(data, queries, 25, metric)
    np.testing.assert_array_equal(res.indices, np.array(want_idx))


def test_k_larger_than_n_returns_everything(rng: np.random.Generator) -> None:
    data = rng.standard_normal((5, 3)).astype(np.float32)
    res = exact_knn(data, data, 50, "l2")
    assert res.indices.shape == (5, 5)
    np.testing.assert_array_equal(np.sort(res.indices, axis=1), np.tile(np.arange(5), (5, 1)))
    np.testing.assert_array_equal(res.indices[:, 0], np.arange(5))
    np.testing.assert_allclose(res.distances[:, 0], 0.0, atol=1e-6)


def test_one_dimensional_query_is_one_row(rng: np.random.Generator) -> None:
    data = rng.standard_normal((30, 8)).astype(np.float32)
    res = exact_knn(data, data[3], 4)
    assert res.indices.shape == (1, 4)
    assert res.indices[0, 0] == 3


def test_zero_vector_has_cosine_zero() -> None:
    data = np.array([[0.0, 0.0], [1.0, 0.0]], dtype=np.float32)
    res = exact_knn(data, np.array([[0.0, 1.0]], dtype=np.float32), 2, "cosine")
    np.testing.assert_array_equal(res.indices, [[0, 1]])
    np.testing.assert_allclose(res.distances, [[1.0, 1.0]])


def test_memory_mapped_data_gives_the_same_answer(tmp_path, rng: np.random.Generator) -> None:
    data = rng.standard_normal((500, 16)).astype(np.float32)
    queries = rng.standard_normal((7, 16)).astype(np.float32)
    np.save(tmp_path / "base.npy", data)
    mm = np.load(tmp_path / "base.npy", mmap_mode="r")
    a = exact_knn(mm, queries, 20, block_size=64)
    b = exact_knn(data, queries, 20)
    np.testing.assert_array_equal(a.indices, b.indices)
    np.testing.assert_array_equal(a.distances, b.distances)


def test_metric_aliases_are_accepted(rng: np.random.Generator) -> None:
    data = rng.standard_normal((40, 6)).astype(np.float32)
    a = exact_knn(data, data[:3], 5, "euclidean")
    assert a.metric == "l2"
    np.testing.assert_array_equal(a.indices, exact_knn(data, data[:3], 5, "l2").indices)


def test_exact_knn_rejects_bad_input(rng: np.random.Generator) -> None:
    data = rng.standard_normal((10, 4)).astype(np.float32)
    with pytest.raises(DimensionMismatchError, match="dimension 3"):
        exact_knn(data, np.zeros((1, 3), dtype=np.float32), 2)
    with pytest.raises(InvalidArgumentError, match="k must be a positive integer"):
        exact_knn(data, data, 0)
    with pytest.raises(InvalidArgumentError, match="metric"):
        exact_knn(data, data, 2, "hamming")
    with pytest.raises(InvalidArgumentError, match="block_size"):
        exact_knn(data, data, 2, block_size=0)
    bad = data.copy()
    bad[7, 1] = np.nan
    with pytest.raises(InvalidVectorError, match="row 7"):
        exact_knn(bad, data, 2, block_size=3)
    with pytest.raises(InvalidVectorError, match="2-D"):
        exact_knn(data[None], data, 2)


def test_repr_is_short(rng: np.random.Generator) -> None:
    data = rng.standard_normal((10, 4)).astype(np.float32)
    assert repr(exact_knn(data, data, 3, "ip")) == "KnnResult(n_queries=10, k=3, metric='ip')"


# ---------------------------------------------------------------- recall


def test_recall_counts_overlap_within_the_first_k() -> None:
    truth = [[1, 2, 3, 4], [5, 6, 7, 8]]
    found = [[1, 9, 3, 2], [8, 7, 6, 5]]
    np.testing.assert_allclose(recall_per_query(found, truth, 2), [0.5, 0.0])
    np.testing.assert_allclose(recall_per_query(found, truth, 4), [0.75, 1.0])
    assert recall_at_k(found, truth, 2) == pytest.approx(0.25)
    assert recall_at_k(found, truth, 4) == pytest.approx(0.875)


def test_recall_accepts_arrays_and_string_ids() -> None:
    truth = np.array([[0, 1, 2], [3, 4, 5]], dtype=np.int64)
    found = np.array([[2, 1, 0], [3, 9, 9]], dtype=np.int64)
    assert recall_at_k(found, truth, 3) == pytest.approx((1.0 + 1 / 3) / 2)
    assert recall_at_k([["a", "b"], ["c", "x"]], [["b", "a"], ["c", "d"]], 2) == pytest.approx(0.75)
    # a list of 1-D arrays is fine too
    assert recall_at_k(list(found), truth, 1) == pytest.approx(0.5)


def test_recall_short_rows_and_padding() -> None:
    # Only two true neighbours exist (padded with -1): finding both is full recall at k=10.
    truth = np.array([[4, 7, -1, -1]])
    found = np.array([[7, 4, -1, -1]])
    assert recall_at_k(found, truth, 10) == 1.0
    assert recall_at_k([[7]], [[4, 7]], 10) == 0.5
    assert recall_at_k([[None, "a"]], [["a", None]], 5) == 1.0
    # nothing to find: nothing missed
    assert recall_at_k([[1, 2]], [[]], 3) == 1.0


def test_recall_does_not_double_count_duplicates() -> None:
    assert recall_at_k([[1, 1, 1]], [[1, 2, 3]], 3) == pytest.approx(1 / 3)


def test_recall_of_empty_batch_is_one() -> None:
    assert recall_at_k([], [], 10) == 1.0
    assert recall_per_query(np.zeros((0, 5), dtype=np.int64), np.zeros((0, 5), dtype=np.int64), 5).shape == (
        0,
    )


def test_recall_rejects_bad_input() -> None:
    with pytest.raises(InvalidArgumentError, match="rows"):
        recall_at_k([[1]], [[1], [2]], 1)
    with pytest.raises(InvalidArgumentError, match="k must be"):
        recall_at_k([[1]], [[1]], 0)
    with pytest.raises(InvalidArgumentError, match="2-D"):
        recall_at_k(np.array([1, 2]), np.array([1, 2]), 1)
    with pytest.raises(InvalidArgumentError, match="list of rows"):
        recall_at_k("abc", [[1]], 1)


def test_recall_of_exact_knn_against_itself_is_one(rng: np.random.Generator) -> None:
    data = rng.standard_normal((200, 8)).astype(np.float32)
    res = exact_knn(data, data[:10], 10)
    assert recall_at_k(res.indices, res.indices, 10) == 1.0
    assert recall_at_k(res.indices[:, ::-1], res.indices, 10) == 1.0
    assert recall_at_k(res.indices[:, 5:], res.indices, 5) == 0.0
