"""Data written by every shipped on-disk format, opened by today's code (issue #13).

Each directory in ``data/`` was written once by the Embeddix of its day (``make_golden.py``) and is never
regenerated; next to it, ``<name>.json`` holds the answers a correct engine gives, computed by brute force
from the records written. Every test works on a copy in ``tmp_path``: opening a directory writes to it
(a store id, a rebuilt snapshot, lock files), and the committed copy must stay as the old code left it.

HNSW answers are held to recall (the graph is approximate and was built on several threads); exact
answers, counts, records, filters and text searches are held to equality.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import sqlite3
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from embeddix_core import Collection, Embeddix, EmbeddixSettings, FormatVersionError, parse_filter
from embeddix_core.storage.snapshot import SNAPSHOT_FORMAT
from embeddix_core.storage.sqlite import FORMAT_VERSION

DATA = Path(__file__).parent / "data"
NAMES = ("mem", "notes")
MIN_RECALL = 0.95
# No background calibration: the tests check the calibration the golden directory carries.
SETTINGS = EmbeddixSettings(auto_calibrate=False)
REBUILD_WARNING = "ignoring the index snapshot and rebuilding it"


@dataclass(frozen=True)
class Expect:
    """What today's code does with a golden directory on its first open."""

    rebuilds_snapshot: bool  # the snapshot is not trusted: rebuilt from the store, with a RuntimeWarning


# One entry per golden directory: a new on-disk format version adds one (see README.md).
GOLDEN: dict[str, Expect] = {
    # store format 1, snapshot format 1 (fbbf674): its manifests name no store, so they are rebuilt once
    "store1-snap1": Expect(rebuilds_snapshot=True),
    # store format 1, snapshot format 2 (store id, snapshot id, manifest CRC): loaded as it is
    "store1-snap2": Expect(rebuilds_snapshot=False),
}
NEWEST = "store1-snap2"


def _answers(name: str) -> dict[str, Any]:
    return json.loads((DATA / f"{name}.json").read_text())


def _copy(name: str, dest: Path) -> Path:
    target = dest / name
    shutil.copytree(DATA / name, target)
    return target


def _warns_if(rebuilds: bool, match: str = REBUILD_WARNING) -> contextlib.AbstractContextManager[Any]:
    """Expect the rebuild warning, or no warning at all (pytest turns any warning into an error)."""
    return pytest.warns(RuntimeWarning, match=match) if rebuilds else contextlib.nullcontext()


def _open(path: Path) -> tuple[Embeddix, dict[str, Collection]]:
    db = Embeddix.open(path, settings=SETTINGS)
    try:
        return db, {name: db.get_collection(name) for name in NAMES}
    except BaseException:
        db.close()
        raise


def _ids(col: Collection, vector: Any = None, **kwargs: Any) -> list[str]:
    return [h.id for h in col.search(vector, cache=False, **kwargs)]


def _recall(found: list[list[str]], truth: list[list[str]]) -> float:
    hit = sum(len(set(f) & set(t)) for f, t in zip(found, truth, strict=True))
    return hit / max(1, sum(len(t) for t in truth))


def _manifest(data: Path, answers: dict[str, Any]) -> Path:
    return data / "indexes" / str(answers["written_by"]["collections"]["mem"]) / "manifest.json"


@pytest.fixture(scope="module", params=sorted(GOLDEN))
def golden(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[dict[str, Collection], dict[str, Any]]]:
    """One golden directory, copied and opened (read-only tests share it)."""
    name = request.param
    data = _copy(name, tmp_path_factory.mktemp("golden"))
    with _warns_if(GOLDEN[name].rebuilds_snapshot):
        db, cols = _open(data)
    try:
        yield cols, _answers(name)
    finally:
        db.close()


