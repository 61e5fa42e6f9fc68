"""The ``embeddix`` command end to end: each command runs in a subprocess, as a user would run it.

The hash embedder (``--embedder hash``) keeps every run fast and offline; ``search`` finds it by itself,
from the model the collection records. What a command stored is checked through the Python API.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from embeddix_core import Embeddix
from embeddix_core.cli import main

COMMANDS = ("ingest", "search", "ls", "stats", "export", "import", "backup", "restore", "serve", "bench")
LONG_TEXT = " ".join(f"Sentence number {i} talks about topic {i % 7}." for i in range(60))


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("EMBEDDIX_")}
    # one BLAS / OpenMP thread: the machine is shared, and these runs embed a handful of texts
    env.update(OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1")
    return env


def embeddix(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Run ``python -m embeddix_core.cli ARGS`` in ``cwd``."""
    return subprocess.run(
        [sys.executable, "-m", "embeddix_core.cli", *args],
        cwd=cwd,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )


def search_json(cwd: Path, data: str, collection: str, query: str, *extra: str) -> list[dict[str, Any]]:
    res = embeddix(cwd, "search", query, "-c", collection, "--data", data, "--json", *extra)
    assert res.returncode == 0, res.stderr
    hits: list[dict[str, Any]] = json.loads(res.stdout)
    return hits


def make_folder(root: Path) -> Path:
    docs = root / "docs"
    (docs / "sub").mkdir(parents=True)
    (docs / "fox.txt").write_text("The quick red fox jumps over the lazy dog.\n", encoding="utf-8")
    (docs / "sub" / "notes.md").write_text("# Notes\n\nCats sleep most of the day.\n", encoding="utf-8")
    (docs / "long.md").write_text(LONG_TEXT, encoding="utf-8")
    (docs / "good.jsonl").write_text(
        '{"id": "g1", "text": "Penguins live in the south.", "metadata": {"year": 2020}}\n'
        "\n"
        '{"id": "g2", "text": "Owls hunt at night.", "metadata": {"year": 2024}}\n',
        encoding="utf-8",
    )
    # line 1 is fine, line 2 is not: nothing of this file may be stored
    (docs / "bad.jsonl").write_text(
        '{"id": "b1", "text": "A valid line before the bad one."}\n{"id": "b2", "text": \n',
        encoding="utf-8",
    )
    (docs / "table.csv").write_text(
        "id,text,tag\nc1,Bread is baked in an oven.,food\nc2,Rivers flow to the sea.,nature\n",
        encoding="utf-8",
    )
    (docs / "image.png").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)))
    (docs / ".hidden.txt").write_text("never read", encoding="utf-8")
    return docs


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, subprocess.CompletedProcess[str]]:
    """A folder ingested into ``data`` / ``docs`` with chunk size 200; the first run's result."""
    root = tmp_path_factory.mktemp("cli")
    make_folder(root)
    first = embeddix(
        root, "ingest", "docs", "-c", "docs", "--data", "data", "--embedder", "hash", "--chunk-size", "200",
        "--progress",
    )  # fmt: skip
    return root, first


def stored(root: Path, data: str = "data", name: str = "docs") -> dict[str, Any]:
    with Embeddix.open(root / data) as db:
        return {r.id: r for r in db.get_collection(name).scan()}


def test_ingest_stores_good_files_and_reports_bad_ones_with_path_and_line(
    workdir: tuple[Path, subprocess.CompletedProcess[str]],
) -> None:
    root, res = workdir
    assert res.returncode == 1, res.stderr  # a file was skipped: the run says so
    err = res.stderr
    assert "bad.jsonl:2:" in err
    assert "image.png:" in err and "UTF-8" in err
    assert "rec/s" in err  # the progress bar's rate
    assert err.strip().splitlines()[-1].startswith("embeddix: error: 2 file(s) could not be ingested")
    recs = stored(root)
    sources = {r.metadata["source"] for r in recs.values()}
    assert sources == {"fox.txt", "sub/notes.md", "long.md", "good.jsonl", "table.csv"}
    assert "b1" not in recs  # the valid line of the bad file: nothing of it is half-ingested
    assert recs["g2"].metadata["year"] == 2024 and recs["g2"].metadata["line"] == 3
    assert recs["c1"].metadata["tag"] == "food" and recs["c1"].document == "Bread is baked in an oven."
    chunks = sorted(
        (r for r in recs.values() if r.metadata["source"] == "long.md"), key=lambda r: r.metadata["chunk"]
    )
    assert len(chunks) > 3 and all(len(r.document) <= 200 for r in chunks)
    assert [r.metadata["chunk"] for r in chunks] == list(range(len(chunks)))
    assert f"{len(recs)} chunk(s) stored, 0 already stored" in res.stdout


