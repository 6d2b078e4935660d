# -*- test-case-name: tests.test_gateway_checker -*-
"""
The part of a gateway's password checker that does not depend on the
protocol: a login is checked by logging in to the backend with the user's
credentials, and a login the device policy refused is answered without
the backend, as late as the backend answers a wrong password.
"""

from __future__ import annotations

import collections
from typing import Any

from zope.interface import implementer

from twisted.cred.credentials import IUsernamePassword
from twisted.cred.error import UnauthorizedLogin
from twisted.internet import defer, task
from twisted.python.failure import Failure

from clientid_twisted.gateway.backend import Backend
from clientid_twisted.interfaces import IPasswordForwardingChecker

__all__ = ["BackendPasswordChecker"]


@implementer(IPasswordForwardingChecker)
class BackendPasswordChecker:
    """
    Checks a password by logging in to a backend with it (L{logIn}, which
    subclasses supply); the avatar ID is the logged-in backend session.

    A refusal by the device policy never reaches the backend
    (L{refuseUnchecked}); it waits as long as the backend's recent
    refusals took (the median of the last few, C{initialRefusalSeconds}
    until the backend has refused once), so the time of the answer does
    not tell the two apart.

    @ivar backend: The backend it logs in to.
    """

    credentialInterfaces = (IUsernamePassword,)

    def __init__(self, backend: Backend, clock: Any = None, initialRefusalSeconds: float = 2.0) -> None:
        """
        @param initialRefusalSeconds: The estimate before any refusal was
            seen: Dovecot's default C{auth_failure_delay}.
        """
        if clock is None:
            from twisted.internet import reactor as clock
        self.backend = backend
        self._initialRefusalSeconds = initialRefusalSeconds
        self._refusals: collections.deque[float] = collections.deque(maxlen=9)
        self._clock = clock

    @property
    def refusalSeconds(self) -> float:
        """
        How long a refusal by the backend takes now (the median of the
        last nine).
        """
        if not self._refusals:
            return self._initialRefusalSeconds
        return sorted(self._refusals)[len(self._refusals) // 2]

    def logIn(self, username: bytes, password: bytes, credentials: Any) -> defer.Deferred[Any]:
        """
        Log in to the backend.

        @param credentials: The login's credentials, for what else the
            backend is told (the client's address: C{peer}, C{host}).
        @return: A Deferred firing with the logged-in session, or failing
            with L{UnauthorizedLogin} or a temporary failure.
        """
        raise NotImplementedError

    def requestAvatarId(self, credentials: Any) -> defer.Deferred[Any]:
        started = self._clock.seconds()
        d = self.logIn(_bytes(credentials.username), _bytes(credentials.password), credentials)

        def refused(reason: Failure) -> Failure:
            if reason.check(UnauthorizedLogin):
                self._refusals.append(self._clock.seconds() - started)
            return reason

        d.addErrback(refused)
        return d

    def refuseUnchecked(self, credentials: Any) -> defer.Deferred[None]:
        d = task.deferLater(self._clock, self.refusalSeconds, lambda: None)
        d.addCallback(lambda ignored: Failure(UnauthorizedLogin()))
        return d


def _bytes(value: object) -> bytes:
    if isinstance(value, bytes):
        return value
    return str(value).encode("utf-8")
