"""
Tests for CLIENTID over real TLS on loopback: Python's C{smtplib} as an
independent client against L{ClientIDESMTP}, and the project's own sender
(L{ClientIDESMTPSenderFactory}) against it.
"""

from __future__ import annotations

import io
import smtplib
import ssl
from typing import Any

from zope.interface import implementer

from twisted.cred.checkers import ICredentialsChecker, InMemoryUsernamePasswordDatabaseDontUse
from twisted.cred.credentials import IUsernamePassword
from twisted.cred.portal import IRealm, Portal
from twisted.internet import defer, reactor
from twisted.internet.threads import deferToThread
from twisted.mail import smtp
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.trial.unittest import TestCase

from clientid_twisted._identity import ClientIdentity
from clientid_twisted.smtp import ClientIDESMTPFactory, ClientIDESMTPSenderFactory
from clientid_twisted.testing import (
    ConnectionTracker,
    clientTLSOptions,
    throwawayCertificate,
)

TOKEN = "6f1c5b0e-0d3a-4b53-9a55-7b1f1f9e0c11"


@implementer(smtp.IMessage)
class _Message:
    def __init__(self, box: list[bytes]) -> None:
        self.box = box
        self.lines: list[bytes] = []

    def lineReceived(self, line: bytes) -> None:
        self.lines.append(line)

    def eomReceived(self) -> Any:
        self.box.append(b"\n".join(self.lines))
        return defer.succeed(None)

    def connectionLost(self) -> None:
        pass


@implementer(smtp.IMessageDelivery)
class _Delivery:
    def __init__(self, box: list[bytes]) -> None:
        self.box = box

    def receivedHeader(self, helo: Any, origin: Any, recipients: Any) -> bytes:
        return b"Received: from test"

    def validateFrom(self, helo: Any, origin: Any) -> Any:
        return origin

    def validateTo(self, user: Any) -> Any:
        return lambda: _Message(self.box)


@implementer(IRealm)
class _Realm:
    def __init__(self) -> None:
        self.box: list[bytes] = []

    def requestAvatar(self, avatarId: Any, mind: Any, *interfaces: Any) -> Any:
        return smtp.IMessageDelivery, _Delivery(self.box), lambda: None


@implementer(ICredentialsChecker)
class _RecordingChecker:
    credentialInterfaces = (IUsernamePassword,)

    def __init__(self) -> None:
        self.seen: list[Any] = []
        self.inner = InMemoryUsernamePasswordDatabaseDontUse(alice=b"secret")

    def requestAvatarId(self, credentials: Any) -> Any:
        self.seen.append(credentials)
        return self.inner.requestAvatarId(credentials)


class _LoopbackServer(TestCase):
    """
    Runs a L{ClientIDESMTP} server on 127.0.0.1 with a throwaway
    certificate, plain (STARTTLS) and implicit TLS.
    """

    def setUp(self) -> None:
        self.certificate = throwawayCertificate()
        self.realm = _Realm()
        self.checker = _RecordingChecker()
        self.factory = ClientIDESMTPFactory(
            Portal(self.realm, [self.checker]), context=self.certificate.options()
        )
        self.factory.domain = b"localhost"
        self.connections = ConnectionTracker(self.factory)
        plain = reactor.listenTCP(0, self.factory, interface="127.0.0.1")
        self.addCleanup(plain.stopListening)
        self.port = plain.getHost().port
        implicit = reactor.listenTCP(
            0,
            TLSMemoryBIOFactory(self.certificate.options(), False, self.factory),
            interface="127.0.0.1",
        )
        self.addCleanup(implicit.stopListening)
        self.tlsPort = implicit.getHost().port
        # Cleanups run last-in first-out: connections close before the
        # listeners stop.
        self.addCleanup(self.connections.whenClosed)

    def sslContext(self) -> ssl.SSLContext:
        context = ssl.create_default_context(cadata=self.certificate.certificatePEM.decode())
        return context


