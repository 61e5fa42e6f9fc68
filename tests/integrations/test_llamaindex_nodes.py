"""llama_index.vector_stores.embeddix: nodes rebuilt from stored JSON are LlamaIndex's own, and fresh.

The store rebuilds nodes without pydantic validation when the stored JSON has the exact shape
``node_to_metadata_dict`` writes (see ``_nodes.py``). These tests hold that shortcut to LlamaIndex's
loader (``metadata_dict_to_node``): same classes, values, types, field order and fields set for every
node it takes, the loader's own result (or error) for every node it declines, and no object shared
between two results.
"""

from __future__ import annotations

import json
import math
import struct
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from llama_index.core.schema import (
    Document,
    ImageNode,
    IndexNode,
    NodeRelationship,
    RelatedNodeInfo,
    TextNode,
)
from llama_index.core.vector_stores.types import VectorStoreQuery
from llama_index.core.vector_stores.utils import metadata_dict_to_node, node_to_metadata_dict
from llama_index.vector_stores.embeddix import EmbeddixVectorStore
from llama_index.vector_stores.embeddix import _nodes as nodes_module
from llama_index.vector_stores.embeddix._nodes import node_from_json, nodes_from_records, same
from llama_index.vector_stores.embeddix._store import _float32

from embeddix_core import DimensionMismatchError, Hit, InvalidVectorError, Record

DIM = 8
SOURCE = NodeRelationship.SOURCE


def _loader(content: str, node_type: Any, text: str, vector: np.ndarray | None) -> Any:
    """What LlamaIndex's own loader makes of a stored node (the behaviour to keep)."""
    node = metadata_dict_to_node({"_node_content": content, "_node_type": node_type}, text=text)
    if vector is not None:
        node.embedding = vector.tolist()
    return node


def _both(content: str, node_type: Any = "TextNode", text: str = "the text", vector: Any = None) -> None:
    """The store's node equals the loader's, strictly, by both entry points; or both raise alike."""
    metadata = {"_node_content": content, "_node_type": node_type, "ref_doc_id": "None"}
    try:
        want = _loader(content, node_type, text, vector)
    except Exception as exc:  # the loader's error is the expected behaviour
        with pytest.raises(type(exc)):
            nodes_from_records([Record("id", vector, text, dict(metadata))])
        with pytest.raises(type(exc)):
            node_from_json(content, node_type, text, None if vector is None else vector.tolist())
        return
    got = [
        nodes_from_records([Record("id", vector, text, dict(metadata))])[0],
        nodes_from_records([Hit("id", 0.5, 0.5, text, dict(metadata), "cosine", vector)])[0],
        node_from_json(content, node_type, text, None if vector is None else vector.tolist()),
    ]
    for node in got:
        assert same(node, want), (node, want)
        assert node.model_dump_json() == want.model_dump_json()
        assert node.hash == want.hash
        assert node.ref_doc_id == want.ref_doc_id


def _stored(node: Any) -> tuple[str, str]:
    md = node_to_metadata_dict(node, remove_text=True)
    return md["_node_content"], md["_node_type"]


def test_the_fast_path_is_on() -> None:
    # Otherwise every test below would only compare the loader with itself.
    assert nodes_module._fast


def test_same_is_strict() -> None:
    a = TextNode(id_="a", text="t", metadata={"x": 1})
    assert same(a, a.model_copy(deep=True))
    assert not same(a, TextNode(id_="a", text="t", metadata={"x": 1.0}))  # 1 == 1.0, but not the same
    assert not same(a, TextNode(id_="a", text="t", metadata={"x": True}))
    b = a.model_copy(deep=True)
    b.__pydantic_fields_set__.discard("metadata")
    assert not same(a, b)
    c = a.model_copy(deep=True)
    object.__setattr__(c, "__dict__", dict(reversed(list(c.__dict__.items()))))
    assert not same(a, c)  # field order shows in model_dump_json
    assert not same({"a": 1, "b": 2}, {"b": 2, "a": 1})
    assert same(float("nan"), float("nan"))


