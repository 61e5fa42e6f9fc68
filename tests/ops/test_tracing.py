"""Optional OpenTelemetry spans (``embeddix_core.metrics``): real spans through the SDK's in-memory exporter,
and the no-op path when tracing is off or OpenTelemetry is absent."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from embeddix_core import DimensionMismatchError, Embeddix, metrics
from embeddix_core.embeddings import HashEmbedder

sdk_trace = pytest.importorskip("opentelemetry.sdk.trace")
from opentelemetry.sdk.trace.export import SimpleSpanProcessor  # noqa: E402
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter  # noqa: E402
from opentelemetry.trace import StatusCode  # noqa: E402

DIM = 8


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    provider = sdk_trace.TracerProvider()
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    metrics.configure_tracing(provider)
    try:
        yield exporter
    finally:
        metrics.configure_tracing(None)  # back to auto: no provider installed in this process


def _names(exporter: InMemorySpanExporter) -> list[str]:
    return [s.name for s in exporter.get_finished_spans()]


def test_searches_and_writes_are_spans_with_the_collection(spans: InMemorySpanExporter) -> None:
    rng = np.random.default_rng(0)
    with Embeddix.open(None) as db:
        col = db.create_collection("traced", dim=DIM, embedder=HashEmbedder(dim=DIM))
        col.add(["a", "b"], rng.random((2, DIM)))
        col.upsert(["c"], documents=["a red fox"])  # embeds: an embed span too
        col.search(rng.random(DIM), k=1)
        list(col.search_iter(rng.random(DIM), k=1))
        col.delete(["a"])
        with pytest.raises(DimensionMismatchError):
            col.search(rng.random(DIM + 1))
        assert db.metrics()["collections"]["traced"]["operations"]["search"]["count"] == 1
    names = _names(spans)
    assert names[:2] == ["embeddix.add", "embeddix.embed"]  # the embed span ends inside the upsert
    assert {"embeddix.upsert", "embeddix.search", "embeddix.search_iter", "embeddix.delete"} <= set(names)
    by_name: dict[str, list[Any]] = {}
    for s in spans.get_finished_spans():
        by_name.setdefault(s.name, []).append(s)
    ok, failed = by_name["embeddix.search"]
    assert ok.attributes["embeddix.collection"] == "traced"
    assert ok.attributes["embeddix.operation"] == "search"
    assert failed.status.status_code is StatusCode.ERROR
    assert any(e.name == "exception" for e in failed.events)
    with Embeddix.open(None) as db:
        col = db.create_collection("traced_iter", dim=DIM)
        with pytest.raises(DimensionMismatchError):
            next(col.search_iter(rng.random(DIM + 1)))
    failed_iter = [s for s in spans.get_finished_spans() if s.name == "embeddix.search_iter"][-1]
    assert failed_iter.status.status_code is StatusCode.ERROR
    assert failed_iter.attributes["embeddix.collection"] == "traced_iter"
    embed = by_name["embeddix.embed"][0]
    upsert = by_name["embeddix.upsert"][0]
    assert embed.parent is not None and embed.parent.span_id == upsert.context.span_id


def test_span_helper_is_a_noop_when_tracing_is_off(spans: InMemorySpanExporter) -> None:
    with metrics.span("embeddix.custom", answer=42) as sp:
        assert sp is not None
    assert _names(spans) == ["embeddix.custom"]
    metrics.configure_tracing(enabled=False)
    with metrics.span("embeddix.custom") as sp:
        assert sp is None
    with Embeddix.open(None) as db:
        col = db.create_collection("quiet", dim=DIM)
        col.add(["a"], np.ones((1, DIM)))
        col.search(np.ones(DIM), k=1)
    assert _names(spans) == ["embeddix.custom"]  # nothing more


def test_without_opentelemetry_auto_mode_makes_no_spans(monkeypatch: pytest.MonkeyPatch) -> None:
    metrics.configure_tracing(None)
    # an import of "opentelemetry" now fails, as on a machine without the package
    monkeypatch.setitem(sys.modules, "opentelemetry", None)
    try:
        with metrics.span("embeddix.custom") as sp:
            assert sp is None
        assert metrics._TRACING.tracer is None
        with Embeddix.open(None) as db:
            col = db.create_collection("plain", dim=DIM)
            col.add(["a"], np.ones((1, DIM)))
            assert col.search(np.ones(DIM), k=1)[0].id == "a"
            assert db.metrics()["collections"]["plain"]["operations"]["search"]["count"] == 1
    finally:
        metrics.configure_tracing(None)  # auto mode looks again (it had given up: "not installed")


def test_auto_mode_ignores_the_api_default_provider() -> None:
    # the API package is installed here (the MCP SDK needs it) but no provider: spans would cost for nothing
    metrics.configure_tracing(None)
    with metrics.span("embeddix.custom") as sp:
        assert sp is None
