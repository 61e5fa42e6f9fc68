# The compiled hits builder (_hits.c); optional: embeddix_core.cache.row_cache falls back to Python.
from collections.abc import Callable, Sequence
from typing import Any

from .types import Hit, Hits

def setup(hit_type: type[Hit], slot_names: tuple[str, ...], /) -> None: ...
def setup_hits(hits_type: type[Hits], slot_names: tuple[str, ...], /) -> None: ...
def make_hits(items: list[Hit], partial: bool, plan: Any, /) -> Hits: ...
def rows_to_hits(
    pages: dict[int, Any],
    chunks: list[bytearray],
    first: int,
    chunk_size: int,
    labels: Sequence[int],
    dists: Sequence[float],
    l2: bool,
    metric: str,
    loads: Callable[[str], Any],
    raw: list[tuple[Any, ...]] | None,
    rank_scores: Sequence[float] | None = None,
    /,
) -> list[Hit] | None: ...
def setup_query(ndarray: type[Any], empty: Callable[..., Any], float32: Any, /) -> None: ...
def prepare_query(vector: Any, dim: int, normalize: bool, /) -> Any: ...
def kept_to_hits(rows: list[tuple[Any, ...]], metric: str, loads: Callable[[str], Any], /) -> list[Hit]: ...
def rows_get(
    pages: dict[int, Any],
    chunks: list[bytearray],
    first: int,
    chunk_size: int,
    labels: Sequence[int],
    row_type: type[Any],
    /,
) -> dict[int, Any] | None: ...
def field_sums(
    metadata: str,
    by_field: dict[str, dict[tuple[str, Any], list[float]]],
    loads: Callable[[str], Any],
    decode_error: type[BaseException],
    max_pairs: int,
    max_chars: int,
    /,
) -> tuple[float, float] | None: ...