NODES = [
    TextNode(id_="plain", text="hello", metadata={"tag": 1, "source": "docs", "importance": 0.371025}),
    TextNode(id_="empty"),
    TextNode(
        id_="rich",
        text="a chunk",
        metadata={
            "file": "a.txt",
            "nested": {"a": [1, 2.5, "x", None, {"b": False}]},
            "big": 2**70,
            "neg": -(2**63),
            "tiny": 5e-324,
            "unicode": 'naïve café 😀 \u2028 "quoted" \\ back',
            "": "empty key",
        },
        excluded_embed_metadata_keys=["file"],
        excluded_llm_metadata_keys=["file", "nested"],
        start_char_idx=0,
        end_char_idx=7,
        metadata_template="{key}={value}",
        metadata_separator="; ",
        text_template="{content}",
        mimetype="text/markdown",
        relationships={
            SOURCE: Document(text="whole", metadata={"file": "a.txt"}).as_related_node_info(),
            NodeRelationship.PREVIOUS: RelatedNodeInfo(node_id="prev", metadata={"k": [1]}),
            NodeRelationship.NEXT: RelatedNodeInfo(node_id="next", hash="h"),
            NodeRelationship.PARENT: RelatedNodeInfo(node_id="parent", node_type="1"),
            NodeRelationship.CHILD: [RelatedNodeInfo(node_id="c1"), RelatedNodeInfo(node_id="c2")],
        },
    ),
    TextNode(id_="only-start", text="x", start_char_idx=5),
    TextNode(id_="children", text="x", relationships={NodeRelationship.CHILD: []}),
]


@pytest.mark.parametrize("node", NODES, ids=[n.node_id for n in NODES])
@pytest.mark.parametrize("text", ["", "the document text"])
@pytest.mark.parametrize("with_vector", [False, True])
def test_written_nodes_match_the_loader(node: TextNode, text: str, with_vector: bool) -> None:
    content, node_type = _stored(node)
    vector = np.array([0.5, -0.25, 1e-3], np.float32) if with_vector else None
    _both(content, node_type, text, vector)


_json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=8,
)
_related = st.builds(
    RelatedNodeInfo,
    node_id=st.text(max_size=5),
    node_type=st.none() | st.sampled_from(["1", "2", "4", "other"]),
    metadata=st.dictionaries(st.text(max_size=5), _json_values, max_size=2),
    hash=st.none() | st.text(max_size=5),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    node_id=st.text(max_size=10),
    metadata=st.dictionaries(st.text(max_size=8), _json_values, max_size=5),
    excluded=st.lists(st.text(max_size=5), max_size=3),
    start=st.none() | st.integers(),
    end=st.none() | st.integers(min_value=0, max_value=10**6),
    relationships=st.tuples(
        st.dictionaries(st.sampled_from(list(NodeRelationship)[:4]), _related, max_size=2),
        st.none() | st.lists(_related, max_size=2),
    ).map(lambda t: t[0] if t[1] is None else {**t[0], NodeRelationship.CHILD: t[1]}),
    text=st.text(max_size=20),
)
def test_random_nodes_match_the_loader(
    node_id: str,
    metadata: dict[str, Any],
    excluded: list[str],
    start: int | None,
    end: int | None,
    relationships: dict[NodeRelationship, Any],
    text: str,
) -> None:
    node = TextNode(
        id_=node_id,
        metadata=metadata,
        excluded_llm_metadata_keys=excluded,
        start_char_idx=start,
        end_char_idx=end,
        relationships=relationships,
    )
    _both(*_stored(node), text=text)


def _edited(node: TextNode, **changes: Any) -> str:
    data = json.loads(_stored(node)[0])
    for key, value in changes.items():
        if value is _DROP:
            del data[key]
        else:
            data[key] = value
    return json.dumps(data)


_DROP = object()
_RELATED = {"node_id": "d", "node_type": "4", "metadata": {}, "hash": None, "class_name": "RelatedNodeInfo"}


