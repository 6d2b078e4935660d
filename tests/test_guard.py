"""
Tests for the limits each session of the runnable server enforces
(L{clientid_twisted.server.guard} in L{SubmissionESMTP} and
L{MailIMAP4Server}), over in-memory transports with a L{Clock}, so every
timeout is exact and nothing waits on the wall clock.

The same limits are tested against the running server over real sockets
in C{test_hardening}.
"""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

from attrs import evolve

from twisted.cred.checkers import InMemoryUsernamePasswordDatabaseDontUse
from twisted.cred.error import UnauthorizedLogin
from twisted.cred.portal import Portal
from twisted.internet import defer
from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from clientid_twisted.server.connections import ConnectionLimiter
from clientid_twisted.server.delivery import MailRealm
from clientid_twisted.server.guard import SessionGuardMixin
from clientid_twisted.server.imapserver import MailIMAP4Factory
from clientid_twisted.server.limits import ServerLimits
from clientid_twisted.server.submission import SubmissionFactory
from clientid_twisted.smtp import ClientIDESMTPFactory, ClientIDESMTPMixin
from clientid_twisted.testing import LineExchange, connectedTransport, synchronousScheduler

PEER = "192.0.2.7"
LIMITS = ServerLimits(
    initialTimeout=10,
    idleTimeout=100,
    imapIdleTimeout=1000,
    tlsHandshakeTimeout=5,
    commandTimeout=20,
    dataTimeout=50,
    maxMessageBytes=2048,
    maxLiteralBytes=2048,
    imapMaxLineBytes=8192,
    maxErrorsPerSession=3,
    authFailureDelay=0,
)


class _Users:
    def exists(self, address: str) -> bool:
        return address == "bob@example.test"


class _Sessions:
    """
    Protocols of the runnable server on in-memory transports, all on one
    clock and one connection count.
    """

    limits = LIMITS

    def setUp(self) -> None:
        self.clock = Clock()
        self.dataDir = Path(self.mktemp())  # type: ignore[attr-defined]
        self.dataDir.mkdir()
        self.portal = Portal(
            MailRealm(self.dataDir, _Users(), "mail.example.test", clock=self.clock),
            [InMemoryUsernamePasswordDatabaseDontUse(**{"bob@example.test": b"pw"})],
        )
        self.limiter = ConnectionLimiter(self.limits, clock=self.clock)

    def smtp(self, secure: bool = False, peer: str = PEER, handshake: bool = True) -> LineExchange:
        """
        A submission session; C{secure} for implicit TLS, whose handshake
        completes at once unless C{handshake} is false.
        """
        factory = SubmissionFactory(self.portal, context=object(), limits=self.limits, limiter=self.limiter)
        factory.domain = b"mail.example.test"
        return self._connect(factory, secure, peer, handshake)

    def imap(
        self, secure: bool = True, peer: str = PEER, scheduler: Any = synchronousScheduler, handshake: bool = True
    ) -> LineExchange:
        factory = MailIMAP4Factory(self.portal, context=object(), limits=self.limits, limiter=self.limiter)
        factory.scheduler = scheduler
        return self._connect(factory, secure, peer, handshake)

    def _connect(self, factory: Any, secure: bool, peer: str, handshake: bool) -> LineExchange:
        protocol = factory.buildProtocol(IPv4Address("TCP", peer, 40000))
        transport = connectedTransport(protocol, secure=secure, peerHost=peer, clock=self.clock)
        if secure and handshake and not transport.disconnecting:
            protocol.handshakeCompleted()
        return LineExchange(protocol, transport)

    def login(self, client: LineExchange) -> None:
        client.exchange(b"EHLO c")
        reply = client.exchange(b"AUTH PLAIN " + base64.b64encode(b"\0bob@example.test\0pw"))
        assert reply.startswith(b"235 "), reply

    def closed(self, client: LineExchange) -> bool:
        return bool(client.transport.disconnecting)

    def maildir(self, part: str) -> list[Path]:
        directory = self.dataDir / "mail" / "bob@example.test" / part
        return sorted(directory.iterdir()) if directory.exists() else []


