"""``python -m benchmarks.report`` end to end on the tiny generated set (none of the git-ignored data).

One run of two engines (Embeddix as a user gets it, raw hnswlib) in their child processes; the test checks
that the JSON, the PNG plots and REPORT.md appear, and that every recall figure in them equals an exact
recomputation: the tiny set rebuilt independently, brute-force ground truth from ``exact_knn`` over the
same base rows, and ``recall_at_k`` over the ids each engine returned (kept in the JSON).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from benchmarks import datasets
from benchmarks.report.data import FILTERS, TINY_PARAMS
from embeddix_core.eval import exact_knn, recall_at_k

ROOT = Path(__file__).resolve().parents[2]
ENGINES = ("embeddix", "hnswlib")
PLOTS = ("recall_qps", "latency", "bytes", "agents", "stress")

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    out = tmp_path_factory.mktemp("report")
    env = {k: v for k, v in os.environ.items() if not k.startswith("EMBEDDIX_")}
    command = [sys.executable, "-m", "benchmarks.report", "--quick", "--sets", "tiny"]
    command += ["--engines", ",".join(ENGINES), "--out", str(out)]
    res = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    return out, json.loads((out / "report_tiny.json").read_text(encoding="utf-8"))


def test_files_appear(report: tuple[Path, dict[str, Any]]) -> None:
    out, run = report
    for plot in PLOTS:
        png = out / f"report_tiny_{plot}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", plot
    md = (out / "REPORT.md").read_text(encoding="utf-8")
    assert md.startswith("# Embeddix next to its peers")
    assert "--sets tiny" in md and "**Machine:**" in md and "**Date:**" in md
    assert "hnswlib 0." in md  # the library versions
    for plot in PLOTS:
        assert f"](report_tiny_{plot}.png)" in md
    assert set(run["engines"]) == set(ENGINES)
    for name in ENGINES:
        row = run["engines"][name]
        assert row["status"] == "ok", (name, row.get("errors"), row.get("reason"))
        for key in (
            "single_agent",
            "qps",
            "filtered",
            "single_insert",
            "mixed",
            "stress",
            "storage",
            "multi_agent",
        ):
            assert key in row, (name, key)
        assert set(row["multi_agent"]) >= {"1", "4", "16", "25"}
        assert row["multi_agent"]["25"]["errors"] == 0


def _tiny(tmp_path: Path) -> datasets.Dataset:
    return datasets.synthetic(**TINY_PARAMS, data_dir=tmp_path)


def _pool_vectors(ds: datasets.Dataset, source: list[list[Any]], rows: list[int]) -> np.ndarray:
    out = []
    for r in rows:
        kind, i = source[r]
        out.append(ds.queries[i] if kind == "q" else ds.base[i])
    return np.asarray(out, np.float32)


def test_recall_equals_an_exact_recomputation(report: tuple[Path, dict[str, Any]], tmp_path: Path) -> None:
    out, run = report
    ds = _tiny(tmp_path)
    n = run["n"]
    md = (out / "REPORT.md").read_text(encoding="utf-8")
    for name in ENGINES:
        row = run["engines"][name]
        sa = row["single_agent"]
        queries = _pool_vectors(ds, run["query_pool_source"], sa["query_pool_rows"])
        truth = exact_knn(ds.base[:n], queries, 10).indices
        assert recall_at_k(sa["found"], truth, 10) == pytest.approx(sa["recall_at_10"], abs=1e-12)
        # the headline table quotes that figure
        shown = f"{sa['recall_at_10']:.4g}"
        assert any(line.startswith(f"| {row['label']} | {shown} |") for line in md.splitlines()), shown


def test_filtered_recall_equals_an_exact_recomputation(
    report: tuple[Path, dict[str, Any]], tmp_path: Path
) -> None:
    _, run = report
    ds = _tiny(tmp_path)
    n = run["n"]
    meta = [datasets.metadata_for(i) for i in range(n)]
    for name in ENGINES:
        filtered = run["engines"][name]["filtered"]
        for f in FILTERS:
            res = filtered[f["name"]]
            values = np.array([m[f["field"]] for m in meta])
            rows = np.flatnonzero(values == f["value"] if f["op"] == "eq" else values < f["value"])
            assert res["matching"] == len(rows)
            queries = _pool_vectors(ds, run["query_pool_source"], res["query_pool_rows"])
            truth = rows[exact_knn(ds.base[rows], queries, 10).indices]
            assert recall_at_k(res["found"], truth, 10) == pytest.approx(res["recall_at_10"], abs=1e-12)


def test_an_engine_that_cannot_run_gets_a_row_saying_why(report: tuple[Path, dict[str, Any]]) -> None:
    from benchmarks.report import markdown

    _, run = report
    broken = json.loads(json.dumps(run))
    broken["engines"]["lancedb"] = {
        "engine": "lancedb",
        "label": "LanceDB (embedded)",
        "status": "not installed",
        "reason": "no module lancedb here",
    }
    md = markdown.render({"tiny": broken}, run["meta"], {}, Path("."))
    assert "| LanceDB (embedded) | not installed: see below |" in md
    assert "- **LanceDB (embedded)** (not installed): no module lancedb here" in md
