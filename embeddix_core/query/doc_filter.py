"""Full-text restrictions on a record's document: Chroma's ``where_document``, in the core.

A ``where_document`` expression is parsed and validated once by :func:`parse_where_document` into a
:class:`DocumentFilter`, then joined with the metadata filter (if any) into one :class:`RecordFilter`.
That is a :class:`~embeddix_core.query.filters.Filter` whose SQL selects on both columns, so every path
that takes a filter - the label sets of ``filter_cache.py``, the planner's exact-scan-or-graph choice,
hybrid search, ``scan`` / ``count`` - restricts by the document with no code of its own.

Syntax and semantics (Chroma 1.x)
---------------------------------
* ``{"$contains": "text"}``: the document holds ``text`` (a case-sensitive substring).
* ``{"$not_contains": "text"}``: it does not.
* ``{"$regex": "pattern"}``: Python's ``re.search`` finds the pattern in the document.
* ``{"$not_regex": "pattern"}``: it does not.
* ``{"$and": [expr, ...]}``, ``{"$or": [expr, ...]}``: a non-empty list of expressions.

Each object holds exactly one operator; operands are non-empty strings. A record without a document
never matches ``$contains`` / ``$regex`` and always matches ``$not_contains`` / ``$not_regex``, as in
Chroma 1.5 (checked: its ``get(where_document={"$not_contains": "fox"})`` returns the record whose
document is None). Bad input raises :class:`~embeddix_core.errors.InvalidFilterError` (an
``InvalidArgumentError``).

Regular expressions are Python's (``re``), not Rust's as in Chroma: the common syntax agrees, but
``re`` backtracks, so a pathological pattern can be slow where Rust's is linear.

How it runs, and why
--------------------
``$contains`` / ``$not_contains`` become SQLite ``instr`` (exact, case-sensitive, like Python's ``in``):
one pass over the collection's documents, no index. The FTS5 table could pre-select candidates for long
words, but its tokenizer folds case and stems (``porter``), so every candidate needs the ``instr`` check
anyway, and substrings inside words or across punctuation would be missed by the pre-selection.
SQLite has no ``REGEXP`` by default and the store's connections are not ours to extend, so an
expression holding a regex is evaluated in Python over the rows its other parts (and the metadata
filter) leave, read in pages from the store; the matching labels then go to SQL as a bound JSON list.
That list is read when the SQL is built, which is why it is never cached here (``to_sql``).

Label sets of document filters are kept by ``FilterCache`` until the next write, which drops them (a
write's maintenance sees metadata, not documents). Search hits are re-checked against their documents
(:func:`recheck`): a write may land between the label-set read and the row read. The result cache is
bypassed for such searches (its invalidation and near-duplicate admission read metadata only).
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Callable, Generator, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Final, TypeAlias

from ..errors import InvalidFilterError
from ..storage.sqlite import Store
from ..types import Hit, Hits, SearchStep
from .filter_nodes import _TRUE
from .filters import Filter, _kind, _show, parse_filter

__all__ = [
    "DOCUMENT_OPERATORS",
    "DocumentFilter",
    "RecordFilter",
    "combine",
    "parse_where_document",
    "recheck",
    "recheck_batch",
    "recheck_steps",
]

DOCUMENT_OPERATORS: Final = ("$contains", "$not_contains", "$regex", "$not_regex")
_LOGICAL: Final = ("$and", "$or")
_MAX_DEPTH: Final = 32  # as for metadata filters: far from Python's recursion and SQLite's depth limit
_SCAN_PAGE: Final = 2000  # rows per store read when a regex is evaluated in Python


@dataclass(frozen=True, slots=True)
class _Leaf:
    op: str
    operand: str
    pattern: re.Pattern[str] | None  # compiled for $regex / $not_regex
    text: str


@dataclass(frozen=True, slots=True)
class _Bool:
    op: str  # "$and" or "$or"
    children: tuple[_DocNode, ...]
    text: str


_DocNode: TypeAlias = _Leaf | _Bool


def _where(loc: str) -> str:
    return f" in {loc}" if loc else ""


def _operand(op: str, value: Any, loc: str) -> str:
    if not isinstance(value, str):
        raise InvalidFilterError(
            f"where_document operand of {op}{_where(loc)} must be a non-empty string; "
            f"got {_kind(value)} {_show(value)}"
        )
    if not value:
        raise InvalidFilterError(
            f"where_document operand of {op}{_where(loc)} must be a non-empty string; got '' "
            "(it would match every document)"
        )
    # SQLite's instr stops comparing at NUL; the Python evaluation would not: refuse rather than differ
    if "\x00" in value:
        raise InvalidFilterError(
            f"where_document operand of {op}{_where(loc)} contains a NUL character (U+0000); got "
            f"{_show(value)}; remove the NUL"
        )
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidFilterError(
            f"where_document operand of {op}{_where(loc)} must be valid Unicode text; got {_show(value)} "
            "with an unpaired surrogate"
        ) from exc
    return value


def _dumps(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _parse(obj: Any, loc: str, depth: int) -> _DocNode:
    if not isinstance(obj, Mapping):
        raise InvalidFilterError(
            f"where_document must be a dict such as {{'$contains': 'fox'}}; got {_kind(obj)} "
            f"{_show(obj)}{_where(loc)}"
        )
    if len(obj) != 1:
        raise InvalidFilterError(
            f"where_document must hold exactly one operator ({', '.join(DOCUMENT_OPERATORS + _LOGICAL)})"
            f"{_where(loc)}; got {len(obj)} keys: {_show(dict(obj))}; combine several with $and / $or"
        )
    if depth > _MAX_DEPTH:
        raise InvalidFilterError(
            f"where_document nesting of $and/$or is deeper than {_MAX_DEPTH} levels{_where(loc)}; flatten it"
        )
    ((op, value),) = obj.items()
    here = f"{loc}.{op}" if loc else str(op)
    if op in _LOGICAL:
        if not isinstance(value, list | tuple) or not value:
            got = "an empty list" if isinstance(value, list | tuple) else f"{_kind(value)} {_show(value)}"
            raise InvalidFilterError(
                f"where_document {op}{_where(loc)} expects a non-empty list of expressions; got {got}"
            )
        kids: dict[str, _DocNode] = {}
        for i, item in enumerate(value):
            child = _parse(item, f"{here}[{i}]", depth + 1)
            # flatten a nested same-operator list; sorted and deduplicated so one meaning has one text
            for c in child.children if isinstance(child, _Bool) and child.op == op else (child,):
                kids[c.text] = c
        if len(kids) == 1:
            return next(iter(kids.values()))
        ordered = tuple(kids[t] for t in sorted(kids))
        return _Bool(op, ordered, f'{{"{op}":[' + ",".join(c.text for c in ordered) + "]}")
    if op in DOCUMENT_OPERATORS:
        text = _operand(str(op), value, loc)
        pattern = None
        if op in ("$regex", "$not_regex"):
            try:
                pattern = re.compile(text)
            except re.error as exc:
                raise InvalidFilterError(
                    f"where_document operand of {op}{_where(loc)} must be a regular expression (Python "
                    f"re syntax); got {_show(text)}: {exc}"
                ) from exc
        return _Leaf(str(op), text, pattern, _dumps({op: text}))
    raise InvalidFilterError(
        f"where_document operator {_show(op)}{_where(loc)} is unknown; expected one of "
        f"{', '.join(DOCUMENT_OPERATORS + _LOGICAL)}"
    )


def _matches(node: _DocNode, document: str | None) -> bool:
    if isinstance(node, _Bool):
        parts = (_matches(c, document) for c in node.children)
        return all(parts) if node.op == "$and" else any(parts)
    op = node.op
    if op == "$contains":
        return document is not None and node.operand in document
    if op == "$not_contains":
        return document is None or node.operand not in document
    pattern = node.pattern  # compiled by the parser for every regex operand
    found = document is not None and pattern is not None and pattern.search(document) is not None
    return found if op == "$regex" else not found


def _needs_python(node: _DocNode) -> bool:
    if isinstance(node, _Bool):
        return any(_needs_python(c) for c in node.children)
    return node.pattern is not None


def _sql(node: _DocNode, col: str) -> tuple[str, list[Any]] | None:
    """The exact SQL of an expression, 0 or 1 for every row (never NULL); None if it holds a regex."""
    if isinstance(node, _Bool):
        parts = [_sql(c, col) for c in node.children]
        if any(p is None for p in parts):
            return None
        joiner = " AND " if node.op == "$and" else " OR "
        return (
            "(" + joiner.join(p[0] for p in parts if p is not None) + ")",
            [x for p in parts if p is not None for x in p[1]],
        )
    if node.op == "$contains":
        return f"({col} IS NOT NULL AND instr({col}, ?) > 0)", [node.operand]
    if node.op == "$not_contains":
        return f"({col} IS NULL OR instr({col}, ?) = 0)", [node.operand]
    return None


def _prefilter(node: _DocNode, col: str) -> tuple[str, list[Any]] | None:
    """A SQL condition every match meets (a superset; None: no restriction): narrows the Python pass."""
    exact = _sql(node, col)
    if exact is not None:
        return exact
    if isinstance(node, _Leaf):
        return (f"({col} IS NOT NULL)", []) if node.op == "$regex" else None
    parts = [_prefilter(c, col) for c in node.children]
    if node.op == "$and":
        kept = [p for p in parts if p is not None]
    elif any(p is None for p in parts):
        return None
    else:
        kept = [p for p in parts if p is not None]
    if not kept:
        return None
    joiner = " AND " if node.op == "$and" else " OR "
    return "(" + joiner.join(p[0] for p in kept) + ")", [x for p in kept for x in p[1]]


@dataclass(frozen=True, slots=True)
class DocumentFilter:
    """A validated ``where_document`` expression. Build it with :func:`parse_where_document`.

    Attributes:
        canonical: Deterministic JSON text (``$and`` / ``$or`` lists flattened, sorted, deduplicated),
            for cache keys.
        needs_python: The expression holds a regex, which SQLite cannot evaluate.
    """

    canonical: str
    needs_python: bool
    _root: _DocNode = field(repr=False, compare=False)

    def matches(self, document: str | None) -> bool:
        """Evaluate the expression on one document in Python (None: the record has no document)."""
        return _matches(self._root, document)

    def to_sql(self, column: str = "document") -> tuple[str, list[Any]] | None:
        """The exact SQLite condition over the document column, or None when a regex needs Python.

        Args:
            column: The (already quoted) document column.
        """
        return _sql(self._root, column)

    def prefilter(self, column: str = "document") -> tuple[str, list[Any]] | None:
        """A SQLite condition every matching row meets (None: none narrower than every row)."""
        return _prefilter(self._root, column)


def parse_where_document(obj: Mapping[str, Any] | DocumentFilter | None) -> DocumentFilter | None:
    """Validate a ``where_document`` expression (see the module docstring).

    Args:
        obj: The expression as a dict, an already parsed :class:`DocumentFilter`, or None (no restriction).

    Returns:
        The parsed expression, or None for None.

    Raises:
        InvalidFilterError: Malformed: not a dict, empty, several operators in one object, an unknown
            operator, an operand that is not a non-empty string, an invalid regular expression.
    """
    if obj is None or isinstance(obj, DocumentFilter):
        return obj
    root = _parse(obj, "", 0)
    return DocumentFilter(root.text, _needs_python(root), root)


# Reads the labels of the rows a SQL condition over ``records`` selects that also match ``doc``.
LabelReader: TypeAlias = Callable[["DocumentFilter", str | None, list[Any]], list[int]]


def _always(_metadata: Any) -> bool:
    return True


@dataclass(frozen=True, slots=True, kw_only=True)
class RecordFilter(Filter):
    """A metadata filter (or none) AND a document filter, usable wherever a :class:`Filter` is.

    :meth:`matches` tests the metadata part only (a necessary condition: all a record's metadata can
    tell, which is what the executor's re-check and the filter cache's upkeep give it); :func:`recheck`
    tests the document part of hits. :meth:`to_sql` selects on both columns.

    Attributes:
        metadata_filter: The metadata part, or None.
        document: The document part.
    """

    reads_documents: ClassVar[bool] = True

    metadata_filter: Filter | None = field(compare=False)
    document: DocumentFilter = field(compare=False)
    _read_labels: LabelReader | None = field(default=None, repr=False, compare=False)

    def to_sql(self, column: str = "metadata") -> tuple[str, list[Any]]:
        """A SQLite condition over ``records`` selecting on the metadata and the document.

        When the document part holds a regex, the matching labels are read now (Python over the rows
        the rest selects) and bound as a JSON list, so the text is not cached: it is true only now.

        Args:
            column: The metadata column (``metadata`` or ``table.metadata``); the document column is
                its sibling ``document``.
        """
        meta_sql, meta_params = (
            self.metadata_filter.to_sql(column) if self.metadata_filter is not None else (None, [])
        )
        table, _, _ = column.rpartition(".")
        doc_col = f'"{table}"."document"' if table else '"document"'
        label_col = f'"{table}"."label"' if table else '"label"'
        doc_sql = self.document.to_sql(doc_col)
        if doc_sql is None:
            if self._read_labels is None:
                raise InvalidFilterError(
                    "a where_document holding $regex / $not_regex needs a collection to evaluate it; "
                    f"got {self.document.canonical} outside one"
                )
            # the store's scan reads ``records`` itself: its conditions name the plain columns
            parts = [self.document.prefilter('"document"')]
            if self.metadata_filter is not None:
                parts.append(self.metadata_filter.to_sql("metadata"))
            where, params = _and([p for p in parts if p is not None])
            labels = self._read_labels(self.document, where, params)
            doc_sql = f"{label_col} IN (SELECT value FROM json_each(?))", [_dumps(labels)]
        if meta_sql is None:
            return doc_sql[0], list(doc_sql[1])
        return f"({meta_sql}) AND ({doc_sql[0]})", [*meta_params, *doc_sql[1]]


def _and(parts: list[tuple[str, list[Any]]]) -> tuple[str | None, list[Any]]:
    """One condition ANDing ``parts`` (None when there are none)."""
    if not parts:
        return None, []
    return " AND ".join(f"({sql})" for sql, _ in parts), [x for _, params in parts for x in params]


def _python_labels(store: Store, cid: int) -> LabelReader:
    """A :data:`LabelReader` over one collection of ``store``: pages of rows, tested in Python."""

    def read(doc: DocumentFilter, where: str | None, params: list[Any]) -> list[int]:
        out: list[int] = []
        after = -1
        while rows := store.scan(cid, where, params, after_label=after, limit=_SCAN_PAGE, vectors=False):
            out.extend(row.label for row in rows if doc.matches(row.document))
            after = rows[-1].label
        return out

    return read


def combine(
    flt: Filter | None, where_document: Mapping[str, Any] | None, store: Store, cid: int, version: int
) -> Filter | None:
    """The filter of a call given a metadata filter and a ``where_document`` expression.

    Args:
        flt: The parsed (and type-checked) metadata filter, or None.
        where_document: The raw ``where_document`` argument, or None.
        store: The store holding the collection (a regex is evaluated over its rows).
        cid: The collection's id in the store.
        version: The collection's write sequence number now. It is part of the canonical text, so a
            label set cached under it is never used after a write: a documents-only ``update`` changes
            which records match without reaching ``FilterCache.update`` (which sees metadata).

    Returns:
        ``flt`` itself when there is no document expression, else a :class:`RecordFilter`.

    Raises:
        InvalidFilterError: ``where_document`` is malformed (see :func:`parse_where_document`).
    """
    doc = parse_where_document(where_document)
    if doc is None:
        return flt
    meta = parse_filter(flt)
    # "$document" can never be a metadata field name (a "$" key is an operator), so this canonical text
    # is never that of a metadata-only filter: the filter caches cannot confuse the two.
    part = '{"$document":' + doc.canonical + ',"$version":' + str(int(version)) + "}"
    canonical = part if meta is None else '{"$and":[' + meta.canonical + "," + part + "]}"
    return RecordFilter(
        canonical=canonical,
        fields=meta.fields if meta is not None else frozenset(),
        _root=meta._root if meta is not None else _TRUE,
        _match=meta._match if meta is not None else _always,
        metadata_filter=meta,
        document=doc,
        _read_labels=_python_labels(store, cid) if doc.needs_python else None,
    )


def recheck(hits: Hits, flt: Filter | None) -> Hits:
    """``hits`` without those whose document no longer matches ``flt``'s document part.

    Why: the label set that admitted a hit may have been read before a write that changed its document,
    and its row after (the executor re-checks the metadata part itself, in ``to_hits``).
    """
    if not isinstance(flt, RecordFilter):
        return hits
    doc = flt.document
    kept = [h for h in hits if doc.matches(h.document)]
    return hits if len(kept) == len(hits) else Hits(kept, partial=hits.partial, plan=hits.plan)


def recheck_batch(batch: list[list[Hit]], flt: Filter | None) -> list[list[Hit]]:
    """:func:`recheck` of each query's hits in a batch."""
    if not isinstance(flt, RecordFilter):
        return batch
    doc = flt.document
    return [[h for h in hits if doc.matches(h.document)] for hits in batch]


def recheck_steps(
    steps: Generator[SearchStep, None, None], flt: Filter | None
) -> Generator[SearchStep, None, None]:
    """:func:`recheck` of each step of a progressive search."""
    if not isinstance(flt, RecordFilter):
        yield from steps
        return
    try:
        for step in steps:
            yield dataclasses.replace(step, hits=recheck(step.hits, flt))
    finally:
        steps.close()  # closing this iterator stops the search's passes, as closing ``steps`` does
