"""llama_index.vector_stores.embeddix: stored nodes come back as LlamaIndex's own, in both layouts, fresh.

The store rebuilds nodes without pydantic validation when a record has the exact shape it writes (see
``_nodes.py``): layout 2 (the node's metadata as the record's, other fields in ``_node_fields``), and
layout 1 (``node_to_metadata_dict``'s ``_node_content`` JSON, what the store wrote before layout 2). These
tests hold that shortcut to LlamaIndex's loader (``metadata_dict_to_node``) reading the node's layout-1
JSON: same classes, values, types, field order and fields set for every node it takes, the loader's own
result (or error) for every node it declines, and no object shared between two results.
"""

from __future__ import annotations

import functools
import json
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
from llama_index.vector_stores.embeddix._nodes import (
    FIELDS_KEY,
    LAYOUT_KEY,
    LAYOUT_VALUES,
    RESERVED_KEYS,
    _layout_json,
    node_from_json,
    nodes_from_records,
    record_metadata,
    same,
)

from embeddix_core import (
    Collection,
    DimensionMismatchError,
    Embeddix,
    EmbeddixError,
    Hit,
    InvalidVectorError,
    Record,
)

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


@functools.cache
def _collection() -> Collection:
    return Embeddix.open(None).create_collection("round-trip", dim=2)


def _through_the_core(rid: str, text: str, metadata: dict[str, Any]) -> Record | None:
    """The record as the core stores and returns it, or None when the core refuses it."""
    col = _collection()
    try:
        col.upsert([rid], [[0.6, -0.8]], [text], [metadata])
    except EmbeddixError:
        return None
    rec = col.get(rid, include_vectors=True)
    col.delete([rid])
    return rec


def _both_layouts(node: Any, text: str = "the text", with_vector: bool = False) -> None:
    """Layout 1 as ``_both`` checks it; then the node through the core in the layout ``record_metadata``
    picks: read back (fast path copying or taking the record's metadata, and the loader's path), it is
    strictly the loader's node from layout 1. Layout 2 refuses nothing the core took in layout 1."""
    content, node_type = _stored(node)
    written = record_metadata(node)
    rec = _through_the_core(node.node_id, text, written)
    if rec is None:  # the core refused the record: it refuses it in layout 1 too
        assert _through_the_core(node.node_id, text, node_to_metadata_dict(node, remove_text=True)) is None
        _both(content, node_type, text)
        return
    vector = rec.vector if with_vector else None
    _both(content, node_type, text, vector)
    if LAYOUT_KEY not in written:
        assert written == node_to_metadata_dict(node, remove_text=True)
        return
    want = _loader(content, node_type, text, vector)
    metadata = rec.metadata
    got = [
        nodes_from_records([Record(rec.id, vector, text, dict(metadata))])[0],
        nodes_from_records(
            [Hit(rec.id, 0.5, 0.5, text, dict(metadata), "cosine", vector)], own_metadata=True
        )[0],
        _loader(_layout_json(rec.id, metadata, metadata.get(FIELDS_KEY)), "TextNode", text, vector),
    ]
    for got_node in got:
        assert same(got_node, want), (got_node, want)
        assert got_node.model_dump_json() == want.model_dump_json()
    assert metadata == rec.metadata  # own_metadata=False left the record alone


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
    TextNode(
        id_="rich-flat",
        text="a chunk",
        metadata={"file": "a.txt", "pages": [1, 2], "w": -0.0, "tiny": 5e-324, "ok": False, "u": "café 😀"},
        excluded_embed_metadata_keys=["file"],
        excluded_llm_metadata_keys=["file", "pages"],
        start_char_idx=0,
        end_char_idx=2**63,
        metadata_template="{key}={value}",
        metadata_separator="; ",
        text_template="{content}",
        mimetype="text/markdown",
        relationships={
            SOURCE: Document(
                text="whole", metadata={"file": "a.txt", "nested": {"k": [1]}}
            ).as_related_node_info(),
            NodeRelationship.PREVIOUS: RelatedNodeInfo(node_id="prev", metadata={"big": 2**70, "none": None}),
            NodeRelationship.NEXT: RelatedNodeInfo(node_id="next", hash="h"),
            NodeRelationship.CHILD: [RelatedNodeInfo(node_id="c1"), RelatedNodeInfo(node_id="c2")],
        },
    ),
    TextNode(id_="only-start", text="x", start_char_idx=5),
    TextNode(id_="children", text="x", relationships={NodeRelationship.CHILD: []}),
    TextNode(id_="none-value", text="x", metadata={"a": 1, "b": None}),  # layout 1: the core drops None
    TextNode(id_="reserved-key", text="x", metadata={"doc_id": "mine"}),  # layout 1: overwritten on top
    TextNode(id_="fixed-values", text="x", metadata={"k": "v"}, **{k: v for k, v in LAYOUT_VALUES.items()}),
]


