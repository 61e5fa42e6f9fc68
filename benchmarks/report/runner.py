"""The parent of a report run: prepares each data set, runs every engine in a child process of its own,
collects their results and writes the JSON, the plots and REPORT.md (see the package docstring)."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import importlib.util
import json
import os
import shlex
import signal
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchmarks.report import data, engines, markdown, plots

ROOT = Path(__file__).resolve().parents[2]
BENCH = ROOT / "benchmarks"
PEERS_VENV = BENCH / ".peers-venv"
DEFAULT_ENGINES = tuple(engines.ENGINES)
# Pure-Python stores hold each vector as a list of float objects; past this estimate they are not run.
PY_STORE_LIMIT_BYTES = 4 << 30
INSTALL_HINT = "install the peers with: pip install -e '.[all,dev,bench]' (see benchmarks/README.md)"


def _log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] report: {message}", file=sys.stderr, flush=True)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.report",
        description="Embeddix next to its peers: every engine in its own process on the same data; "
        "writes JSON, PNG plots and REPORT.md.",
    )
    p.add_argument(
        "--quick", action="store_true", help="12,000 records of realtext, small workloads (< 5 min)"
    )
    p.add_argument(
        "--sets",
        default=None,
        help="comma-separated data sets: realtext, synth768, tiny (default: realtext,synth768; --quick: realtext)",
    )
    p.add_argument(
        "--engines",
        default=",".join(DEFAULT_ENGINES),
        help=f"comma-separated, of: {', '.join(DEFAULT_ENGINES)}",
    )
    p.add_argument("--n", type=int, default=None, help="base records per set (default: the set's size)")
    p.add_argument(
        "--out",
        type=Path,
        default=None,
        help="directory for REPORT.md, JSON and PNGs (default: benchmarks/REPORT.md and benchmarks/results/; "
        "--quick: benchmarks/results/report_quick/)",
    )
    args = p.parse_args(argv)
    args.set_list = [
        s for s in (args.sets or ("realtext" if args.quick else "realtext,synth768")).split(",") if s
    ]
    args.engine_list = [e for e in args.engines.split(",") if e]
    for s in args.set_list:
        if s not in data.SETS:
            p.error(f"unknown set {s!r}; known: {', '.join(data.SETS)}")
    for e in args.engine_list:
        if e not in engines.ENGINES:
            p.error(f"unknown engine {e!r}; known: {', '.join(engines.ENGINES)}")
    return args


def _paths(args: argparse.Namespace) -> tuple[Path, Path]:
    """(REPORT.md, results directory)."""
    if args.out is not None:
        return args.out / "REPORT.md", args.out
    if args.quick:
        out = BENCH / "results" / "report_quick"
        return out / "REPORT.md", out
    return BENCH / "REPORT.md", BENCH / "results"


def _interpreter(engine: type[engines.Engine]) -> tuple[str | None, str]:
    """The Python that can import the engine's library (this one, else the peers' venv), or why none."""
    try:
        found = importlib.util.find_spec(engine.module) is not None
    except (ImportError, ValueError):
        found = False
    if found:
        return sys.executable, ""
    peer = PEERS_VENV / "bin" / "python"
    if peer.exists():
        res = subprocess.run([str(peer), "-c", f"import {engine.module}"], capture_output=True, text=True)
        if res.returncode == 0:
            return str(peer), ""
        why = (res.stderr.strip().splitlines() or ["?"])[-1]
        return None, f"{engine.module} imports neither here nor in {PEERS_VENV.name} ({why}); {INSTALL_HINT}"
    return None, f"no module {engine.module} here ({sys.executable}); {INSTALL_HINT}"


def _run_child(
    python: str, spec: dict[str, Any], work: Path, timeout: float, extra_env: dict[str, str]
) -> dict[str, Any]:
    """Run one engine's child; its result, or a failed row saying why."""
    spec_path = work / f"{spec['engine']}.spec.json"
    spec_path.write_text(json.dumps(spec), encoding="utf-8")
    log_path = work / f"{spec['engine']}.log"
    env = {**os.environ, **extra_env}
    env.setdefault("ANONYMIZED_TELEMETRY", "False")  # chromadb: no telemetry from a benchmark
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    tty = sys.stderr.isatty()
    t0 = time.perf_counter()
    with open(log_path, "w", encoding="utf-8") as log:
        # on a terminal the child's progress bars and log lines show; otherwise they go to a file whose
        # end a failed row quotes
        proc = subprocess.Popen(
            [python, "-m", "benchmarks.report.child", str(spec_path)],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=None if tty else log,
            start_new_session=True,
        )
        try:
            code = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            why = f"timed out after {timeout:.0f} s (the child was killed)"
            return {"status": "failed", "reason": _with_tail(why, log_path, tty)}
    wall = time.perf_counter() - t0
    out_path = Path(spec["out"])
    if not out_path.exists():
        why = f"the child exited with status {code} and wrote no result"
        return {"status": "failed", "reason": _with_tail(why, log_path, tty)}
    result: dict[str, Any] = json.loads(out_path.read_text(encoding="utf-8"))
    result["wall_s"] = wall
    if result.get("status") == "failed":
        result["reason"] = "; ".join(f"{k}: {v}" for k, v in result.get("errors", {}).items())
    return result


