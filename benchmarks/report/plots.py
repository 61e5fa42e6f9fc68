"""The report's PNG plots (matplotlib, Agg backend), one set of five per data set.

* ``recall_qps``: recall@10 against queries per second on one thread, one curve per engine over its knob
  (as ann-benchmarks draws them: up and to the right is better); engines without a knob are one point.
* ``latency``: p50 / p95 / p99 per engine, one panel per workload.
* ``bytes``: RSS and disk bytes per vector.
* ``agents``: the multi-agent scaling curve (recall p95 and operations per second against N).
* ``stress``: p95 against concurrent searching threads, with the 100 ms line.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["draw"]

OK = ("ok", "partial")


def _ok(run: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {k: v for k, v in run["engines"].items() if v.get("status") in OK}


def _colors(names: list[str]) -> dict[str, Any]:
    import matplotlib.pyplot as plt

    # tab10 first (ten clearly different colours), then the darker half of tab20b
    palette = [plt.get_cmap("tab10")(i) for i in range(10)] + [
        plt.get_cmap("tab20b")(i) for i in range(0, 20, 4)
    ]
    return {name: palette[i % len(palette)] for i, name in enumerate(names)}


def _workloads(row: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The latency figures of each workload of one engine's row (missing ones left out)."""
    out: dict[str, dict[str, Any]] = {}
    if "single_agent" in row:
        out["1 agent, search"] = row["single_agent"]
    for name, f in (row.get("filtered") or {}).items():
        if "p50_ms" in f:
            out[f"filter {name}"] = f
    mixed = row.get("mixed") or {}
    if "p50_ms" in mixed.get("read", {}):
        out["mixed: search"] = mixed["read"]
    if "p50_ms" in mixed.get("write", {}):
        out["mixed: insert"] = mixed["write"]
    if "p50_ms" in (row.get("single_insert") or {}):
        out["single insert"] = row["single_insert"]
    agents = row.get("multi_agent") or {}
    if "16" in agents and "p50_ms" in agents["16"].get("recall", {}):
        out["16 agents: recall"] = agents["16"]["recall"]
    if "16" in agents and "p50_ms" in agents["16"].get("remember", {}):
        out["16 agents: remember"] = agents["16"]["remember"]
    return out


