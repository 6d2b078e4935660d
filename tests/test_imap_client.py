"""
Tests for L{clientid_twisted.imap}'s client side: when
L{ClientIDIMAP4Client.clientID} sends and when it refuses before sending,
what L{loginWithClientID} puts on the wire, and the client against the
project's server over real TLS on loopback.
"""

from __future__ import annotations

from typing import Any

from twisted.cred.portal import Portal
from twisted.internet import defer, reactor
from twisted.internet.endpoints import (
    TCP4ClientEndpoint,
    connectProtocol,
    wrapClientTLS,
)
from twisted.mail import imap4
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase, TestCase

from clientid_twisted._identity import ClientIdentity, MalformedClientID
from clientid_twisted.imap import (
    ClientIDIMAP4Client,
    ClientIDNotAllowed,
    loginWithClientID,
)
from clientid_twisted.testing import (
    clientTLSOptions,
    connectedTransport,
    throwawayCertificate,
)
from tests.loginfakes import RecordingChecker
from tests.test_imap_server import MemoryRealm, TrackingFactory

TOKEN = "23bf83be-aad7-46aa-9e0f-39191ccf402f"
IDENTITY = ClientIdentity("UUID", TOKEN)
SEND_CLIENTID = b"CLIENTID UUID " + TOKEN.encode("ascii")


class _ClientBase(SynchronousTestCase):
    """
    A client over an in-memory transport; the test plays the server.
    """

    def connect(self, secure: bool, greeting: bytes) -> None:
        self.client = ClientIDIMAP4Client()
        self.transport = connectedTransport(self.client, secure=secure)
        self.serverSays(greeting)

    def serverSays(self, *lines: bytes) -> None:
        for line in lines:
            self.client.dataReceived(line + b"\r\n")

    def written(self) -> bytes:
        """
        What the client wrote since the last call.
        """
        value = self.transport.value()
        self.transport.clear()
        return value

    def refused(self, d: defer.Deferred[Any]) -> Failure:
        failure = self.failureResultOf(d, ClientIDNotAllowed)
        self.assertFalse(self.client.clientIDSent)
        return failure


