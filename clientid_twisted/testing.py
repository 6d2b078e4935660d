# -*- test-case-name: tests.test_testing -*-
"""
Helpers for testing code that uses clientid-twisted, in the manner of
C{treq.testing}: drive a protocol over an in-memory transport marked as TLS
(or not), make throwaway certificates for loopback TLS, and stand in for the
policy, the store and the alert observers (L{RecordingPolicy},
L{MemoryStore}, L{RecordingAlertObserver}).

The project's own tests use these, so they stay correct.
"""

from __future__ import annotations

import functools
from typing import Any, Callable

from zope.interface import directlyProvides, implementer

from twisted.internet import defer, ssl
from twisted.internet.address import IPv4Address
from twisted.internet.interfaces import ISSLTransport
from twisted.internet.protocol import Protocol
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport

from clientid_twisted.interfaces import IAlertObserver, IClientIDPolicy
from clientid_twisted.policy._decision import Attempt, Decision, Verdict
from clientid_twisted._certificate import ServerCertificate, selfSignedCertificate
from clientid_twisted.store._memory import MemoryStore

__all__ = [
    "StartTLSStringTransport",
    "connectedTransport",
    "connectPlaintext",
    "connectTLS",
    "LineExchange",
    "MemoryStore",
    "RecordingPolicy",
    "RecordingAlertObserver",
    "throwawayCertificate",
    "ConnectionTracker",
    "synchronousScheduler",
    "clientTLSOptions",
]


class StartTLSStringTransport(StringTransport):
    """
    A L{StringTransport} that can "start TLS": C{startTLS} marks it as
    providing L{ISSLTransport <twisted.internet.interfaces.ISSLTransport>} (as Twisted's real transports do) and
    remembers the context it was given.

    @ivar tlsStarted: The context factory passed to C{startTLS}, or L{None}.
    """

    tlsStarted: Any = None

    def startTLS(self, contextFactory: Any) -> None:
        self.tlsStarted = contextFactory
        directlyProvides(self, ISSLTransport)


def connectedTransport(
    protocol: Protocol,
    secure: bool = False,
    peerHost: str = "192.0.2.7",
    clock: Clock | None = None,
) -> StartTLSStringTransport:
    """
    Connect C{protocol} to a fresh in-memory transport.

    @param secure: Mark the transport as TLS from the start (implicit TLS).
    @param peerHost: The client address the protocol sees.
    @param clock: Drives the protocol's timeouts (L{TimeoutMixin <twisted.protocols.policies.TimeoutMixin>}), so they
        never land on the global reactor; a new L{Clock} by default.
    """
    if hasattr(protocol, "callLater"):
        protocol.callLater = (clock or Clock()).callLater  # type: ignore[attr-defined]
    from twisted.internet.interfaces import ITLSTransport

    transport = StartTLSStringTransport(
        hostAddress=IPv4Address("TCP", "198.51.100.1", 587),
        peerAddress=IPv4Address("TCP", peerHost, 40000),
    )
    if secure:
        directlyProvides(transport, ISSLTransport)
    else:
        directlyProvides(transport, ITLSTransport)
    protocol.makeConnection(transport)
    return transport


class LineExchange:
    """
    Talk to a line-based protocol over a L{StartTLSStringTransport}.

    C{exchange(b"EHLO x")} sends the line and returns the bytes the protocol
    wrote in response (synchronously, so only for protocols whose answer
    does not wait on a Deferred that has not fired).
    """

    def __init__(self, protocol: Protocol, transport: StringTransport) -> None:
        self.protocol = protocol
        self.transport = transport

    def send(self, data: bytes) -> bytes:
        """
        Deliver raw bytes (one read) and return what was written back.
        """
        self.transport.clear()
        self.protocol.dataReceived(data)
        self.drainProducer()
        return self.transport.value()

    def drainProducer(self, limit: int = 100000) -> None:
        """
        Run a producer the protocol registered on the transport (IMAP's
        FETCH streams bodies that way) until it unregisters: a real
        transport would pull from it as the socket drains.
        """
        for _ in range(limit):
            producer = self.transport.producer
            if producer is None:
                return
            producer.resumeProducing()
        raise RuntimeError("producer never finished")

    def exchange(self, line: bytes) -> bytes:
        """
        Send one line with CRLF and return the reply bytes.
        """
        return self.send(line + b"\r\n")

    def replyLines(self, line: bytes) -> list[bytes]:
        """
        Send one line; return the reply split into lines.
        """
        return self.exchange(line).splitlines()


def connectPlaintext(protocol: Protocol, **kwargs: Any) -> LineExchange:
    """
    Connect C{protocol} to a fresh in-memory transport that is not
    encrypted (it can still start TLS: STARTTLS marks it L{ISSLTransport <twisted.internet.interfaces.ISSLTransport>}).

    @param kwargs: C{peerHost} and C{clock}, as for L{connectedTransport}.
    @return: A L{LineExchange} to talk to it; its C{transport} attribute
        holds what the protocol wrote so far (the greeting).
    """
    return LineExchange(protocol, connectedTransport(protocol, secure=False, **kwargs))


def connectTLS(protocol: Protocol, **kwargs: Any) -> LineExchange:
    """
    Connect C{protocol} to a fresh in-memory transport marked as TLS from
    the start (implicit TLS, as on ports 465 and 993).

    @param kwargs: C{peerHost} and C{clock}, as for L{connectedTransport}.
    @return: A L{LineExchange} to talk to it.
    """
    return LineExchange(protocol, connectedTransport(protocol, secure=True, **kwargs))


