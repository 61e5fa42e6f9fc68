"""Input checks shared by the write and search paths: convert once, check once, name what came."""

from __future__ import annotations

import functools
import json
import math
import os
import struct
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from . import _native
from .errors import (
    DimensionMismatchError,
    InvalidArgumentError,
    InvalidIdError,
    InvalidMetadataError,
    InvalidVectorError,
)
from .query.filters import MAX_FIELD_LENGTH

MAX_ID_BYTES = 512
MAX_K = 100_000
# An explicit beam below k is widened to k by the planner, so any ef up to the largest k can matter;
# beyond it hnswlib only allocates a bigger candidate heap for no recall (the beam is capped by the
# collection's size anyway). The collection's own default, ef_search, keeps its 32768 cap in config.py.
MAX_EF = MAX_K
# A full-text query is a question, not a document: 32 KiB of text is thousands of words, far beyond the
# 64 distinct terms fts_query keeps (query/fusion.py). The limit turns a pasted megabyte into a clear
# error instead of a silently truncated query.
MAX_TEXT_QUERY_CHARS = 32_768
# float32's largest finite value; a finite double beyond it becomes infinity when stored.
_FLOAT32_MAX = float(np.finfo(np.float32).max)
_F32 = np.dtype(np.float32)


_SCALARS = (str, int, float, bool)
_INTEGER = (int, np.integer)  # a tuple: ``int | np.integer`` would build a union on every call


def as_matrix(vectors: Any, dim: int, *, what: str = "vectors") -> np.ndarray:
    """Convert vectors to a C-contiguous float32 (n, dim) array, checking shape and finiteness.

    A single 1-D vector becomes a (1, dim) matrix.
    """
    if isinstance(vectors, np.ndarray) and vectors.dtype == np.float32 and vectors.flags.c_contiguous:
        arr = vectors
    else:
        arr = _to_float32(vectors, dim, what)
    if arr.ndim == 1:
        arr = arr.reshape(1, -1)
    if arr.ndim != 2:
        raise InvalidVectorError(f"{what} must be 1-D or 2-D; got an array of shape {arr.shape}")
    if arr.shape[0] == 0:
        raise InvalidVectorError(f"{what} is empty: expected at least one vector of dimension {dim}")
    if arr.shape[1] != dim:
        raise DimensionMismatchError(
            f"{what}: expected dimension {dim} (the collection's), got {arr.shape[1]}"
        )
    if not np.isfinite(arr).all():
        _raise_not_finite(arr, vectors, what)
    return arr


def _to_float32(vectors: Any, dim: int, what: str) -> np.ndarray:
    """numpy's float32 conversion, refusing what it would silently mangle (text, complex, None)."""
    expected = f"{what} must be numeric: a list of floats or a (n, {dim}) float array"
    # errstate: a finite double beyond float32's range becomes inf here, reported by the caller with the
    # value that came (numpy's RuntimeWarning says less, and is an error under pytest's -W error).
    with np.errstate(over="ignore", invalid="ignore"):
        try:
            raw = vectors if isinstance(vectors, np.ndarray) else np.asarray(vectors)
        except (TypeError, ValueError, OverflowError) as exc:  # ragged rows, odd __array__
            raise InvalidVectorError(
                f"{expected}; got {type(vectors).__name__} that numpy cannot read as an array ({exc})"
            ) from exc
        kind = raw.dtype.kind
        if kind == "O":
            # Python ints beyond 64 bits, None, Decimal, mixed lists: numpy keeps objects, and would turn
            # None into NaN; only real numbers are vector coordinates.
            odd = next((x for x in raw.flat if not _real(x)), _NO_ODD)
            if odd is not _NO_ODD:
                raise InvalidVectorError(
                    f"{expected}; got {type(vectors).__name__} holding {type(odd).__name__} {_short(odd)}"
                )
        elif kind not in "biuf":
            # text ("1.5" would parse), complex (numpy drops the imaginary part), dates, bytes
            raise InvalidVectorError(f"{expected}; got {type(vectors).__name__} of {raw.dtype} values")
        try:
            return np.ascontiguousarray(raw, dtype=np.float32)
        except OverflowError as exc:
            raise InvalidVectorError(
                f"{what} holds an integer too large for a float ({exc}); expected finite floats"
            ) from exc


_NO_ODD = object()


