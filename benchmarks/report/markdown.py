"""REPORT.md: the machine and the command at the top, then per data set the headline table, a plain list of
where Embeddix is behind a peer (with the figures), one table per workload, the engines that did not run
and why, and the plots. Every number comes from the run's results (nothing is typed in by hand)."""

from __future__ import annotations

import os
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

__all__ = ["render"]

OK = ("ok", "partial")
EMBEDDIX = ("embeddix", "embeddix-tuned")
RECALL_SLACK = 0.005  # "equal recall" for the latency comparisons: within half a point
MARGIN = 1.05  # a peer is "ahead" when it is better by more than 5% (less is within this machine's noise)


def _f(x: Any, digits: int = 3) -> str:
    """A number for a table: 3 significant digits for small ones, thousands separators for large ones."""
    if x is None:
        return "-"
    x = float(x)
    if x != x:
        return "-"
    if abs(x) >= 1000:
        return f"{x:,.0f}"
    if abs(x) >= 100:
        return f"{x:.0f}"
    return f"{x:.{digits}g}"


def _get(row: dict[str, Any], *path: str) -> Any:
    cur: Any = row
    for p in path:
        if not isinstance(cur, dict) or p not in cur:
            return None
        cur = cur[p]
    return cur


def _path(path: tuple[str, ...], row: dict[str, Any]) -> Any:
    return _get(row, *path)


def _machine(meta: dict[str, Any]) -> list[str]:
    m = meta["machine"]
    dirty = m.get("git_dirty_files") or []
    mem = m.get("mem_total_bytes", 0) / 2**30
    lines = [
        f"- **Command:** `{meta['command']}`",
        f"- **Date:** {meta['started']} (UTC), {meta.get('seconds', 0) / 60:.1f} minutes for the whole run",
        f"- **Machine:** {m.get('cpu', '?')}, {m.get('nproc')} cores ({m.get('affinity')} usable), "
        f"{mem:.0f} GiB RAM, Python {m.get('python')}, numpy {m.get('numpy')}",
        f"- **Load average** (1, 5, 15 min) before: {meta.get('loadavg_before')}, after: {meta.get('loadavg_after')} "
        "(the machine is shared; figures move with its load)",
        f"- **Code:** git `{(m.get('git_rev') or '?')[:12]}`"
        + (f" with {len(dirty)} uncommitted file(s)" if dirty else " (clean)"),
    ]
    if m.get("embeddix_env"):
        lines.append(f"- **EMBEDDIX_ variables set:** {m['embeddix_env']}")
    return lines


def _versions(runs: dict[str, dict[str, Any]]) -> list[str]:
    seen: dict[str, dict[str, Any]] = {}
    for run in runs.values():
        for name, row in run["engines"].items():
            if row.get("versions"):
                seen.setdefault(name, row)
    if not seen:
        return []
    lines = ["| engine | library versions | interpreter |", "|---|---|---|"]
    for row in seen.values():
        vers = ", ".join(f"{k} {v}" for k, v in row["versions"].items() if v)
        lines.append(f"| {row['label']} | {vers} | `{row.get('python', '')}` |")
    return lines


