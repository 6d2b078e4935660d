"""
Tests for L{clientid_twisted.server.mailbox}: IMAP folders and messages
over Maildir, alone and under Twisted's real L{imap4.IMAP4Server}.
"""

from __future__ import annotations

import calendar
import email.utils
import itertools
import json
import os
import time
from io import BytesIO
from pathlib import Path
from typing import Any

from zope.interface import implementer
from zope.interface.verify import verifyObject

from twisted.cred.checkers import InMemoryUsernamePasswordDatabaseDontUse
from twisted.cred.portal import IRealm, Portal
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.logger import globalLogPublisher
from twisted.mail import imap4
from twisted.mail.interfaces import (
    IAccountIMAP,
    ICloseableMailboxIMAP,
    IMailboxIMAP,
    IMailboxIMAPInfo,
    IMailboxIMAPListener,
    IMessageIMAP,
    IMessageIMAPCopier,
    IMessageIMAPFile,
    IMessageIMAPPart,
    INamespacePresenter,
    ISearchableIMAPMailbox,
)
from twisted.trial.unittest import SkipTest, SynchronousTestCase

from clientid_twisted.server import mailbox
from clientid_twisted.testing import synchronousScheduler
from clientid_twisted.server.mailbox import (
    SUBSCRIPTIONS,
    UIDLIST,
    IMailboxIMAPExpungeListener,
    InvalidMailboxName,
    MaildirAccount,
    MaildirMailbox,
    MaildirMailboxInfo,
)

MESSAGE = (
    b"From: Alice <alice@example.org>\r\n"
    b"To: Bob <bob@example.org>\r\n"
    b"Subject: Lunch on Friday\r\n"
    b"Date: Tue, 14 Nov 2023 22:13:20 +0000\r\n"
    b"\r\n"
    b"Shall we try the new place?\r\n"
    b"-- \r\n"
    b"Alice\r\n"
)

MULTIPART = (
    b"Subject: parts\n"
    b"Content-Type: multipart/mixed; boundary=XYZ\n"
    b"\n"
    b"preamble\n"
    b"--XYZ\n"
    b"Content-Type: text/plain\n"
    b"\n"
    b"part one\n"
    b"--XYZ\n"
    b"Content-Type: message/rfc822\n"
    b"\n"
    b"Subject: inner\n"
    b"\n"
    b"inner body\n"
    b"--XYZ--\n"
)

_deliveries = itertools.count(1)


def deliver(maildir: Path, data: bytes = MESSAGE) -> str:
    """
    Deliver as the SMTP side does: write to C{tmp/}, rename into C{new/}.
    """
    n = next(_deliveries)
    name = "%d.M%06dP4242Q%d.test.example" % (1700000000 + n, n, n)
    (maildir / "tmp" / name).write_bytes(data)
    os.rename(maildir / "tmp" / name, maildir / "new" / name)
    return name


def every(last: bytes = b"1:*") -> imap4.MessageSet:
    return imap4.parseIdList(last)


def flagsOf(box: MaildirMailbox) -> dict[int, list[str]]:
    return {seq: list(message.getFlags()) for seq, message in box.fetch(every(), False)}


def uidsOf(box: MaildirMailbox) -> list[int]:
    return [message.getUID() for _, message in box.fetch(every(), False)]


def captureEvents(case: SynchronousTestCase) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    globalLogPublisher.addObserver(events.append)
    case.addCleanup(globalLogPublisher.removeObserver, events.append)
    return events


def backdate(*paths: Path, seconds: float = 60) -> None:
    then = time.time() - seconds
    for path in paths:
        os.utime(path, (then, then))


@implementer(IMailboxIMAPListener)
class RecordingListener:
    def __init__(self) -> None:
        self.events: list[tuple[Any, ...]] = []

    def modeChanged(self, writeable: bool) -> None:
        self.events.append(("modeChanged", writeable))

    def flagsChanged(self, newFlags: dict[int, list[str]]) -> None:
        self.events.append(("flagsChanged", newFlags))

    def newMessages(self, exists: int | None, recent: int | None) -> None:
        self.events.append(("newMessages", exists, recent))


@implementer(IMailboxIMAPExpungeListener)
class ExpungeRecordingListener(RecordingListener):
    def expunged(self, sequenceNumbers: list[int]) -> None:
        self.events.append(("expunged", list(sequenceNumbers)))


class AccountMixin:
    """
    An account at C{DATA_DIR/mail/alice@example.org}, as the server lays it
    out.
    """

    def setUp(self) -> None:
        self.root = Path(self.mktemp()) / "mail" / "alice@example.org"  # type: ignore[attr-defined]
        self.account = MaildirAccount(self.root)

    def restart(self) -> MaildirAccount:
        return MaildirAccount(self.root)

    def append(
        self,
        box: MaildirMailbox,
        data: bytes = MESSAGE,
        flags: Any = (),
        date: Any = None,
    ) -> int:
        return self.successResultOf(box.addMessage(BytesIO(data), flags, date))  # type: ignore[attr-defined,no-any-return]

    def inbox(self, rw: bool = True) -> MaildirMailbox:
        box = self.account.select("INBOX", rw)
        assert box is not None
        return box


class InterfaceTests(AccountMixin, SynchronousTestCase):
    def test_account(self) -> None:
        self.assertTrue(verifyObject(IAccountIMAP, self.account))
        self.assertTrue(verifyObject(INamespacePresenter, self.account))

    def test_mailbox(self) -> None:
        box = self.inbox()
        for interface in (
            IMailboxIMAP,
            IMailboxIMAPInfo,
            ISearchableIMAPMailbox,
            IMessageIMAPCopier,
            ICloseableMailboxIMAP,
        ):
            self.assertTrue(verifyObject(interface, box), interface)

    def test_info(self) -> None:
        [(name, info)] = self.account.listMailboxes("", "INBOX")
        self.assertIsInstance(info, MaildirMailboxInfo)
        self.assertTrue(verifyObject(IMailboxIMAPInfo, info))

    def test_message(self) -> None:
        box = self.inbox()
        self.append(box, MULTIPART)
        [(_, message)] = box.fetch(every(), False)
        self.assertTrue(verifyObject(IMessageIMAP, message))
        self.assertTrue(verifyObject(IMessageIMAPFile, message))
        self.assertTrue(verifyObject(IMessageIMAPPart, message.getSubPart(0)))

    def test_expungeListener(self) -> None:
        """
        The expunge listener is a Twisted listener with one more event.
        """
        self.assertTrue(IMailboxIMAPExpungeListener.extends(IMailboxIMAPListener))
        self.assertTrue(
            verifyObject(IMailboxIMAPExpungeListener, ExpungeRecordingListener())
        )

    def test_namespaces(self) -> None:
        self.assertEqual(self.account.getPersonalNamespaces(), [[b"", b"/"]])
        self.assertIsNone(self.account.getSharedNamespaces())
        self.assertIsNone(self.account.getUserNamespaces())


