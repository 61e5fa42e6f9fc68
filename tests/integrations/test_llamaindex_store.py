"""llama_index.vector_stores.embeddix: filters against LlamaIndex's own reference, modes, deletes, reopen."""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import llama_index.vector_stores.embeddix as package
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from llama_index.core import Document, StorageContext, VectorStoreIndex
from llama_index.core.embeddings import MockEmbedding
from llama_index.core.indices.vector_store.retrievers import VectorIndexRetriever
from llama_index.core.schema import NodeRelationship, RelatedNodeInfo, TextNode
from llama_index.core.vector_stores.types import (
    FilterCondition,
    FilterOperator,
    MetadataFilter,
    MetadataFilters,
    VectorStoreQuery,
    VectorStoreQueryMode,
)
from llama_index.core.vector_stores.utils import build_metadata_filter_fn
from llama_index.vector_stores.embeddix import (
    EmbeddixEmbedding,
    EmbeddixVectorStore,
    LlamaIndexEmbedder,
    to_core_filter,
)

from embeddix_core import Embeddix, InvalidArgumentError, InvalidFilterError
from embeddix_core.embeddings import HashEmbedder

ROOT = Path(__file__).resolve().parents[2]
DIM = 8


def test_exported_names() -> None:
    assert package.__all__ == [
        "EmbeddixEmbedding",
        "EmbeddixVectorStore",
        "LlamaIndexEmbedder",
        "to_core_filter",
    ]
    assert package.__all__ == sorted(package.__all__)


def test_namespace_packages_have_no_init() -> None:
    assert not (ROOT / "integrations/llama_index/__init__.py").exists()
    assert not (ROOT / "integrations/llama_index/vector_stores/__init__.py").exists()


# -- a store whose metadata exercises every operator ----------------------------------------------------
# Each field holds one type (or is missing), so LlamaIndex's reference filter (which compares with Python
# operators and raises on mixed types) is defined on every row and is the brute-force expectation.
def _metadata(i: int) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "n": i % 7,
        "x": round(i * 0.37 % 3, 2),
        "s": ["alpha", "beta", "gamma", "Alphabet", "delta"][i % 5],
        "tags": [["red"], ["red", "blue"], ["green"], [], ["blue", "green", "red"]][i % 5],
    }
    if i % 4 == 0:
        meta["opt"] = ""
    elif i % 4 == 1:
        meta["opt"] = "set"
    elif i % 4 == 2:
        meta["opt_list"] = []
    else:
        meta["opt_list"] = ["v"]
    return meta


N_NODES = 40


def _nodes() -> list[TextNode]:
    rng = np.random.default_rng(7)
    nodes = []
    for i in range(N_NODES):
        node = TextNode(
            id_=f"n{i}",
            text=f"node {i} text about {['cats', 'dogs', 'birds'][i % 3]}",
            metadata=_metadata(i),
            embedding=rng.standard_normal(DIM).tolist(),
        )
        node.relationships[NodeRelationship.SOURCE] = RelatedNodeInfo(node_id=f"doc{i % 3}")
        nodes.append(node)
    return nodes


@functools.cache
def _filter_store() -> EmbeddixVectorStore:
    store = EmbeddixVectorStore()
    store.add(_nodes())
    return store


def _leaf(single: MetadataFilters) -> Callable[[Mapping[str, Any]], bool]:
    def match(md: Mapping[str, Any]) -> bool:
        return build_metadata_filter_fn(lambda _: md, single)("")

    return match


def _reference(filters: MetadataFilters) -> Callable[[Mapping[str, Any]], bool]:
    """LlamaIndex's own filter function, extended to nested groups (which it does not support)."""
    parts: list[Callable[[Mapping[str, Any]], bool]] = []
    for f in filters.filters:
        if isinstance(f, MetadataFilters):
            parts.append(_reference(f))
        else:
            parts.append(_leaf(MetadataFilters(filters=[f])))
    cond = filters.condition or FilterCondition.AND
    if cond == FilterCondition.AND:
        return lambda md: all(p(md) for p in parts)
    if cond == FilterCondition.OR:
        return lambda md: any(p(md) for p in parts)
    return lambda md: not any(p(md) for p in parts)


