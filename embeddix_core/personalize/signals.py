"""The arguments of ``Collection.feedback``, checked, and the one number an event stands for.

Signal of an event, ``s`` in [-1, 1] (the first kind given wins; explicit beats implicit):

* ``relevant``: True -> +1, False -> -1;
* ``rating`` in [0, 1]: ``2 * rating - 1`` (0.5 is neutral);
* ``dwell_s`` >= 0 alone: ``0.5 * min(dwell_s / dwell_full_s, 1)`` - an implicit, weaker, never negative
  signal (a short dwell says little, not "irrelevant").
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from ..errors import InvalidArgumentError, InvalidIdError

__all__ = ["FeedbackArgs", "check_feedback", "check_user", "signal"]

_MAX_NAME_BYTES = 512


@dataclass(frozen=True, slots=True)
class FeedbackArgs:
    """Checked feedback arguments (the query is checked by the collection, which knows its dimension)."""

    rid: str
    user: str
    session: str | None
    relevant: bool | None
    rating: float | None
    dwell_s: float | None


def _name(value: Any, what: str) -> str:
    if not isinstance(value, str) or not value:
        raise InvalidArgumentError(
            f"{what} must be a non-empty string; got {type(value).__name__} {value!r:.60}"
        )
    if len(value.encode("utf-8", "surrogatepass")) > _MAX_NAME_BYTES:
        raise InvalidArgumentError(
            f"{what} must be at most {_MAX_NAME_BYTES} bytes of UTF-8; got {value[:40]!r}..."
        )
    return value


def check_user(user: Any) -> str:
    """A user name: a non-empty string of at most 512 bytes."""
    return _name(user, "user")


def check_feedback(
    rid: Any, user: Any, session: Any, relevant: Any, rating: Any, dwell_s: Any
) -> FeedbackArgs:
    """Check the arguments of one feedback event.

    Raises:
        InvalidIdError: ``rid`` is not a non-empty string.
        InvalidArgumentError: No kind of signal given, a rating outside [0, 1], a negative or non-finite
            dwell time, or a value of the wrong type.
    """
    if not isinstance(rid, str) or not rid:
        raise InvalidIdError(
            f"feedback takes one record id (a non-empty string); got {type(rid).__name__} {rid!r:.60}"
        )
    user = check_user(user)
    if session is not None:
        session = _name(session, "session")
    if relevant is not None and not isinstance(relevant, bool):
        raise InvalidArgumentError(
            f"relevant must be True, False or None; got {type(relevant).__name__} {relevant!r:.60}"
        )
    if rating is not None:
        if not _real(rating) or not 0.0 <= float(rating) <= 1.0:
            raise InvalidArgumentError(f"rating must be a number in [0, 1] (1 = best); got {rating!r:.60}")
        rating = float(rating)
    if dwell_s is not None:
        if not _real(dwell_s) or not (math.isfinite(float(dwell_s)) and float(dwell_s) >= 0.0):
            raise InvalidArgumentError(
                f"dwell_s must be a finite number of seconds >= 0; got {dwell_s!r:.60}"
            )
        dwell_s = float(dwell_s)
    if relevant is None and rating is None and dwell_s is None:
        raise InvalidArgumentError(
            "feedback needs a signal: pass relevant=True/False, rating=0..1 or dwell_s=seconds"
        )
    return FeedbackArgs(rid, user, session, relevant, rating, dwell_s)


def signal(
    relevant: bool | int | None, rating: float | None, dwell_s: float | None, dwell_full_s: float
) -> float:
    """The event's signal in [-1, 1] (see the module docstring)."""
    if relevant is not None:
        return 1.0 if relevant else -1.0
    if rating is not None:
        return 2.0 * rating - 1.0
    if dwell_s is not None:
        return 0.5 * min(dwell_s / dwell_full_s, 1.0)
    return 0.0


def _real(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(float(v))
