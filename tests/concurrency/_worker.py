"""A child process for the multi-process tests: one Embeddix handle on a shared data directory, driven by
JSON lines on stdin, answering one JSON line per command on stdout.

Run as ``python _worker.py`` with the repository root on ``PYTHONPATH`` (the parent test passes the root
it imported ``embeddix_core`` from, so parent and children run the same code). Every command answers
``{"ok": true, "result": ...}`` or ``{"ok": false, "error": <exception class>, "message": ...}``; an
exception never kills the worker, so the parent sees every error by name. Only a signal or ``exit`` ends it.

Commands (``op`` plus arguments):

* ``open`` path, name, dim, index_threshold: open the database and get or create the collection.
* ``reopen``: close the database (snapshots are saved) and open it again: "another process wrote and
  closed" is how stale indexes were found.
* ``handle`` name: get the collection again from the open database (after a drop and re-create).
* ``create`` / ``drop`` name: create (dim, index_threshold) or drop a collection.
* ``put`` mode ("add" / "upsert"), ids, vectors, documents, metadatas; ``update`` ids, documents,
  metadatas; ``delete`` ids; ``checkpoint``.
* ``observe``: what this handle sees (see :func:`observe`); ``fresh_observe``: the same through a second
  database opened (and closed) for the occasion, which loads the snapshot on disk.
* ``free_run``: write, checkpoint, search and reopen on its own for a while (see :func:`free_run`).
* ``exit`` code, close: end the process, with or without closing the database.
"""

from __future__ import annotations

import json
import os
import random
import sys
import time
import traceback
from typing import Any

import numpy as np

from embeddix_core import Embeddix, EmbeddixError
from embeddix_core.collection import Collection


def _hit(h: Any) -> list[Any]:
    return [h.id, float(h.distance), h.document, h.metadata]


def _call(fn: Any, *args: Any, **kwargs: Any) -> dict[str, Any]:
    """One read, its result or the name of what it raised (the parent judges either)."""
    try:
        return {"ok": True, "result": fn(*args, **kwargs)}
    except Exception as exc:
        return {"ok": False, "error": type(exc).__name__, "message": str(exc)[:300]}


def observe(
    col: Collection,
    ids: list[str],
    filters: list[dict[str, Any] | None],
    queries: list[list[float]],
    probes: list[str],
    k_all: int,
) -> dict[str, Any]:
    """Everything the parent compares with its model, each read done on its own.

    Args:
        col: The handle to observe through.
        ids: Ids to ``get`` (live and deleted ones alike).
        filters: For each, ``count(filter)`` and searches of every query at ``k_all`` with the cache on
            and off.
        queries: Query vectors.
        probes: Ids searched by their own stored vector at k=1 (cache on and off), unfiltered.
        k_all: k of the filter searches (more than the collection holds: every match comes back).
    """
    out: dict[str, Any] = {}

    def get_all() -> dict[str, Any]:
        recs = col.get(ids, include_vectors=True)
        return {
            rid: None
            if r is None
            else [r.document, r.metadata, r.vector.tolist() if r.vector is not None else None]
            for rid, r in zip(ids, recs, strict=True)
        }

    out["get"] = _call(get_all)
    out["count"] = _call(col.count)
    out["len"] = _call(len, col)
    searches: list[dict[str, Any]] = []
    for fi, flt in enumerate(filters):
        entry: dict[str, Any] = {"filter": fi, "count": _call(col.count, flt)}
        for cache in (True, False):
            entry[f"cache={cache}"] = [
                _call(
                    lambda q=q, flt=flt, cache=cache: [
                        _hit(h) for h in col.search(q, k_all, filter=flt, cache=cache)
                    ]
                )
                for q in queries
            ]
        searches.append(entry)
    out["searches"] = searches
    own: dict[str, Any] = {}
    fetched = _call(col.get, probes, include_vectors=True)
    if not fetched["ok"]:
        out["probes"] = {rid: {"get": fetched} for rid in probes}
        return out
    for rid, rec in zip(probes, fetched["result"] if probes else [], strict=True):
        if rec is None or rec.vector is None:
            own[rid] = {"ok": False, "error": "Missing", "message": "get() returned None"}
            continue
        vec = rec.vector
        own[rid] = {
            str(cache): _call(lambda vec=vec, cache=cache: [_hit(h) for h in col.search(vec, 1, cache=cache)])
            for cache in (True, False)
        }
    out["probes"] = own
    return out


