"""Embeddix: an embedded memory engine for LLM agents and RAG.

Quick start::

    from embeddix_core import Embeddix
    with Embeddix.open("./embeddix-data") as db:
        col = db.get_or_create_collection("docs", dim=384, metric="cosine")
        col.add(ids=["a"], vectors=[[0.1] * 384], documents=["hello"], metadatas=[{"tag": 1}])
        hits = col.search([0.1] * 384, k=10, filter={"tag": 1})
"""

from .collection import Collection
from .config import CollectionConfig, Durability, EmbeddixSettings
from .database import Embeddix
from .errors import (
    ClosedError,
    CollectionExistsError,
    CollectionNotFoundError,
    ConfigFileError,
    CorruptionError,
    DimensionMismatchError,
    DuplicateIdError,
    EmbeddingServiceError,
    EmbeddixError,
    FormatVersionError,
    GpuUnavailableError,
    InvalidArgumentError,
    InvalidFilterError,
    InvalidIdError,
    InvalidMetadataError,
    InvalidVectorError,
    LockedError,
    MissingExtraError,
    ModelMismatchError,
    ModelNotFoundError,
    NotFoundError,
    StorageError,
)
from .query.filters import Filter, parse_filter
from .query.planner import Calibration, Plan
from .types import CollectionStats, Hit, Hits, Metric, Record, SearchStep

__version__ = "0.1.0"

__all__ = [
    "Calibration",
    "ClosedError",
    "Collection",
    "CollectionConfig",
    "CollectionExistsError",
    "CollectionNotFoundError",
    "CollectionStats",
    "ConfigFileError",
    "CorruptionError",
    "DimensionMismatchError",
    "DuplicateIdError",
    "Durability",
    "EmbeddingServiceError",
    "Embeddix",
    "EmbeddixError",
    "EmbeddixSettings",
    "Filter",
    "FormatVersionError",
    "GpuUnavailableError",
    "Hit",
    "Hits",
    "InvalidArgumentError",
    "InvalidFilterError",
    "InvalidIdError",
    "InvalidMetadataError",
    "InvalidVectorError",
    "LockedError",
    "Metric",
    "MissingExtraError",
    "ModelMismatchError",
    "ModelNotFoundError",
    "NotFoundError",
    "Plan",
    "Record",
    "SearchStep",
    "StorageError",
    "__version__",
    "parse_filter",
]
