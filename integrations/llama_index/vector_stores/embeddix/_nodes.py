"""Nodes in records, both ways, fast: the write layout, and the per-hit part of every query.

Two record layouts are read (both keep the user's metadata as top-level keys, so filters see it as is,
and LlamaIndex's ``_node_type``, ``ref_doc_id``, ``doc_id`` and ``document_id`` keys):

* **Layout 2** (what :func:`record_metadata` writes; the record metadata has ``_node_layout: 2``): a
  ``TextNode`` is its record. The id, text and embedding are the record's own; the node's metadata is
  the record metadata without the layout's keys (``_node_type``, ``ref_doc_id``, ``doc_id``,
  ``document_id``, ``_node_layout``, ``_node_fields``); the other fields are the fixed values in
  :data:`LAYOUT_VALUES` unless the record has ``_node_fields``, a JSON object of the fields that differ
  (``relationships``, ``start_char_idx``... as ``node_to_metadata_dict`` would write them). The core
  parses the record metadata for every hit anyway, so a node costs no JSON parse of its own unless it has
  such fields: ~1 us a node. The fixed values are this layout's, not LlamaIndex's defaults, so a change of
  defaults in a later LlamaIndex cannot change a stored node.
* **Layout 1** (LlamaIndex's own, and this store's before layout 2; no ``_node_layout`` key): the node as
  JSON text in ``_node_content``. :func:`record_metadata` still writes it for every node layout 2 cannot
  hold exactly: other node classes, metadata with a None value (the core drops None values, the JSON kept
  them) or with a reserved key (``node_to_metadata_dict`` overwrites those at the top level).

Reading either gives the node LlamaIndex's own loader, ``metadata_dict_to_node``, gives for the layout-1
JSON of the same node: same class, values, types, field order and fields set. That loader runs
``json.loads`` and a full pydantic validation, ~10 us a node, 0.1 ms for ten hits, half an HNSW search
on 50,000 records. Here the JSON (layout 1) or the ``_node_fields`` (layout 2) is parsed with orjson, its
shape is checked exactly (the keys and their order, the exact type of every value, integers orjson could
not keep exact) and the values are put in place without validation: ~3 us a node for layout 1. Anything
else (other node classes, unknown or missing keys, a value of another type, JSON orjson refuses such as
``NaN``) goes through ``metadata_dict_to_node``, layout 2 by rebuilding its layout-1 JSON first.

Each call builds new objects: nothing is shared between two results or with any cache, so callers may
mutate returned nodes freely.

The shortcut is on only while the classes are as this module knows them (the expected fields, no
validators, no private attributes, no post-init hook), and after a self-check at import that builds sample
nodes both ways, from both layouts, and finds them identical.
"""

from __future__ import annotations

import json
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

__all__ = ["LAYOUT_VALUES", "RESERVED_KEYS", "node_from_json", "nodes_from_records", "record_metadata"]

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

# -- layout 2 ------------------------------------------------------------------------------------------
LAYOUT_KEY = "_node_layout"
LAYOUT = 2
FIELDS_KEY = "_node_fields"
# The keys record_metadata writes besides the node's metadata, in either layout: a node whose metadata has
# one of them is stored in layout 1 (node_to_metadata_dict overwrites them; its JSON keeps the node's own).
RESERVED_KEYS = frozenset(
    (NODE_CONTENT, NODE_TYPE, "document_id", "doc_id", "ref_doc_id", LAYOUT_KEY, FIELDS_KEY)
)
# The node fields layout 2 keeps out of the record's own id / vector / document / metadata, in field
# order, with the value each has when the record has no ``_node_fields`` entry for it. Part of the
# on-disk format: never change a value (a new layout version may).
LAYOUT_VALUES: dict[str, Any] = {
    "excluded_embed_metadata_keys": [],
    "excluded_llm_metadata_keys": [],
    "relationships": {},
    "metadata_template": "{key}: {value}",
    "metadata_separator": "\n",
    "mimetype": "text/plain",
    "start_char_idx": None,
    "end_char_idx": None,
    "text_template": "{metadata_str}\n\n{content}",
}
_LAYOUT_TYPES: dict[str, tuple[type, ...]] = {
    "excluded_embed_metadata_keys": (list,),
    "excluded_llm_metadata_keys": (list,),
    "relationships": (dict,),
    "metadata_template": (str,),
    "metadata_separator": (str,),
    "mimetype": (str,),
    "start_char_idx": (int, _NONE),
    "end_char_idx": (int, _NONE),
    "text_template": (str,),
}
# The keys of a layout-2 record that are not the node's metadata (everything else is).
_LAYOUT_KEYS = frozenset((NODE_TYPE, "document_id", "doc_id", "ref_doc_id", LAYOUT_KEY, FIELDS_KEY))
# A node's fields in order with the layout's fixed values; the mutable ones are replaced in every copy.
_LAYOUT_DICT: dict[str, Any] = {
    "id_": "",
    "embedding": None,
    "metadata": None,
    **{name: LAYOUT_VALUES[name] for name in _TEXT_FIELDS[3:8]},
    "text": "",
    **{name: LAYOUT_VALUES[name] for name in _TEXT_FIELDS[9:]},
}

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


