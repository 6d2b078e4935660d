"""
Tests for alerts: the L{Alert} value and its three observers (the log, a
notice in the account's INBOX, a webhook).
"""

from __future__ import annotations

import email
import email.policy
import json
from pathlib import Path
from typing import Any

from zope.interface import implementer
from zope.interface.verify import verifyObject

from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.logger import Logger, formatEvent
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.iweb import IAgent

from clientid_twisted.interfaces import IAlertObserver
from clientid_twisted.policy._alerts import Alert, LogAlertObserver, notifyAll
from clientid_twisted.server.mailnotice import MailboxAlertObserver
from clientid_twisted.policy._webhook import WebhookAlertObserver
from clientid_twisted.server.users import UserDatabase, usersPath
from clientid_twisted.store._records import Event
from tests.policyharness import PolicyHarness

ALERT = Alert(
    kind="device-new",
    time=1_700_000_000.0,
    account="alice@example.test",
    typeName="UUID",
    fingerprint="0123456789abcdef",
    address="192.0.2.1",
    protocol="imap",
)


def synchronously(f: Any, *args: Any) -> defer.Deferred[Any]:
    return defer.maybeDeferred(f, *args)


class AlertTests(SynchronousTestCase):
    def test_fromEvent(self) -> None:
        event = Event("device-locked", "a@b.test", "UUID", "f" * 16, "192.0.2.1", "smtp", "5 failed", 12.0)
        alert = Alert.fromEvent(event)
        self.assertEqual(
            alert, Alert("device-locked", 12.0, "a@b.test", "UUID", "f" * 16, "192.0.2.1", "smtp", "5 failed")
        )

    def test_json(self) -> None:
        self.assertEqual(
            ALERT.asJSON(),
            {
                "kind": "device-new",
                "summary": "a new device logged in",
                "time": 1_700_000_000.0,
                "account": "alice@example.test",
                "type": "UUID",
                "fingerprint": "0123456789abcdef",
                "address": "192.0.2.1",
                "protocol": "imap",
                "detail": None,
            },
        )

    def test_forAccount(self) -> None:
        self.assertTrue(ALERT.forAccount)
        self.assertFalse(Alert("under-attack", 0.0).forAccount)
        self.assertFalse(Alert("token-locked", 0.0, account="a@b.test").forAccount)

    def test_notifyAllSurvivesABrokenObserver(self) -> None:
        heard = []

        @implementer(IAlertObserver)
        class Broken:
            def alertRaised(self, alert: Alert) -> None:
                raise RuntimeError("no")

        @implementer(IAlertObserver)
        class Listening:
            def alertRaised(self, alert: Alert) -> None:
                heard.append(alert)

        notifyAll([Broken(), Listening()], ALERT, Logger())
        self.assertEqual(heard, [ALERT])
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)


class LogAlertObserverTests(SynchronousTestCase):
    def test_interface(self) -> None:
        self.assertTrue(verifyObject(IAlertObserver, LogAlertObserver()))

    def test_logged(self) -> None:
        events: list[dict[str, Any]] = []
        LogAlertObserver(Logger(observer=events.append)).alertRaised(ALERT)
        [event] = events
        self.assertEqual(
            (event["alertKind"], event["account"], event["clientIDFingerprint"], event["address"]),
            ("device-new", "alice@example.test", "0123456789abcdef", "192.0.2.1"),
        )
        self.assertIn("a new device logged in", formatEvent(event))


class SystemLogFlagTests(SynchronousTestCase):
    def test_typeWithoutSystemLog(self) -> None:
        """
        An alert about a device whose type lacks C{system-log} carries type
        and fingerprint to its observers (webhook, notice), but its log
        line names neither; with the default handling it does.
        """
        harness = PolicyHarness(
            self,
            {
                "types": {
                    "QUIET": {"handling": ["auth", "alert-success"]},
                    "UUID": {"handling": ["system-log", "auth", "alert-success"]},
                }
            },
        )
        self.assertEqual(harness.login(typeName="QUIET"), "ok")
        self.assertEqual(harness.login(typeName="UUID", token="token-B"), "ok")
        quiet = [a for a in harness.observer.alerts if a.typeName == "QUIET"]
        loud = [a for a in harness.observer.alerts if a.typeName == "UUID"]
        self.assertTrue(quiet and loud)
        events: list[dict[str, Any]] = []
        observer = LogAlertObserver(Logger(observer=events.append))
        for alert in quiet:
            self.assertFalse(alert.systemLog)
            self.assertEqual(alert.asJSON()["type"], "QUIET")
            observer.alertRaised(alert)
        for event in events:
            self.assertIsNone(event["clientIDType"])
            self.assertIsNone(event["clientIDFingerprint"])
            self.assertNotIn("QUIET", formatEvent(event))
            self.assertNotIn(harness.fingerprint(typeName="QUIET"), formatEvent(event))
        del events[:]
        for alert in loud:
            observer.alertRaised(alert)
        self.assertIn("UUID", "".join(formatEvent(e) for e in events))


class MailboxAlertObserverTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.dataDir = Path(self.mktemp())
        self.users = UserDatabase(usersPath(self.dataDir))
        self.users.addUser("alice@example.test", "pw")
        self.clock = Clock()
        self.clock.advance(1_700_000_000)
        self.observer = MailboxAlertObserver(
            self.dataDir, self.users, "mail.example.test", clock=self.clock, runInThread=synchronously
        )

    def inbox(self, address: str = "alice@example.test") -> list[bytes]:
        new = self.dataDir / "mail" / address / "new"
        return [p.read_bytes() for p in sorted(new.iterdir())] if new.exists() else []

    def test_interface(self) -> None:
        self.assertTrue(verifyObject(IAlertObserver, self.observer))

    def test_delivered(self) -> None:
        self.observer.alertRaised(ALERT)
        [raw] = self.inbox()
        self.assertNotIn(b"\n", raw.replace(b"\r\n", b""))
        message = email.message_from_bytes(raw, policy=email.policy.SMTP)
        self.assertEqual(message["From"], "Mail security <postmaster@mail.example.test>")
        self.assertEqual(message["To"], "alice@example.test")
        self.assertEqual(message["Subject"], "New device logged in to your mail account")
        self.assertEqual(message["Date"].datetime.timestamp(), 1_700_000_000)
        self.assertTrue(message["Message-ID"].endswith("@mail.example.test>"))
        self.assertEqual(message["Auto-Submitted"], "auto-generated")
        body = message.get_content()
        self.assertIn("a new device logged in", body)
        self.assertIn("UUID 0123456789abcdef", body)
        self.assertIn("192.0.2.1", body)

    def test_unknownAccountGetsNothing(self) -> None:
        """
        Login names come from the network: no maildir for a name that is
        not an account.
        """
        from attrs import evolve

        self.observer.alertRaised(evolve(ALERT, account="mallory@example.test"))
        self.assertFalse((self.dataDir / "mail" / "mallory@example.test").exists())

    def test_operatorAlertsNotMailed(self) -> None:
        from attrs import evolve

        self.observer.alertRaised(evolve(ALERT, kind="token-locked"))
        self.observer.alertRaised(evolve(ALERT, kind="under-attack", account=None))
        self.assertEqual(self.inbox(), [])

    def test_offTheCallingThread(self) -> None:
        calls = []
        observer = MailboxAlertObserver(
            self.dataDir,
            self.users,
            "mail.example.test",
            clock=self.clock,
            runInThread=lambda f, *a: calls.append((f, a)) or defer.Deferred(),
        )
        observer.alertRaised(ALERT)
        self.assertEqual(calls, [(observer.deliver, (ALERT,))])
        self.assertEqual(self.inbox(), [])

    def test_oneNoticePerIntervalWithCount(self) -> None:
        """
        Forty alerts of a kind in an hour make one notice; the first after
        the interval says how many there were in between.
        """
        from attrs import evolve

        for n in range(40):
            self.observer.alertRaised(evolve(ALERT, kind="device-refused", fingerprint=f"{n:016x}"))
            self.clock.advance(60)
        self.assertEqual(len(self.inbox()), 1)
        self.assertNotIn(b"times since the last notice", self.inbox()[0])
        self.observer.alertRaised(ALERT)  # another kind: its own ration
        self.assertEqual(len(self.inbox()), 2)
        self.clock.advance(3600)
        self.observer.alertRaised(evolve(ALERT, kind="device-refused", fingerprint="f" * 16))
        notices = [m for m in self.inbox() if b"refused device" in m]
        self.assertEqual(len(notices), 2)
        latest = max(notices, key=lambda m: b"This happened" in m)
        self.assertIn(b"This happened 40 times since the last notice of this kind", latest)
        self.assertIn(b"f" * 16, latest)

    def test_failuresWithoutPasswordNotMailed(self) -> None:
        """
        Failed logins anyone can cause (wrong passwords) are logged and
        sent to the webhook, not mailed, unless notice_failures asks.
        """
        from attrs import evolve

        for kind in ("device-locked", "account-closed"):
            self.observer.alertRaised(evolve(ALERT, kind=kind))
        self.assertEqual(self.inbox(), [])
        observer = MailboxAlertObserver(
            self.dataDir, self.users, "mail.example.test", clock=self.clock,
            runInThread=synchronously, failureNotices=True,
        )
        observer.alertRaised(evolve(ALERT, kind="device-locked"))
        self.assertEqual(len(self.inbox()), 1)

    def test_configured(self) -> None:
        """
        The server's observer takes [alerts] notice_interval_seconds and
        notice_failures.
        """
        from clientid_twisted.policy._builder import buildAuthentication
        from clientid_twisted.server.assembly import mailboxNotices
        from clientid_twisted.server.users import ScryptChecker

        authentication = self.successResultOf(buildAuthentication(
            ScryptChecker(self.users),
            {"alerts": {"notice_interval_seconds": 60, "notice_failures": True}},
            "memory:",
            applicationObservers=mailboxNotices(self.dataDir, self.users, "mail.example.test"),
            clock=self.clock,
        ))
        [observer] = [
            o for o in authentication.policy.alertObservers
            if isinstance(o, MailboxAlertObserver)
        ]
        self.assertEqual((observer.interval, observer.failureNotices), (60.0, True))

    def test_failureLogged(self) -> None:
        observer = MailboxAlertObserver(
            self.dataDir, self.users, "mail.example.test", clock=self.clock,
            runInThread=lambda f, *a: defer.fail(OSError("disk full")),
        )
        observer.alertRaised(ALERT)
        self.assertEqual(len(self.flushLoggedErrors(OSError)), 1)


