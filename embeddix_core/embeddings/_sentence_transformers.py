"""SentenceTransformerEmbedder: any sentence-transformers model that is already on this machine.

The model is a directory (what ``SentenceTransformer.save()`` writes, or a downloaded snapshot) or the
name of a model already in the local Hugging Face cache. Nothing is ever downloaded: the Hugging Face
libraries are switched to offline mode before they are imported, and the model loads with
``local_files_only=True``. A model that is not there is reported before torch starts, with where it was
looked for.

Identity: :attr:`SentenceTransformerEmbedder.model_id` is ``"st:<name>"`` for a cached model (``"st:BAAI/
bge-small-en-v1.5"``) and ``"st:<absolute directory>"`` for a directory. A directory is known by its path,
not its contents: moving the model makes collections built with it refuse the new path, which is the safe
side of not knowing whether the files are the same. :func:`~embeddix_core.embeddings.get_embedder` maps such
an id back to an embedder.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InvalidArgumentError, MissingExtraError, ModelNotFoundError
from ..metrics import timed_embed
from ._model_files import force_offline
from ._protocol import as_matrix, check_text, check_texts

__all__ = ["ModelNotFoundError", "SentenceTransformerEmbedder"]

log = logging.getLogger(__name__)

# What marks a directory as a sentence-transformers (or plain transformers) model.
_MODEL_MARKERS = ("modules.json", "config.json")


class SentenceTransformerEmbedder:
    """A local sentence-transformers model, loaded offline on first use.

    Vectors are L2-normalised by default (cosine similarity equals the dot product), as for
    :class:`MiniLMEmbedder`. The model loads on first use (or :meth:`warm`); :attr:`dim` loads it too,
    since only the model knows its output size.

    Thread-safe: one lock serialises loading and encoding (torch modules are not guaranteed re-entrant,
    and one call already uses several cores).

    Args:
        model: A model directory, or the name of a model in the local Hugging Face cache (e.g.
            ``"BAAI/bge-small-en-v1.5"``; a bare name such as ``"all-mpnet-base-v2"`` is also looked up
            under ``sentence-transformers/``).
        device: Torch device (keyword-only), e.g. ``"cpu"`` or ``"cuda"``.
        batch_size: Texts per forward pass (keyword-only).
        normalize: L2-normalise the vectors (keyword-only).
        cache_dir: The Hugging Face cache to look in (keyword-only); default: the one ``HF_HUB_CACHE`` /
            ``HF_HOME`` name.

    Raises:
        InvalidArgumentError: An argument is empty or out of range.
        ModelNotFoundError: ``model`` is a path that is not a model directory, or a name that is not in the
            cache.
        MissingExtraError: A name was given and ``huggingface_hub`` (the ``embed`` extra) is not installed.
    """

    def __init__(
        self,
        model: str | Path,
        *,
        device: str = "cpu",
        batch_size: int = 64,
        normalize: bool = True,
        cache_dir: str | Path | None = None,
    ) -> None:
        if not isinstance(model, str | Path) or not str(model).strip():
            raise InvalidArgumentError(f"model must be a directory or a model name, got {model!r}")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise InvalidArgumentError(f"batch_size must be a positive integer, got {batch_size!r}")
        if not isinstance(device, str) or not device:
            raise InvalidArgumentError(f"device must be a non-empty string such as 'cpu', got {device!r}")
        self._device = device
        self._batch_size = batch_size
        self._normalize = bool(normalize)
        self._cache_dir = Path(cache_dir).expanduser() if cache_dir is not None else None
        self._path, self._name = _resolve(str(model).strip(), self._cache_dir)
        self._lock = threading.Lock()
        self._model: Any = None
        self._dim: int | None = None

    @property
    def model_id(self) -> str:
        """``"st:<name>"`` for a cached model, ``"st:<absolute directory>"`` for a directory."""
        return f"st:{self._name}"

    @property
    def path(self) -> Path:
        """The directory the model loads from."""
        return self._path

    @property
    def dim(self) -> int:
        """The model's output dimension (loads the model if it is not loaded yet)."""
        if self._dim is None:
            self.warm()
        return self._dim if self._dim is not None else 0

    def warm(self) -> SentenceTransformerEmbedder:
        """Load the model now instead of on the first call.

        Returns:
            This embedder.

        Raises:
            MissingExtraError: sentence-transformers (the ``embed`` extra) is not installed.
            ModelNotFoundError: The files cannot be loaded as a sentence-transformers model.
        """
        with self._lock:
            self._load()
        return self

    @timed_embed  # latency and texts per model (metrics.py)
    def embed_documents(self, texts: Sequence[str]) -> np.ndarray:
        """Embed a batch of texts; see :meth:`Embedder.embed_documents`.

        Args:
            texts: The texts, in order. May be empty.

        Returns:
            A C-contiguous float32 ``(len(texts), dim)`` array.

        Raises:
            InvalidArgumentError: ``texts`` is a single string or holds a non-string.
            MissingExtraError: sentence-transformers is not installed.
            ModelNotFoundError: The files cannot be loaded as a sentence-transformers model.
        """
        items = check_texts(texts)
        with self._lock:
            model = self._load()
            if not items:
                return np.zeros((0, self._dim or 0), dtype=np.float32)
            vectors = model.encode(
                items,
                batch_size=self._batch_size,
                normalize_embeddings=self._normalize,
                convert_to_numpy=True,
                show_progress_bar=False,
            )
        return as_matrix(vectors, len(items), self._dim or 0, source=self.model_id)

    def embed_query(self, text: str) -> np.ndarray:
        """Embed one text; see :meth:`Embedder.embed_query`.

        Raises:
            InvalidArgumentError: ``text`` is not a string.
            MissingExtraError: sentence-transformers is not installed.
            ModelNotFoundError: The files cannot be loaded as a sentence-transformers model.
        """
        return self.embed_documents([check_text(text)])[0]

    def _load(self) -> Any:
        """Return the model, loading it first if needed. The caller holds ``self._lock``."""
        if self._model is not None:
            return self._model
        force_offline()
        try:
            from sentence_transformers import SentenceTransformer
        except ImportError as exc:
            raise MissingExtraError.for_extra("SentenceTransformerEmbedder", "embed", exc) from exc
        try:
            model = SentenceTransformer(str(self._path), device=self._device, local_files_only=True)
        except (OSError, ValueError) as exc:
            # transformers reports unusable files as OSError/ValueError with its own wording; say which
            # model and what was expected, keep theirs as the cause.
            raise ModelNotFoundError(
                f"{self._path} could not be loaded as a sentence-transformers model ({exc}); expected a "
                f"directory with modules.json or config.json and the weights"
            ) from exc
        # get_embedding_dimension is the sentence-transformers >= 5 name; the old one warns there.
        get_dim = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
        dim = get_dim()
        if not isinstance(dim, int) or dim < 1:
            raise ModelNotFoundError(
                f"{self._path} does not declare its embedding dimension (got {dim!r}); expected a "
                f"sentence-transformers model with a pooling layer"
            )
        self._model, self._dim = model, dim
        log.info("loaded %s (%d-d) from %s", self.model_id, dim, self._path)
        return model

    def __repr__(self) -> str:
        return (
            f"SentenceTransformerEmbedder(model={self._name!r}, device={self._device!r}, "
            f"loaded={self._model is not None})"
        )


