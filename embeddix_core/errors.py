"""The Embeddix exception tree: one root, typed leaves.

Every error Embeddix raises on purpose derives from :class:`EmbeddixError`. Leaves also derive from the
built-in exception a Python user would expect, so ``except ValueError`` or ``except KeyError`` keeps
working::

    EmbeddixError
    ├── InvalidArgumentError (ValueError)        a parameter is out of range or of the wrong type
    │   ├── DimensionMismatchError               a vector has the wrong length
    │   ├── InvalidVectorError                   NaN/inf, non-numeric, wrong rank, empty batch
    │   ├── InvalidIdError                       empty, non-string or oversized id; duplicates in a batch
    │   ├── InvalidMetadataError                 metadata that is not a JSON object of allowed values
    │   └── InvalidFilterError                   a malformed filter expression
    ├── DuplicateIdError (ValueError)            ``add`` of an id that is already stored
    ├── NotFoundError (KeyError)                 a record that does not exist
    │   └── CollectionNotFoundError              a collection that does not exist
    ├── CollectionExistsError (ValueError)       ``create_collection`` of an existing name
    ├── ModelMismatchError (ValueError)          a collection used with another embedding model
    ├── LockedError (RuntimeError)               the data directory is held by another process
    ├── ClosedError (RuntimeError)               the database or collection was closed
    ├── StorageError (OSError)                   the durable store failed (I/O error, disk full, ...)
    │   ├── CorruptionError                      a file on disk is damaged or belongs to another store
    │   └── FormatVersionError                   an on-disk format this version cannot read
    └── MissingExtraError (ImportError)          an optional dependency is not installed

Messages say what was expected, what came, and how to fix it.
"""

from __future__ import annotations

__all__ = [
    "ClosedError",
    "CollectionExistsError",
    "CollectionNotFoundError",
    "ConfigFileError",
    "CorruptionError",
    "DimensionMismatchError",
    "DuplicateIdError",
    "EmbeddingServiceError",
    "EmbeddixError",
    "FormatVersionError",
    "GpuUnavailableError",
    "InvalidArgumentError",
    "InvalidFilterError",
    "InvalidIdError",
    "InvalidMetadataError",
    "InvalidVectorError",
    "LockedError",
    "MissingExtraError",
    "ModelMismatchError",
    "ModelNotFoundError",
    "NotFoundError",
    "StorageError",
]


class EmbeddixError(Exception):
    """Root of every error Embeddix raises on purpose."""


class InvalidArgumentError(EmbeddixError, ValueError):
    """A parameter is out of range or of the wrong type."""


class DimensionMismatchError(InvalidArgumentError):
    """A vector's length differs from the collection's dimension."""


class InvalidVectorError(InvalidArgumentError):
    """A vector holds NaN/inf or non-numeric data, has the wrong rank, or a batch is empty."""


class InvalidIdError(InvalidArgumentError):
    """An id is empty, not a string, too long, or repeated inside one batch."""


class InvalidMetadataError(InvalidArgumentError):
    """Metadata is not a JSON object of str, int, float, bool (or lists of those)."""


class InvalidFilterError(InvalidArgumentError):
    """A metadata filter expression is malformed."""


class ConfigFileError(InvalidArgumentError):
    """A config file (``EMBEDDIX_CONFIG``) is missing, unreadable, malformed or holds unknown keys."""


class DuplicateIdError(EmbeddixError, ValueError):
    """``add`` was given an id that is already stored (use ``upsert`` to replace)."""


class NotFoundError(EmbeddixError, KeyError):
    """A record that does not exist was asked for."""

    def __str__(self) -> str:
        # KeyError.__str__ quotes its argument (repr); we want the readable message.
        return str(self.args[0]) if self.args else ""


class CollectionNotFoundError(NotFoundError):
    """A collection that does not exist was asked for."""


class CollectionExistsError(EmbeddixError, ValueError):
    """``create_collection`` was given a name that already exists."""


class ModelMismatchError(EmbeddixError, ValueError):
    """A collection is used with an embedding model other than the one it was built with."""


class ModelNotFoundError(EmbeddixError, FileNotFoundError):
    """A local embedding model is neither a model directory nor in the local Hugging Face cache."""


class EmbeddingServiceError(EmbeddixError, ConnectionError):
    """An embedding endpoint failed: unreachable, an HTTP error status, or a reply that is not embeddings.

    Attributes:
        status: The HTTP status, or None when no HTTP answer came (connection refused, timeout).
    """

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class GpuUnavailableError(EmbeddixError, RuntimeError):
    """``gpu="on"`` was asked for, but FAISS has no CUDA build here or sees no device."""


class LockedError(EmbeddixError, RuntimeError):
    """The data directory is opened for writing by another process."""


class ClosedError(EmbeddixError, RuntimeError):
    """The database or collection was used after ``close()``."""


class StorageError(EmbeddixError, OSError):
    """The durable store failed, or holds data that is corrupt."""


class CorruptionError(StorageError):
    """A file on disk is damaged (torn, truncated, garbled) or belongs to another store.

    Raised where Embeddix cannot repair the damage itself: a damaged SQLite database. Damaged index
    snapshots, manifests and calibration files are rebuilt from the store instead, with a warning.
    """


class FormatVersionError(StorageError):
    """An on-disk file has a format version this release cannot read."""


class MissingExtraError(EmbeddixError, ImportError):
    """An optional dependency is not installed; the message names the extra to install."""

    @classmethod
    def for_extra(cls, what: str, extra: str, exc: BaseException | None = None) -> MissingExtraError:
        """Build the error for a missing optional part.

        Args:
            what: The feature that needs the dependency.
            extra: The name of the pip extra that provides it.
            exc: The original ImportError, if any.

        Returns:
            The error, ready to raise.
        """
        detail = f" ({exc})" if exc else ""
        return cls(
            f"{what} needs an optional dependency that is not installed{detail}; "
            f"install it with: pip install 'embeddix[{extra}]'"
        )
