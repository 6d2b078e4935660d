"""
Tests that a client which sends commands but never reads the replies cannot
make the server buffer without bound (issue 15 item 11): the runnable
server's SMTP and IMAP sessions stop reading once their unsent output (or
the commands queued behind a running FETCH) passes C{outputHighWater}, in
plaintext, over TLS, logged in and during a FETCH.

Real TCP over loopback, in this process: a client thread with small socket
buffers floods command lines for a bounded number of bytes and time, and
the test samples the server transport's unsent bytes
(L{clientid_twisted.server.outgoing.pendingOutput}) all along.  The same
attack against the running C{twistd} is measured in RSS in
C{tests.test_hardening.UnreadRepliesTests}.
"""

from __future__ import annotations

import base64
import socket
import ssl
import time
from pathlib import Path
from typing import Any, Callable

from zope.interface import implementer

from twisted.cred.checkers import InMemoryUsernamePasswordDatabaseDontUse
from twisted.cred.portal import IRealm, Portal
from twisted.internet import defer, reactor
from twisted.internet.task import LoopingCall, deferLater
from twisted.internet.threads import deferToThread
from twisted.mail import imap4, smtp
from twisted.trial.unittest import SynchronousTestCase, TestCase

from clientid_twisted.server.imapserver import MailIMAP4Factory
from clientid_twisted.server.limits import ServerLimits
from clientid_twisted.server.mailbox import MaildirAccount
from clientid_twisted.server.outgoing import pendingOutput
from clientid_twisted.server.submission import SubmissionFactory
from clientid_twisted.testing import ConnectionTracker, connectedTransport, throwawayCertificate
from tests.loginfakes import RefusingDelivery

FLOOD_BYTES = 4 * 1024 * 1024
"""How much a flooding client sends at most (replies to EHLO are about 20
times their command: 80 MB of output if the server kept reading)."""

FLOOD_SECONDS = 10.0
"""How long it sends at most."""

BOUND = 1024 * 1024
"""The most a session may hold for its client: output plus queued lines
(C{outputHighWater} is 256 KiB; the goal is under 5 MB per connection)."""

LIMITS = ServerLimits(maxErrorsPerSession=10**6, authFailureDelay=0)


@implementer(IRealm)
class _Realm:
    def __init__(self, root: Path) -> None:
        self.root = root

    def requestAvatar(self, avatarId: Any, mind: Any, *interfaces: Any) -> Any:
        if imap4.IAccount in interfaces:
            return imap4.IAccount, MaildirAccount(self.root), lambda: None
        return smtp.IMessageDelivery, RefusingDelivery(), lambda: None


def _readUntil(s: Any, end: bytes) -> bytes:
    data = b""
    while not data.endswith(end) and end not in data:
        chunk = s.recv(65536)
        if not chunk:
            raise ConnectionError(f"closed after {data!r}")
        data += chunk
    return data


