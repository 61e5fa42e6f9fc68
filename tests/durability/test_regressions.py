"""Regression tests for the defects of issue #12 found on main (each failed before its fix).

Deterministic where the defect allows it: the races are forced by hooking the point where the other
writer must land. The free-running stress versions live in tests/concurrency/.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
import textwrap
import threading
import warnings
from pathlib import Path

import numpy as np
import pytest

from embeddix_core import CollectionNotFoundError, CorruptionError, Embeddix, EmbeddixError

ROOT = Path(__file__).resolve().parents[2]
DIM = 8


def _vecs(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, DIM)).astype(np.float32)


def _hnsw(db: Embeddix, name: str = "c") -> object:
    return db.get_or_create_collection(name, dim=DIM, index_threshold=50)


def _run(code: str) -> str:
    script = f"import sys\nsys.path.insert(0, {str(ROOT)!r})\n" + textwrap.dedent(code)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return out.stdout


# -- 1. WAL index: SQLite's locks on -shm must survive Embeddix's open ------------------------------------
def _posix_locks_on(path: Path) -> int:
    ino = os.stat(path).st_ino
    pid = os.getpid()
    n = 0
    for line in Path("/proc/locks").read_text().splitlines():
        parts = line.split()
        # "1: POSIX  ADVISORY  READ 1234 fd:01:5678 128 128"
        if (
            len(parts) >= 6
            and parts[1] == "POSIX"
            and parts[4] == str(pid)
            and int(parts[5].split(":")[-1]) == ino
        ):
            n += 1
    return n


@pytest.mark.skipif(not Path("/proc/locks").exists(), reason="needs Linux /proc/locks")
def test_open_keeps_sqlite_wal_index_locks(tmp_path: Path) -> None:
    """Closing any descriptor of -shm drops the process's POSIX locks on it (defect 1: SIGBUS in COMMIT)."""
    with Embeddix.open(tmp_path / "d") as db:
        col = db.create_collection("c", dim=DIM)
        col.add(["a"], _vecs(1))
        col.search(_vecs(1)[0], k=1)
        shm = tmp_path / "d" / "embeddix.sqlite3-shm"
        assert _posix_locks_on(shm) >= 1, "SQLite's read lock on the WAL index was dropped"


# -- 2. stale results after another process writes and closes ---------------------------------------------
def test_no_stale_results_after_other_process_writes_and_closes(tmp_path: Path) -> None:
    path = tmp_path / "d"
    x = _vecs(200)
    with Embeddix.open(path) as db:
        col = db.create_collection("c", dim=DIM, index_threshold=50)
        col.add(
            [str(i) for i in range(200)],
            x,
            documents=[f"doc {i}" for i in range(200)],
            metadatas=[{"g": i % 2} for i in range(200)],
        )
        # warm every cache this process has: rows, filters, results
        for i in (3, 4, 5):
            col.search(x[i], k=5)
            col.search(x[i], k=5, filter={"g": 1})
        _run(
            f"""
            from embeddix_core import Embeddix
            with Embeddix.open({str(path)!r}) as db:
                col = db.get_collection("c")
                col.delete(["3"])
                col.update(["4"], documents=["changed"])
                col.update(["5"], metadatas=[{{"g": 0}}])
            """
        )
        for cache in (True, False):
            assert "3" not in {h.id for h in col.search(x[3], k=5, cache=cache)}
            assert col.search(x[4], k=1, cache=cache)[0].document == "changed"
            assert "5" not in {h.id for h in col.search(x[5], k=5, filter={"g": 1}, cache=cache)}
        assert col.get("3") is None and len(col) == col.count() == 199


