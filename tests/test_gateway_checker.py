"""
The gateway's backend password checker
(L{clientid_twisted.gateway.checker.BackendPasswordChecker}): a policy
refusal is answered without the backend, as late as the backend's recent
refusals.
"""

from __future__ import annotations

from typing import Any

from zope.interface.verify import verifyObject

from twisted.cred.credentials import UsernamePassword
from twisted.cred.error import UnauthorizedLogin
from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from clientid_twisted.gateway.checker import BackendPasswordChecker
from clientid_twisted.interfaces import IPasswordForwardingChecker


class ScriptedChecker(BackendPasswordChecker):
    """
    Logs in by handing out the Deferreds a test fires.
    """

    def __init__(self, clock: Clock) -> None:
        super().__init__(backend=None, clock=clock)  # type: ignore[arg-type]
        self.logins: list[tuple[bytes, bytes, defer.Deferred[Any]]] = []

    def logIn(self, username: bytes, password: bytes, credentials: Any) -> defer.Deferred[Any]:
        d: defer.Deferred[Any] = defer.Deferred()
        self.logins.append((username, password, d))
        return d


class BackendPasswordCheckerTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.checker = ScriptedChecker(self.clock)
        self.credentials = UsernamePassword(b"alice@example.org", "s\u00e9cret".encode())

    def test_interface(self) -> None:
        self.assertTrue(verifyObject(IPasswordForwardingChecker, self.checker))

    def test_credentialsAsBytes(self) -> None:
        """
        The backend gets the user's name and password, and its session is
        the avatar ID.
        """
        d = self.checker.requestAvatarId(self.credentials)
        [(username, password, login)] = self.checker.logins
        self.assertEqual((username, password), (b"alice@example.org", "s\u00e9cret".encode()))
        login.callback("session")
        self.assertEqual(self.successResultOf(d), "session")

    def refuseAfter(self, seconds: float) -> None:
        d = self.checker.requestAvatarId(self.credentials)
        self.clock.advance(seconds)
        self.checker.logins[-1][2].errback(UnauthorizedLogin())
        self.failureResultOf(d, UnauthorizedLogin)

    def test_refusalTimedLikeBackend(self) -> None:
        """
        Before any backend refusal, an unchecked refusal takes the initial
        estimate; then the median of the backend's recent refusals.
        """
        d = self.checker.refuseUnchecked(self.credentials)
        self.clock.advance(1.99)
        self.assertNoResult(d)
        self.clock.advance(0.01)
        self.failureResultOf(d, UnauthorizedLogin)
        for seconds in (0.5, 3.0, 0.7):
            self.refuseAfter(seconds)
        self.assertAlmostEqual(self.checker.refusalSeconds, 0.7)
        d = self.checker.refuseUnchecked(self.credentials)
        self.clock.advance(0.69)
        self.assertNoResult(d)
        self.clock.advance(0.01)
        self.failureResultOf(d, UnauthorizedLogin)
        self.assertEqual(len(self.checker.logins), 3)
