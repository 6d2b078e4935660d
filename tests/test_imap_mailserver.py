"""
Tests for the IMAP side of the runnable server: L{MailIMAP4Server}'s fixes
over in-memory transports, and the assembled server end to end over real
TLS: mail submitted with Python's C{smtplib} is read with C{imaplib} and
with the project's own IMAP client, each presenting CLIENTID.
"""

from __future__ import annotations

import imaplib
import smtplib
import ssl
from pathlib import Path
from typing import Any

from zope.interface import implementer

from twisted.cred.checkers import InMemoryUsernamePasswordDatabaseDontUse
from twisted.cred.portal import IRealm, Portal
from twisted.internet import defer, reactor
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.threads import deferToThread
from twisted.mail import imap4
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.trial.unittest import SynchronousTestCase, TestCase

from clientid_twisted._identity import ClientIdentity
from clientid_twisted.imap import ClientIDIMAP4Client, loginWithClientID
from clientid_twisted.server.assembly import assembleServer
from clientid_twisted.server.imapserver import MailIMAP4Factory
from clientid_twisted.server.mailbox import MaildirAccount
from clientid_twisted.testing import (
    ConnectionTracker,
    LineExchange,
    clientTLSOptions,
    connectedTransport,
    synchronousScheduler,
)
from tests.test_imap_server import registerIMAPLibCommand

TOKEN = "9d8c7b6a-5f4e-4d3c-8b2a-1f0e9d8c7b6a"
MESSAGE = b"Subject: for bob\r\nFrom: alice@example.test\r\n\r\nHello Bob, over IMAP.\r\n"


@implementer(IRealm)
class _AccountRealm:
    def __init__(self, root: Path) -> None:
        self.root = root

    def requestAvatar(self, avatarId: Any, mind: Any, *interfaces: Any) -> Any:
        return imap4.IAccount, MaildirAccount(self.root), lambda: None


class _LoggedInSession:
    """
    A logged-in L{MailIMAP4Server} session over an in-memory transport
    marked as TLS, with two messages in INBOX.
    """

    def setUp(self) -> None:
        self.root = Path(self.mktemp())
        account = MaildirAccount(self.root)
        inbox = account.select("INBOX")
        for n in (1, 2):
            self.successResultOf(inbox.addMessage(_message(n), (), None))
        portal = Portal(
            _AccountRealm(self.root), [InMemoryUsernamePasswordDatabaseDontUse(bob=b"pw")]
        )
        self.factory = MailIMAP4Factory(portal, context=object())
        self.factory.scheduler = synchronousScheduler
        self.protocol = self.factory.buildProtocol(None)
        self.transport = connectedTransport(self.protocol, secure=True)
        self.client = LineExchange(self.protocol, self.transport)
        self.assertIn(b"OK", self.client.exchange(b"a LOGIN bob pw"))

    def send(self, line: bytes) -> bytes:
        return self.client.exchange(line)

    def flags(self, n: int) -> bytes:
        reply = self.send(b"f FETCH %d (FLAGS)" % (n,))
        return reply.split(b"FLAGS (", 1)[1].split(b")", 1)[0]


class ProtocolFixTests(_LoggedInSession, SynchronousTestCase):
    """
    What L{MailIMAP4Server} changes in Twisted's IMAP4Server.
    """

    def test_fetchBodySetsSeen(self) -> None:
        self.send(b"s SELECT INBOX")
        self.assertNotIn(b"\\Seen", self.flags(1))
        self.assertIn(b"Message 1", self.send(b"b FETCH 1 (BODY[])"))
        self.assertIn(b"\\Seen", self.flags(1))

    def test_peekDoesNotSetSeen(self) -> None:
        self.send(b"s SELECT INBOX")
        self.assertIn(b"Message 2", self.send(b"b FETCH 2 (BODY.PEEK[])"))
        self.assertNotIn(b"\\Seen", self.flags(2))

    def test_uidFetchRFC822SetsSeen(self) -> None:
        self.send(b"s SELECT INBOX")
        self.send(b"b UID FETCH 1:* (RFC822)")
        self.assertIn(b"\\Seen", self.flags(1))
        self.assertIn(b"\\Seen", self.flags(2))

    def test_examineNeverSetsSeen(self) -> None:
        self.send(b"s EXAMINE INBOX")
        self.send(b"b FETCH 1 (BODY[])")
        self.assertNotIn(b"\\Seen", self.flags(1))

    def test_appendToMissingMailbox(self) -> None:
        self.assertTrue(self.send(b"p APPEND Nowhere {5}").startswith(b"+ "))
        reply = self.client.send(b"hello\r\n")
        self.assertEqual(reply, b"p NO [TRYCREATE] No such mailbox\r\n")

    def test_copyToMissingMailbox(self) -> None:
        self.send(b"s SELECT INBOX")
        reply = self.send(b"c COPY 1 Nowhere")
        self.assertEqual(reply, b"c NO [TRYCREATE] No such mailbox\r\n")

    def test_appendToSelectedAnnouncesExists(self) -> None:
        self.send(b"s SELECT INBOX")
        message = _message(3).getvalue()
        self.assertTrue(self.send(b"p APPEND INBOX {%d}" % (len(message),)).startswith(b"+ "))
        reply = self.client.send(message + b"\r\n")
        self.assertIn(b"* 3 EXISTS\r\n", reply)
        self.assertTrue(reply.endswith(b"p OK APPEND completed\r\n"), reply)

    def test_disconnectClosesMailbox(self) -> None:
        self.send(b"s SELECT INBOX")
        mbox = self.protocol.mbox
        self.assertIn(self.protocol, mbox._listeners)
        self.protocol.connectionLost(Exception("gone"))
        self.assertNotIn(self.protocol, mbox._listeners)
        self.assertIsNone(self.protocol.mbox)


