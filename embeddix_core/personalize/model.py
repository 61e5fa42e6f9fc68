"""A user's profile: what the re-ranker knows about one user, learned from that user's events only.

Model (Rocchio with exponential time decay). Each event has a signal ``s`` in [-1, 1] (``signals.py``)
and a time ``t``; at time ``now`` it weighs ``w = 2 ** -((now - t) / half_life)``.

* Preference vector ``p = beta * mean(liked) - gamma * mean(disliked)``: the ``|s| * w``-weighted means of
  the unit vectors of the records given positive and negative signals. Its *strength*
  ``c = W / (W + 1)``, with ``W`` the total ``|s| * w`` of those events, scales its influence, so a
  profile fades as its events age and a single event counts half.
* Per record: net ``N_r = sum(s * w)`` and weight ``M_r = sum(|s| * w)``; its statistic is
  ``N_r / (M_r + 1)`` in (-1, 1) (the ``+ 1`` keeps one event from counting as certainty).
* Per metadata value (str, int or bool values and list items; floats and long strings are skipped): the
  same net and weight over the events of records holding it.

Decay without rewriting every statistic per event: all sums are kept multiplied by
``2 ** ((t_ref - now) / half_life)``, i.e. in units of a reference time ``t_ref``; an event adds
``s * 2 ** ((t - t_ref) / half_life)``, and a reading at ``now`` multiplies by
``2 ** ((t_ref - now) / half_life)``. Means are ratios and need no factor at all. ``t_ref`` is moved
forward (every sum rescaled once) before the factors could overflow.

Everything here is derived from the durable events (``Personalizer`` replays them), so a profile can
be dropped and rebuilt at any time. Not thread-safe: the personalizer holds its lock around every call.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

from .. import _native

__all__ = ["FieldPreference", "Profile", "ProfileState", "field_keys"]

# Bounds on what one profile keeps (memory per user stays small whatever the metadata).
_MAX_FIELD_KEYS = 4096
_MAX_PAIRS_PER_RECORD = 32
_MAX_VALUE_CHARS = 64
_MAX_SUMS_MEMO = 1024  # metadata texts whose field sums a profile memoizes (per user)
_REBASE_EXPONENT = 256.0  # 2**256 is far from float64 overflow (2**1023)


@dataclass(frozen=True, slots=True)
class FieldPreference:
    """How much a user likes records holding ``field == value``, in (-1, 1) (decayed, smoothed)."""

    field: str
    value: str | int | bool
    preference: float
    weight: float


@dataclass(frozen=True, slots=True)
class Profile:
    """A user's profile in one collection, as of ``at`` (what :meth:`Collection.profile` returns).

    Attributes:
        user: The user.
        version: Changes with every event of the user (the largest event id; 0: no events). Part of
            the result-cache key of the user's personalized searches.
        events: How many events the profile was learned from.
        vector_norm: Norm of the preference vector ``p`` (0.0: no vector signal yet).
        strength: ``c`` in [0, 1): how much the preference vector counts now (fades with decay).
        records: How many records have feedback statistics.
        field_preferences: The strongest metadata value preferences, strongest first (at most 20).
        at: The time (Unix seconds) the decayed values refer to.
    """

    user: str
    version: int
    events: int
    vector_norm: float
    strength: float
    records: int
    field_preferences: tuple[FieldPreference, ...]
    at: float


FieldKey = tuple[str, str, Any]  # (field, type tag, value): True and 1 must not meet in one dict key


def field_keys(meta: Mapping[str, Any]) -> list[FieldKey]:
    """The (field, type, value) keys of a record's metadata that field preferences are kept for."""
    out: list[FieldKey] = []
    for name, value in meta.items():
        for v in value if isinstance(value, list) else (value,):
            if isinstance(v, bool):
                out.append((name, "b", v))
            elif isinstance(v, int):
                out.append((name, "i", v))
            elif isinstance(v, str) and len(v) <= _MAX_VALUE_CHARS:
                out.append((name, "s", v))
            if len(out) >= _MAX_PAIRS_PER_RECORD:
                return out
    return out


