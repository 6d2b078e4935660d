"""
Tests for L{clientid_twisted.policy._checker.ClientIDChecker}: it asks the
policy, always runs the wrapped checker, answers a refusal exactly like a
wrong password and only once the password check is done, and reports the
outcome.
"""

from __future__ import annotations

from typing import Any

from zope.interface import implementer
from zope.interface.verify import verifyObject

from twisted.cred.checkers import ICredentialsChecker, InMemoryUsernamePasswordDatabaseDontUse
from twisted.cred.credentials import IUsernameHashedPassword, IUsernamePassword, UsernamePassword
from twisted.cred.error import UnauthorizedLogin
from twisted.internet import defer
from twisted.internet.address import IPv4Address
from twisted.trial.unittest import SynchronousTestCase

from clientid_twisted.cred import identifyCredentials
from clientid_twisted._errors import TemporaryAuthenticationFailure
from clientid_twisted._identity import ClientIdentity
from clientid_twisted.interfaces import IPasswordForwardingChecker
from clientid_twisted.policy._checker import ClientIDChecker, attemptFromCredentials
from clientid_twisted.policy._decision import Attempt, Decision, Verdict
from clientid_twisted.testing import RecordingPolicy
from tests.policyharness import SlowChecker


class ScriptedPolicy(RecordingPolicy):
    """
    Answers every attempt with C{verdict}; records what it is told; can
    break when told the outcome.
    """

    raiseInOutcome = False

    def __init__(self, verdict: Verdict = Verdict.ACCEPT) -> None:
        RecordingPolicy.__init__(self, verdict, "scripted")

    def outcome(self, decision: Decision, passwordAccepted: bool) -> defer.Deferred[None]:
        d = RecordingPolicy.outcome(self, decision, passwordAccepted)
        if self.raiseInOutcome:
            raise RuntimeError("broken policy")
        return d


def identified(username: bytes = b"Alice", password: bytes = b"pw", token: str | None = "tok") -> Any:
    return identifyCredentials(
        UsernamePassword(username, password),
        ClientIdentity("UUID", token) if token else None,
        IPv4Address("TCP", "192.0.2.9", 40000),
        "imap",
        True,
    )


class ClientIDCheckerTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.inner = InMemoryUsernamePasswordDatabaseDontUse(Alice=b"pw")
        self.policy = ScriptedPolicy()
        self.checker = ClientIDChecker(self.inner, self.policy)

    def test_interface(self) -> None:
        self.assertTrue(verifyObject(ICredentialsChecker, self.checker))

    def test_credentialInterfacesOfTheInnerChecker(self) -> None:
        self.assertEqual(
            set(self.checker.credentialInterfaces), {IUsernamePassword, IUsernameHashedPassword}
        )

    def test_accepted(self) -> None:
        self.assertEqual(self.successResultOf(self.checker.requestAvatarId(identified())), b"Alice")
        [(decision, accepted)] = self.policy.outcomes
        self.assertTrue(accepted)

    def test_wrongPassword(self) -> None:
        self.failureResultOf(
            self.checker.requestAvatarId(identified(password=b"no")), UnauthorizedLogin
        )
        [(decision, accepted)] = self.policy.outcomes
        self.assertFalse(accepted)

    def test_refusedLikeAWrongPassword(self) -> None:
        self.policy.verdict = Verdict.REJECT
        refused = self.failureResultOf(self.checker.requestAvatarId(identified()))
        wrong = self.failureResultOf(
            ClientIDChecker(self.inner, ScriptedPolicy()).requestAvatarId(identified(password=b"no"))
        )
        self.assertIs(refused.type, wrong.type)
        self.assertIs(refused.type, UnauthorizedLogin)
        self.assertEqual(str(refused.value), str(wrong.value))
        [(decision, accepted)] = self.policy.outcomes
        self.assertTrue(accepted)

    def test_refusalWaitsForThePasswordCheck(self) -> None:
        """
        A refusal decided before the password check is only answered once
        the wrapped checker (its KDF) is done: it takes as long as a wrong
        password.
        """
        inner = SlowChecker()
        policy = ScriptedPolicy(Verdict.REJECT)
        d = ClientIDChecker(inner, policy).requestAvatarId(identified())
        self.assertEqual(len(inner.pending), 1)
        self.assertNoResult(d)
        inner.pending[0].callback(b"alice")
        self.failureResultOf(d, UnauthorizedLogin)

    def test_tempfail(self) -> None:
        self.policy.verdict = Verdict.TEMPFAIL
        self.failureResultOf(
            self.checker.requestAvatarId(identified()), TemporaryAuthenticationFailure
        )
        self.assertEqual(self.policy.outcomes, [])

    def test_innerTemporaryFailurePassedOn(self) -> None:
        inner = SlowChecker()
        d = ClientIDChecker(inner, self.policy).requestAvatarId(identified())
        inner.pending[0].errback(TemporaryAuthenticationFailure("users unreadable"))
        self.failureResultOf(d, TemporaryAuthenticationFailure)
        self.assertEqual(self.policy.outcomes, [])

    def test_innerErrorPassedOn(self) -> None:
        inner = SlowChecker()
        d = ClientIDChecker(inner, self.policy).requestAvatarId(identified())
        inner.pending[0].errback(ZeroDivisionError())
        self.failureResultOf(d, ZeroDivisionError)

    def test_brokenOutcomeDoesNotBreakLogin(self) -> None:
        self.policy.raiseInOutcome = True
        self.assertEqual(self.successResultOf(self.checker.requestAvatarId(identified())), b"Alice")
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)

    def test_attempt(self) -> None:
        self.checker.requestAvatarId(identified())
        [attempt] = self.policy.attempts
        self.assertEqual(
            attempt,
            Attempt("alice", ClientIdentity("UUID", "tok"), "192.0.2.9", "imap", True),
        )

    def test_plainCredentialsHaveNoCLIENTID(self) -> None:
        self.checker.requestAvatarId(UsernamePassword(b"Alice", b"pw"))
        [attempt] = self.policy.attempts
        self.assertEqual(attempt, Attempt("alice", None, None, "unknown", False))


class AttemptFromCredentialsTests(SynchronousTestCase):
    def test_notUTF8(self) -> None:
        self.assertIsNone(attemptFromCredentials(identified(username=b"\xff")).account)

    def test_empty(self) -> None:
        self.assertIsNone(attemptFromCredentials(identified(username=b"")).account)

    def test_withoutIdentity(self) -> None:
        self.assertIsNone(attemptFromCredentials(identified(token=None)).identity)


class SameWorkTests(SynchronousTestCase):
    """
    With a clock, a right password from a refused device and a wrong
    password do the same work before the answer: one policy evaluation,
    one password check (the KDF); what the outcome records (a device
    record, a notice) comes a turn later, after the answer.
    """

    def attempt(self, harness: Any, password: str) -> tuple[list[Any], list[str]]:
        calls: list[str] = []
        policy = harness.policy

        class Counting:
            def evaluate(self, attempt: Any) -> Any:
                calls.append("evaluate")
                return policy.evaluate(attempt)

            def outcome(self, decision: Any, accepted: bool) -> Any:
                calls.append("outcome")
                return policy.outcome(decision, accepted)

        checker = ClientIDChecker(harness.inner, Counting(), harness.clock)
        before = harness.inner.calls
        results: list[Any] = []
        checker.requestAvatarId(harness.credentials(token="refused", password=password)).addBoth(
            results.append
        )
        calls.append(f"password checks: {harness.inner.calls - before}")
        answered = list(calls)
        harness.clock.advance(0)
        return results, answered + ["answered"] + calls[len(answered):]

    def test_sameWorkBeforeTheAnswer(self) -> None:
        from tests.policyharness import PolicyHarness

        harness = PolicyHarness(self, {"policy": {"devices": "allowlist"}})
        rightResults, right = self.attempt(harness, "right")
        wrongResults, wrong = self.attempt(harness, "wrong")
        for results in (rightResults, wrongResults):
            [failure] = results
            self.assertTrue(failure.check(UnauthorizedLogin))
        expected = ["evaluate", "password checks: 1", "answered", "outcome"]
        self.assertEqual(right, expected)
        self.assertEqual(wrong, expected)
        self.assertIn("device-refused", harness.observer.kinds())