class FolderTests(AccountMixin, SynchronousTestCase):
    def test_rootIsMaildir(self) -> None:
        """
        The account directory is made a maildir (it is the INBOX).
        """
        for sub in ("cur", "new", "tmp"):
            self.assertTrue((self.root / sub).is_dir())

    def test_inboxCaseInsensitive(self) -> None:
        box = self.account.select("inbox")
        self.assertIsNotNone(box)
        self.assertEqual(box.name, "INBOX")
        self.assertEqual(box.path, self.root)

    def test_createWithParents(self) -> None:
        self.assertTrue(self.account.create("Work/2024/Q1"))
        for directory in (".Work", ".Work.2024", ".Work.2024.Q1"):
            for sub in ("cur", "new", "tmp"):
                self.assertTrue((self.root / directory / sub).is_dir(), directory)
            self.assertTrue((self.root / directory / "maildirfolder").exists())
        self.assertIsNotNone(self.account.select("Work/2024"))

    def test_createUnderInbox(self) -> None:
        self.account.create("inbox/Receipts")
        self.assertTrue((self.root / ".INBOX.Receipts" / "cur").is_dir())
        self.assertFalse((self.root / ".INBOX").exists())
        self.assertIsNotNone(self.account.select("INBOX/Receipts"))

    def test_createExisting(self) -> None:
        self.account.create("Work")
        self.assertRaises(imap4.MailboxCollision, self.account.create, "Work")
        self.assertRaises(imap4.MailboxCollision, self.account.create, "INBOX")

    def test_createTrailingDelimiter(self) -> None:
        """
        RFC 3501 section 6.3.3: C{CREATE Lists/} creates C{Lists}.
        """
        self.account.create("Lists/")
        self.assertTrue((self.root / ".Lists" / "cur").is_dir())

    def test_addMailbox(self) -> None:
        self.assertTrue(self.account.addMailbox("Drafts"))
        self.assertIsNotNone(self.account.select("Drafts"))
        self.assertRaises(
            imap4.MailboxException, self.account.addMailbox, "Other", object()
        )

    def test_encodedOnDisk(self) -> None:
        """
        Names are modified UTF-7 on disk, with C{.} encoded since it is the
        disk's delimiter; they list as they were given.
        """
        names = {
            "Mr. Smith": ".Mr&AC4- Smith",
            "Entw\u00fcrfe": ".Entw&APw-rfe",
            "A&B": ".A&-B",
        }
        for name, directory in names.items():
            self.account.create(name)
            self.assertTrue((self.root / directory / "cur").is_dir(), directory)
        listed = [name for name, _ in self.account.listMailboxes("", "*")]
        self.assertEqual(sorted(listed), sorted(["INBOX", *names]))
        for name in names:
            self.assertEqual(self.account.select(name).name, name)

    def test_badNames(self) -> None:
        """
        Names that would escape the account, collide with the layout or be
        unsafe on disk are refused with a reason, and nothing is made.
        """
        before = sorted(os.listdir(self.root))
        for name in [
            "",
            "/Work",
            "Work//",
            "Work//2024",
            "..",
            "Work/../x",
            "Work/./x",
            ".",
            "tab\there",
            "nul\x00",
            "back\\slash",
            "star*",
            "per%cent",
            "x" * 300,
            "lone\ud800surrogate",
        ]:
            with self.subTest(name=name):
                error = self.assertRaises(InvalidMailboxName, self.account.create, name)
                self.assertIsInstance(error, imap4.MailboxException)
                self.assertTrue(str(error))
                self.assertIsNone(self.account.select(name))
        # Only CREATE takes one trailing delimiter (RFC 3501 section 6.3.3).
        self.assertRaises(InvalidMailboxName, self.account.subscribe, "Work/")
        self.assertRaises(InvalidMailboxName, self.account.delete, "Work/")
        self.assertEqual(sorted(os.listdir(self.root)), before)
        self.assertEqual(sorted(os.listdir(self.root.parent)), ["alice@example.org"])

    def test_selectMissing(self) -> None:
        self.assertIsNone(self.account.select("Nothing"))

    def test_listWildcards(self) -> None:
        for name in ["Work/2024/Q1", "Personal", "INBOX/Sub"]:
            self.account.create(name)

        def names(ref: str, pattern: str) -> list[str]:
            return [name for name, _ in self.account.listMailboxes(ref, pattern)]

        self.assertEqual(
            names("", "*"),
            ["INBOX", "INBOX/Sub", "Personal", "Work", "Work/2024", "Work/2024/Q1"],
        )
        self.assertEqual(names("", "%"), ["INBOX", "Personal", "Work"])
        self.assertEqual(names("Work/", "%"), ["Work/2024"])
        self.assertEqual(names("", "Work/*"), ["Work/2024", "Work/2024/Q1"])
        self.assertEqual(names("", "W%/%"), ["Work/2024"])
        self.assertEqual(names("", "inbox"), ["INBOX"])
        self.assertEqual(names("", "inbox/%"), ["INBOX/Sub"])
        self.assertEqual(names("", "work"), [], "only INBOX is case-insensitive")

    def test_listAttributes(self) -> None:
        self.account.create("Work/2024")
        self.account.create("Personal")
        attributes = {
            name: info.getFlags() for name, info in self.account.listMailboxes("", "*")
        }
        self.assertEqual(attributes["Work"], ["\\HasChildren"])
        self.assertEqual(attributes["Personal"], ["\\HasNoChildren"])
        self.assertEqual(attributes["INBOX"], ["\\HasNoChildren"])
        self.account.create("INBOX/Receipts")
        [(name, info)] = self.account.listMailboxes("", "INBOX")
        self.assertEqual(info.getFlags(), ["\\HasChildren"])
        [(name, info)] = self.account.listMailboxes("", "Work")
        self.assertEqual(info.getHierarchicalDelimiter(), "/")

    def test_listDelimiter(self) -> None:
        """
        C{LIST "" ""} asks for the delimiter.
        """
        [(name, info)] = self.account.listMailboxes("", "")
        self.assertEqual(
            (name, info.getFlags(), info.getHierarchicalDelimiter()),
            ("", ["\\Noselect"], "/"),
        )

    def test_listImpliedParent(self) -> None:
        """
        A folder made by another tool without its parent lists the parent as
        C{\\Noselect}.
        """
        for sub in ("cur", "new", "tmp"):
            (self.root / ".Orphan.Child" / sub).mkdir(parents=True)
        listed = dict(self.account.listMailboxes("", "*"))
        self.assertEqual(listed["Orphan"].getFlags(), ["\\Noselect", "\\HasChildren"])
        self.assertEqual(listed["Orphan/Child"].getFlags(), ["\\HasNoChildren"])
        self.assertIsNone(self.account.select("Orphan"))

    def test_listIgnoresOthers(self) -> None:
        """
        Only maildirs under names we would write are folders.
        """
        for directory in [
            "clientid-deleted.1234",
            ".INBOX",
            "..Bad",
            ".NotAMaildir",
            ".Lower.&AC4",
        ]:
            (self.root / directory).mkdir()
            if directory != ".NotAMaildir":
                for sub in ("cur", "new", "tmp"):
                    (self.root / directory / sub).mkdir()
        self.assertEqual(
            [name for name, _ in self.account.listMailboxes("", "*")], ["INBOX"]
        )

    def test_rename(self) -> None:
        """
        A folder moves with its subfolders, messages, UIDs and
        subscriptions; missing parents of the new name are made.
        """
        self.account.create("Work/2024")
        self.account.subscribe("Work/2024")
        box = self.account.select("Work/2024")
        uid = self.append(box, MESSAGE, ["\\Seen"])
        validity = box.getUIDValidity()

        self.assertTrue(self.account.rename("Work", "Archive/Old/Work"))

        self.assertEqual(
            [name for name, _ in self.account.listMailboxes("", "*")],
            [
                "INBOX",
                "Archive",
                "Archive/Old",
                "Archive/Old/Work",
                "Archive/Old/Work/2024",
            ],
        )
        moved = self.account.select("Archive/Old/Work/2024")
        self.assertEqual(uidsOf(moved), [uid])
        self.assertEqual(moved.getUIDValidity(), validity)
        self.assertEqual(flagsOf(moved), {1: ["\\Seen"]})
        self.assertTrue(self.account.isSubscribed("Archive/Old/Work/2024"))
        self.assertFalse(self.account.isSubscribed("Work/2024"))
        self.assertIsNone(self.account.select("Work"))

    def test_renameRefused(self) -> None:
        self.account.create("Work")
        self.account.create("Home")
        self.assertRaises(imap4.MailboxCollision, self.account.rename, "Work", "Home")
        self.assertRaises(imap4.NoSuchMailbox, self.account.rename, "Nothing", "Else")
        self.assertRaises(imap4.MailboxException, self.account.rename, "INBOX", "Old")
        self.assertRaises(imap4.MailboxException, self.account.rename, "Work", "INBOX")
        self.assertRaises(
            imap4.MailboxException, self.account.rename, "Work", "Work/Sub"
        )
        self.assertRaises(InvalidMailboxName, self.account.rename, "Work", "Bad/")
        self.assertIsNotNone(self.account.select("Work"))

    def test_delete(self) -> None:
        self.account.create("Old")
        self.append(self.account.select("Old"))
        self.assertTrue(self.account.delete("Old"))
        self.assertIsNone(self.account.select("Old"))
        self.assertEqual(
            sorted(
                p for p in os.listdir(self.root) if not p.startswith("clientid-uid")
            ),
            ["cur", "new", "tmp"],
        )

    def test_deleteRefused(self) -> None:
        """
        INBOX stays; a folder with subfolders stays (delete those first);
        deleting nothing is an error.
        """
        self.account.create("Work/2024")
        self.assertRaises(imap4.MailboxException, self.account.delete, "INBOX")
        error = self.assertRaises(imap4.MailboxException, self.account.delete, "Work")
        self.assertIn("subfolders", str(error))
        self.assertIsNotNone(self.account.select("Work"))
        self.assertRaises(imap4.NoSuchMailbox, self.account.delete, "Nothing")

    def test_uidValidityNeverReused(self) -> None:
        """
        A folder deleted and made again (within one second, even) gets a new
        UIDVALIDITY, so clients drop what they cached.
        """
        self.account.create("Temp")
        first = self.account.select("Temp").getUIDValidity()
        self.account.delete("Temp")
        self.account.create("Temp")
        self.assertGreater(self.account.select("Temp").getUIDValidity(), first)

    def test_subscriptions(self) -> None:
        self.assertTrue(
            self.account.isSubscribed("inbox"), "INBOX is subscribed by default"
        )
        self.account.create("Work")
        self.assertFalse(self.account.isSubscribed("Work"))
        self.account.subscribe("Work")
        self.assertTrue(self.account.isSubscribed("Work"))
        self.assertEqual(
            (self.root / SUBSCRIPTIONS).read_text().splitlines(), ["INBOX", "Work"]
        )
        self.assertTrue(self.restart().isSubscribed("Work"))
        self.account.unsubscribe("Work")
        self.assertFalse(self.restart().isSubscribed("Work"))
        self.assertRaises(imap4.MailboxException, self.account.unsubscribe, "Work")
        self.assertRaises(InvalidMailboxName, self.account.subscribe, "Bad//Name")
        self.assertFalse(self.account.isSubscribed("Bad//Name"))


