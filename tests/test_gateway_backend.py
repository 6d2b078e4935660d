"""
Tests for L{clientid_twisted.gateway.backend}: reaching a backend over real
loopback sockets, with TLS checked against a certificate the test makes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from twisted.cred.error import UnauthorizedLogin
from twisted.internet import defer, protocol, reactor
from twisted.internet.task import Clock
from twisted.logger import LogLevel, formatEvent, globalLogPublisher
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.trial.unittest import SynchronousTestCase, TestCase

from clientid_twisted.gateway.backend import Backend, BackendUnavailable
from clientid_twisted.gateway.config import GatewayConfig, parseBackendAddress
from clientid_twisted.server.tls import ServerCertificate, selfSignedCertificate
from tests.services import freePort


class _Echo(protocol.Protocol):
    def dataReceived(self, data: bytes) -> None:
        self.transport.write(data)


class _Client(protocol.Protocol):
    def __init__(self) -> None:
        self.received = defer.Deferred[bytes]()
        self.lost = defer.Deferred[None]()

    def dataReceived(self, data: bytes) -> None:
        if not self.received.called:
            self.received.callback(data)

    def connectionLost(self, reason: object = None) -> None:
        self.lost.callback(None)

    def close(self) -> defer.Deferred[None]:
        self.transport.loseConnection()
        return self.lost


def _clientFactory() -> protocol.Factory:
    return protocol.Factory.forProtocol(_Client)


def _events(case: Any) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []

    def observer(event: dict[str, Any]) -> None:
        if "backendEvent" in event:
            events.append(event)

    globalLogPublisher.addObserver(observer)
    case.addCleanup(globalLogPublisher.removeObserver, observer)
    return events


class BackendConnectionTests(TestCase):
    """
    L{Backend.connect} over real sockets.
    """

    def setUp(self) -> None:
        certificatePEM, keyPEM = selfSignedCertificate("localhost")
        self.certificate = ServerCertificate(certificatePEM, keyPEM)
        self.caPath = Path(self.mktemp())
        self.caPath.write_bytes(certificatePEM)

    def listenTLS(self) -> int:
        factory = TLSMemoryBIOFactory(
            self.certificate.options(), False, protocol.Factory.forProtocol(_Echo)
        )
        port = reactor.listenTCP(0, factory, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        return int(port.getHost().port)

    def backend(self, description: str, **settings: Any) -> Backend:
        config = GatewayConfig(**settings)
        return Backend(parseBackendAddress(description), config, reactor, "IMAP")

    async def test_implicitTLSVerifiedAgainstCA(self) -> None:
        port = self.listenTLS()
        backend = self.backend(f"tls:localhost:{port}", caPath=str(self.caPath))
        client = await backend.connect(_clientFactory())
        client.transport.write(b"ping")
        self.assertEqual(await client.received, b"ping")
        await client.close()

    async def test_untrustedCertificateUnavailable(self) -> None:
        """
        A certificate that does not chain to backend_ca fails the
        connection: a temporary failure, no data exchanged.
        """
        otherCA = Path(self.mktemp())
        otherCA.write_bytes(selfSignedCertificate("localhost")[0])
        port = self.listenTLS()
        backend = self.backend(f"tls:localhost:{port}", caPath=str(otherCA))
        client = await backend.connect(_clientFactory())
        client.transport.write(b"ping")
        await client.lost
        self.assertFalse(client.received.called)

    async def test_verifyFalse(self) -> None:
        port = self.listenTLS()
        backend = self.backend(f"tls:127.0.0.1:{port}", verify=False)
        client = await backend.connect(_clientFactory())
        client.transport.write(b"ping")
        self.assertEqual(await client.received, b"ping")
        await client.close()

    async def test_startTLS(self) -> None:
        """
        A plaintext connection upgraded by L{Backend.startTLS} checks the
        certificate against backend_ca.
        """
        port = reactor.listenTCP(0, protocol.Factory.forProtocol(_StartTLSServer), interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        _StartTLSServer.options = self.certificate.options()
        backend = self.backend(
            f"tcp:host=localhost:port={port.getHost().port}",
            caPath=str(self.caPath),
            starttls=True,
        )
        self.assertTrue(backend.starttls)
        client = await backend.connect(_clientFactory())
        client.transport.write(b"STARTTLS")
        self.assertEqual(await client.received, b"GO")
        backend.startTLS(client.transport)
        client.received = defer.Deferred()
        client.transport.write(b"secret")
        self.assertEqual(await client.received, b"secret")
        await client.close()

    async def test_refusedOneLogLinePerOutage(self) -> None:
        """
        A backend refusing connections is unavailable; the outage is logged
        once however many logins it touches, and recovery is logged when it
        answers again, without a restart.
        """
        events = _events(self)
        portNumber = freePort()
        backend = self.backend(f"tcp:host=127.0.0.1:port={portNumber}")
        for _ in range(3):
            with self.assertRaises(BackendUnavailable):
                await backend.connect(_clientFactory())
        self.assertEqual([e["backendEvent"] for e in events], ["down"])
        self.assertEqual(events[0]["log_level"], LogLevel.error)
        self.assertTrue(backend.failing)
        port = reactor.listenTCP(portNumber, protocol.Factory.forProtocol(_Echo), interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        client = await backend.connect(_clientFactory())
        await client.close()
        self.assertEqual([e["backendEvent"] for e in events], ["down", "up"])
        self.assertFalse(backend.failing)


class _StartTLSServer(_Echo):
    options: Any = None

    def dataReceived(self, data: bytes) -> None:
        if data == b"STARTTLS":
            self.transport.write(b"GO")
            self.transport.startTLS(self.options)
        else:
            self.transport.write(data)


class GuardTests(SynchronousTestCase):
    """
    L{Backend.guard} bounds each step by backend_timeout_seconds.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.backend = Backend(
            parseBackendAddress("tcp:host=127.0.0.1:port=1"),
            GatewayConfig(timeoutSeconds=4),
            self.clock,
        )

    def test_timeout(self) -> None:
        d = self.backend.guard(defer.Deferred())
        self.clock.advance(3.9)
        self.assertNoResult(d)
        self.clock.advance(0.2)
        failure = self.failureResultOf(d, BackendUnavailable)
        self.assertIn("no answer within 4 s", str(failure.value))

    def test_refusalPassesThrough(self) -> None:
        """
        A backend that refuses the password answered: that is a refusal,
        not an outage.
        """
        self.backend.failing = True
        d = self.backend.guard(defer.fail(UnauthorizedLogin()))
        self.failureResultOf(d, UnauthorizedLogin)
        self.assertFalse(self.backend.failing)

    def test_unreadableCA(self) -> None:
        error = self.assertRaises(
            ValueError,
            Backend,
            parseBackendAddress("tls:h:993"),
            GatewayConfig(caPath="/nonexistent/ca.pem"),
            self.clock,
        )
        self.assertIn("[gateway] backend_ca: cannot read /nonexistent/ca.pem", str(error))