def draw(runs: dict[str, dict[str, Any]], results: Path, prefix: str = "report") -> dict[str, Path]:
    """Draw every plot of every data set into ``results``.

    Args:
        runs: The report's results, by data set.
        results: The output directory.
        prefix: File name prefix.

    Returns:
        ``"<set>/<plot>"`` -> the PNG written.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out: dict[str, Path] = {}
    for set_name, run in runs.items():
        rows = _ok(run)
        if not rows:
            continue
        colors = _colors(list(run["engines"]))
        title = f"{run['dataset']}: {run['n']:,} x {run['dim']}"

        def save(fig: Any, key: str, set_name: str = set_name) -> None:
            path = results / f"{prefix}_{set_name}_{key}.png"
            fig.savefig(path, dpi=110, bbox_inches="tight")
            plt.close(fig)
            out[f"{set_name}/{key}"] = path

        # recall vs QPS
        fig, ax = plt.subplots(figsize=(8, 5.5))
        for name, row in rows.items():
            pts = [p for p in row.get("sweep", []) if p.get("mean_ms")]
            if not pts:
                continue
            xs = [p["recall_at_10"] for p in pts]
            ys = [1e3 / p["mean_ms"] for p in pts]
            ax.plot(xs, ys, marker="o", ms=4, color=colors[name], label=row["label"])
            sa = row.get("single_agent", {})
            if sa.get("mean_ms"):
                ax.plot([sa["recall_at_10"]], [1e3 / sa["mean_ms"]], marker="*", ms=13, color=colors[name])
        ax.set_yscale("log")
        ax.set_xlabel("recall@10")
        ax.set_ylabel("queries per second, 1 thread (1 / mean latency)")
        ax.set_title(f"Recall vs QPS ({title}); star: the row's operating point")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7, loc="lower left")
        save(fig, "recall_qps")

        # latency percentiles per workload
        per = {name: _workloads(row) for name, row in rows.items()}
        loads = [w for w in dict.fromkeys(w for ws in per.values() for w in ws)]
        cols = 3
        nrows = (len(loads) + cols - 1) // cols
        fig, axes = plt.subplots(nrows, cols, figsize=(16, 3.6 * nrows), squeeze=False)
        names = list(rows)
        for ax, load in zip(axes.flat, loads, strict=False):
            for j, pct in enumerate(("p50_ms", "p95_ms", "p99_ms")):
                vals = [per[n].get(load, {}).get(pct, 0.0) for n in names]
                ax.bar(
                    [i + (j - 1) * 0.27 for i in range(len(names))],
                    vals,
                    width=0.27,
                    color=[colors[n] for n in names],
                    alpha=(1.0, 0.7, 0.4)[j],
                    label=pct[:3],
                )
            ax.set_yscale("log")
            ax.set_title(load, fontsize=9)
            ax.set_xticks(range(len(names)))
            ax.set_xticklabels(names, rotation=45, ha="right", fontsize=7)
            ax.set_ylabel("ms (p50 / p95 / p99)", fontsize=7)
            ax.grid(True, axis="y", which="both", alpha=0.3)
        for ax in list(axes.flat)[len(loads) :]:
            ax.axis("off")
        fig.suptitle(f"Latency percentiles per workload ({title}); bars: p50, p95, p99 (lighter)")
        fig.tight_layout()
        save(fig, "latency")

        # bytes per vector
        fig, ax = plt.subplots(figsize=(10, 4.8))
        keys = (
            ("RSS after ingest", lambda r: (r.get("ingest") or {}).get("rss_bytes_per_vector")),
            ("peak RSS during ingest", lambda r: (r.get("ingest") or {}).get("peak_rss_bytes_per_vector")),
            ("disk", lambda r: (r.get("storage") or {}).get("disk_bytes_per_vector")),
        )
        for j, (label, get) in enumerate(keys):
            vals = [get(rows[n]) or 0 for n in names]
            ax.bar([i + (j - 1) * 0.27 for i in range(len(names))], vals, width=0.27, label=label)
        ax.set_xticks(range(len(names)))
        ax.set_xticklabels(names, rotation=30, ha="right", fontsize=8)
        ax.set_ylabel("bytes per vector")
        ax.set_title(f"Memory and disk per vector ({title}); float32 alone: {4 * run['dim']:,} B")
        ax.axhline(4 * run["dim"], color="grey", lw=0.8, ls="--")
        ax.legend(fontsize=8)
        ax.grid(True, axis="y", alpha=0.3)
        save(fig, "bytes")

        # multi-agent scaling
        fig, (a1, a2) = plt.subplots(1, 2, figsize=(13, 4.8))
        for name, row in rows.items():
            agents = row.get("multi_agent") or {}
            levels = sorted(int(k) for k in agents if k.isdigit())
            if not levels:
                continue
            p95 = [agents[str(n)]["recall"].get("p95_ms") for n in levels]
            ops = [agents[str(n)]["ops_per_s"] for n in levels]
            a1.plot(levels, p95, marker="o", color=colors[name], label=row["label"])
            a2.plot(levels, ops, marker="o", color=colors[name], label=row["label"])
        a1.set_yscale("log")
        a1.set_xlabel("agents in parallel (one namespace each)")
        a1.set_ylabel("recall (search) p95, ms")
        a2.set_xlabel("agents in parallel")
        a2.set_ylabel("operations per second, all agents")
        a2.set_yscale("log")
        for ax in (a1, a2):
            ax.grid(True, which="both", alpha=0.3)
        a2.legend(fontsize=7)
        fig.suptitle(f"Multi-agent scaling ({title})")
        save(fig, "agents")

        # stress ramp
        fig, ax = plt.subplots(figsize=(8, 5))
        for name, row in rows.items():
            ramp: list[dict[str, Any]] = (row.get("stress") or {}).get("levels") or []
            if ramp:
                ax.plot(
                    [lv["threads"] for lv in ramp],
                    [lv.get("p95_ms", 0) for lv in ramp],
                    marker="o",
                    color=colors[name],
                    label=row["label"],
                )
        ax.axhline(100, color="red", lw=1, ls="--")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("threads searching back to back")
        ax.set_ylabel("search p95, ms")
        ax.set_title(f"Stress ramp until p95 > 100 ms ({title})")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
        save(fig, "stress")
    return out
