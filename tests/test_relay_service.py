"""
Tests for L{clientid_twisted.server.relayservice} and
L{clientid_twisted.server.dsn}: the retry schedule, expiry, bounces into
the sender's INBOX and picking up the queue, with a L{Clock} and a fake
smarthost attempt.
"""

from __future__ import annotations

import email
import email.policy
from pathlib import Path
from typing import Any

from twisted.internet import defer
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from clientid_twisted.server.delivery import maildirPath
from clientid_twisted.server.dsn import DeliveryFailure, bounceLines
from clientid_twisted.server.relayqueue import QueueEntry, RelayQueue
from clientid_twisted.server.relaysender import Refused
from clientid_twisted.server.relayservice import (
    POLL_SECONDS,
    InboxBouncer,
    RelayService,
    retryDelay,
)
from clientid_twisted.server.users import UserDatabase, usersPath

NOW = 1700000000.0
DAY = 86400.0


def queueMessage(
    queue: RelayQueue,
    recipient: str = "carol@remote.test",
    sender: str = "alice@example.test",
    account: str | None = "alice@example.test",
) -> QueueEntry:
    message = queue.newMessage(sender, recipient, account)
    for line in [b"Received: from c", b"Subject: report", b"Message-ID: <m1@example.test>", b"", b"hello"]:
        message.lineReceived(line)
    message.eomReceived()
    return message.entry


class FakeSmarthost:
    """
    Records attempts; each returns a Deferred the test fires.
    """

    def __init__(self) -> None:
        self.attempts: list[tuple[QueueEntry, defer.Deferred[None]]] = []

    def send(self, entry: QueueEntry, path: Path) -> defer.Deferred[None]:
        assert path.exists()
        d: defer.Deferred[None] = defer.Deferred()
        self.attempts.append((entry, d))
        return d

    def last(self) -> defer.Deferred[None]:
        return self.attempts[-1][1]


class ServiceTestMixin:
    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(NOW)
        self.dataDir = Path(self.mktemp())  # type: ignore[attr-defined]
        self.users = UserDatabase(usersPath(self.dataDir))
        self.users.addUser("alice@example.test", "pw")
        self.queue = RelayQueue(self.dataDir / "queue", clock=self.clock)
        self.smarthost = FakeSmarthost()
        self.service = self.makeService()

    def makeService(self, queue: RelayQueue | None = None) -> RelayService:
        queue = queue or self.queue
        return RelayService(
            queue,
            self.smarthost.send,
            InboxBouncer(self.dataDir, self.users, "mail.example.test", queue, self.clock),
            maxQueueSeconds=5 * DAY,
            smarthost="smarthost.example.net",
            clock=self.clock,
        )

    def inbox(self) -> list[Any]:
        new = maildirPath(self.dataDir, "alice@example.test") / "new"
        if not new.exists():
            return []
        return [
            email.message_from_bytes(p.read_bytes(), policy=email.policy.default)
            for p in sorted(new.iterdir())
        ]