def _with_tail(why: str, log_path: Path, tty: bool) -> str:
    """``why`` and the last lines the child logged (when they went to a file, not to the terminal)."""
    if tty or not log_path.exists():
        return why
    lines = [
        ln.strip() for ln in log_path.read_text(encoding="utf-8", errors="replace").splitlines() if ln.strip()
    ]
    return " | ".join([why, "last log lines:", *lines[-3:]])[-900:]


def _python_store_guard(engine: type[engines.Engine], n: int, dim: int) -> str | None:
    if not engine.python_bytes_per_float:
        return None
    need = n * dim * engine.python_bytes_per_float
    if need <= PY_STORE_LIMIT_BYTES:
        return None
    return (
        f"it would hold {n:,} x {dim} vectors as Python lists of floats, about {need / 2**30:.1f} GiB "
        f"({engine.python_bytes_per_float} bytes a number), above this report's {PY_STORE_LIMIT_BYTES >> 30} GiB "
        "limit for one engine on this 24 GiB machine shared with other jobs"
    )


def run_set(set_name: str, args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """Prepare one data set and run every asked engine on it."""
    sizes = data.sizes_for(set_name, quick=args.quick, n=args.n)
    _log(f"{set_name}: preparing queries and exact ground truth ...")
    t0 = time.perf_counter()
    prep = data.prepare(set_name, sizes, work / set_name)
    _log(f"{set_name}: {prep.n:,} x {prep.dim} ({prep.dataset}), ready in {time.perf_counter() - t0:.1f} s")
    out: dict[str, Any] = {
        "set": set_name,
        "dataset": prep.dataset,
        "n": prep.n,
        "dim": prep.dim,
        "sizes": dataclasses.asdict(sizes),
        "data": prep.info,
        "query_sets": prep.sets,
        "query_pool_source": prep.pool_source,
        "insert_rows": [prep.insert_rows[0], prep.insert_rows[-1] + 1] if prep.insert_rows else [],
        "filters": list(data.FILTERS),
        "engines": {},
    }
    for name in args.engine_list:
        cls = engines.engine_class(name)
        python, why = _interpreter(cls)
        guard = _python_store_guard(cls, prep.n, prep.dim)
        row: dict[str, Any]
        if python is None:
            row = {"status": "not installed", "reason": why}
        elif guard:
            row = {"status": "skipped", "reason": guard}
        else:
            spec = {
                "engine": name,
                "work": str(work / set_name / name),
                "out": str(work / set_name / f"{name}.result.json"),
                "base": str(prep.base),
                "texts": str(prep.texts) if prep.texts else None,
                "qpool": str(prep.qpool),
                "truth": str(prep.truth),
                "sets": prep.sets,
                "insert_rows": prep.insert_rows,
                "filters": list(data.FILTERS),
                "n": prep.n,
                "dim": prep.dim,
                "size": sizes.child(),
            }
            Path(spec["work"]).mkdir(parents=True, exist_ok=True)
            _log(f"{set_name}: {name} ({'this venv' if python == sys.executable else python}) ...")
            row = _run_child(python, spec, work, sizes.timeout_s, cls.child_env)
            engines.remove(Path(spec["work"]))
            _log(
                f"{set_name}: {name}: {row.get('status')} in {row.get('wall_s', 0):.0f} s {row.get('reason', '')}"
            )
        row.setdefault("engine", name)
        row.setdefault("label", cls.label)
        out["engines"][name] = row
    return out


def main(argv: list[str] | None = None) -> int:
    """Run the report (see ``--help``); returns 0, or 1 when no engine produced a result."""
    args = parse_args(argv)
    from benchmarks.default_path_bench import _machine

    report_path, results = _paths(args)
    results.mkdir(parents=True, exist_ok=True)
    command = "python -m benchmarks.report" + "".join(
        f" {shlex.quote(a)}" for a in (sys.argv[1:] if argv is None else argv)
    )
    started = datetime.now(UTC)
    t0 = time.perf_counter()
    meta: dict[str, Any] = {
        "command": command,
        "started": started.isoformat(timespec="seconds"),
        "quick": bool(args.quick),
        "machine": _machine(),
        "loadavg_before": [round(x, 2) for x in os.getloadavg()],
    }
    runs: dict[str, dict[str, Any]] = {}
    prefix = "report"
    with tempfile.TemporaryDirectory(prefix="embeddix-report-") as tmp:
        for set_name in args.set_list:
            runs[set_name] = run_set(set_name, args, Path(tmp))
            runs[set_name]["meta"] = meta
            engines.dump_json(results / f"{prefix}_{set_name}.json", runs[set_name])
    meta["loadavg_after"] = [round(x, 2) for x in os.getloadavg()]
    meta["seconds"] = time.perf_counter() - t0
    for set_name, run in runs.items():
        run["meta"] = meta
        engines.dump_json(results / f"{prefix}_{set_name}.json", run)
    figures = plots.draw(runs, results, prefix)
    report_path.parent.mkdir(parents=True, exist_ok=True)
    report_path.write_text(markdown.render(runs, meta, figures, report_path.parent), encoding="utf-8")
    _log(f"wrote {report_path} and {len(figures)} plots in {meta['seconds']:.0f} s")
    ok = any(r.get("status") in ("ok", "partial") for run in runs.values() for r in run["engines"].values())
    return 0 if ok else 1
