"""Files to documents for ``embeddix ingest``: text, Markdown, JSONL and CSV, each checked whole.

A file is read and checked completely before anything of it is stored, so that a bad line is reported
(path and line) and the file skipped, never half-ingested. Every check a record would meet in the store
(id, metadata) runs here, with the line at hand; the store's own message carries no line.

Formats, by suffix:

* ``.jsonl`` / ``.ndjson``: one JSON object a line, ``{"text": ..., "id": ..., "metadata": {...}}``; only
  ``text`` is required; blank lines are skipped; any other key is an error (a typo would otherwise lose data).
* ``.csv``: a header row with a ``text`` column; an ``id`` column is optional; every other column becomes
  a metadata field (a string; an empty cell is left out).
* anything else (``.txt``, ``.md``, ...): the whole file is one document. It must be UTF-8 text: a file
  with a NUL byte or invalid UTF-8 is reported as binary.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .._validate import check_ids, check_metadata
from ..errors import InvalidArgumentError

__all__ = ["BadFileError", "Document", "read_documents"]

JSONL_SUFFIXES = frozenset({".jsonl", ".ndjson"})
CSV_SUFFIXES = frozenset({".csv"})
_JSONL_KEYS = frozenset({"id", "text", "metadata"})
# Where a NUL byte is looked for: text files hold none, and almost every binary format has one early.
_SNIFF_BYTES = 8192


class BadFileError(InvalidArgumentError):
    """A file that cannot be ingested; ``path`` and ``line`` (1-based, or None) say where.

    Private to the command line (not exported): the command reports it and goes on with the next file.
    """

    def __init__(self, path: Path, line: int | None, problem: str) -> None:
        where = f"{path}:{line}" if line is not None else str(path)
        super().__init__(f"{where}: {problem}")
        self.path = path
        self.line = line


@dataclass(frozen=True, slots=True)
class Document:
    """One document read from a file, before chunking.

    Attributes:
        text: The text to embed.
        id: The id the file gave it (JSONL ``id``, CSV ``id`` column), or None: one is derived from the
            content.
        metadata: The file's metadata for it (checked), without the fields ingest adds.
        line: Its line in the file (JSONL, CSV), or None for a whole-file document.
    """

    text: str
    id: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    line: int | None = None


def read_documents(path: Path) -> list[Document]:
    """Read and check every document of one file.

    Args:
        path: The file.

    Returns:
        Its documents in file order (empty for an empty file).

    Raises:
        BadFileError: The file is unreadable, binary, or has a malformed line (the message names it).
    """
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise BadFileError(path, None, f"cannot read the file: {exc.strerror or exc}") from exc
    text = _decode(path, raw)
    suffix = path.suffix.lower()
    if suffix in JSONL_SUFFIXES:
        docs = _jsonl(path, text)
    elif suffix in CSV_SUFFIXES:
        docs = _csv(path, text)
    else:
        docs = [Document(text)] if text.strip() else []
    _check_unique_ids(path, docs)
    return docs


def _decode(path: Path, raw: bytes) -> str:
    nul = raw.find(b"\x00", 0, _SNIFF_BYTES)
    if nul != -1:
        raise BadFileError(
            path,
            raw.count(b"\n", 0, nul) + 1,
            f"expected UTF-8 text, found a NUL byte at offset {nul} (a binary file?)",
        )
    try:
        # utf-8-sig: a byte-order mark (common in CSV saved by spreadsheets) is not part of the first field
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise BadFileError(
            path,
            raw.count(b"\n", 0, exc.start) + 1,
            f"expected UTF-8 text, found byte 0x{raw[exc.start]:02x} at offset {exc.start} (a binary file "
            "or another encoding?); convert it to UTF-8",
        ) from None


def _jsonl(path: Path, text: str) -> list[Document]:
    docs: list[Document] = []
    for n, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise BadFileError(
                path, n, f"expected one JSON object per line: {exc.msg} (column {exc.colno})"
            ) from None
        if not isinstance(obj, dict):
            raise BadFileError(
                path, n, f"expected a JSON object with 'text'; got a JSON {type(obj).__name__}"
            )
        unknown = sorted(set(obj) - _JSONL_KEYS)
        if unknown:
            raise BadFileError(
                path, n, f"unknown key(s) {unknown}; a line holds 'text' and optionally 'id' and 'metadata'"
            )
        body = obj.get("text")
        if not isinstance(body, str) or not body.strip():
            raise BadFileError(path, n, f"expected 'text' to be a non-empty string; got {body!r:.60}")
        docs.append(Document(body, _id(path, n, obj.get("id")), _metadata(path, n, obj.get("metadata")), n))
    return docs


def _csv(path: Path, text: str) -> list[Document]:
    reader = csv.DictReader(io.StringIO(text, newline=""))
    try:
        columns = reader.fieldnames or []
        if "text" not in columns:
            raise BadFileError(path, 1, f"expected a header row with a 'text' column; got columns {columns}")
        docs: list[Document] = []
        for row in reader:
            n = reader.line_num
            if None in row:
                raise BadFileError(
                    path, n, f"{len(row[None])} more field(s) than the header's {len(columns)}"
                )
            body = row.get("text") or ""
            if not body.strip():
                continue  # an empty row or an empty text cell: nothing to embed
            meta = {k: v for k, v in row.items() if k not in ("id", "text") and v}
            rid = row.get("id") or None
            docs.append(Document(body, _id(path, n, rid), _metadata(path, n, meta), n))
    except csv.Error as exc:
        raise BadFileError(path, reader.line_num, f"malformed CSV: {exc}") from None
    return docs


def _id(path: Path, line: int, rid: Any) -> str | None:
    if rid is None:
        return None
    if isinstance(rid, int) and not isinstance(rid, bool):
        rid = str(rid)  # an integer id in JSON is a common and unambiguous way to write one
    try:
        return check_ids([rid])[0]
    except InvalidArgumentError as exc:
        raise BadFileError(path, line, f"bad 'id': {exc}") from None


def _metadata(path: Path, line: int, meta: Any) -> dict[str, Any]:
    try:
        return check_metadata(meta)
    except InvalidArgumentError as exc:
        raise BadFileError(path, line, f"bad 'metadata': {exc}") from None


def _check_unique_ids(path: Path, docs: list[Document]) -> None:
    first: dict[str, int | None] = {}
    for d in docs:
        if d.id is None:
            continue
        if d.id in first:
            raise BadFileError(path, d.line, f"id {d.id!r} was already given on line {first[d.id]}")
        first[d.id] = d.line