@pytest.mark.parametrize("node", NODES, ids=[n.node_id for n in NODES])
@pytest.mark.parametrize("text", ["", "the document text"])
@pytest.mark.parametrize("with_vector", [False, True])
def test_written_nodes_match_the_loader(node: TextNode, text: str, with_vector: bool) -> None:
    content, node_type = _stored(node)
    vector = np.array([0.5, -0.25, 1e-3], np.float32) if with_vector else None
    _both(content, node_type, text, vector)
    _both_layouts(node, text, with_vector)


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
    _both_layouts(node, text=text, with_vector=bool(len(text) % 2))


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


def _rich_nodes() -> list[TextNode]:
    # Record metadata is flat (the core's rule); the relationships, in the node JSON or _node_fields, nest.
    doc = Document(
        id_="doc", text="the source", metadata={"file": "a.txt", "pages": [1, 2], "nested": {"k": [1]}}
    )
    rich = [
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
    # No field but the metadata differs from layout 2's fixed values: no _node_fields in the record.
    plain = [
        TextNode(
            id_=f"p{i}", text=f"plain {i}", metadata={"i": i, "tags": ["a", "b"]}, embedding=_vec(10 + i)
        )
        for i in range(3)
    ]
    return rich + plain


def _write_layout_1(col: Collection, nodes: list[TextNode]) -> None:
    """What the store wrote before layout 2: LlamaIndex's own node_to_metadata_dict."""
    col.upsert(
        [n.node_id for n in nodes],
        [n.embedding for n in nodes],
        [n.text for n in nodes],
        [node_to_metadata_dict(n, remove_text=True) for n in nodes],
    )


def _store_with_rich_nodes(layout: int = 2) -> tuple[EmbeddixVectorStore, list[TextNode]]:
    nodes = _rich_nodes()
    store = EmbeddixVectorStore(dim=DIM)
    if layout == 2:
        store.add(nodes)
    else:
        col = store.client
        assert col is not None
        _write_layout_1(col, nodes)
    col = store.client
    assert col is not None
    assert all((LAYOUT_KEY in r.metadata) == (layout == 2) for r in col.scan())
    return store, nodes


def _mutate(node: Any) -> None:
    node.metadata["i"] = -1
    node.metadata["tags"].append("x")
    node.metadata["new"] = "key"
    node.excluded_llm_metadata_keys.append("z")
    node.excluded_embed_metadata_keys.append("z")
    if SOURCE in node.relationships:
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


@pytest.mark.parametrize("layout", [1, 2])
def test_mutating_returned_nodes_does_not_change_later_results(layout: int) -> None:
    store, originals = _store_with_rich_nodes(layout)
    query = VectorStoreQuery(query_embedding=_vec(0), similarity_top_k=9)
    first = store.query(query)
    assert first.nodes is not None and len(first.nodes) == 9
    before = [n.model_dump_json() for n in first.nodes]
    fetched = store.get_nodes(["n1", "n2", "p0"])
    fetched_before = [n.model_dump_json() for n in fetched]
    for node in [*first.nodes, *fetched]:
        _mutate(node)
    second = store.query(query)
    assert second.ids == first.ids
    assert second.nodes is not None
    assert [n.model_dump_json() for n in second.nodes] == before
    assert [n.model_dump_json() for n in store.get_nodes(["n1", "n2", "p0"])] == fetched_before
    by_id = {n.node_id: n for n in originals}
    for node in second.nodes:
        src = by_id[node.node_id]
        assert node.text == src.text and node.metadata == src.metadata
        assert node.relationships == src.relationships and node.ref_doc_id == src.ref_doc_id
    store.close()


@pytest.mark.parametrize("layout", [1, 2])
def test_two_results_share_no_mutable_object(layout: int) -> None:
    store, _ = _store_with_rich_nodes(layout)
    query = VectorStoreQuery(query_embedding=_vec(3), similarity_top_k=9)
    a, b = store.query(query).nodes, store.query(query).nodes
    assert a is not None and b is not None

    def containers(node: Any) -> list[Any]:
        out = [node, node.__dict__, node.__pydantic_fields_set__, node.metadata, node.relationships]
        out += [node.excluded_embed_metadata_keys, node.excluded_llm_metadata_keys]
        out += [node.metadata["tags"]]
        if SOURCE in node.relationships:
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


@pytest.mark.parametrize("layout", [1, 2])
def test_query_results_are_the_loaders_nodes(layout: int) -> None:
    store, originals = _store_with_rich_nodes(layout)
    by_id = {n.node_id: n for n in originals}
    col = store.client
    assert col is not None
    query = VectorStoreQuery(query_embedding=_vec(1), similarity_top_k=9)
    res = store.query(query)
    hits = col.search(np.asarray(_vec(1), np.float32), 9)
    assert res.ids == [h.id for h in hits]
    assert res.similarities == [h.score for h in hits]
    assert res.nodes is not None
    for node, hit in zip(res.nodes, hits, strict=True):
        content, node_type = _stored(by_id[hit.id])
        want = _loader(content, node_type, hit.document or "", None)
        assert same(node, want)
    with_vectors = store.get_nodes([h.id for h in hits])
    for node, hit in zip(with_vectors, hits, strict=True):
        stored = col.get(hit.id, include_vectors=True)
        assert stored is not None and stored.vector is not None
        content, node_type = _stored(by_id[hit.id])
        assert same(node, _loader(content, node_type, hit.document or "", stored.vector))
    store.close()


def test_both_layouts_give_the_same_nodes() -> None:
    """A store written before layout 2 and one written now answer with identical nodes."""
    old, _ = _store_with_rich_nodes(1)
    new, _ = _store_with_rich_nodes(2)
    for i in range(4):
        query = VectorStoreQuery(query_embedding=_vec(i), similarity_top_k=9)
        a, b = old.query(query), new.query(query)
        assert a.ids == b.ids and a.similarities == pytest.approx(b.similarities)
        assert a.nodes is not None and b.nodes is not None
        assert all(same(x, y) for x, y in zip(a.nodes, b.nodes, strict=True))
    a_nodes, b_nodes = old.get_nodes(), new.get_nodes()
    assert len(a_nodes) == len(b_nodes) == 9
    assert all(same(x, y) for x, y in zip(a_nodes, b_nodes, strict=True))
    old.close()
    new.close()


# -- the layout written --------------------------------------------------------------------------------
def test_layout_2_record_metadata() -> None:
    node = TextNode(id_="n", text="t", metadata={"k": 1, "tags": ["a"]})
    assert record_metadata(node) == {
        "k": 1,
        "tags": ["a"],
        "_node_type": "TextNode",
        "document_id": "None",
        "doc_id": "None",
        "ref_doc_id": "None",
        "_node_layout": 2,
    }
    node.relationships[SOURCE] = RelatedNodeInfo(node_id="doc")
    node.start_char_idx = 3
    md = record_metadata(node)
    assert md["ref_doc_id"] == md["doc_id"] == md["document_id"] == "doc"
    assert list(md)[:2] == ["k", "tags"] and md[LAYOUT_KEY] == 2
    assert json.loads(md[FIELDS_KEY]) == {
        "relationships": {
            "1": {
                "node_id": "doc",
                "node_type": None,
                "metadata": {},
                "hash": None,
                "class_name": "RelatedNodeInfo",
            }
        },
        "start_char_idx": 3,
    }


@pytest.mark.parametrize(
    "node",
    [
        TextNode(id_="n", text="t", metadata={"k": None}),
        *(TextNode(id_="n", text="t", metadata={key: "x"}) for key in sorted(RESERVED_KEYS)),
        Document(text="a whole document", metadata={"file": "a.txt"}),
        ImageNode(id_="img", text="caption", image_url="http://example.com/a.png"),
        IndexNode(id_="idx", text="summary", index_id="other-index"),
    ],
)
def test_layout_1_where_layout_2_cannot_hold_the_node(node: Any) -> None:
    assert record_metadata(node) == node_to_metadata_dict(node, remove_text=True)


def test_flat_metadata_is_still_enforced() -> None:
    node = TextNode(id_="n", text="t", metadata={"nested": {"k": 1}})
    with pytest.raises(ValueError):
        record_metadata(node, flat_metadata=True)


_flat_scalars = (
    st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(st.characters(blacklist_categories=["Cs"], blacklist_characters="\x00"), max_size=8)
)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    metadata=st.dictionaries(
        st.text(
            st.characters(blacklist_categories=["Cs"], blacklist_characters="\x00"), min_size=1, max_size=8
        ).filter(lambda key: key not in RESERVED_KEYS),
        _flat_scalars | st.lists(_flat_scalars, max_size=3),
        max_size=5,
    ),
    excluded=st.lists(st.text(max_size=5), max_size=3),
    start=st.none() | st.integers(min_value=0, max_value=2**64 + 5),
    relationships=st.dictionaries(st.sampled_from(list(NodeRelationship)[:4]), _related, max_size=2),
    text=st.text(st.characters(blacklist_categories=["Cs"]), max_size=20),
)
def test_random_layout_2_nodes_match_the_loader(
    metadata: dict[str, Any],
    excluded: list[str],
    start: int | None,
    relationships: dict[NodeRelationship, Any],
    text: str,
) -> None:
    node = TextNode(
        id_="node",
        metadata=metadata,
        excluded_embed_metadata_keys=excluded,
        start_char_idx=start,
        relationships=relationships,
    )
    assert LAYOUT_KEY in record_metadata(node)
    _both_layouts(node, text=text, with_vector=bool(len(text) % 2))


