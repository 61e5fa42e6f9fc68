"""Nodes rebuilt from their stored JSON, fast: the per-hit part of every query.

LlamaIndex's own loader, ``metadata_dict_to_node``, runs ``json.loads`` and a full pydantic validation:
~10 us a node, 0.1 ms for ten hits, half an HNSW search on 50,000 records. The JSON of a stored node is
the one ``node_to_metadata_dict`` wrote, so for a ``TextNode`` its shape is known. Here it is parsed with
orjson, that shape is checked exactly (the keys and their order, the exact type of every value, integers
orjson could not keep exact) and the values are put in place without validation: ~3 us a node, parse
included. Anything else (other node classes, unknown or missing keys, a value of another type, JSON
orjson refuses such as ``NaN``) goes through ``metadata_dict_to_node`` as before, so the node returned is
always the one LlamaIndex's loader returns: same class, values, types, field order and fields set.

Each call builds new objects from the JSON text: nothing is shared between two results or with any cache,
so callers may mutate returned nodes freely.

The shortcut is on only while the classes are as this module knows them (the expected fields, no
validators, no private attributes, no post-init hook), and after a self-check at import that builds sample
nodes both ways and finds them identical.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

import numpy as np
import orjson
from llama_index.core.bridge.pydantic import BaseModel
from llama_index.core.schema import (
    BaseNode,
    Document,
    NodeRelationship,
    RelatedNodeInfo,
    TextNode,
)
from llama_index.core.vector_stores.utils import metadata_dict_to_node, node_to_metadata_dict

from embeddix_core import Hit, Record

__all__ = ["node_from_json", "nodes_from_records"]

log = logging.getLogger(__name__)

NODE_CONTENT = "_node_content"
NODE_TYPE = "_node_type"

# Field order matters: pydantic serializes ``__dict__`` in its order, and validation leaves it in this one.
_TEXT_FIELDS = (
    "id_",
    "embedding",
    "metadata",
    "excluded_embed_metadata_keys",
    "excluded_llm_metadata_keys",
    "relationships",
    "metadata_template",
    "metadata_separator",
    "text",
    "mimetype",
    "start_char_idx",
    "end_char_idx",
    "text_template",
)
_TEXT_KEYS = frozenset(_TEXT_FIELDS)
# The JSON as written: the fields in order, then "class_name" (which the loader drops).
_TEXT_JSON_KEYS = (*_TEXT_FIELDS, "class_name")
_NONE = type(None)
# The value types of the JSON as written (start/end_char_idx None or int), in the same order.
_TEXT_JSON_TYPES = frozenset(
    (str, _NONE, dict, list, list, dict, str, str, str, str, start, end, str, str)
    for start in (_NONE, int)
    for end in (_NONE, int)
)
_RELATED_FIELDS = ("node_id", "node_type", "metadata", "hash")
_RELATED_KEYS = frozenset(_RELATED_FIELDS)
_RELATIONS: dict[str, NodeRelationship] = {str(r.value): r for r in NodeRelationship}
# ``metadata_dict_to_node`` reads these node types with their own classes; every other one as a TextNode.
# (A tuple: ``in`` compares with ==, as the loader does, so an unhashable value is no error.)
_OTHER_TYPES = ("Node", "IndexNode", "ImageNode")

# Integers from -2**63 to 2**64 - 1 come back exact from orjson; past them, floats.
_BIG = 9.2e18
_loads = orjson.loads
_JSONDecodeError = orjson.JSONDecodeError
_new = object.__new__
# pydantic keeps a model's state in four slots; these set them as ``BaseModel.__copy__`` does.
_set_dict = BaseModel.__dict__["__dict__"].__set__
_set_fields_set = BaseModel.__dict__["__pydantic_fields_set__"].__set__
_set_extra = BaseModel.__dict__["__pydantic_extra__"].__set__
_set_private = BaseModel.__dict__["__pydantic_private__"].__set__


def nodes_from_records(records: Iterable[Hit | Record]) -> list[BaseNode]:
    """The nodes stored in core records (hits or records), new objects every call.

    A record with ``_node_content`` gives the node ``metadata_dict_to_node`` would give, with the record's
    document as its text and the record's vector (when there is one) as its embedding. A record without
    it (written by the core or another adapter) gives a ``TextNode`` of its id, document and metadata.
    """
    # The fast path of node_from_json, inlined with its names bound locally: calls and global lookups
    # would be a third of its cost.
    fast, loads, decode_error, other_types = _fast, _loads, _JSONDecodeError, _OTHER_TYPES
    json_keys, json_types, text_keys = _TEXT_JSON_KEYS, _TEXT_JSON_TYPES, _TEXT_KEYS
    new, text_node, set_dict, set_fields_set = _new, TextNode, _set_dict, _set_fields_set
    set_extra, set_private, exact = _set_extra, _set_private, _exact
    tuple_, map_, type_, set_, dict_ = tuple, map, type, set, dict
    out: list[BaseNode] = []
    append = out.append
    for rec in records:
        metadata = rec.metadata
        content = metadata.get(NODE_CONTENT)
        text = rec.document or ""
        vector = rec.vector
        if not isinstance(content, str):
            foreign = TextNode(id_=rec.id, text=text, metadata=metadata)
            if vector is not None:
                foreign.embedding = vector.tolist()
            append(foreign)
            continue
        if fast and metadata.get(NODE_TYPE) not in other_types:
            try:
                data = loads(content)
            except decode_error:
                data = None
            if type_(data) is dict_:
                if tuple_(data) != json_keys:
                    data = _reordered(data)
                if (
                    data is not None
                    and tuple_(map_(type_, data.values())) in json_types
                    and exact(data["metadata"].values())
                ):
                    del data["class_name"]
                    if not (
                        data["excluded_embed_metadata_keys"]
                        or data["excluded_llm_metadata_keys"]
                        or data["relationships"]
                    ) or _nested_ok(data):
                        data["text"] = text
                        if vector is not None:
                            data["embedding"] = vector.tolist()
                        node = new(text_node)
                        set_dict(node, data)
                        set_fields_set(node, set_(text_keys))
                        set_extra(node, None)
                        set_private(node, None)
                        append(node)
                        continue
        append(_slow(content, metadata.get(NODE_TYPE), text, vector))
    return out


def node_from_json(
    node_json: str, node_type: Any, text: str, embedding: list[float] | None = None
) -> BaseNode:
    """The node stored as ``node_json`` (``_node_content``), with its text and embedding put back.

    The same node as ``metadata_dict_to_node({"_node_content": node_json, "_node_type": node_type},
    text=text)`` followed by ``node.embedding = embedding`` when one is given; new objects every call.
    """
    if _fast and node_type not in _OTHER_TYPES:
        try:
            data = _loads(node_json)
        except _JSONDecodeError:
            data = None
        if type(data) is dict:
            node = _text_node(data, text, embedding)
            if node is not None:
                return node
    slow = metadata_dict_to_node({NODE_CONTENT: node_json, NODE_TYPE: node_type}, text=text)
    if embedding is not None:
        slow.embedding = embedding
    return slow


def _slow(node_json: str, node_type: Any, text: str, vector: np.ndarray | None) -> BaseNode:
    node = metadata_dict_to_node({NODE_CONTENT: node_json, NODE_TYPE: node_type}, text=text)
    if vector is not None:
        node.embedding = vector.tolist()
    return node


def _text_node(data: dict[str, Any], text: str, embedding: list[float] | None) -> TextNode | None:
    """A TextNode from the parsed JSON, or None when the JSON is not exactly in the written shape."""
    if tuple(data) != _TEXT_JSON_KEYS:
        reordered = _reordered(data)
        if reordered is None:
            return None
        data = reordered
    if tuple(map(type, data.values())) not in _TEXT_JSON_TYPES or not _exact(data["metadata"].values()):
        return None
    del data["class_name"]
    if (
        data["excluded_embed_metadata_keys"] or data["excluded_llm_metadata_keys"] or data["relationships"]
    ) and not _nested_ok(data):
        return None
    data["text"] = text
    if embedding is not None:
        data["embedding"] = embedding
    node = _new(TextNode)
    _set_dict(node, data)
    _set_fields_set(node, set(_TEXT_KEYS))
    _set_extra(node, None)
    _set_private(node, None)
    return node


def _reordered(data: dict[str, Any]) -> dict[str, Any] | None:
    """The JSON's fields in the class's order (validation reorders too), or None for other keys."""
    data.pop("class_name", None)
    if data.keys() != _TEXT_KEYS:
        return None
    out = {name: data[name] for name in _TEXT_FIELDS}
    out["class_name"] = "TextNode"
    return out


def _nested_ok(data: dict[str, Any]) -> bool:
    """Check the excluded-keys lists, and turn the relationships into their objects in place."""
    if not (_strings(data["excluded_embed_metadata_keys"]) and _strings(data["excluded_llm_metadata_keys"])):
        return False
    if data["relationships"]:
        relationships = _relationships(data["relationships"])
        if relationships is None:
            return False
        data["relationships"] = relationships
    return True


def _exact(values: Iterable[Any]) -> bool:
    """No float that may have been an integer beyond 64 bits (orjson reads those as floats, while the
    loader's ``json.loads`` keeps them exact): such JSON goes to the loader."""
    for value in values:
        kind = type(value)
        if kind is float:
            if value >= _BIG or value <= -_BIG:
                return False
        elif kind is dict:
            if not _exact(value.values()):
                return False
        elif kind is list and not _exact(value):
            return False
    return True


def _strings(items: list[Any]) -> bool:
    return all(type(item) is str for item in items)


def _relationships(raw: dict[str, Any]) -> dict[NodeRelationship, Any] | None:
    out: dict[NodeRelationship, Any] = {}
    for key, value in raw.items():
        relation = _RELATIONS.get(key)
        if relation is None:
            return None
        if type(value) is dict:
            info: Any = _related(value)
            if info is None:
                return None
        elif type(value) is list:
            info = [_related(v) if type(v) is dict else None for v in value]
            if any(i is None for i in info):
                return None
        else:
            return None
        out[relation] = info
    return out


def _related(data: dict[str, Any]) -> RelatedNodeInfo | None:
    data.pop("class_name", None)
    if data.keys() != _RELATED_KEYS:
        return None
    node_type, digest, metadata = data["node_type"], data["hash"], data["metadata"]
    if not (
        type(data["node_id"]) is str
        and (node_type is None or type(node_type) is str)
        and type(metadata) is dict
        and (digest is None or type(digest) is str)
        and _exact(metadata.values())
    ):
        return None
    info = _new(RelatedNodeInfo)
    _set_dict(info, {name: data[name] for name in _RELATED_FIELDS})
    _set_fields_set(info, set(_RELATED_KEYS))
    _set_extra(info, None)
    _set_private(info, None)
    return info


# -- the guard -----------------------------------------------------------------------------------------
def _plain_model(cls: type[BaseModel], fields: tuple[str, ...]) -> bool:
    """The class has exactly these fields and nothing that validation would run or set besides them."""
    decorators = cls.__pydantic_decorators__
    return (
        tuple(cls.model_fields) == fields
        and not decorators.validators
        and not decorators.field_validators
        and not decorators.root_validators
        and not decorators.model_validators
        and not cls.__private_attributes__
        and cls.__pydantic_post_init__ is None
        and cls.model_config.get("extra") in (None, "ignore")
    )


def same(a: Any, b: Any) -> bool:
    """Strict structural equality: same types all the way down, same dict orders, same fields set."""
    if type(a) is not type(b):
        return False
    if isinstance(a, BaseModel):
        return (
            same(a.__dict__, b.__dict__)
            and a.__pydantic_fields_set__ == b.__pydantic_fields_set__
            and same(a.__pydantic_extra__, b.__pydantic_extra__)
            and same(a.__pydantic_private__, b.__pydantic_private__)
        )
    if isinstance(a, dict):
        return (
            len(a) == len(b)
            and all(same(ka, kb) for ka, kb in zip(a, b, strict=True))
            and all(same(a[k], b[k]) for k in a)
        )
    if isinstance(a, list | tuple):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b) or (a != a and b != b)  # NaN equals NaN here


