"""Profiles of one collection kept in step with its durable feedback events.

Source of truth: the store's ``feedback`` table. A profile here is a cache of the replayed events: built
on first use, brought up to date before each use by applying the events added since (an indexed
``MAX(eid), COUNT(*)`` tells whether any were; it is skipped while the store's read token says nothing
at all was committed since the profile was last found current, which saves ~100 us a search),
rebuilt from scratch when events it holds are gone (the user was forgotten, by this process or
another). So events written by other processes are seen by the
next personalized search, and a profile never outlives its events.

Durability rule: :meth:`Personalizer.record` returns after the event's transaction committed (the
store's rule; with ``Durability.FULL`` it survives power loss, else kill -9).

Isolation rule: a profile is built from one user's events only, and a user's personalized results are
cached in a namespace of their own (:meth:`namespace`) under their profile version, so nothing learned
from one user can reach another's results.

Threads: one lock guards the profiles and session histories; events are read from the store under it
(reads only, milliseconds at most), re-ranking runs under it (tens of microseconds).
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence

import numpy as np
import orjson

from ..storage.sqlite import FeedbackRow, Store
from .model import Profile, ProfileState, field_keys
from .rerank import Candidates, NumpyReranker, Reranker
from .settings import PersonalizeConfig
from .signals import FeedbackArgs, signal

__all__ = ["Personalizer"]

_MAX_USERS = 1024  # profiles kept in memory (least recently used dropped; rebuilt from events)
_MAX_SESSIONS = 1024  # session histories kept for de-duplication
_MAX_USER_NS = 4096  # users whose cache namespace name is memoized
_MAX_SEEN = 1000  # ids remembered per session
_MAX_KEY_MEMO = 50_000  # metadata texts whose field keys are memoized (shared by all users)


class Personalizer:
    """Feedback events, profiles and re-ranking for one collection.

    Args:
        store: The durable store.
        cid: The collection's id in the store.
        dim: Vector dimension.
        salt: Makes cache namespace names unguessable from user names (the store and collection ids).
        clock: The time source (Unix seconds); tests pass their own.
        reranker: The re-ranking implementation (default :class:`NumpyReranker`).
    """

    def __init__(
        self,
        store: Store,
        cid: int,
        dim: int,
        salt: str,
        clock: Callable[[], float] = time.time,
        reranker: Reranker | None = None,
    ) -> None:
        self._store = store
        self._cid = cid
        self._dim = dim
        self._salt = salt.encode()
        self._user_ns: dict[str, str] = {}  # user -> namespace without a session (a hash per search: ~5 us)
        self.clock = clock
        self._reranker: Reranker = reranker or NumpyReranker()
        self._lock = threading.Lock()
        self._states: OrderedDict[str, ProfileState] = OrderedDict()
        # user -> the store's read token when their profile was last found current (Store.read_token)
        self._tokens: dict[str, tuple[int, int]] = {}
        self._seen: OrderedDict[tuple[str, str], OrderedDict[str, None]] = OrderedDict()
        self._sessions: dict[str, set[str]] = {}  # sessions with a cache namespace, per user
        self._keys: dict[str, list[tuple[str, str, object]]] = {}  # metadata text -> field keys
        # read at open; a change made by another process is seen after it reopens the collection
        self._config = PersonalizeConfig.from_json(store.personalization(cid))

    @property
    def config(self) -> PersonalizeConfig:
        """The collection's personalization settings."""
        return self._config

    def configure(self, **changes: object) -> PersonalizeConfig:
        """Change and store settings; a new half-life rebuilds profiles (their sums depend on it)."""
        new = self._config.replace(**changes)
        if new != self._config:
            self._store.set_personalization(self._cid, new.to_json())
            with self._lock:
                if new.half_life_s != self._config.half_life_s:
                    self._states.clear()
                    self._tokens.clear()
                self._config = new
        return new

    def namespace(self, user: str, session: str | None, *, track: bool = True) -> str:
        """The result-cache namespace of a user's personalized searches (and session)."""
        if session is None:
            name = self._user_ns.get(user)
            if name is not None:
                return name
        h = hashlib.blake2b(self._salt + b"\0" + user.encode("utf-8", "surrogatepass"), digest_size=16)
        if session is not None:
            if track:
                with self._lock:  # remembered so that forget_user finds the namespace again
                    sessions = self._sessions.setdefault(user, set())
                    if len(sessions) < _MAX_SESSIONS:
                        sessions.add(session)
            h.update(b"\0" + session.encode("utf-8", "surrogatepass"))
            return "\0personal:" + h.hexdigest()
        name = "\0personal:" + h.hexdigest()
        if len(self._user_ns) >= _MAX_USER_NS:
            self._user_ns.clear()  # a cold memo costs one hash per user, never a wrong name
        self._user_ns[user] = name
        return name

    def forget_namespaces(self, user: str) -> list[str]:
        """Every cache namespace this process made for ``user`` (forgetting which they were)."""
        with self._lock:
            sessions = sorted(self._sessions.pop(user, ()))
        names = [self.namespace(user, None, track=False)] + [
            self.namespace(user, s, track=False) for s in sessions
        ]
        self._user_ns.pop(user, None)
        return names

    # -- events ------------------------------------------------------------------------------------
    def record(self, args: FeedbackArgs, query: bytes | None, query_text: str | None) -> int:
        """Store one event durably; returns its id (the user's new profile version)."""
        eid = self._store.add_feedback(
            self._cid,
            args.user,
            args.rid,
            session=args.session,
            relevant=args.relevant,
            rating=args.rating,
            dwell_s=args.dwell_s,
            query=query,
            query_text=query_text,
            ts=self.clock(),
        )
        with self._lock:
            # our own commit: on an in-memory store it does not change the read token, so never trust it
            self._tokens.pop(args.user, None)
            if args.user in self._states:  # keep a cached profile current; others load when used
                self._catch_up(args.user)
        return eid

    def forget(self, user: str) -> int:
        """Delete a user's events, profile and session histories; returns how many events were deleted."""
        n = self._store.forget_feedback(self._cid, user)
        with self._lock:
            self._states.pop(user, None)
            self._tokens.pop(user, None)
            for key in [key for key in self._seen if key[0] == user]:
                del self._seen[key]
        return n

    def known(self, user: str) -> bool:
        """Whether this process holds anything of ``user`` in memory (for tests of forget_user)."""
        with self._lock:
            return user in self._states or user in self._sessions or any(key[0] == user for key in self._seen)

    # -- profiles ----------------------------------------------------------------------------------
    def state(self, user: str) -> ProfileState:
        """The user's profile, brought up to date with the store (call under no lock)."""
        with self._lock:
            return self._catch_up(user)

    def _catch_up(self, user: str) -> ProfileState:
        # the token is read before the events: a commit after it changes the next token
        token = self._store.read_token()
        st = self._states.get(user)
        if st is not None and self._tokens.get(user) == token:
            self._states.move_to_end(user)  # nothing committed anywhere since it was current
            return st
        version, count = self._store.feedback_version(self._cid, user)
        if st is not None and st.version == version and st.events == count:
            self._tokens[user] = token
            self._states.move_to_end(user)
            return st
        rows = [] if st is None else self._store.feedback_since(self._cid, user, st.version)
        if st is None or st.events + len(rows) != count:
            # first use, or events this profile holds are gone (forgotten elsewhere): rebuild
            st = ProfileState(self._dim, self._config.half_life_s)
            rows = self._store.feedback_since(self._cid, user, 0)
        self._apply(st, rows)
        self._states[user] = st
        self._states.move_to_end(user)
        self._tokens[user] = token
        while len(self._states) > _MAX_USERS:
            self._tokens.pop(self._states.popitem(last=False)[0], None)
        return st

    def _apply(self, st: ProfileState, rows: Sequence[FeedbackRow]) -> None:
        if not rows:
            return
        stored = self._store.rows_by_ids(self._cid, sorted({r.id for r in rows}), vectors=True)
        units: dict[str, np.ndarray | None] = {}
        keys: dict[str, list[tuple[str, str, object]]] = {}
        for rid, row in stored.items():
            unit = None
            if row.vector is not None:
                v = np.frombuffer(row.vector, np.float32).astype(np.float64)
                n = float(np.linalg.norm(v))
                unit = v / n if n > 0 and np.isfinite(n) else None
            units[rid] = unit
            keys[rid] = field_keys(orjson.loads(row.metadata)) if row.metadata else []
        cfg = self._config
        for r in rows:
            # a record deleted since keeps its per-record statistic but adds no vector or fields
            s = signal(r.relevant, r.rating, r.dwell_s, cfg.dwell_full_s)
            st.apply(r.eid, s, r.ts, units.get(r.id), keys.get(r.id, []), r.id)

    def profile(self, user: str) -> Profile:
        """The user's profile as of now (an unknown user has an empty one, version 0)."""
        now = self.clock()
        with self._lock:
            st = self._catch_up(user)
            return st.snapshot(user, now, self._config.rocchio_beta, self._config.rocchio_gamma)

    def field_keys(self, metadata: str | None) -> list[tuple[str, str, object]]:
        """A record's field keys from its metadata text, memoized by that text (bounded)."""
        if not metadata:
            return []
        keys = self._keys.get(metadata)
        if keys is None:
            keys = field_keys(orjson.loads(metadata))
            if len(self._keys) >= _MAX_KEY_MEMO:
                self._keys.clear()  # a cold memo costs a parse per candidate, never a wrong key
            self._keys[metadata] = keys
        return keys

    # -- ranking -----------------------------------------------------------------------------------
    def rerank(self, user: str, st: ProfileState, cand: Candidates, session: str | None) -> np.ndarray:
        """Rank scores of a candidate pool for ``user`` (see ``rerank.py``)."""
        now = self.clock()
        with self._lock:
            cfg = self._config
            seen: frozenset[str] = frozenset()
            if session is not None and cfg.session_penalty > 0:
                got = self._seen.get((user, session))
                seen = frozenset(got) if got else frozenset()
            return self._reranker.scores(cand, st, cfg, seen, now)

    def remember(self, user: str, session: str, ids: Sequence[str]) -> None:
        """Note the ids a session was given (session de-duplication; only while the penalty is on)."""
        with self._lock:
            seen = self._seen.get((user, session))
            if seen is None:
                seen = self._seen[(user, session)] = OrderedDict()
            self._seen.move_to_end((user, session))
            for rid in ids:
                seen[rid] = None
                seen.move_to_end(rid)
            while len(seen) > _MAX_SEEN:
                seen.popitem(last=False)
            while len(self._seen) > _MAX_SESSIONS:
                self._seen.popitem(last=False)
