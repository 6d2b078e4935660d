"""
The gateway's client side of the SMTP backend
(L{clientid_twisted.gateway.smtpbackend}), driven over a StringTransport:
reply parsing, the login conversation (STARTTLS, XCLIENT, AUTH PLAIN) and
how its outcomes map to a refusal or a temporary failure.
"""

from __future__ import annotations

import base64
from typing import Any

from twisted.cred.error import UnauthorizedLogin
from twisted.internet import defer
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase

from clientid_twisted.gateway.backend import BackendUnavailable
from clientid_twisted.gateway.smtpbackend import (
    BackendSMTPProtocol,
    BackendSMTPSession,
    Reply,
    loginToSMTPBackend,
    xclientCommands,
    xtext,
)

EHLO_XCLIENT = (
    b"250-mx.example\r\n250-PIPELINING\r\n250-AUTH PLAIN LOGIN\r\n"
    b"250-XCLIENT NAME ADDR PROTO HELO PORT\r\n250 CHUNKING\r\n"
)
PEER = IPv4Address("TCP", "203.0.113.9", 40123)


class FakeBackend:
    """
    Stands in for L{Backend}: connects to a StringTransport at once.
    """

    def __init__(self, starttls: bool = False) -> None:
        self.starttls = starttls
        self.protocol = BackendSMTPProtocol()
        self.transport = StringTransport()
        self.tlsStarted = False

    def connect(self, factory: Any) -> defer.Deferred[BackendSMTPProtocol]:
        self.protocol.makeConnection(self.transport)
        return defer.succeed(self.protocol)

    def startTLS(self, transport: Any) -> None:
        self.tlsStarted = True

    def guard(self, d: defer.Deferred[Any]) -> defer.Deferred[Any]:
        return d

    def said(self) -> list[bytes]:
        """
        The lines the gateway has sent so far (and forget them).
        """
        lines = self.transport.value().split(b"\r\n")[:-1]
        self.transport.clear()
        return lines

    def answer(self, reply: bytes) -> None:
        self.protocol.dataReceived(reply)


class ReplyTests(SynchronousTestCase):
    def test_multiLineReplyKeptAsSent(self) -> None:
        """
        A multi-line reply fires once, with its exact bytes; its EHLO
        keywords are readable.
        """
        protocol = BackendSMTPProtocol()
        protocol.makeConnection(StringTransport())
        protocol.dataReceived(b"220 mx ESMTP\r\n")
        replies: list[Reply] = []
        protocol.command(b"EHLO gw").addCallback(replies.append)
        protocol.dataReceived(EHLO_XCLIENT[:30])
        self.assertEqual(replies, [])
        protocol.dataReceived(EHLO_XCLIENT[30:])
        [reply] = replies
        self.assertEqual((reply.code, reply.raw), (250, EHLO_XCLIENT))
        self.assertEqual(reply.keywords()[b"AUTH"], [b"PLAIN", b"LOGIN"])
        self.assertIn(b"CHUNKING", reply.keywords())

    def test_malformedReplyIsAnOutage(self) -> None:
        """
        A line that is not a reply closes the connection and fails what
        waits with L{BackendUnavailable}.
        """
        protocol = BackendSMTPProtocol()
        transport = StringTransport()
        protocol.makeConnection(transport)
        protocol.dataReceived(b"220 mx ESMTP\r\n")
        d = protocol.command(b"NOOP")
        protocol.dataReceived(b"HTTP/1.1 400 Bad Request\r\n")
        self.failureResultOf(d, BackendUnavailable)
        self.assertTrue(transport.disconnecting)

    def test_overlongReplyIsAnOutage(self) -> None:
        protocol = BackendSMTPProtocol()
        protocol.makeConnection(StringTransport())
        protocol.dataReceived(b"220 mx ESMTP\r\n")
        d = protocol.command(b"EHLO gw")
        for _ in range(70):
            protocol.dataReceived(b"250-" + b"x" * 1000 + b"\r\n")
        self.failureResultOf(d, BackendUnavailable)

    def test_unsolicitedReply(self) -> None:
        """
        A reply nobody waits for (a 421 before the backend hangs up) goes
        to C{unsolicited}.
        """
        protocol = BackendSMTPProtocol()
        protocol.makeConnection(StringTransport())
        protocol.dataReceived(b"220 mx ESMTP\r\n")
        heard: list[Reply] = []
        protocol.unsolicited = heard.append
        protocol.dataReceived(b"421 4.4.2 mx Error: timeout exceeded\r\n")
        self.assertEqual([r.raw for r in heard], [b"421 4.4.2 mx Error: timeout exceeded\r\n"])