def test_rerun_skips_what_is_stored(workdir: tuple[Path, subprocess.CompletedProcess[str]]) -> None:
    root, _ = workdir
    before = stored(root)
    res = embeddix(root, "ingest", "docs", "-c", "docs", "--data", "data", "--chunk-size", "200")
    assert res.returncode == 1  # the bad files are still bad
    assert f"0 chunk(s) stored, {len(before)} already stored" in res.stdout
    assert stored(root).keys() == before.keys()


def test_search_json_lists_hits_with_id_score_document_metadata(
    workdir: tuple[Path, subprocess.CompletedProcess[str]],
) -> None:
    root, _ = workdir
    hits = search_json(root, "data", "docs", "The quick red fox jumps over the lazy dog.", "-k", "3")
    assert len(hits) == 3
    assert all(set(h) == {"id", "score", "document", "metadata"} for h in hits)
    assert hits[0]["metadata"]["source"] == "fox.txt" and hits[0]["score"] == pytest.approx(1.0, abs=1e-4)
    assert [h["score"] for h in hits] == sorted((h["score"] for h in hits), reverse=True)
    filtered = search_json(root, "data", "docs", "animals", "--filter", '{"year": {"$gte": 2021}}')
    assert [h["id"] for h in filtered] == ["g2"]


def test_ls_and_stats(workdir: tuple[Path, subprocess.CompletedProcess[str]]) -> None:
    root, _ = workdir
    count = len(stored(root))
    res = embeddix(root, "ls", "--data", "data", "--json")
    assert res.returncode == 0, res.stderr
    (row,) = json.loads(res.stdout)
    assert row["name"] == "docs" and row["count"] == count and row["dim"] == 384
    assert row["model"] == "hash-384-v1" and row["index"] in ("exact", "hnsw") and row["bytes"] > 0
    res = embeddix(root, "stats", "docs", "--data", "data", "--json")
    assert res.returncode == 0, res.stderr
    st = json.loads(res.stdout)
    assert st["count"] == count and "cache" in st and "calibration" in st
    table = embeddix(root, "ls", "--data", "data")
    assert table.returncode == 0 and table.stdout.splitlines()[0].split()[:3] == ["name", "count", "dim"]


