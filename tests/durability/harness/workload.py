"""The seeded random workload a crash child runs, and the model of its effects the parent checks against.

Log protocol (one line per event, written with an unbuffered ``os.write`` to a log file, which survives
SIGKILL of the writer because the bytes are in the OS page cache once ``write`` returns):

* ``OPEN`` when the child starts opening the database, ``READY`` once it is open;
* ``BEGIN <n> <op json>`` *before* operation ``n`` starts;
* ``ACK <n> <wal bytes>`` *after* the call returned (the size of the ``-wal`` file then, for the power-loss
  test); ``ERR <n> <class>`` when it raised a typed error (the API promises nothing changed then);
* ``SNAP <wal bytes>`` after a background ``checkpoint()`` returned.

A line without its newline was cut by the kill and is ignored, so an op whose ``ACK`` line was torn counts
as in flight: the check then accepts it applied or absent, which is right because its call may have
returned or not.

The op JSON holds everything needed to compute its effect on a model of the collection: ids, a seed for
the vectors (:func:`vectors`), documents and metadata. The model is ``id -> (vector bytes, document,
metadata json)``; :func:`apply` is the one place that says what each op does to it.
"""

from __future__ import annotations

import json
import os
import random
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "DIM",
    "Config",
    "Model",
    "apply",
    "canonical_meta",
    "configs",
    "run_child",
    "vectors",
]

DIM = 16
COLLECTION = "c"
GROUPS = 25  # metadata "g" takes this many values; a delete-by-filter removes one group

Row = tuple[bytes, str | None, str]
Model = dict[str, Row]


@dataclass(frozen=True)
class Config:
    """One cell of the crash matrix: durability x index type x background activity.

    Attributes:
        durability: ``"full"`` or ``"normal"``.
        index: ``"exact"`` (threshold never reached), ``"hnsw"`` (one graph past 200 records) or
            ``"segmented"`` (HNSW in segments of 100 vectors).
        background: ``"flush"`` (write buffer of 8: the graph is filled by the background flusher),
            ``"snapshot"`` (a thread calls ``checkpoint()`` every few ms), ``"compact"`` (frequent
            ``compact()`` ops) or ``"calibrate"`` (auto-calibration after 10 ms of quiet, from 50 records).
    """

    durability: str
    index: str
    background: str

    @property
    def name(self) -> str:
        return f"{self.durability}-{self.index}-{self.background}"

    def settings(self) -> dict[str, Any]:
        """Keyword arguments for ``EmbeddixSettings`` in the child (and the parent's checks)."""
        s: dict[str, Any] = {"durability": self.durability, "auto_calibrate": False}
        if self.background == "flush":
            s["write_buffer"] = 8
        if self.background == "calibrate":
            s.update(
                auto_calibrate=True, calibration_min_count=50, calibration_quiet_s=0.01, calibration_sample=10
            )
        return s

    def collection_kwargs(self) -> dict[str, Any]:
        if self.index == "exact":
            return {"index_threshold": 1_000_000}
        if self.index == "hnsw":
            return {"index_threshold": 200}
        return {"index_threshold": 200, "segment_size": 100}

    @property
    def min_records(self) -> int:
        """The workload keeps at least this many records, so HNSW configurations stay past the threshold."""
        return 40 if self.index == "exact" else 230


def configs() -> list[Config]:
    """Every cell of the matrix, in a fixed order."""
    return [
        Config(d, i, b)
        for d in ("full", "normal")
        for i in ("exact", "hnsw", "segmented")
        for b in ("flush", "snapshot", "compact", "calibrate")
    ]


def vectors(vseed: int, n: int) -> np.ndarray:
    """The vectors of an op: the same in the child that writes them and the parent that checks them."""
    return np.random.default_rng(vseed).standard_normal((n, DIM)).astype(np.float32)


def canonical_meta(meta: dict[str, Any] | None) -> str:
    return json.dumps(meta or {}, sort_keys=True)