@implementer(IClientIDPolicy)
class RecordingPolicy:
    """
    An L{IClientIDPolicy} that answers every attempt with a verdict the test
    chooses and records what it is asked and told.

    @ivar verdict: The verdict of the next decisions (change it any time).
    @ivar reason: The reason given with it.
    @ivar decide: If not L{None}, called with each L{Attempt} to choose the
        verdict instead of C{verdict}.
    @ivar attempts: Every L{Attempt} passed to L{evaluate}, in order.
    @ivar outcomes: Every C{(decision, passwordAccepted)} passed to
        L{outcome}, in order.
    """

    def __init__(
        self,
        verdict: Verdict = Verdict.ACCEPT,
        reason: str = "recorded",
        decide: Callable[[Attempt], Verdict] | None = None,
    ) -> None:
        self.verdict = verdict
        self.reason = reason
        self.decide = decide
        self.attempts: list[Attempt] = []
        self.outcomes: list[tuple[Decision, bool]] = []

    def evaluate(self, attempt: Attempt) -> defer.Deferred[Decision]:
        """
        Record C{attempt}; answer with C{decide(attempt)} or C{verdict}.
        """
        self.attempts.append(attempt)
        verdict = self.decide(attempt) if self.decide is not None else self.verdict
        return defer.succeed(Decision(attempt, verdict, self.reason))

    def outcome(self, decision: Decision, passwordAccepted: bool) -> defer.Deferred[None]:
        """
        Record the outcome.
        """
        self.outcomes.append((decision, passwordAccepted))
        return defer.succeed(None)


@implementer(IAlertObserver)
class RecordingAlertObserver:
    """
    An L{IAlertObserver} that keeps every alert.

    @ivar alerts: The L{clientid_twisted.policy.Alert}s raised, in
        order.
    """

    def __init__(self) -> None:
        self.alerts: list[Any] = []

    def alertRaised(self, alert: Any) -> None:
        self.alerts.append(alert)

    def kinds(self) -> list[str]:
        """
        The kinds of the alerts raised, in order.
        """
        return [alert.kind for alert in self.alerts]


@functools.lru_cache(maxsize=None)
def throwawayCertificate(hostname: str = "localhost") -> ServerCertificate:
    """
    A self-signed certificate for C{hostname}, 127.0.0.1 and ::1, made once
    per process (key generation is the slow part of a TLS test).
    """
    certificatePEM, keyPEM = selfSignedCertificate(hostname, days=2)
    return ServerCertificate(certificatePEM, keyPEM, generated=True)


def clientTLSOptions(
    certificate: ServerCertificate, hostname: str = "localhost"
) -> Any:
    """
    Client TLS options for Twisted clients that trust exactly C{certificate}.
    """
    authority = ssl.Certificate.loadPEM(certificate.certificatePEM)
    return ssl.optionsForClientTLS(hostname, trustRoot=authority)


class ConnectionTracker:
    """
    Counts the connections a factory's protocols hold open, so a loopback
    test can wait for both ends to close before the reactor is checked for
    leftovers (trial's "dirty reactor").

    It wraps C{factory.buildProtocol} rather than the factory, so the
    protocols keep their real transport (a wrapping factory would hide a
    transport that later starts TLS).

    @ivar open: The protocols whose connection is open.
    @ivar built: Every protocol built, in order.
    """

    def __init__(self, factory: Any = None) -> None:
        self.open: set[Any] = set()
        self.built: list[Any] = []
        self._waiting: list[defer.Deferred[None]] = []
        if factory is None:
            return
        build = factory.buildProtocol

        def buildProtocol(addr: Any) -> Any:
            protocol = build(addr)
            if protocol is not None:
                self.track(protocol)
            return protocol

        factory.buildProtocol = buildProtocol

    def track(self, protocol: Any) -> None:
        """
        Watch a protocol made outside the factory (say, one handed to
        C{connectProtocol}); call it before the connection is made.
        """
        self.built.append(protocol)
        self.open.add(protocol)
        lost = protocol.connectionLost

        def connectionLost(reason: Any) -> Any:
            try:
                return lost(reason)
            finally:
                self.open.discard(protocol)
                if not self.open:
                    waiting, self._waiting = self._waiting, []
                    for d in waiting:
                        d.callback(None)

        protocol.connectionLost = connectionLost

    def whenClosed(self) -> defer.Deferred[None]:
        """
        A Deferred that fires once no tracked connection is open.
        """
        if not self.open:
            return defer.succeed(None)
        d: defer.Deferred[None] = defer.Deferred()
        self._waiting.append(d)
        return d


def synchronousScheduler(iterator: Any) -> defer.Deferred[Any]:
    """
    A scheduler for L{twisted.mail.imap4.IMAP4Server} (its C{scheduler}
    argument) that runs FETCH output at once instead of in later reactor
    turns, so IMAP tests can use L{SynchronousTestCase <twisted.trial.unittest.SynchronousTestCase>}.  A L{Deferred <twisted.internet.defer.Deferred>}
    the iterator yields pauses it until that fires.
    """
    d: defer.Deferred[Any] = defer.Deferred()

    def go(last: Any) -> None:
        while True:
            try:
                result = next(iterator)
            except StopIteration:
                d.callback(last)
                return
            except BaseException:
                d.errback()
                return
            if isinstance(result, defer.Deferred):
                result.addCallback(go)
                return

    go(None)
    return d