def test_export_then_import_into_a_fresh_directory_searches_the_same(
    workdir: tuple[Path, subprocess.CompletedProcess[str]],
) -> None:
    root, _ = workdir
    res = embeddix(root, "export", "docs", "exported", "--data", "data")
    assert res.returncode == 0, res.stderr
    manifest = json.loads((root / "exported" / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["format"] == "embeddix-collection-export" and manifest["format_version"] == 1
    assert manifest["count"] == len(stored(root)) and manifest["dim"] == 384
    assert set(manifest["files"]) == {"records.jsonl", "vectors.npy"}
    res = embeddix(root, "import", "exported", "--data", "fresh", "--as", "copy")
    assert res.returncode == 0, res.stderr
    for query in ("red fox", "topic 3"):
        assert search_json(root, "fresh", "copy", query, "-k", "5") == search_json(
            root, "data", "docs", query, "-k", "5"
        )
    again = embeddix(root, "import", "exported", "--data", "fresh", "--as", "copy")
    assert again.returncode == 1 and "already exists" in again.stderr


def test_import_refuses_a_damaged_export(workdir: tuple[Path, subprocess.CompletedProcess[str]]) -> None:
    root, _ = workdir
    assert embeddix(root, "export", "docs", "damaged", "--data", "data").returncode == 0
    vectors = root / "damaged" / "vectors.npy"
    raw = bytearray(vectors.read_bytes())
    raw[-1] ^= 0xFF
    vectors.write_bytes(bytes(raw))
    res = embeddix(root, "import", "damaged", "--data", "fresh2")
    assert res.returncode == 1 and "vectors.npy" in res.stderr and "damaged" in res.stderr
    with Embeddix.open(root / "fresh2") as db:
        assert db.list_collections() == []


def test_user_error_exits_1_with_one_line_and_usage_error_exits_2(
    workdir: tuple[Path, subprocess.CompletedProcess[str]],
) -> None:
    root, _ = workdir
    missing = embeddix(root, "search", "x", "-c", "nope", "--data", "data")
    assert missing.returncode == 1
    assert len(missing.stderr.strip().splitlines()) == 1 and missing.stderr.startswith("embeddix: error:")
    assert "'nope'" in missing.stderr
    usage = embeddix(root, "search", "x", "--no-such-option")
    assert usage.returncode == 2 and "No such option" in usage.stderr
    bench = embeddix(root, "bench")
    assert bench.returncode == 1 and "issue #19" in bench.stderr


@pytest.mark.parametrize("command", [*COMMANDS, None])
def test_help_everywhere(command: str | None, capsys: pytest.CaptureFixture[str]) -> None:
    if command == "serve":
        pytest.importorskip("mcp")  # serve hands --help to embeddix-mcp
        with pytest.raises(SystemExit) as exit_info:  # argparse's --help exits
            main(["serve", "--help"])
        assert exit_info.value.code == 0
        assert "--transport" in capsys.readouterr().out
        return
    assert main([command, "--help"] if command else ["--help"]) == 0
    assert "Usage: embeddix" in capsys.readouterr().out


_WRITER = """
import sys
from pathlib import Path
from embeddix_core import Embeddix

data, stop = Path(sys.argv[1]), Path(sys.argv[2])
with Embeddix.open(data) as db:
    col = db.get_or_create_collection("log", dim=4)
    i = 0
    while not stop.exists():
        col.add(f"w{i}", [1.0, float(i), 0.0, 1.0])
        print(f"w{i}", flush=True)  # printed only once add() returned: acknowledged, committed
        i += 1
"""


def test_backup_during_a_write_loop_then_restore_keeps_every_acknowledged_write(tmp_path: Path) -> None:
    stop = tmp_path / "stop"
    writer = subprocess.Popen(
        [sys.executable, "-c", _WRITER, str(tmp_path / "live"), str(stop)],
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    acked: list[str] = []
    reader = threading.Thread(target=lambda: acked.extend(line.strip() for line in writer.stdout or ()))
    reader.start()
    try:
        deadline = time.monotonic() + 60
        while len(acked) < 20:
            assert writer.poll() is None, writer.stderr.read() if writer.stderr else ""
            assert time.monotonic() < deadline, "the writer acknowledged fewer than 20 writes in 60 s"
            time.sleep(0.05)
        before = list(acked)  # every id acknowledged before the backup starts
        res = embeddix(tmp_path, "backup", "live", "bk")
        assert res.returncode == 0, res.stderr
        assert writer.poll() is None  # the writer ran through the whole backup
    finally:
        stop.touch()
        writer.wait(timeout=60)
        reader.join(timeout=60)
    assert writer.returncode == 0
    res = embeddix(tmp_path, "restore", "bk", "restored")
    assert res.returncode == 0, res.stderr
    with Embeddix.open(tmp_path / "restored") as db:
        col = db.get_collection("log")
        assert all(rec is not None for rec in col.get(before, include_vectors=False))
        ids = {r.id for r in col.scan()}
    assert ids <= set(acked)  # and nothing that was never written
    assert embeddix(tmp_path, "restore", "bk", "restored").returncode == 1  # never overwrites
