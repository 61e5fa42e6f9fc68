"""The routing table: which shard actors hold each collection. Small, versioned, durable JSON, never pickled.

Placement rule: a collection lives whole on one shard (its *home*) until it outgrows the table's size budget
(``split_at`` records); it is then split by id hash over several shards (its *parts*), and a record with id
``rid`` lives on ``parts[part_of(rid, len(parts))]``. The hash is BLAKE2b of the id's UTF-8 bytes, the same
in every process and every Python (``hash()`` is salted per process and would scatter the records).

Versions: the table's ``version`` grows by one with every change of placement (create, drop, split), and
each entry keeps the ``epoch`` (the version) at which its placement last changed. Every call a router sends
to a shard carries the epoch of the entry it routed by; a shard refuses calls older than the fence it was
given for that collection (``_shard.py``), so a router holding an old table learns so on its first call
instead of writing to the wrong shard.

File (``routing.json`` in the data root; written temp file -> fsync -> rename -> fsync directory)::

    {"format": "embeddix-ray-routing", "format_version": 1, "store_id": "9f0c...", "version": 7,
     "shards": 4, "live_shards": 4, "split_at": 1000000,
     "collections": {"agent:alice": {"parts": [2], "epoch": 3, "state": "ready", "create": {...}}, ...},
     "checksum": "sha256 of the canonical JSON of every other key"}
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import uuid
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from embeddix_core import CorruptionError, FormatVersionError, InvalidArgumentError, StorageError

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "ROUTING_FILE",
    "Placement",
    "RoutingTable",
    "atomic_write_json",
    "check_counts",
    "part_of",
    "read_json",
]

FORMAT = "embeddix-ray-routing"
FORMAT_VERSION = 1
ROUTING_FILE = "routing.json"
READY, SPLITTING = "ready", "splitting"


def part_of(rid: str, parts: int) -> int:
    """The index (0 .. parts-1) of the part that holds id ``rid`` in a collection split ``parts`` ways."""
    digest = hashlib.blake2b(rid.encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return int.from_bytes(digest, "big") % parts


def _checksum(doc: dict[str, Any]) -> str:
    body = {k: v for k, v in doc.items() if k != "checksum"}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def atomic_write_json(path: Path, doc: dict[str, Any]) -> None:
    """Replace ``path`` with ``doc`` plus its checksum: temp file -> fsync -> rename -> fsync directory.

    A crash leaves the old file or the new one, never half of one (the core's own files follow the same
    rule; its helper is private to the core, so this package keeps this one).
    """
    data = json.dumps({**doc, "checksum": _checksum(doc)}, sort_keys=True, indent=1).encode()
    try:
        fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError as exc:
        raise StorageError(f"cannot write {str(path)!r}: {exc}") from exc


def read_json(path: Path, fmt: str) -> dict[str, Any] | None:
    """The document in ``path`` (None if there is no file), its format, version and checksum checked.

    Raises:
        CorruptionError: Not JSON, another format, or a checksum that does not match.
        FormatVersionError: A format version this release cannot read.
    """
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise StorageError(f"cannot read {str(path)!r}: {exc}") from exc
    try:
        doc = json.loads(raw)
    except ValueError as exc:
        raise CorruptionError(f"{str(path)!r} is not JSON ({exc}); restore it from a backup") from exc
    if not isinstance(doc, dict) or doc.get("format") != fmt:
        raise CorruptionError(f"{str(path)!r} is not an {fmt} file (format {doc.get('format')!r})")
    if doc.get("format_version") != FORMAT_VERSION:
        raise FormatVersionError(
            f"{str(path)!r} has format version {doc.get('format_version')!r}; this release reads version "
            f"{FORMAT_VERSION}: upgrade embeddix"
        )
    if doc.get("checksum") != _checksum(doc):
        raise CorruptionError(f"{str(path)!r} fails its checksum (damaged); restore it from a backup")
    return doc


@dataclass(frozen=True, slots=True)
class Placement:
    """Where one collection lives.

    Attributes:
        parts: The shards holding it, in part order (one shard unless split).
        epoch: The table version at which this placement was made; calls carry it (see the module doc).
        state: ``"ready"``, or ``"splitting"`` while records move to a new set of parts (calls wait).
        create: The arguments it was created with (``dim``, ``metric`` and the keyword arguments).
        moving_from: While splitting, the parts the records move from.
        prepared: While splitting, whether the new parts' collections were made (a resumed split must
            not empty them again).
    """

    parts: tuple[int, ...]
    epoch: int
    state: str = READY
    create: dict[str, Any] = field(default_factory=dict)
    moving_from: tuple[int, ...] | None = None
    prepared: bool = False

    @property
    def split(self) -> bool:
        """Whether the collection is spread over more than one shard."""
        return len(self.parts) > 1

    def home(self, rid: str) -> int:
        """The shard that holds id ``rid``."""
        return self.parts[part_of(rid, len(self.parts))] if self.split else self.parts[0]

    def to_json(self) -> dict[str, Any]:
        """The entry as JSON values."""
        doc = asdict(self)
        doc["parts"] = list(self.parts)
        doc["moving_from"] = None if self.moving_from is None else list(self.moving_from)
        return doc

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> Placement:
        """An entry from :meth:`to_json`'s form."""
        moving = doc.get("moving_from")
        return cls(
            parts=tuple(int(p) for p in doc["parts"]),
            epoch=int(doc["epoch"]),
            state=str(doc.get("state", READY)),
            create=dict(doc.get("create") or {}),
            moving_from=None if moving is None else tuple(int(p) for p in moving),
            prepared=bool(doc.get("prepared", False)),
        )