def _headline(run: dict[str, Any]) -> list[str]:
    lines = [
        "| engine | recall@10 | p50 ms | p95 ms | p99 ms | QPS 1 thread | QPS 2 threads | inserts/s single | "
        "inserts/s batch | RSS B/vector | disk B/vector | build s | open s | runs at |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in run["engines"].values():
        if row.get("status") not in OK:
            lines.append(f"| {row['label']} | {row.get('status')}: see below | | | | | | | | | | | | |")
            continue
        sa = row.get("single_agent") or {}
        knob = row.get("knob")
        at = f"{knob}={row.get('operating_knob')}" if knob else "defaults"
        lines.append(
            "| "
            + " | ".join(
                [
                    row["label"],
                    _f(sa.get("recall_at_10"), 4),
                    _f(sa.get("p50_ms")),
                    _f(sa.get("p95_ms")),
                    _f(sa.get("p99_ms")),
                    _f(_get(row, "qps", "1", "qps")),
                    _f(_get(row, "qps", "2", "qps")),
                    _f(_get(row, "single_insert", "per_s")),
                    _f(_get(row, "ingest", "per_s")),
                    _f(_get(row, "ingest", "rss_bytes_per_vector")),
                    _f(_get(row, "storage", "disk_bytes_per_vector")),
                    _f(_get(row, "ingest", "seconds")),
                    _f(_get(row, "storage", "open_s")),
                    at,
                ]
            )
            + " |"
        )
    return lines


def _behind(run: dict[str, Any]) -> list[str]:
    """Plain sentences: every figure where a peer beats Embeddix (as a user gets it, and tuned)."""
    rows = {k: v for k, v in run["engines"].items() if v.get("status") in OK}
    peers = {k: v for k, v in rows.items() if k not in EMBEDDIX}
    out: list[str] = []
    for me_name in EMBEDDIX:
        me = rows.get(me_name)
        if me is None:
            continue
        my_recall = _get(me, "single_agent", "recall_at_10") or 0.0
        items: list[str] = []

        def cmp(
            title: str,
            get: Callable[[dict[str, Any]], Any],
            unit: str,
            *,
            lower_is_better: bool,
            recall_of: Callable[[dict[str, Any]], Any] | None = None,
            is_recall: bool = False,
            me: dict[str, Any] = me,
            items: list[str] = items,
        ) -> None:
            mine = get(me)
            if mine is None:
                return
            ahead = []
            for peer in peers.values():
                theirs = get(peer)
                if theirs is None:
                    continue
                if recall_of is not None:
                    r_me, r_peer = recall_of(me), recall_of(peer)
                    if r_me is None or r_peer is None or r_peer < r_me - RECALL_SLACK:
                        continue
                if is_recall:  # recall: ahead by more than half a point
                    better = theirs > mine + RECALL_SLACK
                else:
                    better = theirs * MARGIN < mine if lower_is_better else theirs > mine * MARGIN
                if not better:
                    continue
                if is_recall:
                    ahead.append((theirs - mine, f"{peer['label']} {theirs:.3f}"))
                    continue
                ratio = (
                    (mine / theirs)
                    if lower_is_better and theirs
                    else (theirs / mine if mine else float("inf"))
                )
                extra = f", recall@10 {recall_of(peer):.3f}" if recall_of is not None else ""
                ahead.append((ratio, f"{peer['label']} {_f(theirs)} {unit} ({ratio:.1f}x{extra})"))
            if ahead:
                ahead.sort(reverse=True)
                if is_recall:
                    mine_txt = f"{mine:.3f}"
                else:
                    mine_txt = f"{_f(mine)} {unit}" + (
                        f" at recall@10 {recall_of(me):.3f}" if recall_of is not None else ""
                    )
                items.append(
                    f"- **{title}**: Embeddix {mine_txt}; ahead: " + "; ".join(t for _, t in ahead) + "."
                )

        def at_my_recall(
            title: str,
            key: str,
            unit: str,
            lower_is_better: bool,
            me: dict[str, Any] = me,
            items: list[str] = items,
        ) -> None:
            """Peers at Embeddix's recall: their operating point if it reaches it, else the first point of
            their knob sweep that does (a raw index tuned to the same recall)."""
            sa = me.get("single_agent") or {}
            mine = sa.get(key) if key != "qps" else _get(me, "qps", "1", "qps")
            target = sa.get("recall_at_10")
            if mine is None or target is None:
                return
            ahead = []
            for peer in peers.values():
                psa = peer.get("single_agent") or {}
                point = None
                if (psa.get("recall_at_10") or 0) >= target - RECALL_SLACK:
                    value = psa.get(key) if key != "qps" else _get(peer, "qps", "1", "qps")
                    point = (value, psa["recall_at_10"], "")
                else:
                    for sp in peer.get("sweep") or []:
                        if sp.get("knob") is not None and sp["recall_at_10"] >= target - RECALL_SLACK:
                            point = (
                                sp.get(key),
                                sp["recall_at_10"],
                                f" at {peer.get('knob')}={sp['knob']} of its sweep",
                            )
                            break
                if point is None or point[0] is None:
                    continue
                theirs, rec, where = point
                assert theirs is not None
                if not (theirs * MARGIN < mine if lower_is_better else theirs > mine * MARGIN):
                    continue
                ratio = mine / theirs if lower_is_better else theirs / mine
                ahead.append(
                    (ratio, f"{peer['label']} {_f(theirs)} {unit}{where} ({ratio:.1f}x, recall@10 {rec:.3f})")
                )
            if ahead:
                ahead.sort(reverse=True)
                items.append(
                    f"- **{title}**: Embeddix {_f(mine)} {unit} at recall@10 {target:.3f}; ahead: "
                    + "; ".join(t for _, t in ahead)
                    + "."
                )

        def sa_recall(r: dict[str, Any]) -> Any:
            return _get(r, "single_agent", "recall_at_10")

        cmp("recall@10, one agent", sa_recall, "", lower_is_better=False, is_recall=True)
        at_my_recall("search p50, one agent, at Embeddix's recall", "p50_ms", "ms", True)
        at_my_recall("search p95, one agent, at Embeddix's recall", "p95_ms", "ms", True)
        at_my_recall("QPS on 1 thread, at Embeddix's recall", "qps", "QPS", False)
        cmp(
            "search p99, one agent (equal or higher recall)",
            lambda r: _get(r, "single_agent", "p99_ms"),
            "ms",
            lower_is_better=True,
            recall_of=sa_recall,
        )
        cmp(
            "QPS on 2 threads (equal or higher recall)",
            lambda r: _get(r, "qps", "2", "qps"),
            "QPS",
            lower_is_better=False,
            recall_of=sa_recall,
        )
        for f in ("1%", "10%", "50%"):

            def f_recall(r: dict[str, Any], f: str = f) -> Any:
                return _get(r, "filtered", f, "recall_at_10")

            cmp(
                f"filtered search {f}, p50 (equal or higher recall)",
                partial(_path, ("filtered", f, "p50_ms")),
                "ms",
                lower_is_better=True,
                recall_of=f_recall,
            )
            cmp(f"filtered search {f}, recall@10", f_recall, "", lower_is_better=False, is_recall=True)
        cmp(
            "batch insert rate (ingest)",
            lambda r: _get(r, "ingest", "per_s"),
            "records/s",
            lower_is_better=False,
        )
        cmp(
            "single insert rate",
            lambda r: _get(r, "single_insert", "per_s"),
            "records/s",
            lower_is_better=False,
        )
        cmp(
            "RSS per vector after ingest",
            lambda r: _get(r, "ingest", "rss_bytes_per_vector"),
            "B",
            lower_is_better=True,
        )
        cmp(
            "peak RSS per vector during ingest",
            lambda r: _get(r, "ingest", "peak_rss_bytes_per_vector"),
            "B",
            lower_is_better=True,
        )
        cmp(
            "disk per vector",
            lambda r: _get(r, "storage", "disk_bytes_per_vector"),
            "B",
            lower_is_better=True,
        )
        cmp("open time", lambda r: _get(r, "storage", "open_s"), "s", lower_is_better=True)

        def m_recall(r: dict[str, Any]) -> Any:
            return _get(r, "mixed", "read", "recall_at_10")

        cmp(
            "mixed workload, search p50 (equal or higher recall)",
            lambda r: _get(r, "mixed", "read", "p50_ms"),
            "ms",
            lower_is_better=True,
            recall_of=m_recall,
        )
        cmp(
            "mixed workload, insert p50",
            lambda r: _get(r, "mixed", "write", "p50_ms"),
            "ms",
            lower_is_better=True,
        )
        for n in ("1", "25"):
            cmp(
                f"{n} agent(s) in parallel, recall p95",
                partial(_path, ("multi_agent", n, "recall", "p95_ms")),
                "ms",
                lower_is_better=True,
            )
            cmp(
                f"{n} agent(s) in parallel, remember p95",
                partial(_path, ("multi_agent", n, "remember", "p95_ms")),
                "ms",
                lower_is_better=True,
            )
        cmp(
            "stress ramp, peak QPS",
            lambda r: max((lv["qps"] for lv in _get(r, "stress", "levels") or []), default=None),
            "QPS",
            lower_is_better=False,
        )
        if items:
            out.append(f"**{me['label']}** (recall@10 {my_recall:.3f}) is behind on:")
            out.append("")
            out.extend(items)
            out.append("")
        else:
            out.append(f"**{me['label']}**: no peer is ahead on any figure of this run.")
            out.append("")
    return out


def _agents(run: dict[str, Any]) -> list[str]:
    rows = {k: v for k, v in run["engines"].items() if v.get("status") in OK and v.get("multi_agent")}
    if not rows:
        return ["No engine finished this workload."]
    levels = sorted({int(k) for r in rows.values() for k in r["multi_agent"] if k.isdigit()})
    head = "| engine | " + " | ".join(f"N={n}: recall p50 / p95 / p99 ms" for n in levels) + " | "
    head += (
        " | ".join(f"N={n}: remember p95 ms" for n in levels)
        + " | "
        + " | ".join(f"N={n} ops/s" for n in levels)
        + " | errors |"
    )
    lines = [head, "|---" * (1 + 3 * len(levels) + 1) + "|"]
    for row in rows.values():
        ma = row["multi_agent"]
        cells = [row["label"]]
        for n in levels:
            r = _get(ma, str(n), "recall") or {}
            cells.append(f"{_f(r.get('p50_ms'))} / {_f(r.get('p95_ms'))} / {_f(r.get('p99_ms'))}")
        for n in levels:
            cells.append(_f(_get(ma, str(n), "remember", "p95_ms")))
        for n in levels:
            cells.append(_f(_get(ma, str(n), "ops_per_s")))
        errs = sum((_get(ma, str(n), "errors") or 0) for n in levels)
        samples = [s for n in levels for s in (_get(ma, str(n), "error_samples") or [])]
        short = [(_get(ma, str(n), "ops") or 0) < (_get(ma, str(n), "ops_planned") or 0) for n in levels]
        note = f"{errs}" + (f" ({samples[0][:120]})" if samples else "")
        if any(short):
            note += "; stopped by the time budget at N=" + ",".join(
                str(n) for n, s in zip(levels, short, strict=True) if s
            )
        cells.append(note)
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _ingest(run: dict[str, Any]) -> list[str]:
    lines = [
        "| engine | batch of 1,000: records/s | build s | single insert: records/s | single p50 / p99 ms | "
        "peak RSS B/vector | close s | open s | first search after open ms | how it keeps data |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in run["engines"].values():
        if row.get("status") not in OK:
            continue
        si = row.get("single_insert") or {}
        st = row.get("storage") or {}
        lines.append(
            f"| {row['label']} | {_f(_get(row, 'ingest', 'per_s'))} | {_f(_get(row, 'ingest', 'seconds'))} | "
            f"{_f(si.get('per_s'))} | {_f(si.get('p50_ms'))} / {_f(si.get('p99_ms'))} | "
            f"{_f(_get(row, 'ingest', 'peak_rss_bytes_per_vector'))} | {_f(st.get('close_s'))} | {_f(st.get('open_s'))} | "
            f"{_f(st.get('first_search_after_open_ms'))} | {row.get('persistence', '')} |"
        )
    return lines


def _mixed(run: dict[str, Any]) -> list[str]:
    lines = [
        "| engine | search recall@10 | search p50 / p95 / p99 ms | insert p50 / p95 / p99 ms |",
        "|---|---|---|---|",
    ]
    for row in run["engines"].values():
        mx = row.get("mixed") if row.get("status") in OK else None
        if not mx:
            continue
        rd, wr = mx.get("read", {}), mx.get("write", {})
        lines.append(
            f"| {row['label']} | {_f(rd.get('recall_at_10'), 4)} | {_f(rd.get('p50_ms'))} / {_f(rd.get('p95_ms'))} / "
            f"{_f(rd.get('p99_ms'))} | {_f(wr.get('p50_ms'))} / {_f(wr.get('p95_ms'))} / {_f(wr.get('p99_ms'))} |"
        )
    return lines


def _stress(run: dict[str, Any]) -> list[str]:
    lines = [
        "| engine | p95 > 100 ms at | p95 ms by threads | peak QPS | why |",
        "|---|---|---|---|---|",
    ]
    for row in run["engines"].values():
        st = row.get("stress") if row.get("status") in OK else None
        if not st:
            continue
        levels = st.get("levels") or []
        ramp = ", ".join(f"{lv['threads']}: {_f(lv.get('p95_ms'))}" for lv in levels)
        peak = max((lv["qps"] for lv in levels), default=None)
        at = f"{st['crossed_at_threads']} threads" if st.get("crossed_at_threads") else "not reached"
        lines.append(f"| {row['label']} | {at} | {ramp} | {_f(peak)} | {st.get('why', '')} |")
    return lines


def _filtered(run: dict[str, Any]) -> list[str]:
    names = [f["name"] for f in run.get("filters", [])]
    lines = [
        "| engine | " + " | ".join(f"{n}: recall@10, p50 / p95 ms" for n in names) + " |",
        "|---" * (1 + len(names)) + "|",
    ]
    for row in run["engines"].values():
        fl = row.get("filtered") if row.get("status") in OK else None
        if not fl:
            continue
        cells = [row["label"]]
        for n in names:
            f = fl.get(n) or {}
            if "error" in f:
                cells.append(f"error: {f['error'][:100]}")
                continue
            short = f" ({f['short_answers']} short)" if f.get("short_answers") else ""
            cells.append(
                f"{_f(f.get('recall_at_10'), 4)}, {_f(f.get('p50_ms'))} / {_f(f.get('p95_ms'))}{short}"
            )
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _problems(run: dict[str, Any]) -> list[str]:
    lines = []
    for row in run["engines"].values():
        status = row.get("status")
        if status not in OK:
            lines.append(f"- **{row['label']}** ({status}): {row.get('reason', '')}")
            continue
        for phase, err in (row.get("errors") or {}).items():
            lines.append(f"- **{row['label']}**, {phase}: failed: {err}")
        for phase, stop in (row.get("budget_stops") or {}).items():
            lines.append(f"- **{row['label']}**, {phase}: stopped by the time budget after {stop}")
        for note in row.get("notes") or []:
            lines.append(f"- **{row['label']}**: {note}")
    return lines


PROTOCOL = """\
Every engine runs in a process of its own, one after another, on the same rows, queries and ground truth
(`benchmarks/report/child.py` has the full protocol). Vectors are unit length; every engine ranks by
cosine (or by L2 / inner product, the same order on unit vectors). Ground truth: exact top 10 by brute
force in float64 (`embeddix_core.eval.exact_knn`). Records carry their document text (real-text set) and
`metadata_for(row)` metadata; the embeddings are the data set's (computed once, offline, with MiniLM), so
ingestion measures the stores, not the model.

- **Embeddix (as a user gets it)**: `Embeddix.open(path)` with default settings, `create_collection(name,
  dim=..., metric="cosine")`, `col.add` in batches of 1,000, `col.search(q, k=10)`: result caches and
  background calibration on, searched right after the ingest; each query is sent once, so no cache
  answers it. **Embeddix tuned**: the same store, `col.search(q, k=10, recall=0.95)`; its recall-vs-QPS
  sweep passes `cache=False` because the sweep repeats its queries.
- **Knobs**: engines with a search-time knob (hnswlib `ef`, FAISS `efSearch` / `nprobe`, Embeddix tuned
  `recall=`) are swept on separate queries for the curve, and every other workload runs at the smallest
  value reaching recall@10 >= 0.95 on those queries ("runs at"). HNSW engines we configure use M 16 and
  ef_construction 200 (Embeddix's defaults); Chroma, LanceDB, Qdrant, LangChain and LlamaIndex run with
  their defaults.
- **Latency** is one query per call on one thread, each timed once after evicting the L2 cache;
  **QPS** runs other fresh queries back to back on 1 and on 2 threads. **Memory** is RSS over a baseline
  taken after a warm-up store was built and dropped in the same process (libraries loaded), per vector;
  **peak** is VmHWM. **Disk** is after `close()` (engines that live in memory save with their own
  `save_index` / `write_index` / `dump` / `persist`). **Open** is the time to open that again.
- **Workloads**: (1) one agent, recall-heavy, held-out queries; (2) N = 1, 4, 16, 25 agents on as many
  threads, each in its own namespace (a collection / index / table of its own) holding the same number of
  records, 4 recalls to 1 remember; (3) ingestion in batches of 1,000 and single inserts; (4) mixed:
  4 searches : 1 insert, each search's recall against everything inserted before it; (5) stress: 1, 2, 4,
  ... threads searching back to back until p95 > 100 ms; (6) filtered search at 1% (`group == 7`), 10%
  (`tag == 3`) and 50% (`tag < 5`) of the records.
- Every phase has a time budget; an engine too slow for it stops early and this report says where."""


def render(
    runs: dict[str, dict[str, Any]], meta: dict[str, Any], figures: dict[str, Path], where: Path
) -> str:
    """The markdown of REPORT.md.

    Args:
        runs: The results by data set.
        meta: The run's command, date, machine and load.
        figures: ``"<set>/<plot>"`` -> PNG path.
        where: The directory REPORT.md is written to (plot links are relative to it).

    Returns:
        The document.
    """
    lines = ["# Embeddix next to its peers", ""]
    lines += _machine(meta)
    lines += [
        "",
        "Regenerate: `python -m benchmarks.report` (all sets, all engines; `--quick` for a 5-minute run).",
        "",
    ]
    vers = _versions(runs)
    if vers:
        lines += ["## Versions", "", *vers, ""]
    lines += ["## How it was measured", "", PROTOCOL, ""]
    for set_name, run in runs.items():
        lines += [f"## {run['dataset']}: {run['n']:,} records x {run['dim']} dimensions (`{set_name}`)", ""]
        lines += ["### Headline (workload 1: one agent, held-out queries)", "", *_headline(run), ""]
        lines += ["### Where Embeddix is behind", "", *_behind(run)]
        lines += ["### Workload 2: N agents in parallel, one namespace each", "", *_agents(run), ""]
        lines += ["### Workload 3: ingestion, single inserts, disk and open", "", *_ingest(run), ""]
        lines += ["### Workload 4: mixed reads and writes", "", *_mixed(run), ""]
        lines += ["### Workload 5: stress ramp", "", *_stress(run), ""]
        lines += ["### Workload 6: filtered search", "", *_filtered(run), ""]
        problems = _problems(run)
        if problems:
            lines += ["### Engines that did not run, failed phases, early stops", "", *problems, ""]
        pics = [(k.split("/", 1)[1], p) for k, p in figures.items() if k.startswith(f"{set_name}/")]
        if pics:
            lines += ["### Plots", ""]
            for key, path in pics:
                rel = os.path.relpath(path, where)
                lines += [f"![{key}]({rel})", ""]
    return "\n".join(lines).rstrip() + "\n"