def _expected_ids(filters: MetadataFilters) -> set[str]:
    ref = _reference(filters)
    return {f"n{i}" for i in range(N_NODES) if ref(_metadata(i))}


def _query_ids(store: EmbeddixVectorStore, filters: MetadataFilters) -> set[str]:
    q = VectorStoreQuery(query_embedding=[1.0] * DIM, similarity_top_k=N_NODES, filters=filters)
    return set(store.query(q).ids or [])


def _f(key: str, op: FilterOperator, value: Any) -> MetadataFilters:
    return MetadataFilters(filters=[MetadataFilter(key=key, operator=op, value=value)])


OPERATOR_CASES = [
    ("n", FilterOperator.EQ, 3),
    ("s", FilterOperator.EQ, "beta"),
    ("x", FilterOperator.EQ, 0.37),
    ("n", FilterOperator.NE, 3),
    ("opt", FilterOperator.NE, "set"),
    ("n", FilterOperator.GT, 4),
    ("x", FilterOperator.GTE, 1.11),
    ("n", FilterOperator.LT, 2),
    ("s", FilterOperator.LTE, "beta"),
    ("n", FilterOperator.IN, [1, 5, 6]),
    ("s", FilterOperator.IN, ["alpha", "delta"]),
    ("n", FilterOperator.NIN, [1, 5, 6]),
    ("opt", FilterOperator.NIN, ["set"]),
    ("tags", FilterOperator.CONTAINS, "blue"),
    ("s", FilterOperator.CONTAINS, "lph"),
    ("tags", FilterOperator.ANY, ["blue", "green"]),
    ("tags", FilterOperator.ALL, ["red", "blue"]),
    ("s", FilterOperator.TEXT_MATCH, "lpha"),
    ("s", FilterOperator.TEXT_MATCH, "Alpha"),
    ("opt", FilterOperator.IS_EMPTY, None),
    ("opt_list", FilterOperator.IS_EMPTY, None),
    ("tags", FilterOperator.IS_EMPTY, None),
    ("absent", FilterOperator.IS_EMPTY, None),
]


@pytest.mark.parametrize(
    ("key", "op", "value"), OPERATOR_CASES, ids=[f"{k}-{o.name}-{v}" for k, o, v in OPERATOR_CASES]
)
def test_every_operator_matches_the_reference(key: str, op: FilterOperator, value: Any) -> None:
    store = _filter_store()
    filters = _f(key, op, value)
    expected = _expected_ids(filters)
    assert _query_ids(store, filters) == expected
    assert {n.node_id for n in store.get_nodes(filters=filters)} == expected  # the SQL path


def test_every_operator_is_covered() -> None:
    covered = {op for _, op, _ in OPERATOR_CASES} | {FilterOperator.TEXT_MATCH_INSENSITIVE}
    assert covered == set(FilterOperator)


def test_text_match_insensitive_raises_clearly() -> None:
    with pytest.raises(InvalidFilterError, match="no case-insensitive match"):
        to_core_filter(_f("s", FilterOperator.TEXT_MATCH_INSENSITIVE, "alpha"))


@pytest.mark.parametrize("condition", list(FilterCondition))
def test_conditions_match_the_reference(condition: FilterCondition) -> None:
    filters = MetadataFilters(
        filters=[
            MetadataFilter(key="n", operator=FilterOperator.GTE, value=3),
            MetadataFilter(key="tags", operator=FilterOperator.CONTAINS, value="red"),
        ],
        condition=condition,
    )
    assert _query_ids(_filter_store(), filters) == _expected_ids(filters)


def test_nested_groups_match_the_reference() -> None:
    filters = MetadataFilters(
        filters=[
            MetadataFilter(key="s", operator=FilterOperator.NE, value="gamma"),
            MetadataFilters(
                filters=[
                    MetadataFilter(key="n", operator=FilterOperator.LT, value=2),
                    MetadataFilters(
                        filters=[MetadataFilter(key="tags", operator=FilterOperator.ANY, value=["green"])],
                        condition=FilterCondition.NOT,
                    ),
                ],
                condition=FilterCondition.OR,
            ),
        ],
        condition=FilterCondition.AND,
    )
    assert _query_ids(_filter_store(), filters) == _expected_ids(filters)