class RetryScheduleTests(ServiceTestMixin, SynchronousTestCase):
    """
    A message is tried at once, then after 1, 2, 4, ... minutes, at most
    hourly, until C{max_queue_days} have passed; then it is bounced.
    """

    def test_schedule(self) -> None:
        self.assertEqual(
            [retryDelay(n) for n in range(1, 9)],
            [60, 120, 240, 480, 960, 1920, 3600, 3600],
        )

    def test_sentAtOnceAndRemoved(self) -> None:
        self.service.startService()
        entry = queueMessage(self.queue)
        self.assertEqual(self.smarthost.attempts, [])
        self.clock.advance(0)
        self.assertEqual([e.id for e, _ in self.smarthost.attempts], [entry.id])
        self.smarthost.last().callback(None)
        self.assertEqual(list((self.dataDir / "queue").iterdir()), [])
        self.assertEqual(self.queue.entries, {})
        self.assertEqual(self.inbox(), [])

    def test_backoff(self) -> None:
        """
        Each temporary failure is counted on disk and the next attempt
        waits for the next step of the schedule (not before).
        """
        self.service.startService()
        entry = queueMessage(self.queue)
        self.clock.advance(0)
        for failures, delay in enumerate([60, 120, 240, 480], start=1):
            self.smarthost.last().errback(ConnectionRefusedError("smarthost down"))
            self.assertEqual(len(self.smarthost.attempts), failures)
            reread = RelayQueue(self.dataDir / "queue", clock=self.clock).entries[entry.id]
            self.assertEqual(reread.attempts, failures)
            self.assertEqual(reread.nextAttempt, self.clock.seconds() + delay)
            self.assertIn("smarthost down", reread.lastError or "")
            self.clock.pump([POLL_SECONDS] * int(delay / POLL_SECONDS - 1))
            self.assertEqual(len(self.smarthost.attempts), failures)
            self.clock.advance(POLL_SECONDS)
            self.assertEqual(len(self.smarthost.attempts), failures + 1)
        self.assertEqual(self.inbox(), [])

    def test_expiry(self) -> None:
        """
        A temporary failure after C{max_queue_days} bounces the message
        with status 4.4.7 and the last error, and removes it.
        """
        self.service.startService()
        entry = queueMessage(self.queue)
        self.clock.advance(0)
        self.smarthost.last().errback(ConnectionRefusedError("smarthost down"))
        self.clock.advance(5 * DAY)
        self.clock.advance(POLL_SECONDS)
        self.assertEqual(len(self.smarthost.attempts), 2)
        self.smarthost.last().errback(ConnectionRefusedError("still down"))
        [bounce] = self.inbox()
        report = _report(bounce)
        self.assertEqual(report["Status"], "4.4.7")
        self.assertEqual(report["Action"], "failed")
        self.assertIn("still down", report["Diagnostic-Code"])
        self.assertNotIn(entry.id, self.queue.entries)
        self.assertEqual(list((self.dataDir / "queue").iterdir()), [])

    def test_notExpiredBefore(self) -> None:
        self.service.startService()
        queueMessage(self.queue)
        self.clock.advance(0)
        self.smarthost.last().errback(ConnectionRefusedError("down"))
        self.clock.advance(5 * DAY - 3600)
        self.smarthost.last().errback(ConnectionRefusedError("down"))
        self.assertEqual(self.inbox(), [])
        self.assertEqual(len(self.queue.entries), 1)

    def test_refusedBouncesAtOnce(self) -> None:
        """
        A 5xx from the smarthost is not retried: the sender gets an RFC
        3464 report naming the recipient, the smarthost and its reply.
        """
        self.service.startService()
        entry = queueMessage(self.queue, recipient="nobody@remote.test")
        self.clock.advance(0)
        self.smarthost.last().errback(Refused(550, b"5.1.1 <nobody@remote.test>: unknown"))
        [bounce] = self.inbox()
        self.assertEqual(bounce.get_content_type(), "multipart/report")
        self.assertEqual(bounce.get_param("report-type"), "delivery-status")
        self.assertEqual(bounce["To"].addresses[0].addr_spec, "alice@example.test")
        self.assertIn("MAILER-DAEMON@mail.example.test", bounce["From"])
        self.assertEqual(bounce["Auto-Submitted"], "auto-replied")
        text, status, headers = bounce.get_payload()
        self.assertEqual(text.get_content_type(), "text/plain")
        self.assertIn("nobody@remote.test", text.get_content())
        self.assertEqual(status.get_content_type(), "message/delivery-status")
        perMessage, perRecipient = status.get_payload()
        self.assertEqual(perMessage["Reporting-MTA"], "dns; mail.example.test")
        self.assertEqual(perRecipient["Final-Recipient"], "rfc822; nobody@remote.test")
        self.assertEqual(perRecipient["Status"], "5.1.1")
        self.assertEqual(perRecipient["Remote-MTA"], "dns; smarthost.example.net")
        self.assertEqual(
            perRecipient["Diagnostic-Code"], "smtp; 550 5.1.1 <nobody@remote.test>: unknown"
        )
        self.assertEqual(headers.get_content_type(), "text/rfc822-headers")
        self.assertIn("Message-ID: <m1@example.test>", headers.get_payload())
        self.assertNotIn("hello", headers.get_payload())
        self.assertNotIn(entry.id, self.queue.entries)
        self.clock.advance(3600)
        self.assertEqual(len(self.smarthost.attempts), 1)

    def test_nullSenderNotBounced(self) -> None:
        """
        A message with the null sender (itself a bounce) is never bounced
        (RFC 3461 section 6.2); it is dropped.
        """
        self.service.startService()
        queueMessage(self.queue, sender="")
        self.clock.advance(0)
        self.smarthost.last().errback(Refused(550, b"5.1.1 unknown"))
        self.assertEqual(self.inbox(), [])
        self.assertEqual(self.queue.entries, {})

    def test_bounceNotWritten(self) -> None:
        """
        When the INBOX cannot take the bounce, the message stays queued
        rather than vanishing.
        """
        def failing(entry: QueueEntry, failure: DeliveryFailure) -> None:
            raise OSError(28, "No space left on device")

        self.service.bounce = failing
        self.service.startService()
        entry = queueMessage(self.queue)
        self.clock.advance(0)
        self.smarthost.last().errback(Refused(550, b"5.1.1 unknown"))
        self.assertIn(entry.id, self.queue.entries)
        self.assertTrue(self.queue.dataPath(entry.id).exists())

    def test_concurrency(self) -> None:
        self.service.startService()
        for n in range(3):
            queueMessage(self.queue, recipient=f"r{n}@remote.test")
        self.clock.advance(0)
        self.assertEqual(len(self.smarthost.attempts), 2)
        self.smarthost.attempts[0][1].callback(None)
        self.clock.advance(0)
        self.assertEqual(len(self.smarthost.attempts), 3)