class SmtplibTests(_LoopbackServer):
    """
    Python's own smtplib, an independent client, talks CLIENTID to us.
    """

    def _session(self, implicit: bool) -> dict[str, Any]:
        results: dict[str, Any] = {}
        if implicit:
            client: smtplib.SMTP = smtplib.SMTP_SSL(
                "127.0.0.1", self.tlsPort, context=self.sslContext(), timeout=10
            )
        else:
            client = smtplib.SMTP("127.0.0.1", self.port, timeout=10)
        try:
            client.ehlo("client.example.net")
            if not implicit:
                results["plainFeatures"] = dict(client.esmtp_features)
                results["plainClientID"] = client.docmd("CLIENTID", "UUID " + TOKEN)
                client.starttls(context=self.sslContext())
                client.ehlo("client.example.net")
            results["features"] = dict(client.esmtp_features)
            results["clientid"] = client.docmd("CLIENTID", "UUID " + TOKEN)
            client.login("alice", "secret")
            client.sendmail(
                "alice@example.com", ["bob@example.com"], b"Subject: hi\r\n\r\nhello\r\n"
            )
        finally:
            client.quit()
        return results

    @defer.inlineCallbacks
    def test_startTLS(self) -> Any:
        results = yield deferToThread(self._session, False)
        self.assertNotIn("clientid", results["plainFeatures"])
        self.assertEqual(results["plainClientID"][0], 500)
        self.assertIn("clientid", results["features"])
        self.assertEqual(results["clientid"][0], 250)
        [credentials] = self.checker.seen
        self.assertEqual(credentials.clientIdentity, ClientIdentity("UUID", TOKEN))
        self.assertTrue(credentials.secure)
        self.assertEqual(credentials.protocolName, "smtp")
        self.assertEqual(len(self.realm.box), 1)
        self.assertIn(b"hello", self.realm.box[0])

    @defer.inlineCallbacks
    def test_implicitTLS(self) -> Any:
        results = yield deferToThread(self._session, True)
        self.assertIn("clientid", results["features"])
        self.assertEqual(results["clientid"][0], 250)
        [credentials] = self.checker.seen
        self.assertEqual(credentials.clientIdentity, ClientIdentity("UUID", TOKEN))
        self.assertEqual(len(self.realm.box), 1)


class SenderTests(_LoopbackServer):
    """
    L{ClientIDESMTPSenderFactory} presents the identity after TLS and
    before AUTH, and carries on where the server does not offer CLIENTID.
    """

    def _send(self, identity: ClientIdentity | None) -> tuple[defer.Deferred, ConnectionTracker]:
        done: defer.Deferred = defer.Deferred()
        factory = ClientIDESMTPSenderFactory(
            b"alice",
            b"secret",
            "alice@example.com",
            ["bob@example.com"],
            io.BytesIO(b"Subject: from twisted\r\n\r\nbody\r\n"),
            done,
            retries=0,
            contextFactory=clientTLSOptions(self.certificate),
            requireAuthentication=True,
            requireTransportSecurity=True,
            clientIdentity=identity,
        )
        clientConnections = ConnectionTracker(factory)
        self.addCleanup(clientConnections.whenClosed)
        reactor.connectTCP("127.0.0.1", self.port, factory)
        return done, clientConnections

    @defer.inlineCallbacks
    def test_presentsIdentity(self) -> Any:
        identity = ClientIdentity("TBIRD-UUID", TOKEN)
        done, client = self._send(identity)
        yield done
        [credentials] = self.checker.seen
        self.assertEqual(credentials.clientIdentity, identity)
        [protocol] = client.built
        self.assertTrue(protocol.clientIDSent)
        self.assertTrue(protocol.clientIDAccepted)
        self.assertEqual(len(self.realm.box), 1)

    @defer.inlineCallbacks
    def test_serverWithoutExtension(self) -> Any:
        self.factory.clientIDEnabled = False
        done, client = self._send(ClientIdentity("UUID", TOKEN))
        yield done
        [credentials] = self.checker.seen
        self.assertIsNone(credentials.clientIdentity)
        self.assertFalse(client.built[0].clientIDSent)
        self.assertEqual(len(self.realm.box), 1)

    @defer.inlineCallbacks
    def test_noIdentity(self) -> Any:
        done, client = self._send(None)
        yield done
        [credentials] = self.checker.seen
        self.assertIsNone(credentials.clientIdentity)
