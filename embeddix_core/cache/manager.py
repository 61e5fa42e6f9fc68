"""The per-collection cache manager: a shared namespace plus one namespace per agent/session.

Isolation rule: a session's entries live in its own :class:`ResultCache` with its own budget, so they are
never served to another session. An LRU of sessions bounds the total; the least recently used session's
namespace is dropped whole when there are more than ``max_sessions``.

Persistent tier (optional, ``persist.py``): on close, entries are written to a ``diskcache.Cache`` as JSON +
raw float32 bytes (never pickled), each stamped with the collection's sequence number. On open, entries
whose number differs from the collection's current one are dropped: a write happened in between, so they
could be stale.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from . import persist
from .policy import TierPolicy
from .result_cache import ResultCache

__all__ = ["CacheManager", "CacheSettings"]


@dataclass(frozen=True, slots=True)
class CacheSettings:
    """Cache knobs (the ``cache_*`` fields of :class:`~embeddix_core.config.EmbeddixSettings`)."""

    enabled: bool = True
    max_bytes: int = 64 << 20
    session_max_bytes: int = 8 << 20
    max_sessions: int = 256
    ttl: float | None = None
    semantic: bool = True
    similarity: float = 0.95
    candidate_factor: int = 8
    persist: bool = False
    # Candidate sets that may certify semantic hits are searched with a beam at least this many times
    # their size K (default searches only; see result_cache.py for why it must be wider than the beam of
    # an uncached search).
    beam_factor: float = 2.0
    # A semantic lookup from an approximate candidate set also runs a search for the new query with a
    # beam a little wider than k and re-ranks what it finds with the candidates (see certify.py's
    # Certifier.certify and probe_width).
    probe: bool = True
    # When the tiers are used: "auto" (only where measured costs say they pay back, see policy.py) or
    # "always".
    policy: str = "auto"


class CacheManager:
    """All cache namespaces of one collection: the shared one and an LRU of per-session ones.

    Args:
        dim: Vector dimension.
        space: ``"ip"`` or ``"l2"`` (the index space).
        metric_ok: Whether index distances are a true metric (the semantic tier needs one).
        settings: The cache knobs.
    """

    def __init__(self, dim: int, space: str, metric_ok: bool, settings: CacheSettings) -> None:
        self.dim = dim
        self.space = space
        self.metric_ok = metric_ok
        self.settings = settings
        self._lock = threading.Lock()
        self._shared = self._new(settings.max_bytes)
        self._sessions: OrderedDict[str, ResultCache] = OrderedDict()
        self.sessions_evicted = 0
        # one policy for every namespace: the costs are the collection's, and a session's workload is
        # part of the collection's
        self.policy = TierPolicy(settings.policy, settings.semantic and metric_ok, dim, settings.similarity)
        # Personalized searches get their own exact tier: their namespaces are per user and keyed by the
        # profile version, so they repeat far less often than plain searches (in personalize_bench, plain
        # held-out queries repeated across users 50 times in 400, personalized ones never), and a plain
        # workload's repeats must not make every personalized miss pay for keeping an answer no one asks
        # for again.
        self.personal_policy = TierPolicy(settings.policy, False, dim, settings.similarity)

    def _new(self, budget: int) -> ResultCache:
        # every namespace gets the same knobs; only the budget differs (shared vs session)
        s = self.settings
        return ResultCache(
            self.dim,
            self.space,
            metric_ok=self.metric_ok,
            max_bytes=budget,
            ttl=s.ttl,
            semantic=s.semantic,
            similarity=s.similarity,
            candidate_factor=s.candidate_factor,
        )

    def namespace(self, session: str | None) -> ResultCache:
        """The cache for a session (None: the shared namespace)."""
        if session is None:
            return self._shared
        with self._lock:
            ns = self._sessions.get(session)
            if ns is None:
                ns = self._sessions[session] = self._new(self.settings.session_max_bytes)
                while len(self._sessions) > self.settings.max_sessions:
                    self._sessions.popitem(last=False)
                    self.sessions_evicted += 1
            else:
                self._sessions.move_to_end(session)
            return ns

    def _all(self) -> list[ResultCache]:
        with self._lock:
            return [self._shared, *self._sessions.values()]

    def on_insert(
        self, vectors: np.ndarray, metadatas: Sequence[dict[str, Any]], labels: Sequence[int] | None = None
    ) -> int:
        """Apply new records to every namespace (see :meth:`ResultCache.on_insert`).

        Returns:
            How many entries were dropped.
        """
        return sum(ns.on_insert(vectors, metadatas, labels) for ns in self._all())

    def on_labels(self, labels: Sequence[int]) -> int:
        """Drop, in every namespace, the entries holding these labels (see :meth:`ResultCache.on_labels`).

        Returns:
            How many entries were dropped.
        """
        return sum(ns.on_labels(labels) for ns in self._all())

    def clear(self) -> None:
        """Empty every namespace (sessions stay, empty)."""
        for ns in self._all():
            ns.clear()

    def info(self) -> dict[str, Any]:
        """Counters over every namespace."""
        spaces = self._all()
        out: dict[str, Any] = {
            "hits": 0,
            "misses": 0,
            "semantic_hits": 0,
            "verified_rejects": 0,
            "invalidated": 0,
            "evicted": 0,
            "expired": 0,
            "updated": 0,
            "probe_found": 0,
        }
        for ns in spaces:
            for key in out:
                out[key] += ns.stats[key]
        out["entries"] = sum(len(ns) for ns in spaces)
        out["bytes"] = sum(ns.bytes for ns in spaces)
        out["code_bytes"] = sum(ns.code_bytes for ns in spaces)  # included in bytes
        out["sessions"] = len(spaces) - 1
        out["sessions_evicted"] = self.sessions_evicted
        lookups = out["hits"] + out["semantic_hits"] + out["misses"]
        out["hit_rate"] = (out["hits"] + out["semantic_hits"]) / lookups if lookups else 0.0
        out["tiers"] = self.policy.info()
        out["tiers"]["personal"] = self.personal_policy.info()["exact"]
        return out

    # -- persistent tier (the format and the staleness rule: persist.py) ---------------------------
    def save(self, directory: Path, seq: int) -> int:
        """Write every entry to a diskcache directory. Returns how many were written."""
        named: list[tuple[str | None, ResultCache]] = [(None, self._shared)]
        with self._lock:
            named += list(self._sessions.items())
        return persist.save(directory, seq, self.dim, named)

    def load(self, directory: Path, seq: int) -> int:
        """Load entries saved at this same ``seq``; anything else could be stale and is dropped."""
        return persist.load(directory, seq, self.dim, self.namespace)