class SMTPTimeoutTests(_Sessions, SynchronousTestCase):
    def test_initialTimeout(self) -> None:
        """
        Before the first command the short timeout applies.
        """
        client = self.smtp()
        client.transport.clear()
        self.clock.advance(9.9)
        self.assertFalse(self.closed(client))
        self.clock.advance(0.1)
        self.assertEqual(client.transport.value(), b"421 4.4.2 mail.example.test Idle timeout, closing connection\r\n")
        self.assertTrue(self.closed(client))

    def test_plaintextKeepsInitialTimeout(self) -> None:
        """
        Commands in plaintext do not earn the longer idle timeout.
        """
        client = self.smtp()
        client.exchange(b"EHLO c")
        self.clock.advance(10)
        self.assertTrue(self.closed(client))

    def test_idleAfterCommandOverTLS(self) -> None:
        client = self.smtp()
        client.exchange(b"EHLO c")
        client.exchange(b"STARTTLS")
        client.protocol.handshakeCompleted()
        client.exchange(b"EHLO c")
        self.clock.advance(99)
        self.assertFalse(self.closed(client))
        client.exchange(b"NOOP")
        self.clock.advance(99)
        self.assertFalse(self.closed(client))
        self.clock.advance(1)
        self.assertTrue(self.closed(client))

    def test_commandDeadline(self) -> None:
        """
        A command line trickled a byte a second is cut after
        C{commandTimeout}, although each byte arrives well within any idle
        timeout.
        """
        client = self.smtp(secure=True)
        self.login(client)
        client.transport.clear()
        for n in range(19):
            client.protocol.dataReceived(b"N")
            self.clock.advance(1)
        self.assertFalse(self.closed(client))
        client.protocol.dataReceived(b"O")
        self.clock.advance(1)
        self.assertEqual(
            client.transport.value(),
            b"421 4.4.2 mail.example.test Command not completed in time, closing connection\r\n",
        )
        self.assertTrue(self.closed(client))

    def test_commandDeadlinePerLine(self) -> None:
        """
        Each complete line ends its deadline.
        """
        client = self.smtp(secure=True)
        self.login(client)
        for n in range(30):
            client.protocol.dataReceived(b"NO")
            self.clock.advance(1)
            client.protocol.dataReceived(b"OP\r\n")
        self.assertFalse(self.closed(client))

    def test_dataDeadline(self) -> None:
        """
        Message data in complete lines, each in time, is cut after
        C{dataTimeout}; the partial message is removed.
        """
        client = self.smtp(secure=True)
        self.login(client)
        client.exchange(b"MAIL FROM:<bob@example.test>")
        client.exchange(b"RCPT TO:<bob@example.test>")
        self.assertTrue(client.exchange(b"DATA").startswith(b"354 "))
        for n in range(49):
            client.protocol.dataReceived(b"x\r\n")
            self.clock.advance(1)
        self.assertFalse(self.closed(client))
        self.assertEqual(len(self.maildir("tmp")), 1)
        client.transport.clear()
        self.clock.advance(1)
        self.assertEqual(
            client.transport.value(),
            b"421 4.4.2 mail.example.test Message data not completed in time, closing connection\r\n",
        )
        self.assertEqual(self.maildir("tmp"), [])
        self.assertEqual(self.maildir("new"), [])

    def test_abortIfGoodbyeNotRead(self) -> None:
        client = self.smtp()
        self.clock.advance(10)
        self.assertTrue(self.closed(client))
        self.assertFalse(client.transport.disconnected)
        self.clock.advance(10)
        self.assertTrue(client.transport.disconnected)

    def test_noTimersLeft(self) -> None:
        client = self.smtp()
        client.protocol.dataReceived(b"NO")
        client.protocol.connectionLost(None)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertEqual(self.limiter.connections, 0)


class OneTimerTests(_Sessions, SynchronousTestCase):
    """
    A session's deadlines (idle, command line, transfer, handshake) share
    one delayed call, moved rather than cancelled and scheduled again.
    """

    def scheduled(self, client: LineExchange) -> list[float]:
        """
        Record the delay of every call the session schedules from now on.
        """
        delays: list[float] = []
        protocol: Any = client.protocol
        callLater = protocol.callLater

        def recording(delay: float, *args: Any, **kwargs: Any) -> Any:
            delays.append(delay)
            return callLater(delay, *args, **kwargs)

        protocol.callLater = recording
        return delays

    def test_busySession(self) -> None:
        """
        Lines split across reads (each starts and ends a command deadline)
        and a message body (a transfer deadline) schedule no call per line
        or per message, and one call is pending throughout.
        """
        client = self.smtp(secure=True)
        scheduled = self.scheduled(client)
        self.login(client)
        for n in range(20):
            client.protocol.dataReceived(b"NO")
            self.assertEqual(len(self.clock.getDelayedCalls()), 1)
            self.clock.advance(1)
            client.protocol.dataReceived(b"OP\r\n")
        client.exchange(b"MAIL FROM:<bob@example.test>")
        client.exchange(b"RCPT TO:<bob@example.test>")
        client.exchange(b"DATA")
        for n in range(10):
            client.protocol.dataReceived(b"line %d\r\n" % (n,))
            self.assertEqual(len(self.clock.getDelayedCalls()), 1)
        self.assertTrue(client.exchange(b".").startswith(b"250 "))
        # Once: the call armed for the handshake (5 s) found the idle
        # deadline next, and was armed for it.
        self.assertEqual(len(scheduled), 1)
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)

    def test_rearmedOncePerIdlePeriod(self) -> None:
        """
        A deadline moved later (the idle timeout, at each line) is not
        rescheduled: the call fires at the old time, finds nothing due, and
        is armed for the new one.  The timeout itself is exact.
        """
        client = self.smtp(secure=True)
        self.login(client)
        self.clock.advance(5)  # past the handshake's deadline
        scheduled = self.scheduled(client)
        for n in range(10):
            self.clock.advance(10)
            client.exchange(b"NOOP")
        # The first idle deadline passed during the loop: one new call.
        self.assertEqual(len(scheduled), 1)
        self.clock.advance(99.9)
        self.assertFalse(self.closed(client))
        self.clock.advance(0.1)
        self.assertTrue(self.closed(client))

    def test_imapSession(self) -> None:
        client = self.imap()
        scheduled = self.scheduled(client)
        client.exchange(b"a LOGIN bob@example.test pw")
        for n in range(20):
            client.send(b"n NO")
            client.send(b"OP\r\n")
        self.assertEqual(scheduled, [])
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)