def _resolve(model: str, cache_dir: Path | None) -> tuple[Path, str]:
    """The directory to load and the name in ``model_id``, for a directory path or a cached model name."""
    candidate = Path(model).expanduser()
    if candidate.is_dir():
        path = candidate.resolve()
        if not any((path / marker).is_file() for marker in _MODEL_MARKERS):
            raise ModelNotFoundError(
                f"{path} is a directory but not a model: expected {' or '.join(_MODEL_MARKERS)} in it"
            )
        return path, str(path)
    if candidate.is_absolute() or model.startswith((".", "~")) or candidate.exists():
        raise ModelNotFoundError(f"model directory {str(candidate)!r} does not exist (or is not a directory)")
    names = [model] if "/" in model else [model, f"sentence-transformers/{model}"]
    for name in names:
        snapshot = _cached_snapshot(name, cache_dir)
        if snapshot is not None:
            return snapshot, name
    where = str(cache_dir) if cache_dir is not None else "the Hugging Face cache (HF_HUB_CACHE / HF_HOME)"
    raise ModelNotFoundError(
        f"model {model!r} is not a directory and not in {where}; Embeddix never downloads models: pass "
        f"a model directory, or fetch it once with: huggingface-cli download {names[-1]}"
    )


def _cached_snapshot(name: str, cache_dir: Path | None) -> Path | None:
    """The snapshot directory of ``name`` in the local Hugging Face cache, or None (no network)."""
    force_offline()
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError as exc:
        raise MissingExtraError.for_extra(f"loading the cached model {name!r}", "embed", exc) from exc
    for marker in _MODEL_MARKERS:
        try:
            found = try_to_load_from_cache(name, marker, cache_dir=cache_dir)
        except ValueError:  # not a valid repo id ("a/b/c", spaces): it cannot be in the cache either
            return None
        if isinstance(found, str):
            return Path(found).parent
    return None
