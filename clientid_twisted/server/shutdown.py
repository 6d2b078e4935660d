# -*- test-case-name: tests.test_connections -*-
"""
Graceful shutdown for C{twistd clientid-mail}: on SIGTERM (or any
C{stopService}) stop taking connections, let sessions in the middle of DATA,
FETCH, APPEND or a login finish within a bound, and say goodbye to the rest.
"""

from __future__ import annotations

from typing import Any

from twisted.application.service import Service
from twisted.internet import defer

from clientid_twisted.server.connections import ConnectionLimiter

__all__ = ["GracefulShutdownService"]


class GracefulShutdownService(Service):
    """
    Winds down the sessions a L{ConnectionLimiter} counts when the service
    stops.  Add it to the same parent as the listeners, after them: a
    C{MultiService} stops its children in reverse order, so new connections
    are refused before the listening ports close.

    @ivar grace: Seconds busy sessions get; the limiter's
        C{shutdownGrace} when L{None}.
    """

    name = "graceful shutdown"

    def __init__(self, limiter: ConnectionLimiter, grace: float | None = None) -> None:
        self.limiter = limiter
        self.grace = grace

    def stopService(self) -> defer.Deferred[Any]:
        Service.stopService(self)
        return self.limiter.drain(self.grace)