class MessageTests(AccountMixin, SynchronousTestCase):
    def test_appendFetchExact(self) -> None:
        """
        APPEND writes through C{tmp/} into C{cur/} with the flags in the
        name; FETCH gives back the exact bytes.
        """
        box = self.inbox()
        uid = self.append(box, MESSAGE, ["\\Seen", "\\Flagged", "$Label1"])
        self.assertEqual(uid, 1)
        [name] = os.listdir(self.root / "cur")
        self.assertTrue(name.endswith(":2,FS"), name)
        self.assertEqual(os.listdir(self.root / "tmp"), [])
        self.assertEqual(os.listdir(self.root / "new"), [])

        [(seq, message)] = box.fetch(every(), False)
        self.assertEqual((seq, message.getUID()), (1, 1))
        self.assertEqual(message.open().read(), MESSAGE)
        self.assertEqual(message.getSize(), len(MESSAGE))
        self.assertEqual(message.getBodyFile().read(), MESSAGE.split(b"\r\n\r\n", 1)[1])
        self.assertEqual(message.getFlags(), ["\\Flagged", "\\Seen", "$Label1"])

    def test_exactBytesOfAnyFile(self) -> None:
        """
        Bare LF line ends and 8-bit bytes are served as stored.
        """
        data = b"Subject: caf\xc3\xa9\n\nbinary \x00\xff\x80 body\n\n\nend"
        box = self.inbox()
        self.append(box, data)
        [(_, message)] = box.fetch(every(), False)
        self.assertEqual(message.open().read(), data)
        self.assertEqual(
            message.getBodyFile().read(), b"binary \x00\xff\x80 body\n\n\nend"
        )

    def test_internalDate(self) -> None:
        """
        APPEND's date-time becomes the file's mtime, which is the internal
        date.
        """
        box = self.inbox()
        self.append(box, MESSAGE, (), b"17-Jul-1996 02:44:25 -0700")
        expected = calendar.timegm((1996, 7, 17, 9, 44, 25))
        [name] = os.listdir(self.root / "cur")
        self.assertEqual(os.stat(self.root / "cur" / name).st_mtime, expected)
        [(_, message)] = box.fetch(every(), False)
        self.assertEqual(message.getInternalDate(), "Wed, 17 Jul 1996 09:44:25 GMT")
        self.assertEqual(
            email.utils.mktime_tz(email.utils.parsedate_tz(message.getInternalDate())),
            expected,
        )

    def test_badDate(self) -> None:
        box = self.inbox()
        self.failureResultOf(
            box.addMessage(BytesIO(MESSAGE), (), b"yesterday"), imap4.MailboxException
        )
        for sub in ("tmp", "cur", "new"):
            self.assertEqual(os.listdir(self.root / sub), [])

    def test_readOnly(self) -> None:
        self.append(self.inbox())
        box = self.inbox(rw=False)
        self.assertFalse(box.isWriteable())
        self.failureResultOf(
            box.addMessage(BytesIO(MESSAGE), (), None), imap4.ReadOnlyMailbox
        )
        self.assertRaises(
            imap4.ReadOnlyMailbox, box.store, every(), ["\\Seen"], 1, False
        )
        self.assertRaises(imap4.ReadOnlyMailbox, box.expunge)

    def test_headers(self) -> None:
        box = self.inbox()
        self.append(box)
        [(_, message)] = box.fetch(every(), False)
        self.assertEqual(
            message.getHeaders(False, "subject"), {"subject": "Lunch on Friday"}
        )
        self.assertEqual(
            message.getHeaders(False, b"SUBJECT", b"TO"),
            {"subject": "Lunch on Friday", "to": "Bob <bob@example.org>"},
        )
        self.assertEqual(
            sorted(message.getHeaders(True, "subject")), ["date", "from", "to"]
        )
        self.assertEqual(message.getHeaders(False), {})

    def test_eightBitHeaders(self) -> None:
        """
        Raw UTF-8 in headers is given as RFC 2047 encoded words: Twisted
        writes header values as ASCII.
        """
        box = self.inbox()
        self.append(
            box,
            'Subject: Gr\u00fc\u00dfe\nFrom: "J\u00f6rg M\u00fcller" <j@example.org>\n\nx\n'.encode(),
        )
        [(_, message)] = box.fetch(every(), False)
        headers = message.getHeaders(True)
        for value in headers.values():
            self.assertTrue(value.isascii(), value)
        decoded = {
            name: str(email.header.make_header(email.header.decode_header(value)))
            for name, value in headers.items()
        }
        self.assertEqual(decoded["subject"], "Gr\u00fc\u00dfe")
        self.assertEqual(decoded["from"], "J\u00f6rg M\u00fcller <j@example.org>")

    def test_parts(self) -> None:
        box = self.inbox()
        self.append(box, MULTIPART)
        [(_, message)] = box.fetch(every(), False)
        self.assertTrue(message.isMultipart())
        first = message.getSubPart(0)
        self.assertFalse(first.isMultipart())
        self.assertEqual(first.getBodyFile().read(), b"part one")
        self.assertEqual(first.getSize(), len(b"part one"))
        self.assertEqual(
            first.getHeaders(False, "content-type"), {"content-type": "text/plain"}
        )
        inner = message.getSubPart(1).getSubPart(0)
        self.assertEqual(inner.getHeaders(False, "subject"), {"subject": "inner"})
        self.assertRaises(IndexError, message.getSubPart, 2)
        self.assertRaises(TypeError, first.getSubPart, 0)

    def test_vanishedFileReadsEmpty(self) -> None:
        """
        A message expunged by someone else between FETCH's listing and its
        reading is empty, not an exception that drops the connection.
        """
        events = captureEvents(self)
        box = self.inbox()
        self.append(box)
        [(_, message)] = box.fetch(every(), False)
        [name] = os.listdir(self.root / "cur")
        os.unlink(self.root / "cur" / name)
        self.assertEqual(message.open().read(), b"")
        self.assertEqual(message.getSize(), 0)
        self.assertEqual(message.getHeaders(True), {})
        self.assertTrue(message.getInternalDate())
        self.assertIn("vanished", [e.get("mailboxEvent") for e in events])

    def test_renamedFileFound(self) -> None:
        """
        A flag change elsewhere renames the file; a message object that
        still has the old name finds it.
        """
        box = self.inbox()
        self.append(box)
        [(_, message)] = box.fetch(every(), False)
        other = self.inbox()
        other.store(every(), ["\\Answered"], 1, False)
        self.assertEqual(message.open().read(), MESSAGE)