class HandshakeTests(_Sessions, SynchronousTestCase):
    limits = evolve(LIMITS, maxTLSHandshakesPerAddress=1)

    def test_startTLSTimeout(self) -> None:
        """
        A STARTTLS handshake must finish within C{tlsHandshakeTimeout}.
        """
        client = self.smtp()
        client.exchange(b"STARTTLS")
        self.clock.advance(5)
        self.assertTrue(client.transport.disconnected)

    def test_completedInTime(self) -> None:
        client = self.imap(secure=False)
        self.assertIn(b"OK", client.exchange(b"s STARTTLS"))
        client.protocol.handshakeCompleted()
        self.clock.advance(5)
        self.assertFalse(client.transport.disconnecting)
        self.assertEqual(self.limiter.handshakes, 0)

    def test_allowancePerAddress(self) -> None:
        """
        Over the allowance for handshakes in progress, STARTTLS ends the
        session (SMTP 421, IMAP BYE); a finished handshake frees the place,
        and other addresses are not affected.
        """
        first = self.smtp()
        first.exchange(b"STARTTLS")
        second = self.smtp()
        self.assertEqual(
            second.exchange(b"STARTTLS"),
            b"421 4.7.0 mail.example.test Too many TLS handshakes in progress, try again later\r\n",
        )
        self.assertTrue(self.closed(second))
        third = self.imap(secure=False)
        self.assertEqual(third.exchange(b"s STARTTLS"), b"* BYE Too many TLS handshakes in progress, try again later\r\n")
        elsewhere = self.smtp(peer="192.0.2.8")
        self.assertTrue(elsewhere.exchange(b"STARTTLS").startswith(b"220 "))
        first.protocol.handshakeCompleted()
        again = self.smtp()
        self.assertTrue(again.exchange(b"STARTTLS").startswith(b"220 "))

    def test_implicitTLSOverAllowance(self) -> None:
        """
        On an implicit-TLS port the handshake starts at once; over the
        allowance the connection is closed without one (nothing could be
        said before it).
        """
        self.imap(secure=True, handshake=False)
        refused = self.imap(secure=True, handshake=False)
        self.assertTrue(refused.transport.disconnected)
        self.assertEqual(refused.transport.value(), b"")


class SMTPSizeTests(_Sessions, SynchronousTestCase):
    def test_sizeListed(self) -> None:
        client = self.smtp(secure=True)
        self.assertIn(b"250 SIZE 2048\r\n", client.exchange(b"EHLO c"))

    def test_declaredSizeRefused(self) -> None:
        client = self.smtp(secure=True)
        self.login(client)
        self.assertEqual(
            client.exchange(b"MAIL FROM:<bob@example.test> BODY=8BITMIME SIZE=2049"),
            b"552 5.3.4 Message size exceeds fixed maximum message size\r\n",
        )
        self.assertTrue(client.exchange(b"MAIL FROM:<bob@example.test> SIZE=2048").startswith(b"250 "))

    def test_streamedSizeRefused(self) -> None:
        """
        The message is dropped as soon as it passes the limit, not after
        the final dot; the client hears 552 after the dot.
        """
        client = self.smtp(secure=True)
        self.login(client)
        client.exchange(b"MAIL FROM:<bob@example.test>")
        client.exchange(b"RCPT TO:<bob@example.test>")
        client.exchange(b"DATA")
        self.assertEqual(client.send(b"y" * 998 + b"\r\n"), b"")
        self.assertEqual(len(self.maildir("tmp")), 1)
        self.assertEqual(client.send(b"y" * 998 + b"\r\n" + b"z" * 100 + b"\r\n"), b"")
        self.assertEqual(self.maildir("tmp"), [])
        self.assertEqual(
            client.exchange(b"."), b"552 5.3.4 Message size exceeds fixed maximum message size\r\n"
        )
        self.assertEqual(self.maildir("new"), [])
        client.exchange(b"MAIL FROM:<bob@example.test>")
        client.exchange(b"RCPT TO:<bob@example.test>")
        client.exchange(b"DATA")
        self.assertTrue(client.exchange(b"Subject: s\r\n\r\nsmall\r\n.").startswith(b"250 "))
        self.assertEqual(len(self.maildir("new")), 1)

    def test_commandLineLength(self) -> None:
        """
        512 octets with CRLF (RFC 5321), except AUTH lines (RFC 4954:
        12288).
        """
        client = self.smtp(secure=True)
        self.assertEqual(client.exchange(b"NOOP " + b"x" * 505), b"250 OK\r\n")
        self.assertEqual(client.exchange(b"NOOP " + b"x" * 506), b"500 5.5.2 Line too long\r\n")
        client.exchange(b"EHLO c")
        reply = client.exchange(b"AUTH PLAIN " + base64.b64encode(b"\0bob@example.test\0" + b"p" * 2000))
        self.assertEqual(reply, b"535 5.7.8 Authentication credentials invalid\r\n")

    def test_dataLineTooLong(self) -> None:
        client = self.smtp(secure=True)
        self.login(client)
        client.exchange(b"MAIL FROM:<bob@example.test>")
        client.exchange(b"RCPT TO:<bob@example.test>")
        client.exchange(b"DATA")
        self.assertEqual(client.send(b"a" * 16385 + b"\r\nmore\r\n"), b"")
        self.assertEqual(client.exchange(b"."), b"500 5.5.2 Line too long\r\n")
        self.assertEqual(self.maildir("new"), [])