# -- layout 2 records the shortcut declines --------------------------------------------------------------
def _layout_2(node: TextNode, **changes: Any) -> dict[str, Any]:
    md = record_metadata(node)
    for key, value in changes.items():
        if value is _DROP:
            del md[key]
        else:
            md[key] = value
    return md


_NODE_2 = TextNode(id_="id", text="t", metadata={"k": 1}, start_char_idx=2)


@pytest.mark.parametrize(
    "metadata",
    [
        _layout_2(_NODE_2, _node_fields='{"start_char_idx": "5"}'),  # the loader coerces
        _layout_2(_NODE_2, _node_fields='{"start_char_idx": 5.0}'),
        _layout_2(_NODE_2, _node_fields='{"start_char_idx": 100000000000000000000000}'),
        _layout_2(_NODE_2, _node_fields='{"mimetype": null}'),
        _layout_2(_NODE_2, _node_fields='{"excluded_llm_metadata_keys": ["a", 1]}'),
        _layout_2(_NODE_2, _node_fields='{"relationships": {"9": {}}}'),
        _layout_2(_NODE_2, _node_fields='{"unknown_field": 1}'),
        _layout_2(_NODE_2, _node_fields='{"start_char_idx": NaN}'),  # orjson refuses NaN
        _layout_2(_NODE_2, _node_fields="{}"),
        _layout_2(_NODE_2, document_id=_DROP),  # a reserved key gone (e.g. patched in the core)
        _layout_2(_NODE_2, _node_type=_DROP, doc_id=_DROP),
        _layout_2(_NODE_2, _node_content="a user key now"),
    ],
)
def test_other_layout_2_shapes_get_the_loaders_result(metadata: dict[str, Any]) -> None:
    hits = [[Hit("id", 0.5, 0.5, "t", dict(metadata), "cosine")] for _ in range(2)]
    try:
        want = _loader(_layout_json("id", metadata, metadata.get(FIELDS_KEY)), "TextNode", "t", None)
    except Exception as exc:  # the loader's error is the expected behaviour
        for own, hit in zip((False, True), hits, strict=True):
            with pytest.raises(type(exc)):
                nodes_from_records(hit, own_metadata=own)
        return
    for own, hit in zip((False, True), hits, strict=True):
        got = nodes_from_records(hit, own_metadata=own)[0]
        assert same(got, want), (got, want)


