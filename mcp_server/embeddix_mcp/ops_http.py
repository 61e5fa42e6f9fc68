"""Operations endpoints of the streamable-HTTP server: Prometheus ``/metrics`` and the performance API.

Routes (mounted by :func:`register` from ``server.py``)::

    GET  /metrics                              Prometheus text exposition of db.metrics()
    GET  /api/v1/performance/metrics           db.metrics() as JSON
    PUT  /api/v1/performance/config            change runtime settings (validated; 422 on bad values)
    POST /api/v1/performance/profile/{name}    apply a performance profile (latency | balanced | memory)
    GET  /api/v1/performance/recommendations   suggestions computed from the collections' own measurements

Every request passes, in this order: the bearer token of ``/mcp`` when tokens are configured (401 without a
valid one; only the headers are read), the same Host/Origin checks as ``/mcp`` (421 / 403: a page in a
browser must not reach a ``--no-auth`` server through DNS rebinding), then a body limit of
``MAX_BODY_BYTES`` (413) for the routes that read one.

Scope rule: a caller sees and changes only its own collections, as everywhere else on this server (the
agent is always the token's). Its own are the MCP collections named for it (``agent:<agent>``,
``agent:<agent>:<namespace>``, ``docs:<agent>:<name>``) and, when the server serves one agent only (one
agent in the token table, or ``--no-auth``), every other collection of the data directory too (those made
with the Python API or the ``embeddix`` command). A collection outside the scope is reported as absent,
with the message an absent one gets, so its name does not leak either. Collections are named as the core
names them (``agent:alice``), which is also the ``collection`` label of ``/metrics``.

The core stays free of any metrics framework: the Prometheus collector here reads ``db.metrics()`` (a plain
dict) at scrape time, and the metric names are the table :data:`METRIC_DOCS`.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import math
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import anyio.to_thread
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from embeddix_core import Collection, Embeddix, InvalidArgumentError, metrics

from .agents import split_memory_collection

if TYPE_CHECKING:
    from mcp.server.mcpserver import MCPServer
    from mcp.server.transport_security import TransportSecurityMiddleware, TransportSecuritySettings

    from .settings import TokenTable
    from .state import AppState

__all__ = [
    "MAX_BODY_BYTES",
    "METRIC_DOCS",
    "PROFILES",
    "ConfigRequest",
    "ProfileRequest",
    "metric_families",
    "register",
]

# A settings request is a few hundred bytes; nothing legitimate comes near this.
MAX_BODY_BYTES = 64 << 10
API = "/api/v1/performance"
# Used when the core does not publish its own list (embeddix_core.config.PROFILES).
_FALLBACK_PROFILES = ("latency", "balanced", "memory")


def _profiles() -> tuple[str, ...]:
    """The profile names the core knows (``embeddix_core.config.PROFILES``), else the issue's three."""
    published = getattr(importlib.import_module("embeddix_core.config"), "PROFILES", None)
    return tuple(published) if published else _FALLBACK_PROFILES


PROFILES = _profiles()

# -- requests ----------------------------------------------------------------------------------------------
CollectionName = Annotated[str, Field(min_length=1, max_length=200)]


class ConfigRequest(BaseModel):
    """``PUT /api/v1/performance/config``: settings that can change while the server runs.

    Settings fixed at creation (dim, metric, hnsw_m, ef_construction, quantization) and the cache budgets
    (``EMBEDDIX_CACHE_*``, read when a collection opens) are not here: they need a new collection or a
    restart.
    """

    model_config = ConfigDict(extra="forbid")

    collections: list[CollectionName] | None = Field(
        None, description="core collection names; omitted: every collection of the caller"
    )
    ef_search: int | None = Field(None, ge=1, le=32768, strict=True, description="default HNSW beam width")
    index_threshold: int | None = Field(
        None, ge=0, le=2**62, strict=True, description="live records above which HNSW replaces exact search"
    )
    personalization: dict[str, float | int | bool | str | None] | None = Field(
        None, description="Collection.personalization(...) settings, e.g. {'w_profile': 0.3}"
    )
    clear_cache: bool = Field(False, strict=True, description="drop every cached search result")

    @model_validator(mode="after")
    def _something(self) -> ConfigRequest:
        if (
            self.ef_search is None
            and self.index_threshold is None
            and not self.personalization
            and not self.clear_cache
        ):
            raise ValueError(
                "nothing to change: give ef_search, index_threshold, personalization or clear_cache"
            )
        return self