class ClientIDTests(_ClientBase):
    """
    L{ClientIDIMAP4Client.clientID} sends only over TLS, only when the
    capabilities read after TLS list CLIENTID, only before any login, once.
    """

    def test_implicitTLSGreeting(self) -> None:
        self.connect(True, b"* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN CLIENTID] hi")
        d = self.client.clientID("UUID", TOKEN)
        self.assertEqual(self.written(), b"0001 " + SEND_CLIENTID + b"\r\n")
        self.assertNoResult(d)
        self.serverSays(b"0001 OK CLIENTID completed")
        self.assertIs(self.successResultOf(d), True)
        self.assertTrue(self.client.clientIDSent)
        self.assertTrue(self.client.clientIDAccepted)

    def test_identityObject(self) -> None:
        self.connect(True, b"* OK [CAPABILITY IMAP4rev1 CLIENTID] hi")
        self.client.clientID(ClientIdentity("x-Dev", '"({5}'))
        self.assertEqual(self.written(), b'0001 CLIENTID x-Dev "({5}\r\n')

    def test_malformed(self) -> None:
        self.connect(True, b"* OK [CAPABILITY IMAP4rev1 CLIENTID] hi")
        for d in [
            self.client.clientID("UUID", "two words"),
            self.client.clientID("UUID"),
            self.client.clientID("under_score", "x"),
        ]:
            self.failureResultOf(d, MalformedClientID)
        self.assertEqual(self.written(), b"")
        # A malformed attempt sent nothing, so the real one may follow.
        self.client.clientID(IDENTITY)
        self.assertEqual(self.written(), b"0001 " + SEND_CLIENTID + b"\r\n")

    def test_plaintext(self) -> None:
        self.connect(False, b"* OK [CAPABILITY IMAP4rev1 STARTTLS CLIENTID] hi")
        failure = self.refused(self.client.clientID(IDENTITY))
        self.assertIn("TLS", str(failure.value))
        self.assertEqual(self.written(), b"")

    def test_notListedAfterTLS(self) -> None:
        self.connect(True, b"* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN] hi")
        failure = self.refused(self.client.clientID(IDENTITY))
        self.assertIn("does not list CLIENTID", str(failure.value))
        self.assertEqual(self.written(), b"")

    def test_greetingWithoutCapabilities(self) -> None:
        """
        With no capabilities read over TLS yet, the client asks first.
        """
        self.connect(True, b"* OK hi")
        d = self.client.clientID(IDENTITY)
        self.assertEqual(self.written(), b"0001 CAPABILITY\r\n")
        self.serverSays(b"* CAPABILITY IMAP4rev1 CLIENTID", b"0001 OK done")
        self.assertEqual(self.written(), b"0002 " + SEND_CLIENTID + b"\r\n")
        self.serverSays(b"0002 OK CLIENTID completed")
        self.assertIs(self.successResultOf(d), True)

    def test_startTLSRereadsCapabilities(self) -> None:
        """
        The plaintext greeting's capabilities (here, a server that lists
        CLIENTID before TLS) do not count: after STARTTLS, Twisted's client
        asks again, and that answer decides.
        """
        self.connect(False, b"* OK [CAPABILITY IMAP4rev1 STARTTLS CLIENTID] hi")
        started = self.client.startTLS(object())
        self.assertEqual(self.written(), b"0001 STARTTLS\r\n")
        self.serverSays(b"0001 OK Begin TLS negotiation now")
        self.assertIsNotNone(self.transport.tlsStarted)
        self.assertEqual(self.written(), b"0002 CAPABILITY\r\n")
        self.serverSays(b"* CAPABILITY IMAP4rev1 AUTH=PLAIN", b"0002 OK done")
        self.successResultOf(started)
        self.refused(self.client.clientID(IDENTITY))
        self.assertEqual(self.written(), b"")

    def test_startTLSThenListed(self) -> None:
        self.connect(False, b"* OK [CAPABILITY IMAP4rev1 STARTTLS] hi")
        self.client.startTLS(object())
        self.serverSays(b"0001 OK Begin TLS negotiation now")
        self.serverSays(b"* CAPABILITY IMAP4rev1 CLIENTID", b"0002 OK done")
        self.written()
        self.client.clientID(IDENTITY)
        self.assertEqual(self.written(), b"0003 " + SEND_CLIENTID + b"\r\n")

    def test_tlsStartedBehindTheClientsBack(self) -> None:
        """
        If TLS began without L{imap4.IMAP4Client.startTLS} (which re-reads
        capabilities), the cached plaintext capabilities are not trusted.
        """
        self.connect(False, b"* OK [CAPABILITY IMAP4rev1 STARTTLS CLIENTID] hi")
        self.transport.startTLS(object())
        d = self.client.clientID(IDENTITY)
        self.assertEqual(self.written(), b"0001 CAPABILITY\r\n")
        self.serverSays(b"* CAPABILITY IMAP4rev1", b"0001 OK done")
        self.refused(d)
        self.assertEqual(self.written(), b"")

    def test_afterLogin(self) -> None:
        self.connect(True, b"* OK [CAPABILITY IMAP4rev1 CLIENTID] hi")
        login = self.client.login(b"alice", b"secret")
        self.assertEqual(self.written(), b'0001 LOGIN "alice" "secret"\r\n')
        self.refused(self.client.clientID(IDENTITY))
        # Even after a refused login: our client sends CLIENTID only before.
        self.serverSays(b"0001 NO [AUTHENTICATIONFAILED] Authentication failed")
        self.failureResultOf(login, imap4.IMAP4Exception)
        self.refused(self.client.clientID(IDENTITY))
        self.assertEqual(self.written(), b"")

    def test_afterAuthenticate(self) -> None:
        self.connect(True, b"* OK [CAPABILITY IMAP4rev1 CLIENTID] hi")
        self.failureResultOf(self.client.authenticate(b"secret"))
        self.refused(self.client.clientID(IDENTITY))

    def test_loginWhileAskingCapabilities(self) -> None:
        """
        A login that starts while the client waits for capabilities still
        stops the CLIENTID.
        """
        self.connect(True, b"* OK hi")
        d = self.client.clientID(IDENTITY)
        self.client.login(b"alice", b"secret")
        self.serverSays(b"* CAPABILITY IMAP4rev1 CLIENTID", b"0001 OK done")
        self.refused(d)
        self.assertNotIn(b"CLIENTID UUID", self.written())

    def test_preauth(self) -> None:
        self.connect(True, b"* PREAUTH [CAPABILITY IMAP4rev1 CLIENTID] hi")
        self.refused(self.client.clientID(IDENTITY))

    def test_once(self) -> None:
        self.connect(True, b"* OK [CAPABILITY IMAP4rev1 CLIENTID] hi")
        first = self.client.clientID(IDENTITY)
        self.written()
        self.failureResultOf(self.client.clientID(IDENTITY), ClientIDNotAllowed)
        self.serverSays(b"0001 OK CLIENTID completed")
        self.successResultOf(first)
        self.failureResultOf(self.client.clientID(IDENTITY), ClientIDNotAllowed)
        self.assertEqual(self.written(), b"")

    def test_serverSaysBAD(self) -> None:
        self.connect(True, b"* OK [CAPABILITY IMAP4rev1 CLIENTID] hi")
        d = self.client.clientID(IDENTITY)
        self.serverSays(b"0001 BAD Unsupported command")
        self.failureResultOf(d, imap4.IMAP4Exception)
        self.assertTrue(self.client.clientIDSent)
        self.assertFalse(self.client.clientIDAccepted)