def _real(x: Any) -> bool:
    return isinstance(x, int | float | np.integer | np.floating)


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _raise_not_finite(arr: np.ndarray, source: Any, what: str) -> None:
    """Name the first non-finite coordinate and say whether it came so or overflowed float32."""
    mat = arr.reshape(1, -1) if arr.ndim == 1 else arr
    row, col = (int(i) for i in np.argwhere(~np.isfinite(mat))[0])
    try:
        src = np.asarray(source, dtype=np.float64).reshape(mat.shape)
        came = float(src[row, col])
    except (TypeError, ValueError, OverflowError):
        came = float(mat[row, col])
    if math.isfinite(came):
        raise InvalidVectorError(
            f"{what}[{row}] holds {came!r} at position {col}, beyond float32's range "
            f"(+-{_FLOAT32_MAX:.4g}): it would be stored as infinity; expected finite floats, "
            "no NaN or infinity"
        )
    raise InvalidVectorError(
        f"{what}[{row}] holds {came} (NaN or infinity) at position {col}; expected finite floats"
    )


@functools.cache
def _floats(dim: int) -> struct.Struct:
    return struct.Struct(f"{dim}f")


def as_query(vector: Any, dim: int) -> tuple[np.ndarray, float]:
    """Convert one query vector to a finite float32 (dim,) array and its squared norm.

    The hot path: no copy when the input is already right.

    Finiteness is checked through the squared norm, which the caller needs anyway for normalizing:
    one dot instead of a separate pass (a non-finite norm triggers the precise check). The norm is
    computed in float64, so it is exact enough, and non-zero, for every finite non-zero float32 vector.
    """
    arr: np.ndarray | None = None
    if (
        isinstance(vector, np.ndarray)
        and vector.dtype == np.float32
        and vector.ndim == 1
        and vector.shape[0] == dim
        and vector.flags.c_contiguous
    ):
        arr = vector
    elif type(vector) is list and len(vector) == dim:
        # Framework embeddings arrive as Python lists of floats. Packing them as C floats takes 2.5 us
        # for 384 against 6.3 us for numpy's per-element conversion, with the same rounding; anything
        # struct refuses (strings, None, values beyond float32) takes numpy's path and its errors.
        try:
            arr = np.frombuffer(_floats(dim).pack(*vector), np.float32)
        except (struct.error, TypeError, OverflowError):
            arr = None
    if arr is None:
        mat = as_matrix(vector, dim, what="query vector")
        if mat.shape[0] != 1:
            raise InvalidVectorError(
                f"query vector must be one vector of dimension {dim}; got {mat.shape[0]} rows "
                "(use search_batch for several)"
            )
        arr = mat[0]
    # The squared norm in float64: squaring 2e20 overflows float32 (a cosine query then normalizes to
    # zeros and matches anything, with a RuntimeWarning) and squaring 1e-25 underflows it (the query is
    # then "all zeros"). The widening copy costs ~0.7 us at dim 384; a float64 sum of float32 squares
    # can neither overflow nor underflow, so a non-finite result means a non-finite input.
    wide = arr.astype(np.float64)
    sq = float(wide.dot(wide))
    if not math.isfinite(sq):
        _raise_not_finite(arr, vector, "query vector")
    return arr, sq


def prepared_query(vector: Any, dim: int, normalize: bool) -> np.ndarray:
    """:func:`as_query`, then :func:`unit_query` when ``normalize`` (cosine): the query the index compares.

    A float32 (dim,) array, the usual input, takes one compiled call (``_hits.prepare_query``: the checks,
    the norm and the scaling), where the numpy steps cost ~6 us a query here and the checks a few more on
    a search's cold caches; anything else, and every input that is not finite or is all zeros, takes the
    Python path, which converts and raises.
    """
    prepare = _native.prepare_query
    if prepare is not None:
        q = prepare(vector, dim, normalize)
        if q is not None:
            return q
    q, sq = as_query(vector, dim)
    return unit_query(q, sq) if normalize else q


def unit_query(q: np.ndarray, sq: float) -> np.ndarray:
    """Scale a query to unit length given its squared norm from :func:`as_query` (for cosine).

    Raises:
        InvalidVectorError: the vector is all zeros (no direction to compare).
    """
    if sq == 0.0:
        raise InvalidVectorError("query vector is all zeros; cosine search needs a non-zero vector")
    scale = 1.0 / math.sqrt(sq)
    if scale < _FLOAT32_MAX:
        return q * np.float32(scale)
    # a vector of float32 denormals: its inverse norm is beyond float32, so scale in float64
    return (q.astype(np.float64) * scale).astype(np.float32)