def test_every_golden_directory_is_listed_and_was_closed_cleanly() -> None:
    dirs = sorted(p.name for p in DATA.iterdir() if p.is_dir())
    assert dirs == sorted(GOLDEN), "each golden directory needs an entry in GOLDEN (see README.md)"
    for name in dirs:
        written = _answers(name)["written_by"]
        assert written["store_format_version"] <= FORMAT_VERSION
        assert written["snapshot_format_versions"]["mem"] <= SNAPSHOT_FORMAT
        leftovers = [p.name for p in (DATA / name).iterdir() if p.name.endswith(("-wal", "-shm", "-journal"))]
        assert leftovers == [], f"{name} holds SQLite side files: regenerate nothing, delete them"
    newest = _answers(NEWEST)["written_by"]
    assert (newest["store_format_version"], newest["snapshot_format_versions"]["mem"]) == (
        FORMAT_VERSION,
        SNAPSHOT_FORMAT,
    ), "today's formats have no golden directory yet: write one with make_golden.py (see README.md)"


def test_counts(golden: tuple[dict[str, Collection], dict[str, Any]]) -> None:
    cols, answers = golden
    for name in NAMES:
        col, want = cols[name], answers["collections"][name]
        assert col.index_kind == want["index_kind"]
        assert len(col) == col.count() == want["count"]
        for case in want["filtered"]:
            assert col.count(case["filter"]) == case["count"], case["filter"]


def test_plain_search_matches_the_recorded_exact_answers(
    golden: tuple[dict[str, Collection], dict[str, Any]],
) -> None:
    cols, answers = golden
    queries = answers["queries"]
    notes = answers["collections"]["notes"]["plain_top"]
    assert [_ids(cols["notes"], q, k=10) for q in queries] == notes
    mem = answers["collections"]["mem"]["plain_top"]
    assert _recall([_ids(cols["mem"], q, k=10, ef=200) for q in queries], mem) >= MIN_RECALL


def test_calibration_is_read(golden: tuple[dict[str, Collection], dict[str, Any]]) -> None:
    cols, answers = golden
    col = cols["mem"]
    assert col.calibration is not None
    hits = col.search(answers["queries"][0], k=10, recall=0.99, cache=False)
    assert hits.plan.calibrated
    assert len(hits) == 10


def test_filtered_search(golden: tuple[dict[str, Collection], dict[str, Any]]) -> None:
    cols, answers = golden
    queries = answers["queries"]
    for name in NAMES:
        col = cols[name]
        for case in answers["collections"][name]["filtered"]:
            flt, truth = case["filter"], case["top"]
            hits = [col.search(q, k=10, filter=flt, ef=200, cache=False) for q in queries[: len(truth)]]
            assert all(parse_filter(flt).matches(h.metadata) for hs in hits for h in hs), flt
            found = [[h.id for h in hs] for hs in hits]
            if name == "notes":
                assert found == truth, flt
            else:
                assert _recall(found, truth) >= MIN_RECALL, flt


def test_text_search(golden: tuple[dict[str, Collection], dict[str, Any]]) -> None:
    cols, answers = golden
    for name in NAMES:
        col = cols[name]
        for case in answers["collections"][name]["text"]:
            hits = col.search(None, k=10, text=case["text"], cache=False)
            assert sorted(h.id for h in hits) == case["ids"], case["text"]
            assert {h.metric for h in hits} == {"bm25"}
            filtered = _ids(col, None, k=10, text=case["text"], filter=case["filter"])
            assert sorted(filtered) == case["filtered_ids"], case["text"]


def test_records_and_deletions(golden: tuple[dict[str, Collection], dict[str, Any]]) -> None:
    cols, answers = golden
    for name in NAMES:
        col, want = cols[name], answers["collections"][name]
        for rid, rec in want["records"].items():
            got = col[rid]
            assert got.document == rec["document"]
            assert got.metadata == rec["metadata"]
            assert got.vector is not None
            np.testing.assert_array_equal(got.vector, np.asarray(rec["vector"], np.float32))
        for rid in want["deleted"]:
            assert rid not in col
            assert col.get(rid) is None


