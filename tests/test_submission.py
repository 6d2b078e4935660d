"""
Tests for the runnable submission server: the rules it adds to
L{ClientIDESMTP} (over in-memory transports), and the whole server built by
L{assembleServer} over real TLS on loopback with Python's C{smtplib}: a
message submitted with CLIENTID lands in the recipient's maildir.
"""

from __future__ import annotations

import smtplib
import socket
import ssl
from pathlib import Path
from typing import Any

from twisted.internet import defer, reactor
from twisted.internet.threads import deferToThread
from twisted.protocols.tls import TLSMemoryBIOFactory, TLSMemoryBIOProtocol
from twisted.trial.unittest import SynchronousTestCase, TestCase

from clientid_twisted._identity import ClientIdentity
from clientid_twisted.server.assembly import assembleServer
from clientid_twisted.server.net import setNoDelay
from clientid_twisted.testing import ConnectionTracker, connectPlaintext

TOKEN = "0f6a2c1e-3b7d-4e55-8f0a-6d2b9c1e7a44"


def _server(testCase: SynchronousTestCase) -> Any:
    dataDir = Path(testCase.mktemp())
    dataDir.mkdir(parents=True)
    # A refused login is answered at once in tests (docs/limits.md).
    (dataDir / "clientid.toml").write_text("[server]\nauth_failure_delay_seconds = 0\n")
    server = testCase.successResultOf(assembleServer(dataDir, hostname="mail.example.test"))
    testCase.addCleanup(server.authentication.store.close)
    server.users.addUser("alice@example.test", "correct horse")
    server.users.addUser("bob@example.test", "battery staple")
    return server


class SubmissionRulesTests(SynchronousTestCase):
    """
    AUTH only over TLS, MAIL only after AUTH, no open relay.
    """

    def setUp(self) -> None:
        self.server = _server(self)
        self.protocol = self.server.smtpFactory.buildProtocol(None)
        self.client = connectPlaintext(self.protocol)
        self.transport = self.client.transport

    def code(self, line: bytes) -> int:
        return int(self.client.exchange(line).splitlines()[-1][:3])

    def test_noAUTHInPlaintext(self) -> None:
        reply = self.client.exchange(b"EHLO c")
        self.assertNotIn(b"AUTH", reply)
        self.assertIn(b"STARTTLS", reply)
        self.assertEqual(self.code(b"AUTH PLAIN AGFsaWNlAHg="), 538)

    def test_AUTHAfterTLS(self) -> None:
        self.client.exchange(b"EHLO c")
        self.assertEqual(self.code(b"STARTTLS"), 220)
        reply = self.client.exchange(b"EHLO c")
        self.assertIn(b"AUTH PLAIN LOGIN", reply)
        self.assertIn(b"CLIENTID", reply)
        self.assertIn(b"8BITMIME", reply)
        self.assertNotIn(b"PIPELINING", reply)

    def test_MAILRequiresAUTH(self) -> None:
        self.client.exchange(b"EHLO c")
        self.assertEqual(self.code(b"MAIL FROM:<alice@example.test>"), 530)

    def test_NOOPAndVRFY(self) -> None:
        self.assertEqual(self.code(b"NOOP"), 250)
        self.assertEqual(self.code(b"VRFY bob"), 252)

    def test_greeting(self) -> None:
        self.assertEqual(self.transport.value(), b"220 mail.example.test ESMTP submission ready\r\n")


class SenderOwnershipWiringTests(SynchronousTestCase):
    """
    The assembled server checks MAIL FROM against the login, with the
    configuration's aliases, unless C{sender_login_match = false}.
    """

    def test_onByDefault(self) -> None:
        dataDir = Path(self.mktemp())
        dataDir.mkdir()
        (dataDir / "clientid.toml").write_text(
            '[users]\naliases = { "info@example.test" = "alice@example.test" }\n'
        )
        server = self.successResultOf(assembleServer(dataDir, hostname="mail.example.test"))
        self.addCleanup(server.authentication.store.close)
        senders = server.portal.realm.senders
        self.assertTrue(senders.owns("alice@example.test", "info@example.test"))
        self.assertFalse(senders.owns("bob@example.test", "info@example.test"))

    def test_off(self) -> None:
        dataDir = Path(self.mktemp())
        dataDir.mkdir()
        (dataDir / "clientid.toml").write_text("[server]\nsender_login_match = false\n")
        server = self.successResultOf(assembleServer(dataDir, hostname="mail.example.test"))
        self.addCleanup(server.authentication.store.close)
        self.assertIsNone(server.portal.realm.senders)

    def test_badAliases(self) -> None:
        from clientid_twisted.server.config import ConfigError

        dataDir = Path(self.mktemp())
        dataDir.mkdir()
        (dataDir / "clientid.toml").write_text('[users]\naliases = { "info" = "alice@example.test" }\n')
        error = self.assertRaises(ConfigError, assembleServer, dataDir)
        self.assertIn("[users] aliases 'info'", str(error))


class NoDelayTests(SynchronousTestCase):
    """
    L{setNoDelay} sets TCP_NODELAY on TCP transports and ignores others.
    """

    def test_ignoresNonTCP(self) -> None:
        self.assertFalse(setNoDelay(object()))

    def test_setsOption(self) -> None:
        calls = []

        class Transport:
            def setTcpNoDelay(self, enabled: bool) -> None:
                calls.append(enabled)

        self.assertTrue(setNoDelay(Transport()))
        self.assertEqual(calls, [True])


