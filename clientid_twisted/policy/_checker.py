# -*- test-case-name: tests.test_checker -*-
"""
L{ClientIDChecker}: puts a device policy in front of any C{twisted.cred}
checker.
"""

from __future__ import annotations

from typing import Any

from zope.interface import implementer

from twisted.cred.checkers import ICredentialsChecker
from twisted.cred.error import UnauthorizedLogin
from twisted.internet import defer
from twisted.logger import Logger
from twisted.python.failure import Failure

from clientid_twisted._errors import TemporaryAuthenticationFailure
from clientid_twisted.interfaces import (
    IClientIdentifiedCredentials,
    IClientIDPolicy,
    IPasswordForwardingChecker,
)
from clientid_twisted.policy._decision import Attempt, Decision, Verdict, accountName
from clientid_twisted.policy._fired import NOT_FIRED, firedResult

__all__ = ["ClientIDChecker", "attemptFromCredentials"]


def attemptFromCredentials(credentials: Any) -> Attempt:
    """
    What the policy needs to know of a login.  Credentials that do not
    provide L{IClientIdentifiedCredentials} count as a login without
    CLIENTID from an unknown address.
    """
    account = accountName(getattr(credentials, "username", None))
    if not IClientIdentifiedCredentials.providedBy(credentials):
        return Attempt(account=account)
    peer = credentials.peer
    host = getattr(peer, "host", None)
    return Attempt(
        account=account,
        identity=credentials.clientIdentity,
        address=host if isinstance(host, str) else None,
        protocolName=credentials.protocolName,
        secure=bool(credentials.secure),
    )


class _Refused:
    """
    The wrapped checker refused the credentials.
    """


_REFUSED = _Refused()


def _deferredCall(function: Any, argument: Any) -> defer.Deferred[Any]:
    """
    C{function(argument)} as a L{Deferred <twisted.internet.defer.Deferred>}
    (what it raises fails it): the policy's decision, the wrapped checker's
    answer.  L{defer.maybeDeferred <twisted.internet.defer.maybeDeferred>}
    without its coroutine and L{Failure} checks, on every login's path.
    """
    try:
        result = function(argument)
    except Exception:
        return defer.fail()
    if not isinstance(result, defer.Deferred):
        return defer.succeed(result)
    return result


def _refusedPassword(reason: Failure) -> Any:
    reason.trap(UnauthorizedLogin)
    return _REFUSED