_LEAVES = st.sampled_from([MetadataFilter(key=k, operator=o, value=v) for k, o, v in OPERATOR_CASES])


def _groups(children: st.SearchStrategy[Any]) -> st.SearchStrategy[MetadataFilters]:
    return st.builds(
        lambda fs, c: MetadataFilters(filters=fs, condition=c),
        st.lists(children, min_size=1, max_size=3),
        st.sampled_from(list(FilterCondition)),
    )


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.recursive(_groups(_LEAVES), _groups, max_leaves=8))
def test_random_filter_trees_match_the_reference(filters: MetadataFilters) -> None:
    assert _query_ids(_filter_store(), filters) == _expected_ids(filters)


def test_none_values_and_shapes() -> None:
    assert to_core_filter(None) is None
    assert to_core_filter(MetadataFilters(filters=[])) is None
    assert to_core_filter(_f("a", FilterOperator.EQ, None)) == {"a": {"$exists": False}}
    assert to_core_filter(_f("a", FilterOperator.IN, "x")) == {"a": {"$in": ["x"]}}
    with pytest.raises(InvalidFilterError, match="takes one value"):
        to_core_filter(_f("a", FilterOperator.GT, [1, 2]))
    with pytest.raises(InvalidFilterError, match="needs a value"):
        to_core_filter(_f("a", FilterOperator.GT, None))


# -- query modes ---------------------------------------------------------------------------------------
@pytest.fixture
def text_store() -> Iterator[EmbeddixVectorStore]:
    emb = EmbeddixEmbedding("hash")
    texts = {
        "moon": "The Moon orbits the Earth once every 27 days.",
        "moon2": "The Moon orbits the Earth; it takes about 27 days.",
        "bees": "Honeybees dance to tell the hive where flowers are.",
        "tea": "Green tea is brewed at about 80 degrees Celsius.",
        "everest": "Mount Everest is the highest mountain above sea level.",
    }
    nodes = [
        TextNode(id_=k, text=v, metadata={"k": k}, embedding=emb.get_text_embedding(v))
        for k, v in texts.items()
    ]
    store = EmbeddixVectorStore()
    store.add(nodes)
    yield store
    store.close()


def _q(text: str, **kwargs: Any) -> VectorStoreQuery:
    emb = EmbeddixEmbedding("hash")
    return VectorStoreQuery(query_embedding=emb.get_query_embedding(text), query_str=text, **kwargs)


def test_default_mode_returns_nodes_scores_ids(text_store: EmbeddixVectorStore) -> None:
    res = text_store.query(_q("How long does the Moon take to orbit the Earth?", similarity_top_k=2))
    assert set(res.ids or []) == {"moon", "moon2"}
    assert res.nodes is not None and res.nodes[0].get_content() in {
        "The Moon orbits the Earth once every 27 days.",
        "The Moon orbits the Earth; it takes about 27 days.",
    }
    assert res.similarities == sorted(res.similarities or [], reverse=True)
    tuned = text_store.query(
        _q("How long does the Moon take to orbit the Earth?", similarity_top_k=2),
        ef=32,
        recall=0.95,
        deadline_ms=1000.0,
    )
    assert tuned.ids == res.ids


def test_mmr_mode(text_store: EmbeddixVectorStore) -> None:
    plain = text_store.query(_q("Moon orbits Earth days", similarity_top_k=2))
    assert set(plain.ids or []) == {"moon", "moon2"}
    diverse = text_store.query(
        _q("Moon orbits Earth days", similarity_top_k=2, mode=VectorStoreQueryMode.MMR, mmr_threshold=0.2)
    )
    assert (
        diverse.ids is not None
        and diverse.ids[0] in {"moon", "moon2"}
        and diverse.ids[1] not in {"moon", "moon2"}
    )
    col = text_store.client
    assert col is not None
    q = _q("Moon orbits Earth days")
    core = col.search(q.query_embedding, 2, mmr_lambda=0.2)
    assert diverse.ids == [h.id for h in core]
    via_kwargs = text_store.query(
        _q("Moon orbits Earth days", similarity_top_k=2, mode=VectorStoreQueryMode.MMR),
        mmr_threshold=1.0,
        mmr_prefetch_k=5,
    )
    assert set(via_kwargs.ids or []) == {"moon", "moon2"}


