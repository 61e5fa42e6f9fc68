"""The persistent tier's file format: cache entries to a ``diskcache`` directory and back.

Durability rule: entries are written on close and trusted on open only when the collection's sequence
number is the one they were saved at; any write in between could make them stale, so then the directory
is cleared and nothing is loaded. A lost or torn save costs cached answers, never a wrong one.

Format (``_FORMAT``), one diskcache key per entry (``"<session>\\0<key hex>"``) plus ``"__meta__"`` (JSON
``{"format", "seq"}``). An entry's value, never pickled::

    4 bytes  little-endian length of the JSON header
    header   JSON: session, key (hex), k, family [canonical filter, params], radius (null: inf), seq,
             semantic, exact, n (candidates), hits (rows with metadata JSON as text)
    query    dim float32
    labels   n little-endian int64
    dists    n little-endian float32

Candidate codes are not saved: a reloaded candidate without a code (no other entry holds one for its label)
is bounded by the triangle inequality instead (see ``certify.py``): looser, never wrong.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np

from ..query.filters import parse_filter
from .entry import Entry
from .result_cache import ResultCache

__all__ = ["load", "save"]

_FORMAT = 1


def save(directory: Path, seq: int, dim: int, namespaces: Iterable[tuple[str | None, ResultCache]]) -> int:
    """Write every entry of these namespaces to a diskcache directory, replacing what it held.

    Args:
        directory: The diskcache directory.
        seq: The collection's sequence number the entries reflect.
        dim: Vector dimension.
        namespaces: ``(session or None for the shared namespace, namespace)`` pairs.

    Returns:
        How many entries were written.
    """
    import diskcache  # optional tier: imported only when used

    written = 0
    with diskcache.Cache(str(directory)) as dc:
        dc.clear()
        dc.set("__meta__", json.dumps({"format": _FORMAT, "seq": seq}).encode())
        for session, ns in namespaces:
            for entry in ns.entries():
                params = ns.family_key(entry.family)
                if params is None:
                    continue
                dc.set(f"{session or ''}\x00{entry.key.hex()}", _encode(session, entry, params, dim))
                written += 1
    return written


def _encode(session: str | None, entry: Entry, params: tuple[Any, ...], dim: int) -> bytes:
    """One entry's value (see the module docstring)."""
    header = {
        "session": session,
        "key": entry.key.hex(),
        "k": entry.k,
        "family": list(params[1:]),
        "radius": None if math.isinf(entry.radius) else entry.radius,
        "seq": entry.seq,
        "semantic": entry.semantic,
        "exact": entry.exact,
        "n": len(entry.labels),
        "hits": [[*r[:4], r[4].decode() if isinstance(r[4], bytes) else r[4]] for r in entry.hits],
    }
    head = json.dumps(header, separators=(",", ":")).encode()
    query = np.frombuffer(entry.key[: dim * 4], np.float32)  # the key starts with the query's bytes
    return (
        len(head).to_bytes(4, "little")
        + head
        + query.tobytes()
        + entry.labels.astype("<i8").tobytes()
        + entry.dists.astype("<f4").tobytes()
    )


def load(directory: Path, seq: int, dim: int, namespace: Callable[[str | None], ResultCache]) -> int:
    """Store the entries saved at this same ``seq`` into their namespaces; anything else could be stale
    and is dropped (the directory is cleared).

    Args:
        directory: The diskcache directory.
        seq: The collection's current sequence number.
        dim: Vector dimension.
        namespace: The namespace of a session (None: the shared one), created on demand.

    Returns:
        How many entries were loaded.
    """
    import diskcache  # optional tier: imported only when used

    if not directory.exists():
        return 0
    loaded = 0
    with diskcache.Cache(str(directory)) as dc:
        meta_raw = dc.get("__meta__")
        if not isinstance(meta_raw, bytes):
            return 0
        meta = json.loads(meta_raw)
        if meta.get("format") != _FORMAT or meta.get("seq") != seq:
            dc.clear()
            return 0
        for key in list(dc.iterkeys()):
            if key == "__meta__":
                continue
            blob = dc.get(key)
            if isinstance(blob, bytes) and _restore(blob, seq, dim, namespace):
                loaded += 1
    return loaded


def _restore(blob: bytes, seq: int, dim: int, namespace: Callable[[str | None], ResultCache]) -> bool:
    """Decode one entry's value and store it in its namespace; False when it was saved at another seq."""
    hl = int.from_bytes(blob[:4], "little")
    header = json.loads(blob[4 : 4 + hl])
    if header["seq"] != seq:
        return False
    off = 4 + hl
    query = np.frombuffer(blob[off : off + dim * 4], np.float32).copy()
    off += dim * 4
    n = header["n"]
    labels = np.frombuffer(blob[off : off + 8 * n], "<i8").astype(np.int64)
    dists = np.frombuffer(blob[off + 8 * n : off + 12 * n], "<f4").astype(np.float32)
    canonical, params = (
        header["family"][0],
        tuple(tuple(p) if isinstance(p, list) else p for p in header["family"][1]),  # JSON made tuples lists
    )
    flt = parse_filter(json.loads(canonical)) if canonical else None
    ns = namespace(header["session"])
    family = ns.family(header["k"], canonical, params)
    hits = [tuple(h) for h in header["hits"]]
    radius = header["radius"]
    ns.store(
        bytes.fromhex(header["key"]),
        query,
        family,
        header["k"],
        flt,
        hits,
        labels,
        dists,
        full=radius is not None,
        seq=seq,
        # codes are not saved: the candidates are bounded by the triangle inequality instead
        semantic=bool(header.get("semantic", False)),
        exact=bool(header.get("exact", False)),
    )
    return True
