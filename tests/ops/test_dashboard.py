"""The sample Grafana dashboard parses and names only metrics the server exposes."""

from __future__ import annotations

import json
import re
from pathlib import Path

from embeddix_mcp.ops_http import METRIC_DOCS

DASHBOARD = Path(__file__).resolve().parents[2] / "examples" / "grafana" / "embeddix-dashboard.json"


def test_dashboard_queries_name_exposed_metrics() -> None:
    doc = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in doc["panels"] for t in p["targets"]]
    assert exprs
    used = set()
    for expr in exprs:
        for name in re.findall(r"\b(embeddix_\w+)", expr):
            base = re.sub(r"_(bucket|count|sum|total)$", "", name)
            assert base in METRIC_DOCS or name in METRIC_DOCS, (name, expr)
            used.add(base)
    # the headline series are on the board
    assert {"embeddix_operation_duration_seconds", "embeddix_cache_hits", "embeddix_operation_errors"} <= used