def apply(model: Model, op: dict[str, Any]) -> Model:
    """The model after ``op`` succeeded (a new dict; ``model`` is not changed)."""
    kind = op["op"]
    out = dict(model)
    if kind in ("add", "upsert"):
        vecs = vectors(op["vseed"], len(op["ids"]))
        for i, rid in enumerate(op["ids"]):
            out[rid] = (vecs[i].tobytes(), op["docs"][i], canonical_meta(op["metas"][i]))
    elif kind == "update":
        new = vectors(op["vseed"], len(op["ids"])) if op.get("vseed") is not None else None
        for i, rid in enumerate(op["ids"]):
            vec, doc, meta = out[rid]
            if new is not None:
                vec = new[i].tobytes()
            if op.get("docs") is not None:
                doc = op["docs"][i]
            if op.get("metas") is not None:
                meta = canonical_meta(op["metas"][i])
            out[rid] = (vec, doc, meta)
    elif kind == "delete":
        for rid in op["ids"]:
            out.pop(rid, None)
    elif kind == "delete_where":
        for rid, (_v, _d, meta) in model.items():
            if json.loads(meta).get("g") == op["g"]:
                del out[rid]
    elif kind == "clear":
        out.clear()
    # compact, checkpoint, reopen: no effect on the records
    return out


class _Gen:
    """Draws the next op from the child's own view of the collection."""

    def __init__(self, seed: int, run: int, config: Config, live: dict[str, int]) -> None:
        self.rng = random.Random(seed)
        self.run = run
        self.config = config
        self.live = live  # id -> group
        self.fresh = 0
        self.n = 0
        self.reopen = True

    def _new_ids(self, n: int) -> list[str]:
        ids = [f"r{self.run}-{self.fresh + j}" for j in range(n)]
        self.fresh += n
        return ids

    def _payload(self, ids: list[str]) -> dict[str, Any]:
        r = self.rng
        metas = [{"g": r.randrange(GROUPS), "w": self.run, "n": self.n} for _ in ids]
        docs = [None if r.random() < 0.2 else f"doc {rid} op {self.n}" for rid in ids]
        return {"ids": ids, "vseed": r.randrange(2**62), "docs": docs, "metas": metas}

    def next(self) -> dict[str, Any]:
        r = self.rng
        self.n += 1
        live = list(self.live)
        if len(live) < self.config.min_records:
            need = self.config.min_records - len(live) + r.randint(0, 20)
            return {"op": "add", **self._payload(self._new_ids(need))}
        x = r.random()
        compact_p = 0.08 if self.config.background == "compact" else 0.01
        if x < 0.30:
            return {"op": "add", **self._payload(self._new_ids(r.randint(1, 8)))}
        if x < 0.52:
            ids = r.sample(live, r.randint(0, min(4, len(live)))) + self._new_ids(r.randint(0, 3))
            ids = ids or self._new_ids(1)
            return {"op": "upsert", **self._payload(ids)}
        if x < 0.67:
            ids = r.sample(live, r.randint(1, min(4, len(live))))
            p = self._payload(ids)
            what = r.choice(("metas", "docs", "both", "vectors"))
            return {
                "op": "update",
                "ids": ids,
                "vseed": p["vseed"] if what == "vectors" else None,
                "docs": p["docs"] if what in ("docs", "both") else None,
                "metas": p["metas"] if what in ("metas", "both") else None,
            }
        if x < 0.82:
            ids = [*r.sample(live, r.randint(1, min(5, len(live)))), f"absent-{r.randrange(10**6)}"]
            return {"op": "delete", "ids": ids}
        if x < 0.85:
            return {"op": "delete_where", "g": r.randrange(GROUPS)}
        if x < 0.852:
            return {"op": "clear"}
        if x < 0.852 + compact_p:
            return {"op": "compact"}
        if x < 0.88 + compact_p:
            return {"op": "checkpoint"}
        if x < 0.89 + compact_p and self.reopen:
            return {"op": "reopen"}
        return {"op": "add", **self._payload(self._new_ids(r.randint(1, 3)))}

    def applied(self, op: dict[str, Any]) -> None:
        kind = op["op"]
        if kind in ("add", "upsert") or (kind == "update" and op.get("metas") is not None):
            for rid, meta in zip(op["ids"], op["metas"], strict=True):
                self.live[rid] = meta["g"]
        elif kind == "delete":
            for rid in op["ids"]:
                self.live.pop(rid, None)
        elif kind == "delete_where":
            for rid in [i for i, g in self.live.items() if g == op["g"]]:
                del self.live[rid]
        elif kind == "clear":
            self.live.clear()