def test_hybrid_alpha_maps_to_text_weight(text_store: EmbeddixVectorStore) -> None:
    query = "Everest highest mountain"
    vector = text_store.query(_q(query, similarity_top_k=3))
    pure_vector = text_store.query(_q(query, similarity_top_k=3, mode=VectorStoreQueryMode.HYBRID, alpha=1.0))
    assert pure_vector.ids == vector.ids
    text = text_store.query(_q(query, similarity_top_k=3, mode=VectorStoreQueryMode.TEXT_SEARCH))
    pure_text = text_store.query(_q(query, similarity_top_k=3, mode=VectorStoreQueryMode.HYBRID, alpha=0.0))
    assert pure_text.ids == text.ids and text.ids and text.ids[0] == "everest"
    mixed = text_store.query(_q(query, similarity_top_k=2, mode=VectorStoreQueryMode.HYBRID))
    assert mixed.ids is not None and mixed.ids[0] == "everest"
    with pytest.raises(InvalidArgumentError, match="alpha must be between 0"):
        text_store.query(_q(query, mode=VectorStoreQueryMode.HYBRID, alpha=1.5))


def test_text_and_sparse_modes(text_store: EmbeddixVectorStore) -> None:
    q = VectorStoreQuery(query_str="honeybees flowers", similarity_top_k=1, mode=VectorStoreQueryMode.SPARSE)
    assert text_store.query(q).ids == ["bees"]
    q = VectorStoreQuery(
        query_str="tea",
        mode=VectorStoreQueryMode.TEXT_SEARCH,
        sparse_top_k=3,
        filters=_f("k", FilterOperator.NE, "tea"),
    )
    assert text_store.query(q).ids == []
    with pytest.raises(InvalidArgumentError, match="needs query_str"):
        text_store.query(VectorStoreQuery(mode=VectorStoreQueryMode.TEXT_SEARCH))


def test_unsupported_queries_raise(text_store: EmbeddixVectorStore) -> None:
    with pytest.raises(InvalidArgumentError, match="not supported"):
        text_store.query(_q("x", mode=VectorStoreQueryMode.SVM))
    with pytest.raises(InvalidArgumentError, match="needs query_embedding"):
        text_store.query(VectorStoreQuery(similarity_top_k=1))


# -- node_ids / doc_ids restrictions (issue #15) -------------------------------------------------------
@pytest.mark.parametrize("mode", [VectorStoreQueryMode.DEFAULT, VectorStoreQueryMode.HYBRID])
def test_node_ids_restrict_the_hits(text_store: EmbeddixVectorStore, mode: VectorStoreQueryMode) -> None:
    query = "How long does the Moon take to orbit the Earth?"
    # The two moon nodes are the nearest; restricted to the others, the search must look past them.
    res = text_store.query(_q(query, similarity_top_k=2, mode=mode, node_ids=["tea", "bees", "absent"]))
    assert set(res.ids or []) == {"tea", "bees"}
    assert [n.node_id for n in res.nodes or []] == res.ids
    one = text_store.query(_q(query, similarity_top_k=3, mode=mode, node_ids=["moon2"]))
    assert one.ids == ["moon2"]
    unrestricted = text_store.query(_q(query, similarity_top_k=5, mode=mode))
    covering = text_store.query(
        _q(query, similarity_top_k=5, mode=mode, node_ids=list(unrestricted.ids or []))
    )
    assert covering.ids == unrestricted.ids and len(covering.ids or []) == 5


def test_node_ids_with_text_mode_and_filters(text_store: EmbeddixVectorStore) -> None:
    q = VectorStoreQuery(
        query_str="Moon Earth days", mode=VectorStoreQueryMode.TEXT_SEARCH, sparse_top_k=5, node_ids=["moon2"]
    )
    assert text_store.query(q).ids == ["moon2"]
    res = text_store.query(
        _q(
            "Moon",
            similarity_top_k=5,
            node_ids=["moon", "moon2", "tea"],
            filters=_f("k", FilterOperator.NE, "moon"),
        )
    )
    assert set(res.ids or []) == {"moon2", "tea"}


