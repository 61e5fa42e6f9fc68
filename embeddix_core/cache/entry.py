"""One cached answer and its candidate set: the record the cache, the certifier and persistence share."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ..query.filters import Filter

__all__ = ["Entry"]


@dataclass(slots=True)
class Entry:
    """A cached search: its served hits and the candidate set C that may certify near queries.

    Mutable: an insert between the k-th hit and the last candidate replaces the candidate arrays (see
    ``ResultCache.on_insert``), and codes are attached after the store.
    """

    key: bytes
    slot: int  # row of the query in the namespace's query table (see lsh.QueryTable)
    family: int
    k: int
    filter: Filter | None
    hits: list[tuple[Any, ...]]  # served rows: (id, score, distance, document, metadata JSON)
    labels: np.ndarray  # candidate labels, best first (K of them, or fewer)
    dists: np.ndarray  # their raw index-space distances, ascending (lookups take prefixes)
    radius: float  # raw d_K, or inf when the candidate set is not full
    nbytes: int
    expires: float
    seq: int
    crow: np.ndarray  # code-table row of each candidate (-1: no code; see codes.CandidateCodes)
    semantic: bool  # the candidate set may certify semantic hits (see result_cache's docstring)
    exact: bool = False  # the candidate set came from an exact search (no probe needed)
    allcoded: bool = False  # every candidate has a code