class DataFastPathTests(_Sessions, SynchronousTestCase):
    """
    Message body lines go straight to the message, past the command
    line's hooks, and keep the limits that apply to them.
    """

    def inData(self) -> LineExchange:
        client = self.smtp(secure=True)
        self.login(client)
        client.exchange(b"MAIL FROM:<bob@example.test>")
        client.exchange(b"RCPT TO:<bob@example.test>")
        self.assertTrue(client.exchange(b"DATA").startswith(b"354 "))
        return client

    def counted(self, cls: type, name: str) -> list[bytes]:
        calls: list[bytes] = []
        original = getattr(cls, name)

        def counting(protocol: Any, line: bytes) -> Any:
            calls.append(line)
            return original(protocol, line)

        self.patch(cls, name, counting)
        return calls

    def test_bodySkipsCommandHooks(self) -> None:
        client = self.inData()
        guarded = self.counted(SessionGuardMixin, "lineReceived")
        clientID = self.counted(ClientIDESMTPMixin, "lineReceived")
        client.send(b"Subject: x\r\n\r\nAUTH PLAIN looks like a command\r\n")
        self.assertEqual((guarded, clientID), ([], []))
        self.assertEqual(client.exchange(b"."), b"250 Delivery in progress\r\n")
        self.assertEqual(guarded, [])
        self.assertEqual(client.exchange(b"NOOP"), b"250 OK\r\n")
        self.assertEqual(guarded, [b"NOOP"])
        [message] = self.maildir("new")
        self.assertIn(b"AUTH PLAIN looks like a command", message.read_bytes())

    def test_lengthLimitKept(self) -> None:
        """
        A body line longer than a command line may be (512 octets) is
        taken; one over the message line limit still fails the message.
        """
        client = self.inData()
        self.assertEqual(client.send(b"b" * 1000 + b"\r\n"), b"")
        self.assertEqual(client.send(b"a" * 16385 + b"\r\n"), b"")
        self.assertEqual(client.exchange(b"."), b"500 5.5.2 Line too long\r\n")
        self.assertEqual(self.maildir("new"), [])


class ErrorBudgetTests(_Sessions, SynchronousTestCase):
    def test_smtp(self) -> None:
        client = self.smtp()
        self.assertEqual(client.exchange(b"FROB"), b"500 5.5.2 Syntax error, command unrecognized\r\n")
        self.assertEqual(client.exchange(b"MAIL FROM:<x@y>"), b"530 5.7.0 Authentication required\r\n")
        self.assertEqual(client.exchange(b"AUTH PLAIN x"), b"538 5.7.11 Encryption required for requested authentication mechanism\r\n")
        self.assertFalse(self.closed(client))
        self.assertEqual(
            client.exchange(b"FROB"),
            b"500 5.5.2 Syntax error, command unrecognized\r\n421 4.7.0 mail.example.test Too many errors, closing connection\r\n",
        )
        self.assertTrue(self.closed(client))

    def test_smtpRecipientRefusalsDoNotCount(self) -> None:
        client = self.smtp(secure=True)
        self.login(client)
        client.exchange(b"MAIL FROM:<bob@example.test>")
        for n in range(5):
            self.assertTrue(client.exchange(b"RCPT TO:<carol%d@elsewhere.example>" % (n,)).startswith(b"550 "))
        self.assertFalse(self.closed(client))

    def test_imap(self) -> None:
        client = self.imap()
        client.exchange(b"a FROB")
        client.exchange(b"b CLIENTID UUID")
        self.assertEqual(
            client.exchange(b"c LOGIN bob@example.test wrong"),
            b"c NO [AUTHENTICATIONFAILED] Authentication failed\r\n",
        )
        self.assertFalse(self.closed(client))
        self.assertEqual(client.exchange(b"d FROB"), b"d BAD Unsupported command\r\n* BYE Too many errors\r\n")
        self.assertTrue(self.closed(client))


class FailureDelayTests(_Sessions, SynchronousTestCase):
    limits = ServerLimits(authFailureDelay=2)

    def test_smtp(self) -> None:
        """
        A failed AUTH is answered after the delay, with the same bytes; the
        commands sent meanwhile wait for it, reading is paused, and another
        session is served meanwhile.
        """
        client = self.smtp(secure=True)
        client.exchange(b"EHLO c")
        wrong = b"AUTH PLAIN " + base64.b64encode(b"\0bob@example.test\0wrong")
        self.assertEqual(client.send(wrong + b"\r\nNOOP\r\n"), b"")
        self.assertEqual(client.transport.producerState, "paused")
        other = self.smtp(secure=True)
        self.assertEqual(other.exchange(b"NOOP"), b"250 OK\r\n")
        self.clock.advance(1.9)
        self.assertEqual(client.transport.value(), b"")
        self.clock.advance(0.1)
        self.assertEqual(
            client.transport.value(), b"535 5.7.8 Authentication credentials invalid\r\n250 OK\r\n"
        )
        self.assertEqual(client.transport.producerState, "producing")

    def test_smtpSuccessNotDelayed(self) -> None:
        client = self.smtp(secure=True)
        self.login(client)

    def test_imap(self) -> None:
        client = self.imap()
        self.assertEqual(client.send(b"a LOGIN bob@example.test wrong\r\nb NOOP\r\n"), b"")
        self.assertEqual(client.transport.producerState, "paused")
        self.clock.advance(2)
        self.assertEqual(
            client.transport.value(),
            b"a NO [AUTHENTICATIONFAILED] Authentication failed\r\nb OK NOOP No operation performed\r\n",
        )
        self.assertEqual(client.transport.producerState, "producing")

    def test_goneDuringDelay(self) -> None:
        client = self.imap()
        client.send(b"a LOGIN bob@example.test wrong\r\n")
        client.protocol.connectionLost(None)
        self.assertEqual(self.clock.getDelayedCalls(), [])


