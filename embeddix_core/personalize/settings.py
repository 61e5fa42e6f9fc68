"""Per-collection personalization settings: the re-ranking weights and the decay, as data.

Stored with the collection (store table ``personalization``, one JSON row per collection with a
``"format"`` number) and merged as defaults -> stored -> arguments of ``Collection.personalization``.
They live apart from ``CollectionConfig`` because they may change at any time without touching the
index (``CollectionConfig`` holds what is fixed at build time).
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from typing import Any

from ..errors import CorruptionError, InvalidArgumentError

__all__ = ["PersonalizeConfig"]

_FORMAT = 1
_WEIGHTS = ("w_profile", "w_feedback", "w_fields", "w_recency", "session_penalty")


@dataclass(frozen=True, slots=True)
class PersonalizeConfig:
    """How personalized searches re-rank (see ``rerank.py`` for the formula these weights enter).

    Attributes:
        half_life_s: Feedback decay: an event counts half as much this many seconds later (7 days).
        candidate_factor: A personalized search re-ranks ``candidate_factor * k`` candidates (at least
            the planner's beam for k, so its top k by similarity is a plain search's). 2 by default:
            on the simulated-users benchmark, 2 kept most of 4's NDCG lift (region +50% against +74%,
            field +85% against +122% over plain) at 1.18-1.33x plain p50 instead of 1.35-1.40x.
        w_profile: Weight of the profile similarity (cosine of a candidate and the preference vector).
        w_feedback: Weight of the record's own feedback statistic.
        w_fields: Weight of the metadata field preferences.
        w_recency: Weight of recency (needs ``recency_field``; 0 = off).
        recency_field: A numeric metadata field holding the record's time (Unix seconds).
        recency_half_life_s: Age at which the recency term halves (30 days).
        session_penalty: Subtracted from records already returned in the same ``session`` (0 = off).
        rocchio_beta: Weight of the liked records' mean vector in the preference vector.
        rocchio_gamma: Weight of the disliked records' mean vector (subtracted).
        dwell_full_s: Dwell time that counts as the strongest implicit signal (+0.5).

    The adjustment weights (``w_*`` and ``session_penalty``) must sum to at most 1: each term they
    multiply lies in [-1, 1], so a record's rank score moves at most that far from its similarity.
    """

    half_life_s: float = 7 * 86400.0
    candidate_factor: int = 2
    w_profile: float = 0.25
    w_feedback: float = 0.15
    w_fields: float = 0.05
    w_recency: float = 0.0
    recency_field: str | None = None
    recency_half_life_s: float = 30 * 86400.0
    session_penalty: float = 0.0
    rocchio_beta: float = 0.75
    rocchio_gamma: float = 0.25
    dwell_full_s: float = 30.0

    def __post_init__(self) -> None:
        for name in ("half_life_s", "recency_half_life_s", "dwell_full_s"):
            v = getattr(self, name)
            if not _real(v) or not (v > 0 and math.isfinite(v)):
                raise InvalidArgumentError(f"{name} must be a positive number of seconds; got {v!r}")
        for name in (*_WEIGHTS, "rocchio_beta", "rocchio_gamma"):
            v = getattr(self, name)
            if not _real(v) or not 0.0 <= v <= 1.0:
                raise InvalidArgumentError(f"{name} must be a number in [0, 1]; got {v!r}")
        total = sum(getattr(self, n) for n in _WEIGHTS)
        if total > 1.0 + 1e-9:
            raise InvalidArgumentError(
                f"the adjustment weights {_WEIGHTS} must sum to at most 1 (similarity comes first); "
                f"they sum to {total:.3f}: lower some of them"
            )
        cf = self.candidate_factor
        if isinstance(cf, bool) or not isinstance(cf, int) or not 1 <= cf <= 64:
            raise InvalidArgumentError(f"candidate_factor must be an integer in [1, 64]; got {cf!r}")
        if self.recency_field is not None and (
            not isinstance(self.recency_field, str) or not self.recency_field
        ):
            raise InvalidArgumentError(
                f"recency_field must be a metadata field name or None; got {self.recency_field!r}"
            )

    def replace(self, **changes: Any) -> PersonalizeConfig:
        """A copy with ``changes`` applied (checked)."""
        names = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(changes) - names)
        if unknown:
            raise InvalidArgumentError(
                f"unknown personalization setting(s) {unknown}; known: {sorted(names)}"
            )
        return dataclasses.replace(self, **changes)

    def to_json(self) -> str:
        """The stored form (versioned JSON; never pickled)."""
        return json.dumps({"format": _FORMAT, **dataclasses.asdict(self)}, sort_keys=True)

    @classmethod
    def from_json(cls, text: str | None) -> PersonalizeConfig:
        """Parse the stored form; None gives the defaults.

        Raises:
            CorruptionError: The stored text is not settings of a known format.
        """
        if text is None:
            return cls()
        try:
            data = json.loads(text)
            fmt = data.pop("format")
        except (ValueError, KeyError, AttributeError, TypeError) as exc:
            raise CorruptionError(f"unreadable personalization settings {text[:80]!r}: {exc}") from exc
        if fmt != _FORMAT:
            raise CorruptionError(
                f"personalization settings of format {fmt!r}; this Embeddix reads format {_FORMAT}"
            )
        known = {f.name for f in dataclasses.fields(cls)}
        # settings added by a later release are ignored rather than refused: they only tune ranking
        return cls(**{k: v for k, v in data.items() if k in known})


def _real(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)
