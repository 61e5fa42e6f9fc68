"""I/O errors: ENOSPC and EIO on write and on fsync.

Two mechanisms, both real system-call failures seen by SQLite, hnswlib and Python alike:

* ENOSPC on write: the data directory lives on a 2 MiB tmpfs (``mount -t tmpfs``; needs root and mount
  permission, else the test skips saying so) that a ballast file fills up; deleting it frees the space.
* EIO on write, EIO and ENOSPC on fsync: ``harness/faultfs.c``, an LD_PRELOAD shim (built with ``cc``;
  the test skips without a compiler) that fails write/pwrite/writev or fsync/fdatasync on files under the
  data directory while a trigger file exists.

The child (``harness/io_child.py``) writes 100 records, starts the fault, tries add, upsert, update,
delete, delete by filter and checkpoint, reads, ends the fault and writes again. Expected: each write
raises a typed ``StorageError`` or succeeds whole; reads keep working and show exactly the writes that
succeeded (nothing half-written); after the fault, writes work again; reopened in a fresh process, the
store holds exactly the writes that succeeded and the index agrees with it.

Each case runs once; two tests judge its report: ``test_io_error_leaves_the_store_consistent`` (everything
but the exception types) and ``test_io_error_raises_a_typed_storage_error``.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from durability.harness.zygote import ROOT, child_env

HERE = Path(__file__).resolve().parent / "harness"


_CASES = [
    pytest.param(("tmpfs", "write", 28, "exact"), id="ENOSPC-on-write-exact"),
    pytest.param(("tmpfs", "write", 28, "hnsw"), id="ENOSPC-on-write-hnsw"),
    pytest.param(("shim", "write", 5, "exact"), id="EIO-on-write-exact"),
    pytest.param(("shim", "write", 5, "hnsw"), id="EIO-on-write-hnsw"),
    pytest.param(("shim", "fsync", 5, "exact"), id="EIO-on-fsync-exact"),
    pytest.param(("shim", "fsync", 5, "hnsw"), id="EIO-on-fsync-hnsw"),
    pytest.param(("shim", "fsync", 28, "hnsw"), id="ENOSPC-on-fsync-hnsw"),
]
_REPORTS: dict[tuple[str, str, int, str], dict[str, Any]] = {}


def _shim(root: Path) -> Path:
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        pytest.skip("no C compiler (cc/gcc) to build the LD_PRELOAD fault shim")
    out = root / "faultfs.so"
    if not out.exists():
        cmd = [cc, "-shared", "-fPIC", "-O2", "-o", str(out), str(HERE / "faultfs.c"), "-ldl"]
        subprocess.run(cmd, check=True)
    return out


@contextlib.contextmanager
def _small_tmpfs(mnt: Path) -> Iterator[Path]:
    mnt.mkdir()
    cmd = ["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mnt)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root and mount permission): {proc.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def _python(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "durability.harness.io_child", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=str(ROOT),
        timeout=120,
    )


def _run_case(root: Path, data: Path, on: str, off: str, index: str, env: dict[str, str]) -> dict[str, Any]:
    proc = _python([str(data), on, off, index], env)
    assert proc.returncode == 0, f"exit {proc.returncode}: {proc.stderr[-3000:]}"
    report: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    again = _python(["--reopen", str(data)], child_env())
    assert again.returncode in (0, 10), f"reopening: exit {again.returncode}: {again.stderr[-3000:]}"
    report["reopened"] = json.loads(again.stdout.strip().splitlines()[-1])
    return report


@pytest.fixture
def report(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    mechanism, op, errno, index = request.param
    key = (mechanism, op, errno, index)
    if key not in _REPORTS:
        root = tmp_path_factory.mktemp(f"io-{mechanism}-{op}-{errno}-{index}")
        if mechanism == "tmpfs":
            with _small_tmpfs(root / "mnt") as mnt:
                data, ballast = mnt / "data", mnt / "ballast"
                on = f"dd if=/dev/zero of={ballast} bs=4096 2>/dev/null; true"
                _REPORTS[key] = _run_case(root, data, on, f"rm -f {ballast}", index, child_env())
        else:
            data, trigger = root / "data", root / "fault-on"
            env = child_env(
                LD_PRELOAD=str(_shim(root)),
                FAULT_OP=op,
                FAULT_ERRNO=str(errno),
                FAULT_PATH=str(data),
                FAULT_TRIGGER=str(trigger),
            )
            _REPORTS[key] = _run_case(root, data, f"touch {trigger}", f"rm -f {trigger}", index, env)
    return _REPORTS[key]


def _expected(ops: dict[str, str]) -> set[str]:
    """The ids stored after the ops that reported success (``io_child`` runs them in this order)."""
    meta: dict[str, dict[str, int]] = {f"r{i}": {"g": i % 5} for i in range(100)}
    meta.update({f"p{i}": {} for i in range(10)})
    if ops["add"] == "ok":
        meta.update({f"n{i}": {} for i in range(100, 300)})
    if ops["upsert"] == "ok":
        meta.update({"r1": {}, "new-1": {}})
    if ops["update"] == "ok":
        meta["r2"] = {"g": 9}
    if ops["delete"] == "ok":
        del meta["r3"], meta["r4"]
    if ops["delete_where"] == "ok":
        meta = {k: v for k, v in meta.items() if v.get("g") != 1}
    return set(meta)


def _succeeded(outcome: str) -> bool:
    return outcome == "ok"


@pytest.mark.slow
@pytest.mark.parametrize("report", _CASES, indirect=True)
def test_io_error_leaves_the_store_consistent(report: dict[str, Any]) -> None:
    ops = report["ops"]
    assert any(v != "ok" for v in ops.values()), f"the fault never reached a write: {ops}"
    want = _expected(ops)
    during = report["during"]
    assert "error" not in during, f"reads failed during the fault: {during['error']}"
    got = set(during["ids"])
    assert got == want, (
        f"half-written or lost: extra {sorted(got - want)[:5]}, missing {sorted(want - got)[:5]}"
    )
    assert during["count"] == during["len"] == len(want)
    assert during["r1_vector_kept"] == (ops["upsert"] != "ok")
    assert not during["self_misses"], during["self_misses"][:5]
    after = report["after"]
    assert "error" not in after, f"writes did not recover after the fault: {after['error']}"
    assert after["count"] == after["len"] == len(want) + 50 and after["late_found"] == 50
    again = report["reopened"]
    assert "typed" not in again, f"the store no longer opens after the fault: {again}"
    final = want | {f"late{i}" for i in range(50)}
    ids = set(again["ids"])
    assert ids == final, (
        f"after reopening: extra {sorted(ids - final)[:5]}, missing {sorted(final - ids)[:5]}"
    )
    assert again["len"] == again["count"] == len(final)


@pytest.mark.slow
@pytest.mark.parametrize("report", _CASES, indirect=True)
def test_io_error_raises_a_typed_storage_error(report: dict[str, Any]) -> None:
    bad = {k: v for k, v in report["ops"].items() if v != "ok" and not v.startswith("typed:")}
    assert not bad, f"writes under I/O errors must raise a typed StorageError: {bad}"
