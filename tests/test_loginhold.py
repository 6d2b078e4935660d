"""
Tests for L{clientid_twisted._loginhold}: the one mechanism that holds
the commands pipelined behind a login.  The same test body runs against
the SMTP and the IMAP server protocol, each over a L{StringTransport}
with a checker whose answer the test gives by hand.
"""

from __future__ import annotations

from typing import Any

from zope.interface import implementer

from twisted.cred.portal import IRealm, Portal
from twisted.internet.error import ConnectionDone
from twisted.mail import imap4, smtp
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from clientid_twisted._fingerprint import IdentityHasher
from clientid_twisted._loginhold import LoginHoldMixin
from clientid_twisted.imap import ClientIDIMAP4Factory
from clientid_twisted.smtp import ClientIDESMTPFactory
from clientid_twisted.testing import connectedTransport
from tests.loginfakes import RecordingChecker, RefusingDelivery, plain


@implementer(IRealm)
class _Realm:
    def requestAvatar(self, avatarId: Any, mind: Any, *interfaces: Any) -> Any:
        if smtp.IMessageDelivery in interfaces:
            return smtp.IMessageDelivery, RefusingDelivery(), lambda: None
        return imap4.IAccount, imap4.MemoryAccount(avatarId), lambda: None


class _LoginHoldTests:
    """
    The shared body.  A subclass builds C{self.protocol} and
    C{self.transport} (a session ready to log in) and says how its
    protocol spells a login, two harmless commands, a command that ends
    the session, and their replies.
    """

    protocol: Any
    transport: Any
    checker: RecordingChecker
    assertEqual: Any
    assertIn: Any
    assertNotIn: Any
    assertIsInstance: Any
    assertIsNone: Any

    def setUp(self) -> None:
        self.checker = RecordingChecker()
        self.checker.mode = "later"
        self.portal = Portal(_Realm(), [self.checker])
        self.connect()
        self.transport.clear()

    def connect(self) -> None:
        factory = self.makeFactory()
        factory.identityHasher = IdentityHasher(b"k" * 32)
        self.protocol = factory.buildProtocol(None)
        self.transport = connectedTransport(self.protocol, secure=True)
        for line in self.greeting:
            self.protocol.dataReceived(line + b"\r\n")

    def makeFactory(self) -> Any:
        raise NotImplementedError

    # What the client says before it logs in.
    greeting: tuple[bytes, ...] = ()

    def login(self, password: bytes) -> bytes:
        raise NotImplementedError

    # Lines and the reply each gives (a prefix of its last line).
    first: tuple[bytes, bytes]
    second: tuple[bytes, bytes]
    leave: tuple[bytes, bytes]
    loginOK: bytes
    loginFailed: bytes

    def replies(self) -> list[bytes]:
        return self.transport.value().splitlines()

    def assertRepliesStartWith(self, prefixes: list[bytes]) -> None:
        """
        The protocol's replies so far, in order, are the ones that start
        with C{prefixes} (untagged IMAP lines aside).
        """
        lines = [line for line in self.replies() if not line.startswith(b"* ")]
        self.assertEqual(
            [line[: len(prefix)] for line, prefix in zip(lines, prefixes)], prefixes
        )
        self.assertEqual(len(lines), len(prefixes), lines)

    def test_sameMechanism(self) -> None:
        """
        Both protocols hold lines with L{LoginHoldMixin}, in C{blocked}.
        """
        self.assertIsInstance(self.protocol, LoginHoldMixin)
        self.protocol.dataReceived(self.login(b"secret") + self.first[0] + b"\r\n")
        self.assertEqual(self.protocol.blocked, [self.first[0]])
        self.assertEqual(self.protocol.heldInputBytes(), len(self.first[0]))

    def test_heldUntilReplied(self) -> None:
        """
        Commands pipelined behind a login run after its reply, in order.
        """
        self.protocol.dataReceived(
            self.login(b"secret") + self.first[0] + b"\r\n" + self.second[0] + b"\r\n"
        )
        self.assertEqual(self.transport.value(), b"")
        self.assertEqual(len(self.checker.pending), 1)
        self.checker.pending[0].callback(None)
        self.assertRepliesStartWith([self.loginOK, self.first[1], self.second[1]])
        self.assertIsNone(self.protocol.blocked)

    def test_secondLoginHoldsTheRest(self) -> None:
        """
        A held login starts another hold: what follows it waits for its
        answer, not just for the first login's.
        """
        self.protocol.dataReceived(
            self.login(b"wrong") + self.login(b"secret") + self.first[0] + b"\r\n"
        )
        self.checker.pending[0].callback(None)
        self.assertRepliesStartWith([self.loginFailed])
        self.assertEqual(len(self.checker.pending), 2)
        self.assertEqual(self.protocol.blocked, [self.first[0]])
        self.checker.pending[1].callback(None)
        self.assertRepliesStartWith([self.loginFailed, self.loginOK, self.first[1]])

    def test_nothingAfterLeaving(self) -> None:
        """
        Once a held command ends the session, the lines held behind it
        do not run.
        """
        self.protocol.dataReceived(
            self.login(b"secret")
            + self.first[0] + b"\r\n"
            + self.leave[0] + b"\r\n"
            + self.second[0] + b"\r\n"
        )
        self.checker.pending[0].callback(None)
        self.assertRepliesStartWith([self.loginOK, self.first[1], self.leave[1]])

    def test_nothingAfterConnectionLost(self) -> None:
        """
        Lines held when the connection is lost never run.
        """
        self.protocol.dataReceived(self.login(b"secret") + self.first[0] + b"\r\n")
        self.protocol.connectionLost(Failure(ConnectionDone()))
        self.checker.pending[0].callback(None)
        for line in self.replies():
            self.assertNotIn(self.first[1], line)


class SMTPLoginHoldTests(_LoginHoldTests, SynchronousTestCase):
    first, second, leave = (b"RSET", b"250 I remember"), (b"XNOSUCH", b"500 "), (b"QUIT", b"221 ")
    loginOK, loginFailed = b"235 ", b"535 "
    greeting = (b"EHLO client.example.net",)

    def makeFactory(self) -> Any:
        factory = ClientIDESMTPFactory(self.portal, context=object())
        factory.domain = b"mx.example.test"
        return factory

    def login(self, password: bytes) -> bytes:
        return b"AUTH PLAIN " + plain(b"alice", password) + b"\r\n"


class IMAPLoginHoldTests(_LoginHoldTests, SynchronousTestCase):
    first, second, leave = (b"a NOOP", b"a OK"), (b"b NOOP", b"b OK"), (b"q LOGOUT", b"q OK")
    loginOK, loginFailed = b"l OK", b"l NO"

    def makeFactory(self) -> Any:
        return ClientIDIMAP4Factory(self.portal, context=object())

    def login(self, password: bytes) -> bytes:
        return b"l LOGIN alice " + password + b"\r\n"
