"""Fast tests of embeddix_core.embeddings: no torch, no model, no network."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import threading
from collections.abc import Sequence
from pathlib import Path

import diskcache
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import embeddix_core.embeddings as embeddings
from embeddix_core.embeddings import (
    CachedEmbedder,
    Embedder,
    EmbeddingCache,
    HashEmbedder,
    MiniLMEmbedder,
    default_embedder,
    get_embedder,
)
from embeddix_core.errors import DimensionMismatchError, InvalidArgumentError, StorageError

REPO_ROOT = Path(__file__).resolve().parents[2]
CAT = "The cat sits on the mat"
CAT_2 = "A cat is sitting on a mat"
STOCKS = "Stock markets fell sharply"


class CountingEmbedder:
    """Wraps HashEmbedder and records every batch it is asked to embed."""

    def __init__(self, dim: int = 32) -> None:
        self.inner = HashEmbedder(dim=dim)
        self.calls: list[list[str]] = []

    @property
    def model_id(self) -> str:
        return self.inner.model_id

    @property
    def dim(self) -> int:
        return self.inner.dim

    def embed_documents(self, texts: Sequence[str]) -> np.ndarray:
        self.calls.append(list(texts))
        return self.inner.embed_documents(texts)

    def embed_query(self, text: str) -> np.ndarray:
        return self.embed_documents([text])[0]


class LyingEmbedder(CountingEmbedder):
    """Declares one dimension and returns another."""

    def embed_documents(self, texts: Sequence[str]) -> np.ndarray:
        return np.zeros((len(texts), self.dim + 1), dtype=np.float32)


# --- public surface ---------------------------------------------------------------------------------------


def test_public_names_are_curated_and_sorted() -> None:
    assert embeddings.__all__ == sorted(embeddings.__all__)
    assert set(embeddings.__all__) == {
        "CachedEmbedder",
        "Embedder",
        "EmbeddingCache",
        "EmbeddingServiceError",
        "HashEmbedder",
        "MiniLMEmbedder",
        "ModelNotFoundError",
        "OpenAIEmbedder",
        "SentenceTransformerEmbedder",
        "WrappedEmbedder",
        "default_embedder",
        "get_embedder",
    }


def test_importing_embeddings_loads_no_model_runtime_or_framework() -> None:
    heavy = ["torch", "sentence_transformers", "transformers", "onnxruntime", "tokenizers"]
    frameworks = ["langchain_core", "llama_index", "autogen_core", "mcp"]
    code = (
        "import sys, embeddix_core.embeddings as e; e.HashEmbedder().embed_query('x'); "
        "e.MiniLMEmbedder(); e.default_embedder(); "
        f"print(','.join(m for m in {heavy + frameworks!r} if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, check=True, timeout=120
    )
    assert out.stdout.strip() == ""


@pytest.mark.parametrize(
    "embedder",
    [HashEmbedder(), CachedEmbedder(HashEmbedder()), MiniLMEmbedder(), CountingEmbedder()],
    ids=["hash", "cached", "minilm-unloaded", "user-class"],
)
def test_embedders_satisfy_the_protocol(embedder: object) -> None:
    assert isinstance(embedder, Embedder)


def test_protocol_rejects_objects_without_the_methods() -> None:
    assert not isinstance(object(), Embedder)
    assert not isinstance("hash", Embedder)


# --- HashEmbedder -----------------------------------------------------------------------------------------


def test_hash_shape_dtype_layout_and_unit_norm() -> None:
    emb = HashEmbedder()
    texts = [CAT, CAT_2, STOCKS, "", "!!! ???", "x" * 10_000, "Ünïcödé 東京 🙂"]
    out = emb.embed_documents(texts)
    assert out.shape == (len(texts), 384)
    assert out.dtype == np.float32
    assert out.flags.c_contiguous
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, rtol=1e-6)
    assert np.isfinite(out).all()


def test_hash_empty_batch_and_query_shape() -> None:
    emb = HashEmbedder(dim=48)
    empty = emb.embed_documents([])
    assert empty.shape == (0, 48) and empty.dtype == np.float32
    query = emb.embed_query(CAT)
    assert query.shape == (48,) and query.dtype == np.float32 and query.flags.c_contiguous
    np.testing.assert_array_equal(query, emb.embed_documents([STOCKS, CAT])[1])


def test_hash_is_deterministic_across_instances_and_batches() -> None:
    a = HashEmbedder().embed_documents([CAT, STOCKS])
    b = HashEmbedder().embed_documents([STOCKS, CAT])
    np.testing.assert_array_equal(a, b[::-1])
    np.testing.assert_array_equal(a[0], HashEmbedder().embed_query(CAT))


@pytest.mark.parametrize("hash_seed", ["1", "2"])
def test_hash_is_deterministic_across_processes(hash_seed: str) -> None:
    # A different PYTHONHASHSEED changes str.__hash__; the vectors must not change with it.
    code = (
        "import hashlib, embeddix_core.embeddings as e; "
        f"v = e.HashEmbedder(dim=64, seed=7).embed_documents({[CAT, STOCKS, 'naïve café']!r}); "
        "print(hashlib.sha256(v.tobytes()).hexdigest())"
    )
    env = {**os.environ, "PYTHONHASHSEED": hash_seed}
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, env=env, capture_output=True, text=True, check=True
    )
    here = HashEmbedder(dim=64, seed=7).embed_documents([CAT, STOCKS, "naïve café"])
    assert out.stdout.strip() == hashlib.sha256(here.tobytes()).hexdigest()


def test_hash_golden_values_v1() -> None:
    # Pinned output of algorithm v1: vectors are stored on disk under model_id "hash-384-v1", so any change
    # to tokenisation, features or hashing must bump the version instead of failing this test silently.
    vector = HashEmbedder().embed_query(CAT)
    nonzero = np.flatnonzero(vector)[:5]
    assert nonzero.tolist() == [13, 23, 48, 53, 75]
    np.testing.assert_allclose(
        vector[nonzero], [-0.13676308, 0.27352616, -0.1184403, 0.16749987, 0.4737612], rtol=1e-5
    )


def test_hash_similar_texts_are_closer_than_unrelated_ones() -> None:
    cat, cat2, stocks = HashEmbedder().embed_documents([CAT, CAT_2, STOCKS])
    assert float(cat @ cat2) > float(cat @ stocks) + 0.2
    assert float(cat @ cat2) > 0.3
    assert abs(float(cat @ stocks)) < 0.2


def test_hash_is_case_insensitive_and_ignores_punctuation() -> None:
    emb = HashEmbedder()
    np.testing.assert_allclose(emb.embed_query("Hello, World!"), emb.embed_query("hello world"), atol=1e-7)


def test_hash_texts_without_words_share_one_unit_vector() -> None:
    out = HashEmbedder().embed_documents(["", "   ", "?!"])
    np.testing.assert_array_equal(out[0], out[1])
    np.testing.assert_array_equal(out[0], out[2])


def test_hash_seed_and_dim_select_the_space_and_model_id() -> None:
    assert HashEmbedder().model_id == "hash-384-v1"
    assert HashEmbedder(dim=64).model_id == "hash-64-v1"
    assert HashEmbedder(dim=64, seed=3).model_id == "hash-64-seed3-v1"
    a = HashEmbedder(dim=64).embed_query(CAT)
    b = HashEmbedder(dim=64, seed=3).embed_query(CAT)
    assert not np.array_equal(a, b)


@pytest.mark.parametrize(
    "kwargs",
    [{"dim": 0}, {"dim": 1}, {"dim": 70_000}, {"dim": 3.0}, {"dim": True}, {"seed": -1}, {"seed": 2**64}],
)
def test_hash_rejects_bad_parameters(kwargs: dict[str, object]) -> None:
    with pytest.raises(InvalidArgumentError):
        HashEmbedder(**kwargs)  # type: ignore[arg-type]


# --- input validation, shared by every embedder -----------------------------------------------------------


@pytest.mark.parametrize(
    "embedder",
    [HashEmbedder(dim=16), CachedEmbedder(HashEmbedder(dim=16)), MiniLMEmbedder()],
    ids=["hash", "cached", "minilm-unloaded"],
)
@pytest.mark.parametrize(
    "bad",
    ["a lone string", b"bytes", ["ok", 3], [None], ["ok", b"bytes"], 42, None],
    ids=["str", "bytes", "int-item", "none-item", "bytes-item", "int", "none"],
)
def test_embed_documents_rejects_bad_input(embedder: Embedder, bad: object) -> None:
    with pytest.raises(InvalidArgumentError):
        embedder.embed_documents(bad)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "embedder",
    [HashEmbedder(dim=16), CachedEmbedder(HashEmbedder(dim=16)), MiniLMEmbedder()],
    ids=["hash", "cached", "minilm-unloaded"],
)
@pytest.mark.parametrize("bad", [None, 3, ["a"], b"x"])
def test_embed_query_rejects_non_strings(embedder: Embedder, bad: object) -> None:
    with pytest.raises(InvalidArgumentError):
        embedder.embed_query(bad)  # type: ignore[arg-type]


def test_bad_input_message_says_what_came_and_how_to_fix() -> None:
    with pytest.raises(InvalidArgumentError, match=r"texts\[1\] must be a str, got int"):
        HashEmbedder().embed_documents(["a", 1])  # type: ignore[list-item]
    with pytest.raises(InvalidArgumentError, match="embed_query"):
        HashEmbedder().embed_documents("hello")


def test_tuples_and_generators_are_accepted() -> None:
    emb = HashEmbedder(dim=16)
    expected = emb.embed_documents([CAT, STOCKS])
    np.testing.assert_array_equal(emb.embed_documents((CAT, STOCKS)), expected)
    np.testing.assert_array_equal(emb.embed_documents(t for t in (CAT, STOCKS)), expected)  # type: ignore[arg-type]


# --- MiniLMEmbedder without loading the model -------------------------------------------------------------


def test_minilm_metadata_needs_no_model() -> None:
    emb = MiniLMEmbedder()
    assert emb.model_id == "sentence-transformers/all-MiniLM-L6-v2"
    assert emb.dim == 384
    assert emb.backend is None
    empty = emb.embed_documents([])
    assert empty.shape == (0, 384) and empty.dtype == np.float32
    assert emb.backend is None  # an empty batch does not load the model


@pytest.mark.parametrize(
    "kwargs",
    [
        {"batch_size": 0},
        {"batch_size": 2.5},
        {"backend": "gpu"},
        {"device": ""},
        {"backend": "onnx", "device": "cuda"},
        {"num_threads": 0},
    ],
)
def test_minilm_rejects_bad_parameters(kwargs: dict[str, object]) -> None:
    with pytest.raises(InvalidArgumentError):
        MiniLMEmbedder(**kwargs)  # type: ignore[arg-type]


# --- EmbeddingCache and CachedEmbedder --------------------------------------------------------------------


def test_cached_embedder_counts_hits_and_misses_and_embeds_only_misses() -> None:
    inner = CountingEmbedder()
    cached = CachedEmbedder(inner, EmbeddingCache())
    first = cached.embed_documents(["a", "b", "c"])
    assert inner.calls == [["a", "b", "c"]]
    assert (cached.cache.hits, cached.cache.misses) == (0, 3)

    second = cached.embed_documents(["c", "d", "a"])
    assert inner.calls[-1] == ["d"]  # only the miss, in one call
    assert (cached.cache.hits, cached.cache.misses) == (2, 4)
    np.testing.assert_array_equal(second[0], first[2])
    np.testing.assert_array_equal(second[2], first[0])

    cached.embed_documents(["a", "b", "c", "d"])
    assert len(inner.calls) == 2  # all hits: the wrapped embedder is not called at all
    assert cached.cache.hits == 6


def test_cached_embedder_preserves_order_and_equals_the_wrapped_embedder() -> None:
    inner = CountingEmbedder()
    cached = CachedEmbedder(inner)
    texts = [f"text number {i}" for i in range(20)]
    cached.embed_documents(texts[::3])  # warm a scattered subset
    out = cached.embed_documents(texts)
    np.testing.assert_array_equal(out, inner.inner.embed_documents(texts))
    assert out.dtype == np.float32 and out.flags.c_contiguous and out.shape == (20, inner.dim)


def test_cached_embedder_deduplicates_within_a_batch() -> None:
    inner = CountingEmbedder()
    cached = CachedEmbedder(inner)
    out = cached.embed_documents(["x", "y", "x", "x", "y"])
    assert inner.calls == [["x", "y"]]
    assert (cached.cache.hits, cached.cache.misses) == (0, 2)
    np.testing.assert_array_equal(out[0], out[2])
    np.testing.assert_array_equal(out[1], out[4])


def test_cached_embedder_empty_batch_and_query() -> None:
    inner = CountingEmbedder()
    cached = CachedEmbedder(inner)
    assert cached.embed_documents([]).shape == (0, inner.dim)
    assert inner.calls == []
    np.testing.assert_array_equal(cached.embed_query(CAT), inner.inner.embed_query(CAT))
    np.testing.assert_array_equal(cached.embed_query(CAT), inner.inner.embed_query(CAT))
    assert (cached.cache.hits, cached.cache.misses) == (1, 1)


def test_results_do_not_alias_the_cache() -> None:
    cached = CachedEmbedder(CountingEmbedder())
    out = cached.embed_documents([CAT])
    expected = out.copy()
    out[:] = 0.0  # the caller owns its result
    np.testing.assert_array_equal(cached.embed_documents([CAT]), expected)
    stored = cached.cache.get(cached.model_id, CAT)
    assert stored is not None and not stored.flags.writeable


def test_cache_keys_include_the_model_id() -> None:
    cache = EmbeddingCache()
    a = CachedEmbedder(CountingEmbedder(dim=16), cache)
    b = CachedEmbedder(HashEmbedder(dim=16, seed=1), cache)
    va = a.embed_query(CAT)
    vb = b.embed_query(CAT)
    assert cache.misses == 2 and cache.hits == 0
    assert not np.array_equal(va, vb)


def test_cache_treats_a_vector_of_another_dimension_as_a_miss() -> None:
    cache = EmbeddingCache()
    cache.put("m", CAT, np.ones(8, dtype=np.float32))
    assert cache.get_many("m", [CAT], dim=16) == [None]
    hit = cache.get_many("m", [CAT], dim=8)[0]
    assert hit is not None and hit.shape == (8,)


def test_lru_is_bounded_and_evicts_least_recently_used() -> None:
    cache = EmbeddingCache(max_items=3)
    for name in "abc":
        cache.put("m", name, np.full(4, ord(name), dtype=np.float32))
    assert cache.get("m", "a") is not None  # "a" becomes the most recently used
    cache.put("m", "d", np.zeros(4, dtype=np.float32))
    cache.put("m", "e", np.zeros(4, dtype=np.float32))
    assert len(cache) == 3
    assert cache.get("m", "b") is None and cache.get("m", "c") is None
    assert all(cache.get("m", name) is not None for name in "ade")


def test_lru_bound_holds_through_cached_embedder() -> None:
    inner = CountingEmbedder()
    cached = CachedEmbedder(inner, EmbeddingCache(max_items=10))
    cached.embed_documents([f"t{i}" for i in range(25)])
    assert len(cached.cache) == 10
    cached.embed_documents(["t0"])  # evicted long ago
    assert inner.calls[-1] == ["t0"]


def test_cache_clear_resets_everything() -> None:
    cached = CachedEmbedder(CountingEmbedder())
    cached.embed_documents(["a", "b"])
    cached.cache.clear()
    assert len(cached.cache) == 0 and cached.cache.hits == 0 and cached.cache.misses == 0


def test_disk_tier_survives_a_new_cache_object(tmp_path: Path) -> None:
    texts = [CAT, STOCKS, "naïve café 🙂"]
    first_inner = CountingEmbedder()
    with EmbeddingCache(directory=tmp_path / "vectors") as cache:
        expected = CachedEmbedder(first_inner, cache).embed_documents(texts)

    second_inner = CountingEmbedder()
    with EmbeddingCache(max_items=2, directory=tmp_path / "vectors") as reopened:
        again = CachedEmbedder(second_inner, reopened).embed_documents(texts)
        assert second_inner.calls == []  # everything came from disk
        assert (reopened.hits, reopened.misses) == (3, 0)
        np.testing.assert_array_equal(again, expected)
        assert len(reopened) == 2  # promoted into memory, still within the bound


def test_disk_tier_stores_checked_raw_bytes_not_pickles(tmp_path: Path) -> None:
    with EmbeddingCache(directory=tmp_path) as cache:
        CachedEmbedder(CountingEmbedder(dim=16), cache).embed_query(CAT)
    with diskcache.Cache(str(tmp_path)) as raw:
        keys = list(raw.iterkeys())
        assert len(keys) == 1 and isinstance(keys[0], str) and keys[0].startswith("hash-16-v1\x00")
        blob = raw[keys[0]]
    assert isinstance(blob, bytes) and blob.startswith(b"EXEV")
    assert len(blob) == 14 + 16 * 4  # header + dim little-endian float32
    np.testing.assert_array_equal(
        np.frombuffer(blob[14:], dtype="<f4"), HashEmbedder(dim=16).embed_query(CAT)
    )


def test_disk_tier_discards_a_corrupt_entry(tmp_path: Path) -> None:
    with EmbeddingCache(directory=tmp_path) as cache:
        CachedEmbedder(CountingEmbedder(dim=16), cache).embed_query(CAT)
    with diskcache.Cache(str(tmp_path)) as raw:
        (key,) = list(raw.iterkeys())
        blob = bytearray(raw[key])
        blob[-1] ^= 0xFF  # flip bits in the payload: the checksum no longer matches
        raw[key] = bytes(blob)
    inner = CountingEmbedder(dim=16)
    with EmbeddingCache(directory=tmp_path) as cache:
        out = CachedEmbedder(inner, cache).embed_query(CAT)
        assert inner.calls == [[CAT]]  # a miss, re-embedded
        np.testing.assert_array_equal(out, HashEmbedder(dim=16).embed_query(CAT))
    with diskcache.Cache(str(tmp_path)) as raw:
        assert raw[key].startswith(b"EXEV") and raw[key] != bytes(blob)  # rewritten intact


def test_disk_only_cache_with_no_memory_tier(tmp_path: Path) -> None:
    inner = CountingEmbedder()
    with EmbeddingCache(max_items=0, directory=tmp_path) as cache:
        cached = CachedEmbedder(inner, cache)
        cached.embed_documents(["a", "b"])
        cached.embed_documents(["a", "b"])
        assert len(cache) == 0 and len(inner.calls) == 1 and cache.hits == 2


def test_close_is_idempotent(tmp_path: Path) -> None:
    cache = EmbeddingCache(directory=tmp_path)
    cache.close()
    cache.close()


def test_unwritable_disk_tier_raises_storage_error(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    with pytest.raises(StorageError):
        EmbeddingCache(directory=blocker / "cache")


@pytest.mark.parametrize("kwargs", [{"max_items": -1}, {"max_items": 1.5}, {"disk_size_limit": 0}])
def test_cache_rejects_bad_parameters(kwargs: dict[str, object]) -> None:
    with pytest.raises(InvalidArgumentError):
        EmbeddingCache(**kwargs)  # type: ignore[arg-type]


def test_put_many_checks_shapes() -> None:
    with pytest.raises(InvalidArgumentError, match="shape"):
        EmbeddingCache().put_many("m", ["a", "b"], np.zeros((3, 4), dtype=np.float32))


def test_cached_embedder_rejects_non_embedders() -> None:
    with pytest.raises(InvalidArgumentError):
        CachedEmbedder(object())  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError):
        CachedEmbedder(HashEmbedder(), cache={})  # type: ignore[arg-type]


def test_an_embedder_returning_the_wrong_shape_is_reported() -> None:
    with pytest.raises(DimensionMismatchError, match=r"expected \(1, 32\)"):
        CachedEmbedder(LyingEmbedder()).embed_query(CAT)


def test_cached_embedder_is_thread_safe() -> None:
    reference = HashEmbedder(dim=32)
    cached = CachedEmbedder(HashEmbedder(dim=32), EmbeddingCache(max_items=50))
    texts = [f"sentence {i}" for i in range(80)]
    expected = reference.embed_documents(texts)
    mismatches: list[int] = []
    errors: list[BaseException] = []

    def work(offset: int) -> None:
        try:
            for start in range(0, 200, 5):
                lo = (start + offset) % 70
                if not np.array_equal(cached.embed_documents(texts[lo : lo + 10]), expected[lo : lo + 10]):
                    mismatches.append(lo)
        except BaseException as exc:  # surfaced below; a thread's exception is otherwise lost
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i * 7,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and mismatches == []
    assert len(cached.cache) <= 50
    assert cached.cache.hits + cached.cache.misses == 4 * 40 * 10


_SHARED_CACHED = CachedEmbedder(HashEmbedder(dim=24), EmbeddingCache(max_items=64))


@settings(max_examples=60, deadline=None)
@given(st.lists(st.text(max_size=40), max_size=12))
def test_cached_embedder_is_congruent_with_the_reference(texts: list[str]) -> None:
    out = _SHARED_CACHED.embed_documents(texts)
    np.testing.assert_array_equal(out, HashEmbedder(dim=24).embed_documents(texts))


# --- names -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "model_id"),
    [
        ("hash", "hash-384-v1"),
        ("hash-128", "hash-128-v1"),
        (" HASH-64-seed3-v1 ", "hash-64-seed3-v1"),
        ("hash-384-v1", "hash-384-v1"),
    ],
)
def test_get_embedder_hash_names(name: str, model_id: str) -> None:
    emb = get_embedder(name)
    assert isinstance(emb, HashEmbedder)
    assert emb.model_id == model_id
    assert get_embedder(emb.model_id).model_id == model_id  # model ids round-trip


@pytest.mark.parametrize(
    "name", ["minilm", "default", "sentence-transformers/all-MiniLM-L6-v2", "MiniLM", "all-minilm-l6-v2"]
)
def test_get_embedder_minilm_names_give_the_shared_default(name: str) -> None:
    emb = get_embedder(name)
    assert emb is default_embedder()
    assert emb.model_id == "sentence-transformers/all-MiniLM-L6-v2"
    assert emb.dim == 384
    assert isinstance(emb, CachedEmbedder) and isinstance(emb.embedder, MiniLMEmbedder)


@pytest.mark.parametrize("name", ["nope", "hash-", "hash-abc", "hash-384-v2", "", 3, None])
def test_get_embedder_rejects_unknown_names(name: object) -> None:
    with pytest.raises(InvalidArgumentError):
        get_embedder(name)  # type: ignore[arg-type]