class PickUpTests(ServiceTestMixin, SynchronousTestCase):
    """
    What is in the queue directory reaches the smarthost: messages left
    by a stopped server, a flush request, a removal.
    """

    def test_pickedUpAtStart(self) -> None:
        """
        A message queued by an earlier process (before this service
        existed) is sent when the service starts.
        """
        entry = queueMessage(RelayQueue(self.dataDir / "queue", clock=self.clock))
        queue = RelayQueue(self.dataDir / "queue", clock=self.clock)
        self.makeService(queue).startService()
        self.assertEqual([e.id for e, _ in self.smarthost.attempts], [entry.id])

    def test_stoppedMidAttempt(self) -> None:
        """
        Stopping cancels an attempt without counting it; the message is
        tried again at the next start.
        """
        self.service.startService()
        entry = queueMessage(self.queue)
        self.clock.advance(0)
        self.service.stopService()
        self.assertTrue(self.smarthost.last().called)
        self.assertEqual(RelayQueue(self.dataDir / "queue").entries[entry.id].attempts, 0)
        self.service.startService()
        self.assertEqual(len(self.smarthost.attempts), 2)

    def test_flush(self) -> None:
        """
        A flush request (the marker file C{clientid-admin queue flush}
        writes) makes every waiting message due at the next poll.
        """
        self.service.startService()
        queueMessage(self.queue)
        self.clock.advance(0)
        self.smarthost.last().errback(ConnectionRefusedError("down"))
        self.clock.advance(POLL_SECONDS)
        self.assertEqual(len(self.smarthost.attempts), 1)
        RelayQueue(self.dataDir / "queue").requestFlush()
        self.clock.advance(POLL_SECONDS)
        self.assertEqual(len(self.smarthost.attempts), 2)
        self.assertFalse((self.dataDir / "queue" / "flush").exists())

    def test_removed(self) -> None:
        """
        A message removed from the directory (C{queue remove}) is
        forgotten, not tried again.
        """
        self.service.startService()
        entry = queueMessage(self.queue)
        self.clock.advance(0)
        self.smarthost.last().errback(ConnectionRefusedError("down"))
        self.assertTrue(RelayQueue(self.dataDir / "queue").remove(entry.id))
        self.clock.advance(3600)
        self.assertEqual(len(self.smarthost.attempts), 1)
        self.assertEqual(self.service.queueLength(), 0)


class BounceLinesTests(SynchronousTestCase):
    def test_hostileText(self) -> None:
        """
        A smarthost reply or an address with line breaks cannot add header
        lines or parts to the report.
        """
        entry = QueueEntry(
            id="00", sender="a@b\r\nBcc: x@y", recipient="c@d", account="a@b", queued=NOW
        )
        lines = bounceLines(
            entry,
            DeliveryFailure("5.0.0", "550 bad\r\n--boundary\nX: y"),
            "mail.example.test",
            NOW,
            [b"Subject: s"],
        )
        self.assertFalse(any(b"\r" in line or b"\n" in line for line in lines))
        self.assertFalse(any(line.startswith(b"Bcc:") for line in lines))


def _report(bounce: Any) -> dict[str, str]:
    status = bounce.get_payload()[1]
    return dict(status.get_payload()[1].items())


class QueueGaugeTests(ServiceTestMixin, SynchronousTestCase):
    """
    With C{--metrics}, C{clientid_relay_queue_messages} is the queue's
    length at each scrape.
    """

    def test_gauge(self) -> None:
        from clientid_twisted.server.metrics import ServerMetrics

        metrics = ServerMetrics()
        metrics.relayQueueLength(self.service.queueLength)
        self.service.startService()
        queueMessage(self.queue)
        queueMessage(self.queue, recipient="dan@remote.test")
        self.assertIn(b"clientid_relay_queue_messages 2.0", metrics.scrape())
        self.clock.advance(0)
        self.smarthost.attempts[0][1].callback(None)
        self.assertIn(b"clientid_relay_queue_messages 1.0", metrics.scrape())
