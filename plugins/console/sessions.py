"""Console sessions: the admin key stays in this process's memory, the browser holds only an
opaque random id.

The session cookie carries ``secrets.token_urlsafe(32)`` and nothing else; the key it stands
for never leaves the server again after sign-in, so no script, extension or cache on the
browser's side can read it, and a cookie that leaks is useless once the session ends. A
session ends on sign-out, after ``console.session_idle_seconds`` without a request, after
``console.session_max_seconds`` in all, or when the key stops working (the admin API then
answers 401 and the console forgets the session).

Each form the console renders carries a single-use token of the session (its CSRF token):
a post without one of the session's live tokens is refused, so another site cannot post on
the admin's behalf, and a form submitted twice (a reload of the answer to a create) is
refused the second time instead of creating a second key.

Sessions live in this process only: another replica, or another worker of this one
(``server.workers``), does not know them.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

#: Live form tokens kept per session (one per page rendered, the oldest dropped first): a
#: page open in a tab for longer than this many later renders must be reloaded to post.
FORM_TOKENS = 64
#: Sessions kept at most per process (the oldest dropped first); only admin keys make one.
MAX_SESSIONS = 10_000


def _digest(token: str) -> str:
    # Looked up by digest: what the tables hold is no cookie a memory dump could replay.
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(eq=False)
class Session:
    """One signed-in admin."""

    #: The admin key, used for every admin API call made for this session.
    key: str
    key_id: str
    owner: str
    org: str
    role: str
    #: The admin actions the key's role grants (decides the navigation shown).
    actions: tuple[str, ...]
    started: float
    seen: float
    _tokens: OrderedDict[str, None] = field(default_factory=OrderedDict, repr=False)

    def __repr__(self) -> str:
        return f"Session(key_id={self.key_id!r}, owner={self.owner!r}, org={self.org!r})"

    def issue_token(self) -> str:
        """A fresh single-use form token."""
        token = secrets.token_urlsafe(24)
        self._tokens[_digest(token)] = None
        while len(self._tokens) > FORM_TOKENS:
            self._tokens.popitem(last=False)
        return token

    def redeem_token(self, token: str | None) -> bool:
        """Whether ``token`` is a live form token of this session; it is spent either way."""
        if not token:
            return False
        return self._tokens.pop(_digest(token), False) is None


class SessionStore:
    """The console's sessions in this process, with idle and absolute expiry."""

    def __init__(self, idle_seconds: float, max_seconds: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.idle_seconds = idle_seconds
        self.max_seconds = max_seconds
        self._clock = clock
        self._sessions: OrderedDict[str, Session] = OrderedDict()

    def __len__(self) -> int:
        return len(self._sessions)

    def open(self, key: str, key_id: str, owner: str, org: str, role: str,
             actions: tuple[str, ...]) -> tuple[str, Session]:
        """A new session for a key the admin API accepted; returns the cookie value (shown to
        nobody else) and the session."""
        self._sweep()
        now = self._clock()
        sid = secrets.token_urlsafe(32)
        session = Session(key, key_id, owner, org, role, actions, started=now, seen=now)
        self._sessions[_digest(sid)] = session
        while len(self._sessions) > MAX_SESSIONS:
            self._sessions.popitem(last=False)
        return sid, session

    def find(self, sid: str | None) -> Session | None:
        """The live session of cookie value ``sid`` (its idle time starts again), or
        ``None``."""
        if not sid:
            return None
        digest = _digest(sid)
        session = self._sessions.get(digest)
        if session is None:
            return None
        now = self._clock()
        if self._expired(session, now):
            del self._sessions[digest]
            return None
        session.seen = now
        return session

    def close(self, sid: str | None) -> None:
        """End the session of ``sid`` (nothing when there is none)."""
        if sid:
            self._sessions.pop(_digest(sid), None)

    def clear(self) -> None:
        """End every session (at shutdown: the keys leave memory with them)."""
        self._sessions.clear()

    def _expired(self, session: Session, now: float) -> bool:
        return (now - session.seen > self.idle_seconds
                or now - session.started > self.max_seconds)

    def _sweep(self) -> None:
        now = self._clock()
        for digest in [d for d, s in self._sessions.items() if self._expired(s, now)]:
            del self._sessions[digest]