def test_empty_or_none_node_ids_and_doc_ids_are_no_restriction(text_store: EmbeddixVectorStore) -> None:
    query = "Everest highest mountain"
    plain = text_store.query(_q(query, similarity_top_k=5))
    assert len(plain.ids or []) == 5
    for restriction in ({"node_ids": []}, {"doc_ids": []}, {"node_ids": None, "doc_ids": None}):
        assert text_store.query(_q(query, similarity_top_k=5, **restriction)).ids == plain.ids


def _index(store: EmbeddixVectorStore, docs: list[Document], override: bool) -> VectorStoreIndex:
    return VectorStoreIndex.from_documents(
        docs,
        storage_context=StorageContext.from_defaults(vector_store=store),
        embed_model=EmbeddixEmbedding("hash"),
        store_nodes_override=override,
    )


@pytest.mark.parametrize("override", [False, True], ids=["no-docstore", "store_nodes_override"])
def test_vector_store_index_retrieves_with_and_without_docstore(override: bool) -> None:
    store = EmbeddixVectorStore()
    docs = [Document(text=t, id_=k, metadata={"topic": k}) for k, t in DOCS]
    index = _index(store, docs, override)
    # With a docstore the index keeps its node list and sends it as VectorStoreQuery.node_ids.
    assert bool(index.index_struct.nodes_dict) is override
    hits = index.as_retriever(similarity_top_k=2).retrieve("honeybees flowers waggle dance")
    assert hits[0].node.ref_doc_id == "bees" and hits[0].node.metadata == {"topic": "bees"}
    assert len(hits) == 2
    only_tea = index.as_retriever(similarity_top_k=2, doc_ids=["tea"]).retrieve("honeybees flowers")
    assert [h.node.ref_doc_id for h in only_tea] == ["tea"]
    moon_node = next(
        h.node.node_id
        for h in index.as_retriever(similarity_top_k=3).retrieve("Moon")
        if h.node.ref_doc_id == "moon"
    )
    retriever = VectorIndexRetriever(index, similarity_top_k=3, node_ids=[moon_node])
    assert [h.node.node_id for h in retriever.retrieve("honeybees flowers waggle dance")] == [moon_node]
    hybrid = index.as_retriever(similarity_top_k=1, vector_store_query_mode="hybrid", alpha=0.5)
    assert [h.node.ref_doc_id for h in hybrid.retrieve("honeybees waggle dance")] == ["bees"]
    store.close()


def test_two_indexes_on_one_collection_see_their_own_nodes() -> None:
    store = EmbeddixVectorStore()
    first = _index(store, [Document(text=t, id_=k) for k, t in DOCS[:1]], True)
    second = _index(store, [Document(text=t, id_=k) for k, t in DOCS[1:]], True)
    col = store.client
    assert col is not None and len(col) == 3
    # Every node of the second index is nearer to this query than the first index's one node.
    question = "honeybees flowers waggle dance green tea water degrees"
    assert [h.node.ref_doc_id for h in first.as_retriever(similarity_top_k=2).retrieve(question)] == ["moon"]
    assert {h.node.ref_doc_id for h in second.as_retriever(similarity_top_k=5).retrieve(question)} == {
        "bees",
        "tea",
    }
    store.close()


async def test_async_query_and_add(text_store: EmbeddixVectorStore) -> None:
    res = await text_store.aquery(_q("Everest mountain", similarity_top_k=1))
    assert res.ids == ["everest"]
    node = TextNode(
        id_="new", text="new node", embedding=EmbeddixEmbedding("hash").get_text_embedding("new node")
    )
    assert await text_store.async_add([node]) == ["new"]
    assert [n.node_id for n in await text_store.aget_nodes(["new"])] == ["new"]
    await text_store.adelete_nodes(["new"])
    assert await text_store.aget_nodes(["new"]) == []