# -- 3. filtered searches racing writes -------------------------------------------------------------------
def test_filter_label_set_read_during_a_write_is_not_cached(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A write landing while a search reads a filter's labels from the store must not be lost for good."""
    with Embeddix.open(tmp_path / "d") as db:
        col = db.create_collection("c", dim=DIM, index_threshold=50)
        x = _vecs(300)
        col.add([str(i) for i in range(300)], x, metadatas=[{"g": 1}] * 300)
        store = col._store  # type: ignore[attr-defined]
        original = store.labels_where
        fired = []

        def labels_where(*args: object, **kwargs: object) -> list[int]:
            got = original(*args, **kwargs)  # read before the write commits
            if not fired:
                fired.append(1)
                t = threading.Thread(
                    target=col.add, args=(["new"], x[0] + 0.001), kwargs={"metadatas": [{"g": 1}]}
                )
                t.start()
                t.join()
            return got

        monkeypatch.setattr(store, "labels_where", labels_where)
        col.search(x[0], k=3, filter={"g": 1}, cache=False)
        monkeypatch.setattr(store, "labels_where", original)
        assert "new" in {h.id for h in col.search(x[0], k=3, filter={"g": 1}, cache=False)}


def test_filter_array_is_sorted_and_never_changed_after_publication() -> None:
    from embeddix_core.query.filter_cache import FilterEntry as _FilterEntry
    from embeddix_core.query.filters import parse_filter

    flt = parse_filter({"g": 1})
    assert flt is not None
    entry = _FilterEntry(flt, [9, 3, 7, 1])
    arr = entry.array()
    assert arr.tolist() == [1, 3, 7, 9]
    entry.update(5, {"g": 1})
    assert arr.tolist() == [1, 3, 7, 9], "a published array was modified in place"
    assert entry.array().tolist() == [1, 3, 5, 7, 9]


# -- 4. index snapshot ahead of, or foreign to, the store --------------------------------------------------
def _two_collections(path: Path) -> tuple[np.ndarray, np.ndarray]:
    a, b = _vecs(300, 1), _vecs(120, 2) + 5.0
    with Embeddix.open(path) as db:
        db.create_collection("a", dim=DIM, index_threshold=50).add([f"a{i}" for i in range(300)], a)
        db.create_collection("b", dim=DIM, index_threshold=50).add([f"b{i}" for i in range(120)], b)
    return a, b


def test_snapshot_of_another_collection_is_never_adopted(tmp_path: Path) -> None:
    path = tmp_path / "d"
    a, _ = _two_collections(path)
    ia, ib = path / "indexes" / "1", path / "indexes" / "2"
    tmp = tmp_path / "swap"
    shutil.move(str(ia), str(tmp))
    shutil.move(str(ib), str(ia))
    shutil.move(str(tmp), str(ib))
    with pytest.warns(RuntimeWarning, match="rebuilding"), Embeddix.open(path) as db:
        col = db.get_collection("b")
        hits = col.search(a[0], k=50, cache=False)
        assert hits and all(h.id.startswith("b") for h in hits)
        assert len(col) == col.count() == 120
        assert db.get_collection("a").search(a[7], k=1)[0].id == "a7"


def test_new_store_never_adopts_old_index_files(tmp_path: Path) -> None:
    path = tmp_path / "d"
    _two_collections(path)
    for f in path.glob("embeddix.sqlite3*"):
        f.unlink()
    x = _vecs(40, 3)
    with Embeddix.open(path) as db:
        col = db.create_collection("fresh", dim=DIM, index_threshold=20)
        col.add([f"f{i}" for i in range(40)], x)
        assert len(col) == col.count() == 40
        assert col.search(x[3], k=1)[0].id == "f3"


def test_store_restored_from_backup_rebuilds_newer_snapshot(tmp_path: Path) -> None:
    path = tmp_path / "d"
    x = _vecs(400, 4)
    with Embeddix.open(path) as db:
        db.create_collection("c", dim=DIM, index_threshold=50).add([str(i) for i in range(200)], x[:200])
    backup = tmp_path / "backup.sqlite3"
    shutil.copy(path / "embeddix.sqlite3", backup)  # closed: the WAL was checkpointed into the file
    with Embeddix.open(path) as db:
        col = db.get_collection("c")
        col.add([str(i) for i in range(200, 400)], x[200:])
        col.delete([str(i) for i in range(100)])
    for f in path.glob("embeddix.sqlite3*"):
        f.unlink()
    shutil.copy(backup, path / "embeddix.sqlite3")
    with pytest.warns(RuntimeWarning, match="rebuilding"), Embeddix.open(path) as db:
        col = db.get_collection("c")
        assert len(col) == col.count() == 200
        assert col.search(x[5], k=1)[0].id == "5"
        assert all(int(h.id) < 200 for h in col.search(x[300], k=20, cache=False))


def test_edited_manifest_sequence_is_detected(tmp_path: Path) -> None:
    path = tmp_path / "d"
    x = _vecs(300, 5)
    with Embeddix.open(path) as db:
        db.create_collection("c", dim=DIM, index_threshold=50).add([str(i) for i in range(290)], x[:290])
    with Embeddix.open(path) as db:  # ten more records after the snapshot: replayed by seq on open
        col = db.get_collection("c")
        col.add([str(i) for i in range(290, 300)], x[290:])
        col._stop_background()  # type: ignore[attr-defined]
        col._closed = True  # type: ignore[attr-defined]  # leave without a new snapshot
    manifest = path / "indexes" / "1" / "manifest.json"
    doc = json.loads(manifest.read_text())
    doc["seq"] += 1  # would hide the ten records from the replay
    manifest.write_text(json.dumps(doc))
    with pytest.warns(RuntimeWarning, match="CRC32"), Embeddix.open(path) as db:
        col = db.get_collection("c")
        assert len(col) == 300
        assert col.search(x[295], k=1)[0].id == "295"


# -- 5. several processes: snapshots, drops -----------------------------------------------------------------
def test_concurrent_checkpoints_of_two_handles(tmp_path: Path) -> None:
    path = tmp_path / "d"
    x = _vecs(600, 6)
    with Embeddix.open(path) as db:
        db.create_collection("c", dim=DIM, index_threshold=50).add([str(i) for i in range(300)], x[:300])
    dbs = [Embeddix.open(path), Embeddix.open(path)]
    cols = [db.get_collection("c") for db in dbs]
    errors: list[BaseException] = []

    def work(j: int) -> None:
        try:
            for r in range(15):
                base = 300 + 150 * j + 10 * r
                cols[j].add([str(i) for i in range(base, base + 10)], x[base : base + 10])
                cols[j].delete([str(base - 250)])
                cols[j].checkpoint()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(j,)) for j in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for db in dbs:
        db.close()
    assert not errors, errors
    with Embeddix.open(path) as db:
        col = db.get_collection("c")
        assert len(col) == col.count(), "ghost records in the snapshot"
        for rec in col.scan(include_vectors=True):
            assert rec.vector is not None
            assert col.search(rec.vector, k=1, cache=False)[0].id == rec.id


