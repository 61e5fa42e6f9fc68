"""Damaged files: truncated, bit-flipped, zeroed and swapped snapshots, manifests, calibration, WAL, database.

Two data directories ("A" and "B") each hold two HNSW collections, "a" and "b", of 300 records (ids
prefixed with the collection's name, different vectors everywhere), closed cleanly (snapshots, manifests
and calibration files written), and then 20 more records per collection committed and left in the WAL
by a process that exits without closing. Each case damages one file of A (or swaps it with collection
b's or with directory B's copy) and opens A in a subprocess (``harness/open_check.py``).

Expected: the open either succeeds and answers correctly (a damaged index is rebuilt from the store with a
RuntimeWarning: ``len(col) == col.count()``, no record of another collection or directory in any search,
every record finds itself) or raises a typed ``StorageError`` / ``CorruptionError``; never death by a
signal, never a raw exception. Damage SQLite cannot see (it keeps no checksums of database pages, and
ignores WAL frames after the first bad checksum) may change or drop records silently: then the answers
must still agree with what the store holds.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from durability.harness.open_check import MISMATCH_EXIT, TYPED_EXIT
from durability.harness.zygote import ROOT, child_env

from embeddix_core import Embeddix

TARGETS = ("snapshot", "manifest", "snapshot_dir", "calibration", "wal", "sqlite")
DAMAGES = ("truncate", "bitflip", "zero", "swap_collections", "swap_dirs")

# cases that fail today: (target, damage) -> why (each is reported to the lead with a reproducer)
KNOWN: dict[tuple[str, str], str] = {
    ("wal", "swap_dirs"): "B's WAL is replayed into A's database (SQLite checks a WAL against its own "
    "header only); the store changes under A's index snapshots, which are still used",
    ("sqlite", "bitflip"): "since the feedback tables (#17) moved the pages, one of the eight fixed flips "
    "lands in a records page SQLite reads without complaint: scan() then misses one of the collection's "
    "320 records that search still finds by label. SQLite keeps no page checksums (its cksumvfs "
    "extension would detect this); the store runs no integrity_check at open",
}

_ADD_TO_WAL = textwrap.dedent(
    """
    import os, sys, numpy as np
    from embeddix_core import Embeddix
    db = Embeddix.open(sys.argv[1])
    for j, name in enumerate(("a", "b")):
        x = np.random.default_rng(int(sys.argv[2]) * 10 + j + 5).standard_normal((20, 16)).astype("float32")
        db.get_collection(name).add([f"{name}-{sys.argv[3]}-w{i}" for i in range(20)], x)
    os._exit(0)  # no close: the 40 records stay in the WAL
    """
)


def _build(data: Path, seed: int, tag: str) -> None:
    with Embeddix.open(data) as db:
        for j, name in enumerate(("a", "b")):
            col = db.create_collection(name, dim=16, index_threshold=100)
            x = np.random.default_rng(seed * 10 + j).standard_normal((300, 16)).astype(np.float32)
            col.add([f"{name}-{tag}-{i}" for i in range(300)], x, metadatas=[{"i": i} for i in range(300)])
            assert col.calibrate(sample=20) is not None
    subprocess.run(
        [sys.executable, "-c", _ADD_TO_WAL, str(data), str(seed), tag], check=True, env=child_env()
    )
    assert (data / "embeddix.sqlite3-wal").stat().st_size > 0


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("damaged")
    _build(root / "A", 1, "A")
    _build(root / "B", 2, "B")
    return root


def _files(data: Path, target: str, cid: int) -> list[Path]:
    d = data / "indexes" / str(cid)
    if target == "snapshot":
        return sorted(d.glob("hnsw-*.bin"))
    if target == "manifest":
        return [d / "manifest.json"]
    if target == "snapshot_dir":
        return sorted(p for p in d.iterdir() if p.name != "calibration.json")
    if target == "calibration":
        return [d / "calibration.json"]
    if target == "wal":
        return [data / "embeddix.sqlite3-wal"]
    return [data / "embeddix.sqlite3"]


def _damage(path: Path, how: str) -> None:
    raw = bytearray(path.read_bytes())
    n = len(raw)
    if how == "truncate":
        path.write_bytes(bytes(raw[: n // 2]))
    elif how == "zero":
        # a zeroed range in the middle (a lost block), not the whole file
        lo, hi = n // 3, min(n, n // 3 + 4096)
        raw[lo:hi] = bytes(hi - lo)
        path.write_bytes(bytes(raw))
    else:
        for i in range(1, 9):  # eight bits spread over the file, at fixed places
            raw[(n * i) // 9] ^= 1 << (i % 8)
        path.write_bytes(bytes(raw))


def _apply(root: Path, work: Path, target: str, how: str) -> None:
    data = work / "A"
    if how in ("truncate", "bitflip", "zero"):
        for path in _files(data, target, 1)[:1] if target == "snapshot_dir" else _files(data, target, 1):
            _damage(path, how)
        return
    if how == "swap_collections":
        a, b = _files(data, target, 1), _files(data, target, 2)
        tmp = work / "swap"
        tmp.mkdir()
        for p in a:
            p.rename(tmp / p.name)
        for p in b:
            p.rename(a[0].parent / p.name)
        for p in tmp.iterdir():
            p.rename(b[0].parent / p.name)
        return
    # swap_dirs: directory B's copy replaces A's (a backup restored into the wrong place)
    mine, theirs = _files(data, target, 1), _files(work / "B", target, 1)
    for p in mine:
        p.unlink()
    for p in theirs:
        shutil.copy2(p, mine[0].parent / p.name)


def _cases() -> list[object]:
    out: list[object] = []
    for target in TARGETS:
        for how in DAMAGES:
            if how == "swap_collections" and target in ("wal", "sqlite"):
                continue  # one database per directory: nothing to swap within it
            marks = []
            if (target, how) in KNOWN:
                marks.append(pytest.mark.xfail(reason=KNOWN[(target, how)], strict=True))
            out.append(pytest.param(target, how, marks=marks, id=f"{target}-{how}"))
    return out


def _open_check(data: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "durability.harness.open_check", str(data)],
        capture_output=True,
        text=True,
        env=child_env(),
        cwd=str(ROOT),
        timeout=120,
    )


def _judge(proc: subprocess.CompletedProcess[str]) -> None:
    detail = f"exit {proc.returncode}\nstdout: {proc.stdout[-3000:]}\nstderr: {proc.stderr[-3000:]}"
    assert proc.returncode >= 0, f"the open died by signal {-proc.returncode}: {detail}"
    assert proc.returncode in (0, TYPED_EXIT), (
        "answers disagree with the store: " if proc.returncode == MISMATCH_EXIT else "raw exception: "
    ) + detail
    if proc.returncode == TYPED_EXIT:
        assert proc.stdout.startswith("TYPED "), detail


@pytest.mark.slow
@pytest.mark.parametrize(("target", "how"), _cases())
def test_damaged_file_is_rebuilt_or_refused(template: Path, tmp_path: Path, target: str, how: str) -> None:
    work = tmp_path / "w"
    shutil.copytree(template, work)
    _apply(template, work, target, how)
    proc = _open_check(work / "A")
    _judge(proc)
    if proc.returncode == 0 and target in ("snapshot", "manifest", "snapshot_dir"):
        result = json.loads(proc.stdout)
        warned = " ".join(result["warnings"])
        assert "RuntimeWarning" in warned, f"a damaged {target} was used without a warning: {result}"


@pytest.mark.slow
def test_store_restored_from_backup_with_newer_indexes_left_in_place(tmp_path: Path) -> None:
    """A backup of embeddix.sqlite3 copied back over a directory whose indexes/ moved on since."""
    data = tmp_path / "data"
    x = np.random.default_rng(3).standard_normal((400, 16)).astype(np.float32)
    with Embeddix.open(data) as db:
        db.create_collection("a", dim=16, index_threshold=100).add([f"a-{i}" for i in range(300)], x[:300])
    backup = tmp_path / "backup.sqlite3"
    shutil.copy2(data / "embeddix.sqlite3", backup)
    with Embeddix.open(data) as db:
        col = db.get_collection("a")
        col.add([f"a-late-{i}" for i in range(100)], x[300:])
        col.delete([f"a-{i}" for i in range(50)])
    for suffix in ("", "-wal", "-shm"):
        (data / f"embeddix.sqlite3{suffix}").unlink(missing_ok=True)
    shutil.copy2(backup, data / "embeddix.sqlite3")
    _judge(_open_check(data))


def test_open_check_reports_a_clean_directory(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with Embeddix.open(data) as db:
        x = np.random.default_rng(4).standard_normal((150, 16)).astype(np.float32)
        db.create_collection("a", dim=16, index_threshold=100).add([f"a-{i}" for i in range(150)], x)
    proc = _open_check(data)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert json.loads(proc.stdout)["a"]["self_hits"] == 150
