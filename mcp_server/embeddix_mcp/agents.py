"""Agents, their namespaces, and read-only grants between agents.

Isolation rule: every memory lives in a core collection owned by exactly one agent, named
``agent:<agent>`` (the agent's main namespace) or ``agent:<agent>:<namespace>``; document collections are
``docs:<agent>:<name>``. Agent, namespace and collection names may not contain ``:``, so no argument a
caller passes can form another agent's collection name: the only way to read another agent's memories is a
grant, and no tool writes through a grant.

Grants are stored in ``<data>/embeddix-mcp-grants.json``. Durability rule: a grant or revoke is durable when
the call returns: the file is rewritten to a temporary name, fsynced, renamed over the old one and the
directory fsynced; read-modify-write cycles of several processes on one data directory are serialized by
an ``flock`` on ``embeddix-mcp-grants.lock``. Readers re-read the file when its size or mtime changes, so a
grant made by one server process is honoured by another at its next call.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
import threading
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from embeddix_core import InvalidArgumentError, StorageError
from embeddix_core.storage import atomic_write_bytes

try:  # POSIX; on Windows a single process is assumed to manage grants
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None  # type: ignore[assignment]

__all__ = [
    "AccessDeniedError",
    "Grant",
    "GrantStore",
    "check_agent",
    "check_name",
    "docs_collection",
    "memory_collection",
    "split_memory_collection",
]

# fullmatch, not match: "$" also matches before a final "\n", which would let "alice\n" pass as a name.
_AGENT = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]{0,63}$")
_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]{0,47}$")
GRANTS_FILE = "embeddix-mcp-grants.json"
_GRANTS_MAGIC = "embeddix-mcp-grants"
_GRANTS_VERSION = 1


class AccessDeniedError(PermissionError):
    """The calling agent may not read or change what it asked for."""


def check_agent(name: Any) -> str:
    """Validate an agent name: 1-64 letters, digits, ``_``, ``-``, ``.``; no ``:``.

    Raises:
        InvalidArgumentError: The name is not allowed.
    """
    if not isinstance(name, str) or not _AGENT.fullmatch(name):
        raise InvalidArgumentError(
            f"agent name must be 1-64 characters of letters, digits, '_', '-', '.' (not starting with '-' or "
            f"'.'); got {name!r}"
        )
    return name


def check_name(name: Any, what: str = "namespace") -> str:
    """Validate a namespace or collection name: 1-48 letters, digits, ``_``, ``-``, ``.``; no ``:``.

    Raises:
        InvalidArgumentError: The name is not allowed.
    """
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise InvalidArgumentError(
            f"{what} must be 1-48 characters of letters, digits, '_', '-', '.' (not starting with '-' or "
            f"'.'; "
            f"no ':'); got {name!r}"
        )
    return name


def memory_collection(agent: str, namespace: str | None = None) -> str:
    """The core collection holding ``agent``'s memories in ``namespace`` (None: the main namespace)."""
    check_agent(agent)
    return f"agent:{agent}" if namespace is None else f"agent:{agent}:{check_name(namespace)}"


def split_memory_collection(name: str) -> tuple[str, str | None] | None:
    """Invert :func:`memory_collection`: ``(agent, namespace)``, or None for other collections."""
    parts = name.split(":")
    if parts[0] != "agent" or len(parts) not in (2, 3):
        return None
    return parts[1], (parts[2] if len(parts) == 3 else None)


def docs_collection(agent: str, name: str) -> str:
    """The core collection holding ``agent``'s document collection ``name``."""
    return f"docs:{check_agent(agent)}:{check_name(name, 'collection name')}"


@dataclass(frozen=True, slots=True)
class Grant:
    """``owner`` lets ``grantee`` read (never write) the owner's ``namespace`` (None: the main namespace)."""

    owner: str
    grantee: str
    namespace: str | None
    created_at: str

    def key(self) -> tuple[str, str, str | None]:
        return self.owner, self.grantee, self.namespace