class DecidedAtOnceTests(_Sessions, SynchronousTestCase):
    """
    A login the portal decides at once is answered without pausing the
    transport (reading is held only while a decision is awaited).
    """

    def pauses(self, client: LineExchange) -> list[str]:
        calls: list[str] = []
        transport = client.transport
        pause, resume = transport.pauseProducing, transport.resumeProducing

        def counted(name: str, call: Any) -> Any:
            def record() -> None:
                calls.append(name)
                call()

            return record

        transport.pauseProducing = counted("pause", pause)  # type: ignore[method-assign]
        transport.resumeProducing = counted("resume", resume)  # type: ignore[method-assign]
        return calls

    def test_smtp(self) -> None:
        client = self.smtp(secure=True)
        calls = self.pauses(client)
        self.login(client)
        self.assertEqual(calls, [])
        self.assertEqual(client.exchange(b"NOOP"), b"250 OK\r\n")

    def test_imap(self) -> None:
        client = self.imap()
        calls = self.pauses(client)
        self.assertEqual(
            client.send(b"a LOGIN bob@example.test pw\r\nb NOOP\r\n"),
            b"a OK LOGIN succeeded\r\nb OK NOOP No operation performed\r\n",
        )
        self.assertEqual(calls, [])

    def test_pendingPauses(self) -> None:
        """
        A login still being decided pauses reading until it is answered.
        """
        pending: defer.Deferred[Any] = defer.Deferred()
        self.portal.login = lambda *args: pending  # type: ignore[method-assign]
        client = self.smtp(secure=True)
        calls = self.pauses(client)
        client.exchange(b"EHLO c")
        client.send(b"AUTH PLAIN " + base64.b64encode(b"\0bob@example.test\0pw") + b"\r\n")
        self.assertEqual(calls, ["pause"])
        pending.errback(UnauthorizedLogin())
        self.assertEqual(calls, ["pause", "resume"])


class LoginHoldTests(SynchronousTestCase):
    """
    The SMTP mixin holds commands that arrive while a login is decided.
    """

    def test_pipelinedAfterAuth(self) -> None:
        pending: defer.Deferred[Any] = defer.Deferred()

        class Portal:
            def login(self, *args: Any) -> defer.Deferred[Any]:
                return pending

        factory = ClientIDESMTPFactory(Portal(), context=object())
        protocol = factory.buildProtocol(None)
        client = LineExchange(protocol, connectedTransport(protocol, secure=True))
        client.exchange(b"EHLO c")
        self.assertEqual(client.send(b"AUTH PLAIN " + base64.b64encode(b"\0u\0p") + b"\r\nFROB\r\n"), b"")
        from twisted.cred.error import UnauthorizedLogin

        client.transport.clear()
        pending.errback(UnauthorizedLogin())
        self.assertEqual(
            client.transport.value(),
            b"535 5.7.8 Authentication credentials invalid\r\n500 5.5.2 Syntax error, command unrecognized\r\n",
        )