@implementer(ICredentialsChecker)
class ClientIDChecker:
    """
    Wraps an L{ICredentialsChecker} with an L{IClientIDPolicy}.

    The policy's evaluation and the wrapped checker's password check run
    side by side, and the wrapped checker runs for every attempt, even one
    the policy has already refused: a refusal then costs exactly the time
    of a password check (its KDF) and raises the same
    L{UnauthorizedLogin}, so neither the reply nor its timing tells a
    client why it was refused.  The outcome (was the password right?) goes
    back to the policy, which records it without delaying the answer.

    When the policy and the password check both answer at once (a store
    that reads in memory or SQLite, a password table), the verdict is
    made on the spot: no C{gatherResults}, no Deferred but the one
    returned, which has fired.

    A policy that cannot decide (store outage) gives
    L{TemporaryAuthenticationFailure}, which the protocols answer with 454
    4.7.0 / NO [UNAVAILABLE]; so does a wrapped checker that raises
    anything but L{UnauthorizedLogin}.

    A wrapped checker that hands the password to another server
    (L{IPasswordForwardingChecker}, a gateway's backend) runs only after
    the policy has accepted: a refused device's password never leaves the
    process, and the refusal takes as long as the other server's (its
    C{refuseUnchecked}).  A success then also waits until the outcome is
    recorded, so the alerts it raises (a new device's notice) are out
    before the session starts.

    @ivar innerChecker: Checks the password.
    @ivar policy: Decides on the device.
    """

    log = Logger()

    def __init__(
        self, innerChecker: ICredentialsChecker, policy: IClientIDPolicy, clock: Any = None
    ) -> None:
        """
        @param clock: If given, a refusal's outcome goes to the policy one
            turn of C{clock} after the answer, so the answer never waits on
            what the outcome records (a right password from a refused
            device writes a device record and sends a notice; a wrong one
            does not): both answers then cost the same, a password check.
            L{None}: before the answer, at once (unit tests).
        """
        self.innerChecker = innerChecker
        self.policy = policy
        self.credentialInterfaces = tuple(innerChecker.credentialInterfaces)
        self._clock = clock

    def requestAvatarId(self, credentials: Any) -> defer.Deferred[Any]:
        """
        @return: A L{Deferred <twisted.internet.defer.Deferred>} firing with the wrapped checker's avatar ID,
            or failing with L{UnauthorizedLogin} or
            L{TemporaryAuthenticationFailure}.
        """
        try:
            attempt = attemptFromCredentials(credentials)
        except Exception:
            self.log.failure("cannot read the login attempt")
            return defer.fail(TemporaryAuthenticationFailure("unreadable credentials"))
        decided: defer.Deferred[Any] = _deferredCall(self.policy.evaluate, attempt)
        if IPasswordForwardingChecker.providedBy(self.innerChecker):
            decided.addCallback(self._forwardIfAccepted, credentials)
            decided.addCallback(self._verdict, waitForRecord=True)
            return decided
        checked = _deferredCall(self.innerChecker.requestAvatarId, credentials)
        # Each result taken at once if it is there (SQLite or memory
        # store, a password table); only what is still to come is waited
        # for, and only two pending results are joined.
        decision = firedResult(decided)
        avatarId = firedResult(checked)
        if isinstance(decision, Failure):
            # A policy that broke its promise never to fail.
            if avatarId is NOT_FIRED:
                checked.addErrback(lambda ignored: None)
            return defer.fail(decision)
        if isinstance(avatarId, Failure):
            if not avatarId.check(UnauthorizedLogin):
                if decision is NOT_FIRED:
                    decided.addErrback(lambda ignored: None)
                return defer.fail(avatarId)
            avatarId = _REFUSED
        if decision is NOT_FIRED:
            if avatarId is NOT_FIRED:
                checked.addErrback(_refusedPassword)
                both = defer.gatherResults([decided, checked], consumeErrors=True)
                both.addCallbacks(self._verdict, _firstError)
                return both
            return decided.addCallback(lambda decision: self._verdict([decision, avatarId]))
        if avatarId is NOT_FIRED:
            checked.addErrback(_refusedPassword)
            return checked.addCallback(lambda avatarId: self._verdict([decision, avatarId]))
        try:
            return defer.succeed(self._verdict([decision, avatarId]))
        except Exception:
            return defer.fail()

    def _forwardIfAccepted(self, decision: Decision, credentials: Any) -> Any:
        if decision.verdict is Verdict.TEMPFAIL:
            return [decision, _REFUSED]
        inner: Any = self.innerChecker
        check = inner.requestAvatarId if decision.verdict is Verdict.ACCEPT else inner.refuseUnchecked
        checked = _deferredCall(check, credentials)
        checked.addErrback(_refusedPassword)
        checked.addCallback(lambda avatarId: [decision, avatarId])
        return checked

    def _verdict(self, results: list[Any], waitForRecord: bool = False) -> Any:
        """
        The answer to the login, given the decision and the password
        check's result (C{results}).

        A success hears its outcome before the answer (it records at most
        a device's first login and raises its alerts: nothing a client
        could learn from); any refusal a turn after, with a clock, so a
        refused right password and a wrong one do the same work before
        the answer.
        """
        decision: Decision = results[0]
        avatarId = results[1]
        if decision.verdict is Verdict.TEMPFAIL:
            raise TemporaryAuthenticationFailure(decision.reason)
        passwordAccepted = avatarId is not _REFUSED
        succeeded = passwordAccepted and decision.verdict is Verdict.ACCEPT
        if waitForRecord and succeeded:
            recorded = self._outcome(decision, passwordAccepted)
            if isinstance(recorded, defer.Deferred):
                return recorded.addBoth(lambda ignored: avatarId)
            return avatarId
        if self._clock is None or succeeded:
            self._outcome(decision, passwordAccepted)
        else:
            self._clock.callLater(0, self._outcome, decision, passwordAccepted)
        if succeeded:
            return avatarId
        raise UnauthorizedLogin()

    def _outcome(self, decision: Decision, passwordAccepted: bool) -> Any:
        recorded = None
        try:
            recorded = self.policy.outcome(decision, passwordAccepted)
        except Exception:
            self.log.failure("the CLIENTID policy failed to hear an outcome")
        else:
            if isinstance(recorded, defer.Deferred):
                recorded.addErrback(
                    lambda f: self.log.failure("the CLIENTID policy failed to record", f)
                )
        return recorded


def _firstError(reason: Failure) -> Failure:
    reason.trap(defer.FirstError)
    first: defer.FirstError = reason.value  # type: ignore[assignment]
    return first.subFailure
