"""
Tests for L{clientid_twisted.server.delivery}: local maildir delivery for
the submission server.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from zope.interface import Interface
from zope.interface.verify import verifyObject

from twisted.cred.portal import IRealm
from twisted.internet.task import Clock
from twisted.mail import smtp
from twisted.mail.interfaces import IMessageDelivery, IMessageDeliveryFactory
from twisted.mail.interfaces import IMessageSMTP
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from clientid_twisted.server.delivery import (
    MailRealm,
    MaildirMessageWriter,
    SubmissionDelivery,
    maildirPath,
)
from clientid_twisted.server.users import AliasDatabase, InvalidAddress, UserDatabase, usersPath
from clientid_twisted.testing import LineExchange, connectedTransport

NOW = 1700000000.25


def _address(raw: bytes) -> smtp.Address:
    address = smtp.Address(b"x@example.org")
    address.local, _, address.domain = raw.rpartition(b"@")
    return address


def recipient(address: bytes) -> smtp.User:
    return smtp.User(
        address, (b"client.example", b"192.0.2.7"), None, b"sender@example.org"
    )


class DeliveryTestMixin:
    """
    A data directory with one account, alice@example.org.
    """

    def setUp(self) -> None:
        self.dataDir = Path(self.mktemp())  # type: ignore[attr-defined]
        self.users = UserDatabase(usersPath(self.dataDir))
        self.users.addUser("alice@example.org", "pw")
        self.clock = Clock()
        self.clock.advance(NOW)
        self.delivery = SubmissionDelivery(
            self.dataDir,
            self.users,
            "mx.example.net",
            "bob@example.org",
            clock=self.clock,
        )
        self.maildir = maildirPath(self.dataDir, "alice@example.org")

    def names(self, subdirectory: str) -> list[str]:
        return sorted(os.listdir(self.maildir / subdirectory))


class MaildirPathTests(SynchronousTestCase):
    def test_path(self) -> None:
        self.assertEqual(
            maildirPath(Path("/data"), "Alice@Example.ORG"),
            Path("/data/mail/alice@example.org"),
        )

    def test_neverOutside(self) -> None:
        for address in ["../../etc@x", "a/b@example.org", "..", "alice"]:
            with self.subTest(address=address):
                self.assertRaises(InvalidAddress, maildirPath, Path("/data"), address)


class RealmTests(DeliveryTestMixin, SynchronousTestCase):
    def setUp(self) -> None:
        DeliveryTestMixin.setUp(self)
        self.realm = MailRealm(
            self.dataDir, self.users, "mx.example.net", clock=self.clock
        )

    def test_interface(self) -> None:
        self.assertTrue(verifyObject(IRealm, self.realm))

    def test_messageDelivery(self) -> None:
        """
        Asked as C{twisted.mail.smtp.ESMTP} asks (the factory interface
        first), the realm gives an L{IMessageDelivery} for the account.
        """
        interface, avatar, logout = self.realm.requestAvatar(
            b"alice@example.org", None, IMessageDeliveryFactory, IMessageDelivery
        )
        self.assertIs(interface, IMessageDelivery)
        self.assertIsInstance(avatar, SubmissionDelivery)
        self.assertTrue(verifyObject(IMessageDelivery, avatar))
        self.assertEqual(avatar.avatarId, "alice@example.org")
        self.assertEqual(avatar.hostname, "mx.example.net")
        self.assertIsNone(logout())

    def test_mailAccount(self) -> None:
        """
        IMAP gets a Maildir account over the maildir SMTP delivers into.
        """
        from twisted.mail.imap4 import IAccount

        from clientid_twisted.server.mailbox import MaildirAccount

        interface, avatar, logout = self.realm.requestAvatar(
            b"Alice@example.org", None, IAccount
        )
        self.assertIs(interface, IAccount)
        self.assertIsInstance(avatar, MaildirAccount)
        self.assertEqual(avatar.root, maildirPath(self.dataDir, "alice@example.org"))
        self.assertIsNone(logout())

    def test_otherInterface(self) -> None:
        class IOther(Interface):
            pass

        self.assertRaises(
            NotImplementedError,
            self.realm.requestAvatar,
            b"alice@example.org",
            None,
            IOther,
        )

    def test_extensible(self) -> None:
        """
        Another protocol adds its avatar with one entry.
        """

        class IOther(Interface):
            pass

        avatar = object()
        self.realm.avatarFactories[IOther] = lambda avatarId, mind: (
            avatar,
            lambda: None,
        )
        interface, got, logout = self.realm.requestAvatar(b"a@b.example", None, IOther)
        self.assertIs(interface, IOther)
        self.assertIs(got, avatar)


class ReceivedHeaderTests(DeliveryTestMixin, SynchronousTestCase):
    def test_interface(self) -> None:
        self.assertTrue(verifyObject(IMessageDelivery, self.delivery))

    def test_header(self) -> None:
        header = self.delivery.receivedHeader(
            (b"client.example", b"192.0.2.7"),
            smtp.Address(b"bob@example.org"),
            [recipient(b"alice@example.org")],
        )
        date = smtp.rfc822date(time.localtime(NOW))
        self.assertEqual(
            header,
            b"Received: from client.example ([192.0.2.7])\n"
            b"\t(Authenticated sender: bob@example.org)\n"
            b"\tby mx.example.net with ESMTPSA\n"
            b"\tfor <alice@example.org>; " + date,
        )

    def test_noLoginNoAuthenticatedSender(self) -> None:
        """
        The authenticated identity is named only when there is one (a
        policy notice, say, has none).
        """
        delivery = SubmissionDelivery(self.dataDir, self.users, "mx.example.net", clock=self.clock)
        header = delivery.receivedHeader(
            (b"client.example", b"192.0.2.7"),
            smtp.Address(b"bob@example.org"),
            [recipient(b"alice@example.org")],
        )
        self.assertNotIn(b"Authenticated", header)

    def test_transactionWithSeveralRecipients(self) -> None:
        """
        Twisted asks for the header one recipient at a time; when the
        transaction has several, none is named (they share one copy).
        """
        self.users.addUser("carol@example.org", "pw")
        self.delivery.validateFrom((b"c", b"192.0.2.7"), smtp.Address(b"bob@example.org"))
        for address in (b"alice@example.org", b"carol@example.org"):
            self.delivery.validateTo(recipient(address))
        header = self.delivery.receivedHeader(
            (b"client.example", b"192.0.2.7"),
            smtp.Address(b"bob@example.org"),
            [recipient(b"alice@example.org")],
        )
        self.assertNotIn(b"for <", header)

    def test_ipv6(self) -> None:
        header = self.delivery.receivedHeader(
            (b"client.example", b"2001:db8::7"),
            smtp.Address(b"bob@example.org"),
            [recipient(b"alice@example.org")],
        )
        self.assertIn(b"from client.example ([IPv6:2001:db8::7])", header)

    def test_severalRecipientsNotNamed(self) -> None:
        """
        Every copy would otherwise show all recipients (Bcc included).
        """
        header = self.delivery.receivedHeader(
            (b"client.example", b"192.0.2.7"),
            smtp.Address(b"bob@example.org"),
            [recipient(b"alice@example.org"), recipient(b"carol@example.org")],
        )
        self.assertNotIn(b"for", header)
        self.assertNotIn(b"alice", header)
        self.assertIn(b"with ESMTPSA; ", header)

    def test_heloCannotInjectHeaders(self) -> None:
        """
        A HELO argument with a bare LF (not a line end to Twisted) cannot
        add lines to the stored message.
        """
        header = self.delivery.receivedHeader(
            (b"x\nX-Forged: yes (", b"192.0.2.7"),
            smtp.Address(b"bob@example.org"),
            [recipient(b"alice@example.org")],
        )
        self.assertEqual(header.count(b"\n"), 3)
        self.assertEqual(header.count(b"\n\t"), 3)
        self.assertIn(b"from [192.0.2.7] ([192.0.2.7] helo=x?X-Forged:?yes??)", header)


class ValidateTests(DeliveryTestMixin, SynchronousTestCase):
    def test_validateFrom(self) -> None:
        origin = smtp.Address(b"anyone@elsewhere.example")
        self.assertIs(self.delivery.validateFrom((b"c", b"192.0.2.7"), origin), origin)

    def test_senderOwnership(self) -> None:
        """
        With C{senders}, MAIL FROM must be the login's own address (any
        case), one of its aliases (file or configuration), or the null
        sender; anything else is C{553 5.7.1}.
        """
        aliases = AliasDatabase(self.dataDir / "aliases.json", {"sales@example.org": "bob@example.org"})
        aliases.addAlias("Bob.Smith@example.org", "bob@example.org")
        aliases.addAlias("alice.a@example.org", "alice@example.org")
        delivery = SubmissionDelivery(
            self.dataDir, self.users, "mx.example.net", "bob@example.org",
            clock=self.clock, senders=aliases,
        )
        helo = (b"c", b"192.0.2.7")
        for owned in (b"bob@example.org", b"BOB@Example.org", b"bob.smith@example.org",
                      b"sales@example.org", b""):
            origin = smtp.Address(owned)
            self.assertIs(delivery.validateFrom(helo, origin), origin)
        for foreign in (b"alice@example.org", b"alice.a@example.org", b"bob@elsewhere.example",
                        b"bob\xff@example.org"):
            e = self.assertRaises(
                smtp.SMTPServerError, delivery.validateFrom, helo, _address(foreign)
            )
            self.assertEqual((e.code, e.resp), (553, "5.7.1 Sender address rejected: not owned by user"))

    def test_senderOwnershipOverSMTP(self) -> None:
        """
        The reply a client sees, and the session goes on.
        """
        protocol = smtp.ESMTP()
        protocol.delivery = SubmissionDelivery(
            self.dataDir, self.users, "mx.example.net", "bob@example.org",
            clock=self.clock, senders=AliasDatabase(self.dataDir / "aliases.json"),
        )
        client = LineExchange(protocol, connectedTransport(protocol, secure=True))
        client.exchange(b"EHLO client.example")
        self.assertEqual(
            client.exchange(b"MAIL FROM:<alice@example.org>"),
            b"553 5.7.1 Sender address rejected: not owned by user\r\n",
        )
        self.assertTrue(client.exchange(b"MAIL FROM:<bob@example.org>").startswith(b"250"))

    def test_unknownRecipient(self) -> None:
        """
        Not a relay: only local accounts are accepted.
        """
        notAscii = recipient(b"alice@example.org")
        notAscii.dest.local = b"alice\xff"
        for user in [
            recipient(b"carol@example.org"),
            recipient(b"alice@elsewhere.example"),
            recipient(b"alice@example.org.elsewhere.example"),
            notAscii,
        ]:
            with self.subTest(user=bytes(user)):
                e = self.assertRaises(smtp.SMTPBadRcpt, self.delivery.validateTo, user)
                self.assertEqual(e.code, 550)

    def test_caseInsensitive(self) -> None:
        factory = self.delivery.validateTo(recipient(b"ALICE@Example.Org"))
        message = factory()
        message.lineReceived(b"hi")
        self.successResultOf(message.eomReceived())
        self.assertEqual(len(self.names("new")), 1)

    def test_corruptDatabase(self) -> None:
        self.users.path.write_text("{")
        e = self.assertRaises(
            smtp.SMTPServerError,
            self.delivery.validateTo,
            recipient(b"alice@example.org"),
        )
        self.assertEqual(e.code, 451)


class MessageTests(DeliveryTestMixin, SynchronousTestCase):
    def startMessage(self) -> Any:
        return self.delivery.validateTo(recipient(b"alice@example.org"))()

    def test_interface(self) -> None:
        self.assertTrue(verifyObject(IMessageSMTP, self.startMessage()))

    def test_createsMaildir(self) -> None:
        self.assertFalse(self.maildir.exists())
        message = self.startMessage()
        for name in ["new", "cur", "tmp"]:
            self.assertTrue((self.maildir / name).is_dir())
        message.connectionLost()

    def test_partlyCreatedMaildir(self) -> None:
        """
        A maildir whose top directory exists but whose C{tmp/} does not yet
        (another writer is creating it) still takes the message.
        """
        self.maildir.mkdir(parents=True)
        message = self.startMessage()
        message.lineReceived(b"Subject: race")
        final = self.successResultOf(message.eomReceived())
        self.assertEqual(final.parent, self.maildir / "new")
        for sub in ("cur", "new", "tmp"):
            self.assertTrue((self.maildir / sub).is_dir())

    def test_delivered(self) -> None:
        """
        The message is written to tmp/ and appears complete in new/.
        """
        message = self.startMessage()
        self.assertIsInstance(message, MaildirMessageWriter)
        message.lineReceived(b"Subject: hello")
        message.lineReceived(b"")
        message.lineReceived(b"body")
        self.assertEqual(self.names("new"), [])
        self.assertEqual(len(self.names("tmp")), 1)
        final = self.successResultOf(message.eomReceived())
        self.assertEqual(self.names("tmp"), [])
        [name] = self.names("new")
        self.assertEqual(final, self.maildir / "new" / name)
        self.assertEqual(final.read_bytes(), b"Subject: hello\r\n\r\nbody\r\n")
        self.assertEqual(os.stat(final).st_mode & 0o777, 0o600)

    def test_bareLineFeedsBecomeCRLF(self) -> None:
        """
        IMAP serves the file as it is, so every line end is stored as CRLF,
        also a bare LF inside a received line.
        """
        message = self.startMessage()
        message.lineReceived(b"Received: a\n\tb")
        message.lineReceived(b"X: bare\nline\r")
        final = self.successResultOf(message.eomReceived())
        self.assertEqual(final.read_bytes(), b"Received: a\r\n\tb\r\nX: bare\r\nline\r\n")

    def test_syncedBeforeVisible(self) -> None:
        """
        The message is on disk before it appears in new/, so a crash never
        leaves a truncated message there.
        """
        from clientid_twisted.server import delivery as deliveryModule

        calls: list[str] = []
        realFsync, realLink = os.fsync, os.link

        def fsync(fd: int) -> None:
            calls.append("fsync")
            realFsync(fd)

        def link(source: Any, destination: Any) -> None:
            calls.append("link")
            realLink(source, destination)

        self.patch(deliveryModule.os, "fsync", fsync)
        self.patch(deliveryModule.os, "link", link)
        message = self.startMessage()
        message.lineReceived(b"x")
        self.successResultOf(message.eomReceived())
        self.assertEqual(calls[:2], ["fsync", "link"])

    def test_uniqueNames(self) -> None:
        """
        Messages in the same microsecond, from separate sessions, get
        separate files.
        """
        other = SubmissionDelivery(
            self.dataDir, self.users, "mx.example.net", clock=self.clock
        )
        for delivery in [self.delivery, other, self.delivery]:
            message = delivery.validateTo(recipient(b"alice@example.org"))()
            message.lineReceived(b"x")
            self.successResultOf(message.eomReceived())
        self.assertEqual(len(self.names("new")), 3)

    def test_connectionLost(self) -> None:
        message = self.startMessage()
        message.lineReceived(b"partial")
        self.assertEqual(len(self.names("tmp")), 1)
        message.connectionLost()
        self.assertEqual(self.names("tmp"), [])
        self.assertEqual(self.names("new"), [])


class ProtocolTests(DeliveryTestMixin, SynchronousTestCase):
    """
    Twisted's SMTP server drives the delivery as the submission server will.
    """

    def setUp(self) -> None:
        DeliveryTestMixin.setUp(self)
        protocol = smtp.ESMTP()
        protocol.delivery = self.delivery
        self.client = LineExchange(protocol, connectedTransport(protocol, secure=True))
        self.client.exchange(b"EHLO client.example")
        self.client.exchange(b"MAIL FROM:<bob@example.org>")

    def test_deliveredWithReceivedFirst(self) -> None:
        self.assertTrue(
            self.client.exchange(b"RCPT TO:<Alice@example.org>").startswith(b"250")
        )
        self.assertTrue(self.client.exchange(b"DATA").startswith(b"354"))
        self.client.send(b"Subject: hi\r\n\r\n..dot\r\nbody\r\n")
        self.assertTrue(self.client.exchange(b".").startswith(b"250"))
        self.assertEqual(self.names("tmp"), [])
        [name] = self.names("new")
        content = (self.maildir / "new" / name).read_bytes()
        self.assertNotIn(b"\n", content.replace(b"\r\n", b""), "only CRLF line ends")
        lines = content.split(b"\r\n")
        self.assertEqual(lines[0], b"Received: from client.example ([192.0.2.7])")
        self.assertEqual(lines[1], b"\t(Authenticated sender: bob@example.org)")
        self.assertEqual(lines[2], b"\tby mx.example.net with ESMTPSA")
        self.assertTrue(lines[3].startswith(b"\tfor <Alice@example.org>; "), lines[3])
        self.assertEqual(lines[4:], [b"Subject: hi", b"", b".dot", b"body", b""])

    def test_relayRefused(self) -> None:
        reply = self.client.exchange(b"RCPT TO:<someone@elsewhere.example>")
        self.assertTrue(reply.startswith(b"550"), reply)
        self.assertFalse(self.maildir.exists())

    def test_connectionLostMidMessage(self) -> None:
        self.client.exchange(b"RCPT TO:<alice@example.org>")
        self.client.exchange(b"DATA")
        self.client.send(b"Subject: hi\r\n")
        self.client.protocol.connectionLost(Failure(Exception("gone")))
        self.assertEqual(self.names("tmp"), [])
        self.assertEqual(self.names("new"), [])
