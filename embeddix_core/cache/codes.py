"""int8 copies of candidate vectors: what lets a semantic lookup bound distances without the store.

A semantic lookup re-ranks a cached query's K candidates (about 80) for a new query. Reading 80 vectors
from the store would cost more than the search it saves; an int8 code per candidate (dim bytes plus ~120
of bookkeeping) bounds every candidate's distance to the new query from both sides, so only the few that
could be in the top k are read (see ``certify.py``). The codes are shared by every entry of a namespace
that holds the label (refcounted) and are counted in the namespace's memory budget.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["CandidateCodes"]

# Bytes a code-table row costs beyond the code: scale, error bound, norm, refcount, label, dict slot.
_CODE_OVERHEAD = 120


class CandidateCodes:
    """int8 copies of candidate vectors, shared by the entries of one namespace (label -> row, refcounted).

    What they are for: a semantic lookup must know, for each candidate c of a cached query q, its distance
    to the new query q' = q + delta. Write q'.c = q.c + delta.c. The stored distance gives q.c (as the index
    computed it), and with the code c' = scale * code, delta.c = delta.c' + delta.(c - c') where
    |delta.(c - c')| <= |delta| * |c - c'|. ``width`` keeps, per row, an upper bound of |c - c'| plus the
    float32 rounding of delta.c' per unit of |delta|, so |delta| * width bounds the error of the estimate:
    about 6e-4 for a near duplicate at cosine 0.998 of a unit 384-d vector, a sixth of the median gap
    between the 10th and 11th neighbour on MiniLM text. The codes decide which candidates could be in the
    top k, and only those (k plus one or two) are re-ranked exactly: no store round trip for the other ~70.

    A label's code is freed when no entry holds it any more. Every entry holding a label is dropped when
    the record is deleted or changed (``on_labels``), so a code never outlives the vector it copies.

    Layout: a row's code, scale and width sit side by side in ``buf``, a structured array (``codes``,
    ``scale`` and ``width`` are views of its fields), so a lookup gathers a candidate's three in one read:
    rows are scattered over the table, and a lookup runs after searches that flushed the CPU caches.
    """

    __slots__ = ("buf", "codes", "dim", "free", "label", "refs", "rows", "scale", "width")

    def __init__(self, dim: int) -> None:
        """Start with room for 256 codes of ``dim`` coordinates (the table doubles when full)."""
        self.dim = dim
        cap = 256
        row = np.dtype([("code", np.int8, (dim,)), ("scale", np.float64), ("width", np.float64)], align=True)
        self._views(np.zeros(cap, row))
        self.refs = np.zeros(cap, np.int64)
        self.label = np.full(cap, -1, np.int64)
        self.rows: dict[int, int] = {}
        self.free = list(range(cap - 1, -1, -1))

    @property
    def row_bytes(self) -> int:
        """Bytes one code costs in the namespace's budget (the code plus its bookkeeping)."""
        return self.dim + _CODE_OVERHEAD

    @property
    def nbytes(self) -> int:
        """Bytes of every live code (counted in the namespace's budget)."""
        return len(self.rows) * self.row_bytes

    def _views(self, buf: np.ndarray) -> None:
        # the field views must follow the buffer whenever it is replaced (growth)
        self.buf = buf
        self.codes, self.scale, self.width = buf["code"], buf["scale"], buf["width"]

    def parts(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Codes (int8), scales and widths (float64) of these rows, gathered in one read."""
        got = self.buf[rows]
        return got["code"], got["scale"], got["width"]

    def _grow(self, need: int) -> None:
        cap = len(self.label)
        new = max(cap * 2, cap + need)
        extra = new - cap
        self._views(np.concatenate([self.buf, np.zeros(extra, self.buf.dtype)]))
        self.refs = np.concatenate([self.refs, np.zeros(extra, np.int64)])
        self.label = np.concatenate([self.label, np.full(extra, -1, np.int64)])
        self.free.extend(range(new - 1, cap - 1, -1))

    def find(self, labels: np.ndarray) -> np.ndarray:
        """Rows of these labels (-1 where there is no code)."""
        get = self.rows.get
        return np.array([get(lb, -1) for lb in labels.tolist()], np.int64)

    def add(self, labels: np.ndarray, vecs: np.ndarray) -> np.ndarray:
        """Encode vectors whose labels have no code yet (non-finite ones, records gone, are skipped).

        Returns:
            The row of each label (-1 for the skipped).
        """
        rows_of = self.rows
        get = rows_of.get
        out = np.array([get(lb, -1) for lb in labels.tolist()], np.int64)
        fresh = np.flatnonzero(out < 0).tolist()
        if not fresh:
            return out
        x = np.asarray(vecs[fresh], np.float32)
        amax = np.abs(x).max(axis=1)
        ok = np.isfinite(amax)  # NaN rows: records gone meanwhile
        if not ok.all():
            fresh = [fresh[j] for j in np.flatnonzero(ok).tolist()]
            x, amax = x[ok], amax[ok]
            if not fresh:
                return out
        scale = np.where(amax > 0, amax / np.float32(127), np.float32(1)).astype(np.float32)
        code = x / scale[:, None]
        np.rint(code, out=code)
        np.clip(code, -127, 127, out=code)
        resid = x - code * scale[:, None]  # code holds small integers: exact in float32
        # |c - c'| from float32 arithmetic: each residual component is off by at most 2^-24 times
        # (|x_i| + |resid_i|), the norm by n * 2^-24 relative; 1e-4 relative and 1e-6 |x|_max * sqrt(n)
        # absolute cover both many times over
        err = np.sqrt(np.einsum("ij,ij->i", resid, resid).astype(np.float64)) * (1 + 1e-4)
        err += 1e-6 * amax.astype(np.float64) * math.sqrt(self.dim)
        norm = np.sqrt(np.einsum("ij,ij->i", x, x).astype(np.float64))
        if len(self.free) < len(fresh):
            self._grow(len(fresh) - len(self.free))
        rows = [self.free.pop() for _ in fresh]
        self.codes[rows] = code.astype(np.int8)
        self.scale[rows] = scale
        # plus the float32 rounding of the product code . delta (n * 2^-24 * |c'| * |delta|, with
        # |c'| <= |c| + err), counted 16 times over
        self.width[rows] = err + 1e-6 * self.dim * (norm + err)
        self.refs[rows] = 0
        sel = labels[fresh]
        self.label[rows] = sel
        rows_of.update(zip(sel.tolist(), rows, strict=True))
        out[fresh] = rows
        return out

    def incref(self, rows: np.ndarray) -> None:
        """Take a reference on each row (rows of one candidate set are distinct; -1 is skipped)."""
        self.refs[rows[rows >= 0]] += 1

    def decref(self, rows: np.ndarray) -> None:
        """Release a reference on each row (-1 is skipped); a row nobody holds is freed for reuse."""
        rows = rows[rows >= 0]
        if not len(rows):
            return
        self.refs[rows] -= 1
        dead = rows[self.refs[rows] <= 0]
        for row in dead.tolist():
            self.rows.pop(int(self.label[row]), None)
            self.label[row] = -1
            self.refs[row] = 0
            self.free.append(row)

    def clear(self) -> None:
        """Free every code. In place: the certifier holds this very object."""
        self.__init__(self.dim)  # type: ignore[misc]