def unit_rows(mat: np.ndarray, what: str = "vector", *, keep_zeros: bool = False) -> np.ndarray:
    """Unit-length float32 rows (for cosine), with norms computed in float64 so that huge finite vectors
    do not overflow and tiny ones do not vanish.

    Args:
        mat: (n, dim) float32 rows.
        what: How the error names a row.
        keep_zeros: Leave all-zero and NaN rows as they are (rows read back for re-ranking, where NaN
            marks a deleted record) instead of raising.

    Raises:
        InvalidVectorError: a row is all zeros (unless ``keep_zeros``).
    """
    wide = mat.astype(np.float64)
    norms = np.sqrt(np.einsum("ij,ij->i", wide, wide))
    if keep_zeros:
        norms[~(norms > 0)] = 1.0
    elif (norms == 0).any():
        bad = int(np.flatnonzero(norms == 0)[0])
        raise InvalidVectorError(
            f"{what} {bad} is all zeros; a cosine collection needs a non-zero vector to normalize"
        )
    return (wide / norms[:, None]).astype(np.float32)


def check_ids(ids: Any, n: int | None = None) -> list[str]:
    """Validate a list of ids: non-empty strings up to 512 UTF-8 bytes, unique within the batch."""
    if isinstance(ids, str):
        ids = [ids]
    if not isinstance(ids, Sequence) and not isinstance(ids, np.ndarray):
        raise InvalidIdError(f"ids must be a string or a list of strings; got {type(ids).__name__}")
    out = list(ids)
    if not out:
        raise InvalidIdError("ids is empty: expected at least one id")
    for i, rid in enumerate(out):
        if not isinstance(rid, str):
            raise InvalidIdError(f"ids[{i}] must be a string; got {type(rid).__name__} {rid!r}")
        if not rid:
            raise InvalidIdError(f"ids[{i}] is an empty string; ids must be non-empty")
        try:
            size = len(rid.encode("utf-8"))
        except UnicodeEncodeError:
            raise InvalidIdError(
                f"ids[{i}] is not valid Unicode (unpaired surrogate); expected UTF-8 text"
            ) from None
        if size > MAX_ID_BYTES:
            raise InvalidIdError(
                f"ids[{i}] is {len(rid.encode('utf-8'))} bytes long; at most {MAX_ID_BYTES} bytes allowed"
            )
    if len(set(out)) != len(out):
        seen: set[str] = set()
        dup = next(r for r in out if r in seen or seen.add(r))  # type: ignore[func-returns-value]
        raise InvalidIdError(f"id {dup!r} appears more than once in one batch; ids in a batch must be unique")
    if n is not None and len(out) != n:
        raise InvalidArgumentError(f"got {len(out)} ids for {n} vectors; expected one id per vector")
    return out


def check_documents(documents: Any, n: int) -> list[str | None]:
    """Validate optional documents: None, or one str/None per record."""
    if documents is None:
        return [None] * n
    if isinstance(documents, str):
        documents = [documents]
    docs = _as_list(documents, "documents", "a list of strings (or None), one per record")
    if len(docs) != n:
        raise InvalidArgumentError(f"got {len(docs)} documents for {n} records; expected one per record")
    for i, doc in enumerate(docs):
        if doc is not None and not isinstance(doc, str):
            raise InvalidArgumentError(f"documents[{i}] must be a string or None; got {type(doc).__name__}")
        if doc:
            try:
                doc.encode("utf-8")
            except UnicodeEncodeError:
                raise InvalidArgumentError(
                    f"documents[{i}] is not valid Unicode (unpaired surrogate); expected UTF-8 text"
                ) from None
    return docs


def _as_list(values: Any, what: str, expected: str) -> list[Any]:
    # bytes, dicts and sets iterate, but never as one item per record: a set has no order to pair with ids
    if isinstance(values, bytes | bytearray | set | frozenset | Mapping) or not isinstance(values, Iterable):
        raise InvalidArgumentError(f"{what} must be {expected}; got {type(values).__name__}")
    return list(values)


def _check_scalar(key: str, value: Any, where: str) -> bool:
    """True for an allowed scalar; raise for a scalar SQLite's JSON functions would mangle."""
    if isinstance(value, bool):
        return True
    if isinstance(value, int):
        if not -(2**63) <= value < 2**63:
            raise InvalidMetadataError(f"{where}[{key!r}] is {value}; metadata integers must fit in 64 bits")
        return True
    if isinstance(value, float):
        if not math.isfinite(value):
            raise InvalidMetadataError(f"{where}[{key!r}] is {value}; metadata floats must be finite")
        return True
    if isinstance(value, str):
        _check_text(value, f"{where}[{key!r}]")
        return True
    return False


