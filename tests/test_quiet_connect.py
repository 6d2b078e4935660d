# -*- test-case-name: tests.test_quiet_connect -*-
"""
The Redis store's connection attempts write no "Starting factory" /
"Stopping factory" lines: during an outage it retries twice a second, and
the log must keep one line per outage and one on return.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import reactor
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.internet.error import ConnectError
from twisted.internet.protocol import Protocol
from twisted.logger import formatEvent, globalLogPublisher
from twisted.trial.unittest import TestCase

from clientid_twisted.store._resp import connectQuietly
from tests.services import freePort


class QuietConnectTests(TestCase):
    def test_refusedAttemptsAreSilent(self) -> Any:
        events: list[dict[str, Any]] = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", freePort(), timeout=5)
        d = connectQuietly(endpoint, Protocol())
        d = self.assertFailure(d, ConnectError)

        def check(ignored: object) -> None:
            lines = [formatEvent(e) for e in events]
            self.assertFalse([line for line in lines if "factory" in line.lower()], lines)

        return d.addCallback(check)
