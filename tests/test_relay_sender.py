"""
Tests for L{clientid_twisted.server.relaysender}: one attempt against a
real ESMTP smarthost on loopback (implicit TLS, STARTTLS, AUTH), and how
its outcome is sorted into delivered, refused for good, and try again.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from twisted.internet import defer, reactor
from twisted.internet.protocol import Factory, Protocol
from twisted.mail import smtp
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase, TestCase

from clientid_twisted.gateway.config import parseBackendAddress
from clientid_twisted.server.relayconfig import RelaySettings
from clientid_twisted.server.relayqueue import QueueEntry
from clientid_twisted.server.relaysender import (
    RelaySender,
    Refused,
    SmarthostClient,
    describeFailure,
)
from clientid_twisted.testing import throwawayCertificate
from tests.services import freePort
from tests.smarthost import SMARTHOST_PASSWORD, SMARTHOST_USER, CaptureSmarthost

MESSAGE = b"Received: from x\nSubject: hello\n\nbody line\n"


def entry(recipient: str = "carol@remote.test", sender: str = "alice@example.test") -> QueueEntry:
    return QueueEntry(
        id="0123456789abcdef",
        sender=sender,
        recipient=recipient,
        account="alice@example.test",
        queued=0.0,
    )


class SenderTests(TestCase):
    """
    L{SmarthostClient.send} against the capturing smarthost.
    """

    def setUp(self) -> None:
        self.smarthost = CaptureSmarthost.start(self)
        work = Path(self.mktemp())
        work.mkdir()
        self.ca = work / "ca.pem"
        self.ca.write_bytes(throwawayCertificate().certificatePEM)
        self.data = work / "message-D"
        self.data.write_bytes(MESSAGE)

    def settings(self, **kwargs: Any) -> RelaySettings:
        values: dict[str, Any] = dict(
            smarthost=parseBackendAddress(f"tcp:host=localhost:port={self.smarthost.port}"),
            starttls=True,
            username=SMARTHOST_USER.decode(),
            password=SMARTHOST_PASSWORD,
            caFile=self.ca,
        )
        values.update(kwargs)
        return RelaySettings(**values)

    def send(self, settings: RelaySettings, e: QueueEntry | None = None) -> defer.Deferred[None]:
        return SmarthostClient(settings, "mail.example.test", reactor).send(
            e or entry(), self.data
        )

    @defer.inlineCallbacks
    def test_starttlsAndAuth(self) -> Any:
        """
        Over STARTTLS with AUTH the message arrives whole, with the
        envelope of the queue entry, as the configured user.
        """
        yield self.send(self.settings())
        [message] = self.smarthost.box
        self.assertEqual(message.sender, b"alice@example.test")
        self.assertEqual(message.recipients, [b"carol@remote.test"])
        self.assertEqual(message.avatarId, SMARTHOST_USER)
        self.assertIn(b"Subject: hello\r\n\r\nbody line\r\n", message.data)

    @defer.inlineCallbacks
    def test_implicitTLS(self) -> Any:
        yield self.send(
            self.settings(
                smarthost=parseBackendAddress(f"tls:localhost:{self.smarthost.tlsPort}"),
                starttls=False,
            )
        )
        [message] = self.smarthost.box
        self.assertEqual(message.avatarId, SMARTHOST_USER)

    @defer.inlineCallbacks
    def test_untrustedCertificate(self) -> Any:
        """
        Without the smarthost's authority in C{ca}, nothing is sent: a
        temporary failure.
        """
        failure = yield self.assertFailure(
            self.send(self.settings(caFile=None)), Exception
        )
        self.assertNotIsInstance(failure, Refused)
        self.assertEqual(self.smarthost.box, [])

    @defer.inlineCallbacks
    def test_noStartTLSOffered(self) -> Any:
        """
        A smarthost that does not offer STARTTLS never gets the password:
        the attempt fails (temporarily) before AUTH.
        """
        plain = CaptureSmarthost.start(self, tls=False)
        failure = yield self.assertFailure(
            self.send(self.settings(smarthost=parseBackendAddress(f"tcp:localhost:{plain.port}"))), smtp.TLSRequiredError
        )
        self.assertNotIsInstance(failure, Refused)
        self.assertEqual(plain.box, [])

    @defer.inlineCallbacks
    def test_wrongPassword(self) -> Any:
        """
        A refused login is temporary (the operator can fix the password
        while the mail waits), never a bounce.
        """
        failure = yield self.assertFailure(
            self.send(self.settings(password=b"wrong")), smtp.AUTHDeclinedError
        )
        self.assertIn("535", describeFailure(Failure(failure)))

    @defer.inlineCallbacks
    def test_permanentRefusal(self) -> Any:
        """
        A 5xx to RCPT is L{Refused}, with the reply's enhanced status.
        """
        refused = yield self.assertFailure(
            self.send(self.settings(), entry("reject-me@remote.test")), Refused
        )
        self.assertEqual(refused.code, 550)
        self.assertEqual(refused.status, "5.1.1")
        self.assertIn("No such user here", str(refused))

    @defer.inlineCallbacks
    def test_temporaryRefusal(self) -> Any:
        failure = yield self.assertFailure(
            self.send(self.settings(), entry("later@remote.test")), smtp.SMTPDeliveryError
        )
        self.assertNotIsInstance(failure, Refused)

    @defer.inlineCallbacks
    def test_connectionRefused(self) -> Any:
        failure = yield self.assertFailure(
            self.send(self.settings(smarthost=parseBackendAddress(f"tcp:127.0.0.1:{freePort()}"))), Exception
        )
        self.assertNotIsInstance(failure, Refused)
        self.assertIn("refused", describeFailure(Failure(failure)).lower())

    @defer.inlineCallbacks
    def test_connectionDropped(self) -> Any:
        """
        A smarthost that hangs up mid-conversation fails the attempt
        (temporarily); Twisted's factory alone would never hear of it over
        an endpoint and the attempt would hang.
        """

        class HangUp(Protocol):
            def connectionMade(self) -> None:
                self.transport.write(b"220 smarthost.test ESMTP\r\n")

            def dataReceived(self, data: bytes) -> None:
                self.transport.loseConnection()

        listener = reactor.listenTCP(0, Factory.forProtocol(HangUp), interface="127.0.0.1")
        self.addCleanup(listener.stopListening)
        settings = self.settings(
            smarthost=parseBackendAddress(f"tcp:127.0.0.1:{listener.getHost().port}"),
            starttls=False,
            username=None,
            password=None,
        )
        failure = yield self.assertFailure(self.send(settings), smtp.SMTPConnectError)
        self.assertNotIsInstance(failure, Refused)

    @defer.inlineCallbacks
    def test_dotLinesAcrossChunks(self) -> Any:
        """
        Lines that start with "." arrive intact wherever they fall,
        including at the start of a 16 KiB chunk: Twisted's own sender
        would send a lone "." there unstuffed and end the message early.
        """
        header = b"Subject: dots\n\n"
        filler = b"x" * (16384 - len(header) - 1) + b"\n"
        body = header + filler + b".\n" + b"..two\n" + b"after the dots\n"
        self.assertEqual(len(header + filler), 16384)
        self.data.write_bytes(body)
        yield self.send(self.settings())
        [message] = self.smarthost.box
        self.assertTrue(
            message.data.endswith(b"\r\n.\r\n..two\r\nafter the dots\r\n"), message.data[-60:]
        )


class TransformChunkTests(SynchronousTestCase):
    """
    L{RelaySender.transformChunk} stuffs dots at every line start.
    """

    def test_firstLine(self) -> None:
        sender = RelaySender(None, None, None, b"host")
        self.assertEqual(sender.transformChunk(b".\nx\n"), b"..\r\nx\r\n")

    def test_chunkBoundary(self) -> None:
        sender = RelaySender(None, None, None, b"host")
        self.assertEqual(sender.transformChunk(b"a\n"), b"a\r\n")
        self.assertEqual(sender.transformChunk(b".b\n"), b"..b\r\n")
        self.assertEqual(sender.transformChunk(b"c"), b"c")
        self.assertEqual(sender.transformChunk(b".d\n"), b".d\r\n")


class RefusedTests(SynchronousTestCase):
    def test_statusDefault(self) -> None:
        self.assertEqual(Refused(554, b"Transaction failed").status, "5.0.0")
        self.assertEqual(Refused(550, b"4.1.1 odd").status, "5.0.0")

    def test_describeIsPrintable(self) -> None:
        text = describeFailure(Failure(Refused(550, b"5.7.1 bad\r\nX-Injected: yes\x00")))
        self.assertNotIn("\n", text)
        self.assertNotIn("\x00", text)
        self.assertTrue(text.startswith("550 5.7.1 bad X-Injected: yes"))
