"""Embedders: the :class:`Embedder` protocol, its numpy reference, the offline default model, and caching.

* :class:`HashEmbedder`: deterministic feature hashing in pure numpy; the reference and the test double.
* :class:`MiniLMEmbedder`: all-MiniLM-L6-v2 from the bundled weights, never downloaded; torch or ONNX Runtime.
* :class:`SentenceTransformerEmbedder`: any sentence-transformers model already on this machine (a directory
  or a cached name), never downloaded.
* :class:`OpenAIEmbedder`: an OpenAI-compatible ``/embeddings`` endpoint over the standard library's HTTP.
* :class:`EmbeddingCache` / :class:`CachedEmbedder`: embed each text once (memory LRU, optional disk tier).
* :func:`default_embedder` / :func:`get_embedder`: the shared default and lookup by name.
* :class:`WrappedEmbedder`: another library's embedding functions as an :class:`Embedder` (what the
  framework adapters build on, so they need nothing private from this package).

Nothing here imports torch, sentence-transformers or onnxruntime until a model is actually loaded.
"""

from __future__ import annotations

from ._cache import CachedEmbedder, EmbeddingCache
from ._hash import HashEmbedder
from ._minilm import MiniLMEmbedder
from ._openai import EmbeddingServiceError, OpenAIEmbedder
from ._protocol import Embedder
from ._registry import default_embedder, get_embedder
from ._sentence_transformers import ModelNotFoundError, SentenceTransformerEmbedder
from ._wrapped import WrappedEmbedder

__all__ = [
    "CachedEmbedder",
    "Embedder",
    "EmbeddingCache",
    "EmbeddingServiceError",
    "HashEmbedder",
    "MiniLMEmbedder",
    "ModelNotFoundError",
    "OpenAIEmbedder",
    "SentenceTransformerEmbedder",
    "WrappedEmbedder",
    "default_embedder",
    "get_embedder",
]
