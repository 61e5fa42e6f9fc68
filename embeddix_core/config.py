"""Settings: process-wide defaults (pydantic-settings) and per-collection parameters stored with the data.

Merge order, as in diskcache: built-in defaults -> a config file (``EMBEDDIX_CONFIG``) -> environment
(``EMBEDDIX_*``) -> arguments given to :class:`EmbeddixSettings` -> values stored with a collection ->
arguments given to ``create_collection``. Parameters that shape the on-disk index (``dim``, ``metric``,
``hnsw_m``, ``ef_construction``) can never change after a collection is created; ``ef_search`` and the
thresholds are runtime knobs.

The config file is TOML (``.toml``) or JSON (any other name) holding the same keys as the environment
without the prefix, read by pydantic-settings' own sources (:func:`config_file_source`)::

    # embeddix.toml
    durability = "normal"
    cache_persist = true

The MCP server reads the same file (its ``--config``) for its own keys, so one file may hold both; the
engine leaves the keys it does not know to the server, and the server refuses keys neither knows.
"""

from __future__ import annotations

import dataclasses
import json
import tomllib
from collections.abc import Collection
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any, Literal

from pydantic import Field
from pydantic_settings import (
    BaseSettings,
    InitSettingsSource,
    JsonConfigSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from .errors import ConfigFileError, InvalidArgumentError
from .types import Metric

__all__ = [
    "INDEXES",
    "PROFILES",
    "QUANTIZATIONS",
    "CollectionConfig",
    "ConfigFileError",
    "Durability",
    "EmbeddixSettings",
    "ProfilePreset",
    "config_file_path",
    "config_file_source",
    "profile_settings",
]


def config_file_path(
    init_settings: PydanticBaseSettingsSource, env_settings: PydanticBaseSettingsSource
) -> Path | None:
    """The config file a settings class is built from: its ``config`` argument, else ``EMBEDDIX_CONFIG``.

    Args:
        init_settings: The source of the arguments given to the settings class.
        env_settings: The environment source (with the class's ``EMBEDDIX_`` prefix).

    Returns:
        The path, or None when neither names one.
    """
    path: Any = None
    if isinstance(init_settings, InitSettingsSource):
        path = init_settings.init_kwargs.get("config")
    if path is None:
        path = env_settings().get("config")
    return Path(path) if path else None


def config_file_source(
    settings_cls: type[BaseSettings], path: Path | None, *, known_keys: Collection[str] | None = None
) -> PydanticBaseSettingsSource:
    """pydantic-settings' TOML or JSON source for ``path``, with errors a user can act on.

    pydantic-settings skips a missing file silently and lets parser exceptions through; a file the user
    named is required here, and every failure becomes one :class:`ConfigFileError` naming the file.

    Args:
        settings_cls: The settings class the source feeds.
        path: The file (``~`` expanded); ``.toml`` is read as TOML, any other name as JSON. None: no file.
        known_keys: Keys the file may hold; any other key is refused. None: keys ``settings_cls`` does not
            declare are ignored (the file is shared with another reader that checks them).

    Returns:
        A source holding the file's values (empty without a file), lower in priority than the environment
        where :meth:`settings_customise_sources` places it.

    Raises:
        ConfigFileError: The file is missing or unreadable, does not parse, is not a table of settings, or
            holds a key outside ``known_keys``.
    """
    if path is None:
        return InitSettingsSource(settings_cls, {})
    path = path.expanduser()
    kind = "TOML" if path.suffix.lower() == ".toml" else "JSON"
    if not path.is_file():
        raise ConfigFileError(
            f"cannot read the config file {str(path)!r}: no such file (named by --config or "
            f"EMBEDDIX_CONFIG); give the path of a TOML or JSON file, or unset it"
        )
    try:
        if kind == "TOML":
            toml = TomlConfigSettingsSource(settings_cls, toml_file=path)
            source: PydanticBaseSettingsSource = toml
            data: Any = toml.toml_data
        else:
            js = JsonConfigSettingsSource(settings_cls, json_file=path)
            source, data = js, js.json_data
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigFileError(f"cannot read the config file {str(path)!r}: {exc}") from exc
    except (tomllib.TOMLDecodeError, json.JSONDecodeError) as exc:
        raise ConfigFileError(f"config file {str(path)!r} is not valid {kind}: {exc}") from exc
    except (TypeError, ValueError) as exc:
        # A JSON array or scalar at the top level: pydantic-settings fails merging it into a dict.
        raise ConfigFileError(
            f"config file {str(path)!r} must hold a {kind} object of settings (key: value pairs), not "
            f"an array or a single value"
        ) from exc
    if known_keys is not None:
        unknown = sorted(set(data) - set(known_keys))
        if unknown:
            raise ConfigFileError(
                f"config file {str(path)!r} has unknown keys {unknown}; known keys: {sorted(known_keys)}"
            )
    return source


class Durability(StrEnum):
    """What is durable when a write call returns.

    * ``full``: the SQLite WAL is fsynced at every commit; an acknowledged write survives kill -9 and
      power loss.
    * ``normal``: the commit reaches the OS before the call returns; it survives kill -9 of the process
      (the OS still holds the WAL pages) but the last commits may be lost on power loss.
    """

    FULL = "full"
    NORMAL = "normal"


class EmbeddixSettings(BaseSettings):
    """Process-wide defaults, read from ``EMBEDDIX_*`` environment variables and an optional config file.

    Priority, highest first: arguments, environment, the config file (``config``), defaults.

    Attributes:
        config: A TOML (``.toml``) or JSON file of settings (``EMBEDDIX_CONFIG``); see the module docstring.
        durability: See :class:`Durability`.
        index_threshold: Live-record count above which a collection switches from exact search to HNSW.
        hnsw_m: HNSW graph degree for new collections.
        ef_construction: HNSW build-time beam width for new collections.
        ef_search: HNSW query beam width of searches that name no ``ef`` where no calibration plans
            (``auto_calibrate`` off, or fewer than ``calibration_min_count`` records); per-query ``ef``
            overrides it.
        exact_backend: Exact search below the HNSW threshold: ``"numpy"``, ``"faiss"``, or ``"auto"``
            (FAISS on a CUDA GPU when one is present and ``gpu`` allows it, else numpy).
        gpu: CUDA FAISS use: ``"auto"`` (a GPU when a CUDA build of FAISS sees one, for batches above a
            measured size; else the CPU, with one log line saying why), ``"on"`` (a GPU is required:
            ``GpuUnavailableError`` without one) or ``"off"``. All CUDA code is in ``index/_gpu.py``.
        segment_size: HNSW vectors per segment; larger collections get more segments, searched in
            parallel and merged exactly (0 = one graph however large).
        write_buffer: New vectors held in an exactly-searched buffer before a background thread inserts
            them into the HNSW graph as one multi-threaded batch (0 = insert each write at once). Small
            writes then cost a buffer append instead of ~1 ms of single-threaded graph insertion; the
            buffer holds up to 8x this many while a flush runs, then writes wait for the graph.
        exact_filter_fraction: A filtered search scans the matching subset exactly when at most this
            fraction of the collection matches (or fewer than ``exact_filter_min`` records).
        exact_filter_min: See ``exact_filter_fraction``.
        snapshot_min_changes: ``checkpoint()`` on close is skipped when fewer writes than this happened
            since the last snapshot (replaying them on open is cheaper than saving).
        busy_timeout_ms: How long a writer waits for another process's write transaction.
        default_recall: Recall@k target of a search that names neither ``recall`` nor ``ef``, once the
            collection is calibrated. Between the moment a calibration is due and its first curve (a
            bulk load's end), HNSW plans from ``query.planner.PRIOR``, a curve measured on real text.
        auto_calibrate: Measure each HNSW collection's recall/latency curve in the background.
        calibration_min_count: Collections smaller than this are not calibrated (``ef_search`` serves).
        calibration_sample: Queries in a calibration sample.
        calibration_noise: How far each sampled vector is moved off itself to act as a query, in
            units of its nearest-neighbour distance (0 = use stored vectors as they are).
        calibration_quiet_s: A background calibration waits until no write happened for this long...
        calibration_max_wait_s: ...or at most this long into a burst of writes (a bulk load gets a
            measured curve while it runs, each at most 20% stale).
        calibration_min_queries: Real queries needed before calibration uses them instead of the sample.
        cache_enabled: Result caching (on by default; ``search(cache=False)`` bypasses it per call).
        cache_max_bytes: Memory budget of a collection's shared result cache.
        cache_session_max_bytes: Memory budget of each session's (agent's) cache.
        cache_max_sessions: Session caches kept per collection (least recently used dropped first).
        cache_ttl: Seconds a cached result lives (None: until invalidated or evicted).
        cache_semantic: Serve near-duplicate queries from cached candidate sets when a bound proves it.
        cache_similarity: Pre-filter for semantic candidates (cosine similarity to a cached query).
        cache_candidate_factor: Candidates kept per cached query, as a multiple of k.
        cache_beam_factor: Beam of a default search that misses the cache, as a multiple of the
            candidates it keeps (see the field's description).
        cache_probe: Whether a semantic lookup also runs a small search for the new query (see the
            field's description).
        cache_persist: Keep result caches on disk across restarts (in ``<data>/cache``).
        vector_cache_bytes: Memory for full-precision vectors kept to re-rank cached candidates.
        row_cache_bytes: Memory per collection for stored rows (id, document, metadata), packed, to build
            hits without SQLite reads (~1 us a row against ~10 us cold); filled as writes commit and, after
            an open, from the newest rows in the background; the oldest go first (``cache/row_cache.py``).
        filter_matrix_bytes: Memory for the vectors of recent filters' matching records, one contiguous
            matrix per filter, which an exact scan of the matches needs to be fast (10,000 x 384 in
            ~0.5 ms on one core, where hooking the HNSW search costs ~1-3 ms); least recently used
            dropped first. A filter whose matrix would exceed it is never scanned from one (0 = none).
        malloc_mmap_threshold: glibc's mmap threshold, fixed at open so large freed buffers return to the
            OS (0: glibc's dynamic default; see the field's description).
    """

    model_config = SettingsConfigDict(env_prefix="EMBEDDIX_", extra="ignore")

    config: Path | None = None
    durability: Durability = Durability.FULL
    index_threshold: int = Field(10_000, ge=0)
    hnsw_m: int = Field(16, ge=2, le=128)
    ef_construction: int = Field(200, ge=8, le=4096)
    ef_search: int = Field(96, ge=1, le=32768)
    segment_size: int = Field(1_000_000, ge=0)
    write_buffer: int = Field(128, ge=0, le=65_536)
    exact_backend: Literal["auto", "numpy", "faiss"] = "auto"
    gpu: Literal["auto", "on", "off"] = "auto"
    exact_filter_fraction: float = Field(0.02, ge=0.0, le=1.0)
    exact_filter_min: int = Field(4096, ge=0)
    snapshot_min_changes: int = Field(1, ge=0)
    busy_timeout_ms: int = Field(30_000, ge=0)
    default_recall: float = Field(0.95, gt=0.0, le=1.0)
    auto_calibrate: bool = True
    calibration_min_count: int = Field(2_000, ge=0)
    calibration_sample: int = Field(200, ge=10, le=10_000)
    calibration_noise: float = Field(2.0, ge=0.0, le=4.0)
    calibration_min_queries: int = Field(100, ge=10, le=512)
    calibration_quiet_s: float = Field(1.0, ge=0.0)
    calibration_max_wait_s: float = Field(5.0, ge=0.0)
    cache_enabled: bool = True
    cache_max_bytes: int = Field(64 << 20, ge=0)
    cache_session_max_bytes: int = Field(8 << 20, ge=0)
    cache_max_sessions: int = Field(256, ge=1)
    cache_ttl: float | None = Field(None, gt=0)
    cache_semantic: bool = True
    cache_policy: Literal["auto", "always"] = Field(
        "auto",
        description=(
            "When the result cache's tiers are used. 'auto': only where they pay back on the observed "
            "workload: the cache measures what a plain miss, keeping an answer, a widened miss, an exact "
            "hit and a semantic hit cost on this collection, and how often repeats and near duplicates "
            "arrive (embeddix_core/cache/policy.py; cache_info()['tiers'] says each tier's state and why). "
            "'always': the exact tier keeps every answer and every default miss searches the wide beam "
            "that lets its candidates certify near duplicates (slower misses)."
        ),
    )
    cache_similarity: float = Field(0.95, ge=0.0, le=1.0)
    cache_candidate_factor: int = Field(8, ge=1, le=64)
    cache_beam_factor: float = Field(
        2.0,
        ge=1.0,
        le=16.0,
        description=(
            "A default search (no recall, deadline or ef) that misses the result cache searches with a "
            "beam of at least this many times the candidates it keeps (cache_candidate_factor * k); only "
            "such candidate sets, and those of exact searches, may certify semantic hits. Wider than an "
            "uncached search's beam so that the candidates hold what a fresh search for a near duplicate "
            "would find: with the uncached beam, served answers were measured worse than a fresh search's "
            "(see embeddix_core/cache/result_cache.py). A wider beam makes misses slower."
        ),
    )
    cache_probe: bool = Field(
        True,
        description=(
            "A semantic lookup from an approximate (HNSW) candidate set also runs a small search for the "
            "new query (a beam of about 1.6 k) whose records join the re-rank: it finds what the cached "
            "search missed on the new query's route through the graph. Off, a semantic hit saves that "
            "search (about a third of its time) and served answers can, rarely, be worse than a fresh "
            "search's (see embeddix_core/cache/result_cache.py). Exact candidate sets never need it."
        ),
    )
    cache_persist: bool = False
    sqlite_cache_bytes: int = Field(
        8 << 20,
        ge=1 << 20,
        description=(
            "One page-cache budget for the SQLite database, shared by all its connections (the writer, "
            "a reader per searching thread, the background calibration's) through SQLite's process-wide "
            "soft heap limit. Hits read their rows through the row cache first; a larger budget mostly "
            "helps searches over more rows than that cache holds."
        ),
    )
    vector_cache_bytes: int = Field(32 << 20, ge=0)
    row_cache_bytes: int = Field(16 << 20, ge=0)
    filter_matrix_bytes: int = Field(64 << 20, ge=0)
    malloc_mmap_threshold: int = Field(
        256 << 10,
        ge=0,
        le=32 << 20,
        description=(
            "glibc only: allocations of at least this many bytes are mapped on their own and go back to "
            "the OS when freed, instead of glibc raising its threshold after the first large free and "
            "keeping later batches' buffers in its heap (see embeddix_core/_memory.py). Process-wide, set "
            "at open. 0 leaves glibc's default."
        ),
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Add the config file below the environment (arguments > environment > file > defaults)."""
        path = config_file_path(init_settings, env_settings)
        file_settings = config_file_source(settings_cls, path)
        return init_settings, env_settings, dotenv_settings, file_settings, file_secret_settings


# What a collection's approximate index keeps per vector (see index/faiss_hnsw.py, index/faiss_ivf.py).
# "none": float32 vectors (hnswlib graph, or IVF-Flat lists); "fp16"/"sq8": FAISS HNSW over 2-/1-byte
# codes; "pq": product-quantized codes in IVF lists (IVF-PQ). Every quantized search re-ranks its
# candidates with the store's float32 vectors. Policy as data: the value -> what it is, for messages/docs.
QUANTIZATIONS: dict[str, str] = {
    "none": "float32 vectors in an hnswlib graph or IVF-Flat lists (the default)",
    "fp16": "half-precision codes in a FAISS HNSW graph, re-ranked at full precision",
    "sq8": "8-bit scalar codes in a FAISS HNSW graph (trained at the switch to HNSW), re-ranked",
    "pq": "product-quantized codes in IVF lists (IVF-PQ, trained from 10,000 vectors), re-ranked",
}
# Which approximate index a collection uses above ``index_threshold`` ("flat": none, exact for ever).
INDEXES: dict[str, str] = {
    "auto": "exact search while small, then HNSW (IVF for quantization='pq')",
    "flat": "exact search at every size (float32, no approximation)",
    "hnsw": "exact search while small, then an HNSW graph",
    "ivf": "exact search while small, then IVF lists (IVF-Flat, or IVF-PQ with quantization='pq')",
}
# quantization -> the approximate indexes that can hold it
_QUANT_INDEXES: dict[str, tuple[str, ...]] = {
    "none": ("auto", "flat", "hnsw", "ivf"),
    "fp16": ("auto", "hnsw"),
    "sq8": ("auto", "hnsw"),
    "pq": ("auto", "ivf"),
}


@dataclass(frozen=True, slots=True)
class ProfilePreset:
    """A named preset of index, quantization and per-collection memory budgets (see :data:`PROFILES`).

    Attributes:
        index: The ``index`` it picks.
        quantization: The ``quantization`` it picks.
        settings: :class:`EmbeddixSettings` fields it sets for the collection's caches (a field the user
            set explicitly, by argument, environment or config file, wins).
        summary: What it is for, in one line (messages, docs, ``embeddix ls``).
    """

    index: str
    quantization: str
    settings: dict[str, Any]
    summary: str


# The presets of ``create_collection(profile=...)``; explicit arguments win over them. Figures are from
# benchmarks/ (real text 100,000 x 384 for latency/balanced, synthetic 768-d for memory).
PROFILES: dict[str, ProfilePreset] = {
    "latency": ProfilePreset(
        "hnsw",
        "none",
        {"row_cache_bytes": 64 << 20, "vector_cache_bytes": 64 << 20, "cache_max_bytes": 128 << 20},
        "float32 HNSW and large caches: the fastest searches, ~1.7 KB a 384-d vector resident",
    ),
    "balanced": ProfilePreset(
        "auto",
        "sq8",
        {},
        "8-bit codes in HNSW, re-ranked at full precision: ~0.8 KB a 384-d vector, recall unchanged",
    ),
    "memory": ProfilePreset(
        "ivf",
        "pq",
        {
            "row_cache_bytes": 2 << 20,
            "vector_cache_bytes": 4 << 20,
            "cache_max_bytes": 8 << 20,
            "cache_session_max_bytes": 1 << 20,
            "filter_matrix_bytes": 8 << 20,
        },
        "IVF-PQ codes (~100 bytes a 768-d vector) re-ranked from disk, small caches: the least memory",
    ),
}


def profile_settings(settings: EmbeddixSettings, profile: str | None) -> EmbeddixSettings:
    """The settings a collection with ``profile`` runs with: the preset's budgets, unless set explicitly.

    Args:
        settings: The process settings.
        profile: A key of :data:`PROFILES`, or None (``settings`` unchanged).

    Returns:
        ``settings`` itself, or a copy with the preset's fields the user did not set.
    """
    if profile is None:
        return settings
    preset = PROFILES[profile]
    explicit = settings.model_fields_set
    update = {k: v for k, v in preset.settings.items() if k not in explicit}
    return settings.model_copy(update=update) if update else settings


@dataclass(frozen=True, slots=True)
class CollectionConfig:
    """Parameters of one collection, stored with it as JSON.

    ``dim``, ``metric``, ``hnsw_m``, ``ef_construction``, ``segment_size`` and ``quantization`` are
    fixed at creation; the rest can be changed with ``Collection.configure``. A stored config without
    ``quantization`` (written before it existed) reads as ``"none"``, and ``"none"`` is not written, so
    unquantized collections store the same JSON as before.
    """

    dim: int
    metric: Metric = Metric.COSINE
    hnsw_m: int = 16
    ef_construction: int = 200
    ef_search: int = 96
    index_threshold: int = 10_000
    embedding_model: str | None = None
    segment_size: int = 1_000_000
    quantization: str = "none"
    index: str = "auto"
    profile: str | None = None

    # ``quantization`` and ``index`` change only through ``Collection.reconfigure`` (a rebuild)
    FIXED = ("dim", "metric", "hnsw_m", "ef_construction", "segment_size", "quantization", "index")

    def __post_init__(self) -> None:
        if isinstance(self.dim, bool) or not isinstance(self.dim, int) or not 1 <= self.dim <= 65_536:
            raise InvalidArgumentError(f"dim must be an integer from 1 to 65536; got {self.dim!r}")
        object.__setattr__(self, "metric", Metric.parse(self.metric))
        for name, low, high in (
            ("hnsw_m", 2, 128),
            ("ef_construction", 8, 4096),
            ("ef_search", 1, 32768),
            ("index_threshold", 0, 2**62),
            ("segment_size", 0, 2**62),
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
                raise InvalidArgumentError(f"{name} must be an integer from {low} to {high}; got {value!r}")
        q = self.quantization
        if not isinstance(q, str) or q not in QUANTIZATIONS:
            raise InvalidArgumentError(f"quantization must be one of {sorted(QUANTIZATIONS)}; got {q!r}")
        kind = self.index
        if not isinstance(kind, str) or kind not in INDEXES:
            raise InvalidArgumentError(f"index must be one of {sorted(INDEXES)}; got {kind!r}")
        if kind not in _QUANT_INDEXES[q]:
            raise InvalidArgumentError(
                f"quantization={q!r} cannot be used with index={kind!r}; it needs index in "
                f"{list(_QUANT_INDEXES[q])}"
            )
        if self.profile is not None and self.profile not in PROFILES:
            raise InvalidArgumentError(
                f"profile must be None or one of {sorted(PROFILES)}; got {self.profile!r}"
            )

    @property
    def approximate(self) -> str:
        """The index above ``index_threshold``: ``"flat"`` (none: exact), ``"hnsw"`` or ``"ivf"``."""
        if self.index == "auto":
            return "ivf" if self.quantization == "pq" else "hnsw"
        return self.index

    def to_json(self) -> str:
        """Serialize for storage next to the collection."""
        data = dataclasses.asdict(self)
        data["metric"] = self.metric.value
        # defaults are not written: a collection that uses none of these stores the JSON it stored
        # before they existed (older releases read it unchanged)
        for key, default in (("quantization", "none"), ("index", "auto"), ("profile", None)):
            if data[key] == default:
                del data[key]
        return json.dumps(data, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> CollectionConfig:
        """Read a stored config, ignoring keys this version does not know."""
        data: dict[str, Any] = json.loads(text)
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})