@dataclass(frozen=True, slots=True)
class RoutingTable:
    """The whole table: one value, replaced (never mutated) on every change.

    Attributes:
        store_id: Random id of this sharded store; names its actors and is written in every shard's
            directory, so a shard never serves another store's data.
        version: Grows by one with every change of placement.
        shards: How many shard actors the store has (it can grow, never shrink).
        live_shards: How many of them have started at least once (their directories must exist).
        split_at: The size budget: a collection part holding more records than this is split further.
        collections: Placement of every collection, by name.
    """

    store_id: str
    version: int
    shards: int
    live_shards: int
    split_at: int
    collections: dict[str, Placement]

    @classmethod
    def new(cls, shards: int, split_at: int) -> RoutingTable:
        """An empty table for a new store."""
        return cls(uuid.uuid4().hex, 0, shards, 0, split_at, {})

    def with_entry(self, name: str, entry: Placement | None, *, bump: bool = False) -> RoutingTable:
        """A copy with ``name`` placed at ``entry`` (None removes it); ``bump`` advances the version."""
        cols = dict(self.collections)
        if entry is None:
            cols.pop(name, None)
        else:
            cols[name] = entry
        return replace(self, collections=cols, version=self.version + (1 if bump else 0))

    def load_by_shard(self) -> list[int]:
        """How many collections (parts) each shard holds: a new collection goes to the least loaded."""
        load = [0] * self.shards
        for entry in self.collections.values():
            for p in entry.parts:
                load[p] += 1
        return load

    def to_json(self) -> dict[str, Any]:
        """The table as JSON values (what is written, and what routers receive)."""
        return {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "store_id": self.store_id,
            "version": self.version,
            "shards": self.shards,
            "live_shards": self.live_shards,
            "split_at": self.split_at,
            "collections": {name: e.to_json() for name, e in sorted(self.collections.items())},
        }

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> RoutingTable:
        """A table from :meth:`to_json`'s form."""
        try:
            return cls(
                store_id=str(doc["store_id"]),
                version=int(doc["version"]),
                shards=int(doc["shards"]),
                live_shards=int(doc.get("live_shards", 0)),
                split_at=int(doc["split_at"]),
                collections={n: Placement.from_json(e) for n, e in doc["collections"].items()},
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise CorruptionError(f"the routing table is malformed ({exc!r})") from exc

    def save(self, root: Path) -> None:
        """Write the table durably to ``root / routing.json``."""
        atomic_write_json(root / ROUTING_FILE, self.to_json())

    @classmethod
    def load(cls, root: Path) -> RoutingTable | None:
        """The table stored in ``root``, or None for a new store."""
        doc = read_json(root / ROUTING_FILE, FORMAT)
        return None if doc is None else cls.from_json(doc)


def check_counts(shards: Any, split_at: Any) -> None:
    """Validate ``shards`` and ``split_at`` as given to ``RayEmbeddix.open``."""
    if shards is not None and (
        isinstance(shards, bool) or not isinstance(shards, int) or not 1 <= shards <= 1024
    ):
        raise InvalidArgumentError(f"shards must be an integer from 1 to 1024, or None; got {shards!r}")
    if split_at is not None and (isinstance(split_at, bool) or not isinstance(split_at, int) or split_at < 1):
        raise InvalidArgumentError(
            f"split_at must be a positive integer (records), or None; got {split_at!r}"
        )
