"""Several processes on one data directory: every process sees exactly what was committed, always.

The README promises that two processes may open one directory at once and both work: each replays the
others' commits before it searches. These tests hold the parent's model of the committed state and, after
every round of writes (by any child, by a process that writes and exits, with checkpoints racing each
other), ask every child to read: ``get``, ``count``, ``len``, filtered and unfiltered searches with the
result cache on and off, and a search by each probed record's own vector. Every read must agree with the
model; no child may die of a signal (SIGBUS in COMMIT was issue #12's first defect).

Children are ``_worker.py`` processes driven over stdin/stdout (one JSON line per command and reply);
they import ``embeddix_core`` from the same root as this test.
"""

from __future__ import annotations

import json
import os
import queue
import random
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import numpy as np
import pytest

import embeddix_core
from embeddix_core import Embeddix

WORKER = Path(__file__).with_name("_worker.py")
CODE_ROOT = str(Path(embeddix_core.__file__).resolve().parents[1])
DIM = 16
THRESHOLD = 100  # HNSW from the 101st record: the stale-index defects live there
FILTERS: list[dict[str, Any] | None] = [None, {"g": 0}, {"g": {"$in": [1, 2]}}, {"rare": True}]
REPLY_TIMEOUT = 180.0
STRESS_SECONDS = float(os.environ.get("EMBEDDIX_STRESS_SECONDS", "8"))