def _wal_size(data: Path) -> int:
    try:
        return (data / "embeddix.sqlite3-wal").stat().st_size
    except OSError:
        return 0


def run_child(spec: dict[str, Any]) -> None:
    """The child's whole life: open, then run ops until killed (or ``max_seconds`` pass).

    Args:
        spec: ``dir``, ``log``, ``seed``, ``run`` (a number unique in this directory, for fresh ids),
            ``config`` (a :class:`Config` as a dict) and optionally ``max_seconds``.
    """
    from embeddix_core import Embeddix
    from embeddix_core.config import EmbeddixSettings
    from embeddix_core.errors import EmbeddixError

    config = Config(**spec["config"])
    data = Path(spec["dir"])
    fd = os.open(spec["log"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    log_lock = threading.Lock()

    def emit(line: str) -> None:
        with log_lock:
            os.write(fd, (line + "\n").encode())

    settings = EmbeddixSettings(**config.settings())

    def open_col() -> tuple[Any, Any]:
        db = Embeddix.open(data, settings=settings)
        col = db.get_or_create_collection(COLLECTION, dim=DIM, **config.collection_kwargs())
        return db, col

    def no_auto_checkpoint(db: Any) -> None:
        # Power-loss runs (spec "power_loss"): the WAL must only grow, so that its size at an ACK marks
        # the end of the fsynced commits. This reaches into the store's write connection: a test double
        # of SQLite's automatic checkpoints, not something the engine offers.
        db._store._conn.execute("PRAGMA wal_autocheckpoint=0")

    emit("OPEN")
    db, col = open_col()
    if spec.get("power_loss"):
        no_auto_checkpoint(db)
    live = {rec.id: int(rec.metadata.get("g", -1)) for rec in col.scan()}
    emit("READY")
    gen = _Gen(spec["seed"], spec["run"], config, live)
    gen.reopen = not spec.get("power_loss")  # close() checkpoints the WAL into the database file
    state = {"col": col, "stop": False}
    guard = threading.Lock()  # the snapshot thread never checkpoints a collection being reopened

    if config.background == "snapshot":

        def snapshots() -> None:
            rng = random.Random(spec["seed"] + 1)
            while not state["stop"]:
                time.sleep(rng.uniform(0.002, 0.02))
                try:
                    with guard:
                        state["col"].checkpoint()
                    emit(f"SNAP {_wal_size(data)}")
                except EmbeddixError as exc:
                    emit(f"BGERR {type(exc).__name__}")

        threading.Thread(target=snapshots, daemon=True).start()

    deadline = time.monotonic() + float(spec.get("max_seconds", 60.0))
    while time.monotonic() < deadline:
        op = gen.next()
        emit(f"BEGIN {gen.n} {json.dumps(op, separators=(',', ':'))}")
        col = state["col"]
        try:
            kind = op["op"]
            if kind in ("add", "upsert"):
                getattr(col, kind)(op["ids"], vectors(op["vseed"], len(op["ids"])), op["docs"], op["metas"])
            elif kind == "update":
                vecs = vectors(op["vseed"], len(op["ids"])) if op["vseed"] is not None else None
                col.update(op["ids"], vectors=vecs, documents=op["docs"], metadatas=op["metas"])
            elif kind == "delete":
                col.delete(op["ids"])
            elif kind == "delete_where":
                col.delete(filter={"g": op["g"]})
            elif kind == "clear":
                col.clear()
            elif kind == "compact":
                col.compact()
            elif kind == "checkpoint":
                col.checkpoint()
            elif kind == "reopen":
                with guard:
                    db.close()
                    db, state["col"] = open_col()
        except EmbeddixError as exc:
            emit(f"ERR {gen.n} {type(exc).__name__}")
            continue
        gen.applied(op)
        emit(f"ACK {gen.n} {_wal_size(data)}")
    state["stop"] = True
    db.close()
    emit("DONE")
