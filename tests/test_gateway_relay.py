"""
Unit tests of the IMAP gateway's front after a login
(L{clientid_twisted.gateway.imap.GatewayIMAP4Server}): the switch to the
relay, backpressure, limits and closing, with StringTransport and Clock.
"""

from __future__ import annotations

from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase

from clientid_twisted.gateway.backend import Backend
from clientid_twisted.gateway.config import GatewayConfig, parseBackendAddress
from clientid_twisted.gateway.imap import GatewayIMAP4Server, PendingNotices
from clientid_twisted.gateway.imapbackend import BackendIMAPProtocol, BackendIMAPSession
from clientid_twisted.policy._alerts import Alert
from clientid_twisted.server.limits import ServerLimits
from clientid_twisted.store import MemoryStore

CAPABILITIES = [b"IMAP4rev1", b"IDLE", b"MOVE"]


class RelayTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.front = GatewayIMAP4Server()
        self.front.callLater = self.clock.callLater  # type: ignore[method-assign]
        self.front.limits = ServerLimits(imapIdleTimeout=600)
        self.frontTransport = StringTransport(
            peerAddress=IPv4Address("TCP", "198.51.100.7", 40000),
            hostAddress=IPv4Address("TCP", "127.0.0.1", 143),
        )
        self.front.makeConnection(self.frontTransport)
        self.frontTransport.clear()
        backend = Backend(
            parseBackendAddress("tcp:host=127.0.0.1:port=1"), GatewayConfig(), self.clock
        )
        self.backendProtocol = BackendIMAPProtocol()
        self.backendTransport = StringTransport()
        self.backendProtocol.makeConnection(self.backendTransport)
        self.backendProtocol.dataReceived(b"* OK ready\r\n")
        self.successResultOf(self.backendProtocol.greeting)
        self.session = BackendIMAPSession(self.backendProtocol, CAPABILITIES, "alice", backend)

    def test_switch(self) -> None:
        """
        The login's OK carries the backend's capabilities; what the client
        pipelined after its login goes to the backend, in order.
        """
        self.front.blocked = [b"b SELECT INBOX"]
        self.front._buffer = b"c NO"
        self.front._startRelay(self.session, b"a", b"LOGIN succeeded")
        self.assertEqual(
            self.frontTransport.value(), b"a OK [CAPABILITY IMAP4rev1 IDLE MOVE] LOGIN succeeded\r\n"
        )
        self.assertEqual(self.backendTransport.value(), b"b SELECT INBOX\r\nc NO")
        self.assertTrue(self.front.isAuthenticated())

    def test_bytesBothWaysUnchanged(self) -> None:
        self.front._startRelay(self.session, b"a", b"LOGIN succeeded")
        self.frontTransport.clear()
        self.front.dataReceived(b"d APPEND INBOX {3}\r\nx\0y\r\n")
        self.assertEqual(self.backendTransport.value(), b"d APPEND INBOX {3}\r\nx\0y\r\n")
        self.backendProtocol.dataReceived(b"+ OK\r\n* 1 FETCH (BODY[] {2}\r\n\xff\xfe)\r\n")
        self.assertEqual(self.frontTransport.value(), b"+ OK\r\n* 1 FETCH (BODY[] {2}\r\n\xff\xfe)\r\n")

    def test_backpressureBothWays(self) -> None:
        """
        Each transport pauses the other when its buffer fills: the client's
        connection produces for the backend's and the other way round.
        """
        self.front._startRelay(self.session, b"a", b"LOGIN succeeded")
        self.assertIs(self.frontTransport.producer, self.backendTransport)
        self.assertTrue(self.frontTransport.streaming)
        self.assertIs(self.backendTransport.producer, self.frontTransport)
        self.assertTrue(self.backendTransport.streaming)

    def test_backendCloses(self) -> None:
        """
        The backend's BYE reaches the client, then the client's connection
        closes.
        """
        self.front._startRelay(self.session, b"a", b"LOGIN succeeded")
        self.backendProtocol.dataReceived(b"* BYE Server shutting down.\r\n")
        self.backendProtocol.connectionLost()
        self.assertTrue(self.frontTransport.value().endswith(b"* BYE Server shutting down.\r\n"))
        self.assertTrue(self.frontTransport.disconnecting)
        self.assertIsNone(self.frontTransport.producer)

    def test_clientCloses(self) -> None:
        self.front._startRelay(self.session, b"a", b"LOGIN succeeded")
        self.front.connectionLost()
        self.assertTrue(self.backendTransport.disconnecting)

    def test_idleTimeoutKeepsWorking(self) -> None:
        """
        After the switch the client's silence is still limited; its bytes
        reset the timer.
        """
        self.front._startRelay(self.session, b"a", b"LOGIN succeeded")
        self.clock.advance(599)
        self.front.dataReceived(b"e NOOP\r\n")
        self.clock.advance(599)
        self.assertFalse(self.frontTransport.disconnecting)
        self.clock.advance(2)
        self.assertIn(b"* BYE Autologout", self.frontTransport.value())
        self.assertTrue(self.frontTransport.disconnecting)
        self.front.connectionLost()
        self.assertTrue(self.backendTransport.disconnecting)

    def test_noticesAppendedBeforeTheSwitch(self) -> None:
        """
        Pending notices are APPENDed on the backend connection first; the
        client's OK comes after the backend's.
        """
        notices = PendingNotices("mail.example.org", MemoryStore(Clock()))
        notices.alertRaised(Alert(kind="device-new", account="alice", time=0.0))
        self.front.notices = notices
        d = self.front._appendNotices(self.session)
        d.addCallback(lambda ignored: self.front._startRelay(self.session, b"a", b"LOGIN succeeded"))
        self.assertTrue(self.backendTransport.value().startswith(b"G1 APPEND INBOX {"))
        self.assertEqual(self.frontTransport.value(), b"")
        self.backendProtocol.dataReceived(b"+ go\r\n")
        self.backendProtocol.dataReceived(b"G1 OK APPEND completed\r\n")
        self.assertEqual(
            self.frontTransport.value(), b"a OK [CAPABILITY IMAP4rev1 IDLE MOVE] LOGIN succeeded\r\n"
        )
        self.assertEqual(self.successResultOf(notices.take("alice")), [])