class ProfileRequest(BaseModel):
    """``POST /api/v1/performance/profile/{name}``: which collections (omitted: every one of the caller)."""

    model_config = ConfigDict(extra="forbid")

    collections: list[CollectionName] | None = None


# -- Prometheus exposition ---------------------------------------------------------------------------------
# name (as exposed; counters get ``_total``) -> (type, help). The dashboards and the README use these names.
METRIC_DOCS: dict[str, tuple[str, str]] = {
    "embeddix_operation_duration_seconds": (
        "histogram",
        "Duration of successful collection operations "
        "(search, search_batch, search_iter, add, upsert, update, delete)",
    ),
    "embeddix_operation_errors": ("counter", "Failed collection operations, by exception type"),
    "embeddix_embed_duration_seconds": ("histogram", "Duration of embedding model calls, per model"),
    "embeddix_embed_texts": ("counter", "Texts embedded by the model (cache hits excluded)"),
    "embeddix_embed_errors": ("counter", "Failed embedding model calls, by exception type"),
    "embeddix_cache_hits": ("counter", "Searches served by the result cache, per tier (exact, semantic)"),
    "embeddix_cache_misses": ("counter", "Result cache lookups that neither tier served"),
    "embeddix_cache_verified_rejects": ("counter", "Semantic candidates the bound refused to serve"),
    "embeddix_cache_invalidated": ("counter", "Cache entries dropped by writes"),
    "embeddix_cache_evicted": ("counter", "Cache entries dropped for the memory budget"),
    "embeddix_cache_entries": ("gauge", "Entries in the result cache"),
    "embeddix_cache_bytes": ("gauge", "Bytes held by the result cache"),
    "embeddix_cache_tier_enabled": ("gauge", "1 when the cache tier is on (the auto policy decides)"),
    "embeddix_collection_records": ("gauge", "Live records in the collection's index"),
    "embeddix_index_capacity": ("gauge", "Slots of the index (live records and tombstones)"),
    "embeddix_index_tombstones": ("gauge", "Deleted records still holding index slots"),
    "embeddix_index_memory_bytes": ("gauge", "Memory held by the index"),
    "embeddix_index_segments": ("gauge", "HNSW segments of the index"),
    "embeddix_index_write_buffered": ("gauge", "Written vectors waiting for the HNSW graph"),
    "embeddix_index_ef_search": ("gauge", "Default HNSW beam width"),
    "embeddix_index_threshold": ("gauge", "Live records above which HNSW replaces exact search"),
    "embeddix_index_info": ("gauge", "Always 1; the labels say the index kind, metric, dim and quantization"),
    "embeddix_calibration_calibrated": ("gauge", "1 when a recall/latency curve is in use"),
    "embeddix_calibration_running": ("gauge", "1 while a calibration runs in the background"),
    "embeddix_calibration_stale": ("gauge", "1 when the curve is due for a recalibration"),
    "embeddix_calibration_age_seconds": ("gauge", "Age of the curve in use"),
    "embeddix_calibration_writes_since": ("gauge", "Records written since the curve was measured"),
    "embeddix_background_flushing": ("gauge", "1 while the write buffer is being inserted into the graph"),
    "embeddix_background_reconfiguring": ("gauge", "1 while Collection.reconfigure rebuilds the index"),
    "embeddix_background_reconfigure_progress": ("gauge", "Fraction of the last reconfigure's rebuild done"),
    "embeddix_collections_open": ("gauge", "Collections of the caller open in this process"),
}