def _samples() -> list[TextNode]:
    doc = Document(text="the whole document", metadata={"file": "a.txt", "pages": [1, 2]})
    return [
        TextNode(id_="plain", text="", metadata={"tag": 1, "score": 0.5, "ok": True, "none": None}),
        TextNode(
            id_="rich",
            text="a chunk",
            metadata={"file": "a.txt", "nested": {"a": [1, 2.5, "x", None, {"b": False}]}},
            excluded_embed_metadata_keys=["file"],
            excluded_llm_metadata_keys=["file", "nested"],
            start_char_idx=0,
            end_char_idx=7,
            metadata_template="{key}={value}",
            metadata_separator="; ",
            text_template="{content}",
            mimetype="text/markdown",
            relationships={
                NodeRelationship.SOURCE: doc.as_related_node_info(),
                NodeRelationship.NEXT: RelatedNodeInfo(node_id="next", hash="h"),
                NodeRelationship.CHILD: [RelatedNodeInfo(node_id="c1"), RelatedNodeInfo(node_id="c2")],
            },
        ),
    ]


def _self_check() -> bool:
    """Build the sample nodes both ways (with and without a stored vector) and compare them strictly."""
    global _fast
    if not (_plain_model(TextNode, _TEXT_FIELDS) and _plain_model(RelatedNodeInfo, _RELATED_FIELDS)):
        return False
    vector = np.array([0.25, -1.0], np.float32)
    _fast = True
    try:
        for sample in _samples():
            md = node_to_metadata_dict(sample, remove_text=True)
            for vec in (None, vector):
                slow = _slow(md[NODE_CONTENT], md[NODE_TYPE], "text", vec)
                fast = [
                    nodes_from_records([Record(sample.id_, vec, "text", dict(md))])[0],
                    node_from_json(
                        md[NODE_CONTENT], md[NODE_TYPE], "text", None if vec is None else [0.25, -1.0]
                    ),
                ]
                if not all(same(f, slow) and f.model_dump_json() == slow.model_dump_json() for f in fast):
                    return False
                if not all(f is not slow and f.metadata is not slow.metadata for f in fast):
                    return False
    finally:
        _fast = False
    return True


_fast = False
try:
    _fast = _self_check()
except Exception:  # any surprise in the libraries means: use their loader
    log.debug("fast node loading disabled", exc_info=True)
if not _fast:
    log.debug("fast node loading disabled: llama_index / pydantic classes differ from the known shape")
