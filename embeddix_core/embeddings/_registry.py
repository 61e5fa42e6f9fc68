"""Named embedders: the process-wide default and ``get_embedder(name)``.

Every embedder's ``model_id`` is also a name ``get_embedder`` accepts, so a collection's stored model maps
back to the embedder that produced it:

* ``minilm``, ``default``, ``sentence-transformers/all-MiniLM-L6-v2``: the shared :class:`MiniLMEmbedder`.
* ``hash``, ``hash-<dim>``, ``hash-<dim>[-seed<seed>]-v1``: a :class:`HashEmbedder`.
* ``st:<model directory or cached model name>``: a :class:`SentenceTransformerEmbedder` (local files only).
* ``openai:<model>`` or ``openai:<model>@<base_url>``: an :class:`OpenAIEmbedder` (default base URL:
  OpenAI's; the key from ``api_key=`` or ``EMBEDDIX_OPENAI_API_KEY``, never from the name).
"""

from __future__ import annotations

import os
import re
import threading

from ..errors import InvalidArgumentError
from ._cache import CachedEmbedder, EmbeddingCache
from ._hash import HashEmbedder
from ._minilm import MiniLMEmbedder
from ._model_files import MINILM_MODEL_ID
from ._openai import DEFAULT_OPENAI_BASE_URL, OpenAIEmbedder
from ._protocol import Embedder
from ._sentence_transformers import SentenceTransformerEmbedder

__all__ = ["default_embedder", "get_embedder"]

_MINILM_NAMES = frozenset({"minilm", "default", MINILM_MODEL_ID.lower(), "all-minilm-l6-v2"})
# "hash", "hash-256", and HashEmbedder model ids ("hash-384-v1", "hash-384-seed7-v1") so that a collection's
# stored model_id maps back to the embedder that produced it.
_HASH_RE = re.compile(r"hash(?:-(?P<dim>\d+))?(?:-seed(?P<seed>\d+))?(?:-v(?P<version>\d+))?")
# The prefixes of the embedders whose names carry a case-sensitive part (a path, a model name, a URL).
_ST_PREFIX = "st:"
_OPENAI_PREFIX = "openai:"
# "<model>@<base_url>": the URL starts at the last "@" followed by http(s):// (a model name may hold "@").
_OPENAI_RE = re.compile(r"(?P<model>.+)@(?P<url>https?://.+)", re.IGNORECASE)
OPENAI_API_KEY_ENV = "EMBEDDIX_OPENAI_API_KEY"

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


def get_embedder(name: str, *, api_key: str | None = None) -> Embedder:
    """Return an embedder by name (every embedder's ``model_id`` is such a name).

    Args:
        name: ``"minilm"``, ``"default"`` or ``"sentence-transformers/all-MiniLM-L6-v2"`` for the shared
            default embedder; ``"hash"`` or ``"hash-<dim>"`` (or a HashEmbedder ``model_id`` such as
            ``"hash-384-v1"``) for a :class:`HashEmbedder`; ``"st:<directory or cached model name>"`` for a
            :class:`SentenceTransformerEmbedder`; ``"openai:<model>"`` or ``"openai:<model>@<base_url>"``
            for an :class:`OpenAIEmbedder`. Case and surrounding spaces are ignored, except in the path,
            model name and URL after ``st:`` / ``openai:``.
        api_key: The key of an ``openai:`` endpoint (keyword-only); default: the ``EMBEDDIX_OPENAI_API_KEY``
            environment variable, else no key (a local server).

    Returns:
        The embedder.

    Raises:
        InvalidArgumentError: The name is unknown, or its ``openai:`` URL is not a plain http(s) URL.
        ModelNotFoundError: An ``st:`` model is not on this machine.
    """
    if not isinstance(name, str):
        raise InvalidArgumentError(f"embedder name must be a str, got {type(name).__name__}")
    stripped = name.strip()
    key = stripped.lower()
    if key.startswith(_ST_PREFIX):
        return SentenceTransformerEmbedder(stripped[len(_ST_PREFIX) :].strip())
    if key.startswith(_OPENAI_PREFIX):
        rest = stripped[len(_OPENAI_PREFIX) :].strip()
        match = _OPENAI_RE.fullmatch(rest)
        model, base_url = (match["model"], match["url"]) if match else (rest, DEFAULT_OPENAI_BASE_URL)
        if api_key is None:
            api_key = os.environ.get(OPENAI_API_KEY_ENV) or None
        return OpenAIEmbedder(model, base_url, api_key)
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
        f"'hash', 'hash-<dim>', 'st:<model directory or cached name>' or 'openai:<model>[@<base_url>]'"
    )