def _buckets(op: dict[str, Any]) -> list[tuple[str, float]]:
    from prometheus_client.utils import floatToGoString

    out = [(floatToGoString(le), float(n)) for le, n in op["buckets"]]
    out.append(("+Inf", float(op["count"])))
    return out


def metric_families(snapshot: dict[str, Any]) -> Iterator[Any]:
    """The Prometheus metric families of a ``db.metrics()`` snapshot (names: :data:`METRIC_DOCS`)."""
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

    kinds = {"counter": CounterMetricFamily, "gauge": GaugeMetricFamily, "histogram": HistogramMetricFamily}
    labels = {
        "embeddix_operation_duration_seconds": ["collection", "operation"],
        "embeddix_operation_errors": ["collection", "operation", "error"],
        "embeddix_embed_duration_seconds": ["model"],
        "embeddix_embed_texts": ["model"],
        "embeddix_embed_errors": ["model", "error"],
        "embeddix_cache_hits": ["collection", "tier"],
        "embeddix_cache_tier_enabled": ["collection", "tier"],
        "embeddix_index_info": ["collection", "kind", "metric", "dim", "quantization", "embedding_model"],
        "embeddix_collections_open": [],
    }
    fam = {
        name: kinds[kind](name, doc, labels=labels.get(name, ["collection"]))
        for name, (kind, doc) in METRIC_DOCS.items()
    }

    def gauge(name: str, value: Any, *label_values: str) -> None:
        if isinstance(value, bool):
            value = int(value)
        if isinstance(value, int | float) and math.isfinite(value):
            fam[name].add_metric(list(label_values), float(value))

    collections = snapshot.get("collections", {})
    for name, c in collections.items():
        for op, s in c["operations"].items():
            fam["embeddix_operation_duration_seconds"].add_metric([name, op], _buckets(s), s["sum_seconds"])
            for error, n in s["errors"].items():
                fam["embeddix_operation_errors"].add_metric([name, op, error], float(n))
        ca = c["cache"]
        gauge("embeddix_cache_hits", ca["hits"], name, "exact")
        gauge("embeddix_cache_hits", ca["semantic_hits"], name, "semantic")
        for key in ("misses", "verified_rejects", "invalidated", "evicted", "entries", "bytes"):
            gauge(f"embeddix_cache_{key}", ca[key], name)
        for tier, t in ca["tiers"].items():
            gauge("embeddix_cache_tier_enabled", t.get("state") == "on", name, tier)
        ix = c["index"]
        gauge("embeddix_collection_records", ix.get("count"), name)
        gauge("embeddix_index_capacity", ix.get("index_size"), name)
        for key in ("tombstones", "memory_bytes", "segments", "write_buffered", "ef_search"):
            gauge(f"embeddix_index_{key}", ix.get(key), name)
        gauge("embeddix_index_threshold", ix.get("index_threshold"), name)
        info = [
            str(ix.get("index")),
            str(ix.get("metric")),
            str(ix.get("dim")),
            str(ix.get("quantization", "none")),
            str(ix.get("embedding_model") or ""),
        ]
        gauge("embeddix_index_info", 1, name, *info)
        cal = c["calibration"]
        gauge("embeddix_calibration_calibrated", cal["calibrated"], name)
        gauge("embeddix_calibration_running", cal["running"], name)
        gauge("embeddix_calibration_stale", cal.get("stale", False), name)
        gauge("embeddix_calibration_writes_since", cal["writes_since"], name)
        if "age_seconds" in cal:
            gauge("embeddix_calibration_age_seconds", cal["age_seconds"], name)
        bg = c["background"]
        gauge("embeddix_background_flushing", bg["flushing"], name)
        gauge("embeddix_background_reconfiguring", bg.get("reconfiguring", False), name)
        gauge("embeddix_background_reconfigure_progress", bg.get("reconfigure_progress"), name)
    for model, e in snapshot.get("embed", {}).items():
        fam["embeddix_embed_duration_seconds"].add_metric([model], _buckets(e), e["sum_seconds"])
        gauge("embeddix_embed_texts", e["texts"], model)
        for error, n in e["errors"].items():
            fam["embeddix_embed_errors"].add_metric([model, error], float(n))
    gauge("embeddix_collections_open", len(collections))
    yield from fam.values()