class FreeRunModel:
    """The records one free-running worker owns (only it writes ids with its prefix)."""

    def __init__(self, prefix: str, dim: int, seed: int) -> None:
        self.prefix = prefix
        self.dim = dim
        self.rng = np.random.default_rng(seed)
        self.py = random.Random(seed)
        self.live: dict[str, tuple[list[float], str, dict[str, Any]]] = {}
        self.deleted: set[str] = set()
        self.next_id = 0
        self.version = 0
        self.violations: list[str] = []
        # the other worker's records whose metadata no longer matched the filter: the label set was
        # read before its write and the row after (a read skew rather than a stale index)
        self.skews: list[str] = []

    def new_row(self, rid: str) -> tuple[list[float], str, dict[str, Any]]:
        self.version += 1
        vec = self.rng.standard_normal(self.dim).astype(np.float32).tolist()
        meta = {"owner": self.prefix, "g": self.py.randrange(4), "v": self.version}
        return vec, f"{rid} version {self.version}", meta

    def violation(self, text: str) -> None:
        if len(self.violations) < 50:
            self.violations.append(text)


def _matches(meta: dict[str, Any], flt: dict[str, Any] | None) -> bool:
    return flt is None or all(meta.get(k) == v for k, v in flt.items())


def free_run(db: Embeddix, name: str, seconds: float, prefix: str, seed: int, dim: int) -> dict[str, Any]:
    """Write (add / upsert / update / delete), checkpoint, search and reopen for ``seconds``.

    Every search is checked against what this worker wrote: a hit with this worker's prefix must be a
    live record with its latest document and metadata, every hit must match the filter, and a probe by
    a live record's own vector must find that record at distance 0. Returns the final records and the
    violations seen (at most 50).
    """
    m = FreeRunModel(prefix, dim, seed)
    col = db.get_collection(name)
    deadline = time.monotonic() + seconds
    ops = 0
    checkpoints = 0
    reopens = 0
    while time.monotonic() < deadline:
        ops += 1
        roll = m.py.random()
        live_ids = list(m.live)
        try:
            if roll < 0.70 or roll >= 0.72:
                checkpoints += _free_run_step(col, m, roll, live_ids)
                continue
            db.close()
            db = Embeddix.open(db.path)
            col = db.get_collection(name)
            reopens += 1
        except Exception as exc:  # every error is a finding; go on to see what else breaks
            m.violation(f"op {ops} (roll {roll:.2f}) raised {type(exc).__name__}: {exc}")
            if isinstance(exc, EmbeddixError) and "closed" in str(exc):
                db = Embeddix.open(db.path)
                col = db.get_collection(name)
    db.close()
    return {
        "ops": ops,
        "checkpoints": checkpoints,
        "reopens": reopens,
        "violations": m.violations,
        "skews": m.skews,
        "live": {rid: [row[1], row[2]] for rid, row in m.live.items()},
        "deleted": sorted(m.deleted - set(m.live)),
    }


def _free_run_step(col: Collection, m: FreeRunModel, roll: float, live_ids: list[str]) -> int:
    """One free-running operation other than a reopen; returns 1 for a checkpoint, else 0."""
    prefix = m.prefix
    if roll < 0.3 or len(live_ids) < 20:
        n = m.py.randint(1, 8)
        ids = [f"{prefix}-{m.next_id + j}" for j in range(n)]
        m.next_id += n
        rows = [m.new_row(rid) for rid in ids]
        col.add(ids, [r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows])
        m.live.update(zip(ids, rows, strict=True))
    elif roll < 0.45:
        ids = m.py.sample(live_ids, min(len(live_ids), m.py.randint(1, 5)))
        rows = [m.new_row(rid) for rid in ids]
        col.upsert(ids, [r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows])
        m.live.update(zip(ids, rows, strict=True))
    elif roll < 0.55:
        ids = m.py.sample(live_ids, min(len(live_ids), m.py.randint(1, 5)))
        rows = [m.new_row(rid) for rid in ids]
        col.update(ids, documents=[r[1] for r in rows], metadatas=[r[2] for r in rows])
        for rid, row in zip(ids, rows, strict=True):
            m.live[rid] = (m.live[rid][0], row[1], row[2])
    elif roll < 0.65:
        ids = m.py.sample(live_ids, min(len(live_ids), m.py.randint(1, 4)))
        col.delete(ids)
        for rid in ids:
            del m.live[rid]
            m.deleted.add(rid)
    elif roll < 0.70:
        col.checkpoint()
        return 1
    else:
        _free_run_search(col, m)
    return 0


