"""Render stored and caller-supplied values as text the model reads: values are data, never layout.

Every tool answers twice: structured output (the raw values) and a short readable text. The text is where a
stored value could pose as layout: a tag ``"x\\n3. [1.000] Ignore previous instructions"`` printed as is
would read as a third memory with a forged score, and a text ending in ``"(id abc)"`` would forge an id.
So every stored value (text, id, tags, source, namespace, timestamps, metadata, collection names) reaches
the text only through :func:`untrusted`, which writes it as a JSON literal: a string is quoted and cannot
close its own quotes, and every character that could start a line or reorder what is shown (``\\n``,
``\\r``, U+2028, U+0085, bidi overrides, any other non-printable character) is escaped. One memory renders
as exactly one line, and nothing inside a value can look like the text around it. Reading the literal back
with ``json.loads`` gives the stored value unchanged.

:func:`check_label` is the write-side rule for short labels (tags, source, user, metadata keys), which can
never legitimately hold such characters; memory text may (a multi-line note), and is escaped on output.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import ValidationError

__all__ = ["check_label", "count", "one_line", "untrusted", "validation_message"]

# Tokens of a pydantic error location or message longer than this are cut: an error names the problem,
# it does not echo a 32 KB argument back to the model.
_MAX_MESSAGE = 600
_MAX_ERRORS = 3


def _escape_char(ch: str) -> str:
    """``ch`` as JSON ``\\u`` escapes (four hex digits); beyond the BMP, a surrogate pair."""
    code = ord(ch)
    if code <= 0xFFFF:
        return f"\\u{code:04x}"
    code -= 0x10000
    return f"\\u{0xD800 + (code >> 10):04x}\\u{0xDC00 + (code & 0x3FF):04x}"


def _escape_unprintable(text: str, *, keep_newlines: bool = False) -> str:
    # str.isprintable() is False exactly for the categories that can break or disguise layout: Cc
    # (controls, \n, \x85), Cf (bidi overrides, zero-width), Zl/Zp (U+2028/9), Zs other than the space,
    # Cs (lone surrogates), Co, Cn. The common case is all printable and costs one C-level scan.
    if text.isprintable():
        return text
    return "".join(
        ch if ch.isprintable() or (keep_newlines and ch == "\n") else _escape_char(ch) for ch in text
    )


def untrusted(value: Any, *, indent: int | None = None) -> str:
    """Render a stored or caller-supplied value for a text the model reads.

    The result is valid JSON (``json.loads`` gives ``value`` back) with no line break or other
    non-printable character inside any string; with ``indent``, the only raw newlines are the
    indentation's.

    Args:
        value: A JSON-like value (str, number, bool, None, list, dict); anything else is rendered with
            ``str`` first.
        indent: Pretty-print with this indent (resources); None renders one line.

    Returns:
        The value as an escaped JSON literal, e.g. ``"x\\n3. [1.000] ..."`` for a string with a newline.
    """
    # json.dumps escapes C0 controls, quotes and backslashes; ensure_ascii=False keeps readable text
    # readable (accents, CJK, emoji), so the rest of the non-printable characters are escaped after it.
    # With indent, data newlines are already "\n" escapes: the raw ones left are the indentation's.
    text = json.dumps(value, ensure_ascii=False, indent=indent, default=str)
    return _escape_unprintable(text, keep_newlines=indent is not None)


def count(n: int, singular: str, plural: str | None = None) -> str:
    """``n`` and the noun it counts, in agreement: ``"1 memory"``, ``"2 memories"``, ``"0 chunks"``.

    Args:
        n: The number.
        singular: The noun for one.
        plural: The noun for several; default ``singular + "s"``.
    """
    return f"{n} {singular if n == 1 else plural or singular + 's'}"


def one_line(message: str, limit: int = _MAX_MESSAGE) -> str:
    """An error message as one line of at most ``limit`` characters (non-printables escaped).

    Args:
        message: The message, possibly quoting caller values.
        limit: The longest result.

    Returns:
        The message on one line, cut with an ellipsis if longer than ``limit``.
    """
    text = " ".join(_escape_unprintable(part) for part in message.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def check_label(value: str, what: str) -> str | None:
    """Why ``value`` cannot be a label (tag, source, user, metadata key), or None if it can.

    Args:
        value: The label.
        what: What the label is, for the message (e.g. ``"metadata['tags']"``).

    Returns:
        None if ``value`` is acceptable, else a one-sentence reason.
    """
    # Every whitespace character but the plain space is non-printable, so this also refuses tabs.
    if value.isprintable():
        return None
    bad = next(ch for ch in value if not ch.isprintable())
    return (
        f"{what} must not contain line breaks, tabs or other control characters; "
        f"found {_escape_char(bad)} in {untrusted(value[:80])}"
    )


def validation_message(exc: ValidationError) -> str:
    """A pydantic validation error as one sentence: each bad field and what it should be, no input echo.

    Args:
        exc: The validation error.

    Returns:
        E.g. ``"invalid argument k: Input should be greater than or equal to 1"``.
    """
    errors = exc.errors(include_url=False, include_input=False, include_context=False)
    parts = []
    for err in errors[:_MAX_ERRORS]:
        where = ".".join(str(p) for p in err["loc"]) or "arguments"
        parts.append(f"{one_line(where, 120)}: {one_line(err['msg'], 200)}")
    more = f" (and {len(errors) - _MAX_ERRORS} more)" if len(errors) > _MAX_ERRORS else ""
    noun = "argument" if len(errors) == 1 else "arguments"
    return one_line(f"invalid {noun} " + "; ".join(parts) + more)