class _Collector:
    """A prometheus-client collector reading a snapshot function at scrape time."""

    def __init__(self, snapshot: Callable[[], dict[str, Any]]) -> None:
        self._snapshot = snapshot

    def collect(self) -> Iterator[Any]:
        yield from metric_families(self._snapshot())


def exposition(snapshot: Callable[[], dict[str, Any]]) -> tuple[bytes, str]:
    """The text exposition (and its content type) of the snapshot, plus this process's CPU and memory.

    Raises:
        ImportError: prometheus-client is not installed.
    """
    from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, ProcessCollector, generate_latest

    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Collector(snapshot))  # type: ignore[arg-type]
    ProcessCollector(registry=registry)
    return generate_latest(registry), CONTENT_TYPE_LATEST


# -- the routes --------------------------------------------------------------------------------------------
def _error(status: int, error: str, detail: Any, **headers: str) -> JSONResponse:
    return JSONResponse({"error": error, "detail": detail}, status_code=status, headers=headers or None)


def _finite(obj: Any) -> Any:
    """``obj`` with non-finite floats as None (JSON has no inf or NaN)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_finite(v) for v in obj]
    return obj


def _jsonable(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return _finite(dataclasses.asdict(obj))
    if obj is None or isinstance(obj, dict | list | str | int | float | bool):
        return _finite(obj)
    return repr(obj)


class _Ops:
    """The routes' shared state: where the database is, who may call, and what they may see."""

    def __init__(
        self,
        state: Callable[[], AppState | None],
        tokens: TokenTable | None,
        agent: str,
        security: Callable[[], TransportSecuritySettings],
    ) -> None:
        self._state = state
        self._tokens = tokens
        self._agent = agent
        self._rules = security
        self._security: TransportSecurityMiddleware | None = None
        # one tenant: the directory's other collections are that agent's too (see the scope rule)
        self._single = tokens is None or len(tokens.agents) == 1

    async def admit(self, request: Request, *, json_body: bool = False) -> tuple[str, Embeddix] | Response:
        """The caller's agent and the database, or the response refusing the request."""
        agent = self._agent
        if self._tokens is not None:
            scheme, _, token = request.headers.get("authorization", "").partition(" ")
            found = self._tokens.agent_for(token.strip()) if scheme.lower() == "bearer" and token else None
            if found is None:
                return _error(
                    401,
                    "invalid_token",
                    "a valid bearer token is required (the one /mcp takes)",
                    **{"WWW-Authenticate": 'Bearer error="invalid_token"'},
                )
            agent = found
        if self._security is None:  # built on first use: stdio servers never need it
            from mcp.server.transport_security import TransportSecurityMiddleware

            self._security = TransportSecurityMiddleware(self._rules())
        refused = await self._security.validate_request(request, is_post=json_body)
        if refused is not None:
            return refused
        state = self._state()
        if state is None:
            return _error(503, "starting", "the server is starting; try again")
        return agent, state.db

    def owns(self, agent: str, name: str) -> bool:
        """Whether ``name`` is in ``agent``'s scope (see the module docstring)."""
        mem = split_memory_collection(name)
        if mem is not None:
            return mem[0] == agent
        parts = name.split(":")
        if parts[0] == "docs":
            return len(parts) == 3 and parts[1] == agent
        return self._single

    def scope(self, db: Embeddix, agent: str) -> list[str]:
        """The caller's collection names in the store."""
        return [n for n in db.list_collections() if self.owns(agent, n)]

    def snap(self, db: Embeddix, agent: str) -> dict[str, Any]:
        """``db.metrics()`` of the caller's collections (the ones this process has open)."""
        return db.metrics(self.scope(db, agent))

    def targets(self, db: Embeddix, agent: str, names: list[str] | None) -> list[Collection]:
        """The collections a change applies to (opened as needed).

        Raises:
            KeyError: A named collection is absent or outside the caller's scope (the message is the same).
        """
        if names is None:
            names = self.scope(db, agent)
        for name in names:
            if not self.owns(agent, name) or name not in db:
                raise KeyError(name)
        return [db.get_collection(n) for n in dict.fromkeys(names)]