class FlagTests(AccountMixin, SynchronousTestCase):
    def test_storeModes(self) -> None:
        box = self.inbox()
        self.append(box)
        self.assertEqual(
            box.store(every(), ["\\Seen", "\\flagged", "Work", "\\Recent"], 1, False),
            {1: ["\\Flagged", "\\Seen", "Work"]},
        )
        self.assertEqual(
            box.store(every(), ["\\Flagged", "work"], -1, False), {1: ["\\Seen"]}
        )
        self.assertEqual(
            box.store(every(), ["\\Answered", "$Done"], 0, False),
            {1: ["\\Answered", "$Done"]},
        )
        [name] = os.listdir(self.root / "cur")
        self.assertTrue(name.endswith(":2,R"), name)

    def test_storeByUID(self) -> None:
        box = self.inbox()
        for _ in range(3):
            self.append(box)
        result = box.store(imap4.parseIdList(b"2:*"), ["\\Seen"], 1, True)
        self.assertEqual(sorted(result), [2, 3])

    def test_flagsSurviveRestart(self) -> None:
        box = self.inbox()
        self.append(box)
        self.append(box)
        box.store(imap4.MessageSet(1), ["\\Seen", "\\Deleted", "Important"], 1, False)
        box.store(imap4.MessageSet(2), ["\\Draft"], 0, False)
        again = self.restart().select("INBOX")
        self.assertEqual(
            flagsOf(again), {1: ["\\Deleted", "\\Seen", "Important"], 2: ["\\Draft"]}
        )
        self.assertEqual(
            again.getFlags(),
            ["\\Answered", "\\Flagged", "\\Deleted", "\\Seen", "\\Draft", "Important"],
        )

    def test_unknownLettersKept(self) -> None:
        """
        Info letters we do not know (another program's) stay in the name.
        """
        name = deliver(self.root)
        os.rename(self.root / "new" / name, self.root / "cur" / (name + ":2,PSa"))
        box = self.inbox()
        self.assertEqual(flagsOf(box), {1: ["\\Seen"]})
        box.store(every(), ["\\Flagged"], 1, False)
        self.assertEqual(os.listdir(self.root / "cur"), [name + ":2,FPSa"])

    def test_uidsStable(self) -> None:
        """
        UIDs and UIDVALIDITY survive a restart; new mail gets higher UIDs,
        never an expunged one's.
        """
        for _ in range(3):
            deliver(self.root)
        box = self.inbox()
        self.assertEqual(uidsOf(box), [1, 2, 3])
        validity = box.getUIDValidity()
        box.store(imap4.MessageSet(3), ["\\Deleted"], 1, False)
        box.expunge()

        again = self.restart().select("INBOX")
        self.assertEqual(again.getUIDValidity(), validity)
        self.assertEqual(uidsOf(again), [1, 2])
        deliver(self.root)
        deliver(self.root)
        latest = self.restart().select("INBOX")
        self.assertEqual(uidsOf(latest), [1, 2, 4, 5])
        self.assertEqual(latest.getUIDNext(), 6)
        self.assertEqual(latest.getUIDValidity(), validity)
        state = json.loads((self.root / UIDLIST).read_text())
        self.assertEqual((state["uidvalidity"], state["uidnext"]), (validity, 6))

    def test_fetchByUID(self) -> None:
        box = self.inbox()
        for _ in range(4):
            self.append(box)
        box.store(imap4.MessageSet(2), ["\\Deleted"], 1, False)
        box.expunge()
        self.assertEqual(
            [(s, m.getUID()) for s, m in box.fetch(imap4.parseIdList(b"2:*"), True)],
            [(2, 3), (3, 4)],
        )
        self.assertEqual(
            [(s, m.getUID()) for s, m in box.fetch(imap4.parseIdList(b"*"), True)],
            [(3, 4)],
        )
        self.assertEqual(
            [s for s, _ in box.fetch(imap4.parseIdList(b"2,9"), False)], [2]
        )
        self.assertEqual(box.getUID(3), 4)


