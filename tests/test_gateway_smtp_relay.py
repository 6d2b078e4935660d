"""
The SMTP gateway's relay after AUTH (L{clientid_twisted.gateway.smtp}),
driven over StringTransports with a Clock: one command at a time, the
backend's replies unchanged, message data streamed up to the final dot,
BDAT chunks counted in bytes, backpressure, and the ends of a session.
"""

from __future__ import annotations

import base64
from typing import Any

from zope.interface import implementer
from zope.interface.verify import verifyObject

from twisted.cred.checkers import ICredentialsChecker
from twisted.cred.credentials import IUsernamePassword
from twisted.cred.portal import IRealm, Portal
from twisted.internet import defer
from twisted.internet.interfaces import IPushProducer
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase

from clientid_twisted.gateway.smtp import (
    GatewayESMTP,
    GatewaySMTPRealm,
    GatewaySubmissionFactory,
)
from clientid_twisted.gateway.smtpbackend import BackendSMTPProtocol, BackendSMTPSession
from clientid_twisted.testing import LineExchange, connectTLS

LOST = b"421 4.4.2 gw.example Lost the connection to the mail server, closing connection\r\n"


@implementer(ICredentialsChecker)
class SessionChecker:
    """
    Accepts any password with a prepared backend session.
    """

    credentialInterfaces = (IUsernamePassword,)

    def __init__(self, session: BackendSMTPSession) -> None:
        self.session = session

    def requestAvatarId(self, credentials: Any) -> defer.Deferred[Any]:
        return defer.succeed(self.session)


class RelayTestCase(SynchronousTestCase):
    extensions: dict[bytes, list[bytes]] = {b"CHUNKING": [], b"8BITMIME": []}

    def setUp(self) -> None:
        self.backendTransport = StringTransport()
        self.backendProtocol = BackendSMTPProtocol()
        self.backendProtocol.makeConnection(self.backendTransport)
        self.backendProtocol.dataReceived(b"220 mx ESMTP\r\n")
        session = BackendSMTPSession(self.backendProtocol, dict(self.extensions), "alice")
        factory = GatewaySubmissionFactory(Portal(GatewaySMTPRealm(), [SessionChecker(session)]))
        factory.domain = b"gw.example"
        self.protocol: GatewayESMTP = factory.buildProtocol(None)
        self.clock = Clock()
        self.client: LineExchange = connectTLS(self.protocol, clock=self.clock)
        self.client.exchange(b"EHLO laptop.example.net")
        response = base64.b64encode(b"\0alice\0secret")
        self.assertEqual(
            self.client.exchange(b"AUTH PLAIN " + response),
            b"235 2.7.0 Authentication successful\r\n",
        )
        self.assertIs(self.protocol.relay, session)
        self.backendTransport.clear()

    def backendSaid(self) -> bytes:
        said = self.backendTransport.value()
        self.backendTransport.clear()
        return said

    def backendAnswers(self, reply: bytes) -> bytes:
        """
        The backend sends C{reply}; what the client is sent.
        """
        self.client.transport.clear()
        self.backendProtocol.dataReceived(reply)
        return self.client.transport.value()

    def paused(self) -> bool:
        return self.client.transport.producerState == "paused"