def record_metadata(node: BaseNode, *, flat_metadata: bool = False) -> dict[str, Any]:
    """The record metadata that stores ``node`` (its text and embedding go in the record's own fields).

    Layout 2 when it holds the node exactly (see the module docstring), else LlamaIndex's own layout.

    Args:
        node: The node.
        flat_metadata: Raise if the node's metadata is not flat (as ``node_to_metadata_dict`` does).

    Returns:
        The metadata for the record (a new dict).

    Raises:
        ValueError: ``flat_metadata`` is set and the metadata is not flat.
    """
    # Layout 1 first, exactly as LlamaIndex writes it: layout 2 takes its values from that JSON as
    # json.loads reads it, so the two layouts cannot disagree on a value.
    md = node_to_metadata_dict(node, remove_text=True, flat_metadata=flat_metadata)
    if md.get(NODE_TYPE) != "TextNode":
        return md
    content = json.loads(md[NODE_CONTENT])
    if (
        type(content) is not dict
        or tuple(content) != _TEXT_JSON_KEYS
        or content["class_name"] != "TextNode"
        or content["embedding"] is not None
        or content["text"] != ""
    ):
        return md
    out = content["metadata"]
    # The core drops None values (layout 1's JSON kept them), and node_to_metadata_dict overwrites the
    # reserved keys at the top level (its JSON kept the node's own values): only layout 1 holds those.
    if type(out) is not dict or not RESERVED_KEYS.isdisjoint(out) or None in out.values():
        return md
    fields = {}
    for name, fixed in LAYOUT_VALUES.items():
        value = content[name]
        if type(value) is not type(fixed) or value != fixed:
            fields[name] = value
    for key in (NODE_TYPE, "document_id", "doc_id", "ref_doc_id"):
        out[key] = md[key]
    out[LAYOUT_KEY] = LAYOUT
    if fields:
        # The same serializer as node_to_metadata_dict's, so the core accepts and refuses the same text.
        out[FIELDS_KEY] = json.dumps(fields, ensure_ascii=False)
    return out


def nodes_from_records(records: Iterable[Hit | Record], *, own_metadata: bool = False) -> list[BaseNode]:
    """The nodes stored in core records (hits or records), new objects every call.

    A record in either layout (see the module docstring) gives the node ``metadata_dict_to_node`` gives
    for the node's layout-1 JSON, with the record's document as its text and the record's vector (when
    there is one) as its embedding. A record in neither (written by the core or another adapter) gives a
    ``TextNode`` of its id, document and metadata.

    Args:
        records: Core hits or records.
        own_metadata: The records' metadata dicts are the caller's to give away (fresh from the core, as
            every hit's is, and not used afterwards): a layout-2 node takes its record's dict, the layout's
            keys deleted, instead of a copy. Default False: the records are left as they are.

    Raises:
        ValueError: A record's stored node is malformed (LlamaIndex's loader refuses it).
    """
    if not _fast:
        return [
            _slow(
                _layout_json(r.id, r.metadata, r.metadata.get(FIELDS_KEY)),
                "TextNode",
                r.document or "",
                r.vector,
            )
            if r.metadata.get(LAYOUT_KEY) == LAYOUT
            else _other_node(r)
            for r in records
        ]
    # Layout 2 is the hot path of every query: its loop binds what it uses locally (global lookups and
    # calls would be a third of its cost) and leaves every other record to _other_node.
    layout_key, layout, fields_key, copy_template = LAYOUT_KEY, LAYOUT, FIELDS_KEY, _LAYOUT_DICT.copy
    new, text_node, set_dict, set_fields_set = _new, TextNode, _set_dict, _set_fields_set
    set_extra, set_private, text_keys, set_, merge = _set_extra, _set_private, _TEXT_KEYS, set, _merge_fields
    out: list[BaseNode] = []
    append = out.append
    for rec in records:
        metadata = rec.metadata
        if metadata.get(layout_key) != layout:
            append(_other_node(rec))
            continue
        extra = metadata.get(fields_key)
        node_metadata = metadata if own_metadata else metadata.copy()
        try:
            # The keys layout 2 always writes: deleting them is twice as fast as a comprehension. (A
            # partial delete leaves the user's keys, all that _layout_json reads, as they were.)
            del (
                node_metadata["_node_type"],
                node_metadata["document_id"],
                node_metadata["doc_id"],
                node_metadata["ref_doc_id"],
                node_metadata[layout_key],
            )
            if extra is not None:
                del node_metadata[fields_key]
        except KeyError:
            append(_slow(_layout_json(rec.id, metadata, extra), "TextNode", rec.document or "", rec.vector))
            continue
        # The fixed values in _TEXT_FIELDS order (a copy is faster than a 13-key literal), then the
        # record's own; the self-check below holds the result to the loader's.
        data = copy_template()
        data["id_"] = rec.id
        data["metadata"] = node_metadata
        data["excluded_embed_metadata_keys"] = []
        data["excluded_llm_metadata_keys"] = []
        data["relationships"] = {}
        data["text"] = rec.document or ""
        vector = rec.vector
        if vector is not None:
            data["embedding"] = vector.tolist()
        if extra is not None and not merge(data, extra):
            append(_slow(_layout_json(rec.id, metadata, extra), "TextNode", rec.document or "", vector))
            continue
        node = new(text_node)
        set_dict(node, data)
        set_fields_set(node, set_(text_keys))
        set_extra(node, None)
        set_private(node, None)
        append(node)
    return out