@pytest.mark.parametrize(
    "content",
    [
        # Shapes the shortcut declines: the loader decides (coerces, fills defaults, ignores, or raises).
        _edited(NODES[0], start_char_idx="5"),
        _edited(NODES[0], start_char_idx=5.0),
        _edited(NODES[0], start_char_idx=True),
        _edited(NODES[0], end_char_idx=2**80),
        _edited(NODES[0], id_=5),
        _edited(NODES[0], text=None),
        _edited(NODES[0], mimetype=None),
        _edited(NODES[0], metadata=[]),
        _edited(NODES[0], embedding=[1, 2.5]),
        _edited(NODES[0], excluded_llm_metadata_keys=["a", 1]),
        _edited(NODES[0], excluded_embed_metadata_keys="a"),
        _edited(NODES[0], relationships={"9": _RELATED}),
        _edited(NODES[0], relationships={"1": {**_RELATED, "node_type": 4}}),
        _edited(NODES[0], relationships={"1": {**_RELATED, "extra": 1}}),
        _edited(NODES[0], relationships={"1": {k: v for k, v in _RELATED.items() if k != "hash"}}),
        _edited(NODES[0], relationships={"1": [_RELATED, "x"]}),
        _edited(NODES[0], relationships={"1": "x"}),
        _edited(NODES[0], relationships=[]),
        _edited(NODES[0], unknown_field=1),
        _edited(NODES[0], mimetype=_DROP),
        _edited(NODES[0], class_name=_DROP),
        _edited(NODES[0], class_name=None),
        _edited(NODES[0], class_name="Document"),
        _edited(NODES[0], metadata={"x": float("nan"), "y": float("inf")}),  # orjson refuses NaN
        _edited(NODES[0], metadata={"big": 10**30}),  # beyond orjson's integers
        json.dumps(dict(reversed(list(json.loads(_stored(NODES[2])[0]).items())))),  # keys reordered
        json.dumps({"id_": "x", "text": ""}),
        "null",
        "not json",
        "",
    ],
)
def test_other_shapes_get_the_loaders_result(content: str) -> None:
    _both(content)
    _both(content, vector=np.array([1.0, 2.0], np.float32))


@pytest.mark.parametrize(
    "node",
    [
        Document(text="a whole document", metadata={"file": "a.txt"}),
        ImageNode(id_="img", text="caption", image_url="http://example.com/a.png", metadata={"k": 1}),
        IndexNode(id_="idx", text="summary", index_id="other-index"),
    ],
    ids=["Document", "ImageNode", "IndexNode"],
)
def test_other_node_classes_get_the_loaders_result(node: Any) -> None:
    _both(*_stored(node))


def _vec(i: int) -> list[float]:
    rng = np.random.default_rng(i)
    return rng.standard_normal(DIM).astype(np.float32).tolist()


def _store_with_rich_nodes() -> tuple[EmbeddixVectorStore, list[TextNode]]:
    # Record metadata is flat (the core's rule); the relationships, inside the node JSON, nest freely.
    doc = Document(text="the source", metadata={"file": "a.txt", "pages": [1, 2], "nested": {"k": [1]}})
    nodes = [
        TextNode(
            id_=f"n{i}",
            text=f"text {i}",
            metadata={"i": i, "tags": ["a", "b"], "w": 0.5},
            excluded_llm_metadata_keys=["i"],
            relationships={
                SOURCE: doc.as_related_node_info(),
                NodeRelationship.CHILD: [RelatedNodeInfo(node_id="c", metadata={"m": [1]})],
            },
            embedding=_vec(i),
        )
        for i in range(6)
    ]
    store = EmbeddixVectorStore(dim=DIM)
    store.add(nodes)
    return store, nodes


def _mutate(node: Any) -> None:
    node.metadata["i"] = -1
    node.metadata["tags"].append("x")
    node.metadata["new"] = "key"
    node.excluded_llm_metadata_keys.append("z")
    node.excluded_embed_metadata_keys.append("z")
    source = node.relationships[SOURCE]
    source.metadata["file"] = "changed"
    source.metadata["pages"].append(3)
    source.metadata["nested"]["k"].append(2)
    source.node_id = "other"
    node.relationships[NodeRelationship.CHILD][0].metadata["m"].append(2)
    node.relationships[NodeRelationship.CHILD].append(RelatedNodeInfo(node_id="d"))
    node.relationships[NodeRelationship.NEXT] = RelatedNodeInfo(node_id="x")
    node.text = "changed"
    node.id_ = "changed"
    node.metadata_template = "changed"
    node.__pydantic_fields_set__.discard("mimetype")
    if node.embedding is not None:
        node.embedding.append(1.0)
        node.embedding[0] = 99.0


def test_mutating_returned_nodes_does_not_change_later_results() -> None:
    store, originals = _store_with_rich_nodes()
    query = VectorStoreQuery(query_embedding=_vec(0), similarity_top_k=6)
    first = store.query(query)
    assert first.nodes is not None and len(first.nodes) == 6
    before = [n.model_dump_json() for n in first.nodes]
    fetched = store.get_nodes(["n1", "n2"])
    fetched_before = [n.model_dump_json() for n in fetched]
    for node in [*first.nodes, *fetched]:
        _mutate(node)
    second = store.query(query)
    assert second.ids == first.ids
    assert second.nodes is not None
    assert [n.model_dump_json() for n in second.nodes] == before
    assert [n.model_dump_json() for n in store.get_nodes(["n1", "n2"])] == fetched_before
    by_id = {n.node_id: n for n in originals}
    for node in second.nodes:
        src = by_id[node.node_id]
        assert node.text == src.text and node.metadata == src.metadata
        assert node.relationships == src.relationships and node.ref_doc_id == src.ref_doc_id
    store.close()