class RecentTests(AccountMixin, SynchronousTestCase):
    def test_firstSessionTakesNewMail(self) -> None:
        deliver(self.root)
        deliver(self.root)
        first = self.inbox()
        self.assertEqual(first.getRecentCount(), 2)
        first.addListener(RecordingListener())
        self.assertEqual(os.listdir(self.root / "new"), [])
        self.assertTrue(all(n.endswith(":2,") for n in os.listdir(self.root / "cur")))
        self.assertEqual(flagsOf(first), {1: ["\\Recent"], 2: ["\\Recent"]})
        second = self.inbox()
        second.addListener(RecordingListener())
        self.assertEqual(second.getRecentCount(), 0)
        self.assertEqual(flagsOf(second), {1: [], 2: []})

    def test_withoutListenerNothingMoves(self) -> None:
        """
        STATUS, APPEND and COPY open the folder without selecting it: the
        mail in C{new/} stays for the session that will.
        """
        deliver(self.root)
        status = self.inbox(rw=False).requestStatus(
            ["MESSAGES", "RECENT", "UNSEEN", "UIDNEXT", "UIDVALIDITY"]
        )
        self.assertEqual(
            (status["MESSAGES"], status["RECENT"], status["UNSEEN"], status["UIDNEXT"]),
            (1, 1, 1, 2),
        )
        self.append(self.inbox())
        examined = self.inbox(rw=False)
        examined.addListener(RecordingListener())
        self.assertEqual(len(os.listdir(self.root / "new")), 1)
        self.assertEqual(self.inbox().getRecentCount(), 1)


class PollTests(AccountMixin, SynchronousTestCase):
    def test_newMail(self) -> None:
        """
        Mail delivered while the folder is selected is announced by poll.
        """
        box = self.inbox()
        self.append(box)
        listener = RecordingListener()
        box.addListener(listener)
        box.poll()
        self.assertEqual(listener.events, [])
        deliver(self.root)
        box.poll()
        self.assertEqual(listener.events, [("newMessages", 2, 1)])
        self.assertEqual(box.getMessageCount(), 2)
        self.assertEqual(uidsOf(box), [1, 2])
        self.assertEqual(os.listdir(self.root / "new"), [])
        box.poll()
        self.assertEqual(len(listener.events), 1)

    def test_appendElsewhere(self) -> None:
        box = self.inbox()
        listener = RecordingListener()
        box.addListener(listener)
        self.append(self.inbox())
        box.poll()
        self.assertEqual(listener.events, [("newMessages", 1, None)])

    def test_flagsChangedElsewhere(self) -> None:
        box = self.inbox()
        self.append(box)
        self.append(box)
        listener = RecordingListener()
        box.addListener(listener)
        other = self.inbox()
        other.store(imap4.MessageSet(2), ["\\Seen", "Later"], 1, False)
        box.poll()
        self.assertEqual(listener.events, [("flagsChanged", {2: ["\\Seen", "Later"]})])

    def test_expungedElsewhereAnnounced(self) -> None:
        box = self.inbox()
        for _ in range(3):
            self.append(box)
        listener = ExpungeRecordingListener()
        box.addListener(listener)
        other = self.inbox()
        other.store(imap4.parseIdList(b"1,3"), ["\\Deleted"], 1, False)
        self.assertEqual(other.expunge(), [1, 2])
        box.poll()
        self.assertEqual(listener.events, [("expunged", [1, 2])])
        self.assertEqual(box.getMessageCount(), 1)
        self.assertEqual(uidsOf(box), [2])

    def test_expungedElsewhereHeld(self) -> None:
        """
        A listener that cannot be told of expunges (Twisted's own server)
        keeps its numbering: the gone messages are skipped by FETCH and
        STORE and reported by the session's own EXPUNGE.
        """
        box = self.inbox()
        for _ in range(3):
            self.append(box)
        listener = RecordingListener()
        box.addListener(listener)
        other = self.inbox()
        other.store(imap4.parseIdList(b"1,3"), ["\\Deleted"], 1, False)
        other.expunge()
        box.poll()
        self.assertEqual(listener.events, [])
        self.assertEqual(box.getMessageCount(), 3)
        self.assertEqual(
            [(s, m.getUID()) for s, m in box.fetch(every(), False)], [(2, 2)]
        )
        self.assertEqual(box.store(every(), ["\\Seen"], 1, False), {2: ["\\Seen"]})
        self.assertEqual(box.expunge(), [1, 2])
        self.assertEqual(box.getMessageCount(), 1)

    def test_eventOrder(self) -> None:
        """
        Expunges first (later numbers depend on them), then flag changes,
        then the new count.
        """
        box = self.inbox()
        self.append(box)
        self.append(box)
        listener = ExpungeRecordingListener()
        box.addListener(listener)
        other = self.inbox()
        other.store(imap4.MessageSet(1), ["\\Deleted"], 1, False)
        other.expunge()
        other.store(imap4.MessageSet(1), ["\\Seen"], 1, False)
        deliver(self.root)
        box.poll()
        self.assertEqual(
            listener.events,
            [
                ("expunged", [1]),
                ("flagsChanged", {1: ["\\Seen"]}),
                ("newMessages", 2, 1),
            ],
        )

    def test_cheapWhenUnchanged(self) -> None:
        """
        While the folder's directories and state are unchanged (and not just
        changed), poll lists nothing.
        """
        box = self.inbox()
        self.append(box)
        box.addListener(RecordingListener())
        backdate(self.root / "new", self.root / "cur", self.root / UIDLIST)
        box.poll()
        listings: list[Any] = []
        realListdir = os.listdir

        def countingListdir(path: Any) -> list[str]:
            listings.append(path)
            return realListdir(path)

        self.patch(mailbox.os, "listdir", countingListdir)
        box.poll()
        box.poll()
        self.assertEqual(listings, [])
        deliver(self.root)
        box.poll()
        self.assertNotEqual(listings, [])
        self.assertEqual(box.getMessageCount(), 2)

    def test_sameTickChange(self) -> None:
        """
        A change that leaves a fresh directory's mtime as it was (coarse
        timestamps) is still seen.
        """
        box = self.inbox()
        listener = RecordingListener()
        box.addListener(listener)
        box.poll()
        before = os.stat(self.root / "new")
        deliver(self.root)
        os.utime(self.root / "new", ns=(before.st_atime_ns, before.st_mtime_ns))
        box.poll()
        self.assertEqual(listener.events, [("newMessages", 1, 1)])

    def test_closedDoesNotPoll(self) -> None:
        box = self.inbox()
        listener = RecordingListener()
        box.addListener(listener)
        box.close()
        deliver(self.root)
        box.poll()
        self.assertEqual(listener.events, [])