def _other_node(rec: Hit | Record) -> BaseNode:
    """The node in a layout-1 record (fast when it has the written shape), or a foreign record's."""
    metadata = rec.metadata
    content = metadata.get(NODE_CONTENT)
    text = rec.document or ""
    vector = rec.vector
    if not isinstance(content, str):
        foreign = TextNode(id_=rec.id, text=text, metadata=metadata)
        if vector is not None:
            foreign.embedding = vector.tolist()
        return foreign
    return node_from_json(content, metadata.get(NODE_TYPE), text, None if vector is None else vector.tolist())


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


def _merge_fields(data: dict[str, Any], raw: Any) -> bool:
    """Put a layout-2 record's ``_node_fields`` into ``data``, or return False when they are not exactly
    in the written shape (the loader then decides, through :func:`_layout_json`)."""
    if type(raw) is not str:
        return False
    try:
        fields = _loads(raw)
    except _JSONDecodeError:
        return False
    if type(fields) is not dict:
        return False
    for name, value in fields.items():
        kinds = _LAYOUT_TYPES.get(name)
        if kinds is None or type(value) not in kinds:
            return False
    if not (
        _strings(fields.get("excluded_embed_metadata_keys", ()))
        and _strings(fields.get("excluded_llm_metadata_keys", ()))
    ):
        return False
    raw_relationships = fields.get("relationships")
    if raw_relationships:
        relationships = _relationships(raw_relationships)
        if relationships is None:
            return False
        fields["relationships"] = relationships
    data.update(fields)  # keys already in data keep their place: the field order stays
    return True


def _layout_json(rid: str, metadata: dict[str, Any], raw: Any = None) -> str:
    """The layout-1 JSON (``_node_content``) of the node in a layout-2 record, for LlamaIndex's loader.

    ``raw`` is the record's ``_node_fields`` (None: none); ``metadata`` may lack the reserved keys.

    Raises:
        ValueError: The record's ``_node_fields`` is not a JSON object.
    """
    values = {
        "id_": rid,
        "embedding": None,
        "metadata": {k: v for k, v in metadata.items() if k not in _LAYOUT_KEYS},
        "text": "",
        **LAYOUT_VALUES,
    }
    content = {name: values[name] for name in _TEXT_FIELDS}
    content["class_name"] = "TextNode"
    if raw is not None:
        try:
            # json, not orjson: the loader's own parser, exact for integers of any size.
            fields = json.loads(raw) if isinstance(raw, str) else None
        except ValueError:
            fields = None
        if not isinstance(fields, dict):
            raise ValueError(f"record {rid!r}: {FIELDS_KEY} must be a JSON object as text; got {raw!r:.80}")
        content.update(fields)
    return json.dumps(content, ensure_ascii=False)


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
        TextNode(id_="lean", text="", metadata={"tag": 1, "score": 0.5, "ok": True, "tags": ["a", "b"]}),
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
    """Build the sample nodes both ways (with and without a stored vector), from both layouts, and compare
    them strictly with LlamaIndex's loader reading layout 1."""
    global _fast
    if not (_plain_model(TextNode, _TEXT_FIELDS) and _plain_model(RelatedNodeInfo, _RELATED_FIELDS)):
        return False
    vector = np.array([0.25, -1.0], np.float32)
    _fast = True
    try:
        for sample in _samples():
            md = node_to_metadata_dict(sample, remove_text=True)
            # What the core gives back for layout 2: its JSON text, read by orjson.
            stored = _loads(json.dumps(record_metadata(sample), ensure_ascii=False))
            for vec in (None, vector):
                slow = _slow(md[NODE_CONTENT], md[NODE_TYPE], "text", vec)
                fast = [
                    nodes_from_records([Record(sample.id_, vec, "text", dict(md))])[0],
                    node_from_json(
                        md[NODE_CONTENT], md[NODE_TYPE], "text", None if vec is None else [0.25, -1.0]
                    ),
                    nodes_from_records([Record(sample.id_, vec, "text", _loads(orjson.dumps(stored)))])[0],
                    nodes_from_records(
                        [Record(sample.id_, vec, "text", _loads(orjson.dumps(stored)))], own_metadata=True
                    )[0],
                ]
                if stored.get(LAYOUT_KEY) == LAYOUT:
                    fast.append(
                        _slow(
                            _layout_json(sample.id_, stored, stored.get(FIELDS_KEY)), "TextNode", "text", vec
                        )
                    )
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