def test_handle_of_a_collection_dropped_elsewhere_is_not_silently_empty(tmp_path: Path) -> None:
    path = tmp_path / "d"
    x = _vecs(100, 7)
    with Embeddix.open(path) as db:
        old = db.create_collection("c", dim=DIM, index_threshold=50)
        old.add([str(i) for i in range(100)], x)
        old.search(x[0], k=1)
        _run(
            f"""
            import numpy as np
            from embeddix_core import Embeddix
            with Embeddix.open({str(path)!r}) as db:
                db.drop_collection("c")
                db.create_collection("c", dim={DIM}).add(["new"], np.ones({DIM}, np.float32))
            """
        )
        with pytest.raises(CollectionNotFoundError, match="dropped"):
            old.search(x[0], k=1)
        with pytest.raises(EmbeddixError):
            old.get("1")
        fresh = db.get_collection("c")
        assert fresh is not old and len(fresh) == 1 and fresh.get("new") is not None


# -- 6. exit without close -----------------------------------------------------------------------------------
@pytest.mark.slow
def test_exit_without_close_while_background_threads_run(tmp_path: Path) -> None:
    """Calibration and the index flush still running at exit aborted (SIGABRT) 2 runs in 6 on the old code."""
    code = textwrap.dedent(
        f"""
        import sys, time
        sys.path.insert(0, {str(ROOT)!r})
        from concurrent.futures import ThreadPoolExecutor
        import numpy as np
        from embeddix_core import Embeddix
        from embeddix_core.config import EmbeddixSettings
        s = EmbeddixSettings(calibration_min_count=100, calibration_quiet_s=0.0, write_buffer=64)
        db = Embeddix.open(sys.argv[1], settings=s)
        col = db.create_collection("c", dim=64, index_threshold=100)
        x = np.random.default_rng(0).standard_normal((8000, 64)).astype(np.float32)
        col.add([str(i) for i in range(8000)], x)
        with ThreadPoolExecutor(4) as pool:
            list(pool.map(lambda i: col.search(x[i], k=10), range(300)))
        col.add([f"n{{i}}" for i in range(200)], x[:200] + 0.01)  # a background flush is due
        time.sleep(float(sys.argv[2]))  # exit at different points of the background work
        print("exiting", flush=True)
        """
    )
    for i in range(4):  # the old code aborted around 0.5 s after the last write, here
        out = subprocess.run(
            [sys.executable, "-c", code, str(tmp_path / f"d{i}"), str(0.45 + i / 20)],
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert out.returncode == 0, (out.returncode, out.stderr[-2000:])
        assert "exiting" in out.stdout
    with Embeddix.open(tmp_path / "d0") as db:
        assert db.get_collection("c").count() == 8200


# -- 9. smaller: damaged store, a file for a directory -------------------------------------------------------
def test_damaged_database_pages_raise_corruption_error(tmp_path: Path) -> None:
    path = tmp_path / "d"
    with Embeddix.open(path) as db:
        col = db.create_collection("c", dim=DIM)
        col.add([str(i) for i in range(2000)], _vecs(2000, 8), documents=["x" * 200] * 2000)
    dbfile = path / "embeddix.sqlite3"
    size = dbfile.stat().st_size
    with open(dbfile, "r+b") as fh:  # garble pages in the middle (the header stays valid)
        for off in range(size // 3, 2 * size // 3, 4096):
            fh.seek(off)
            fh.write(os.urandom(512))
    with pytest.raises(CorruptionError), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with Embeddix.open(path) as db:
            col = db.get_collection("c")
            list(col.scan(include_vectors=True))
            col.search(None, k=5, text="x")


def test_not_a_database_raises_corruption_error(tmp_path: Path) -> None:
    path = tmp_path / "d"
    path.mkdir()
    (path / "embeddix.sqlite3").write_bytes(os.urandom(8192))
    with pytest.raises(CorruptionError):
        Embeddix.open(path)


def test_open_on_a_file_is_a_typed_error(tmp_path: Path) -> None:
    f = tmp_path / "afile"
    f.write_text("x")
    with pytest.raises(EmbeddixError, match="directory"):
        Embeddix.open(f)


def test_sqlite_errors_never_escape_raw(tmp_path: Path) -> None:
    with Embeddix.open(tmp_path / "d") as db:
        col = db.create_collection("c", dim=DIM)
        col.add(["a"], _vecs(1))
        conn = sqlite3.connect(tmp_path / "d" / "embeddix.sqlite3", timeout=0)
        conn.execute("BEGIN EXCLUSIVE")
        try:
            store = col._store  # type: ignore[attr-defined]
            store._busy_ms = 0
            store._conn.execute("PRAGMA busy_timeout=0")
            with pytest.raises(EmbeddixError):
                col.add(["b"], _vecs(1, 9))
        finally:
            conn.rollback()
            conn.close()
        assert col.get("b") is None and col.get("a") is not None


def test_a_foreign_sqlite_database_is_refused_untouched(tmp_path: Path) -> None:
    path = tmp_path / "d"
    path.mkdir()
    with sqlite3.connect(path / "embeddix.sqlite3") as conn:
        conn.execute("CREATE TABLE theirs(x)")
    with pytest.raises(EmbeddixError, match="not an Embeddix store"):
        Embeddix.open(path)
    with sqlite3.connect(path / "embeddix.sqlite3") as conn:
        assert [r[0] for r in conn.execute("SELECT name FROM sqlite_master")] == ["theirs"]


def test_collection_names_cannot_end_in_a_newline() -> None:
    with Embeddix.open(None) as db, pytest.raises(EmbeddixError):
        db.create_collection("agent:alice:x\n", dim=DIM)