class ExpungeTests(AccountMixin, SynchronousTestCase):
    def test_expunge(self) -> None:
        """
        EXPUNGE deletes the C{\\Deleted} files and answers the numbers to
        send, each counting the ones before it as gone (RFC 3501's example).
        """
        box = self.inbox()
        for _ in range(5):
            self.append(box)
        box.store(imap4.parseIdList(b"2,3,5"), ["\\Deleted"], 1, False)
        self.assertEqual(box.expunge(), [2, 2, 3])
        self.assertEqual(uidsOf(box), [1, 4])
        self.assertEqual(len(os.listdir(self.root / "cur")), 2)
        self.assertEqual(uidsOf(self.restart().select("INBOX")), [1, 4])

    def test_undeletedMeanwhile(self) -> None:
        """
        Only what is C{\\Deleted} on disk now goes.
        """
        box = self.inbox()
        self.append(box)
        box.store(every(), ["\\Deleted"], 1, False)
        self.inbox().store(every(), ["\\Deleted"], -1, False)
        self.assertEqual(box.expunge(), [])
        self.assertEqual(len(os.listdir(self.root / "cur")), 1)


class CopyTests(AccountMixin, SynchronousTestCase):
    def test_copyKeepsFlagsAndDate(self) -> None:
        inbox = self.inbox()
        self.append(
            inbox,
            MESSAGE,
            ["\\Seen", "\\Flagged", "Work"],
            b"01-Feb-2020 10:00:00 +0000",
        )
        self.account.create("Archive")
        archive = self.account.select("Archive")
        [(_, message)] = inbox.fetch(every(), False)
        self.assertEqual(archive.copy(message), 1)

        copied = self.account.select("Archive")
        [(_, copy)] = copied.fetch(every(), False)
        self.assertEqual(copy.getFlags(), ["\\Flagged", "\\Seen", "Work"])
        self.assertEqual(copy.open().read(), MESSAGE)
        self.assertEqual(copy.getInternalDate(), message.getInternalDate())
        self.assertEqual(len(os.listdir(self.root / "cur")), 1, "the original stays")

    def test_copyWithoutHardLinks(self) -> None:
        """
        Where a hard link cannot be made the file is copied, date included.
        """
        inbox = self.inbox()
        self.append(inbox, MESSAGE, ["\\Seen"], b"01-Feb-2020 10:00:00 +0000")
        [(_, message)] = inbox.fetch(every(), False)

        def noLinks(source: Any, target: Any) -> None:
            raise OSError(18, "Invalid cross-device link")

        self.patch(mailbox.os, "link", noLinks)
        self.account.create("Archive")
        self.account.select("Archive").copy(message)
        [(_, copy)] = self.account.select("Archive").fetch(every(), False)
        self.assertEqual((copy.open().read(), copy.getFlags()), (MESSAGE, ["\\Seen"]))
        self.assertEqual(copy.getInternalDate(), message.getInternalDate())

    def test_copyOtherMessage(self) -> None:
        """
        A message from elsewhere is copied from its bytes.
        """

        @implementer(IMessageIMAPFile)
        class Foreign:
            def getFlags(self) -> list[str]:
                return ["\\Answered", "\\Recent"]

            def getInternalDate(self) -> str:
                return "Sat, 01 Feb 2020 10:00:00 +0000"

            def open(self) -> BytesIO:
                return BytesIO(MESSAGE)

        box = self.inbox()
        uid = box.copy(Foreign())
        [(_, message)] = self.inbox().fetch(every(), False)
        self.assertEqual(
            (uid, message.getFlags(), message.open().read()),
            (1, ["\\Answered"], MESSAGE),
        )

    def test_copyVanished(self) -> None:
        inbox = self.inbox()
        self.append(inbox)
        [(_, message)] = inbox.fetch(every(), False)
        [name] = os.listdir(self.root / "cur")
        os.unlink(self.root / "cur" / name)
        self.assertRaises(imap4.MailboxException, self.inbox().copy, message)
        self.assertEqual(os.listdir(self.root / "tmp"), [])