class Response:
    def __init__(self, code: int) -> None:
        self.code = code

    def deliverBody(self, protocol: Any) -> None:
        protocol.dataReceived(b"ignored")
        protocol.connectionLost(None)


class Body:
    def __init__(self) -> None:
        self.data = b""

    def write(self, data: bytes) -> None:
        self.data += data


@implementer(IAgent)
class FakeAgent:
    def __init__(self) -> None:
        self.requests: list[tuple[bytes, bytes, Any, bytes, defer.Deferred[Any]]] = []

    def request(self, method: bytes, uri: bytes, headers: Any = None, bodyProducer: Any = None) -> Any:
        body = Body()
        bodyProducer.startProducing(body)
        self.assertLength = bodyProducer.length == len(body.data)
        d: defer.Deferred[Any] = defer.Deferred()
        self.requests.append((method, uri, headers, body.data, d))
        return d


class WebhookAlertObserverTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.agent = FakeAgent()
        self.clock = Clock()
        self.observer = WebhookAlertObserver(
            "https://hooks.example.test/alerts", agent=self.agent, clock=self.clock, retries=2, timeout=10
        )

    def test_interface(self) -> None:
        self.assertTrue(verifyObject(IAlertObserver, self.observer))

    def test_posted(self) -> None:
        self.observer.alertRaised(ALERT)
        [(method, uri, headers, body, d)] = self.agent.requests
        self.assertEqual((method, uri), (b"POST", b"https://hooks.example.test/alerts"))
        self.assertEqual(headers.getRawHeaders(b"content-type"), [b"application/json"])
        self.assertTrue(self.agent.assertLength)
        self.assertEqual(json.loads(body), ALERT.asJSON())
        self.assertEqual(self.observer.pending, 1)
        d.callback(Response(204))
        self.assertEqual(self.observer.pending, 0)

    def test_neverWaitsForTheWebhook(self) -> None:
        """
        alertRaised returns while the request is still out.
        """
        self.assertIsNone(self.observer.alertRaised(ALERT))
        self.assertFalse(self.agent.requests[0][4].called)

    def test_retriedWithBackoff(self) -> None:
        self.observer.alertRaised(ALERT)
        self.agent.requests[0][4].errback(ConnectionRefusedError())
        self.assertEqual(len(self.agent.requests), 1)
        self.clock.advance(1)
        self.assertEqual(len(self.agent.requests), 2)
        self.agent.requests[1][4].callback(Response(503))
        self.clock.advance(1)
        self.assertEqual(len(self.agent.requests), 2)
        self.clock.advance(1)
        self.assertEqual(len(self.agent.requests), 3)
        self.agent.requests[2][4].callback(Response(200))
        self.assertEqual(self.observer.pending, 0)
        self.assertEqual({r[3] for r in self.agent.requests}, {self.agent.requests[0][3]})

    def test_givesUp(self) -> None:
        events: list[dict[str, Any]] = []
        self.observer.log = Logger(observer=events.append)
        self.observer.alertRaised(ALERT)
        for n in range(3):
            self.agent.requests[-1][4].callback(Response(500))
            self.clock.advance(60)
        self.assertEqual(len(self.agent.requests), 3)
        self.assertEqual(self.observer.pending, 0)
        self.assertIn("gave up", events[-1]["log_format"])

    def test_timeout(self) -> None:
        self.observer.alertRaised(ALERT)
        self.clock.advance(10)
        self.assertTrue(self.agent.requests[0][4].called)
        self.clock.advance(1)
        self.assertEqual(len(self.agent.requests), 2)

    def test_pendingBounded(self) -> None:
        self.observer.maxPending = 2
        for n in range(3):
            self.observer.alertRaised(ALERT)
        self.assertEqual(len(self.agent.requests), 2)

    def test_agentRaises(self) -> None:
        class Raising:
            def request(self, *args: Any) -> Any:
                raise ValueError("bad URL")

        observer = WebhookAlertObserver("http://x.test/", agent=Raising(), clock=self.clock, retries=0)
        observer.alertRaised(ALERT)
        self.assertEqual(observer.pending, 0)