class LoginWithClientIDTests(_ClientBase):
    """
    L{loginWithClientID}: STARTTLS unless TLS, CAPABILITY, CLIENTID if
    listed, LOGIN; in that order, each after the previous answer.
    """

    def test_starttls(self) -> None:
        self.connect(False, b"* OK [CAPABILITY IMAP4rev1 STARTTLS LOGINDISABLED] hi")
        d = loginWithClientID(self.client, IDENTITY, "alice", "secret", object())
        self.assertEqual(self.written(), b"0001 STARTTLS\r\n")
        self.serverSays(b"0001 OK Begin TLS negotiation now")
        self.assertEqual(self.written(), b"0002 CAPABILITY\r\n")
        self.serverSays(b"* CAPABILITY IMAP4rev1 AUTH=PLAIN CLIENTID", b"0002 OK done")
        self.assertEqual(self.written(), b"0003 " + SEND_CLIENTID + b"\r\n")
        self.serverSays(b"0003 OK CLIENTID completed")
        self.assertEqual(self.written(), b'0004 LOGIN "alice" "secret"\r\n')
        self.assertNoResult(d)
        self.serverSays(b"0004 OK LOGIN succeeded")
        self.successResultOf(d)
        self.assertTrue(self.client.clientIDAccepted)

    def test_greetingWithoutCapabilities(self) -> None:
        self.connect(False, b"* OK hi")
        loginWithClientID(self.client, IDENTITY, b"alice", b"secret", object())
        self.assertEqual(self.written(), b"0001 CAPABILITY\r\n")
        self.serverSays(b"* CAPABILITY IMAP4rev1 STARTTLS", b"0001 OK done")
        self.assertEqual(self.written(), b"0002 STARTTLS\r\n")

    def test_notListed(self) -> None:
        self.connect(False, b"* OK [CAPABILITY IMAP4rev1 STARTTLS] hi")
        d = loginWithClientID(self.client, IDENTITY, "alice", "secret", object())
        self.serverSays(b"0001 OK Begin TLS negotiation now")
        self.serverSays(b"* CAPABILITY IMAP4rev1 AUTH=PLAIN", b"0002 OK done")
        self.assertEqual(
            self.written(),
            b"0001 STARTTLS\r\n0002 CAPABILITY\r\n" b'0003 LOGIN "alice" "secret"\r\n',
        )
        self.serverSays(b"0003 OK LOGIN succeeded")
        self.successResultOf(d)
        self.assertFalse(self.client.clientIDSent)

    def test_refusedClientIDIsNotACondition(self) -> None:
        self.connect(True, b"* OK [CAPABILITY IMAP4rev1 CLIENTID] hi")
        d = loginWithClientID(self.client, IDENTITY, "alice", "secret")
        self.assertEqual(self.written(), b"0001 " + SEND_CLIENTID + b"\r\n")
        self.serverSays(b"0001 BAD Unsupported command")
        self.assertEqual(self.written(), b'0002 LOGIN "alice" "secret"\r\n')
        self.serverSays(b"0002 OK LOGIN succeeded")
        self.successResultOf(d)

    def test_implicitTLSGreeting(self) -> None:
        self.connect(True, b"* OK [CAPABILITY IMAP4rev1 CLIENTID] hi")
        loginWithClientID(self.client, IDENTITY, "alice", "secret")
        self.assertEqual(self.written(), b"0001 " + SEND_CLIENTID + b"\r\n")

    def test_implicitTLSWithoutGreetingCapabilities(self) -> None:
        self.connect(True, b"* OK hi")
        loginWithClientID(self.client, IDENTITY, "alice", "secret")
        self.assertEqual(self.written(), b"0001 CAPABILITY\r\n")
        self.serverSays(b"* CAPABILITY IMAP4rev1 CLIENTID", b"0001 OK done")
        self.assertEqual(self.written(), b"0002 " + SEND_CLIENTID + b"\r\n")

    def test_noIdentity(self) -> None:
        self.connect(True, b"* OK [CAPABILITY IMAP4rev1 CLIENTID] hi")
        loginWithClientID(self.client, None, "alice", "secret")
        self.assertEqual(self.written(), b'0001 LOGIN "alice" "secret"\r\n')

    def test_noTLSNoLogin(self) -> None:
        """
        A server without STARTTLS gets nothing: no password in plaintext.
        """
        self.connect(False, b"* OK [CAPABILITY IMAP4rev1 CLIENTID] hi")
        d = loginWithClientID(self.client, IDENTITY, "alice", "secret", object())
        self.failureResultOf(d, imap4.IMAP4Exception)
        self.assertEqual(self.written(), b"")

    def test_noTLSContext(self) -> None:
        """
        STARTTLS without options that verify the server would hand the
        identity to whoever answers: refused before anything is sent.
        """
        self.connect(False, b"* OK [CAPABILITY IMAP4rev1 STARTTLS] hi")
        d = loginWithClientID(self.client, IDENTITY, "alice", "secret")
        self.failureResultOf(d, ValueError)
        self.assertEqual(self.written(), b"")

    def test_clientContext(self) -> None:
        self.client = ClientIDIMAP4Client(contextFactory=object())
        self.transport = connectedTransport(self.client)
        self.serverSays(b"* OK [CAPABILITY IMAP4rev1 STARTTLS] hi")
        loginWithClientID(self.client, IDENTITY, "alice", "secret")
        self.assertEqual(self.written(), b"0001 STARTTLS\r\n")
        self.serverSays(b"0001 OK Begin TLS negotiation now")
        self.assertIs(self.transport.tlsStarted, self.client.context)

    def test_startTLSRefused(self) -> None:
        self.connect(False, b"* OK [CAPABILITY IMAP4rev1 STARTTLS] hi")
        d = loginWithClientID(self.client, IDENTITY, "alice", "secret", object())
        self.serverSays(b"0001 NO TLS not available")
        self.failureResultOf(d, imap4.IMAP4Exception)
        self.assertEqual(self.written(), b"0001 STARTTLS\r\n")