class SearchTests(AccountMixin, SynchronousTestCase):
    def setUp(self) -> None:
        AccountMixin.setUp(self)
        self.box = self.inbox()
        self.append(self.box, MESSAGE, ["\\Seen"], b"14-Nov-2023 22:13:20 +0000")
        self.append(
            self.box, MULTIPART, ["\\Flagged", "Work"], b"01-Feb-2024 08:00:00 +0000"
        )

    def search(self, query: bytes) -> list[int]:
        terms, rest = imap4.IMAP4Server().arg_searchkeys(query)
        return self.box.search(terms, uid=False)

    def test_keys(self) -> None:
        for query, expected in [
            (b"ALL", [1, 2]),
            (b"SEEN", [1]),
            (b"UNSEEN", [2]),
            (b"FLAGGED", [2]),
            (b"KEYWORD work", [2]),
            (b"UNKEYWORD Work", [1]),
            (b"SUBJECT lunch", [1]),
            (b"FROM ALICE", [1]),
            (b"HEADER Content-Type mixed", [2]),
            (b'HEADER To ""', [1]),
            (b'BODY "new place"', [1]),
            (b"TEXT inner", [2]),
            (b"SINCE 1-Jan-2024", [2]),
            (b"BEFORE 1-Jan-2024", [1]),
            (b"ON 14-Nov-2023", [1]),
            (b"SENTON 14-Nov-2023", [1]),
            (b"LARGER %d" % (len(MESSAGE),), [2]),
            (b"SMALLER %d" % (len(MULTIPART),), [1]),
            (b"UID 2", [2]),
            (b"2:*", [2]),
            (b"NOT SEEN", [2]),
            (b"OR SEEN FLAGGED", [1, 2]),
            (b"(SEEN SUBJECT lunch) UNDELETED", [1]),
        ]:
            with self.subTest(query=query):
                self.assertEqual(self.search(query), expected)

    def test_bad(self) -> None:
        self.assertRaises(imap4.IllegalQueryError, self.search, b"BOGUS")
        self.assertRaises(imap4.IllegalQueryError, self.search, b"SINCE tomorrow")


class RecoveryTests(AccountMixin, SynchronousTestCase):
    def test_stateWrittenDurably(self) -> None:
        """
        The uidlist is written like a message: a temporary file, synced,
        renamed over the old one, then the directory synced; a power cut
        leaves the old state or the new, so UIDVALIDITY never resets.
        """
        deliver(self.root)
        calls: list[tuple[str, str]] = []
        realFsync, realReplace = os.fsync, os.replace

        def fsync(fd: int) -> None:
            calls.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
            realFsync(fd)

        def replace(source: Any, destination: Any) -> None:
            calls.append(("replace", os.path.realpath(destination)))
            realReplace(source, destination)

        self.patch(os, "fsync", fsync)
        self.patch(os, "replace", replace)
        self.inbox()
        root = os.path.realpath(self.root)
        state = os.path.join(root, UIDLIST)
        writes = [c for c in calls if c[1] == state or c[0] == "fsync"]
        index = writes.index(("replace", state))
        temporary = writes[index - 1]
        self.assertEqual(temporary[0], "fsync")
        self.assertTrue(temporary[1].startswith(root + "/."), temporary)
        self.assertEqual(writes[index + 1], ("fsync", root))

    def test_corruptStateRebuilt(self) -> None:
        """
        An unreadable uidlist is set aside and rebuilt under a new
        UIDVALIDITY; every message is still there and numbered.
        """
        events = captureEvents(self)
        for _ in range(3):
            deliver(self.root)
        box = self.inbox()
        box.addListener(RecordingListener())
        box.store(imap4.MessageSet(2), ["\\Seen"], 1, False)
        validity = box.getUIDValidity()
        (self.root / UIDLIST).write_bytes(b"{not json")

        again = self.restart().select("INBOX")
        self.assertEqual(again.getMessageCount(), 3)
        self.assertEqual(sorted(uidsOf(again)), [1, 2, 3])
        self.assertNotEqual(again.getUIDValidity(), validity)
        self.assertEqual(sorted(sum(flagsOf(again).values(), [])), ["\\Seen"])
        self.assertEqual(
            (self.root / (UIDLIST + ".corrupt")).read_bytes(), b"{not json"
        )
        self.assertEqual(json.loads((self.root / UIDLIST).read_text())["uidnext"], 4)
        self.assertIn("stateRebuilt", [e.get("mailboxEvent") for e in events])

    def test_stateRebuiltUnderSession(self) -> None:
        """
        If the state is rebuilt while a session has the folder selected, the
        session takes the new UIDs (and says so in the log) rather than
        keep UIDs that now name other messages.
        """
        events = captureEvents(self)
        box = self.inbox()
        for _ in range(3):
            self.append(box)
        box.store(imap4.MessageSet(1), ["\\Deleted"], 1, False)
        box.expunge()
        listener = ExpungeRecordingListener()
        box.addListener(listener)
        self.assertEqual(uidsOf(box), [2, 3])
        (self.root / UIDLIST).write_bytes(b"garbage")
        box.poll()
        state = json.loads((self.root / UIDLIST).read_text())
        self.assertEqual(sorted(state["uids"].values()), [1, 2])
        self.assertEqual(uidsOf(box), [1, 2])
        self.assertEqual(box.getUIDValidity(), state["uidvalidity"])
        self.assertEqual(listener.events[0], ("expunged", [1, 1]))
        self.assertIn("uidValidityChanged", [e.get("mailboxEvent") for e in events])

    def test_inconsistentState(self) -> None:
        """
        Well-formed JSON that breaks the rules (two messages, one UID) is
        corrupt too.
        """
        captureEvents(self)
        a, b = deliver(self.root), deliver(self.root)
        self.inbox()
        state = json.loads((self.root / UIDLIST).read_text())
        state["uids"] = {a: 1, b: 1}
        (self.root / UIDLIST).write_text(json.dumps(state))
        self.assertEqual(sorted(uidsOf(self.restart().select("INBOX"))), [1, 2])

    def test_stateReplacedAtomically(self) -> None:
        """
        A state write that fails half way leaves the previous file whole.
        """
        captureEvents(self)
        deliver(self.root)
        self.inbox()
        before = (self.root / UIDLIST).read_bytes()

        def failingReplace(source: Any, target: Any) -> None:
            raise OSError(28, "No space left on device")

        self.patch(mailbox.os, "replace", failingReplace)
        deliver(self.root)
        self.inbox()
        self.assertEqual((self.root / UIDLIST).read_bytes(), before)
        self.assertEqual([n for n in os.listdir(self.root) if n.endswith(".tmp")], [])

    def test_stateLocked(self) -> None:
        """
        UIDs are assigned under an exclusive lock, so two processes sharing
        the maildir never give one UID twice.
        """
        if mailbox.fcntl is None:
            raise SkipTest("no flock here")
        calls: list[int] = []
        realFlock = mailbox.fcntl.flock

        def recordingFlock(fd: int, operation: int) -> None:
            calls.append(operation)
            realFlock(fd, operation)

        self.patch(mailbox.fcntl, "flock", recordingFlock)
        deliver(self.root)
        self.inbox()
        self.assertIn(mailbox.fcntl.LOCK_EX, calls)

    def test_fileVanishesBeforeListingEnds(self) -> None:
        """
        A message gone between listing and reading does not stop the others.
        """
        deliver(self.root)
        deliver(self.root)
        box = self.inbox()
        messages = box.fetch(every(), False)
        os.unlink(self.root / "new" / sorted(os.listdir(self.root / "new"))[0])
        self.assertEqual([m.open().read() for _, m in messages], [b"", MESSAGE])