class XClientTests(SynchronousTestCase):
    def test_xtext(self) -> None:
        """
        RFC 3461 xtext: C{+}, C{=}, controls, space and 8-bit as C{+XX}.
        """
        self.assertEqual(xtext(b"a+b=c d\x01\xff"), b"a+2Bb+3Dc+20d+01+FF")

    def test_offeredAttributesOnly(self) -> None:
        self.assertEqual(
            xclientCommands([b"NAME", b"ADDR", b"PROTO", b"PORT"], PEER, b"laptop.example"),
            [b"XCLIENT ADDR=203.0.113.9 PORT=40123 PROTO=ESMTP"],
        )
        self.assertEqual(xclientCommands([b"addr"], PEER), [b"XCLIENT ADDR=203.0.113.9"])

    def test_ipv6(self) -> None:
        peer = IPv6Address("TCP", "2001:db8::9", 25)
        self.assertEqual(xclientCommands([b"ADDR"], peer), [b"XCLIENT ADDR=IPV6:2001:db8::9"])

    def test_nothingToSay(self) -> None:
        """
        No C{ADDR} offered, or no address known: no XCLIENT at all.
        """
        self.assertEqual(xclientCommands([b"NAME", b"HELO"], PEER, b"laptop"), [])
        self.assertEqual(xclientCommands([b"ADDR", b"PORT", b"HELO"], None, b"laptop"), [])

    def test_heloWhenOffered(self) -> None:
        """
        The client's EHLO name goes with the address when the backend
        lists C{HELO}, and only then.
        """
        self.assertEqual(
            xclientCommands([b"ADDR", b"PORT", b"PROTO", b"HELO"], PEER, b"laptop.example.net"),
            [b"XCLIENT ADDR=203.0.113.9 PORT=40123 PROTO=ESMTP HELO=laptop.example.net"],
        )
        self.assertEqual(
            xclientCommands([b"ADDR", b"helo"], PEER, b"[192.0.2.7]"),
            [b"XCLIENT ADDR=203.0.113.9 HELO=[192.0.2.7]"],
        )
        self.assertEqual(xclientCommands([b"ADDR", b"HELO"], PEER, None), [b"XCLIENT ADDR=203.0.113.9"])
        self.assertEqual(xclientCommands([b"ADDR", b"HELO"], PEER, b""), [b"XCLIENT ADDR=203.0.113.9"])

    def test_oddNamesEncoded(self) -> None:
        """
        Whatever the client sent as its name reaches the backend as one
        xtext word: spaces, C{+} and C{=} (which would end the value or
        start another attribute), controls and 8-bit bytes are C{+XX}, so
        no name can add an attribute (C{ADDR=}, C{LOGIN=}) or a command.
        """
        for name, encoded in [
            (b"my laptop", b"my+20laptop"),
            (b"a+b=c", b"a+2Bb+3Dc"),
            (b"x ADDR=192.0.2.66 LOGIN=root", b"x+20ADDR+3D192.0.2.66+20LOGIN+3Droot"),
            (b"tab\there\x01\x7f", b"tab+09here+01+7F"),
            ("caf\u00e9".encode(), b"caf+C3+A9"),
            (b"<>()[]\\\"'", b"<>()[]\\\"'"),
        ]:
            [command] = xclientCommands([b"ADDR", b"HELO"], PEER, name)
            self.assertEqual(command, b"XCLIENT ADDR=203.0.113.9 HELO=" + encoded)
            self.assertEqual(command.count(b" "), 2)
            self.assertEqual(command.count(b"="), 2)

    def test_longNameSplit(self) -> None:
        """
        A line longer than SMTP's 512 octets is split as Postfix's
        XCLIENT_README asks: C{HELO} (and C{PROTO}) first, C{ADDR} last.
        """
        name = b" " * 160
        commands = xclientCommands([b"ADDR", b"PORT", b"PROTO", b"HELO"], PEER, name)
        self.assertEqual(
            commands,
            [b"XCLIENT PROTO=ESMTP HELO=" + b"+20" * 160, b"XCLIENT ADDR=203.0.113.9 PORT=40123"],
        )
        self.assertTrue(all(len(c) + 2 <= 512 for c in commands))

    def test_nameTooLongLeftOut(self) -> None:
        """
        A name longer than the 255 octets Postfix takes (it refuses the
        whole XCLIENT with 501), or one too long for a line even alone once
        encoded, is left out, not cut: the address still goes.
        """
        address = [b"XCLIENT ADDR=203.0.113.9"]
        self.assertEqual(xclientCommands([b"ADDR", b"HELO"], PEER, b"a" * 256), address)
        self.assertEqual(len(xclientCommands([b"ADDR", b"HELO"], PEER, b"a" * 255)[0]), 24 + 6 + 255)
        self.assertEqual(xclientCommands([b"ADDR", b"HELO"], PEER, b"\x01" * 170), address)