# -- deletes and gets ----------------------------------------------------------------------------------
def test_delete_by_ref_doc_id_and_nodes() -> None:
    store = EmbeddixVectorStore()
    store.add(_nodes())
    store.delete("doc1")
    left = store.get_nodes()
    assert len(left) == N_NODES - len(range(1, N_NODES, 3))
    assert all(n.ref_doc_id in {"doc0", "doc2"} for n in left)
    store.delete_nodes(["n0", "n3"])
    assert store.get_nodes(["n0", "n3", "n2"])[0].node_id == "n2"
    store.delete_nodes(filters=_f("n", FilterOperator.EQ, 2))
    assert not store.get_nodes(filters=_f("n", FilterOperator.EQ, 2))
    store.delete_nodes(["n5", "n6"], filters=_f("n", FilterOperator.EQ, 5))  # only n5 matches
    assert [n.node_id for n in store.get_nodes(["n5", "n6"])] == ["n6"]
    with pytest.raises(InvalidArgumentError, match="use clear"):
        store.delete_nodes()
    col = store.client
    assert store.clear() is None
    assert store.get_nodes() == []
    assert store.query(VectorStoreQuery(query_embedding=[1.0] * DIM, similarity_top_k=3)).ids == []
    # clear() is the core's Collection.clear(): the collection and its settings stay.
    assert store.client is col and col is not None and len(col) == 0


def test_llamaindex_keys_filter_like_before() -> None:
    # LlamaIndex's conventions: ref_doc_id / doc_id / document_id / _node_type in every record's metadata.
    store = _filter_store()
    expected = {f"n{i}" for i in range(N_NODES) if i % 3 == 1}
    for key in ("ref_doc_id", "doc_id", "document_id"):
        assert _query_ids(store, _f(key, FilterOperator.EQ, "doc1")) == expected
    assert _query_ids(store, _f("_node_type", FilterOperator.EQ, "TextNode")) == {
        f"n{i}" for i in range(N_NODES)
    }
    q = VectorStoreQuery(query_embedding=[1.0] * DIM, similarity_top_k=N_NODES, doc_ids=["doc1"])
    assert set(store.query(q).ids or []) == expected


def test_get_nodes_round_trips_nodes() -> None:
    store = EmbeddixVectorStore(dim=DIM)
    assert store.client is not None and store.client.dim == DIM
    original = _nodes()[:3]
    store.add(original)
    got = store.get_nodes(["n2", "n0"], filters=_f("n", FilterOperator.IN, [0, 2]))
    assert [n.node_id for n in got] == ["n2", "n0"]
    for node in got:
        src = original[int(node.node_id[1:])]
        assert node.get_content() == src.get_content()
        assert node.metadata == src.metadata
        assert node.ref_doc_id == src.ref_doc_id
        assert node.embedding == pytest.approx(src.embedding, abs=1e-6)


def test_add_without_embedding_raises() -> None:
    with pytest.raises(InvalidArgumentError, match="has no embedding"):
        EmbeddixVectorStore().add([TextNode(id_="x", text="no vector")])


def test_wraps_a_core_collection_written_by_others() -> None:
    db = Embeddix.open(None)
    col = db.create_collection("plain", dim=384)
    emb = HashEmbedder()
    col.add(
        ["a", "b"],
        emb.embed_documents(["solar panels", "wind turbines"]),
        ["solar panels", "wind turbines"],
        [{"kind": "sun"}, {"kind": "air"}],
    )
    store = EmbeddixVectorStore(collection=col)
    assert store.collection_name == "plain" and store.dim == 384
    res = store.query(VectorStoreQuery(query_embedding=emb.embed_query("solar").tolist(), similarity_top_k=1))
    assert res.nodes is not None
    assert res.nodes[0].node_id == "a" and res.nodes[0].get_content() == "solar panels"
    assert res.nodes[0].metadata == {"kind": "sun"}
    db.close()


def test_metric_and_dim_must_match_an_existing_collection(tmp_path: Path) -> None:
    EmbeddixVectorStore(path=tmp_path, dim=4).close()
    with pytest.raises(InvalidArgumentError, match="exists with dim=4"):
        EmbeddixVectorStore(path=tmp_path, dim=5)
    with pytest.raises(InvalidArgumentError, match="metric='cosine'"):
        EmbeddixVectorStore(path=tmp_path, metric="l2")