# -- under Twisted's IMAP4Server ---------------------------------------------------




@implementer(IRealm)
class AccountRealm:
    def __init__(self, account: MaildirAccount) -> None:
        self.account = account

    def requestAvatar(self, avatarId: Any, mind: Any, *interfaces: Any) -> Any:
        return imap4.IAccount, self.account, lambda: None


class ServerTests(AccountMixin, SynchronousTestCase):
    """
    The interfaces fit Twisted's own server.
    """

    def setUp(self) -> None:
        AccountMixin.setUp(self)
        checker = InMemoryUsernamePasswordDatabaseDontUse()
        checker.addUser(b"alice@example.org", b"secret")
        self.server = imap4.IMAP4Server(scheduler=synchronousScheduler)
        self.server.portal = Portal(AccountRealm(self.account), [checker])
        self.server.callLater = Clock().callLater
        self.transport = StringTransport()
        self.server.makeConnection(self.transport)
        self.addCleanup(self.server.connectionLost, None)
        self.command(b'a0 LOGIN "alice@example.org" secret', b"a0 OK")

    def command(self, line: bytes, expectEnd: bytes | None = None) -> bytes:
        self.transport.clear()
        self.server.dataReceived(line + b"\r\n")
        while self.transport.producer is not None:
            self.transport.producer.resumeProducing()
        reply = self.transport.value()
        if expectEnd is not None:
            last = reply.rstrip(b"\r\n").split(b"\r\n")[-1]
            self.assertTrue(last.startswith(expectEnd), reply)
        return reply

    def test_session(self) -> None:
        deliver(self.root)
        reply = self.command(b"a1 SELECT INBOX", b"a1 OK [READ-WRITE]")
        self.assertIn(b"* 1 EXISTS\r\n* 1 RECENT\r\n", reply)
        self.assertIn(b"[UIDVALIDITY %d]" % (self.server.mbox.getUIDValidity(),), reply)

        reply = self.command(b"a2 FETCH 1 (FLAGS BODY[] UID)", b"a2 OK")
        self.assertEqual(
            reply.split(b"\r\na2 OK")[0],
            b"* 1 FETCH (FLAGS (\\Recent) BODY[] {%d}\r\n%s UID 1)"
            % (len(MESSAGE), MESSAGE),
        )

        reply = self.command(b"a3 STORE 1 +FLAGS (\\Deleted)", b"a3 OK")
        self.assertIn(b"* 1 FETCH (FLAGS (\\Deleted \\Recent))", reply)
        self.assertIn(b"* SEARCH 1\r\n", self.command(b"a4 SEARCH DELETED", b"a4 OK"))
        self.assertIn(
            b"* SEARCH 1\r\n", self.command(b"a5 SEARCH SUBJECT lunch", b"a5 OK")
        )
        self.assertIn(
            b"* SEARCH 1\r\n", self.command(b"a6 UID SEARCH FROM alice", b"a6 OK")
        )
        self.assertIn(b"* 1 EXPUNGE\r\n", self.command(b"a7 EXPUNGE", b"a7 OK"))
        self.assertEqual(os.listdir(self.root / "cur"), [])

    def test_appendOverTheWire(self) -> None:
        self.command(b"a1 SELECT INBOX", b"a1 OK")
        reply = self.command(b"a2 APPEND INBOX (\\Seen) {%d}" % (len(MESSAGE),))
        self.assertTrue(reply.startswith(b"+ "), reply)
        self.transport.clear()
        self.server.dataReceived(MESSAGE + b"\r\n")
        self.assertIn(b"a2 OK APPEND complete", self.transport.value())
        self.server.mbox.poll()  # what ClientIDIMAP4Server does before each command
        reply = self.command(b"a3 UID FETCH 1:* (FLAGS BODY.PEEK[])", b"a3 OK")
        self.assertIn(b"BODY[] {%d}\r\n%s" % (len(MESSAGE), MESSAGE), reply)
        self.assertIn(b"FLAGS (\\Seen)", reply)

    def test_newMailAnnounced(self) -> None:
        """
        The server is a fine listener: poll's news become untagged replies.
        """
        self.command(b"a1 SELECT INBOX", b"a1 OK")
        deliver(self.root)
        self.transport.clear()
        self.server.mbox.poll()
        self.assertEqual(self.transport.value(), b"* 1 EXISTS\r\n* 1 RECENT\r\n")

    def test_folders(self) -> None:
        self.command(b'a1 CREATE "Work/2024"', b"a1 OK")
        reply = self.command(b'a2 LIST "" "*"', b"a2 OK")
        self.assertIn(b'* LIST (\\HasChildren) "/" "Work"\r\n', reply)
        self.assertIn(b'* LIST (\\HasNoChildren) "/" "Work/2024"\r\n', reply)
        self.command(b'a3 SUBSCRIBE "Work/2024"', b"a3 OK")
        reply = self.command(b'a4 LSUB "" "*"', b"a4 OK")
        self.assertIn(b'"Work/2024"', reply)
        self.assertNotIn(b'"Work"\r\n', reply)
        self.command(b'a5 RENAME "Work" "Archive"', b"a5 OK")
        self.command(b'a6 DELETE "Archive"', b"a6 NO")
        self.command(
            b'a7 CREATE "bad//name"', b"a7 NO Mailbox name has an empty hierarchy level"
        )
        self.command(b"a8 DELETE INBOX", b"a8 NO")

    def test_copyAndStatus(self) -> None:
        self.append(self.inbox(), MESSAGE, ["\\Flagged"])
        self.command(b"a1 CREATE Archive", b"a1 OK")
        self.command(b"a2 SELECT INBOX", b"a2 OK")
        self.command(b"a3 COPY 1 Archive", b"a3 OK COPY completed")
        reply = self.command(b"a4 STATUS Archive (MESSAGES UNSEEN UIDNEXT)", b"a4 OK")
        self.assertIn(b"* STATUS Archive (MESSAGES 1 UNSEEN 1 UIDNEXT 2)", reply)