@pytest.mark.parametrize("name", sorted(GOLDEN))
def test_write_close_reopen(name: str, tmp_path: Path) -> None:
    answers = _answers(name)
    data = _copy(name, tmp_path)
    queries = np.asarray(answers["queries"], np.float32)
    rng = np.random.default_rng(7)
    new_ids = [f"new{i}" for i in range(5)]
    new_vecs = {name: rng.standard_normal((5, answers["dim"])).astype(np.float32) for name in NAMES}
    gone = {name: answers["collections"][name]["plain_top"][0][:3] for name in NAMES}
    with _warns_if(GOLDEN[name].rebuilds_snapshot):
        db, cols = _open(data)
    try:
        for col_name, col in cols.items():
            docs = [f"written after the upgrade {i}" for i in range(5)]
            col.add(new_ids, new_vecs[col_name], documents=docs, metadatas=[{"group": 7}] * 5)
            assert col.delete(gone[col_name]) == 3
    finally:
        db.close()
    # today's code left today's snapshot behind: the next open trusts it (no warning)
    manifest = json.loads(_manifest(data, answers).read_text())
    assert manifest["format_version"] == SNAPSHOT_FORMAT
    db, cols = _open(data)
    try:
        for col_name, col in cols.items():
            want = answers["collections"][col_name]
            assert len(col) == want["count"] + 5 - 3
            assert col.count({"group": 7}) == 5
            for rid, vec in zip(new_ids, new_vecs[col_name], strict=True):
                assert _ids(col, vec, k=1, ef=200) == [rid]
            # the recorded answers without the deleted records are still found (five new records can
            # push at most five of them past k=10, so look at the top 15)
            truth = [[r for r in top if r not in gone[col_name]] for top in want["plain_top"]]
            found = [_ids(col, q, k=15, ef=200) for q in queries]
            if col_name == "notes":
                assert all(set(t) <= set(f) for f, t in zip(found, truth, strict=True))
            else:
                assert _recall(found, truth) >= MIN_RECALL
            assert not set(gone[col_name]) & {r for f in found for r in f}
            assert sorted(_ids(col, None, k=10, text="upgrade")) == sorted(new_ids)
    finally:
        db.close()


def test_newer_store_format_is_refused(tmp_path: Path) -> None:
    data = _copy(NEWEST, tmp_path)
    with contextlib.closing(sqlite3.connect(data / "embeddix.sqlite3")) as conn, conn:
        conn.execute("UPDATE meta SET value = '99' WHERE key = 'format_version'")
    with pytest.raises(FormatVersionError, match=r"store format 99; this Embeddix reads up to 1"):
        Embeddix.open(data, settings=SETTINGS)


def test_newer_snapshot_format_is_rebuilt(tmp_path: Path) -> None:
    answers = _answers(NEWEST)
    data = _copy(NEWEST, tmp_path)
    path = _manifest(data, answers)
    manifest = json.loads(path.read_text())
    manifest["format_version"] = 99
    # re-sealed, so the version is the only thing wrong with it (the CRC covers every other key, sorted)
    body = {k: v for k, v in manifest.items() if k != "manifest_crc32"}
    manifest["manifest_crc32"] = zlib.crc32(json.dumps(body, sort_keys=True).encode())
    path.write_text(json.dumps(manifest, sort_keys=True))
    with pytest.warns(RuntimeWarning, match=r"snapshot format 99"):
        db, cols = _open(data)
    try:
        col = cols["mem"]
        assert len(col) == answers["collections"]["mem"]["count"]
        found = [_ids(col, q, k=10, ef=200) for q in answers["queries"]]
        assert _recall(found, answers["collections"]["mem"]["plain_top"]) >= MIN_RECALL
    finally:
        db.close()
    assert json.loads(path.read_text())["format_version"] == SNAPSHOT_FORMAT


def test_a_refused_newer_store_is_left_as_it_was(tmp_path: Path) -> None:
    data = _copy(NEWEST, tmp_path)

    def schema() -> list[tuple[str, str]]:
        with contextlib.closing(sqlite3.connect(data / "embeddix.sqlite3")) as conn:
            return sorted(conn.execute("SELECT type, name FROM sqlite_master").fetchall())

    # a future format 99 that has no `deletions` table and no `records_ai` trigger any more
    with contextlib.closing(sqlite3.connect(data / "embeddix.sqlite3")) as conn, conn:
        conn.execute("UPDATE meta SET value = '99' WHERE key = 'format_version'")
        conn.execute("DROP TABLE deletions")
        conn.execute("DROP TRIGGER records_ai")
    before = schema()
    with pytest.raises(FormatVersionError):
        Embeddix.open(data, settings=SETTINGS)
    assert schema() == before