class LoginTests(SynchronousTestCase):
    """
    The login conversation, step by step.
    """

    def start(
        self, starttls: bool = False, helo: bytes | None = None
    ) -> tuple[FakeBackend, defer.Deferred[Any]]:
        backend = FakeBackend(starttls)
        d = loginToSMTPBackend(backend, b"gw.example", b"alice", b"s3cret", PEER, helo)  # type: ignore[arg-type]
        backend.answer(b"220 mx ESMTP\r\n")
        self.assertEqual(backend.said(), [b"EHLO gw.example"])
        return backend, d

    def test_startTLSXClientAndAuth(self) -> None:
        """
        EHLO, STARTTLS, EHLO, XCLIENT (Postfix greets anew), EHLO, AUTH
        PLAIN: the session, with the extensions of the last EHLO.
        """
        backend, d = self.start(starttls=True)
        backend.answer(b"250-mx.example\r\n250-STARTTLS\r\n250 XCLIENT ADDR PORT\r\n")
        self.assertEqual(backend.said(), [b"STARTTLS"])
        backend.answer(b"220 2.0.0 Ready to start TLS\r\n")
        self.assertTrue(backend.tlsStarted)
        self.assertEqual(backend.said(), [b"EHLO gw.example"])
        backend.answer(EHLO_XCLIENT)
        self.assertEqual(backend.said(), [b"XCLIENT ADDR=203.0.113.9 PORT=40123 PROTO=ESMTP"])
        backend.answer(b"220 mx ESMTP\r\n")
        self.assertEqual(backend.said(), [b"EHLO gw.example"])
        backend.answer(b"250-mx.example\r\n250-AUTH PLAIN\r\n250 CHUNKING\r\n")
        self.assertEqual(
            backend.said(), [b"AUTH PLAIN " + base64.b64encode(b"\0alice\0s3cret")]
        )
        self.assertNoResult(d)
        backend.answer(b"235 2.7.0 Authentication successful\r\n")
        session = self.successResultOf(d)
        self.assertIsInstance(session, BackendSMTPSession)
        self.assertIn(b"CHUNKING", session.extensions)
        self.assertEqual(session.username, "alice")

    def test_clientNameStandsForTheGreeting(self) -> None:
        """
        With the client's EHLO name in C{XCLIENT HELO=}, the gateway does
        not greet again after Postfix's new 220: its own EHLO would replace
        the client's name.  AUTH follows at once, with the extensions of
        the EHLO before.
        """
        backend, d = self.start(helo=b"laptop example")
        backend.answer(EHLO_XCLIENT)
        self.assertEqual(
            backend.said(),
            [b"XCLIENT ADDR=203.0.113.9 PORT=40123 PROTO=ESMTP HELO=laptop+20example"],
        )
        backend.answer(b"220 mx ESMTP\r\n")
        [auth] = backend.said()
        self.assertTrue(auth.startswith(b"AUTH PLAIN "), auth)
        backend.answer(b"235 2.7.0 Authentication successful\r\n")
        session = self.successResultOf(d)
        self.assertIn(b"CHUNKING", session.extensions)
        self.assertNotIn(b"XCLIENT", session.extensions)

    def test_nameRefused(self) -> None:
        """
        A backend that refuses the XCLIENT with the name is asked again
        without it (the address matters more), and then greeted with the
        gateway's EHLO.
        """
        backend, d = self.start(helo=b"laptop.example")
        backend.answer(EHLO_XCLIENT)
        self.assertEqual(
            backend.said(), [b"XCLIENT ADDR=203.0.113.9 PORT=40123 PROTO=ESMTP HELO=laptop.example"]
        )
        backend.answer(b"501 5.5.4 Bad HELO syntax\r\n")
        self.assertEqual(backend.said(), [b"XCLIENT ADDR=203.0.113.9 PORT=40123 PROTO=ESMTP"])
        backend.answer(b"220 mx ESMTP\r\n")
        self.assertEqual(backend.said(), [b"EHLO gw.example"])
        backend.answer(b"250-mx.example\r\n250 AUTH PLAIN\r\n")
        [auth] = backend.said()
        self.assertTrue(auth.startswith(b"AUTH PLAIN "), auth)

    def test_splitCommands(self) -> None:
        """
        A name that makes the line too long: two XCLIENTs, each answered
        by a new greeting, then AUTH.
        """
        backend, d = self.start(helo=b" " * 160)
        backend.answer(EHLO_XCLIENT)
        self.assertEqual(backend.said(), [b"XCLIENT PROTO=ESMTP HELO=" + b"+20" * 160])
        backend.answer(b"220 mx ESMTP\r\n")
        self.assertEqual(backend.said(), [b"XCLIENT ADDR=203.0.113.9 PORT=40123"])
        backend.answer(b"220 mx ESMTP\r\n")
        [auth] = backend.said()
        self.assertTrue(auth.startswith(b"AUTH PLAIN "), auth)

    def test_heloNotOffered(self) -> None:
        """
        A backend whose XCLIENT takes no C{HELO}: the address, then the
        gateway's EHLO, as before.
        """
        backend, d = self.start(helo=b"laptop.example")
        backend.answer(b"250-mx.example\r\n250-AUTH PLAIN\r\n250 XCLIENT ADDR PORT\r\n")
        self.assertEqual(backend.said(), [b"XCLIENT ADDR=203.0.113.9 PORT=40123"])
        backend.answer(b"220 mx ESMTP\r\n")
        self.assertEqual(backend.said(), [b"EHLO gw.example"])

    def test_noXClientWhenNotOffered(self) -> None:
        backend, d = self.start()
        backend.answer(b"250-mx.example\r\n250 AUTH PLAIN\r\n")
        [auth] = backend.said()
        self.assertTrue(auth.startswith(b"AUTH PLAIN "))
        backend.answer(b"235 2.7.0 Authentication successful\r\n")
        self.successResultOf(d)

    def test_wrongPassword(self) -> None:
        """
        Postfix's 535 is a refusal; the connection is closed with QUIT.
        """
        backend, d = self.start()
        backend.answer(b"250-mx.example\r\n250 AUTH PLAIN\r\n")
        backend.said()
        backend.answer(b"535 5.7.8 Error: authentication failed: (reason unavailable)\r\n")
        self.failureResultOf(d, UnauthorizedLogin)
        self.assertEqual(backend.transport.value(), b"QUIT\r\n")
        self.assertTrue(backend.transport.disconnecting)

    def test_temporaryFailures(self) -> None:
        """
        A 454 at AUTH, no AUTH PLAIN, or no STARTTLS while
        C{backend_starttls} is set: temporary failures, never a refusal.
        """
        backend, d = self.start()
        backend.answer(b"250-mx.example\r\n250 AUTH PLAIN\r\n")
        backend.answer(b"454 4.7.0 Temporary authentication failure\r\n")
        self.failureResultOf(d, BackendUnavailable)

        backend, d = self.start()
        backend.answer(b"250-mx.example\r\n250 AUTH LOGIN\r\n")
        self.failureResultOf(d, BackendUnavailable)
        self.assertTrue(backend.transport.disconnecting)

        backend, d = self.start(starttls=True)
        backend.answer(b"250-mx.example\r\n250 AUTH PLAIN\r\n")
        self.failureResultOf(d, BackendUnavailable)
        self.assertEqual(backend.said(), [])

    def test_closedDuringLogin(self) -> None:
        backend, d = self.start()
        backend.protocol.connectionLost()
        self.failureResultOf(d, BackendUnavailable)
