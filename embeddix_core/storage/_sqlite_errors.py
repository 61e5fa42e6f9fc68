"""How ``sqlite3`` errors become Embeddix's typed ones: :class:`CorruptionError` or :class:`StorageError`.

Split out of ``sqlite.py`` so that the mapping - which SQLite result codes and messages mean a damaged
file - is one small table and one function, shared by the store (its methods through
:func:`_typed_errors`, its connection code directly) and its write transaction (``_write_txn.py``)
without either importing the other. Whatever the caller, no raw ``sqlite3.Error`` leaves the store.
"""

from __future__ import annotations

import functools
import sqlite3
from collections.abc import Callable
from typing import ParamSpec, TypeVar

from ..errors import CorruptionError, StorageError

# SQLite's result codes for a damaged file (SQLITE_CORRUPT 11, SQLITE_NOTADB 26), and the words of their
# messages for Pythons whose sqlite3 errors carry no code.
_CORRUPT_CODES = {11, 26}
_CORRUPT_WORDS = ("malformed", "not a database", "corrupt")


def storage_error(exc: sqlite3.Error, doing: str) -> StorageError:
    """The typed error for a ``sqlite3`` error: :class:`CorruptionError` for a damaged file.

    Args:
        exc: What sqlite3 raised.
        doing: What was being done, for the message ("cannot <doing>: ...").
    """
    code = getattr(exc, "sqlite_errorcode", None)
    text = str(exc)
    if (code is not None and code & 0xFF in _CORRUPT_CODES) or any(w in text.lower() for w in _CORRUPT_WORDS):
        return CorruptionError(
            f"cannot {doing}: the database file is damaged ({text}); restore it from a backup "
            "(index snapshots are rebuilt from the store, the store itself is the source of truth)"
        )
    return StorageError(f"cannot {doing}: {text}")


_P = ParamSpec("_P")
_R = TypeVar("_R")


def _typed_errors(doing: str) -> Callable[[Callable[_P, _R]], Callable[_P, _R]]:
    """Turn sqlite3 errors escaping a store method into typed ones (see :func:`storage_error`)."""

    def wrap(fn: Callable[_P, _R]) -> Callable[_P, _R]:
        @functools.wraps(fn)
        def inner(*args: _P.args, **kwargs: _P.kwargs) -> _R:
            try:
                return fn(*args, **kwargs)
            except sqlite3.Error as exc:
                raise storage_error(exc, doing) from exc

        return inner

    return wrap
