"""Fuzzing of the core's public surface: every call either works or raises an EmbeddixError, and a refused
call changes nothing.

A hypothesis state machine drives one on-disk database (real SQLite, dim 8) through every public entry
point with arguments drawn from both valid and invalid values: wrong types, NaN/inf, wrong dimensions,
huge and empty strings, control characters, malformed filters, bad ids and metadata that JSON cannot hold.
After every call it checks:

* an exception is an :class:`~embeddix_core.EmbeddixError` (never a raw ValueError, TypeError, KeyError,
  sqlite3 or JSON error);
* a refused call leaves the stored data exactly as it was (ids, documents, metadata, vectors, count);
* an accepted write is reflected in what ``get`` returns.
"""

from __future__ import annotations

import math
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from embeddix_core import Collection, Embeddix, EmbeddixError
from embeddix_core.query.filters import FIELD_OPERATORS, LOGICAL_OPERATORS

DIM = 8
Snapshot = tuple[int, list[tuple[str, str | None, dict[str, Any], bytes]]]


class _Opaque:
    """An object no layer knows how to serialize."""

    def __repr__(self) -> str:
        return "<opaque>"


class _Long(str):
    """Long text whose repr stays short, so failing examples stay readable (hypothesis warns on 50 kB)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return f"<{len(self)} characters starting {str.__repr__(self[:12])}>"


# -- values --------------------------------------------------------------------------------------------
_odd_text = st.sampled_from(
    ["", "\x00", "a\x00b", "\udc80", "\n\t\r", "\x1b[31m", "'; DROP TABLE x; --", "é"]
)
texts = st.one_of(st.text(max_size=12), _odd_text, st.just(_Long("w" * 5000)))
good_ids = st.sampled_from(["a", "b", "c", "d", "e", "f", "ünï", "with space", "x" * 512])
bad_ids = st.one_of(
    st.sampled_from(["", "\udc80", "x" * 513, "é" * 257]),
    st.integers(),
    st.none(),
    st.binary(max_size=4),
    st.just(_Opaque()),
    st.just(["a", ["b"]]),
)
ids_arg = st.one_of(
    good_ids,
    st.lists(good_ids, min_size=1, max_size=4, unique=True),
    st.lists(st.one_of(good_ids, bad_ids), max_size=4),
    bad_ids,
    st.just(np.array(["a", "b"])),
    st.sets(good_ids, max_size=3),
)
finite = st.floats(-1e3, 1e3, allow_nan=False, allow_infinity=False)
extreme = st.sampled_from([2e20, -2e20, 1e-25, 1e-40, 3e38, 1e300, 0.0])
coordinate = st.one_of(finite, finite, extreme, st.floats(), st.integers(-(2**70), 2**70))
good_vector = st.lists(finite, min_size=DIM, max_size=DIM).filter(lambda v: any(v))
odd_vector = st.one_of(
    st.lists(coordinate, min_size=DIM, max_size=DIM),
    st.lists(finite, max_size=DIM + 2),
    st.lists(st.one_of(finite, st.text(max_size=2), st.none()), min_size=DIM, max_size=DIM),
    st.sampled_from([None, "abc", b"\x00" * 32, {"x": 1.0}, 3.0, [[1.0] * DIM], np.zeros(DIM, complex)]),
    st.just([0.0] * DIM),
)
vector = st.one_of(good_vector, good_vector, odd_vector, good_vector.map(lambda v: np.asarray(v, np.float64)))
scalar = st.one_of(st.integers(-(2**63), 2**63 - 1), finite, st.booleans(), st.text(max_size=8), _odd_text)
odd_value = st.one_of(
    st.sampled_from([float("nan"), float("inf"), 2**64, -(2**70), b"bytes", {1, 2}, _Opaque(), None]),
    st.just({"nested": 1}),
    st.lists(st.one_of(scalar, st.none(), st.just([1])), max_size=3),
    st.tuples(scalar, scalar),
    st.just(np.float32(1.5)),
    st.just(np.int64(3)),
)
meta_key = st.one_of(
    st.sampled_from(["t", "tag", "kind", "a.b", 'q"k', "café", "$x", "$and", "k" * 257, "", " "]),
    st.text(max_size=6),
    st.integers(),
)
metadata = st.one_of(
    st.dictionaries(st.sampled_from(["t", "tag", "kind", "a.b", "café"]), scalar, max_size=3),
    st.dictionaries(meta_key, st.one_of(scalar, odd_value), max_size=3),
    st.sampled_from([None, "notadict", 5, ["t", 1]]),
)

# -- filters -------------------------------------------------------------------------------------------
field_name = st.one_of(st.sampled_from(["t", "tag", "kind", "a.b", "café", "missing"]), meta_key)
operator = st.one_of(st.sampled_from(FIELD_OPERATORS), st.sampled_from(["$bogus", "$", "$AND", "eq"]))
operand = st.one_of(scalar, st.lists(scalar, max_size=3), odd_value)
field_filter = st.one_of(
    st.dictionaries(field_name, operand, min_size=1, max_size=2),
    st.dictionaries(field_name, st.dictionaries(operator, operand, max_size=2), min_size=1, max_size=2),
)
filters = st.recursive(
    field_filter,
    lambda inner: st.one_of(
        st.builds(lambda op, fs: {op: fs}, st.sampled_from(["$and", "$or"]), st.lists(inner, max_size=3)),
        st.builds(lambda f: {"$not": f}, inner),
        st.builds(lambda op, f: {op: f}, st.sampled_from(LOGICAL_OPERATORS), inner),  # $and of a dict
    ),
    max_leaves=6,
)
filter_arg = st.one_of(st.none(), filters, st.sampled_from([{}, [], "t", 5, {"$or": []}, {"$not": []}]))

# -- search parameters ---------------------------------------------------------------------------------
ints_and_junk = st.one_of(
    st.integers(-5, 200), st.sampled_from([10**6, 2**70, 2.5, 3.0, True, "5", None, float("nan")])
)
unit_and_junk = st.one_of(
    st.floats(0, 1), st.floats(allow_nan=True), st.sampled_from([True, "0.5", -1, 2, None])
)
search_kwargs = st.fixed_dictionaries(
    {},
    optional={
        "k": ints_and_junk,
        "filter": filter_arg,
        "recall": unit_and_junk,
        "deadline_ms": st.one_of(st.floats(allow_nan=True), st.sampled_from([0, -1, 1, 10**9, True, "5"])),
        "ef": ints_and_junk,
        "text": st.one_of(texts, st.just(_Long("word " * 10_000)), st.integers(), st.just(b"fox")),
        "text_weight": unit_and_junk,
        "mmr_lambda": unit_and_junk,
        "fetch_k": ints_and_junk,
        "include_vectors": st.sampled_from([True, False, "yes", None]),
        "cache": st.booleans(),
        "session": st.one_of(st.none(), st.text(max_size=4), st.integers()),
    },
)


def _snapshot(col: Collection) -> Snapshot:
    rows = [
        (r.id, r.document, r.metadata, b"" if r.vector is None else r.vector.tobytes())
        for r in col.scan(include_vectors=True)
    ]
    return col.count(), sorted(rows, key=lambda row: row[0])


def _normalised(meta: dict[str, Any]) -> dict[str, Any]:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in meta.items() if v is not None}


class ApiFuzz(RuleBasedStateMachine):
    """One database, one collection under test, every public call with fuzzed arguments."""

    @initialize(metric=st.sampled_from(["cosine", "l2", "ip"]))
    def open_store(self, metric: str) -> None:
        self.tmp = Path(tempfile.mkdtemp(prefix="embeddix-fuzz-"))
        self.db = Embeddix.open(self.tmp / "data")
        self.col = self.db.create_collection("fuzz", dim=DIM, metric=metric)
        self.col.add(
            ["a", "b", "c"],
            np.eye(DIM, dtype=np.float32)[:3] + 0.1,
            documents=["red fox", "blue whale", None],
            metadatas=[{"t": 1, "tag": ["x", "y"]}, {"t": 2, "kind": "animal", "a.b": 3.5}, None],
        )

    def teardown(self) -> None:
        if hasattr(self, "db"):
            self.db.close()
            shutil.rmtree(self.tmp, ignore_errors=True)

    # -- the two checks ----------------------------------------------------------------------------
    def _call(self, fn: Callable[[], Any], *, writes: bool = True) -> tuple[bool, Any]:
        """Run one public call: (True, result) or (False, the EmbeddixError); data unchanged if refused."""
        before = _snapshot(self.col) if writes else None
        try:
            return True, fn()
        except EmbeddixError as exc:
            if writes:
                assert _snapshot(self.col) == before, f"a refused call changed the data: {exc}"
            return False, exc
        # any other exception propagates and fails the test with its traceback: that is the finding

    @invariant()
    def counts_agree(self) -> None:
        if hasattr(self, "col"):
            n, rows = _snapshot(self.col)
            assert n == len(rows) == len(self.col)

    # -- writes ------------------------------------------------------------------------------------
    @rule(
        ids=ids_arg,
        vectors=st.one_of(vector, st.lists(vector, max_size=3)),
        documents=st.one_of(
            st.none(), texts, st.lists(st.one_of(st.none(), texts, st.integers()), max_size=3), st.integers()
        ),
        metadatas=st.one_of(metadata, st.lists(metadata, max_size=3)),
        upsert=st.booleans(),
    )
    def put(self, ids: Any, vectors: Any, documents: Any, metadatas: Any, upsert: bool) -> None:
        verb = self.col.upsert if upsert else self.col.add
        ok, out = self._call(lambda: verb(ids, vectors, documents=documents, metadatas=metadatas))
        if ok:
            got = self.col.get(out)
            mat = np.asarray(vectors, np.float32).reshape(len(out), DIM)
            metas = [metadatas] if isinstance(metadatas, dict) else metadatas
            docs = [documents] if isinstance(documents, str) else documents
            for i, rec in enumerate(got):
                assert rec is not None and rec.id == out[i]
                assert rec.vector is not None and np.array_equal(rec.vector, mat[i])
                assert rec.document == (None if docs is None else docs[i])
                assert rec.metadata == _normalised((metas[i] if metas is not None else None) or {})

    @rule(data=st.data())
    def put_valid(self, data: st.DataObject) -> None:
        """A well-formed write must be accepted."""
        rid = data.draw(good_ids)
        vec = data.draw(good_vector)
        meta = data.draw(st.dictionaries(st.sampled_from(["t", "kind", "a.b", "café"]), scalar, max_size=2))
        ok, out = self._call(lambda: self.col.upsert([rid], [vec], documents=["doc"], metadatas=[meta]))
        if not ok:  # only the text of a metadata value may be refused (NUL, surrogates)
            assert "metadata" in str(out)
            return
        rec = self.col[rid]
        assert rec.metadata == meta and rec.document == "doc"

    @rule(
        ids=ids_arg,
        vectors=st.one_of(st.none(), vector, st.lists(vector, max_size=2)),
        documents=st.one_of(
            st.none(), texts, st.lists(st.one_of(st.none(), texts), max_size=2), st.integers()
        ),
        metadatas=st.one_of(st.none(), metadata, st.lists(metadata, max_size=2)),
    )
    def update(self, ids: Any, vectors: Any, documents: Any, metadatas: Any) -> None:
        ok, _ = self._call(
            lambda: self.col.update(ids, vectors=vectors, documents=documents, metadatas=metadatas)
        )
        if ok and documents is not None:
            id_list = [ids] if isinstance(ids, str) else list(ids)
            docs = [documents] if isinstance(documents, str) else list(documents)
            assert [r.document for r in self.col.get(id_list)] == docs

    @rule(rid=st.one_of(good_ids, bad_ids), patch=st.one_of(metadata, st.just({"t": None})))
    def update_metadata(self, rid: Any, patch: Any) -> None:
        ok, rec = self._call(lambda: self.col.update_metadata(rid, patch))
        if ok:
            assert rec.id == rid and all(rec.metadata.get(k) == v for k, v in _normalised(patch).items())

    @rule(ids=st.one_of(st.none(), ids_arg), flt=filter_arg, both=st.booleans())
    def delete(self, ids: Any, flt: Any, both: bool) -> None:
        before = self.col.count()
        kwargs = {"filter": flt} if not both else {"filter": flt, "ids": ids}
        args = (ids,) if flt is None and not both else ()
        ok, n = self._call(lambda: self.col.delete(*args, **kwargs))
        if ok:
            assert isinstance(n, int) and self.col.count() == before - n

    @rule(ef_search=ints_and_junk, index_threshold=ints_and_junk)
    def configure(self, ef_search: Any, index_threshold: Any) -> None:
        self._call(lambda: self.col.configure(ef_search=ef_search, index_threshold=index_threshold))
        # whatever was stored must still be readable: a refused value must not have reached the store
        self.col.search(np.ones(DIM), k=1)
        self.db.get_collection("fuzz").stats()

    # -- reads -------------------------------------------------------------------------------------
    @rule(ids=ids_arg, include_vectors=st.sampled_from([True, False, None, "x"]))
    def get(self, ids: Any, include_vectors: Any) -> None:
        self._call(lambda: self.col.get(ids, include_vectors=include_vectors), writes=False)

    @rule(key=st.one_of(good_ids, bad_ids, st.just(["a"])))
    def mapping(self, key: Any) -> None:
        ok, _ = self._call(lambda: self.col[key], writes=False)
        inside = self._call(lambda: key in self.col, writes=False)
        assert inside[0], "`in` never raises"
        assert inside[1] == ok, "col[key] works exactly when key in col"

    @rule(flt=filter_arg, include_vectors=st.booleans(), batch_size=ints_and_junk)
    def scan_and_count(self, flt: Any, include_vectors: bool, batch_size: Any) -> None:
        self._call(lambda: list(self.col.scan(flt, include_vectors=include_vectors, batch_size=batch_size)))
        ok, n = self._call(lambda: self.col.count(flt), writes=False)
        if ok:
            assert n == len(list(self.col.scan(flt)))

    @rule(query=st.one_of(st.none(), vector), kwargs=search_kwargs)
    def search(self, query: Any, kwargs: dict[str, Any]) -> None:
        ok, hits = self._call(lambda: self.col.search(query, **kwargs))
        if ok:
            stored = {r.id for r in self.col.scan()}
            assert {h.id for h in hits} <= stored
            assert len(hits) <= kwargs.get("k", 10)
            assert all(not math.isnan(h.score) for h in hits)

    @rule(queries=st.one_of(st.lists(vector, max_size=3), vector), kwargs=search_kwargs)
    def search_batch(self, queries: Any, kwargs: dict[str, Any]) -> None:
        allowed = {k: v for k, v in kwargs.items() if k in ("k", "filter", "recall", "ef", "include_vectors")}
        self._call(lambda: self.col.search_batch(queries, **allowed))

    @rule(query=vector, kwargs=search_kwargs, stable=st.one_of(st.none(), ints_and_junk))
    def search_iter_and_explain(self, query: Any, kwargs: dict[str, Any], stable: Any) -> None:
        it_kwargs = {k: v for k, v in kwargs.items() if k in ("k", "filter", "recall", "deadline_ms", "ef")}
        self._call(lambda: list(self.col.search_iter(query, stable_rounds=stable, **it_kwargs)))
        self._call(lambda: self.col.explain(query, **it_kwargs), writes=False)

    # -- the database ------------------------------------------------------------------------------
    @rule(
        name=st.one_of(
            st.sampled_from(["fuzz", "other", "x" * 129, "-x", "a/b", ""]),
            st.text(max_size=5),
            st.integers(),
            st.just(["fuzz"]),
        ),
        dim=ints_and_junk,
        metric=st.one_of(st.sampled_from(["cosine", "l2", "ip", "COSINE", "hamming"]), st.integers()),
        extra=st.fixed_dictionaries(
            {},
            optional={
                "hnsw_m": ints_and_junk,
                "ef_search": ints_and_junk,
                "index_threshold": ints_and_junk,
                "exist_ok": st.booleans(),
                "embedding_model": st.one_of(texts, st.integers()),
            },
        ),
    )
    def collections(self, name: Any, dim: Any, metric: Any, extra: dict[str, Any]) -> None:
        ok, made = self._call(lambda: self.db.create_collection(name, dim, metric, **extra))
        got, same = self._call(lambda: self.db.get_collection(name))
        if ok:
            assert got and same is made
        if name != "fuzz":
            dropped, _ = self._call(lambda: self.db.drop_collection(name))
            assert dropped == got

    @rule(
        path=st.one_of(
            st.sampled_from(["sub", "a\x00b", "file", "\udc80"]), st.integers(), st.binary(max_size=3)
        ),
        durability=st.one_of(st.none(), st.sampled_from(["full", "normal", "bogus", 3])),
    )
    def open_other(self, path: Any, durability: Any) -> None:
        if isinstance(path, str):
            (self.tmp / "file").write_text("not a directory")
            path = self.tmp / path
        ok, db = self._call(lambda: Embeddix.open(path, durability=durability))
        if ok:
            db.close()


ApiFuzz.TestCase.settings = settings(
    max_examples=40,
    stateful_step_count=20,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
test_api_fuzz = ApiFuzz.TestCase