@implementer(IPasswordForwardingChecker)
class ForwardingChecker:
    """
    Stands for a gateway's backend: records whom it was asked about.
    """

    credentialInterfaces = (IUsernamePassword,)

    def __init__(self) -> None:
        self.forwarded: list[Any] = []
        self.refusedUnchecked: list[Any] = []
        self.refusal: defer.Deferred[None] = defer.Deferred()

    def requestAvatarId(self, credentials: Any) -> defer.Deferred[Any]:
        self.forwarded.append(credentials)
        if credentials.password == b"pw":
            return defer.succeed(b"session")
        return defer.fail(UnauthorizedLogin())

    def refuseUnchecked(self, credentials: Any) -> defer.Deferred[None]:
        self.refusedUnchecked.append(credentials)
        return self.refusal


class PasswordForwardingTests(SynchronousTestCase):
    """
    A checker that hands the password to another server is asked only
    after the policy accepted the device.
    """

    def setUp(self) -> None:
        self.inner = ForwardingChecker()
        self.policy = ScriptedPolicy()
        self.checker = ClientIDChecker(self.inner, self.policy)

    def test_interface(self) -> None:
        self.assertTrue(verifyObject(IPasswordForwardingChecker, self.inner))

    def test_accepted(self) -> None:
        self.assertEqual(self.successResultOf(self.checker.requestAvatarId(identified())), b"session")
        self.assertEqual(len(self.inner.forwarded), 1)
        [(decision, accepted)] = self.policy.outcomes
        self.assertTrue(accepted)

    def test_wrongPassword(self) -> None:
        self.failureResultOf(self.checker.requestAvatarId(identified(password=b"no")), UnauthorizedLogin)
        [(decision, accepted)] = self.policy.outcomes
        self.assertFalse(accepted)

    def test_refusedNeverForwarded(self) -> None:
        """
        A refused device's password is not forwarded; the refusal waits
        for C{refuseUnchecked} (as long as the other server's refusal) and
        is the wrong password's refusal.
        """
        self.policy.verdict = Verdict.REJECT
        d = self.checker.requestAvatarId(identified())
        self.assertNoResult(d)
        self.assertEqual(self.inner.forwarded, [])
        self.assertEqual(len(self.inner.refusedUnchecked), 1)
        self.inner.refusal.errback(UnauthorizedLogin())
        refused = self.failureResultOf(d, UnauthorizedLogin)
        self.assertEqual(str(refused.value), str(UnauthorizedLogin()))
        [(decision, accepted)] = self.policy.outcomes
        self.assertFalse(accepted)

    def test_tempfailNeverForwarded(self) -> None:
        self.policy.verdict = Verdict.TEMPFAIL
        self.failureResultOf(self.checker.requestAvatarId(identified()), TemporaryAuthenticationFailure)
        self.assertEqual(self.inner.forwarded, [])
        self.assertEqual(self.inner.refusedUnchecked, [])

    def test_successWaitsForTheRecord(self) -> None:
        """
        A success is answered once the policy has recorded it, so its
        alerts (a new device's notice) are out before the session starts.
        """
        recorded: defer.Deferred[None] = defer.Deferred()
        self.policy.outcome = lambda decision, accepted: recorded  # type: ignore[method-assign]
        d = self.checker.requestAvatarId(identified())
        self.assertNoResult(d)
        recorded.callback(None)
        self.assertEqual(self.successResultOf(d), b"session")