# -- embeddings ----------------------------------------------------------------------------------------
def test_embeddix_embedding_and_llamaindex_embedder() -> None:
    emb = EmbeddixEmbedding("hash-32")
    assert emb.model_name == "hash-32-v1" and emb.class_name() == "EmbeddixEmbedding"
    batch = emb.get_text_embedding_batch(["a", "b c"])
    assert len(batch) == 2 and len(batch[0]) == 32
    assert emb.get_query_embedding("b c") == pytest.approx(batch[1])
    core = LlamaIndexEmbedder(emb)
    assert core.model_id == "hash-32-v1" and core.dim == 32
    mock = LlamaIndexEmbedder(MockEmbedding(embed_dim=5))
    assert mock.model_id == "MockEmbedding" and mock.dim == 5
    mat = mock.embed_documents(["x", "y"])
    assert mat.shape == (2, 5) and mat.dtype == np.float32
    with pytest.raises(InvalidArgumentError):
        mock.embed_documents("x")  # type: ignore[arg-type]


async def test_embeddix_embedding_async() -> None:
    emb = EmbeddixEmbedding("hash-16")
    assert await emb.aget_query_embedding("x") == pytest.approx(emb.get_query_embedding("x"))
    assert len(await emb.aget_text_embedding_batch(["x", "y"])) == 2


async def test_llamaindex_embedder_async() -> None:
    core = LlamaIndexEmbedder(EmbeddixEmbedding("hash-16"))
    assert (await core.aembed_documents(["x", "y"])).tolist() == core.embed_documents(["x", "y"]).tolist()
    assert (await core.aembed_query("x")).tolist() == core.embed_query("x").tolist()
    with pytest.raises(InvalidArgumentError):
        await core.aembed_documents("x")  # type: ignore[arg-type]


# -- index on disk, reopened in a new process ----------------------------------------------------------
DOCS = [
    ("moon", "The Moon orbits the Earth every 27 days and always shows the same face."),
    ("bees", "Honeybees tell each other where flowers are with a waggle dance."),
    ("tea", "Green tea should be brewed with water at about 80 degrees Celsius."),
]

REOPEN = textwrap.dedent(
    """
    import json, sys
    from llama_index.core import VectorStoreIndex
    from llama_index.vector_stores.embeddix import EmbeddixEmbedding, EmbeddixVectorStore

    store = EmbeddixVectorStore(path=sys.argv[1], collection_name="kb")
    index = VectorStoreIndex.from_vector_store(store, embed_model=EmbeddixEmbedding(sys.argv[2]))
    hits = index.as_retriever(similarity_top_k=2).retrieve(sys.argv[3])
    rows = [[h.node.node_id, h.node.get_content(), h.node.ref_doc_id, h.node.metadata] for h in hits]
    print(json.dumps(rows))
    store.close()
    """
)


def _index_and_reopen(
    tmp_path: Path, embedder: str, question: str
) -> tuple[list[list[Any]], list[list[Any]]]:
    store = EmbeddixVectorStore(path=tmp_path, collection_name="kb")
    docs = [Document(text=t, id_=k, metadata={"topic": k}) for k, t in DOCS]
    index = VectorStoreIndex.from_documents(
        docs,
        storage_context=StorageContext.from_defaults(vector_store=store),
        embed_model=EmbeddixEmbedding(embedder),
    )
    here = [
        [h.node.node_id, h.node.get_content(), h.node.ref_doc_id, h.node.metadata]
        for h in index.as_retriever(similarity_top_k=2).retrieve(question)
    ]
    store.close()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "integrations")])}
    out = subprocess.run(
        [sys.executable, "-c", REOPEN, str(tmp_path), embedder, question],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    return here, json.loads(out.stdout.strip().splitlines()[-1])


def test_index_reopened_in_a_new_process(tmp_path: Path) -> None:
    here, there = _index_and_reopen(tmp_path, "hash", "honeybees flowers waggle dance")
    assert there == here
    assert here[0][2] == "bees" and here[0][3] == {"topic": "bees"}


@pytest.mark.slow
def test_end_to_end_with_minilm(tmp_path: Path) -> None:
    here, there = _index_and_reopen(tmp_path, "minilm", "Which insects communicate by dancing?")
    assert there == here
    assert here[0][2] == "bees"
