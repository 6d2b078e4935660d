# -*- test-case-name: tests.test_checker -*-
"""
The result of a L{Deferred <twisted.internet.defer.Deferred>} that has
already fired, taken without chaining further work onto it.

A store that answers at once (SQLite, memory) and a password checker that
does (a table lookup) give Deferreds that have fired on return; the policy
and the checker then decide on the spot, where chaining callbacks,
C{gatherResults} and timers would cost more than the decision itself.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import defer

__all__ = ["NOT_FIRED", "firedResult"]

NOT_FIRED: Any = object()
"""What L{firedResult} gives for a Deferred with no result yet."""


def firedResult(d: defer.Deferred[Any]) -> Any:
    """
    Take C{d}'s result (a value or a L{Failure <twisted.python.failure.Failure>},
    which is then handled) if it has one now; else L{NOT_FIRED}, and C{d}
    goes on as if untouched.
    """
    if not d.called:
        return NOT_FIRED
    results: list[Any] = []
    d.addBoth(results.append)
    if results:
        return results[0]
    # Fired, but waiting on a Deferred a callback returned: give the
    # result back to the chain when it comes (a Failure returned from a
    # callback goes on as a failure).
    d.addCallback(lambda _: results[0])
    return NOT_FIRED
