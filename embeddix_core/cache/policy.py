"""Which cache tiers pay back on this collection's observed workload, from measured costs.

Why: every tier has a price paid by queries it does not serve. The semantic tier (a near duplicate of a
cached query served from that query's re-ranked candidates) needs candidate sets that can certify: a
default miss must search a beam several times wider than an uncached search, keep ``candidate_factor * k``
candidates and read their vectors for int8 codes; a semantic lookup then runs a probe search and a
re-rank. Measured on 100K MiniLM vectors: a widened miss costs ~10x an uncached search at recall 0.95, a
semantic hit more than the search it replaces. A tier that is always on makes the common case (a new
query) the slow one.

So the semantic tier starts off and is used only where the numbers say it pays:

* ``watching``: misses search with the plan's beam (what ``cache=False`` costs). A sample of misses
  (one in eight) is compared against a ring of recent miss queries: the share with a near duplicate
  (cosine at least ``similarity``, the tier's own pre-filter) estimates how often the tier could serve.
* ``trial``: when that share could pay back under optimistic costs, misses widen and semantic lookups
  run for a bounded window, measuring what a widened miss, a semantic hit and a failed semantic lookup
  really cost here, and how often a lookup certifies.
* ``on`` / ``off``: the measured gain per query (near share x success x (plain - hit)) against the measured
  loss (the widening every other miss pays, the failed lookups) decides. ``on`` is re-checked every
  ``_RECHECK`` lookups with fresh numbers; ``off`` goes back to watching and may try again later, after
  a back-off that doubles each time a trial fails.

The exact tier (same query bytes and parameters) costs every miss the keeping of its answer (15-60 us
measured, ``overhead_us``: the entry, its query row for invalidation, its rows) and serves a repeat in
~10-20 us. It starts on (a user who repeats a query expects it cached) and is judged every ``_WINDOW``
lookups: off when the repeats seen would not pay for the keeping, on again when they would. While off,
misses remember their keys' hashes (the key's hash is computed by the lookup anyway), so the repeats
the tier *would* have served are counted. Entries kept before it went off still serve.

``policy="always"`` (``cache_policy``) keeps both tiers on: the behaviour before this policy, which
tests of the tiers' correctness use. ``cache_semantic=False`` keeps the semantic tier off. Nothing
here decides whether a hit is *right*: that is the certifier's bound (``certify.py``); this only decides
whether trying is worth it.

Threads: counters are updated without a lock (a lost update under a race skews an average a little and
is harmless); state changes take the policy's lock.
"""

from __future__ import annotations

import contextlib
import threading
from typing import Any

import numpy as np

__all__ = ["TierPolicy"]

_ALPHA = 0.05  # EWMA weight of a new cost sample
_RING = 256  # recent miss queries compared against (near-duplicate share)
_SAMPLE_EVERY = 8  # one miss in this many is compared (a 256 x d product: 5-10 us cold, ~1 us a miss)
_MIN_SAMPLES = 48  # compared misses before a decision
_TRIAL_MISSES = 48  # widened misses a trial measures at least
_TRIAL_ATTEMPTS = 16  # semantic lookups a trial measures at least (or _TRIAL_MAX misses)
_TRIAL_MAX = 512
_RECHECK = 256  # lookups between two checks while on
_BACKOFF = 2048  # misses before watching may start another trial (doubles after each failed one)
_PRIOR_SUCCESS = 0.9  # share of near duplicates certified (measured 0.92 on MiniLM text, 80 candidates)
_PRIOR_HIT = 0.3  # a semantic hit's cost as a share of a plain search, before one is measured (optimistic)
_MARGIN = 1.1  # the gain must beat the loss by this factor
_WINDOW = 64  # lookups between two judgements of the exact tier
_KEYS = 4096  # key hashes of recent misses remembered while the exact tier is off
_PRIOR_EXACT_HIT = 0.1  # an exact hit's cost as a share of a plain search, before one is measured


def _ewma(old: float | None, new: float) -> float:
    return new if old is None else old + _ALPHA * (new - old)