class _Flood:
    """
    A client that talks normally (C{setup}), then sends C{line} over and
    over without reading, until C{FLOOD_BYTES} or C{FLOOD_SECONDS} or a
    send blocks for a second (the server stopped reading and the kernel's
    buffers are full).
    """

    def __init__(self, port: int, context: ssl.SSLContext) -> None:
        self.port = port
        self.context = context
        self.sent = 0
        self.socket: Any = None

    def run(self, setup: Callable[[Any], Any], line: bytes) -> int:
        s: Any = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 16384)
        s.settimeout(10)
        s.connect(("127.0.0.1", self.port))
        self.socket = s
        s = setup(s)
        self.socket = s
        s.settimeout(1.0)
        batch = line * max(1, 65536 // len(line))
        deadline = time.monotonic() + FLOOD_SECONDS
        while self.sent < FLOOD_BYTES and time.monotonic() < deadline:
            try:
                self.sent += s.send(batch)
            except (socket.timeout, ssl.SSLWantWriteError):
                break
        return self.sent

    def close(self) -> None:
        if self.socket is not None:
            self.socket.close()


class BackpressureTests(TestCase):
    timeout = 120

    def setUp(self) -> None:
        self.certificate = throwawayCertificate()
        self.clientContext = ssl.create_default_context(
            cadata=self.certificate.certificatePEM.decode("ascii")
        )
        self.root = Path(self.mktemp())
        self.portal = Portal(
            _Realm(self.root),
            [InMemoryUsernamePasswordDatabaseDontUse(**{"bob@example.test": b"pw"})],
        )
        self.protocols: list[Any] = []

    def listen(self, factory: Any) -> int:
        build = factory.buildProtocol

        def buildProtocol(addr: Any) -> Any:
            protocol = build(addr)
            self.protocols.append(protocol)
            return protocol

        factory.buildProtocol = buildProtocol
        tracker = ConnectionTracker(factory)
        port = reactor.listenTCP(0, factory, interface="127.0.0.1")
        self.addCleanup(tracker.whenClosed)
        self.addCleanup(port.stopListening)
        return port.getHost().port  # type: ignore[attr-defined,no-any-return]

    def smtpFactory(self) -> Any:
        factory = SubmissionFactory(self.portal, context=self.certificate.options(), limits=LIMITS)
        factory.domain = b"mail.example.test"
        return factory

    def imapFactory(self) -> Any:
        return MailIMAP4Factory(self.portal, context=self.certificate.options(), limits=LIMITS)

    def wrap(self, s: Any) -> Any:
        return self.clientContext.wrap_socket(s, server_hostname="localhost")

    @defer.inlineCallbacks
    def measure(self, port: int, setup: Callable[[Any], Any], line: bytes) -> Any:
        """
        Flood C{port}; sample the session's unsent output and queued lines
        every 5 ms, during the flood and for half a second after it.

        @return: A Deferred firing with (most held, bytes sent, protocol).
        """
        held: list[int] = [0]

        def sample() -> None:
            for protocol in self.protocols:
                pending = pendingOutput(protocol.transport) or 0
                held[0] = max(held[0], pending + protocol.queuedInputBytes())

        sampler = LoopingCall(sample)
        sampler.start(0.005)
        flood = _Flood(port, self.clientContext)
        try:
            sent = yield deferToThread(flood.run, setup, line)
            yield deferLater(reactor, 0.5, lambda: None)
            sample()
            [protocol] = self.protocols
            self.assertTrue(protocol.backlogged, "the session kept reading")
        finally:
            sampler.stop()
            flood.close()
        return held[0], sent, protocol

    def assertBounded(self, held: int, sent: int) -> None:
        self.assertGreater(sent, 64 * 1024, "the client could hardly send anything")
        self.assertLess(held, BOUND, f"the session held {held} bytes after {sent} sent")

    @defer.inlineCallbacks
    def test_smtpPlaintext(self) -> Any:
        """
        C{EHLO x} in a loop, in plaintext, without login.
        """

        def setup(s: Any) -> Any:
            _readUntil(s, b"\r\n")
            return s

        held, sent, _ = yield self.measure(self.listen(self.smtpFactory()), setup, b"EHLO x\r\n")
        self.assertBounded(held, sent)

    @defer.inlineCallbacks
    def test_smtpTLSLoggedIn(self) -> Any:
        """
        C{EHLO x} in a loop over STARTTLS, logged in.
        """

        def setup(s: Any) -> Any:
            _readUntil(s, b"\r\n")
            s.sendall(b"EHLO c\r\n")
            _readUntil(s, b"250 ")
            s.sendall(b"STARTTLS\r\n")
            _readUntil(s, b"220 ")
            s = self.wrap(s)
            s.sendall(b"EHLO c\r\n")
            _readUntil(s, b"250 ")
            s.sendall(b"AUTH PLAIN " + base64.b64encode(b"\0bob@example.test\0pw") + b"\r\n")
            _readUntil(s, b"235 ")
            return s

        held, sent, _ = yield self.measure(self.listen(self.smtpFactory()), setup, b"EHLO x\r\n")
        self.assertBounded(held, sent)

    @defer.inlineCallbacks
    def test_imapPlaintext(self) -> Any:
        """
        C{a CAPABILITY} in a loop, in plaintext, without login.
        """

        def setup(s: Any) -> Any:
            _readUntil(s, b"\r\n")
            return s

        held, sent, _ = yield self.measure(self.listen(self.imapFactory()), setup, b"a CAPABILITY\r\n")
        self.assertBounded(held, sent)

    @defer.inlineCallbacks
    def test_imapDuringFetch(self) -> Any:
        """
        Over STARTTLS, logged in, C{FETCH 1:* BODY.PEEK[]} of large messages
        left unread, then long NOOP lines (queued behind the FETCH).
        """
        inbox = MaildirAccount(self.root).select("INBOX")
        body = b"Subject: big\r\n\r\n" + (b"y" * 998 + b"\r\n") * 2048
        for _ in range(2):
            yield inbox.addMessage(body, (), None)

        def setup(s: Any) -> Any:
            _readUntil(s, b"\r\n")
            s.sendall(b"s STARTTLS\r\n")
            _readUntil(s, b"s OK")
            s = self.wrap(s)
            s.sendall(b"l LOGIN bob@example.test pw\r\n")
            _readUntil(s, b"l OK")
            s.sendall(b"x SELECT INBOX\r\n")
            _readUntil(s, b"x OK")
            s.sendall(b"f FETCH 1:* BODY.PEEK[]\r\n")
            return s

        line = b"n NOOP " + b"z" * 60000 + b"\r\n"
        held, sent, protocol = yield self.measure(self.listen(self.imapFactory()), setup, line)
        self.assertBounded(held, sent)


class PendingOutputTests(SynchronousTestCase):
    def test_unknownTransport(self) -> None:
        """
        A transport without a write buffer (a test's StringTransport) has
        an unknown backlog, and a session on it is never held back.
        """
        protocol = MailIMAP4Factory(None, context=object()).buildProtocol(None)
        transport = connectedTransport(protocol, secure=False)
        self.assertIsNone(pendingOutput(transport))
        for _ in range(100):
            protocol.dataReceived(b"a CAPABILITY\r\n")
        self.assertFalse(protocol.backlogged)
