"""Caches: an exact result cache with precise invalidation, a verified semantic tier, per-agent session
namespaces, and an optional persistent tier. See ``result_cache.py`` for the correctness rules."""

from .manager import CacheManager, CacheSettings
from .result_cache import CacheLookup, ResultCache
from .vector_cache import VectorCache

__all__ = ["CacheLookup", "CacheManager", "CacheSettings", "ResultCache", "VectorCache"]
