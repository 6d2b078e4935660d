"""
Baseline policies the brute-force simulation compares ours against, and a
transparent wrapper that remembers the last decision.

They implement L{IClientIDPolicy}, so they run inside the project's real
L{clientid_twisted.policy._checker.ClientIDChecker} exactly as the built-in
L{clientid_twisted.policy._engine.DevicePolicy} does.
"""

from __future__ import annotations

import collections
from typing import Any

from zope.interface import implementer

from twisted.internet import defer

from clientid_twisted.interfaces import IClientIDPolicy
from clientid_twisted.policy._decision import Attempt, Decision, Verdict

__all__ = ["OpenPolicy", "AddressLockoutPolicy", "RememberingPolicy"]


@implementer(IClientIDPolicy)
class OpenPolicy:
    """
    No protection: the password alone decides.
    """

    def evaluate(self, attempt: Attempt) -> defer.Deferred[Decision]:
        return defer.succeed(Decision(attempt, Verdict.ACCEPT))

    def outcome(self, decision: Decision, passwordAccepted: bool) -> defer.Deferred[None]:
        return defer.succeed(None)


@implementer(IClientIDPolicy)
class AddressLockoutPolicy:
    """
    The fail2ban model: C{failures} failed logins from one address within
    C{findSeconds} (a sliding window, as fail2ban's C{findtime}) ban the
    address for C{banSeconds}.  Everything from a banned address is
    refused; a real fail2ban drops its packets, so a client sees a refused
    connection (L{banned} lets the simulation model that).

    @ivar bans: How many bans were set.
    """

    def __init__(
        self, clock: Any, failures: int = 5, findSeconds: float = 600.0, banSeconds: float = 3600.0
    ) -> None:
        self._clock = clock
        self.failures = failures
        self.findSeconds = findSeconds
        self.banSeconds = banSeconds
        self._failed: dict[str, collections.deque[float]] = {}
        self._bannedUntil: dict[str, float] = {}
        self.bans = 0

    def banned(self, address: str | None) -> bool:
        """
        Whether C{address} is banned now.
        """
        if address is None:
            return False
        return self._bannedUntil.get(address, 0.0) > self._clock.seconds()

    def evaluate(self, attempt: Attempt) -> defer.Deferred[Decision]:
        if self.banned(attempt.address):
            return defer.succeed(Decision(attempt, Verdict.REJECT, "address banned"))
        return defer.succeed(Decision(attempt, Verdict.ACCEPT))

    def outcome(self, decision: Decision, passwordAccepted: bool) -> defer.Deferred[None]:
        address = decision.attempt.address
        if passwordAccepted or address is None or decision.verdict is not Verdict.ACCEPT:
            return defer.succeed(None)
        now = self._clock.seconds()
        failed = self._failed.setdefault(address, collections.deque())
        failed.append(now)
        while failed and failed[0] <= now - self.findSeconds:
            failed.popleft()
        if len(failed) >= self.failures:
            failed.clear()
            self._bannedUntil[address] = now + self.banSeconds
            self.bans += 1
        return defer.succeed(None)


@implementer(IClientIDPolicy)
class RememberingPolicy:
    """
    Wraps a policy unchanged and keeps its last decision, so the simulation
    can say which rule refused an attempt.

    @ivar last: The most recent L{Decision}.
    """

    def __init__(self, policy: IClientIDPolicy) -> None:
        self.policy = policy
        self.last: Decision | None = None

    def _remember(self, decision: Decision) -> Decision:
        self.last = decision
        return decision

    def evaluate(self, attempt: Attempt) -> defer.Deferred[Decision]:
        return self.policy.evaluate(attempt).addCallback(self._remember)

    def outcome(self, decision: Decision, passwordAccepted: bool) -> Any:
        return self.policy.outcome(decision, passwordAccepted)