async def _read_json(request: Request) -> Any:
    """The request's JSON body (None when empty), read up to :data:`MAX_BODY_BYTES`.

    Raises:
        OverflowError: The body is larger.
        ValueError: It is not JSON.
    """
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise OverflowError
    body = bytearray()
    async for chunk in request.stream():  # counted as it streams: a chunked body has no length
        body += chunk
        if len(body) > MAX_BODY_BYTES:
            raise OverflowError
    return json.loads(body) if body.strip() else None


def _invalid(exc: ValidationError) -> JSONResponse:
    # no input echo, no documentation links: the field, and what it should be
    detail = [
        {"loc": list(e["loc"]), "msg": e["msg"], "type": e["type"]}
        for e in exc.errors(include_url=False, include_input=False, include_context=False)
    ]
    return _error(422, "invalid_request", detail)


def _absent(name: str) -> JSONResponse:
    return _error(404, "not_found", f"no collection named {name!r}")


def register(
    server: MCPServer[Any],
    state: Callable[[], AppState | None],
    tokens: TokenTable | None,
    agent: str,
    security: Callable[[], TransportSecuritySettings],
) -> None:
    """Mount the operations routes on ``server`` (served by its streamable-HTTP app).

    Args:
        server: The MCP server.
        state: Returns the running server's state (None while it starts).
        tokens: The bearer tokens of ``/mcp``; None: no authentication (``--no-auth``, loopback only).
        agent: The agent served when there are no tokens.
        security: Returns the Host/Origin rules of ``/mcp`` (called once, at the first request).
    """
    ops = _Ops(state, tokens, agent, security)

    @server.custom_route("/metrics", methods=["GET"], include_in_schema=False)
    async def prometheus(request: Request) -> Response:
        admitted = await ops.admit(request)
        if isinstance(admitted, Response):
            return admitted
        who, db = admitted
        try:  # the collector calls db.metrics() at scrape time, in this worker thread
            body, content_type = await anyio.to_thread.run_sync(lambda: exposition(lambda: ops.snap(db, who)))
        except ImportError:
            return _error(
                501, "not_installed", "prometheus-client is not installed: pip install 'embeddix[mcp]'"
            )
        return Response(body, media_type=content_type)

    @server.custom_route(f"{API}/metrics", methods=["GET"], include_in_schema=False)
    async def performance_metrics(request: Request) -> Response:
        admitted = await ops.admit(request)
        if isinstance(admitted, Response):
            return admitted
        who, db = admitted
        return JSONResponse(_finite(await anyio.to_thread.run_sync(ops.snap, db, who)))

    @server.custom_route(f"{API}/recommendations", methods=["GET"], include_in_schema=False)
    async def recommendations(request: Request) -> Response:
        admitted = await ops.admit(request)
        if isinstance(admitted, Response):
            return admitted
        who, db = admitted
        snap = await anyio.to_thread.run_sync(ops.snap, db, who)
        recs = [r.as_dict() for r in metrics.recommendations(snap)]
        return JSONResponse(_finite({"recommendations": recs, "collections": sorted(snap["collections"])}))

    @server.custom_route(f"{API}/config", methods=["PUT"], include_in_schema=False)
    async def config(request: Request) -> Response:
        admitted = await ops.admit(request, json_body=True)
        if isinstance(admitted, Response):
            return admitted
        who, db = admitted
        req = await _body(request, ConfigRequest)
        if isinstance(req, Response):
            return req
        try:
            applied = await anyio.to_thread.run_sync(lambda: _apply_config(ops, db, who, req))
        except KeyError as exc:
            return _absent(str(exc.args[0]))
        except InvalidArgumentError as exc:
            return _error(422, "invalid_value", str(exc))
        return JSONResponse({"applied": applied})

    @server.custom_route(f"{API}/profile/{{name}}", methods=["POST"], include_in_schema=False)
    async def profile(request: Request) -> Response:
        admitted = await ops.admit(request)
        if isinstance(admitted, Response):
            return admitted
        who, db = admitted
        name = request.path_params["name"]
        if name not in PROFILES:
            return _error(404, "unknown_profile", f"no profile named {name!r}; profiles: {list(PROFILES)}")
        req = await _body(request, ProfileRequest)
        if isinstance(req, Response):
            return req
        try:
            applied, refused = await anyio.to_thread.run_sync(lambda: _apply_profile(ops, db, who, name, req))
        except KeyError as exc:
            return _absent(str(exc.args[0]))
        body = {"profile": name, "applied": applied, "refused": refused}
        return JSONResponse(body, status_code=422 if refused else 200)