def child_env(**extra: str) -> dict[str, str]:
    """The children's environment: HNSW early, small write buffer, no background calibration."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("EMBEDDIX_")}
    env.update(
        PYTHONPATH=CODE_ROOT,
        EMBEDDIX_DURABILITY="normal",
        EMBEDDIX_AUTO_CALIBRATE="false",
        EMBEDDIX_WRITE_BUFFER="32",
        # filtered searches use the graph with an allow-list for common filters, a subset scan for rare
        EMBEDDIX_EXACT_FILTER_MIN="0",
        EMBEDDIX_EXACT_FILTER_FRACTION="0.05",
    )
    env.update(extra)
    return env


def _signal_name(code: int | None) -> str:
    if code is not None and code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"


class Child:
    """One worker process and a thread reading its replies (so a dead or hung child fails, not hangs)."""

    def __init__(self, name: str, log_dir: Path, env: dict[str, str]) -> None:
        self.name = name
        self.stderr_path = log_dir / f"{name}.stderr"
        self._stderr: TextIO = open(self.stderr_path, "w")  # noqa: SIM115 - closed in finish()
        self.proc = subprocess.Popen(
            [sys.executable, str(WORKER)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            text=True,
            env=env,
            cwd=log_dir,
        )
        self._replies: queue.Queue[str | None] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._replies.put(line)
        self._replies.put(None)

    def stderr_tail(self) -> str:
        self._stderr.flush()
        return self.stderr_path.read_text(errors="replace")[-3000:]

    def send(self, **cmd: Any) -> None:
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write(json.dumps(cmd) + "\n")
            self.proc.stdin.flush()
        except BrokenPipeError:
            pass  # the reply (None) says it died

    def recv(self, timeout: float = REPLY_TIMEOUT) -> dict[str, Any]:
        try:
            line = self._replies.get(timeout=timeout)
        except queue.Empty:
            pytest.fail(f"child {self.name} did not answer within {timeout} s (hung?)\n{self.stderr_tail()}")
        if line is None:
            code = self.proc.wait(timeout=30)
            pytest.fail(f"child {self.name} died: {_signal_name(code)}\nstderr:\n{self.stderr_tail()}")
        reply: dict[str, Any] = json.loads(line)
        return reply

    def call(self, **cmd: Any) -> Any:
        """Run one command; an error reply fails the test with the child's traceback."""
        self.send(**cmd)
        reply = self.recv()
        if not reply["ok"]:
            pytest.fail(
                f"child {self.name}: {cmd['op']} raised {reply['error']}: {reply['message']}\n"
                f"{reply.get('traceback', '')}"
            )
        return reply["result"]

    def finish(self, *, close: bool = True) -> int:
        """Ask the child to exit (closing its database) and return its exit code."""
        if self.proc.poll() is None:
            self.send(op="exit", close=close)
        try:
            code = self.proc.wait(timeout=REPLY_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait()
        self._stderr.close()
        return code

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        if not self._stderr.closed:
            self._stderr.close()


@dataclass
class Row:
    vector: np.ndarray
    document: str
    metadata: dict[str, Any]


class Model:
    """The committed state, as the parent knows it: what every reader must see after a round."""

    def __init__(self, seed: int) -> None:
        self.rows: dict[str, Row] = {}
        self.ever: set[str] = set()
        self.rng = np.random.default_rng(seed)
        self.py = random.Random(seed)
        self.version = 0
        self.next_id = 0

    def new_ids(self, n: int) -> list[str]:
        ids = [f"r{self.next_id + i}" for i in range(n)]
        self.next_id += n
        return ids

    def make(self, ids: list[str]) -> dict[str, Any]:
        """Fresh vectors, documents and metadata for ``ids`` (a ``put`` command's arguments)."""
        vecs, docs, metas = [], [], []
        for rid in ids:
            self.version += 1
            vecs.append(self.rng.standard_normal(DIM).astype(np.float32).tolist())
            docs.append(f"{rid} version {self.version}")
            metas.append({"g": self.py.randrange(4), "rare": self.py.random() < 0.05, "v": self.version})
        return {"ids": ids, "vectors": vecs, "documents": docs, "metadatas": metas}

    def apply_put(self, cmd: dict[str, Any]) -> None:
        for rid, v, d, m in zip(cmd["ids"], cmd["vectors"], cmd["documents"], cmd["metadatas"], strict=True):
            self.rows[rid] = Row(np.asarray(v, np.float32), d, m)
            self.ever.add(rid)


def _matches(meta: dict[str, Any], flt: dict[str, Any] | None) -> bool:
    from embeddix_core import parse_filter

    parsed = parse_filter(flt) if flt else None
    return parsed is None or parsed.matches(meta)


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    return 1.0 - float(a @ b) / float(np.linalg.norm(a) * np.linalg.norm(b))


def check_observation(
    obs: dict[str, Any],
    model: Model,
    ids: list[str],
    queries: list[list[float]],
    who: str,
    allowed_errors: frozenset[str] = frozenset(),
) -> list[str]:
    """Every difference between what a child saw and the model (empty when it saw exactly the model).

    ``allowed_errors``: exception names a read may raise instead of answering (an old handle of a
    dropped collection may say so with a typed error); any other error is a finding.
    """
    problems: list[str] = []
    rows = model.rows

    def failed(what: str, res: dict[str, Any]) -> bool:
        if res["ok"]:
            return False
        if res["error"] not in allowed_errors:
            problems.append(f"{who}: {what} raised {res['error']}: {res['message']}")
        return True

    if not failed("get", obs["get"]):
        for rid in ids:
            got, row = obs["get"]["result"][rid], rows.get(rid)
            if row is None and got is not None:
                problems.append(f"{who}: get({rid!r}) returned a deleted record {got[:2]}")
            elif row is not None and got is None:
                problems.append(f"{who}: get({rid!r}) returned None for a live record")
            elif row is not None and got is not None and (got[0], got[1]) != (row.document, row.metadata):
                problems.append(
                    f"{who}: get({rid!r}) is stale: {got[:2]} instead of {[row.document, row.metadata]}"
                )
    for what in ("count", "len"):
        if not failed(what, obs[what]) and obs[what]["result"] != len(rows):
            problems.append(f"{who}: {what} is {obs[what]['result']}, {len(rows)} records are committed")
    for entry in obs["searches"]:
        flt = FILTERS[entry["filter"]]
        want = {rid for rid, row in rows.items() if _matches(row.metadata, flt)}
        if not failed(f"count({flt})", entry["count"]) and entry["count"]["result"] != len(want):
            problems.append(f"{who}: count({flt}) is {entry['count']['result']}, expected {len(want)}")
        for cache in (True, False):
            for qi, res in enumerate(entry[f"cache={cache}"]):
                what = f"search(filter={flt}, cache={cache}, query {qi})"
                if failed(what, res):
                    continue
                hits = res["result"]
                got_ids = [h[0] for h in hits]
                if len(set(got_ids)) != len(got_ids):
                    problems.append(f"{who}: {what} returned duplicate ids")
                q = np.asarray(queries[qi], np.float32)
                for rid, dist, doc, meta in hits:
                    row = rows.get(rid)
                    if row is None:
                        problems.append(f"{who}: {what} returned deleted record {rid!r} ({doc!r})")
                        continue
                    if (doc, meta) != (row.document, row.metadata):
                        problems.append(
                            f"{who}: {what} returned {rid!r} stale: {doc!r} {meta} instead of "
                            f"{row.document!r} {row.metadata}"
                        )
                    if not _matches(meta, flt) or not _matches(row.metadata, flt):
                        problems.append(
                            f"{who}: {what} returned {rid!r} whose metadata {meta} does not match"
                        )
                    if abs(_cosine(row.vector, q) - dist) > 1e-3:
                        problems.append(
                            f"{who}: {what} returned {rid!r} at distance {dist:.5f}; its vector is at "
                            f"{_cosine(row.vector, q):.5f}"
                        )
                missing = want - set(got_ids)
                if missing:
                    problems.append(
                        f"{who}: {what} missed {len(missing)} of {len(want)} matching records "
                        f"(k > count), e.g. {sorted(missing)[:3]}"
                    )
    for rid, per_cache in obs["probes"].items():
        if "ok" in per_cache:  # get() found nothing
            problems.append(f"{who}: probe {rid!r}: {per_cache['message']}")
            continue
        for cache, res in per_cache.items():
            what = f"get({rid!r})" if cache == "get" else f"search(own vector of {rid!r}, k=1, cache={cache})"
            if failed(what, res):
                continue
            hits = res["result"]
            if not hits or hits[0][0] != rid or abs(hits[0][1]) > 1e-4:
                problems.append(f"{who}: {what} found {[(h[0], round(h[1], 5)) for h in hits]}")
    return problems


def observe_cmd(
    model: Model, probes: list[str], nq: int = 2
) -> tuple[dict[str, Any], list[str], list[list[float]]]:
    ids = sorted(model.ever)
    queries = [model.rng.standard_normal(DIM).astype(np.float32).tolist() for _ in range(nq)]
    cmd = {
        "ids": ids,
        "filters": FILTERS,
        "queries": queries,
        "probes": probes,
        "k_all": len(model.rows) + 10,
    }
    return cmd, ids, queries


def verify_all(
    children: list[Child], model: Model, touched: set[str], round_: int, *, fresh: bool
) -> list[str]:
    """Every child reads; returns every difference from the model (a fresh open reads too if asked)."""
    live = sorted(model.rows)
    sample = set(model.py.sample(live, min(12, len(live)))) | (touched & set(live))
    cmd, ids, queries = observe_cmd(model, sorted(sample))
    problems: list[str] = []
    for child in children:
        child.send(op="observe", **cmd)
    for child in children:
        reply = child.recv()
        if not reply["ok"]:
            problems.append(f"{child.name}: observe raised {reply['error']}: {reply['message']}")
            continue
        problems += check_observation(reply["result"], model, ids, queries, f"round {round_} {child.name}")
    if fresh:
        child = children[round_ % len(children)]
        obs = child.call(op="fresh_observe", **cmd)
        problems += check_observation(obs, model, ids, queries, f"round {round_} fresh open in {child.name}")
    return problems


def _report(problems: list[str], what: str) -> str:
    """The problems grouped by kind (ids, numbers and values blanked out): a count and the first of each."""
    kinds: dict[str, list[str]] = {}
    for text in problems:
        kind = re.sub(r"'[^']*'|\{[^}]*\}|\[[^\]]*\]|-?\d+(\.\d+)?", "#", text.split(": ", 1)[-1])
        kinds.setdefault(kind, []).append(text)
    lines = [f"{len(problems)} {what}, {len(kinds)} kinds (count x first example):"]
    lines += [f"  {len(items)} x {items[0]}" for items in list(kinds.values())[:40]]
    return "\n".join(lines)


@pytest.fixture
def spawn(tmp_path: Path) -> Iterator[Any]:
    """Start worker children; kills any still running when the test ends."""
    started: list[Child] = []

    def start(name: str, **env: str) -> Child:
        child = Child(name, tmp_path, child_env(**env))
        started.append(child)
        return child

    yield start
    for child in started:
        child.kill()


def _finish_all(children: list[Child]) -> None:
    codes = {c.name: c.finish() for c in children}
    dead = {name: _signal_name(code) for name, code in codes.items() if code != 0}
    assert not dead, f"children did not exit cleanly: {dead}\n" + "\n".join(
        f"--- {c.name} stderr:\n{c.stderr_path.read_text(errors='replace')[-2000:]}" for c in children
    )


SCENARIOS = (
    "everyone writes, all checkpoint at once",
    "one writes, then closes and reopens",
    "a process writes and exits",
    "one writes and checkpoints",
    "one writes",
    "two checkpoint while the third writes",
)


def write_mix(model: Model, writers: list[Child]) -> set[str]:
    """Adds (new and previously deleted ids), upserts, updates and deletes, spread over ``writers``;
    the model follows each acknowledged write. Returns the ids touched."""
    py = model.py
    w = iter(writers * 4)
    dead = sorted(model.ever - set(model.rows))
    cmd = model.make(model.new_ids(py.randint(3, 15)) + py.sample(dead, min(len(dead), 3)))
    next(w).call(op="put", mode="add", **cmd)
    model.apply_put(cmd)
    touched = set(cmd["ids"])
    cmd = model.make(py.sample(sorted(model.rows), 6) + model.new_ids(2))
    next(w).call(op="put", mode="upsert", **cmd)
    model.apply_put(cmd)
    touched |= set(cmd["ids"])
    ids = py.sample(sorted(model.rows), 6)
    upd = model.make(ids)
    next(w).call(op="update", ids=ids, documents=upd["documents"], metadatas=upd["metadatas"])
    for rid, doc, meta in zip(ids, upd["documents"], upd["metadatas"], strict=True):
        model.rows[rid] = Row(model.rows[rid].vector, doc, meta)
    touched |= set(ids)
    gone = py.sample(sorted(model.rows), 8)
    assert next(w).call(op="delete", ids=gone) == len(gone)
    for rid in gone:
        del model.rows[rid]
    return touched | set(gone)


def at_once(children: list[Child], cmds: list[dict[str, Any]], round_: int) -> list[str]:
    """Send each child its command before reading any reply (so they run at the same time); returns
    the errors."""
    for child, cmd in zip(children, cmds, strict=True):
        child.send(**cmd)
    errors = []
    for child, cmd in zip(children, cmds, strict=True):
        reply = child.recv()
        if not reply["ok"]:
            errors.append(
                f"round {round_} {child.name}: {cmd['op']} raised {reply['error']}: {reply['message']}"
            )
    return errors


@pytest.mark.slow
def test_rounds_every_process_sees_the_committed_state(tmp_path: Path, spawn: Any) -> None:
    """Rounds of writes by one child, by a process that writes and exits, and racing checkpoints; after
    each round every child (and a fresh open) sees exactly the committed state."""
    data = str(tmp_path / "data")
    children = [spawn(n) for n in ("A", "B", "C")]
    for child in children:
        child.call(op="open", path=data, name="c", dim=DIM, index_threshold=THRESHOLD)
    model = Model(seed=12)
    first = model.make(model.new_ids(150))
    assert children[0].call(op="put", mode="add", **first) == "hnsw"
    model.apply_put(first)
    # every round's findings are kept and reported together: the first one often hides the others
    findings = verify_all(children, model, set(), 0, fresh=True)

    for round_ in range(1, 19):
        scenario = SCENARIOS[round_ % len(SCENARIOS)]
        writer = children[round_ % 3]
        touched: set[str] = set()
        if scenario == "everyone writes, all checkpoint at once":
            touched |= write_mix(model, children)
            findings += at_once(children, [{"op": "checkpoint"}] * 3, round_)
        elif scenario == "one writes, then closes and reopens":
            touched |= write_mix(model, [writer])
            writer.call(op="reopen")
        elif scenario == "a process writes and exits":
            passer = spawn(f"transient{round_}")
            passer.call(op="open", path=data, name="c", dim=DIM, index_threshold=THRESHOLD)
            touched |= write_mix(model, [passer])
            assert passer.finish() == 0
        elif scenario == "one writes and checkpoints":
            touched |= write_mix(model, [writer])
            writer.call(op="checkpoint")
        elif scenario == "one writes":
            touched |= write_mix(model, [writer])
        else:  # two checkpoint while the third writes
            cmd = model.make(model.new_ids(10))
            others = [c for c in children if c is not writer]
            findings += at_once(
                [writer, *others],
                [{"op": "put", "mode": "add", **cmd}, {"op": "checkpoint"}, {"op": "checkpoint"}],
                round_,
            )
            model.apply_put(cmd)
            touched |= set(cmd["ids"])
        findings += verify_all(children, model, touched, round_, fresh=round_ % 3 == 1)
    _finish_all(children)
    assert not findings, _report(findings, "differences from the committed state")


@pytest.mark.slow
def test_drop_and_recreate_is_never_silently_empty(tmp_path: Path, spawn: Any) -> None:
    """A handle held while another process drops and re-creates its collection raises a typed error or
    sees the new collection; getting the collection again always sees the new one."""
    data = str(tmp_path / "data")
    a, b = spawn("A"), spawn("B")
    for child in (a, b):
        child.call(op="open", path=data, name="d", dim=DIM, index_threshold=20)
    old = Model(seed=5)
    cmd = old.make(old.new_ids(60))
    a.call(op="put", mode="add", **cmd)
    old.apply_put(cmd)
    a.call(op="checkpoint")
    problems = verify_all([a, b], old, set(), 0, fresh=False)

    a.call(op="drop", name="d")
    a.call(op="create", name="d", dim=DIM, index_threshold=20)
    a.call(op="handle", name="d")
    new = Model(seed=6)
    new.next_id = 30  # r30..r59 are ids of both collections (with other documents), r60.. only new
    cmd = new.make(new.new_ids(50))
    a.call(op="put", mode="add", **cmd)
    new.apply_put(cmd)
    new.ever |= old.ever  # reading an old id must give None now, not the dropped record

    probes = new.py.sample(sorted(new.rows), 10)
    ocmd, ids, queries = observe_cmd(new, probes)
    typed = frozenset({"CollectionNotFoundError", "ClosedError"})
    problems += check_observation(b.call(op="observe", **ocmd), new, ids, queries, "old handle", typed)
    b.call(op="handle", name="d")
    problems += check_observation(b.call(op="observe", **ocmd), new, ids, queries, "get_collection again")
    problems += check_observation(a.call(op="observe", **ocmd), new, ids, queries, "dropping process")
    assert not problems, _report(problems, "differences after drop and re-create")
    _finish_all([a, b])


@pytest.fixture(scope="module")
def free_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, dict[str, Any]]]:
    """Two processes write, checkpoint, reopen and search on their own for ``EMBEDDIX_STRESS_SECONDS``
    (8 by default); both must answer and exit 0 (no SIGBUS, no SIGABRT). Yields the data directory and
    each one's report (its final records and what it found wrong)."""
    tmp = tmp_path_factory.mktemp("free_run")
    children = [Child(n, tmp, child_env(EMBEDDIX_DURABILITY="full")) for n in ("P", "Q")]
    try:
        for child in children:
            child.call(op="open", path=str(tmp / "data"), name="f", dim=DIM, index_threshold=THRESHOLD)
        for i, child in enumerate(children):
            child.send(op="free_run", seconds=STRESS_SECONDS, prefix=child.name, seed=i)
        results = {}
        for child in children:
            reply = child.recv(timeout=STRESS_SECONDS + REPLY_TIMEOUT)
            assert reply["ok"], f"{child.name}: free_run raised {reply['error']}: {reply['message']}"
            results[child.name] = reply["result"]
        _finish_all(children)
        yield tmp / "data", results
    finally:
        for child in children:
            child.kill()


