"""Query layer: the metadata filter language, planning, fusion and reranking."""