class ProfileState:
    """The running sums of one user's profile (see the module docstring). Mutable; not thread-safe."""

    def __init__(self, dim: int, half_life_s: float) -> None:
        self.dim = dim
        self.half_life = half_life_s
        self.version = 0
        self.events = 0
        self.t_ref: float | None = None
        self.pos = np.zeros(dim, np.float64)
        self.neg = np.zeros(dim, np.float64)
        self.w_pos = 0.0
        self.w_neg = 0.0
        self.records: dict[str, list[float]] = {}  # id -> [net, weight]
        self.fields: dict[FieldKey, list[float]] = {}  # key -> [net, weight]
        self._unit_memo: tuple[tuple[int, int, float, float], np.ndarray | None] | None = None
        # metadata text -> its field sums, valid while the stamp (the events applied) is unchanged
        self._sums: dict[str, tuple[float, float]] = {}
        self._sums_stamp: tuple[int, int, float | None] = (-1, -1, None)
        # the preferences by field name, then (type tag, value): built with the stamp's memo
        self._by_field: dict[str, dict[tuple[str, Any], list[float]]] | None = None

    def apply(
        self, eid: int, s: float, ts: float, unit: np.ndarray | None, keys: list[FieldKey], rid: str
    ) -> None:
        """Add one event: signal ``s`` at time ``ts`` on record ``rid`` (its unit vector and field keys)."""
        if self.t_ref is None:
            self.t_ref = ts
        e = (ts - self.t_ref) / self.half_life
        if e > _REBASE_EXPONENT:
            self._rebase(ts)
            e = 0.0
        g = 2.0**e
        a = abs(s) * g
        self.events += 1
        self.version = max(self.version, eid)
        if a == 0.0:
            return
        if unit is not None:
            if s > 0:
                self.pos += a * unit
                self.w_pos += a
            else:
                self.neg += a * unit
                self.w_neg += a
        st = self.records.setdefault(rid, [0.0, 0.0])
        st[0] += s * g
        st[1] += a
        for key in keys:
            fs = self.fields.setdefault(key, [0.0, 0.0])
            fs[0] += s * g
            fs[1] += a
        if len(self.fields) > _MAX_FIELD_KEYS:
            # keep the heaviest half: light keys are old or rare, and decay would erase them anyway
            keep = sorted(self.fields.items(), key=lambda kv: -kv[1][1])[: _MAX_FIELD_KEYS // 2]
            self.fields = dict(keep)

    def _rebase(self, t: float) -> None:
        if self.t_ref is None:
            return
        f = 2.0 ** ((self.t_ref - t) / self.half_life)
        self.pos *= f
        self.neg *= f
        self.w_pos *= f
        self.w_neg *= f
        for table in (self.records, self.fields):
            for st in table.values():
                st[0] *= f
                st[1] *= f
        self.t_ref = t

    def decay(self, now: float) -> float:
        """The factor turning stored sums into their values at ``now``."""
        if self.t_ref is None:
            return 0.0
        return 2.0 ** max(-1074.0, (self.t_ref - now) / self.half_life)

    def vector(self, beta: float, gamma: float) -> np.ndarray:
        """The preference vector ``p`` (zeros without vector signal)."""
        p = np.zeros(self.dim, np.float64)
        if self.w_pos > 0:
            p += beta * (self.pos / self.w_pos)
        if self.w_neg > 0:
            p -= gamma * (self.neg / self.w_neg)
        return p

    def unit_vector(self, beta: float, gamma: float) -> np.ndarray | None:
        """``p / |p|`` (None without vector signal), memoized until the next event."""
        memo = (self.version, self.events, beta, gamma)
        if self._unit_memo is None or self._unit_memo[0] != memo:
            p = self.vector(beta, gamma)
            n = float(np.linalg.norm(p))
            self._unit_memo = (memo, None if n == 0.0 or not math.isfinite(n) else p / n)
        return self._unit_memo[1]

    def field_sums(self, metadata: str | None, keys: Callable[[str], list[FieldKey]]) -> tuple[float, float]:
        """(sum of net, sum of weight) of the stored field preferences a record's metadata matches, not
        decayed: the ``ms`` term of the re-ranking formula is ``net * f / (weight * f + 1)``.

        ``keys`` gives a metadata text's field keys (the personalizer's shared memo).
        """
        net, wt = self.field_sums_many([metadata], keys)
        return float(net[0]), float(wt[0])

    def field_sums_many(
        self, texts: Sequence[str | None], keys: Callable[[str], list[FieldKey]]
    ) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`field_sums` of each metadata text, as two arrays (a candidate pool's, in one call).

        Memoized by the metadata text until the next event (a pool's records recur across a user's
        queries; the memo saves the per-key lookups, the dearest per-candidate step of a re-rank).
        """
        net = np.zeros(len(texts))
        wt = np.zeros(len(texts))
        stamp = (self.version, self.events, self.t_ref)
        if self._sums_stamp != stamp:
            self._sums.clear()
            self._sums_stamp = stamp
            self._by_field = None
        memo = self._sums
        for i, text in enumerate(texts):
            if not text:
                continue
            got = memo.get(text)
            if got is None:
                got = self._sums_of(text)
                if got is None:  # lists, or more fields than field_keys keeps: its own order and cap rules
                    n = w = 0.0
                    fields = self.fields
                    for key in keys(text):
                        st = fields.get(key)
                        if st is not None:
                            n += st[0]
                            w += st[1]
                    got = (n, w)
                if len(memo) >= _MAX_SUMS_MEMO:
                    memo.clear()
                memo[text] = got
            net[i], wt[i] = got
        return net, wt

    def _sums_of(self, metadata: str) -> tuple[float, float] | None:
        """Field sums read off the metadata for the fields this profile has preferences on only, or
        None where that could differ from summing over ``field_keys`` (list values, or more fields than
        it keeps). Why: most records of a pool are new to the memo, and building every field's key of
        each (parse, a tuple per field, a lookup per key) was half of a personalized search's extra cost
        (20 candidates: ~80 us of ~125 on real text, 100K records). One pass over the record's own
        fields (a handful) finds the lists and the preferred values together."""
        by = self._by_field
        if by is None:
            by = {}
            for (name, tag, value), sums in self.fields.items():
                by.setdefault(name, {})[(tag, value)] = sums
            self._by_field = by
        compiled = _native.field_sums
        if compiled is not None:  # the loop below in one call (_hits.c), ~3x faster here
            return compiled(
                metadata, by, orjson.loads, orjson.JSONDecodeError, _MAX_PAIRS_PER_RECORD, _MAX_VALUE_CHARS
            )
        try:
            meta = orjson.loads(metadata)
        except orjson.JSONDecodeError:
            return None
        if type(meta) is not dict or len(meta) > _MAX_PAIRS_PER_RECORD:
            return None
        net = wt = 0.0
        st: list[float] | None
        for name, v in meta.items():
            t = type(v)
            if t is list:
                return None
            table = by.get(name)
            if table is None:
                continue
            if t is bool:
                st = table.get(("b", v))
            elif t is int:
                st = table.get(("i", v))
            elif t is str:
                st = table.get(("s", v)) if len(v) <= _MAX_VALUE_CHARS else None
            else:
                continue
            if st is not None:
                net += st[0]
                wt += st[1]
        return net, wt

    def strength(self, now: float) -> float:
        """``c = W / (W + 1)`` at ``now``."""
        w = (self.w_pos + self.w_neg) * self.decay(now)
        return w / (w + 1.0)

    def snapshot(self, user: str, now: float, beta: float, gamma: float) -> Profile:
        """The public, frozen view at ``now``."""
        f = self.decay(now)
        prefs = [
            FieldPreference(k[0], k[2], (st[0] * f) / (st[1] * f + 1.0), st[1] * f)
            for k, st in self.fields.items()
        ]
        prefs.sort(key=lambda fp: (-abs(fp.preference), fp.field, str(fp.value)))
        norm = float(np.linalg.norm(self.vector(beta, gamma)))
        return Profile(
            user,
            self.version,
            self.events,
            norm if math.isfinite(norm) else 0.0,
            self.strength(now),
            len(self.records),
            tuple(prefs[:20]),
            now,
        )