@pytest.mark.slow
def test_free_running_writers_checkpointers_and_searchers(free_run: tuple[Path, dict[str, Any]]) -> None:
    """Each free-running process checked every answer about its own records while the other wrote, and
    the final state is exactly what they wrote."""
    data, results = free_run
    problems = [f"{name}: {v}" for name, res in results.items() for v in res["violations"]]
    assert not problems, _report(problems, "violations while running")
    for name, res in results.items():
        assert res["ops"] > 50 and res["checkpoints"] > 0, f"{name} did too little to test anything: {res}"

    live = {rid: tuple(row) for res in results.values() for rid, row in res["live"].items()}
    deleted = [rid for res in results.values() for rid in res["deleted"]]
    with Embeddix.open(data) as db:
        col = db.get_collection("f")
        assert col.count() == len(live), f"count {col.count()}, {len(live)} records written"
        got = col.get(sorted(live), include_vectors=True)
        stale = [
            (rid, rec if rec is None else (rec.document, rec.metadata), live[rid])
            for rid, rec in zip(sorted(live), got, strict=True)
            if rec is None or (rec.document, rec.metadata) != (live[rid][0], live[rid][1])
        ]
        assert not stale, f"{len(stale)} records differ from what their writer wrote last: {stale[:3]}"
        assert all(rec is None for rec in col.get(deleted)), "a deleted record is back"
        for rec in got[:: max(1, len(got) // 40)]:
            assert rec is not None and rec.vector is not None
            for cache in (True, False):
                hit = col.search(rec.vector, 1, cache=cache)[0]
                assert (hit.id, hit.document) == (rec.id, rec.document), (rec.id, hit)


@pytest.mark.slow
def test_free_running_leaves_no_ghosts(free_run: tuple[Path, dict[str, Any]]) -> None:
    """The directory the free-running processes left opens with as many indexed records as stored ones."""
    data, results = free_run
    written = sum(len(res["live"]) for res in results.values())
    with Embeddix.open(data) as db:
        col = db.get_collection("f")
        assert (len(col), col.count()) == (written, written), (
            f"len {len(col)}, count {col.count()}, {written} records written"
        )


@pytest.mark.slow
def test_free_running_filtered_hits_match_their_filter(free_run: tuple[Path, dict[str, Any]]) -> None:
    """Every filtered hit's metadata matched the filter, the other process's records included."""
    _, results = free_run
    skews = [f"{name}: {v}" for name, res in results.items() for v in res["skews"]]
    assert not skews, _report(skews, "filtered hits that do not match their filter")
