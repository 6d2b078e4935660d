# -*- test-case-name: tests.test_policy_engine -*-
"""
Watching the store from the policy's side: log an outage once when it
starts and once when it ends, however many logins it touches.

A store that half works (a full disk: reads succeed, writes fail) fails
and succeeds by turns; so an outage ends only once the store has worked
for L{RECOVERY_SECONDS} without a failure, and a flapping store logs one
pair, not one per login.
"""

from __future__ import annotations

from typing import Any

from twisted.logger import Logger
from twisted.python.failure import Failure

__all__ = ["StoreHealth", "RECOVERY_SECONDS"]

RECOVERY_SECONDS = 60.0
"""How long the store must work without a failure before an outage is
over (and logged as such)."""


class StoreHealth:
    """
    Remembers whether the store is failing.  There is no circuit breaker:
    every decision tries the store again, so service resumes with the
    first decision after the store comes back.

    @ivar failing: Whether the last store operation failed.
    @ivar failures: Store operations failed in the current outage.
    """

    def __init__(self, log: Logger, clock: Any, failOpen: bool) -> None:
        self.log = log
        self._clock = clock
        self._failOpen = failOpen
        self.failing = False
        self.failures = 0
        self._since = 0.0
        self._lastFailure = 0.0

    def failed(self, reason: Failure) -> None:
        self.failures += 1
        self._lastFailure = self._clock.seconds()
        if self.failing:
            return
        self.failing = True
        self._since = self._clock.seconds()
        self.log.error(
            "CLIENTID store unavailable ({error}): {consequence} until it recovers",
            error=reason.getErrorMessage() or repr(reason.value),
            consequence=(
                "logins are decided on the password alone (store_failure = open)"
                if self._failOpen
                else "logins get a temporary failure"
            ),
            storeEvent="down",
        )

    def succeeded(self) -> None:
        if not self.failing:
            return
        if self._clock.seconds() - self._lastFailure < RECOVERY_SECONDS:
            # Working again, maybe only for reads: not over yet.
            return
        self.log.info(
            "CLIENTID store recovered after {seconds:.1f} s ({failures} failed operations)",
            seconds=self._clock.seconds() - self._since,
            failures=self.failures,
            storeEvent="up",
        )
        self.failing = False
        self.failures = 0
