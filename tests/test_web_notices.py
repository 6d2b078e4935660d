"""
The notices' self-service links and the server's own messages
(L{clientid_twisted.server.mailnotice} with the site on).
"""

from __future__ import annotations

from pathlib import Path

from attrs import evolve
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from clientid_twisted.server.mailnotice import MailboxAlertObserver
from clientid_twisted.server.users import UserDatabase, usersPath
from tests.test_policy_alerts import ALERT, synchronously

REFUSED = evolve(ALERT, kind="device-refused")


class NoticeLinkTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.dataDir = Path(self.mktemp())
        self.users = UserDatabase(usersPath(self.dataDir))
        self.users.addUser("alice@example.test", "pw")
        self.clock = Clock()
        self.clock.advance(1_700_000_000)
        self.asked: list[tuple[str, str]] = []

        def linksFor(account: str, fingerprint: str) -> tuple[str, str]:
            self.asked.append((account, fingerprint))
            return (f"https://mail.example.test/link/approve?t={fingerprint}", "https://mail.example.test/link/disown?t=x")

        self.observer = MailboxAlertObserver(
            self.dataDir, self.users, "mail.example.test", clock=self.clock,
            runInThread=synchronously, linksFor=linksFor,
        )

    def inbox(self) -> list[str]:
        new = self.dataDir / "mail" / "alice@example.test" / "new"
        return [p.read_text() for p in sorted(new.iterdir())] if new.exists() else []

    def test_refusedNoticeCarriesLinks(self) -> None:
        self.observer.alertRaised(REFUSED)
        [message] = self.inbox()
        self.assertIn(
            "Device UUID 0123456789abcdef:\n"
            "  If this was you, approve it (the link works once):\n"
            "    https://mail.example.test/link/approve?t=0123456789abcdef\n"
            "  If it was not you, revoke it, then change your password:\n"
            "    https://mail.example.test/link/disown?t=x\n",
            message,
        )
        self.assertNotIn("ask your administrator", message)
        self.assertEqual(self.asked, [("alice@example.test", "0123456789abcdef")])

    def test_rationedDevicesListedWithTheirLinks(self) -> None:
        """
        Refused devices whose notices were rationed are listed, each with
        its own links, in the next notice of the kind.
        """
        self.observer.alertRaised(REFUSED)
        for fingerprint in ["1111111111111111", "2222222222222222", "1111111111111111"]:
            self.clock.advance(60)
            self.observer.alertRaised(evolve(REFUSED, fingerprint=fingerprint))
        self.assertEqual(len(self.inbox()), 1)
        self.clock.advance(3600)
        self.observer.alertRaised(evolve(REFUSED, fingerprint="3333333333333333"))
        second = self.inbox()[1]
        self.assertIn("This happened 4 times", second)
        for fingerprint in ["3333333333333333", "1111111111111111", "2222222222222222"]:
            self.assertEqual(second.count(f"Device UUID {fingerprint}:"), 1)
            self.assertIn(f"/link/approve?t={fingerprint}", second)

    def test_newDeviceNoticeCarriesLinks(self) -> None:
        self.observer.alertRaised(evolve(REFUSED, kind="device-new"))
        [message] = self.inbox()
        self.assertIn("/link/approve?t=", message)

    def test_otherNoticesDoNot(self) -> None:
        self.observer.alertRaised(evolve(REFUSED, kind="login"))
        [message] = self.inbox()
        self.assertNotIn("/link/", message)
        self.assertIn("ask your administrator", message)
        self.assertEqual(self.asked, [])

    def test_serverMessage(self) -> None:
        path = self.successResultOf(
            self.observer.deliverMessage("alice@example.test", "Sign-in link", ["Hello", "https://x/signin?t=1"])
        )
        text = Path(path).read_text()
        self.assertIn("Subject: Sign-in link\n", text)
        self.assertIn("\nHello\nhttps://x/signin?t=1\n", text)
        self.assertIn("Auto-Submitted: auto-generated", text)

    def test_serverMessageToNobody(self) -> None:
        self.assertIsNone(
            self.successResultOf(self.observer.deliverMessage("nobody@example.test", "x", ["y"]))
        )


class GatewayNoticeLinkTests(SynchronousTestCase):
    """
    In gateway mode the notices wait for the next login and are APPENDed to
    the backend INBOX; they carry the same links.
    """

    def test_links(self) -> None:
        from clientid_twisted.gateway.imap import PendingNotices

        from clientid_twisted.store import MemoryStore

        notices = PendingNotices(
            "mail.example.org",
            MemoryStore(Clock()),
            linksFor=lambda account, fp: (f"https://a/{account}/{fp}", "https://d/x"),
        )
        notices.alertRaised(REFUSED)
        notices.alertRaised(evolve(REFUSED, kind="login"))
        refused, login = self.successResultOf(notices.take("alice@example.test"))
        self.assertIn(b"    https://a/alice@example.test/0123456789abcdef\r\n", refused)
        self.assertIn(b"    https://d/x\r\n", refused)
        self.assertNotIn(b"https://", login)
