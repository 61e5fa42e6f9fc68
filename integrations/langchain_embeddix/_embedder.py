"""Embedders in both directions: a LangChain ``Embeddings`` as a core ``Embedder``, and the reverse."""

from __future__ import annotations

from langchain_core.embeddings import Embeddings

from embeddix_core.embeddings import Embedder, WrappedEmbedder, get_embedder

__all__ = ["EmbeddixEmbeddings", "LangChainEmbedder"]

# Attributes LangChain embedding classes use for the model name, in the order we trust them.
_MODEL_ATTRS = ("model", "model_name", "model_id", "deployment")


class EmbeddixEmbeddings(Embeddings):
    """A LangChain ``Embeddings`` backed by an Embeddix embedder (the offline MiniLM by default).

    Args:
        embedder: A core :class:`~embeddix_core.embeddings.Embedder`, or a name for
            :func:`~embeddix_core.embeddings.get_embedder` (``"minilm"``, ``"hash"``, ``"hash-256"``...).

    Raises:
        InvalidArgumentError: ``embedder`` is an unknown name.
    """

    def __init__(self, embedder: Embedder | str = "minilm") -> None:
        self._embedder = get_embedder(embedder) if isinstance(embedder, str) else embedder

    @property
    def embedder(self) -> Embedder:
        """The core embedder doing the work."""
        return self._embedder

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        """Embed texts for storage.

        Args:
            texts: The texts.

        Returns:
            One vector (list of floats) per text.
        """
        return self._embedder.embed_documents(texts).tolist()  # type: ignore[no-any-return]

    def embed_query(self, text: str) -> list[float]:
        """Embed a query text.

        Args:
            text: The query.

        Returns:
            The vector.
        """
        return self._embedder.embed_query(text).tolist()  # type: ignore[no-any-return]

    def __repr__(self) -> str:
        return f"EmbeddixEmbeddings({self._embedder!r})"


class LangChainEmbedder(WrappedEmbedder):
    """A LangChain ``Embeddings`` seen as a core :class:`~embeddix_core.embeddings.Embedder`.

    Vectors come back as C-contiguous float32 arrays, checked for shape once here. ``dim`` is learnt from
    the first embedding (a one-text probe if it is asked for first) and then fixed.

    Args:
        embeddings: The LangChain embeddings object.
        model_id: The model's stable name; by default the wrapped core embedder's id for
            :class:`EmbeddixEmbeddings`, else the object's ``model``/``model_name`` attribute, else its
            class name. Collections store it and refuse vectors of another model.
    """

    def __init__(self, embeddings: Embeddings, *, model_id: str | None = None) -> None:
        # The lambdas read ``self.embeddings`` on every call, so assigning another model to that public
        # attribute takes effect, as it did when these were overridden methods.
        super().__init__(
            model_id or _model_id_of(embeddings),
            lambda texts: self.embeddings.embed_documents(texts),
            lambda text: self.embeddings.embed_query(text),
            aembed_many=lambda texts: self.embeddings.aembed_documents(texts),
            aembed_one=lambda text: self.embeddings.aembed_query(text),
        )
        self.embeddings = embeddings

    def __repr__(self) -> str:
        return f"LangChainEmbedder({type(self.embeddings).__name__}, model_id={self.model_id!r})"


def _model_id_of(embeddings: Embeddings) -> str:
    if isinstance(embeddings, EmbeddixEmbeddings):
        return embeddings.embedder.model_id
    for attr in _MODEL_ATTRS:
        value = getattr(embeddings, attr, None)
        if isinstance(value, str) and value:
            return value
    return type(embeddings).__name__
