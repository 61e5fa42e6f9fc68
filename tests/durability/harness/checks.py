"""Reading a killed child's log, and checking a reopened directory against the model.

What is checked after each kill (see :func:`check_directory`):

* the stored records equal the model after every acknowledged op, with the one op in flight either fully
  applied or fully absent (records compared whole: vector bytes, document, metadata);
* no id is stored twice; ``len(col) == col.count()`` == the number of records scanned;
* searches return only stored ids, each at most once;
* recall@10 against brute force over the scanned records is at least a freshly built copy's (same
  config, same records, in memory) minus ``RECALL_TOLERANCE``; with the exact index every record finds
  itself at k=1.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .workload import COLLECTION, DIM, Config, Model, apply, canonical_meta

__all__ = ["Log", "Outcome", "check_directory", "history", "parse_log", "read_state", "unexpected_warnings"]

RECALL_TOLERANCE = 0.05

# Rebuild warnings a crash may cause: none. A kill between writing a snapshot and recording it in the
# store used to leave a manifest the store did not vouch for (a full rebuild on the next open); the store
# now vouches for a snapshot before its manifest appears
# (test_kill_loop.py::test_a_kill_inside_checkpoint_leaves_a_snapshot_the_next_open_uses).
CRASH_REBUILD_REASONS: tuple[str, ...] = ()


# A power cut that loses the WAL's tail may lose the commit that recorded a snapshot whose files were
# already durable: the snapshot is then newer than the store, and rebuilding it is the right answer.
LOST_TAIL_REBUILD_REASONS = ("is not one the store recorded",)


def unexpected_warnings(messages: list[str], allowed: tuple[str, ...] = ()) -> list[str]:
    """The warnings a crash should not cause (anything but an index rebuild for the reasons given)."""
    reasons = CRASH_REBUILD_REASONS + allowed
    return [
        m for m in messages if "rebuilding it from the store" not in m or not any(r in m for r in reasons)
    ]


@dataclass
class Log:
    """What a killed child said it did."""

    ops: list[tuple[int, dict[str, Any]]] = field(default_factory=list)  # begun, in order
    acked: dict[int, int] = field(default_factory=dict)  # op -> WAL size at its ACK
    errors: set[int] = field(default_factory=set)
    ready: bool = False
    snap_wal: list[int] = field(default_factory=list)  # WAL size after each background checkpoint
    bg_errors: list[str] = field(default_factory=list)

    @property
    def in_flight(self) -> tuple[int, dict[str, Any]] | None:
        """The op begun but neither acknowledged nor failed (at most one: the last)."""
        if self.ops and self.ops[-1][0] not in self.acked and self.ops[-1][0] not in self.errors:
            return self.ops[-1]
        return None


def parse_log(path: Path) -> Log:
    out = Log()
    text = path.read_text(encoding="utf-8") if path.exists() else ""
    lines = text.split("\n")[:-1]  # the piece after the last newline was cut by the kill
    for line in lines:
        kind, _, rest = line.partition(" ")
        if kind == "READY":
            out.ready = True
        elif kind == "BEGIN":
            n, _, op = rest.partition(" ")
            out.ops.append((int(n), json.loads(op)))
        elif kind == "ACK":
            n, _, wal = rest.partition(" ")
            out.acked[int(n)] = int(wal)
        elif kind == "ERR":
            out.errors.add(int(rest.split()[0]))
        elif kind == "SNAP":
            out.snap_wal.append(int(rest))
        elif kind == "BGERR":
            out.bg_errors.append(rest)
    return out


def history(model: Model, log: Log) -> tuple[list[Model], int]:
    """The model after each op of the log that changed the records, in order, and the acknowledged one.

    Returns:
        (states, acked): ``states[0]`` is ``model``; the last state includes the in-flight op, if any;
        ``states[acked]`` is the state after the last acknowledged op.
    """
    states = [model]
    acked = 0
    flying = log.in_flight
    for n, op in log.ops:
        if n in log.errors:
            continue
        nxt = apply(states[-1], op)
        if nxt != states[-1]:
            states.append(nxt)
        if flying is None or n != flying[0]:
            acked = len(states) - 1
    return states, acked


@dataclass
class Outcome:
    """The result of one check: counts for the long-tier report and failure messages."""

    ops_verified: int = 0
    lost: int = 0
    resurrected: int = 0
    duplicates: int = 0
    in_flight_applied: int = 0
    in_flight_absent: int = 0
    warnings: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)


def read_state(data: Path, config: Config) -> tuple[Any, Any, list[str]]:
    """Open ``data`` in this process; returns (db, collection or None, warning messages)."""
    from embeddix_core import Embeddix
    from embeddix_core.config import EmbeddixSettings
    from embeddix_core.errors import CollectionNotFoundError

    settings = EmbeddixSettings(**{**config.settings(), "auto_calibrate": False})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        db = Embeddix.open(data, settings=settings)
        try:
            col = db.get_collection(COLLECTION)
        except CollectionNotFoundError:
            col = None
    return db, col, [str(w.message) for w in caught]


def _diff(expected: Model, observed: Model) -> tuple[int, int]:
    """(lost, resurrected): expected records missing or changed; records present but not expected."""
    lost = sum(1 for rid, row in expected.items() if observed.get(rid) != row)
    resurrected = sum(1 for rid in observed if rid not in expected)
    return lost, resurrected


def _describe(expected: Model, observed: Model) -> str:
    missing = [r for r in expected if r not in observed][:3]
    changed = [r for r in expected if r in observed and observed[r] != expected[r]][:3]
    extra = [r for r in observed if r not in expected][:3]
    return f"missing {missing}, changed {changed}, unexpected {extra}"


def check_directory(
    data: Path, config: Config, candidates: list[Model], *, must_reach: int, rng: np.random.Generator
) -> tuple[Outcome, Model | None]:
    """Reopen ``data`` and check it against the model.

    Args:
        data: The data directory.
        config: Its configuration.
        candidates: Allowed states, oldest first (see :func:`history`).
        must_reach: Index of the oldest allowed candidate (every acknowledged op applied); the check
            accepts candidates ``must_reach`` and later.
        rng: For the queries.

    Returns:
        The outcome and the state found (None when the store did not open).
    """
    out = Outcome()
    db, col, warned = read_state(data, config)
    out.warnings.extend(warned)
    try:
        observed: Model = {}
        dup = 0
        recs = [] if col is None else list(col.scan(include_vectors=True))
        for rec in recs:
            if rec.id in observed:
                dup += 1
            assert rec.vector is not None
            observed[rec.id] = (rec.vector.tobytes(), rec.document, canonical_meta(rec.metadata))
        out.duplicates += dup
        if dup:
            out.failures.append(f"{dup} ids stored twice")
        matches = [i for i, c in enumerate(candidates) if c == observed]
        allowed = [i for i in matches if i >= must_reach]
        if not allowed:
            best = candidates[must_reach] if must_reach < len(candidates) else candidates[-1]
            lost, res = _diff(best, observed)
            out.lost += lost
            out.resurrected += res
            where = f"matches history state {matches}" if matches else _describe(best, observed)
            out.failures.append(
                f"store does not match the acknowledged history (need state >= {must_reach} of "
                f"{len(candidates) - 1}; {where}; lost {lost}, unexpected {res})"
            )
        elif len(candidates) - 1 > must_reach:
            if allowed[-1] == len(candidates) - 1:
                out.in_flight_applied += 1
            else:
                out.in_flight_absent += 1
        if col is None:
            return out, observed
        n_len, n_count = len(col), col.count()
        if not n_len == n_count == len(recs):
            out.failures.append(f"len(col)={n_len}, col.count()={n_count}, scan found {len(recs)}")
        out.failures.extend(_check_search(col, config, observed, recs, rng, out))
        return out, observed
    finally:
        db.close()


def _normalize(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _recall(col: Any, queries: np.ndarray, truth: list[list[str]], out: Outcome) -> float:
    found = 0
    total = 0
    for q, want in zip(queries, truth, strict=True):
        # one explicit beam on both sides: the check is about what the reopened index holds; the beam a
        # calibrated default picks (for recall 0.95) differs from an uncalibrated fresh build's ef_search
        hits = col.search(q, k=10, ef=96)
        ids = [h.id for h in hits]
        if len(set(ids)) != len(ids):
            out.duplicates += len(ids) - len(set(ids))
        found += len(set(ids) & set(want))
        total += len(want)
    return found / max(total, 1)


def _check_search(
    col: Any, config: Config, observed: Model, recs: list[Any], rng: np.random.Generator, out: Outcome
) -> list[str]:
    from embeddix_core import Embeddix

    failures: list[str] = []
    if not observed:
        hits = col.search(rng.standard_normal(DIM).astype(np.float32), k=10)
        if hits:
            out.resurrected += len(hits)
            failures.append(f"empty collection returned hits {[h.id for h in hits][:3]}")
        return failures
    ids = [r.id for r in recs]
    mat = _normalize(np.stack([r.vector for r in recs]).astype(np.float32))
    queries = rng.standard_normal((20, DIM)).astype(np.float32)
    sims = _normalize(queries) @ mat.T
    kk = min(10, len(ids))
    truth = [[ids[j] for j in np.argsort(-row, kind="stable")[:kk]] for row in sims]
    stored = set(observed)
    for q in queries[:5]:
        bad = [h.id for h in col.search(q, k=10) if h.id not in stored]
        if bad:
            out.resurrected += len(bad)
            failures.append(f"search returned ids that are not stored: {bad[:3]}")
    got = _recall(col, queries, truth, out)
    with Embeddix.open(None) as fresh_db:
        fresh = fresh_db.create_collection(COLLECTION, dim=DIM, **config.collection_kwargs())
        fresh.add(
            ids,
            np.stack([r.vector for r in recs]),
            [r.document for r in recs],
            [r.metadata for r in recs],
        )
        base = _recall(fresh, queries, truth, Outcome())
    if got < base - RECALL_TOLERANCE:
        failures.append(f"recall@10 {got:.3f} after reopening, {base:.3f} on a fresh build")
    if config.index == "exact":
        # one batch call (one thread: the machine is shared) instead of a search per record
        tops = col.search_batch(np.stack([r.vector for r in recs]), k=1, num_threads=1)
        lost = [r.id for r, top in zip(recs, tops, strict=True) if not top or top[0].id != r.id]
        if lost:
            failures.append(f"{len(lost)} records do not find themselves at k=1, e.g. {lost[:3]}")
    return failures