class ReviewFixTests(_LoggedInSession, SynchronousTestCase):
    """
    Replies the outside review of issue 15 found wrong (items 6 and 15).
    """

    def test_selectSendsRequiredResponses(self) -> None:
        """
        SELECT and EXAMINE send the OK responses RFC 3501 section 6.3.1
        requires: UNSEEN, PERMANENTFLAGS (none when read-only), UIDVALIDITY
        and UIDNEXT.
        """
        reply = self.send(b"s SELECT INBOX")
        self.assertIn(b"* OK [UNSEEN 1] ", reply)
        self.assertIn(
            b"* OK [PERMANENTFLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft \\*)] ", reply
        )
        self.assertIn(b"* OK [UIDNEXT 3] ", reply)
        self.assertIn(b"* OK [UIDVALIDITY ", reply)
        self.assertTrue(reply.endswith(b"s OK [READ-WRITE] SELECT successful\r\n"))
        reply = self.send(b"e EXAMINE INBOX")
        self.assertIn(b"* OK [PERMANENTFLAGS ()] ", reply)
        self.assertIn(b"* OK [UIDNEXT 3] ", reply)
        self.assertTrue(reply.endswith(b"e OK [READ-ONLY] EXAMINE successful\r\n"))

    def test_headerFieldsEndWithBlankLine(self) -> None:
        self.send(b"s SELECT INBOX")
        reply = self.send(b"h FETCH 1 (BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
        self.assertIn(b"BODY[HEADER.FIELDS (Subject)] {22}\r\nSubject: Message 1\r\n\r\n)", reply)
        reply = self.send(b"h FETCH 1 (BODY.PEEK[HEADER.FIELDS (X-NONE)])")
        self.assertIn(b"{2}\r\n\r\n)", reply)

    def test_missingSectionIsEmpty(self) -> None:
        """
        A section that does not exist is the empty string (RFC 3501 section
        6.4.5); Twisted raised in the middle of the response and the
        connection was dropped.
        """
        self.send(b"s SELECT INBOX")
        reply = self.send(b"f FETCH 1:* (BODY[1.2.3.4.5.6.7.8.9.10])")
        self.assertEqual(
            reply,
            b'* 1 FETCH (BODY[1.2.3.4.5.6.7.8.9.10] "")\r\n'
            b'* 2 FETCH (BODY[1.2.3.4.5.6.7.8.9.10] "")\r\n'
            b"f OK FETCH completed\r\n",
        )
        self.assertFalse(self.transport.disconnecting)
        self.assertIn(b"Body 1", self.send(b"b FETCH 1 (BODY[1])"))

    def test_deepSearchIsBAD(self) -> None:
        """
        Deeply nested criteria get BAD, counted against the error budget,
        with one log line and no traceback.
        """
        from twisted.logger import globalLogPublisher

        events: list[dict[str, Any]] = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        self.send(b"s SELECT INBOX")
        self.assertEqual(self.send(b"n SEARCH NOT NOT ALL"), b"* SEARCH 1 2\r\nn OK SEARCH completed\r\n")
        before = self.protocol.errors
        for query in (b"NOT " * 1000 + b"ALL", b"OR ALL " * 1000 + b"ALL"):
            reply = self.send(b"d SEARCH " + query)
            self.assertEqual(reply, b"d BAD SEARCH failed: invalid search criteria\r\n")
        self.assertEqual(self.protocol.errors, before + 2)
        self.assertEqual([e for e in events if e.get("log_failure") is not None], [])

    def test_searchFailureLoggedAsOneLine(self) -> None:
        from twisted.logger import globalLogPublisher

        events: list[dict[str, Any]] = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        self.send(b"s SELECT INBOX")
        self.patch(self.protocol.mbox, "search", lambda query, uid: 1 / 0)
        self.assertEqual(self.send(b"x SEARCH ALL"), b"x NO [SERVERBUG] SEARCH failed\r\n")
        [event] = [e for e in events if e.get("command") == "SEARCH"]
        self.assertEqual(event["errorType"], "ZeroDivisionError")
        self.assertIsNone(event.get("log_failure"))

    def test_fetchFailuresLoggedAsOneLine(self) -> None:
        """
        A FETCH the store cannot answer is C{NO [SERVERBUG]} with one log
        line; one that fails half-way through its response ends the
        connection, also with one line.
        """
        from twisted.logger import globalLogPublisher

        events: list[dict[str, Any]] = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        self.send(b"s SELECT INBOX")

        def unreadable(*args: Any, **kwargs: Any) -> Any:
            raise OSError(5, "Input/output error")

        mbox = self.protocol.mbox
        readable = mbox.fetch
        mbox.fetch = unreadable
        self.assertEqual(self.send(b"f FETCH 1 (FLAGS)"), b"f NO [SERVERBUG] FETCH failed\r\n")
        mbox.fetch = readable
        self.patch(self.protocol, "spew_flags", unreadable)
        self.send(b"g FETCH 1 (FLAGS)")
        self.assertTrue(self.transport.disconnecting)
        logged = [e.get("command") for e in events if e.get("errorType") == "OSError"]
        self.assertEqual(logged, ["FETCH", "FETCH response"])
        self.assertEqual([e for e in events if e.get("log_failure") is not None], [])

    def test_id(self) -> None:
        """
        ID (RFC 2971) is listed and answered in every state; the client's
        values are logged escaped.
        """
        from twisted.logger import globalLogPublisher

        events: list[dict[str, Any]] = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        self.assertIn(b" ID", self.send(b"c CAPABILITY").split(b"\r\n")[0])
        reply = self.send(b'i ID ("name" "Thunder\\"bird" "version" "115\x01")')
        from clientid_twisted import __version__

        self.assertEqual(
            reply,
            b'* ID ("name" "clientid-twisted" "version" "%s")\r\ni OK ID completed\r\n'
            % (__version__.encode("ascii"),),
        )
        [event] = [e for e in events if e.get("imapEvent") == "id"]
        self.assertEqual(event["clientID"], 'name=Thunder"bird version=115\\x01')
        self.assertTrue(self.send(b"n ID NIL").endswith(b"n OK ID completed\r\n"))
        self.assertTrue(self.send(b'b ID ("name")').startswith(b"b BAD "))


def _message(n: int) -> Any:
    import io

    return io.BytesIO(b"Subject: Message %d\r\n\r\nBody %d\r\n" % (n, n))


class EndToEndTests(TestCase):
    """
    The assembled server, SMTP in and IMAP out, over real TLS.
    """

    def setUp(self) -> None:
        self.server = self.successResultOf(
            assembleServer(Path(self.mktemp()), hostname="mail.example.test")
        )
        self.addCleanup(self.server.authentication.store.close)
        self.server.users.addUser("alice@example.test", "alice password")
        self.server.users.addUser("bob@example.test", "bob password")
        self.context = ssl.create_default_context(
            cadata=self.server.certificate.certificatePEM.decode()
        )
        registerIMAPLibCommand(self, "CLIENTID")
        self.ports: dict[str, int] = {}
        trackers = []
        for name, factory, implicit in [
            ("smtp", self.server.smtpFactory, False),
            ("imap", self.server.imapFactory, False),
            ("imaps", self.server.imapFactory, True),
        ]:
            if name != "imaps":
                trackers.append(ConnectionTracker(factory))
            listening = reactor.listenTCP(
                0,
                TLSMemoryBIOFactory(self.server.tlsOptions, False, factory) if implicit else factory,
                interface="127.0.0.1",
            )
            self.addCleanup(listening.stopListening)
            self.ports[name] = listening.getHost().port
        for tracker in trackers:
            self.addCleanup(tracker.whenClosed)

    def submit(self, body: bytes = MESSAGE) -> None:
        with smtplib.SMTP("127.0.0.1", self.ports["smtp"], timeout=10) as client:
            client.starttls(context=self.context)
            client.ehlo("laptop")
            assert client.docmd("CLIENTID", "UUID " + TOKEN)[0] == 250
            client.login("alice@example.test", "alice password")
            client.sendmail("alice@example.test", ["bob@example.test"], body)

    def read(self, implicit: bool) -> dict[str, Any]:
        self.submit()
        result: dict[str, Any] = {}
        if implicit:
            connection: imaplib.IMAP4 = imaplib.IMAP4_SSL(
                "127.0.0.1", self.ports["imaps"], ssl_context=self.context, timeout=10
            )
        else:
            connection = imaplib.IMAP4("127.0.0.1", self.ports["imap"], timeout=10)
            result["plainCapabilities"] = connection.capabilities
            connection.starttls(ssl_context=self.context)
        try:
            result["capabilities"] = connection.capabilities
            result["clientid"] = connection._simple_command("CLIENTID", "UUID", TOKEN)
            connection.login("bob@example.test", "bob password")
            status, exists = connection.select("INBOX")
            # imaplib hands out its own list, which later replies extend.
            result["select"] = (status, list(exists))
            status, found = connection.search(None, "SUBJECT", '"for bob"')
            result["fetch"] = connection.fetch(found[0].split()[-1], "(UID FLAGS BODY[])")
            # Mail delivered while the mailbox is selected shows up on the
            # next command.
            self.submit(b"Subject: second\r\n\r\nSecond message.\r\n")
            connection.noop()
            result["exists"] = connection.response("EXISTS")
            # (The policy's "new device" notice may land in the INBOX too.)
            status, found = connection.search(None, "SUBJECT", "second")
            result["fetch2"] = connection.fetch(found[0].split()[-1], "(BODY.PEEK[TEXT])")
        finally:
            connection.logout()
        return result

    @defer.inlineCallbacks
    def _readOver(self, implicit: bool) -> Any:
        result = yield deferToThread(self.read, implicit)
        if not implicit:
            self.assertNotIn("CLIENTID", result["plainCapabilities"])
        self.assertIn("CLIENTID", result["capabilities"])
        self.assertEqual(result["clientid"][0], "OK")
        # The submitted message, and perhaps already the policy's notice of
        # bob's new device.
        self.assertEqual(result["select"][0], "OK")
        self.assertIn(result["select"][1], ([b"1"], [b"2"]))
        status, data = result["fetch"]
        self.assertEqual(status, "OK")
        body = data[0][1]
        self.assertTrue(body.startswith(b"Received: "), body[:60])
        self.assertTrue(body.endswith(MESSAGE), body)
        self.assertGreaterEqual(int(result["exists"][1][-1]), 2)
        self.assertIn(b"Second message.", result["fetch2"][1][0][1])

    def test_startTLS(self) -> Any:
        return self._readOver(implicit=False)

    def test_implicitTLS(self) -> Any:
        return self._readOver(implicit=True)

    @defer.inlineCallbacks
    def test_ownClient(self) -> Any:
        """
        The project's IMAP client does STARTTLS, CAPABILITY, CLIENTID and
        LOGIN, and reads the message.
        """
        yield deferToThread(self.submit)
        client = ClientIDIMAP4Client()
        tracker = ConnectionTracker()
        tracker.track(client)
        self.addCleanup(tracker.whenClosed)
        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", self.ports["imap"])
        yield connectProtocol(endpoint, client)
        identity = ClientIdentity("UUID", TOKEN)
        yield loginWithClientID(
            client,
            identity,
            b"bob@example.test",
            b"bob password",
            clientTLSOptions(self.server.certificate),
        )
        self.assertTrue(client.clientIDAccepted)
        yield client.select("INBOX")
        messages = yield client.fetchSpecific("1")
        self.assertIn("Hello Bob, over IMAP.", messages[1][0][2])
        yield client.logout()



class HandlingFlagWiringTests(SynchronousTestCase):
    """
    The assembled server hands its policy's handling flags to both
    protocols, so their log lines follow C{system-log} and C{ignore}.
    """

    def test_wired(self) -> None:
        dataDir = Path(self.mktemp())
        dataDir.mkdir()
        (dataDir / "clientid.toml").write_text('[types.UUID]\nhandling = ["ignore"]\n')
        server = self.successResultOf(assembleServer(dataDir, hostname="mail.example.test"))
        self.addCleanup(server.authentication.store.close)
        for factory in (server.smtpFactory, server.imapFactory):
            protocol = factory.buildProtocol(None)
            self.assertFalse(protocol.identityLogPolicy("UUID"))
            self.assertTrue(protocol.identityLogPolicy("OTHER"))