# -- against the project's server over real TLS -------------------------------


class _GreetedClient(ClientIDIMAP4Client):
    def __init__(self) -> None:
        super().__init__()
        self.greeted: defer.Deferred[Any] = defer.Deferred()
        self.lost: defer.Deferred[None] = defer.Deferred()

    def serverGreeting(self, caps: Any) -> None:
        super().serverGreeting(caps)
        self.greeted.callback(caps)

    def connectionLost(self, reason: Failure) -> None:
        super().connectionLost(reason)
        self.lost.callback(None)


class LoopbackTests(TestCase):
    """
    L{ClientIDIMAP4Client} and L{loginWithClientID} against
    L{ClientIDIMAP4Server} over real TLS: STARTTLS and implicit.
    """

    timeout = 30

    def setUp(self) -> None:
        self.certificate = throwawayCertificate()
        self.checker = RecordingChecker()
        self.factory = TrackingFactory(
            Portal(MemoryRealm(), [self.checker]), context=self.certificate.options()
        )

    @defer.inlineCallbacks
    def session(
        self, implicit: bool, identity: ClientIdentity | None = IDENTITY
    ) -> Any:
        serverFactory: Any = self.factory
        if implicit:
            serverFactory = TLSMemoryBIOFactory(
                self.certificate.options(), False, self.factory
            )
        port = reactor.listenTCP(0, serverFactory, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        endpoint: Any = TCP4ClientEndpoint(reactor, "127.0.0.1", port.getHost().port)
        options = clientTLSOptions(self.certificate)
        if implicit:
            endpoint = wrapClientTLS(options, endpoint)
        client = _GreetedClient()
        yield connectProtocol(endpoint, client)
        yield client.greeted
        yield loginWithClientID(client, identity, "alice", "secret", options)
        names = yield client.namespace()
        yield client.logout()
        yield client.lost
        yield self.factory.allLost()
        return client, names

    def assertIdentified(self, identity: ClientIdentity | None) -> None:
        self.assertEqual(len(self.checker.seen), 1)
        seen = self.checker.seen[0]
        self.assertEqual(seen.clientIdentity, identity)
        self.assertTrue(seen.secure)
        self.assertEqual(seen.username, b"alice")

    @defer.inlineCallbacks
    def test_starttls(self) -> Any:
        client, names = yield self.session(implicit=False)
        self.assertTrue(client.startedTLS)
        self.assertTrue(client.clientIDAccepted)
        self.assertIdentified(IDENTITY)
        self.assertEqual(names[0], [["", "/"]])

    @defer.inlineCallbacks
    def test_implicitTLS(self) -> Any:
        client, names = yield self.session(implicit=True)
        self.assertFalse(client.startedTLS)
        self.assertTrue(client.clientIDAccepted)
        self.assertIdentified(IDENTITY)

    @defer.inlineCallbacks
    def test_specialToken(self) -> Any:
        identity = ClientIdentity("TBIRD-UUID", 'x"(y)\\%*[z]{5}')
        client, names = yield self.session(implicit=False, identity=identity)
        self.assertIdentified(identity)

    @defer.inlineCallbacks
    def test_serverWithoutClientID(self) -> Any:
        self.factory.clientIDEnabled = False
        client, names = yield self.session(implicit=False)
        self.assertFalse(client.clientIDSent)
        self.assertIdentified(None)