class EndToEndTests(TestCase):
    """
    The assembled server over real sockets and TLS.
    """

    def setUp(self) -> None:
        self.server = _server(self)
        self.connections = ConnectionTracker(self.server.smtpFactory)
        plain = reactor.listenTCP(0, self.server.smtpFactory, interface="127.0.0.1")
        self.addCleanup(plain.stopListening)
        implicit = reactor.listenTCP(
            0,
            TLSMemoryBIOFactory(self.server.tlsOptions, False, self.server.smtpFactory),
            interface="127.0.0.1",
        )
        self.addCleanup(implicit.stopListening)
        self.addCleanup(self.connections.whenClosed)
        self.port = plain.getHost().port
        self.tlsPort = implicit.getHost().port
        self.context = ssl.create_default_context(
            cadata=self.server.certificate.certificatePEM.decode()
        )

    def submit(self, implicit: bool, password: str = "correct horse") -> dict[str, Any]:
        results: dict[str, Any] = {}
        if implicit:
            client: smtplib.SMTP = smtplib.SMTP_SSL(
                "127.0.0.1", self.tlsPort, context=self.context, timeout=10
            )
        else:
            client = smtplib.SMTP("127.0.0.1", self.port, timeout=10)
        try:
            client.ehlo("laptop.example.net")
            if not implicit:
                client.starttls(context=self.context)
                client.ehlo("laptop.example.net")
            results["clientid"] = client.docmd("CLIENTID", "UUID " + TOKEN)
            try:
                client.login("alice@example.test", password)
            except smtplib.SMTPAuthenticationError as e:
                results["auth"] = (e.smtp_code, e.smtp_error)
                return results
            results["refused"] = client.sendmail(
                "alice@example.test",
                ["bob@example.test", "carol@elsewhere.example"],
                b"Subject: test\r\nFrom: alice@example.test\r\n\r\nHello Bob.\r\n",
            )
        except smtplib.SMTPRecipientsRefused as e:
            results["allRefused"] = e.recipients
        finally:
            client.quit()
        return results

    def delivered(self, address: str) -> list[bytes]:
        new = self.server.dataDir / "mail" / address / "new"
        return [p.read_bytes() for p in sorted(new.iterdir())] if new.exists() else []

    @defer.inlineCallbacks
    def _roundTrip(self, implicit: bool) -> Any:
        events: list[dict[str, Any]] = []
        from twisted.logger import globalLogPublisher

        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        results = yield deferToThread(self.submit, implicit)
        self.assertEqual(results["clientid"][0], 250)
        self.assertEqual(set(results["refused"]), {"carol@elsewhere.example"})
        self.assertEqual(results["refused"]["carol@elsewhere.example"][0], 550)
        [message] = self.delivered("bob@example.test")
        self.assertTrue(message.startswith(b"Received: "), message[:80])
        self.assertIn(b"Hello Bob.", message)
        tmp = self.server.dataDir / "mail" / "bob@example.test" / "tmp"
        self.assertEqual(list(tmp.iterdir()), [])
        succeeded = [e for e in events if e.get("authEvent") == "succeeded"]
        self.assertEqual(len(succeeded), 1)
        self.assertEqual(
            succeeded[0]["clientIDFingerprint"],
            self.server.identityHasher.fingerprint(ClientIdentity("UUID", TOKEN)),
        )
        self.assertNotIn(TOKEN, repr(events))

    def test_startTLS(self) -> Any:
        return self._roundTrip(implicit=False)

    def test_implicitTLS(self) -> Any:
        return self._roundTrip(implicit=True)

    @defer.inlineCallbacks
    def test_wrongPassword(self) -> Any:
        results = yield deferToThread(self.submit, False, "wrong")
        self.assertEqual(results["auth"][0], 535)
        self.assertEqual(self.delivered("bob@example.test"), [])

    @defer.inlineCallbacks
    def test_noDelayOnAcceptedConnections(self) -> Any:
        """
        Accepted connections, plain and implicit TLS, have TCP_NODELAY on.
        """
        from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol, wrapClientTLS
        from twisted.internet.protocol import Protocol

        from clientid_twisted.testing import clientTLSOptions

        class Greeted(Protocol):
            def __init__(self) -> None:
                self.greeting: defer.Deferred[bytes] = defer.Deferred()

            def dataReceived(self, data: bytes) -> None:
                if not self.greeting.called:
                    self.greeting.callback(data)

        plain = TCP4ClientEndpoint(reactor, "127.0.0.1", self.port)
        tls = wrapClientTLS(
            clientTLSOptions(self.server.certificate),
            TCP4ClientEndpoint(reactor, "127.0.0.1", self.tlsPort),
        )
        for endpoint in (plain, tls):
            client = Greeted()
            yield connectProtocol(endpoint, client)
            greeting = yield client.greeting
            self.assertTrue(greeting.startswith(b"220 "))
            transport = self.connections.built[-1].transport
            if isinstance(transport, TLSMemoryBIOProtocol):
                transport = transport.transport
            handle = transport.getHandle()
            self.assertEqual(handle.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY), 1)
            client.transport.abortConnection()
