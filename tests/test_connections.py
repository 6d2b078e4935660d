"""
Tests for L{clientid_twisted.server.connections} and
L{clientid_twisted.server.shutdown}: counting connections in total, per
address (IPv6 per /64) and TLS handshakes in progress; the goodbye over the
limit; winding sessions down on shutdown.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase

from clientid_twisted.server.connections import (
    ConnectionLimiter,
    RefusedConnection,
    addressKey,
)
from clientid_twisted.server.imapserver import MailIMAP4Factory
from clientid_twisted.server.limits import ServerLimits
from clientid_twisted.server.shutdown import GracefulShutdownService
from clientid_twisted.server.submission import SubmissionFactory


def v4(host: str) -> IPv4Address:
    return IPv4Address("TCP", host, 40000)


def v6(host: str) -> IPv6Address:
    return IPv6Address("TCP", host, 40000)


class AddressKeyTests(SynchronousTestCase):
    def test_ipv4(self) -> None:
        self.assertEqual(addressKey(v4("192.0.2.7")), "192.0.2.7")

    def test_ipv6Per64(self) -> None:
        """
        Addresses in one /64 share a key; the next /64 does not.
        """
        a = addressKey(v6("2001:db8:1:2::1"))
        self.assertEqual(a, "2001:db8:1:2::/64")
        self.assertEqual(addressKey(v6("2001:db8:1:2:ffff:ffff:ffff:ffff")), a)
        self.assertEqual(addressKey(v6("2001:db8:1:2::1%eth0")), a)
        self.assertNotEqual(addressKey(v6("2001:db8:1:3::1")), a)

    def test_ipv4Mapped(self) -> None:
        self.assertEqual(addressKey(v6("::ffff:192.0.2.7")), "192.0.2.7")

    def test_notIP(self) -> None:
        self.assertIsNone(addressKey(UNIXAddress(b"/run/x.sock")))
        self.assertIsNone(addressKey(None))


class Session:
    """
    What the limiter sees of a session.
    """

    def __init__(self, busy: bool = False) -> None:
        self.busy = busy
        self.closed = False
        self.cutOff = False

    def drainIfIdle(self) -> bool:
        if self.busy:
            return False
        self.closed = True
        return True

    def cut(self) -> None:
        self.cutOff = True


class LimiterTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.limiter = ConnectionLimiter(
            ServerLimits(
                maxConnections=4,
                maxConnectionsPerAddress=2,
                maxTLSHandshakes=3,
                maxTLSHandshakesPerAddress=1,
            ),
            clock=Clock(),
        )

    def test_perAddress(self) -> None:
        a, b, c = Session(), Session(), Session()
        self.assertIsNone(self.limiter.admit(a, v4("192.0.2.1")))
        self.assertIsNone(self.limiter.admit(b, v4("192.0.2.1")))
        self.assertEqual(
            self.limiter.admit(c, v4("192.0.2.1")), "too many connections from your address"
        )
        self.assertIsNone(self.limiter.admit(c, v4("192.0.2.2")))
        self.limiter.release(a)
        self.assertIsNone(self.limiter.admit(Session(), v4("192.0.2.1")))

    def test_ipv6CountedPer64(self) -> None:
        self.assertIsNone(self.limiter.admit(Session(), v6("2001:db8::1")))
        self.assertIsNone(self.limiter.admit(Session(), v6("2001:db8::2")))
        self.assertEqual(
            self.limiter.admit(Session(), v6("2001:db8::ffff")),
            "too many connections from your address",
        )
        self.assertIsNone(self.limiter.admit(Session(), v6("2001:db8:0:1::1")))

    def test_total(self) -> None:
        for n in range(4):
            self.assertIsNone(self.limiter.admit(Session(), v4(f"192.0.2.{n}")))
        self.assertEqual(self.limiter.admit(Session(), v4("198.51.100.1")), "too many connections")
        self.assertEqual(self.limiter.connections, 4)

    def test_unixCountsOnlyInTotal(self) -> None:
        for n in range(4):
            self.assertIsNone(self.limiter.admit(Session(), UNIXAddress(b"/s")))
        self.assertEqual(self.limiter.admit(Session(), UNIXAddress(b"/s")), "too many connections")

    def test_handshakes(self) -> None:
        """
        Handshakes in progress have their own allowance, per address and
        in total; a finished or lost one frees its place.
        """
        sessions = [Session() for _ in range(4)]
        for session, host in zip(sessions, ["192.0.2.1", "192.0.2.1", "192.0.2.2", "192.0.2.3"]):
            self.limiter.admit(session, v4(host))
        self.assertTrue(self.limiter.handshakeStarting(sessions[0]))
        self.assertFalse(self.limiter.handshakeStarting(sessions[1]))
        self.assertTrue(self.limiter.handshakeStarting(sessions[2]))
        self.assertTrue(self.limiter.handshakeStarting(sessions[3]))
        self.assertEqual(self.limiter.handshakes, 3)
        self.limiter.handshakeFinished(sessions[0])
        self.assertTrue(self.limiter.handshakeStarting(sessions[1]))
        self.limiter.release(sessions[1])
        self.assertEqual(self.limiter.handshakes, 2)


class DrainTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.limiter = ConnectionLimiter(ServerLimits(shutdownGrace=5), clock=self.clock)

    def test_empty(self) -> None:
        self.successResultOf(self.limiter.drain())

    def test_idleNowBusyLaterRestCut(self) -> None:
        """
        Idle sessions end at once; busy ones when they finish their command
        (polled); what is left at the end of the grace is cut.  New
        connections are refused meanwhile.
        """
        idle, busy, stuck = Session(), Session(busy=True), Session(busy=True)
        for n, session in enumerate([idle, busy, stuck]):
            self.limiter.admit(session, v4(f"192.0.2.{n}"))
        done = self.limiter.drain()
        self.assertTrue(idle.closed)
        self.assertFalse(busy.closed)
        self.assertEqual(self.limiter.admit(Session(), v4("192.0.2.9")), "shutting down")
        self.limiter.release(idle)
        busy.busy = False
        self.clock.advance(0.1)
        self.assertTrue(busy.closed)
        self.limiter.release(busy)
        self.clock.advance(4)
        self.assertFalse(stuck.cutOff)
        self.assertNoResult(done)
        self.clock.advance(1)
        self.assertTrue(stuck.cutOff)
        self.limiter.release(stuck)
        self.successResultOf(done)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_giveUp(self) -> None:
        """
        A session that never goes away does not hold the shutdown.
        """
        self.limiter.admit(Session(busy=True), v4("192.0.2.1"))
        done = self.limiter.drain()
        self.clock.advance(5)
        self.assertNoResult(done)
        self.clock.advance(2)
        self.successResultOf(done)

    def test_service(self) -> None:
        """
        Stopping the shutdown service drains the limiter.
        """
        self.limiter.admit(Session(busy=True), v4("192.0.2.1"))
        service = GracefulShutdownService(self.limiter, grace=1)
        service.startService()
        d = service.stopService()
        self.assertTrue(self.limiter.draining)
        self.assertNoResult(d)
        self.clock.advance(3)
        self.successResultOf(d)


class RefusalTests(SynchronousTestCase):
    """
    Over a limit the factories hand out a protocol that says goodbye and
    closes; it is not counted.
    """

    def refused(self, factory: Any) -> StringTransport:
        factory.limiter = ConnectionLimiter(ServerLimits(maxConnectionsPerAddress=1), clock=Clock())
        first = factory.buildProtocol(v4("192.0.2.1"))
        self.assertNotIsInstance(first, RefusedConnection)
        refused = factory.buildProtocol(v4("192.0.2.1"))
        self.assertIsInstance(refused, RefusedConnection)
        self.assertEqual(factory.limiter.connections, 1)
        clock = Clock()
        refused._callLater = clock.callLater
        transport = StringTransport(peerAddress=v4("192.0.2.1"))
        refused.makeConnection(transport)
        self.assertTrue(transport.disconnecting)
        refused.dataReceived(b"EHLO x\r\n")
        clock.advance(10)
        self.assertTrue(transport.disconnected)
        return transport

    def test_smtp(self) -> None:
        factory = SubmissionFactory()
        factory.domain = b"mail.example.test"
        self.assertEqual(
            self.refused(factory).value(),
            b"421 4.7.0 mail.example.test Too many connections from your address, try again later\r\n",
        )

    def test_imap(self) -> None:
        self.assertEqual(
            self.refused(MailIMAP4Factory()).value(),
            b"* BYE Too many connections from your address, try again later\r\n",
        )


class RefusalLogTests(SynchronousTestCase):
    """
    Under a flood of refused connections the log gets one line per reason
    per interval, and the next line says how many were not logged.
    """

    def test_rationed(self) -> None:
        from twisted.logger import globalLogPublisher

        from clientid_twisted.server.connections import REFUSAL_LOG_INTERVAL

        events: list[dict[str, Any]] = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        clock = Clock()
        limiter = ConnectionLimiter(ServerLimits(), clock=clock)
        for _ in range(500):
            limiter.logRefusal("smtp", "192.0.2.1", "too many from this address")
        limiter.logRefusal("imap", "192.0.2.1", "too many from this address")
        clock.advance(REFUSAL_LOG_INTERVAL)
        limiter.logRefusal("smtp", "192.0.2.1", "too many from this address")
        refused = [e for e in events if e.get("limitEvent") == "refused"]
        self.assertEqual([(e["protocol"], e["unlogged"]) for e in refused], [("smtp", 0), ("imap", 0), ("smtp", 499)])
        self.assertIn("(499 more refused for this reason since the last such line)", refused[2]["more"])