class IMAPLimitTests(_Sessions, SynchronousTestCase):
    def test_idleStages(self) -> None:
        client = self.imap()
        self.clock.advance(9)
        client.exchange(b"c CAPABILITY")
        self.clock.advance(99)
        self.assertFalse(self.closed(client))
        client.exchange(b"l LOGIN bob@example.test pw")
        self.clock.advance(999)
        self.assertFalse(self.closed(client))
        client.transport.clear()
        self.clock.advance(1)
        self.assertEqual(client.transport.value(), b"* BYE Autologout; idle for too long\r\n")
        self.assertTrue(self.closed(client))

    def test_appendLimitListed(self) -> None:
        self.assertRegex(self.imap().exchange(b"c CAPABILITY"), rb" APPENDLIMIT=2048[ \r]")

    def test_literalTooLarge(self) -> None:
        """
        A synchronising literal over the limit gets NO [TOOBIG] and no
        continuation, so the client sends none of it.
        """
        client = self.imap()
        client.exchange(b"l LOGIN bob@example.test pw")
        self.assertEqual(
            client.exchange(b"a APPEND INBOX {2049}"), b"a NO [TOOBIG] Literal larger than 2048 octets\r\n"
        )
        self.assertEqual(client.exchange(b"b NOOP"), b"b OK NOOP No operation performed\r\n")
        self.assertEqual(client.exchange(b"a APPEND INBOX {99999999999999999999999999}")[:16], b"a NO [TOOBIG] Li")

    def test_literalTooLargeInContinuation(self) -> None:
        client = self.imap()
        self.assertTrue(client.exchange(b"a LOGIN {3}").startswith(b"+ "))
        self.assertEqual(client.exchange(b"bob {5000}"), b"a NO [TOOBIG] Literal larger than 2048 octets\r\n")
        self.assertEqual(client.exchange(b"b NOOP"), b"b OK NOOP No operation performed\r\n")

    def test_nonSynchronizingSkipped(self) -> None:
        """
        LITERAL+ is not supported (nor listed): C{{n+}} gets BAD, and its
        bytes and the rest of its command are skipped, however the reads
        split them, so the next command is read in step.
        """
        client = self.imap()
        client.exchange(b"l LOGIN bob@example.test pw")
        self.assertNotIn(b"LITERAL+", client.exchange(b"c CAPABILITY"))
        stream = b"a APPEND INBOX {12+}\r\nb NOOP\r\nxyz\r\n\r\nb NOOP\r\n"
        for size in (len(stream), 1, 5):
            client.transport.clear()
            for start in range(0, len(stream), size):
                client.protocol.dataReceived(stream[start : start + size])
            self.assertEqual(
                client.transport.value(),
                b"a BAD Non-synchronizing literals (LITERAL+) are not supported\r\n"
                b"b OK NOOP No operation performed\r\n",
            )
        self.assertEqual(self.maildir("new") + self.maildir("cur"), [])

    def test_literalShapedClientIDTokens(self) -> None:
        """
        A valid CLIENTID token that ends like a literal announcement is a
        token: OK, never a literal's BAD, NO [TOOBIG] or BYE, and the next
        command is answered, sent alone or pipelined with it.
        """
        tokens = [b"{3+}", b"x{36700161}", b"{99999999+}", b"{2049}", b"x{5}", b"{0+}"]
        for token in tokens:
            for pipelined in (False, True):
                client = self.imap()
                client.exchange(b"c CAPABILITY")
                line = b"t1 CLIENTID UUID " + token
                if pipelined:
                    reply = client.send(line + b"\r\nt2 NOOP\r\n")
                else:
                    reply = client.exchange(line) + client.exchange(b"t2 NOOP")
                self.assertEqual(
                    reply,
                    b"t1 OK CLIENTID completed\r\nt2 OK NOOP No operation performed\r\n",
                    (token, pipelined),
                )
                self.assertEqual(client.protocol.clientIdentity.token, token.decode("ascii"))
                self.assertFalse(self.closed(client))

    def test_nonSynchronizingChain(self) -> None:
        client = self.imap()
        reply = client.send(b"a LOGIN {3+}\r\nbob {2+}\r\npw\r\nb NOOP\r\n")
        self.assertEqual(
            reply,
            b"a BAD Non-synchronizing literals (LITERAL+) are not supported\r\n"
            b"b OK NOOP No operation performed\r\n",
        )

    def test_nonSynchronizingTooLarge(self) -> None:
        client = self.imap()
        client.exchange(b"l LOGIN bob@example.test pw")
        self.assertEqual(client.send(b"a APPEND INBOX {2049+}\r\n" + b"z" * 100), b"* BYE Literal too large\r\n")
        self.assertTrue(self.closed(client))

    def test_lineTooLong(self) -> None:
        client = self.imap()
        self.assertEqual(client.send(b"a NOOP " + b"x" * 9000), b"* BYE Command line too long\r\n")
        self.assertTrue(self.closed(client))

    def test_literalDeadline(self) -> None:
        client = self.imap()
        client.exchange(b"l LOGIN bob@example.test pw")
        self.assertTrue(client.exchange(b"a APPEND INBOX {100}").startswith(b"+ "))
        for n in range(49):
            client.protocol.dataReceived(b"y")
            self.clock.advance(1)
        self.assertFalse(self.closed(client))
        client.transport.clear()
        self.clock.advance(1)
        self.assertEqual(client.transport.value(), b"* BYE Literal not completed in time\r\n")

    def test_commandDeadline(self) -> None:
        client = self.imap()
        client.exchange(b"c CAPABILITY")
        for n in range(20):
            client.protocol.dataReceived(b"a")
            self.clock.advance(1)
        self.assertTrue(self.closed(client))
        self.assertTrue(client.transport.value().endswith(b"* BYE Command not completed in time\r\n"))