@pytest.mark.parametrize("fields", ['"text"', "[1]", "not json", 5])
def test_malformed_node_fields_raise(fields: Any) -> None:
    metadata = _layout_2(_NODE_2, _node_fields=fields)
    with pytest.raises(ValueError, match="_node_fields"):
        nodes_from_records([Record("id", None, "t", metadata)])


def test_without_the_fast_path_both_layouts_read_alike(monkeypatch: pytest.MonkeyPatch) -> None:
    fast = {layout: _store_with_rich_nodes(layout)[0].get_nodes() for layout in (1, 2)}
    monkeypatch.setattr(nodes_module, "_fast", False)
    for layout in (1, 2):
        store, _ = _store_with_rich_nodes(layout)
        slow = store.get_nodes()
        assert len(slow) == 9 and all(same(x, y) for x, y in zip(slow, fast[layout], strict=True))


# -- the query vector ------------------------------------------------------------------------------------
def test_list_query_vectors_search_like_float32_arrays() -> None:
    store, _ = _store_with_rich_nodes()
    col = store.client
    assert col is not None
    rng = np.random.default_rng(7)
    for _ in range(50):
        values = (rng.standard_normal(DIM) * 10.0 ** rng.integers(-15, 15, DIM)).tolist()
        res = store.query(VectorStoreQuery(query_embedding=values, similarity_top_k=5))
        hits = col.search(np.asarray(values, dtype=np.float32), 5)
        assert res.ids == [h.id for h in hits] and res.similarities == [h.score for h in hits]
    store.close()


def test_query_vector_errors_are_the_cores() -> None:
    store, _ = _store_with_rich_nodes()
    with pytest.raises(DimensionMismatchError):
        store.query(VectorStoreQuery(query_embedding=[1.0] * (DIM + 1), similarity_top_k=2))
    with pytest.raises(InvalidVectorError):
        store.query(VectorStoreQuery(query_embedding=[float("nan")] * DIM, similarity_top_k=2))
    with pytest.raises(InvalidVectorError):
        store.query(VectorStoreQuery(query_embedding=["x"] * DIM, similarity_top_k=2))
    # Numeric strings: the adapter adds no rule of its own, whatever the core's rule is (the core is moving
    # from parsing them to refusing them as text), so compare with the core's own answer.
    as_strings: Any = [str(v) for v in _vec(2)]
    col = store.client
    assert col is not None
    try:
        expected = [hit.id for hit in col.search(as_strings, 2)]
    except InvalidVectorError:
        with pytest.raises(InvalidVectorError):
            store.query(VectorStoreQuery(query_embedding=as_strings, similarity_top_k=2))
    else:
        assert store.query(VectorStoreQuery(query_embedding=as_strings, similarity_top_k=2)).ids == expected
    store.close()
