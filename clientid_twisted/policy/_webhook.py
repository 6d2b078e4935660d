# -*- test-case-name: tests.test_policy_alerts -*-
"""
Alerts as JSON POSTs to an operator's URL, in the background, with
retries: a slow or dead webhook never delays a login.
"""

from __future__ import annotations

import json
from typing import Any

from zope.interface import implementer

from twisted.internet import defer
from twisted.internet.protocol import Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.http_headers import Headers
from twisted.web.iweb import IBodyProducer

from clientid_twisted.interfaces import IAlertObserver
from clientid_twisted.policy._alerts import Alert

__all__ = ["WebhookAlertObserver"]


@implementer(IBodyProducer)
class _Body:
    """
    A request body that is all there at once.
    """

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.length = len(data)

    def startProducing(self, consumer: Any) -> defer.Deferred[None]:
        consumer.write(self.data)
        return defer.succeed(None)

    def pauseProducing(self) -> None:
        pass

    def resumeProducing(self) -> None:
        pass

    def stopProducing(self) -> None:
        pass


class _Discard(Protocol):
    """
    Reads a response body to its end and forgets it (so the connection can
    be reused or closed cleanly).
    """

    def __init__(self) -> None:
        self.done: defer.Deferred[None] = defer.Deferred()

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
        self.done.callback(None)


class WebhookError(Exception):
    """
    The webhook answered with a status that is not 2xx.
    """


@implementer(IAlertObserver)
class WebhookAlertObserver:
    """
    POSTs each alert as one JSON object (L{Alert.asJSON}) to a URL.

    A failed POST (connection error, timeout, a status other than 2xx) is
    retried after 1, 2, 4 ... seconds (at most 5 minutes apart), up to
    C{retries} times, then dropped with a warning.  At most C{maxPending}
    alerts wait at once; more are dropped with a warning, so an outage of
    the webhook cannot grow memory without bound.

    @ivar pending: How many alerts are being sent or waiting to be retried.
    """

    log = Logger()

    def __init__(
        self,
        url: str,
        agent: Any = None,
        clock: Any = None,
        retries: int = 5,
        timeout: float = 10.0,
        maxPending: int = 1000,
    ) -> None:
        """
        @param agent: An L{twisted.web.iweb.IAgent}; a
            L{twisted.web.client.Agent} on the global reactor by default.
        @param clock: Schedules retries and timeouts; the reactor by
            default.
        """
        if clock is None:
            from twisted.internet import reactor as clock
        if agent is None:
            from twisted.internet import reactor
            from twisted.web.client import Agent

            agent = Agent(reactor)
        self.url = url
        self.agent = agent
        self.retries = retries
        self.timeout = timeout
        self.maxPending = maxPending
        self.pending = 0
        self._clock = clock

    def alertRaised(self, alert: Alert) -> None:
        if self.pending >= self.maxPending:
            self.log.warn(
                "webhook {url}: {pending} alerts already waiting; dropped a {alertKind} alert",
                url=self.url,
                pending=self.pending,
                alertKind=alert.kind,
            )
            return
        body = json.dumps(alert.asJSON(), sort_keys=True).encode("utf-8")
        self.pending += 1
        self._attempt(body, alert.kind, 0)

    def _attempt(self, body: bytes, kind: str, tries: int) -> None:
        d = defer.maybeDeferred(
            self.agent.request,
            b"POST",
            self.url.encode("ascii"),
            Headers(
                {
                    b"content-type": [b"application/json"],
                    b"user-agent": [b"clientid-twisted alerts"],
                }
            ),
            _Body(body),
        )
        d.addTimeout(self.timeout, self._clock)
        d.addCallback(self._checkResponse)
        d.addCallbacks(self._sent, self._failed, errbackArgs=(body, kind, tries + 1))

    def _checkResponse(self, response: Any) -> Any:
        discard = _Discard()
        response.deliverBody(discard)
        if not 200 <= response.code < 300:
            raise WebhookError(f"HTTP status {response.code}")
        return discard.done

    def _sent(self, ignored: object) -> None:
        self.pending -= 1

    def _failed(self, reason: Failure, body: bytes, kind: str, tries: int) -> None:
        if tries > self.retries:
            self.pending -= 1
            self.log.warn(
                "webhook {url}: gave up on a {alertKind} alert after {tries} attempts: {error}",
                url=self.url,
                alertKind=kind,
                tries=tries,
                error=reason.getErrorMessage(),
            )
            return
        delay = min(2.0 ** (tries - 1), 300.0)
        self._clock.callLater(delay, self._attempt, body, kind, tries)