class _ScriptedBackend(protocol.Protocol):
    """
    A backend that greets, answers command lines from its C{script}
    (prefix to reply), and starts TLS after the reply to STARTTLS.
    """

    greeting = b""
    script: dict[bytes, bytes] = {}
    options: Any = None
    closeAtOnce = False

    def connectionMade(self) -> None:
        if self.closeAtOnce:
            self.transport.loseConnection()
            return
        self.transport.write(self.greeting)
        self._buffer = b""

    def dataReceived(self, data: bytes) -> None:
        self._buffer += data
        while b"\r\n" in self._buffer:
            line, self._buffer = self._buffer.split(b"\r\n", 1)
            for prefix, reply in self.script.items():
                if line.startswith(prefix):
                    self.transport.write(reply)
                    if b"STARTTLS" in prefix:
                        self.transport.startTLS(self.options)
                    break


_IMAP_STARTTLS = {
    "greeting": b"* OK [CAPABILITY IMAP4rev1 STARTTLS LOGINDISABLED] ready\r\n",
    "script": {b"G1 STARTTLS": b"G1 OK Begin TLS\r\n"},
}
_SMTP_STARTTLS = {
    "greeting": b"220 mx.example ESMTP\r\n",
    "script": {b"EHLO": b"250-mx.example\r\n250 STARTTLS\r\n", b"STARTTLS": b"220 2.0.0 Go\r\n"},
}


