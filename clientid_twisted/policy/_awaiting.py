# -*- test-case-name: tests.test_credfactory -*-
"""
L{AwaitingPolicy}: stands in for a policy that is still being built (its
store's identity key not known yet), where an API needs a checker at once
(C{twisted.cred}'s C{ICheckerFactory.generateChecker} cannot wait).
"""

from __future__ import annotations

from typing import Any

from zope.interface import implementer

from twisted.internet import defer
from twisted.logger import Logger
from twisted.python.failure import Failure

from clientid_twisted.interfaces import IClientIDPolicy
from clientid_twisted.policy._decision import Attempt, Decision, Verdict

__all__ = ["AwaitingPolicy"]


@implementer(IClientIDPolicy)
class AwaitingPolicy:
    """
    Answers C{TEMPFAIL} until C{ready} has given the real policy, then
    hands every call to it.

    @ivar policy: The real policy, or L{None} while it is not ready.
    """

    log = Logger()

    def __init__(self, ready: defer.Deferred[IClientIDPolicy]) -> None:
        self.policy: IClientIDPolicy | None = None
        ready.addCallbacks(self._ready, self._failed)

    def _ready(self, policy: IClientIDPolicy) -> None:
        self.policy = policy

    def _failed(self, reason: Failure) -> None:
        self.log.failure("the CLIENTID policy could not be built", reason)

    def evaluate(self, attempt: Attempt) -> defer.Deferred[Decision]:
        if self.policy is None:
            return defer.succeed(
                Decision(attempt, Verdict.TEMPFAIL, "the store's identity key is not loaded yet")
            )
        return self.policy.evaluate(attempt)

    def outcome(self, decision: Decision, passwordAccepted: bool) -> Any:
        if self.policy is None:
            return defer.succeed(None)
        return self.policy.outcome(decision, passwordAccepted)