class GrantStore:
    """Durable read-only grants between agents (a JSON file in the data directory, or memory only).

    Thread-safe; several processes may share one data directory (see the module docstring).
    """

    def __init__(self, directory: Path | None) -> None:
        self._path = None if directory is None else directory / GRANTS_FILE
        self._lock_path = None if directory is None else directory / (GRANTS_FILE[:-5] + ".lock")
        self._lock = threading.Lock()
        self._grants: dict[tuple[str, str, str | None], Grant] = {}
        self._stamp: tuple[int, int] | None = None

    # -- persistence -------------------------------------------------------------------------------
    @contextlib.contextmanager
    def _exclusive(self) -> Iterator[None]:
        with self._lock:
            if self._lock_path is None or fcntl is None:
                yield
                return
            with open(self._lock_path, "a+b") as fh:
                fcntl.flock(fh, fcntl.LOCK_EX)
                try:
                    yield
                finally:
                    fcntl.flock(fh, fcntl.LOCK_UN)

    def _refresh(self) -> None:
        """Re-read the file if another process (or handle) changed it. Call with ``_lock`` held."""
        if self._path is None:
            return
        try:
            st = self._path.stat()
        except FileNotFoundError:
            self._grants, self._stamp = {}, None
            return
        stamp = (st.st_mtime_ns, st.st_size)
        if stamp == self._stamp:
            return
        try:
            doc = json.loads(self._path.read_bytes())
        except (OSError, ValueError) as exc:
            raise StorageError(f"cannot read grants from {str(self._path)!r}: {exc}") from exc
        if not isinstance(doc, dict) or doc.get("format") != _GRANTS_MAGIC:
            raise StorageError(f"{str(self._path)!r} is not an embeddix-mcp grants file")
        if doc.get("version") != _GRANTS_VERSION:
            raise StorageError(
                f"{str(self._path)!r} has grants format version {doc.get('version')!r}; this release reads "
                f"version {_GRANTS_VERSION}; upgrade embeddix"
            )
        grants = doc.get("grants", [])
        if doc.get("sha256") != _checksum(grants):
            raise StorageError(
                f"{str(self._path)!r} failed its checksum; restore it or delete it to drop all grants"
            )
        self._grants = {g.key(): g for g in (Grant(**item) for item in grants)}
        self._stamp = stamp

    def _write(self) -> None:
        if self._path is None:
            return
        grants = [asdict(g) for g in sorted(self._grants.values(), key=Grant.key)]
        body = json.dumps(
            {
                "format": _GRANTS_MAGIC,
                "version": _GRANTS_VERSION,
                "sha256": _checksum(grants),
                "grants": grants,
            },
            indent=1,
            sort_keys=True,
        ).encode()
        atomic_write_bytes(self._path, body)  # temp file -> fsync -> rename -> fsync directory
        st = self._path.stat()
        self._stamp = (st.st_mtime_ns, st.st_size)

    # -- API ---------------------------------------------------------------------------------------
    def grant(self, owner: str, grantee: str, namespace: str | None = None) -> tuple[Grant, bool]:
        """Let ``grantee`` read ``owner``'s ``namespace``.

        Returns:
            The grant and whether it is new (False if it already existed).

        Raises:
            InvalidArgumentError: A name is invalid, or ``grantee`` is ``owner``.
        """
        check_agent(owner)
        check_agent(grantee)
        if namespace is not None:
            check_name(namespace)
        if owner == grantee:
            raise InvalidArgumentError("an agent always reads its own memories; grant to another agent")
        with self._exclusive():
            self._refresh()
            key = (owner, grantee, namespace)
            existing = self._grants.get(key)
            if existing is not None:
                return existing, False
            g = Grant(owner, grantee, namespace, datetime.now(UTC).isoformat(timespec="seconds"))
            self._grants[key] = g
            self._write()
            return g, True

    def revoke(self, owner: str, grantee: str, namespace: str | None = None) -> bool:
        """Withdraw a grant; returns whether one existed."""
        with self._exclusive():
            self._refresh()
            if self._grants.pop((owner, grantee, namespace), None) is None:
                return False
            self._write()
            return True

    def allowed(self, owner: str, grantee: str, namespace: str | None = None) -> bool:
        """Whether ``grantee`` may read ``owner``'s ``namespace``."""
        if owner == grantee:
            return True
        with self._lock:
            self._refresh()
            return (owner, grantee, namespace) in self._grants

    def given_by(self, owner: str) -> list[Grant]:
        """Grants ``owner`` has made."""
        with self._lock:
            self._refresh()
            return [g for g in self._grants.values() if g.owner == owner]

    def received_by(self, grantee: str) -> list[Grant]:
        """Grants made to ``grantee``."""
        with self._lock:
            self._refresh()
            return [g for g in self._grants.values() if g.grantee == grantee]


def _checksum(grants: list[dict[str, Any]]) -> str:
    return hashlib.sha256(json.dumps(grants, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