class TierPolicy:
    """The cache tiers' switches, driven by measured costs (see the module docstring).

    Args:
        policy: ``"auto"`` (decide from measurements) or ``"always"`` (both tiers on).
        semantic: Whether the semantic tier may be used at all (``cache_semantic``, and a true metric).
        dim: Vector dimension.
        similarity: The semantic pre-filter (cosine similarity) that defines a near duplicate.
    """

    def __init__(self, policy: str, semantic: bool, dim: int, similarity: float) -> None:
        self.auto = policy == "auto"
        self._semantic_auto = self.auto and semantic
        self._similarity = similarity
        self._lock = threading.Lock()
        if not semantic:
            self.state = "off"
            self.reason = "off: cache_semantic=False, or a metric without a triangle inequality"
        elif not self.auto:
            self.state, self.reason = "on", "on: cache_policy='always'"
        else:
            self.state, self.reason = "watching", "off: no measurements yet"
        # measured costs, seconds (EWMA; None until measured)
        self.plain: float | None = None  # a miss at the plan's beam: an uncached search plus the exact tier
        self.wide: float | None = None  # a widened miss (wide beam, candidates kept, codes read)
        self.hit: float | None = None  # a served semantic hit
        self.reject: float | None = None  # a semantic lookup that failed (paid on top of the search)
        self.overhead: float | None = None  # the exact tier's share of a miss (lookup + keep)
        self.exact_hit: float | None = None  # a served exact hit
        self.attempts = 0
        self.successes = 0
        self.wide_ratio = 1.0  # the widened beam over the plan's (a prior for the widened miss's cost)
        # near-duplicate share among misses
        self._ring = np.zeros((_RING, dim), np.float32)
        self._ring_n = 0
        self._ring_i = 0
        self._misses = 0
        self._sampled = 0
        self._near = 0
        # trial / re-check bookkeeping
        self._phase_misses = 0
        self._phase_wide = 0
        self._phase_attempts0 = 0
        self._lookups = 0
        self._wait = 0  # misses to watch before another trial may start
        self._backoff = _BACKOFF
        self.trials = 0
        # the exact tier
        self.exact_on = True
        self.exact_reason = "on: no measurements yet"
        self._w_lookups = 0
        self._w_hits = 0
        self._keys: dict[int, None] = {}

    # -- what the cache asks -------------------------------------------------------------------------
    def active(self) -> bool:
        """Whether semantic lookups run and default misses keep certifying candidate sets."""
        return self.state in ("on", "trial")

    def keep(self, key: bytes) -> bool:
        """Whether a miss's answer is kept (the exact tier is on); while off, counts would-be repeats."""
        if self.exact_on:
            return True
        h = hash(key)  # cached on the bytes object: the lookup's dict already computed it
        keys = self._keys
        if h in keys:
            self._w_hits += 1  # a repeat the tier would have served
        else:
            keys[h] = None
            if len(keys) > _KEYS:
                # Searches on several threads call this without a lock (its counts may be a little off,
                # which is harmless); two trimming at once must not raise into a search.
                with contextlib.suppress(RuntimeError, StopIteration):
                    keys.pop(next(iter(keys)), None)
        return False

    def _judge_exact(self) -> None:
        """Every ``_WINDOW`` lookups: is the exact tier worth its keeping on this workload?"""
        n, hits = self._w_lookups, self._w_hits
        self._w_lookups = self._w_hits = 0
        plain, overhead = self.plain, self.overhead
        if plain is None or overhead is None or not self.auto:
            return
        r = hits / n
        hit = self.exact_hit if self.exact_hit is not None else _PRIOR_EXACT_HIT * plain
        gain = r * (plain - hit)
        loss = (1.0 - r) * overhead
        was = self.exact_on
        self.exact_on = gain >= loss
        what = "served" if was else "would have served"
        self.exact_reason = (
            f"{'on' if self.exact_on else 'off'}: repeats {r:.0%} of the last {n} lookups ({what}); a "
            f"repeat is served in {_us(self.exact_hit)} against {_us(plain)} for a search, and keeping "
            f"a miss's answer costs {_us(overhead)}: saves {gain * 1e6:.0f} us, costs {loss * 1e6:.0f} "
            "us per lookup"
        )
        if self.exact_on and not was:
            self._keys.clear()

    # -- what the cache reports ------------------------------------------------------------------------
    def on_exact_hit(self, seconds: float) -> None:
        self.exact_hit = _ewma(self.exact_hit, seconds)
        self._lookups += 1
        self._w_hits += 1
        self._w_lookups += 1
        if self._w_lookups >= _WINDOW:
            self._judge_exact()

    def on_semantic(self, seconds: float, served: bool) -> None:
        """A semantic lookup: served (``seconds`` is the whole hit) or not (the failed lookup's time)."""
        self.attempts += 1
        if served:
            self.successes += 1
            self.hit = _ewma(self.hit, seconds)
            self._lookups += 1
            self._w_lookups += 1
        else:
            self.reject = _ewma(self.reject, seconds)

    def on_miss(
        self, q: np.ndarray, seconds: float, overhead: float | None, widened: bool, wide_ratio: float
    ) -> None:
        """A default miss was searched: ``seconds`` in all, ``overhead`` of it keeping the answer (None:
        not kept)."""
        self._lookups += 1
        self._misses += 1
        if widened:
            self.wide = _ewma(self.wide, seconds)
            self._phase_wide += 1
        else:
            # the plain cost is what an uncached search costs: without the keeping
            self.plain = _ewma(self.plain, seconds - (overhead or 0.0))
            if overhead is not None:
                self.overhead = _ewma(self.overhead, overhead)
            self.wide_ratio = wide_ratio
        self._w_lookups += 1
        if self._w_lookups >= _WINDOW:
            self._judge_exact()
        if not self._semantic_auto:
            return
        if self._misses % _SAMPLE_EVERY == 0:
            self._sample(q)
        self._phase_misses += 1
        state = self.state
        if state == "watching":
            if self._wait > 0:
                self._wait -= 1
            elif self._sampled >= _MIN_SAMPLES and self._sampled % 16 == 0:
                self._consider_trial()
        elif state == "trial":
            attempts = self.attempts - self._phase_attempts0
            if self._phase_wide >= _TRIAL_MISSES and (
                attempts >= _TRIAL_ATTEMPTS or self._phase_misses >= _TRIAL_MAX
            ):
                self._decide(trial=True)
        elif state == "on" and self._lookups >= _RECHECK:
            self._decide(trial=False)

    # -- measuring the near-duplicate share ----------------------------------------------------------
    def _sample(self, q: np.ndarray) -> None:
        n = self._ring_n
        if n:
            v = q / (float(np.linalg.norm(q)) or 1.0)
            best = float((self._ring[:n] @ v).max())
            self._sampled += 1
            self._near += best >= self._similarity
            # the share drifts with the workload: halve both counts now and then
            if self._sampled >= 4 * _RING:
                self._sampled //= 2
                self._near //= 2
        self._ring[self._ring_i] = q / (float(np.linalg.norm(q)) or 1.0)
        self._ring_i = (self._ring_i + 1) % _RING
        self._ring_n = min(self._ring_n + 1, _RING)

    @property
    def near_share(self) -> float | None:
        """Share of sampled misses with a near duplicate among recent misses (None before a sample)."""
        return self._near / self._sampled if self._sampled else None

    # -- decisions -----------------------------------------------------------------------------------
    def _balance(self, p: float) -> tuple[float, float]:
        """(gain, loss) per lookup of turning the tier on, in seconds, from measured costs or priors."""
        plain = self.plain or 0.0
        s = self.successes / self.attempts if self.attempts >= _TRIAL_ATTEMPTS else _PRIOR_SUCCESS
        hit = self.hit if self.hit is not None else _PRIOR_HIT * plain
        wide = self.wide if self.wide is not None else plain * max(1.0, self.wide_ratio)
        reject = self.reject or 0.0
        gain = p * s * (plain - hit)
        loss = (1.0 - p * s) * (wide - plain) + p * (1.0 - s) * reject
        return gain, loss

    def _consider_trial(self) -> None:
        p = self.near_share or 0.0
        gain, loss = self._balance(p)
        with self._lock:
            if self.state != "watching":
                return
            if gain > _MARGIN * loss and gain > 0:
                self.state = "trial"
                self.trials += 1
                self._phase_misses = self._phase_wide = 0
                self._phase_attempts0 = self.attempts
                self.reason = (
                    f"trial: {p:.0%} of misses had a near duplicate; measuring what a widened miss and "
                    "a semantic hit cost here"
                )
            else:
                self.reason = self._why_off(p, gain, loss)

    def _decide(self, *, trial: bool) -> None:
        attempts = max(self.attempts - self._phase_attempts0, 0)
        if trial:
            p = (attempts / self._phase_misses) if self._phase_misses else 0.0
        else:
            p = max(self.near_share or 0.0, attempts / max(self._phase_misses, 1))
        gain, loss = self._balance(p)
        with self._lock:
            self._lookups = 0
            self._phase_misses = self._phase_wide = 0
            self._phase_attempts0 = self.attempts
            if gain > _MARGIN * loss and gain > 0:
                self.state = "on"
                self.reason = (
                    f"on: near duplicates {p:.0%} of misses, a semantic hit {_us(self.hit)} against "
                    f"{_us(self.plain)} for a search, a widened miss {_us(self.wide)}: saves "
                    f"{gain * 1e6:.0f} us and costs {loss * 1e6:.0f} us per lookup"
                )
            else:
                self.state = "watching"
                self._wait = self._backoff
                self._backoff *= 2
                self.reason = self._why_off(p, gain, loss)

    def _why_off(self, p: float, gain: float, loss: float) -> str:
        measured = "measured" if self.hit is not None else "estimated"
        return (
            f"off: near duplicates {p:.0%} of misses; a semantic hit ({measured} {_us(self.hit)}) "
            f"against {_us(self.plain)} for a plain search, a widened miss "
            f"{_us(self.wide if self.wide is not None else (self.plain or 0) * self.wide_ratio)}: it would "
            f"save {gain * 1e6:.0f} us and cost {loss * 1e6:.0f} us per lookup"
        )

    def info(self) -> dict[str, Any]:
        """The tiers' state, reason and measured costs (for ``Collection.cache_info``)."""
        return {
            "exact": {
                "state": "on" if self.exact_on else "off",
                "reason": self.exact_reason,
                "hit_us": _round_us(self.exact_hit),
                "overhead_us": _round_us(self.overhead),
            },
            "semantic": {
                "state": "on" if self.state in ("on", "trial") else "off",
                "phase": self.state,
                "reason": self.reason,
                "near_share": None if self.near_share is None else round(self.near_share, 3),
                "success": round(self.successes / self.attempts, 3) if self.attempts else None,
                "plain_us": _round_us(self.plain),
                "wide_us": _round_us(self.wide),
                "hit_us": _round_us(self.hit),
                "reject_us": _round_us(self.reject),
                "trials": self.trials,
            },
        }


def _round_us(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1e6, 1)


def _us(seconds: float | None) -> str:
    return "unmeasured" if seconds is None else f"{seconds * 1e6:.0f} us"
