"""Named embedders: the process-wide default and ``get_embedder(name)``."""

from __future__ import annotations

import re
import threading

from ..errors import InvalidArgumentError
from ._cache import CachedEmbedder, EmbeddingCache
from ._hash import HashEmbedder
from ._minilm import MiniLMEmbedder
from ._model_files import MINILM_MODEL_ID
from ._protocol import Embedder

__all__ = ["default_embedder", "get_embedder"]

_MINILM_NAMES = frozenset({"minilm", "default", MINILM_MODEL_ID.lower(), "all-minilm-l6-v2"})
# "hash", "hash-256", and HashEmbedder model ids ("hash-384-v1", "hash-384-seed7-v1") so that a collection's
# stored model_id maps back to the embedder that produced it.
_HASH_RE = re.compile(r"hash(?:-(?P<dim>\d+))?(?:-seed(?P<seed>\d+))?(?:-v(?P<version>\d+))?")

_default: CachedEmbedder | None = None
_default_lock = threading.Lock()


def default_embedder() -> Embedder:
    """The process-wide default embedder: one shared :class:`MiniLMEmbedder` behind an in-memory cache.

    Creating it is cheap; the model loads on first use, once per process, however many collections share it.

    Returns:
        The shared :class:`CachedEmbedder`.
    """
    global _default
    with _default_lock:
        if _default is None:
            _default = CachedEmbedder(MiniLMEmbedder(), EmbeddingCache())
        return _default


def get_embedder(name: str) -> Embedder:
    """Return an embedder by name.

    Args:
        name: ``"minilm"``, ``"default"`` or ``"sentence-transformers/all-MiniLM-L6-v2"`` for the shared
            default embedder; ``"hash"`` or ``"hash-<dim>"`` (or a HashEmbedder ``model_id`` such as
            ``"hash-384-v1"``) for a :class:`HashEmbedder`. Case and surrounding spaces are ignored.

    Returns:
        The embedder.

    Raises:
        InvalidArgumentError: The name is unknown.
    """
    if not isinstance(name, str):
        raise InvalidArgumentError(f"embedder name must be a str, got {type(name).__name__}")
    key = name.strip().lower()
    if key in _MINILM_NAMES:
        return default_embedder()
    match = _HASH_RE.fullmatch(key)
    if match is not None:
        version = match["version"]
        if version is not None and int(version) != 1:
            raise InvalidArgumentError(
                f"embedder {name!r} needs HashEmbedder algorithm v{version}; this release has v1 only"
            )
        dim = int(match["dim"]) if match["dim"] is not None else 384
        seed = int(match["seed"]) if match["seed"] is not None else 0
        return HashEmbedder(dim=dim, seed=seed)
    raise InvalidArgumentError(
        f"unknown embedder {name!r}; expected 'minilm', 'default', {MINILM_MODEL_ID!r}, "
        f"'hash' or 'hash-<dim>'"
    )
