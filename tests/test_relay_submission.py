"""
The assembled server with C{[relay]}, over real sockets: Python's
C{smtplib} submits, a capturing Twisted smarthost on loopback (STARTTLS,
AUTH, its own certificate) receives, and bounces are read back over IMAP
with C{imaplib}.
"""

from __future__ import annotations

import email
import email.policy
import smtplib
import ssl
from pathlib import Path
from typing import Any, Callable

from twisted.internet import defer, reactor, task
from twisted.internet.threads import deferToThread
from twisted.mail import smtp
from twisted.trial.unittest import SynchronousTestCase, TestCase

from clientid_twisted.server.assembly import MailServer, assembleServer
from clientid_twisted.server.delivery import SubmissionDelivery
from clientid_twisted.server.relayqueue import RelayQueue
from clientid_twisted.testing import ConnectionTracker, throwawayCertificate
from tests.runningserver import fetchInbox
from tests.services import freePort
from tests.smarthost import SMARTHOST_PASSWORD, SMARTHOST_USER, CaptureSmarthost

PASSWORD = "correct horse"
MESSAGE = b"Subject: out\r\nFrom: alice@example.test\r\nMessage-ID: <out@example.test>\r\n\r\nHello Carol.\r\n"


def relayConfig(dataDir: Path, port: int) -> str:
    (dataDir / "ca.pem").write_bytes(throwawayCertificate().certificatePEM)
    (dataDir / "relay-password").write_bytes(SMARTHOST_PASSWORD + b"\n")
    return (
        "[server]\nauth_failure_delay_seconds = 0\n\n"
        "[relay]\n"
        f'smarthost = "tcp:host=localhost:port={port}"\n'
        "starttls = true\n"
        f'username = "{SMARTHOST_USER.decode()}"\n'
        'password_file = "relay-password"\n'
        'ca = "ca.pem"\n'
    )


def waitFor(predicate: Callable[[], bool], timeout: float = 20) -> defer.Deferred[None]:
    """
    Poll C{predicate} on the reactor until it holds; fail after C{timeout}.
    """

    @defer.inlineCallbacks
    def poll() -> Any:
        for _ in range(int(timeout / 0.05)):
            if predicate():
                return
            yield task.deferLater(reactor, 0.05, lambda: None)
        raise AssertionError("condition not met in time")

    return poll()