class CommandTests(RelayTestCase):
    def test_interfaces(self) -> None:
        verifyObject(IRealm, GatewaySMTPRealm())
        producer = self.backendTransport.producer
        self.assertTrue(verifyObject(IPushProducer, producer))

    def test_oneAtATime(self) -> None:
        """
        Pipelined commands go to the backend one at a time, each after the
        previous reply, which the client gets byte for byte; the client is
        not read meanwhile.
        """
        sent = self.client.send(b"MAIL FROM:<alice@x.example> BODY=8BITMIME\r\nRCPT TO:<b@y.example>\r\n")
        self.assertEqual(sent, b"")
        self.assertEqual(self.backendSaid(), b"MAIL FROM:<alice@x.example> BODY=8BITMIME\r\n")
        self.assertTrue(self.paused())
        self.assertEqual(self.backendAnswers(b"250 2.1.0 Ok\r\n"), b"250 2.1.0 Ok\r\n")
        self.assertEqual(self.backendSaid(), b"RCPT TO:<b@y.example>\r\n")
        refusal = b"554 5.7.1 <b@y.example>: Relay access denied\r\n"
        self.assertEqual(self.backendAnswers(refusal), refusal)
        self.assertFalse(self.paused())
        self.assertEqual(self.protocol.errors, 1)

    def test_frontCommandsStayFront(self) -> None:
        """
        VRFY and AUTH after the login are the front's; EHLO is the front's
        and sends an RSET to the backend, whose reply the client never sees.
        """
        self.assertTrue(self.client.exchange(b"VRFY alice").startswith(b"252 "))
        self.assertTrue(self.client.exchange(b"AUTH PLAIN AAAA").startswith(b"503 "))
        self.assertEqual(self.backendSaid(), b"")
        self.assertIn(b"CLIENTID", self.client.exchange(b"EHLO laptop.example.net"))
        self.assertEqual(self.backendSaid(), b"RSET\r\n")
        self.assertEqual(self.backendAnswers(b"250 2.0.0 Ok\r\n"), b"")
        self.client.send(b"NOOP\r\n")
        self.assertEqual(self.backendSaid(), b"NOOP\r\n")
        self.assertEqual(self.backendAnswers(b"250 2.0.0 Ok\r\n"), b"250 2.0.0 Ok\r\n")

    def test_overlongCommand(self) -> None:
        self.assertEqual(
            self.client.exchange(b"MAIL FROM:<" + b"a" * 600 + b"@x.example>"),
            b"500 5.5.2 Line too long\r\n",
        )
        self.assertEqual(self.client.send(b"x" * 20000), b"")
        self.assertEqual(self.client.send(b"\r\n"), b"500 5.5.2 Line too long\r\n")
        self.assertEqual(self.backendSaid(), b"")

    def test_quit(self) -> None:
        self.client.send(b"QUIT\r\n")
        self.assertEqual(self.backendSaid(), b"QUIT\r\n")
        self.assertEqual(self.backendAnswers(b"221 2.0.0 Bye\r\n"), b"221 2.0.0 Bye\r\n")
        self.assertTrue(self.client.transport.disconnecting)
        self.assertFalse(self.paused())


class DataTests(RelayTestCase):
    def startData(self) -> None:
        self.client.send(b"DATA\r\n")
        self.assertEqual(self.backendSaid(), b"DATA\r\n")
        go = b"354 End data with <CR><LF>.<CR><LF>\r\n"
        self.assertEqual(self.backendAnswers(go), go)

    def test_streamedToFinalDot(self) -> None:
        """
        Message data goes on as it arrives, stuffed dots and all; the end
        (split across reads) is found, and what follows it waits for the
        backend's verdict.
        """
        self.startData()
        self.client.send(b"Subject: x\r\n\r\n..stuffed\r\n")
        self.assertEqual(self.backendSaid(), b"Subject: x\r\n\r\n..stuffed\r\n")
        self.assertTrue(self.protocol.inTransfer())
        self.client.send(b"last line\r\n.")
        self.assertEqual(self.backendSaid(), b"last line\r\n.")
        self.client.send(b"\r\nQUIT\r\n")
        self.assertEqual(self.backendSaid(), b"\r\n")
        self.assertFalse(self.protocol.inTransfer())
        self.assertTrue(self.paused())
        queued = b"250 2.0.0 Ok: queued as 3F2A1C0D3E\r\n"
        self.assertEqual(self.backendAnswers(queued), queued)
        self.assertEqual(self.backendSaid(), b"QUIT\r\n")

    def test_emptyMessage(self) -> None:
        """
        A final dot right after the 354 ends the data.
        """
        self.startData()
        self.client.send(b".\r\nNOOP\r\n")
        self.assertEqual(self.backendSaid(), b".\r\n")
        self.backendAnswers(b"250 2.0.0 Ok: queued as 1\r\n")
        self.assertEqual(self.backendSaid(), b"NOOP\r\n")

    def test_refusedData(self) -> None:
        """
        A DATA the backend refuses leaves the session in command mode.
        """
        self.client.send(b"DATA\r\n")
        self.backendSaid()
        refusal = b"554 5.5.1 Error: no valid recipients\r\n"
        self.assertEqual(self.backendAnswers(refusal), refusal)
        self.client.send(b"RSET\r\n")
        self.assertEqual(self.backendSaid(), b"RSET\r\n")

    def test_backpressure(self) -> None:
        """
        A backend whose send buffer is full stops the reading of the
        client; reading resumes when it drains.
        """
        self.startData()
        producer = self.backendTransport.producer
        assert producer is not None
        producer.pauseProducing()
        self.assertTrue(self.paused())
        producer.resumeProducing()
        self.assertFalse(self.paused())
        # Not while a reply is awaited.
        self.client.send(b".\r\n")
        producer.pauseProducing()
        producer.resumeProducing()
        self.assertTrue(self.paused())