def test_two_results_share_no_mutable_object() -> None:
    store, _ = _store_with_rich_nodes()
    query = VectorStoreQuery(query_embedding=_vec(3), similarity_top_k=6)
    a, b = store.query(query).nodes, store.query(query).nodes
    assert a is not None and b is not None

    def containers(node: Any) -> list[Any]:
        out = [node, node.__dict__, node.__pydantic_fields_set__, node.metadata, node.relationships]
        out += [node.excluded_embed_metadata_keys, node.excluded_llm_metadata_keys]
        out += [node.metadata["tags"]]
        source = node.relationships[SOURCE]
        out += [source, source.__dict__, source.metadata, source.metadata["pages"]]
        out += [source.metadata["nested"], source.metadata["nested"]["k"]]
        out += [node.relationships[NodeRelationship.CHILD], node.relationships[NodeRelationship.CHILD][0]]
        return out

    for x, y in zip(a, b, strict=True):
        assert same(x, y)
        for cx, cy in zip(containers(x), containers(y), strict=True):
            assert cx is not cy
    store.close()


def test_query_results_are_the_loaders_nodes() -> None:
    store, _ = _store_with_rich_nodes()
    col = store.client
    assert col is not None
    query = VectorStoreQuery(query_embedding=_vec(1), similarity_top_k=4)
    res = store.query(query)
    hits = col.search(np.asarray(_vec(1), np.float32), 4)
    assert res.ids == [h.id for h in hits]
    assert res.similarities == [h.score for h in hits]
    assert res.nodes is not None
    for node, hit in zip(res.nodes, hits, strict=True):
        want = metadata_dict_to_node(hit.metadata, text=hit.document)
        assert same(node, want)
    store.close()


# -- the query vector ------------------------------------------------------------------------------------
def test_float32_gives_numpys_values() -> None:
    rng = np.random.default_rng(7)
    for _ in range(200):
        values = (rng.standard_normal(384) * 10.0 ** rng.integers(-45, 38, 384)).tolist()
        got = _float32(values)
        want = np.asarray(values, dtype=np.float32)
        assert got.dtype == np.float32 and got.shape == (384,) and got.flags.writeable
        assert np.array_equal(got.view(np.uint32), want.view(np.uint32))
    mixed = [1, True, np.float64(0.5), np.float32(0.25), 2**70, -0.0]
    assert np.array_equal(_float32(mixed), np.asarray(mixed, dtype=np.float32))
    assert math.copysign(1.0, float(_float32([-0.0])[0])) == -1.0
    assert _float32([]).shape == (0,)


@pytest.mark.parametrize("vector", [[[1.0] * DIM], ["1.0"] * DIM, [None] * DIM, [10**400] * DIM, [1j] * DIM])
def test_float32_leaves_other_inputs_to_the_core(vector: list[Any]) -> None:
    assert _float32(vector) is vector


def test_query_vector_errors_are_the_cores() -> None:
    store, _ = _store_with_rich_nodes()
    with pytest.raises(DimensionMismatchError):
        store.query(VectorStoreQuery(query_embedding=[1.0] * (DIM + 1), similarity_top_k=2))
    with pytest.raises(InvalidVectorError):
        store.query(VectorStoreQuery(query_embedding=[float("nan")] * DIM, similarity_top_k=2))
    with pytest.raises(InvalidVectorError):
        store.query(VectorStoreQuery(query_embedding=["x"] * DIM, similarity_top_k=2))
    as_strings = store.query(VectorStoreQuery(query_embedding=[str(v) for v in _vec(2)], similarity_top_k=2))
    assert as_strings.ids == store.query(VectorStoreQuery(query_embedding=_vec(2), similarity_top_k=2)).ids
    store.close()


def test_struct_packs_doubles_like_python() -> None:
    # _float32 relies on "d" packing being exact and native-endian, as numpy reads it.
    assert np.frombuffer(struct.pack("2d", 0.1, -2.5), np.float64).tolist() == [0.1, -2.5]