class RelaySubmissionTests(TestCase):
    """
    Authenticated mail for other domains goes out through the smarthost.
    """

    def startServer(self, smarthostPort: int) -> MailServer:
        dataDir = Path(self.mktemp())
        dataDir.mkdir(parents=True)
        (dataDir / "clientid.toml").write_text(relayConfig(dataDir, smarthostPort))
        server = self.successResultOf(assembleServer(dataDir, hostname="mail.example.test"))
        self.addCleanup(server.authentication.store.close)
        server.users.addUser("alice@example.test", PASSWORD)
        assert server.relay is not None
        server.relay.startService()
        self.addCleanup(server.relay.stopService)
        connections = ConnectionTracker(server.smtpFactory)
        listener = reactor.listenTCP(0, server.smtpFactory, interface="127.0.0.1")
        self.addCleanup(listener.stopListening)
        imapConnections = ConnectionTracker(server.imapFactory)
        imap = reactor.listenTCP(0, server.imapFactory, interface="127.0.0.1")
        self.addCleanup(imap.stopListening)
        self.addCleanup(connections.whenClosed)
        self.addCleanup(imapConnections.whenClosed)
        self.port = listener.getHost().port
        self.imapPort = imap.getHost().port
        self.context = ssl.create_default_context(cadata=server.certificate.certificatePEM.decode())
        return server

    def submit(self, recipients: list[str], login: bool = True) -> dict[str, Any]:
        """
        Submit L{MESSAGE} as alice (blocking; run in a thread).
        """
        results: dict[str, Any] = {}
        client = smtplib.SMTP("127.0.0.1", self.port, timeout=10)
        try:
            client.ehlo("laptop.example.net")
            client.starttls(context=self.context)
            client.ehlo("laptop.example.net")
            if login:
                client.login("alice@example.test", PASSWORD)
            results["mail"] = client.mail("alice@example.test")
            results["rcpt"] = [client.rcpt(r) for r in recipients]
            if any(code == 250 for code, _ in results["rcpt"]):
                results["data"] = client.data(MESSAGE)
        finally:
            client.quit()
        return results

    def readInbox(self) -> list[bytes]:
        return fetchInbox(self.imapPort, self.context, "alice@example.test", PASSWORD)

    @defer.inlineCallbacks
    def test_relayed(self) -> Any:
        """
        A message for another domain is accepted with 250 and arrives at
        the smarthost with our C{Received:} header, the envelope intact;
        the queue is empty afterwards.
        """
        smarthost = CaptureSmarthost.start(self)
        server = self.startServer(smarthost.port)
        results = yield deferToThread(self.submit, ["Carol@Remote.test"])
        self.assertEqual(results["rcpt"][0][0], 250)
        self.assertEqual(results["data"][0], 250)
        yield waitFor(lambda: len(smarthost.box) == 1)
        [message] = smarthost.box
        self.assertEqual(message.sender, b"alice@example.test")
        self.assertEqual(message.recipients, [b"Carol@Remote.test"])
        self.assertEqual(message.avatarId, SMARTHOST_USER)
        self.assertTrue(message.data.startswith(b"Received: from relay"), message.data[:100])
        self.assertIn(b"by mail.example.test with ESMTPSA", message.data)
        self.assertTrue(message.data.endswith(MESSAGE), message.data)
        yield waitFor(lambda: server.relay.queueLength() == 0)
        self.assertEqual(list((server.dataDir / "queue").iterdir()), [])

    @defer.inlineCallbacks
    def test_queuedBeforeReply(self) -> Any:
        """
        With the smarthost down, the 250 still means the message is on
        disk: data and envelope in the queue directory.
        """
        server = self.startServer(freePort())
        results = yield deferToThread(self.submit, ["carol@remote.test"])
        self.assertEqual(results["data"][0], 250)
        names = sorted(p.name[-2:] for p in (server.dataDir / "queue").iterdir())
        self.assertEqual(names, ["-D", "-H"])
        self.assertEqual(
            list(RelayQueue(server.dataDir / "queue").entries.values())[0].recipient,
            "carol@remote.test",
        )

    @defer.inlineCallbacks
    def test_refusedBounce(self) -> Any:
        """
        A 550 from the smarthost puts an RFC 3464 report into the
        sender's INBOX, readable over IMAP.
        """
        smarthost = CaptureSmarthost.start(self)
        server = self.startServer(smarthost.port)
        results = yield deferToThread(self.submit, ["reject-me@remote.test"])
        self.assertEqual(results["data"][0], 250)
        yield waitFor(lambda: server.relay.queueLength() == 0)
        [raw] = yield deferToThread(self.readInbox)
        bounce = email.message_from_bytes(raw, policy=email.policy.default)
        self.assertEqual(bounce.get_content_type(), "multipart/report")
        status = bounce.get_payload()[1].get_payload()[1]
        self.assertEqual(status["Final-Recipient"], "rfc822; reject-me@remote.test")
        self.assertEqual(status["Status"], "5.1.1")
        self.assertIn("550 5.1.1 No such user here", status["Diagnostic-Code"])
        self.assertIn("Message-ID: <out@example.test>", bounce.get_payload()[2].get_payload())
        self.assertEqual(smarthost.box, [])

    @defer.inlineCallbacks
    def test_localDomainsNotRelayed(self) -> Any:
        """
        An unknown name in a domain of the server's own accounts is
        refused (550), not sent out; local recipients are still delivered
        locally in the same transaction.
        """
        smarthost = CaptureSmarthost.start(self)
        server = self.startServer(smarthost.port)
        server.users.addUser("bob@example.test", PASSWORD)
        results = yield deferToThread(self.submit, ["dave@example.test", "bob@example.test"])
        self.assertEqual([code for code, _ in results["rcpt"]], [550, 250])
        self.assertEqual(len(list((server.dataDir / "mail" / "bob@example.test" / "new").iterdir())), 1)
        self.assertEqual(list((server.dataDir / "queue").iterdir()), [])

    @defer.inlineCallbacks
    def test_noRelayWithoutLogin(self) -> Any:
        """
        Without AUTH nothing is accepted, so nothing is relayed.
        """
        smarthost = CaptureSmarthost.start(self)
        server = self.startServer(smarthost.port)
        results = yield deferToThread(self.submit, ["carol@remote.test"], False)
        self.assertEqual(results["mail"][0], 530)
        self.assertEqual(list((server.dataDir / "queue").iterdir()), [])


class UnauthenticatedDeliveryTests(SynchronousTestCase):
    """
    The relay decision itself needs an authenticated account, whatever the
    protocol in front of it lets through.
    """

    def test_noAvatar(self) -> None:
        dataDir = Path(self.mktemp())
        from clientid_twisted.server.users import UserDatabase, usersPath

        users = UserDatabase(usersPath(dataDir))
        users.addUser("alice@example.test", "pw")
        queue = RelayQueue(dataDir / "queue")
        anonymous = SubmissionDelivery(dataDir, users, "mail.example.test", None, relayQueue=queue)
        user = smtp.User(b"carol@remote.test", (b"c", b"192.0.2.1"), None, b"alice@example.test")
        self.assertRaises(smtp.SMTPBadRcpt, anonymous.validateTo, user)
        signedIn = SubmissionDelivery(
            dataDir, users, "mail.example.test", "alice@example.test", relayQueue=queue
        )
        self.assertTrue(callable(signedIn.validateTo(user)))
        withoutRelay = SubmissionDelivery(dataDir, users, "mail.example.test", "alice@example.test")
        self.assertRaises(smtp.SMTPBadRcpt, withoutRelay.validateTo, user)


class AssemblyTests(SynchronousTestCase):
    def test_queueGauge(self) -> None:
        """
        The assembled server reports its relay queue to C{--metrics}.
        """
        from clientid_twisted.server.metrics import ServerMetrics

        dataDir = Path(self.mktemp())
        dataDir.mkdir()
        (dataDir / "clientid.toml").write_text(relayConfig(dataDir, 2525))
        metrics = ServerMetrics()
        server = self.successResultOf(assembleServer(dataDir, metrics=metrics))
        self.addCleanup(server.authentication.store.close)
        self.assertIn(b"clientid_relay_queue_messages 0.0", metrics.scrape())
        message = server.relay.queue.newMessage("a@example.test", "b@remote.test", "a@example.test")
        message.eomReceived()
        self.assertIn(b"clientid_relay_queue_messages 1.0", metrics.scrape())
