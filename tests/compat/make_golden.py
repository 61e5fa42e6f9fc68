"""Write one golden data directory with the Embeddix on ``PYTHONPATH``, and its recorded answers.

Usage (from the repository root)::

    PYTHONPATH=<checkout of the version to record> .venv/bin/python tests/compat/make_golden.py \\
        tests/compat/data/<name>

writes ``tests/compat/data/<name>/`` (a closed data directory: ``embeddix.sqlite3`` and ``indexes/``) and
``tests/compat/data/<name>.json`` (the answers). The answers are computed here, with numpy and plain
Python, from the records this script wrote - never from what Embeddix returned - so a golden directory
records what a correct engine must answer, not what the engine of the day happened to answer.

Only public API that every shipped version has is used (``Embeddix.open``, ``create_collection``,
``add``/``upsert``/``update``/``delete``, ``checkpoint``, ``calibrate``, ``close``). Everything is seeded;
only the HNSW graph itself (built on several threads) differs between runs, and the tests measure it by
recall, never by its exact answers.

The directory holds, on purpose:

* ``mem`` (cosine, HNSW: 613 live records over index_threshold=200, in segments of 256): adds, upserts
  of existing and new ids, a metadata update, deletes by id and by filter, then a ``checkpoint`` (an
  index snapshot) and a ``calibrate`` (``calibration.json``), then more writes and deletes that only the
  store has: opening must load (or rebuild) the snapshot *and* replay the store past it.
* ``notes`` (l2, exact: 49 live records): the same kinds of writes, no snapshot.

Close does not snapshot again (``snapshot_min_changes`` is huge), so the writes after the checkpoint stay
for the replay. The store is closed cleanly: no ``-wal`` / ``-shm`` files are left (checked here).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

DIM = 16
SEED = 20_240_613
K = 10
N_QUERIES = 20
COLORS = ("red", "green", "blue")
WORDS = (
    "memory",
    "vector",
    "search",
    "index",
    "store",
    "record",
    "agent",
    "note",
    "plan",
    "task",
    "result",
    "query",
    "answer",
    "fact",
    "event",
    "user",
    "tool",
    "context",
    "summary",
    "topic",
)
# Rare words: each is put into a few documents only, so a text search for one has a small, known
# answer (every document holding it) whatever the BM25 weights are.
RARE = ("zephyr", "quokka", "nebula", "saffron", "obsidian")

# Filters used by the recorded searches, each with the same meaning in plain Python (the model).
Meta = dict[str, Any]
FILTERS: list[tuple[dict[str, Any], Callable[[Meta], bool]]] = [
    ({"color": "red"}, lambda m: m.get("color") == "red"),
    ({"group": {"$in": [1, 3]}}, lambda m: m.get("group") in (1, 3)),
    (
        {"$and": [{"score": {"$gte": 0.25}}, {"color": {"$ne": "blue"}}]},
        lambda m: m.get("score", -1.0) >= 0.25 and m.get("color") != "blue",
    ),
    ({"tags": {"$contains": "t2"}}, lambda m: "t2" in m.get("tags", [])),
    ({"edited": True}, lambda m: m.get("edited") is True),
]


# The filter of the recorded text searches with a filter (tag t0: records with an odd number)
TEXT_FILTER = {"tags": {"$contains": "t0"}}


def _vectors(rng: np.random.Generator, n: int) -> np.ndarray:
    return rng.standard_normal((n, DIM)).astype(np.float32)


def _meta(rng: np.random.Generator, i: int) -> Meta:
    return {
        "group": i % 5,
        "color": COLORS[i % 3],
        "score": round(float(rng.random()), 4),
        "tags": [f"t{j}" for j in range(4) if (i >> j) & 1],
    }


def _doc(rng: np.random.Generator, i: int, every: int) -> str:
    words = [str(w) for w in rng.choice(WORDS, size=6)]
    if i % every == 0:
        words.insert(2, RARE[(i // every) % len(RARE)])
    return f"record {i}: " + " ".join(words)


class Model:
    """The records a collection must hold, kept in plain Python next to every write."""

    def __init__(self) -> None:
        self.rows: dict[str, tuple[np.ndarray, str | None, Meta]] = {}
        self.deleted: set[str] = set()  # ids deleted and not written again

    def put(self, ids: list[str], vecs: np.ndarray, docs: list[str], metas: list[Meta]) -> None:
        for rid, v, d, m in zip(ids, vecs, docs, metas, strict=True):
            self.rows[rid] = (v.copy(), d, dict(m))
            self.deleted.discard(rid)

    def delete(self, ids: list[str]) -> None:
        for rid in ids:
            if self.rows.pop(rid, None) is not None:
                self.deleted.add(rid)


def _write_collection(col: Any, model: Model, rng: np.random.Generator, n: int, prefix: str) -> None:
    """Adds, upserts (old and new ids), a metadata update and deletes, mirrored into ``model``."""
    every = max(3, n // 16)  # one document in ``every`` holds a rare word: about 3 per word

    def put(idx: list[int], *, upsert: bool) -> None:
        ids = [f"{prefix}{i:04d}" for i in idx]
        vecs = _vectors(rng, len(idx))
        docs = [_doc(rng, i, every) for i in idx]
        metas = [_meta(rng, i) for i in idx]
        (col.upsert if upsert else col.add)(ids, vecs, documents=docs, metadatas=metas)
        model.put(ids, vecs, docs, metas)

    for start in range(0, n, 250):
        put(list(range(start, min(n, start + 250))), upsert=False)
    put(list(range(0, n, 20)) + list(range(n, n + n // 15)), upsert=True)  # replace some, add some
    edited = [f"{prefix}{i:04d}" for i in range(3, n, 17)]
    metas = [{**model.rows[rid][2], "edited": True} for rid in edited]
    col.update(edited, metadatas=metas)
    for rid, m in zip(edited, metas, strict=True):
        model.rows[rid] = (model.rows[rid][0], model.rows[rid][1], m)
    gone = [f"{prefix}{i:04d}" for i in range(5, n, 23)]
    col.delete(gone)
    model.delete(gone)
    # delete by filter: group 4 with a high score
    doomed = [rid for rid, (_, _, m) in model.rows.items() if m.get("group") == 4 and m["score"] > 0.9]
    removed = col.delete(filter={"$and": [{"group": 4}, {"score": {"$gt": 0.9}}]})
    if removed != len(doomed):
        raise SystemExit(f"delete by filter removed {removed}, the model expected {len(doomed)}")
    model.delete(doomed)


def _write_after_snapshot(col: Any, model: Model, rng: np.random.Generator, n: int, prefix: str) -> None:
    """Writes that only the store has (the snapshot is older): a replay must bring them in."""
    ids = [f"{prefix}{i:04d}" for i in range(n + 100, n + 120)]
    vecs = _vectors(rng, len(ids))
    docs = [_doc(rng, i, max(3, n // 16)) for i in range(n + 100, n + 120)]
    metas = [_meta(rng, i) for i in range(n + 100, n + 120)]
    col.add(ids, vecs, documents=docs, metadatas=metas)
    model.put(ids, vecs, docs, metas)
    gone = [f"{prefix}{i:04d}" for i in range(2, n, 41)]  # records the snapshot holds
    gone = [rid for rid in gone if rid in model.rows]
    col.delete(gone)
    model.delete(gone)
    again = [f"{prefix}{i:04d}" for i in (1, 7, 11)]
    vecs = _vectors(rng, len(again))
    docs = [f"rewritten after the snapshot {RARE[0]}" for _ in again]
    metas = [{"group": 9, "color": "red", "score": 0.5, "tags": ["t2"]} for _ in again]
    col.upsert(again, vecs, documents=docs, metadatas=metas)
    model.put(again, vecs, docs, metas)


def _exact_topk(
    model: Model, q: np.ndarray, metric: str, keep: Callable[[Meta], bool] | None, *, ordered: bool
) -> list[str]:
    ids = sorted(rid for rid, (_, _, m) in model.rows.items() if keep is None or keep(m))
    if not ids:
        return []
    mat = np.stack([model.rows[rid][0] for rid in ids]).astype(np.float64)
    q64 = q.astype(np.float64)
    if metric == "cosine":
        dist = 1.0 - (mat / np.linalg.norm(mat, axis=1, keepdims=True)) @ (q64 / np.linalg.norm(q64))
    else:
        dist = ((mat - q64) ** 2).sum(axis=1)
    order = np.argsort(dist, kind="stable")
    top = order[:K]
    # An exact index is held to the recorded order, which must not hinge on float32 rounding:
    # consecutive answers (and the first one left out) must be clearly apart. The seeds are fixed, so
    # this either always holds or never does. (HNSW answers are compared by recall, as sets.)
    gaps = np.diff(dist[order[: K + 1]]) / max(1.0, float(dist[order[: K + 1]].max()))
    if ordered and gaps.size and gaps.min() < 1e-5:
        raise SystemExit(f"near tie in the exact answer ({gaps.min():.2e}); choose another seed")
    return [ids[i] for i in top]


def _answers(model: Model, metric: str, queries: np.ndarray, *, ordered: bool) -> dict[str, Any]:
    plain = [_exact_topk(model, q, metric, None, ordered=ordered) for q in queries]
    filtered = [
        {
            "filter": flt,
            "count": sum(keep(m) for _, _, m in model.rows.values()),
            "top": [_exact_topk(model, q, metric, keep, ordered=ordered) for q in queries[:5]],
        }
        for flt, keep in FILTERS
    ]
    text = []
    for word in RARE:
        holders = sorted(rid for rid, (_, d, _) in model.rows.items() if d and word in d.split())
        if not 1 <= len(holders) <= K:
            raise SystemExit(f"{word!r} is in {len(holders)} documents; the text answers need 1..{K}")
        odd = sorted(rid for rid in holders if "t0" in model.rows[rid][2].get("tags", []))
        text.append({"text": word, "ids": holders, "filter": TEXT_FILTER, "filtered_ids": odd})
    sample = sorted(model.rows)[:: max(1, len(model.rows) // 8)]
    records = {
        rid: {
            "vector": model.rows[rid][0].tolist(),
            "document": model.rows[rid][1],
            "metadata": model.rows[rid][2],
        }
        for rid in sample
    }
    return {
        "metric": metric,
        "count": len(model.rows),
        "plain_top": plain,
        "filtered": filtered,
        "text": text,
        "records": records,
        "deleted": sorted(model.deleted),
    }


def _git(package_dir: Path, *args: str) -> str:
    out = subprocess.run(["git", "-C", str(package_dir), *args], capture_output=True, text=True, check=False)
    return out.stdout.strip()


def _formats(data: Path) -> dict[str, Any]:
    """Format versions as written, read after close (the read leaves no -wal/-shm behind)."""
    conn = sqlite3.connect(data / "embeddix.sqlite3")
    try:
        meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
        cids = dict(conn.execute("SELECT name, cid FROM collections").fetchall())
        journal = conn.execute("PRAGMA journal_mode").fetchone()[0]
    finally:
        conn.close()
    snapshots = {}
    for name, cid in sorted(cids.items()):
        manifest = data / "indexes" / str(cid) / "manifest.json"
        if manifest.exists():
            snapshots[name] = json.loads(manifest.read_text())["format_version"]
    return {
        "store_format_version": int(meta["format_version"]),
        "snapshot_format_versions": snapshots,
        "store_has_store_id": "store_id" in meta,
        "journal_mode": journal,
        "collections": cids,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path, help="the golden data directory to write (must not exist)")
    args = parser.parse_args(argv)
    out: Path = args.out.resolve()
    if out.exists():
        parser.error(f"{out} exists; golden directories are never regenerated (see README.md)")

    import embeddix_core
    from embeddix_core import Embeddix, EmbeddixSettings

    package_dir = Path(embeddix_core.__file__).resolve().parent
    print(f"writing {out} with {package_dir}", file=sys.stderr)
    settings = EmbeddixSettings(
        auto_calibrate=False,  # calibrated once, explicitly, below
        snapshot_min_changes=10**9,  # close() leaves the post-checkpoint writes to the replay
        cache_persist=False,
    )
    rng = np.random.default_rng(SEED)
    queries = rng.standard_normal((N_QUERIES, DIM)).astype(np.float32)
    mem, notes = Model(), Model()
    db = Embeddix.open(out, settings=settings)
    try:
        col = db.create_collection(
            "mem", DIM, "cosine", index_threshold=200, segment_size=256, hnsw_m=16, ef_construction=100
        )
        _write_collection(col, mem, rng, 600, "m")
        if col.index_kind != "hnsw":
            raise SystemExit(f"'mem' should be HNSW by now, it is {col.index_kind}")
        if not col.checkpoint():
            raise SystemExit("checkpoint wrote no snapshot")
        if col.calibrate(sample=50) is None:
            raise SystemExit("calibrate() measured nothing")
        _write_after_snapshot(col, mem, rng, 600, "m")
        exact = db.create_collection("notes", DIM, "l2", index_threshold=200)
        _write_collection(exact, notes, rng, 50, "n")
        if exact.index_kind != "exact":
            raise SystemExit(f"'notes' should be exact, it is {exact.index_kind}")
        if len(col) != len(mem.rows) or len(exact) != len(notes.rows):
            raise SystemExit("the collections and the model disagree on counts")
    finally:
        db.close()

    leftovers = sorted(p.name for p in out.iterdir() if p.name.endswith(("-wal", "-shm", "-journal")))
    formats = _formats(out)
    leftovers += sorted(p.name for p in out.iterdir() if p.name.endswith(("-wal", "-shm", "-journal")))
    if leftovers:
        raise SystemExit(f"the store was not closed cleanly: {leftovers} left in {out}")
    for cache in out.glob("cache"):
        shutil.rmtree(cache)  # nothing of ours; cache_persist is off

    dirty = _git(package_dir, "status", "--porcelain", "--", ".")
    answers = {
        "written_by": {
            "commit": _git(package_dir, "rev-parse", "HEAD"),
            "subject": _git(package_dir, "log", "-1", "--format=%s"),
            "uncommitted_changes_in_embeddix_core": dirty.splitlines(),
            "embeddix_version": getattr(embeddix_core, "__version__", "?"),
            **formats,
        },
        "dim": DIM,
        "k": K,
        "queries": queries.tolist(),
        "collections": {
            "mem": {"index_kind": "hnsw", **_answers(mem, "cosine", queries, ordered=False)},
            "notes": {"index_kind": "exact", **_answers(notes, "l2", queries, ordered=True)},
        },
    }
    answers_path = out.with_suffix(".json")
    answers_path.write_text(json.dumps(answers, indent=1, sort_keys=True) + "\n")
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    print(f"wrote {out} ({size} bytes) and {answers_path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