class DrainSessionTests(_Sessions, SynchronousTestCase):
    """
    On shutdown a session in DATA or FETCH finishes its command; an idle
    one, or one that sends a new command, gets its goodbye.
    """

    def test_idle(self) -> None:
        smtp, imap = self.smtp(), self.imap()
        self.limiter.drain()
        self.assertTrue(smtp.transport.value().endswith(b"421 4.3.2 mail.example.test Service shutting down, closing connection\r\n"))
        self.assertTrue(imap.transport.value().endswith(b"* BYE Server shutting down\r\n"))

    def test_smtpInData(self) -> None:
        client = self.smtp(secure=True)
        self.login(client)
        client.exchange(b"MAIL FROM:<bob@example.test>")
        client.exchange(b"RCPT TO:<bob@example.test>")
        client.exchange(b"DATA")
        client.send(b"Subject: s\r\n\r\nfirst half\r\n")
        self.limiter.drain()
        self.assertFalse(self.closed(client))
        reply = client.exchange(b"second half\r\n.")
        self.assertEqual(reply, b"250 Delivery in progress\r\n")
        client.transport.clear()
        self.clock.advance(0.1)
        self.assertEqual(client.transport.value(), b"421 4.3.2 mail.example.test Service shutting down, closing connection\r\n")
        [stored] = self.maildir("new")
        self.assertTrue(stored.read_bytes().endswith(b"first half\r\nsecond half\r\n"))

    def test_smtpNextCommand(self) -> None:
        client = self.smtp(secure=True)
        self.login(client)
        client.exchange(b"MAIL FROM:<bob@example.test>")
        client.exchange(b"RCPT TO:<bob@example.test>")
        client.exchange(b"DATA")
        self.limiter.drain()
        self.assertEqual(
            client.exchange(b"s\r\n.\r\nMAIL FROM:<bob@example.test>"),
            b"250 Delivery in progress\r\n421 4.3.2 mail.example.test Service shutting down, closing connection\r\n",
        )

    def test_smtpCutAfterGrace(self) -> None:
        client = self.smtp(secure=True)
        self.login(client)
        client.exchange(b"MAIL FROM:<bob@example.test>")
        client.exchange(b"RCPT TO:<bob@example.test>")
        client.exchange(b"DATA")
        client.send(b"Subject: s\r\n\r\nnever finished\r\n")
        done = self.limiter.drain(grace=3)
        self.clock.advance(3)
        self.assertTrue(self.closed(client))
        self.assertEqual(self.maildir("tmp"), [])
        self.assertEqual(self.maildir("new"), [])
        self.clock.advance(1)
        self.assertTrue(client.transport.disconnected)
        client.protocol.connectionLost(None)
        self.successResultOf(done)

    def test_imapFetch(self) -> None:
        """
        A FETCH being written out finishes before the BYE.
        """
        steps: list[Any] = []

        def scheduler(iterator: Any) -> defer.Deferred[Any]:
            d: defer.Deferred[Any] = defer.Deferred()
            steps.append((iterator, d))
            return d

        client = self.imap(scheduler=scheduler)
        client.exchange(b"l LOGIN bob@example.test pw")
        self.assertTrue(client.send(b"a APPEND INBOX {20}\r\n").startswith(b"+ "))
        self.assertIn(b"a OK", client.exchange(b"Subject: s\r\n\r\nbody\r\n"))
        client.exchange(b"s SELECT INBOX")
        client.exchange(b"f FETCH 1 (BODY.PEEK[])")
        self.assertTrue(client.protocol.isBusy())
        self.limiter.drain()
        self.assertFalse(self.closed(client))
        client.transport.clear()
        self.clock.advance(0.1)
        self.assertFalse(self.closed(client))
        for iterator, d in steps:
            for _ in iterator:
                pass
            d.callback(None)
        self.assertIn(b"f OK FETCH completed\r\n", client.transport.value())
        self.clock.advance(0.1)
        self.assertTrue(client.transport.value().endswith(b"* BYE Server shutting down\r\n"))


class IMAPRobustnessTests(_Sessions, SynchronousTestCase):
    """
    What the fuzz test found in Twisted's IMAP4Server: malformed arguments
    that it answered with C{BAD Server error} and a traceback in the log,
    or left unanswered.  Each is a plain BAD or NO now, and nothing is
    logged as an error.
    """

    def setUp(self) -> None:
        super().setUp()
        from twisted.logger import globalLogPublisher

        self.errors: list[dict[str, Any]] = []

        def observe(event: dict[str, Any]) -> None:
            if event.get("isError") or event.get("log_failure") is not None:
                self.errors.append(event)

        globalLogPublisher.addObserver(observe)
        self.addCleanup(globalLogPublisher.removeObserver, observe)
        self.client = self.imap()
        self.client.exchange(b"l LOGIN bob@example.test pw")
        self.client.exchange(b"s SELECT INBOX")
        self.client.send(b"a APPEND INBOX {14}\r\nSubject: x\r\n\r\n\r\n")

    def tearDown(self) -> None:
        self.assertEqual(self.errors, [])

    def test_missingArguments(self) -> None:
        self.assertEqual(self.client.exchange(b"a SELECT"), b"a BAD Illegal syntax: Missing argument\r\n")
        # No flag list: Twisted's parser was handed None and raised.
        self.assertTrue(self.client.exchange(b"b STORE 1 +FLAGS").endswith(b"b OK STORE completed\r\n"))

    def test_malformedArguments(self) -> None:
        self.assertEqual(
            self.client.exchange(b"a FETCH 1 (BODY[HEADER.FIELDS (SUBJECT)"),
            b"a BAD Illegal syntax: malformed arguments\r\n",
        )
        self.assertEqual(self.client.exchange(b"b FETCH 1 rvelope"), b"b BAD Illegal syntax: malformed arguments\r\n")

    def test_eightBitOutsideStrings(self) -> None:
        reply = self.client.exchange(b"a STATUS INBOX (MESS\xc3\xa9GES)")
        self.assertEqual(reply, b"a BAD Illegal syntax: 8-bit bytes outside a string\r\n")

    def test_mailboxNameNotUTF7(self) -> None:
        reply = self.client.exchange(b"a CREATE &\xb9")
        self.assertTrue(reply.startswith(b"a NO Illegal mailbox name"), reply)

    def test_unknownStatusItem(self) -> None:
        self.assertEqual(
            self.client.exchange(b"a STATUS INBOX (MESSAGES FROB)"), b"a BAD STATUS failed: unknown status item\r\n"
        )

    def test_unknownSearchKey(self) -> None:
        self.assertEqual(
            self.client.exchange(b"a SEARCH FROB"), b"a BAD SEARCH failed: invalid search criteria\r\n"
        )

    def test_literalQueuedBehindCommand(self) -> None:
        """
        A command with a literal queued behind a running command reads the
        queued bytes after it as the literal's data, not as commands.
        """
        client = self.imap(scheduler=lambda iterator: defer.Deferred())
        client.exchange(b"l LOGIN bob@example.test pw")
        client.exchange(b"s SELECT INBOX")
        client.send(b"a APPEND INBOX {14}\r\nSubject: x\r\n\r\n\r\n")
        client.send(b"f FETCH 1 (BODY[])\r\nc CREATE {4}\r\nFuzz\r\n")
        self.assertTrue(client.protocol.isBusy())
        client.protocol._unblock()
        self.assertIn(b"c OK Mailbox created\r\n", client.transport.value())
        self.assertTrue((self.dataDir / "mail" / "bob@example.test" / ".Fuzz").exists())