class ChunkingTests(RelayTestCase):
    def test_chunkBytesCounted(self) -> None:
        """
        BDAT's chunk goes on as bytes (CRLF and a dot line inside, split
        across reads); the command after it waits for the reply.
        """
        self.client.send(b"BDAT 12 LAST\r\nab\r\n.\r")
        self.assertEqual(self.backendSaid(), b"BDAT 12 LAST\r\nab\r\n.\r")
        self.client.send(b"\ncdefgNOOP\r\n")
        self.assertEqual(self.backendSaid(), b"\ncdefg")
        self.assertEqual(self.backendAnswers(b"250 2.0.0 Ok: queued as 1\r\n"), b"250 2.0.0 Ok: queued as 1\r\n")
        self.assertEqual(self.backendSaid(), b"NOOP\r\n")

    def test_badSize(self) -> None:
        self.assertEqual(self.client.exchange(b"BDAT lots"), b"501 5.5.4 Syntax: BDAT size [LAST]\r\n")
        self.assertEqual(self.backendSaid(), b"")


class ChunkingNotOfferedTests(RelayTestCase):
    extensions: dict[bytes, list[bytes]] = {}

    def test_chunkDropped(self) -> None:
        """
        BDAT to a backend without CHUNKING: the chunk is read and dropped,
        the client gets 502, the backend sees nothing.
        """
        self.assertEqual(
            self.client.send(b"BDAT 11\r\nMAIL FROM\r\nNOOP\r\n"),
            b"502 5.5.1 The mail server does not take BDAT\r\n",
        )
        self.assertEqual(self.backendSaid(), b"NOOP\r\n")


class EndTests(RelayTestCase):
    def test_backendLostWhileIdle(self) -> None:
        self.client.transport.clear()
        self.backendProtocol.connectionLost()
        self.assertEqual(self.client.transport.value(), LOST)
        self.assertTrue(self.client.transport.disconnecting)

    def test_backendLostDuringCommand(self) -> None:
        self.client.send(b"MAIL FROM:<alice@x.example>\r\nRSET\r\n")
        self.backendSaid()
        self.client.transport.clear()
        self.backendProtocol.connectionLost()
        self.assertEqual(self.client.transport.value(), LOST)
        self.assertEqual(self.backendSaid(), b"")

    def test_backendsOwnGoodbye(self) -> None:
        """
        A 421 the backend sends before closing is the client's only
        goodbye.
        """
        goodbye = b"421 4.4.2 mx Error: timeout exceeded\r\n"
        self.assertEqual(self.backendAnswers(goodbye), goodbye)
        self.client.transport.clear()
        self.backendProtocol.connectionLost()
        self.assertEqual(self.client.transport.value(), b"")
        self.assertTrue(self.client.transport.disconnecting)

    def test_clientGoneClosesBackend(self) -> None:
        self.protocol.connectionLost()
        self.assertTrue(self.backendTransport.disconnecting)
        self.assertIsNone(self.backendTransport.producer)

    def test_backendGoneThenClient(self) -> None:
        """
        The backend's connection ends first, then the client's: nothing is
        asked of the backend's dead transport (a TLS one has no producer
        to unregister any more and raises).
        """

        def gone() -> None:
            raise AttributeError("'Client' object has no attribute 'protocol'")

        self.backendProtocol.connectionLost()
        self.backendTransport.unregisterProducer = gone  # type: ignore[method-assign]
        self.protocol.connectionLost()
        self.assertTrue(self.client.transport.disconnecting)