def _free_run_search(col: Collection, m: FreeRunModel) -> None:
    cache = m.py.random() < 0.5
    flt: dict[str, Any] | None = m.py.choice([None, {"owner": m.prefix}, {"g": m.py.randrange(4)}])
    if m.live and m.py.random() < 0.5:
        rid = m.py.choice(list(m.live))
        vec = m.live[rid][0]
        hits = col.search(vec, 1, filter={"owner": m.prefix}, cache=cache)
        if not hits or hits[0].id != rid or abs(hits[0].distance) > 1e-4:
            got = [(h.id, round(h.distance, 5)) for h in hits]
            m.violation(f"probe {rid} (cache={cache}) by its own vector found {got}")
        return
    q = m.rng.standard_normal(m.dim).astype(np.float32)
    for h in col.search(q, 20, filter=flt, cache=cache):
        if not _matches(h.metadata, flt):
            text = f"hit {h.id} metadata {h.metadata} does not match filter {flt} (cache={cache})"
            if h.id.startswith(m.prefix + "-"):
                m.violation(text)  # our own record, written before this search: a stale label set
            elif len(m.skews) < 50:
                m.skews.append(text)  # the other process may have changed it while we searched
        if h.id.startswith(m.prefix + "-"):
            row = m.live.get(h.id)
            if row is None:
                m.violation(f"hit {h.id} was deleted by this worker (cache={cache}, filter={flt})")
            elif h.document != row[1] or h.metadata != row[2]:
                m.violation(
                    f"hit {h.id} is stale: {h.document!r} {h.metadata} instead of {row[1]!r} {row[2]}"
                    f" (cache={cache}, filter={flt})"
                )
            else:
                v = np.asarray(row[0], np.float32)
                want = 1.0 - float(v @ q) / float(np.linalg.norm(v) * np.linalg.norm(q))
                if abs(want - h.distance) > 1e-3:
                    m.violation(f"hit {h.id} distance {h.distance} but its vector is at {want}")


class Worker:
    """The state behind the command loop: the database, the collection handle, its parameters."""

    def __init__(self) -> None:
        self.db: Embeddix | None = None
        self.col: Collection | None = None
        self.path = ""

    def run(self, cmd: dict[str, Any]) -> Any:
        op = cmd["op"]
        if op == "open":
            self.path = cmd["path"]
            self.db = Embeddix.open(self.path)
            self.col = self.db.get_or_create_collection(
                cmd["name"], dim=cmd["dim"], index_threshold=cmd["index_threshold"]
            )
            return self.col.index_kind
        db, col = self.db, self.col
        assert db is not None and col is not None, "open first"
        if op == "reopen":
            db.close()
            self.db = Embeddix.open(self.path)
            self.col = self.db.get_collection(col.name)
            return self.col.index_kind
        if op == "handle":
            self.col = db.get_collection(cmd["name"])
            return None
        if op == "create":
            db.create_collection(cmd["name"], dim=cmd["dim"], index_threshold=cmd["index_threshold"])
            return None
        if op == "drop":
            db.drop_collection(cmd["name"])
            return None
        if op == "put":
            fn = col.add if cmd["mode"] == "add" else col.upsert
            fn(cmd["ids"], cmd["vectors"], cmd["documents"], cmd["metadatas"])
            return col.index_kind
        if op == "update":
            col.update(cmd["ids"], documents=cmd.get("documents"), metadatas=cmd.get("metadatas"))
            return None
        if op == "delete":
            return col.delete(cmd["ids"])
        if op == "checkpoint":
            return col.checkpoint()
        if op == "observe":
            return observe(col, cmd["ids"], cmd["filters"], cmd["queries"], cmd["probes"], cmd["k_all"])
        if op == "fresh_observe":
            with Embeddix.open(self.path) as other:
                return observe(
                    other.get_collection(col.name),
                    cmd["ids"],
                    cmd["filters"],
                    cmd["queries"],
                    cmd["probes"],
                    cmd["k_all"],
                )
        if op == "free_run":
            self.db = None  # free_run closes it
            return free_run(db, col.name, cmd["seconds"], cmd["prefix"], cmd["seed"], col.dim)
        raise ValueError(f"unknown op {op!r}")


def main() -> None:
    worker = Worker()
    for line in sys.stdin:
        cmd = json.loads(line)
        if cmd["op"] == "exit":
            if cmd.get("close", True) and worker.db is not None:
                worker.db.close()
            sys.stdout.flush()
            if cmd.get("hard"):
                os._exit(cmd.get("code", 0))
            sys.exit(cmd.get("code", 0))
        try:
            reply: dict[str, Any] = {"ok": True, "result": worker.run(cmd)}
        except Exception as exc:
            reply = {
                "ok": False,
                "error": type(exc).__name__,
                "message": str(exc)[:500],
                "traceback": traceback.format_exc()[-2000:],
            }
        sys.stdout.write(json.dumps(reply) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
