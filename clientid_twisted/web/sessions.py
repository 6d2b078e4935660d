# -*- test-case-name: tests.test_web_resource -*-
"""
Signed-in sessions of the device page, and the CSRF tokens of its forms.

Sessions live in this process's memory: they are short (an idle expiry of
minutes), a restart only asks the owner for a new sign-in link, and nothing
about them needs to be shared between frontends (the device state they
change is in the store).  Twisted's own C{Request.getSession} is not used
because its cookie cannot be made C{Secure; HttpOnly; SameSite=Strict} with
a C{__Host-} name, and its sessions expire only by a timer per session.
"""

from __future__ import annotations

import hmac
import secrets
import time
from typing import Callable

from attrs import define

__all__ = ["Session", "SessionStore", "SESSION_COOKIE", "CSRF_COOKIE", "tokensEqual"]

SESSION_COOKIE = b"__Host-clientid-session"
"""The session cookie: C{__Host-} pins it to this origin, HTTPS, path /."""
CSRF_COOKIE = b"__Host-clientid-csrf"
"""The anonymous forms' double-submit cookie."""


def tokensEqual(a: str | None, b: str | None) -> bool:
    """
    Whether two secrets are equal, in time independent of where they differ.
    """
    if not a or not b:
        return False
    return hmac.compare_digest(a.encode("ascii", "replace"), b.encode("ascii", "replace"))


@define
class Session:
    """
    One signed-in owner.

    @ivar csrf: The token every form of this session carries.
    """

    sessionID: str
    account: str
    csrf: str
    lastActive: float


class SessionStore:
    """
    Sessions by id, each ending after C{idle} seconds without a request.
    """

    def __init__(self, idle: float = 900.0, clock: Callable[[], float] = time.time, limit: int = 10000) -> None:
        self.idle = idle
        self._clock = clock
        self._limit = limit
        self._sessions: dict[str, Session] = {}

    def create(self, account: str) -> Session:
        now = self._clock()
        if len(self._sessions) >= self._limit:
            self._expire(now)
            if len(self._sessions) >= self._limit:
                oldest = min(self._sessions.values(), key=lambda s: s.lastActive)
                del self._sessions[oldest.sessionID]
        session = Session(secrets.token_urlsafe(32), account, secrets.token_urlsafe(32), now)
        self._sessions[session.sessionID] = session
        return session

    def get(self, sessionID: str | None) -> Session | None:
        """
        The live session C{sessionID}, touched, or L{None}.
        """
        if not sessionID:
            return None
        session = self._sessions.get(sessionID)
        if session is None:
            return None
        now = self._clock()
        if now - session.lastActive >= self.idle:
            del self._sessions[sessionID]
            return None
        session.lastActive = now
        return session

    def end(self, sessionID: str) -> None:
        self._sessions.pop(sessionID, None)

    def endAccount(self, account: str) -> None:
        """
        End every session of C{account}.
        """
        for sid in [s.sessionID for s in self._sessions.values() if s.account == account]:
            del self._sessions[sid]

    def _expire(self, now: float) -> None:
        for sid in [s.sessionID for s in self._sessions.values() if now - s.lastActive >= self.idle]:
            del self._sessions[sid]
