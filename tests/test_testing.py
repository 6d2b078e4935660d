"""
Tests for L{clientid_twisted.testing}: the stand-ins provide their
interfaces, and the transport helpers connect protocols as TLS or not.
"""

from __future__ import annotations

from zope.interface.verify import verifyObject

from twisted.internet.interfaces import ISSLTransport, ITLSTransport
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from clientid_twisted._identity import ClientIdentity
from clientid_twisted.interfaces import IAlertObserver, IClientIDPolicy, IClientIDStore
from clientid_twisted.policy._alerts import Alert
from clientid_twisted.policy._decision import Attempt, Verdict
from clientid_twisted.smtp import ClientIDESMTPFactory
from clientid_twisted.testing import (
    MemoryStore,
    RecordingAlertObserver,
    RecordingPolicy,
    connectPlaintext,
    connectTLS,
    throwawayCertificate,
)


class StandInTests(SynchronousTestCase):
    """
    The memory store, recording policy and recording observer provide their
    interfaces fully.
    """

    def test_memoryStore(self) -> None:
        self.assertTrue(verifyObject(IClientIDStore, MemoryStore(Clock())))

    def test_recordingPolicy(self) -> None:
        policy = RecordingPolicy()
        self.assertTrue(verifyObject(IClientIDPolicy, policy))
        attempt = Attempt("alice", ClientIdentity("UUID", "t"), "192.0.2.1", "smtp", True)
        decision = self.successResultOf(policy.evaluate(attempt))
        self.assertIs(decision.verdict, Verdict.ACCEPT)
        self.assertIs(decision.attempt, attempt)
        policy.verdict = Verdict.TEMPFAIL
        self.assertIs(self.successResultOf(policy.evaluate(attempt)).verdict, Verdict.TEMPFAIL)
        self.assertIsNone(self.successResultOf(policy.outcome(decision, True)))
        self.assertEqual(policy.attempts, [attempt, attempt])
        self.assertEqual(policy.outcomes, [(decision, True)])

    def test_recordingPolicyDecide(self) -> None:
        policy = RecordingPolicy(
            decide=lambda a: Verdict.REJECT if a.identity is None else Verdict.ACCEPT,
            reason="needs an identity",
        )
        decision = self.successResultOf(policy.evaluate(Attempt("alice")))
        self.assertEqual((decision.verdict, decision.reason), (Verdict.REJECT, "needs an identity"))

    def test_recordingAlertObserver(self) -> None:
        observer = RecordingAlertObserver()
        self.assertTrue(verifyObject(IAlertObserver, observer))
        alert = Alert("device-new", 0.0, account="alice")
        observer.alertRaised(alert)
        self.assertEqual(observer.alerts, [alert])
        self.assertEqual(observer.kinds(), ["device-new"])


class ConnectTests(SynchronousTestCase):
    """
    L{connectPlaintext} and L{connectTLS} give a L{LineExchange} over a
    transport that is, or is not, TLS.
    """

    def factory(self) -> ClientIDESMTPFactory:
        factory = ClientIDESMTPFactory(context=throwawayCertificate().options())
        factory.domain = b"mx.example.test"
        return factory

    def test_plaintext(self) -> None:
        exchange = connectPlaintext(self.factory().buildProtocol(None))
        self.assertFalse(ISSLTransport.providedBy(exchange.transport))
        self.assertTrue(ITLSTransport.providedBy(exchange.transport))
        self.assertTrue(exchange.transport.value().startswith(b"220 mx.example.test"))
        self.assertNotIn(b"CLIENTID", exchange.exchange(b"EHLO c"))
        self.assertEqual(exchange.replyLines(b"STARTTLS")[-1][:3], b"220")
        self.assertTrue(ISSLTransport.providedBy(exchange.transport))
        self.assertIn(b"CLIENTID", exchange.exchange(b"EHLO c"))

    def test_tls(self) -> None:
        clock = Clock()
        exchange = connectTLS(self.factory().buildProtocol(None), clock=clock, peerHost="203.0.113.5")
        self.assertTrue(ISSLTransport.providedBy(exchange.transport))
        self.assertEqual(exchange.transport.getPeer().host, "203.0.113.5")
        self.assertIn(b"CLIENTID", exchange.exchange(b"EHLO c"))
        self.assertEqual(exchange.exchange(b"CLIENTID UUID tok")[:3], b"250")
