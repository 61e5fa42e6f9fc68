"""The standard ``langchain-tests`` VectorStore integration suite, run unmodified on the in-memory store."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from langchain_core.vectorstores import VectorStore
from langchain_tests.integration_tests import VectorStoreIntegrationTests

from langchain_embeddix import EmbeddixVectorStore


class TestEmbeddixVectorStoreStandard(VectorStoreIntegrationTests):
    @pytest.fixture
    def vectorstore(self) -> Iterator[VectorStore]:
        store = EmbeddixVectorStore(embedding=self.get_embeddings())
        try:
            yield store
        finally:
            store.close()
