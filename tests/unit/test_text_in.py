"""The text-in path: a collection with an embedder embeds documents sent without vectors and text queries."""

from __future__ import annotations

import numpy as np
import pytest

from embeddix_core import Embeddix
from embeddix_core.embeddings import HashEmbedder
from embeddix_core.errors import InvalidArgumentError

DOCS = ["the red fox jumps", "a lazy brown dog", "quantum field theory", "foxes are red animals"]


def test_documents_without_vectors_are_embedded_and_text_queries_too(tmp_path):
    emb = HashEmbedder(dim=64)
    with Embeddix.open(tmp_path / "d") as db:
        col = db.create_collection("c", dim=64, embedder=emb)
        assert col.config.embedding_model == emb.model_id  # recorded
        col.add([f"d{i}" for i in range(4)], documents=DOCS, metadatas=[{"i": i} for i in range(4)])
        stored = col.get("d0", include_vectors=True)
        np.testing.assert_allclose(stored.vector, emb.embed_documents([DOCS[0]])[0], rtol=1e-6)
        assert col.search("the red fox jumps", k=1)[0].id == "d0"
        col.upsert(["d2"], documents=["red fox"])  # re-embedded, metadata kept
        assert col.get("d2").metadata == {"i": 2}
        np.testing.assert_allclose(
            col.get("d2", include_vectors=True).vector, emb.embed_documents(["red fox"])[0], rtol=1e-6
        )
    with Embeddix.open(tmp_path / "d") as db:  # the embedder is the handle's, given again on open
        col = db.get_collection("c", embedder=emb)
        assert col.search("a lazy brown dog", k=1)[0].id == "d1"


def test_without_an_embedder_the_errors_say_what_to_pass(tmp_path):
    with Embeddix.open(tmp_path / "d") as db:
        col = db.create_collection("c", dim=8)
        with pytest.raises(InvalidArgumentError, match="has no embedder"):
            col.add(["a"], None, documents=["text"])
        with pytest.raises(InvalidArgumentError, match="no documents to embed"):
            col.add(["a"])
        with pytest.raises(InvalidArgumentError, match="has no embedder"):
            col.search("some text", k=1)
        assert col.count() == 0


def test_an_embedder_of_another_dimension_or_model_is_refused(tmp_path):
    with Embeddix.open(tmp_path / "d") as db:
        col = db.create_collection("c", dim=32, embedder=HashEmbedder(dim=32))
        with pytest.raises(InvalidArgumentError, match="32-d"):
            col.use_embedder(HashEmbedder(dim=16))
        other = db.create_collection("o", dim=32, embedding_model="some-other-model")
        with pytest.raises(InvalidArgumentError, match="some-other-model"):
            other.use_embedder(HashEmbedder(dim=32))