def _check_text(text: str, what: str) -> None:
    # SQLite's JSON functions stop at NUL, and unpaired surrogates cannot be stored as UTF-8.
    if "\x00" in text:
        raise InvalidMetadataError(f"{what} contains a NUL character; metadata text cannot hold NUL")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidMetadataError(
            f"{what} is not valid Unicode ({exc.reason}); expected UTF-8 text"
        ) from None


def _check_value(key: str, value: Any, where: str) -> None:
    if _check_scalar(key, value, where):
        return
    if isinstance(value, list | tuple):
        for item in value:
            if not _check_scalar(key, item, where):
                raise InvalidMetadataError(
                    f"{where}[{key!r}] holds {item!r} ({type(item).__name__}); list items must be "
                    "str, int, float or bool"
                )
        return
    raise InvalidMetadataError(
        f"{where}[{key!r}] is a {type(value).__name__}; metadata values must be str, int, float, bool "
        "or lists of those"
    )


def _check_key(key: str, where: str) -> None:
    """Only keys the filter language can address are stored: a key no filter can reach is a silent trap.

    Filters read ``$``-prefixed keys as operators and refuse names beyond MAX_FIELD_LENGTH; every other
    key (spaces, quotes, dots, backslashes, any Unicode) is reachable (see query/filters.py, "SQL").
    """
    _check_text(key, f"{where} key {_short(key)}")
    if key.startswith("$"):
        raise InvalidMetadataError(
            f"{where} key {_short(key)} starts with '$'; metadata keys may not start with '$', which "
            "filters read as an operator (rename it, e.g. without the '$')"
        )
    if len(key) > MAX_FIELD_LENGTH:
        raise InvalidMetadataError(
            f"{where} key {_short(key)} is {len(key)} characters long; metadata keys may be at most "
            f"{MAX_FIELD_LENGTH} characters, the longest field name a filter accepts"
        )


def check_metadata(meta: Any, where: str = "metadata") -> dict[str, Any]:
    """Validate one metadata mapping and return it as a plain dict (None -> {})."""
    if meta is None:
        return {}
    if not isinstance(meta, Mapping):
        raise InvalidMetadataError(f"{where} must be a dict; got {type(meta).__name__}")
    out: dict[str, Any] = {}
    for key, value in meta.items():
        if not isinstance(key, str) or not key:
            raise InvalidMetadataError(f"{where} keys must be non-empty strings; got {key!r}")
        _check_key(key, where)
        if value is None:
            continue  # JSON null carries no information a filter could use; dropping it keeps $exists exact
        _check_value(key, value, where)
        out[key] = list(value) if isinstance(value, tuple) else value
    return out


def check_metadatas(metadatas: Any, n: int) -> list[dict[str, Any]]:
    """Validate optional per-record metadata: None, or one mapping/None per record."""
    if metadatas is None:
        return [{} for _ in range(n)]
    if isinstance(metadatas, Mapping):
        metadatas = [metadatas]
    metas = _as_list(metadatas, "metadatas", "a list of dicts (or None), one per record")
    if len(metas) != n:
        raise InvalidArgumentError(f"got {len(metas)} metadatas for {n} records; expected one per record")
    return [check_metadata(m, f"metadatas[{i}]") for i, m in enumerate(metas)]


def dump_metadata(meta: dict[str, Any]) -> str | None:
    """Serialize metadata as compact JSON (None when empty, so empty metadata costs no bytes)."""
    if not meta:
        return None
    return json.dumps(meta, separators=(",", ":"), ensure_ascii=False)


def check_k(k: Any) -> int:
    """k must be a positive integer; larger than the collection is fine (all records come back)."""
    if type(k) is int and 0 < k <= MAX_K:
        return k  # the usual call, checked in ~0.1 us
    if isinstance(k, bool) or not isinstance(k, _INTEGER):
        raise InvalidArgumentError(f"k must be a positive integer; got {type(k).__name__} {k!r}")
    if k <= 0:
        raise InvalidArgumentError(f"k must be a positive integer; got {k}")
    if k > MAX_K:
        raise InvalidArgumentError(f"k must be at most {MAX_K}; got {k}")
    return int(k)


def check_ef(ef: Any) -> int | None:
    """An explicit HNSW beam width: None (let the planner choose) or an integer from 1 to MAX_EF.

    Raises:
        InvalidArgumentError: ef is not an integer (bools and integral floats included) or is out of range.
    """
    if ef is None:
        return None
    # bool is an int subclass, and ef=True is a mistake, not a beam of 1; 2.0 is refused like 2.5 so a
    # computed float never silently truncates.
    if isinstance(ef, bool) or not isinstance(ef, _INTEGER):
        raise InvalidArgumentError(
            f"ef must be an integer from 1 to {MAX_EF} or None; got {type(ef).__name__} {_short(ef)}"
        )
    if not 1 <= ef <= MAX_EF:
        raise InvalidArgumentError(f"ef must be an integer from 1 to {MAX_EF} or None; got {ef}")
    return int(ef)