class BackpressureTests(_Sessions, SynchronousTestCase):
    """
    A session whose client does not read stops reading at
    C{outputHighWater} of unsent output, reads again once the output is
    down to a quarter, and meanwhile its idle timer counts the time without
    progress in writing.  The in-memory transport gets the write buffer of
    Twisted's TCP transport to say how much is unsent; real sockets are in
    C{test_backpressure}.
    """

    def unsent(self, client: LineExchange, kib: int) -> None:
        client.transport.dataBuffer = b"x" * (kib * 1024)  # type: ignore[attr-defined]
        client.transport._tempDataLen = 0  # type: ignore[attr-defined]

    def test_smtpPausedUntilRead(self) -> None:
        client = self.smtp()
        client.exchange(b"EHLO c")
        self.unsent(client, 300)
        client.transport.clear()
        client.protocol.dataReceived(b"NOOP\r\nNOOP\r\nNOOP\r\n")
        self.assertEqual(client.transport.value(), b"250 OK\r\n")
        self.assertTrue(client.protocol.backlogged)
        self.assertEqual(client.transport.producerState, "paused")
        for kib in (250, 200, 150, 100):
            # The client reads a little at a time: not idle.
            self.clock.advance(9)
            self.unsent(client, kib)
        self.clock.advance(9)
        self.assertFalse(self.closed(client))
        self.unsent(client, 60)
        self.clock.advance(0.05)
        self.assertFalse(client.protocol.backlogged)
        self.assertEqual(client.transport.producerState, "producing")
        self.assertEqual(client.transport.value(), b"250 OK\r\n" * 3)

    def test_smtpIdleWithoutProgress(self) -> None:
        client = self.smtp()
        client.exchange(b"EHLO c")
        self.unsent(client, 300)
        client.protocol.dataReceived(b"NOOP\r\nNOOP\r\n")
        client.transport.clear()
        self.clock.advance(9.9)
        self.assertFalse(self.closed(client))
        self.clock.advance(0.1)
        self.assertTrue(self.closed(client))
        self.assertEqual(client.transport.value(), b"421 4.4.2 mail.example.test Idle timeout, closing connection\r\n")

    def test_imapPausedUntilRead(self) -> None:
        client = self.imap()
        self.unsent(client, 300)
        client.transport.clear()
        client.protocol.dataReceived(b"a NOOP\r\nb NOOP\r\n")
        self.assertEqual(client.transport.value(), b"a OK NOOP No operation performed\r\n")
        self.assertTrue(client.protocol.backlogged)
        self.assertEqual(client.transport.producerState, "paused")
        self.clock.advance(5)
        self.assertFalse(self.closed(client))
        self.unsent(client, 0)
        self.clock.advance(0.05)
        self.assertEqual(
            client.transport.value(),
            b"a OK NOOP No operation performed\r\nb OK NOOP No operation performed\r\n",
        )
        self.assertEqual(client.transport.producerState, "producing")

    def test_imapQueuedLinesCount(self) -> None:
        """
        Lines queued behind a running command count too.
        """
        client = self.imap()
        self.unsent(client, 0)
        client.protocol.blocked = []
        line = b"n NOOP " + b"z" * 8000
        client.protocol.dataReceived((line + b"\r\n") * 40)
        self.assertTrue(client.protocol.backlogged)
        # Queuing stopped at the first line past the mark.
        self.assertEqual(client.protocol.queuedInputBytes(), len(line) * (256 * 1024 // len(line) + 1))
        self.assertEqual(client.transport.producerState, "paused")

    def test_loginHoldAndBacklog(self) -> None:
        """
        The end of a login does not resume reading while the client is
        backlogged, nor the end of the backlog while a login is decided.
        """
        client = self.smtp()
        protocol = client.protocol
        protocol.holdInput()
        protocol._holdReading("backlog")
        protocol.releaseInput()
        self.assertEqual(client.transport.producerState, "paused")
        protocol._releaseReading("backlog")
        self.assertEqual(client.transport.producerState, "producing")