class OutageReasonTests(TestCase):
    """
    The outage log line says why the backend is unavailable, in the same
    words for the IMAP and the SMTP backend (one implementation in
    L{clientid_twisted.gateway.backend}): refused, no answer in time, a
    TLS failure (implicit or after STARTTLS), the backend closing.
    """

    def setUp(self) -> None:
        certificatePEM, keyPEM = selfSignedCertificate("localhost")
        self.certificate = ServerCertificate(certificatePEM, keyPEM)
        # A CA the backend's certificate does not chain to.
        self.otherCA = Path(self.mktemp())
        self.otherCA.write_bytes(selfSignedCertificate("localhost")[0])

    def listen(self, factory: protocol.Factory) -> int:
        port = reactor.listenTCP(0, factory, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        return int(port.getHost().port)

    def scripted(self, **attributes: Any) -> protocol.Factory:
        server = type("Scripted", (_ScriptedBackend,), attributes)
        return protocol.Factory.forProtocol(server)

    async def why(self, kind: str, description: str, **settings: Any) -> str:
        """
        Log in to the backend at C{description} with the IMAP or SMTP
        conversation; the reason its one "down" line gives.
        """
        from clientid_twisted.gateway.imapbackend import loginToBackend
        from clientid_twisted.gateway.smtpbackend import loginToSMTPBackend

        events = _events(self)
        settings.setdefault("timeoutSeconds", 2)
        backend = Backend(
            parseBackendAddress(description), GatewayConfig(**settings), reactor, kind
        )
        if kind == "IMAP":
            d = loginToBackend(backend, b"alice", b"secret")
        else:
            d = loginToSMTPBackend(backend, b"gw.example", b"alice", b"secret")
        with self.assertRaises(BackendUnavailable):
            await d
        [event] = events
        self.assertEqual(event["backendEvent"], "down")
        text = formatEvent(event)
        self.assertTrue(text.startswith(f"{kind} backend {description} unavailable ("), text)
        self.assertNotIn("secret", text)
        return str(event["why"])

    async def bothSay(self, words: str, description: str, **settings: Any) -> None:
        for kind in ("IMAP", "SMTP"):
            why = await self.why(kind, description, **settings)
            self.assertIn(words, why, kind)

    async def test_refused(self) -> None:
        await self.bothSay("Connection refused", f"tcp:host=127.0.0.1:port={freePort()}")

    async def test_noAnswer(self) -> None:
        from tests.services import silentListener

        portNumber = freePort()
        self.addCleanup(silentListener(portNumber).close)
        await self.bothSay(
            "no answer within 0.5 s", f"tcp:host=127.0.0.1:port={portNumber}", timeoutSeconds=0.5
        )

    async def test_closed(self) -> None:
        portNumber = self.listen(self.scripted(closeAtOnce=True))
        await self.bothSay(
            "the backend closed the connection", f"tcp:host=127.0.0.1:port={portNumber}"
        )

    async def test_implicitTLSUntrusted(self) -> None:
        factory = TLSMemoryBIOFactory(
            self.certificate.options(), False, protocol.Factory.forProtocol(_Echo)
        )
        portNumber = self.listen(factory)
        await self.bothSay(
            "the connection failed: ", f"tls:localhost:{portNumber}", caPath=str(self.otherCA)
        )
        why = await self.why("IMAP", f"tls:localhost:{portNumber}", caPath=str(self.otherCA))
        self.assertIn("certificate verify failed", why)

    async def test_startTLSUntrusted(self) -> None:
        for kind, script in (("IMAP", _IMAP_STARTTLS), ("SMTP", _SMTP_STARTTLS)):
            portNumber = self.listen(self.scripted(options=self.certificate.options(), **script))
            why = await self.why(
                kind,
                f"tcp:host=localhost:port={portNumber}",
                starttls=True,
                caPath=str(self.otherCA),
            )
            self.assertIn("the connection failed: ", why, kind)
            self.assertIn("certificate verify failed", why, kind)