_Request = TypeVar("_Request", bound=BaseModel)


async def _body(request: Request, model: type[_Request]) -> _Request | JSONResponse:
    """The request body as ``model`` (an empty body: the model's defaults), or the refusal (413, 422)."""
    try:
        return model.model_validate(await _read_json(request) or {})
    except OverflowError:
        return _error(413, "too_large", f"the body is over {MAX_BODY_BYTES} bytes")
    except ValidationError as exc:
        return _invalid(exc)
    except ValueError as exc:  # json.JSONDecodeError, UnicodeDecodeError
        return _error(422, "invalid_request", f"the body is not JSON: {exc}")


def _apply_config(ops: _Ops, db: Embeddix, agent: str, req: ConfigRequest) -> dict[str, Any]:
    """Check every change on every target first, then apply: a refused value changes nothing."""
    cols = ops.targets(db, agent, req.collections)
    changes = req.personalization or {}
    if changes:
        for col in cols:
            col.personalization().replace(**changes)  # raises InvalidArgumentError, before any change
    out: dict[str, Any] = {}
    for col in cols:
        if req.ef_search is not None or req.index_threshold is not None:
            col.configure(ef_search=req.ef_search, index_threshold=req.index_threshold)
        personal = col.personalization(**changes) if changes else col.personalization()
        if req.clear_cache:
            col.cache_clear()
        cfg = col.config
        out[col.name] = {
            "ef_search": cfg.ef_search,
            "index_threshold": cfg.index_threshold,
            "personalization": _jsonable(personal),
            "cache_cleared": req.clear_cache,
        }
    return out


def _apply_profile(
    ops: _Ops, db: Embeddix, agent: str, name: str, req: ProfileRequest
) -> tuple[dict[str, Any], dict[str, str]]:
    """Start ``col.reconfigure(profile=name)`` on each target: (started, refused with the core's message).

    A rebuild runs in the background (searches and writes go on); ``progress`` and ``done`` say where it
    is, and ``/metrics`` follows it (``embeddix_background_reconfigure_progress``).
    """
    applied: dict[str, Any] = {}
    refused: dict[str, str] = {}
    for col in ops.targets(db, agent, req.collections):
        try:
            handle = col.reconfigure(profile=name)
        except InvalidArgumentError as exc:
            refused[col.name] = str(exc)
            continue
        applied[col.name] = _reconfiguration(handle)
    return applied, refused


def _reconfiguration(handle: Any) -> dict[str, Any]:
    """What a ``Reconfiguration`` handle says, as JSON."""
    target, previous = getattr(handle, "config", None), getattr(handle, "previous", None)
    error = getattr(handle, "error", None)

    def shape(cfg: Any) -> dict[str, Any] | None:
        if cfg is None:
            return None
        keys = ("index", "quantization", "profile")
        return {k: getattr(cfg, k) for k in keys if hasattr(cfg, k)}

    return {
        "done": bool(getattr(handle, "done", True)),
        "progress": _finite(float(getattr(handle, "progress", 1.0))),
        "target": shape(target),
        "previous": shape(previous),
        "error": None if error is None else str(error),
    }
