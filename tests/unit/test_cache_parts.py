"""The result cache's parts on their own: codes, query tables, certification, persistence."""

from __future__ import annotations

import numpy as np
import pytest

from embeddix_core.cache import CacheManager, CacheSettings, ResultCache
from embeddix_core.cache.certify import probe_width
from embeddix_core.cache.codes import CandidateCodes
from embeddix_core.cache.lsh import QueryTable


def _unit(rng: np.random.Generator, n: int, dim: int) -> np.ndarray:
    x = rng.standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_code_width_bounds_the_dot_product_error() -> None:
    # the bound certification rests on: |delta.c - delta.c'| <= |delta| * width, for any delta
    rng = np.random.default_rng(0)
    x = rng.standard_normal((200, 48)).astype(np.float32) * rng.uniform(0.01, 50, (200, 1)).astype(np.float32)
    codes = CandidateCodes(48)
    rows = codes.add(np.arange(200, dtype=np.int64), x)
    code, scale, width = codes.parts(rows)
    for _ in range(20):
        delta = rng.standard_normal(48).astype(np.float32) * np.float32(rng.uniform(1e-4, 1.0))
        est = (code.astype(np.float32) @ delta) * scale
        true = x.astype(np.float64) @ delta.astype(np.float64)
        assert (np.abs(true - est) <= width * float(np.linalg.norm(delta.astype(np.float64)))).all()


def test_codes_are_shared_refcounted_and_skip_gone_records() -> None:
    codes = CandidateCodes(8)
    x = np.ones((3, 8), np.float32)
    x[1] = np.nan  # a record gone meanwhile: no code
    rows = codes.add(np.array([5, 6, 7], np.int64), x)
    assert rows[1] == -1 and rows[0] >= 0 and rows[2] >= 0
    assert codes.add(np.array([5], np.int64), x[:1]).tolist() == [rows[0]]  # already coded: same row
    codes.incref(rows)
    codes.incref(rows[:1])
    codes.decref(rows)
    assert set(codes.rows) == {5} and codes.nbytes == codes.row_bytes
    codes.decref(rows[:1])
    assert not codes.rows and codes.nbytes == 0


@pytest.mark.parametrize("space", ["ip", "l2"])
def test_query_table_finds_a_near_duplicate_and_forgets_removed_slots(space: str) -> None:
    rng = np.random.default_rng(1)
    x = _unit(rng, 600, 32) * (1.0 if space == "ip" else 5.0)
    table = QueryTable(32, space, 4)
    for slot in range(600):
        if slot >= len(table.fam):
            table.grow()
        table.put(slot, x[slot], family=slot % 2, hashed=True)
    near = x[10] + rng.standard_normal(32).astype(np.float32) * 1e-3
    slots, raw = table.near(near, 0, np.inf)
    assert slots[0] == 10 and raw == sorted(raw)
    assert table.scan(near, 0, np.inf) == ([], [])  # past _SCAN_MAX: the hash tables only
    assert table.near(near, 1, np.inf)[0][:1] != [10]  # another family never sees it
    table.remove(10, 0)
    assert 10 not in table.near(near, 0, np.inf)[0]
    assert (table.keys[10] == -1).all() and table.live == 599


def test_probe_width_is_a_little_wider_than_k() -> None:
    assert [probe_width(k) for k in (1, 5, 10, 20)] == [7, 11, 16, 32]


def test_persisted_entries_come_back_only_at_the_same_sequence(tmp_path) -> None:
    rng = np.random.default_rng(2)
    x = _unit(rng, 100, 16)
    cm = CacheManager(16, "ip", True, CacheSettings())
    for session in (None, "agent"):
        ns = cm.namespace(session)
        fam = ns.family(3, None, ())
        d = (1.0 - x @ x[0]).astype(np.float32)
        order = np.argsort(d)[:24].astype(np.int64)
        ns.store(
            x[0].tobytes(), x[0].copy(), fam, 3, None, [("a", 1.0, 0.0, None, None)], order, d[order], True, 4
        )
    assert cm.save(tmp_path / "c", 4) == 2
    fresh = CacheManager(16, "ip", True, CacheSettings())
    assert fresh.load(tmp_path / "c", 4) == 2
    for session in (None, "agent"):
        (entry,) = fresh.namespace(session).entries()
        assert entry.hits == [("a", 1.0, 0.0, None, None)] and len(entry.labels) == 24
    # a write happened since the save: nothing is trusted, and the directory is cleared
    assert CacheManager(16, "ip", True, CacheSettings()).load(tmp_path / "c", 5) == 0
    assert CacheManager(16, "ip", True, CacheSettings()).load(tmp_path / "c", 4) == 0


def test_family_key_names_what_family_was_given() -> None:
    rc = ResultCache(4, "ip")
    fid = rc.family(5, '{"g":1}', (None, 2))
    assert rc.family_key(fid) == (5, '{"g":1}', (None, 2)) and rc.family_key(fid + 1) is None