def check_text_query(text: Any) -> str:
    """A full-text query: a string of at most MAX_TEXT_QUERY_CHARS characters.

    Raises:
        InvalidArgumentError: text is not a string or is longer than the limit.
    """
    if not isinstance(text, str):
        raise InvalidArgumentError(f"text must be a string; got {type(text).__name__} {_short(text)}")
    if len(text) > MAX_TEXT_QUERY_CHARS:
        raise InvalidArgumentError(
            f"text is {len(text)} characters long; a full-text query may be at most {MAX_TEXT_QUERY_CHARS} "
            "characters (only its first 64 distinct words are searched anyway): pass a shorter query"
        )
    return text


def check_lookup_ids(ids: Any) -> tuple[list[str], bool]:
    """Ids to read (``get``, ``col[id]``): one id or a list; absent ids are not an error here.

    Returns:
        The ids as a list, and whether one id (not a list) was given.

    Raises:
        InvalidIdError: ids is neither a string nor a list of strings, or an id is not valid Unicode.
    """
    single = isinstance(ids, str)
    if single:
        id_list = [ids]
    elif isinstance(ids, Sequence | np.ndarray) and not isinstance(ids, bytes | bytearray):
        id_list = list(ids)
    else:
        raise InvalidIdError(
            f"ids must be a string or a list of strings; got {type(ids).__name__} {_short(ids)}"
        )
    for i, rid in enumerate(id_list):
        if not isinstance(rid, str):
            raise InvalidIdError(f"ids[{i}] must be a string; got {type(rid).__name__} {_short(rid)}")
        try:
            rid.encode("utf-8")
        except UnicodeEncodeError:
            # SQLite would fail to bind it; no stored id can hold one either (check_ids refuses them)
            raise InvalidIdError(
                f"ids[{i}] is not valid Unicode (unpaired surrogate); expected UTF-8 text"
            ) from None
    return id_list, single


def check_patch(patch: Any) -> dict[str, Any]:
    """A metadata patch for ``update_metadata``: a mapping (a None value removes that key).

    Raises:
        InvalidMetadataError: patch is not a mapping.
    """
    if not isinstance(patch, Mapping):
        raise InvalidMetadataError(
            f"patch must be a dict of metadata keys to new values (None removes a key); "
            f"got {type(patch).__name__} {_short(patch)}"
        )
    return dict(patch)


def check_int(value: Any, name: str, low: int, high: int) -> int:
    """An integer parameter (not a bool, not a float) in [low, high], e.g. batch_size or fetch_k.

    Raises:
        InvalidArgumentError: value is not an integer or is out of range.
    """
    if isinstance(value, bool) or not isinstance(value, _INTEGER) or not low <= value <= high:
        raise InvalidArgumentError(
            f"{name} must be an integer from {low} to {high}; got {type(value).__name__} {_short(value)}"
        )
    return int(value)


def check_fraction(value: Any, name: str) -> float:
    """A weight in [0, 1] such as mmr_lambda or text_weight (not a bool, not NaN).

    Raises:
        InvalidArgumentError: value is not a number between 0 and 1.
    """
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        raise InvalidArgumentError(
            f"{name} must be a number between 0 and 1; got {type(value).__name__} {_short(value)}"
        )
    if not 0.0 <= value <= 1.0:  # NaN fails too
        raise InvalidArgumentError(f"{name} must be between 0 and 1; got {value}")
    return float(value)


def check_data_path(path: Any) -> Path | None:
    """A data directory for ``Embeddix.open``: None (in memory), a str or an os.PathLike.

    Raises:
        InvalidArgumentError: path is another type, holds NUL, or is not valid Unicode.
    """
    if path is None:
        return None
    if not isinstance(path, str | os.PathLike):
        raise InvalidArgumentError(
            f"path must be a directory path (str or pathlib.Path) or None for an in-memory database; "
            f"got {type(path).__name__} {_short(path)}"
        )
    text = os.fspath(path)
    if not isinstance(text, str):
        raise InvalidArgumentError(f"path must be text, not bytes; got {_short(text)}")
    if "\x00" in text:
        raise InvalidArgumentError(
            f"path contains a NUL character, which no file system allows; got {_short(text)}"
        )
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidArgumentError(
            f"path is not valid Unicode (unpaired surrogate); got {_short(text)}"
        ) from None
    return Path(text).expanduser().resolve()
