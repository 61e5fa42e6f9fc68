"""How a filtered search runs: an exact scan of the matching subset or the index's filter hook, by cost.

Two strategies answer a filtered query:

* ``"exact-subset"``: score every match, from the filter's subset matrix (``filter_cache.py``): recall
  1.0, cost in proportion to matches x dim;
* ``"index-hook"``: search the HNSW graph with a Python callback admitting the matches: the plan's
  recall, cost growing with ef and with 1 / selectivity (the search walks through nodes that do not
  match, and pays a Python call for each candidate it weighs).

A third serves once it exists: ``"subset-graph"``, an HNSW graph of the matches alone
(``subset_graph.py``), built in the background for a subset matrix of at least ``GRAPH_MIN`` rows: the
plan's recall, at about the cost of an unfiltered search. An approximate index whose filter has one
always uses it.

The executor's rules, in order: a subset graph when the filter has one; few matches
(``exact_filter_min``, ``exact_filter_fraction``) or an exact index scan the subset, as they always
did; a subset whose matrix cannot be held (larger than
``filter_matrix_bytes``, or an entry not cached) uses the hook, since gathering thousands of vectors one
by one costs more than the hook; otherwise :meth:`FilterCosts.choose` picks the cheaper by estimate.

Estimates (seconds per query): scan = ``SCAN_FIXED + rows x dim x scan_rate``; hook = the entry's own
measured cost per unit of ef x ef when it has one, else the collection's ``hook_unit x ef / selectivity``.
Both are EWMAs of measured single-query searches; a sample is clamped to a factor ``_CLAMP`` of the
estimate so one descheduled search on a shared machine cannot flip the choice. Scans shorter than
``_SCAN_MIN_ELEMENTS`` do not update the rate: their time is numpy's fixed overhead, not the scan's.
Priors, measured on a shared 2-core x86 machine over 100K x 384 MiniLM vectors: 10,000 x 384 scanned
from its matrix in 0.45-0.6 ms on one core (about 1.2e-10 s per element, top-k selection included); a
10% filter hooked in 0.53 ms at ef 16 and 1.72 ms at ef 64 (about 3e-6 s x ef / selectivity).

The hook's ef is the plan's, calibrated for unfiltered search. The filtered search keeps exploring
until its beam holds ef *matches*, so at one ef it explores more than an unfiltered search and its
recall is at least as high (measured: 0.98 at ef 16 with 10% matching); a smaller ef would need a
calibration of filtered recall, which there is none of.

Threads: estimates are read and written without a lock; a lost update between racing searches costs
nothing but one sample.
"""

from __future__ import annotations

from .filter_cache import FilterEntry

__all__ = ["EXACT_SUBSET", "INDEX_HOOK", "SUBSET_GRAPH", "FilterCosts"]

EXACT_SUBSET = "exact-subset"
INDEX_HOOK = "index-hook"
SUBSET_GRAPH = "subset-graph"

SCAN_FIXED = 30e-6  # numpy calls, top-k selection and result arrays of one scan
_SCAN_RATE = 1.2e-10  # seconds per scanned element (row x dim)
_HOOK_BASE = 1.5e-6  # the hook's unit cost: the Python callback part ...
_HOOK_PER_DIM = 4e-9  # ... and the distance part (3e-6 at 384 dimensions)
_SCAN_MIN_ELEMENTS = 1 << 20
_ALPHA = 0.2
_CLAMP = 4.0
# Keep the last choice unless the other strategy is estimated this much cheaper: two estimates close
# to each other would otherwise flip the strategy of a filter back and forth on noise.
_HYSTERESIS = 1.25


def _ewma(old: float, sample: float) -> float:
    sample = min(max(sample, old / _CLAMP), old * _CLAMP)
    return old + _ALPHA * (sample - old)


class FilterCosts:
    """The cost model of one collection's filtered searches (see the module docstring).

    Args:
        dim: The vector dimension.
    """

    def __init__(self, dim: int) -> None:
        self.dim = dim
        self.scan_rate = _SCAN_RATE
        self.hook_unit = _HOOK_BASE + _HOOK_PER_DIM * dim

    def scan_seconds(self, rows: int) -> float:
        """Estimated seconds of one query's exact scan over ``rows`` matches."""
        return SCAN_FIXED + rows * self.dim * self.scan_rate

    def hook_seconds(self, entry: FilterEntry, ef: int, selectivity: float) -> float:
        """Estimated seconds of one query's hooked index search at beam ``ef``."""
        if entry.hook_cost is not None:
            return entry.hook_cost * ef
        return self.hook_unit * ef / max(selectivity, 1e-6)

    def choose(self, entry: FilterEntry, rows: int, ef: int, selectivity: float) -> str:
        """The cheaper strategy for ``entry`` by estimate (remembered as ``entry.choice``)."""
        scan = self.scan_seconds(rows)
        hook = self.hook_seconds(entry, ef, selectivity)
        prev = entry.choice
        if prev == EXACT_SUBSET:
            choice = INDEX_HOOK if hook * _HYSTERESIS < scan else EXACT_SUBSET
        elif prev == INDEX_HOOK:
            choice = EXACT_SUBSET if scan * _HYSTERESIS < hook else INDEX_HOOK
        else:
            choice = EXACT_SUBSET if scan <= hook else INDEX_HOOK
        entry.choice = choice
        return choice

    def scanned(self, rows: int, seconds: float) -> None:
        """Learn from one query's measured scan over ``rows`` matches."""
        elements = rows * self.dim
        if elements >= _SCAN_MIN_ELEMENTS:
            self.scan_rate = _ewma(self.scan_rate, max(seconds - SCAN_FIXED, 0.0) / elements)

    def hooked(self, entry: FilterEntry, ef: int, selectivity: float, seconds: float) -> None:
        """Learn from one query's measured hooked search at beam ``ef``."""
        per_ef = seconds / ef
        if entry.hook_cost is None:  # a first sample, clamped around the collection's model
            model = self.hook_unit / max(selectivity, 1e-6)
            entry.hook_cost = min(max(per_ef, model / _CLAMP), model * _CLAMP)
        else:
            entry.hook_cost = _ewma(entry.hook_cost, per_ef)
        self.hook_unit = _ewma(self.hook_unit, per_ef * selectivity)
