"""
Tests for L{clientid_twisted.web.links} and the single-use, void and
rate-limit rules of L{clientid_twisted.web.selfservice}.
"""

from __future__ import annotations

import base64

from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from clientid_twisted._fingerprint import IdentityHasher
from clientid_twisted._identity import ClientIdentity
from clientid_twisted.store._memory import MemoryStore
from clientid_twisted.store._records import APPROVED, PENDING, REVOKED
from clientid_twisted.web.links import (
    APPROVE,
    DISOWN,
    InvalidLink,
    LinkMaker,
    LinkSigner,
    deriveLinkKey,
)
from clientid_twisted.web.selfservice import Notice, RateLimiter, SelfService

KEY = b"k" * 32
NOW = 1_800_000_000.0


def _retamper(token: str, old: bytes, new: bytes) -> str:
    raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    return base64.urlsafe_b64encode(raw.replace(old, new)).decode("ascii").rstrip("=")


class LinkSignerTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.signer = LinkSigner(KEY, ttl=3600)

    def test_roundTrip(self) -> None:
        token = self.signer.sign(APPROVE, "alice@example.test", "523afd6cfe89af26", NOW)
        claim = self.signer.verify(token, APPROVE, NOW + 10)
        self.assertEqual(
            (claim.action, claim.account, claim.fingerprint, claim.issued, claim.expires),
            (APPROVE, "alice@example.test", "523afd6cfe89af26", NOW, NOW + 3600),
        )
        self.assertRegex(claim.linkID, "^[0-9a-f]{32}$")
        self.assertRegex(token, "^[A-Za-z0-9_-]+$")

    def test_linksAreUnique(self) -> None:
        a = self.signer.sign(APPROVE, "alice@example.test", "aa", NOW)
        b = self.signer.sign(APPROVE, "alice@example.test", "aa", NOW)
        self.assertNotEqual(a, b)

    def test_expired(self) -> None:
        token = self.signer.sign(APPROVE, "alice@example.test", "aa", NOW)
        e = self.assertRaises(InvalidLink, self.signer.verify, token, APPROVE, NOW + 3600)
        self.assertEqual(e.reason, "expired")

    def test_wrongAction(self) -> None:
        token = self.signer.sign(DISOWN, "alice@example.test", "aa", NOW)
        e = self.assertRaises(InvalidLink, self.signer.verify, token, APPROVE, NOW)
        self.assertEqual(e.reason, "wrong-action")

    def test_tamperedAccount(self) -> None:
        token = self.signer.sign(APPROVE, "alice@example.test", "aa", NOW)
        forged = _retamper(token, b"alice", b"mally")
        e = self.assertRaises(InvalidLink, self.signer.verify, forged, APPROVE, NOW)
        self.assertEqual(e.reason, "forged")

    def test_tamperedExpiry(self) -> None:
        token = self.signer.sign(APPROVE, "alice@example.test", "aa", NOW)
        later = str(int(NOW + 3600)).encode()
        forged = _retamper(token, later, str(int(NOW + 99999)).encode())
        self.assertEqual(
            self.assertRaises(InvalidLink, self.signer.verify, forged, APPROVE, NOW).reason, "forged"
        )

    def test_otherKey(self) -> None:
        token = LinkSigner(b"x" * 32).sign(APPROVE, "alice@example.test", "aa", NOW)
        self.assertEqual(
            self.assertRaises(InvalidLink, self.signer.verify, token, APPROVE, NOW).reason, "forged"
        )

    def test_malformed(self) -> None:
        for token in ["", "!!!", "a", "YWJj", "x" * 5000]:
            e = self.assertRaises(InvalidLink, self.signer.verify, token, APPROVE, NOW)
            self.assertIn(e.reason, ("malformed", "forged"))

    def test_derivedKeyDiffers(self) -> None:
        """
        The link key is the identity key's own derivative: not the identity
        key, the same for the same identity key.
        """
        self.assertNotEqual(deriveLinkKey(KEY), KEY)
        self.assertEqual(deriveLinkKey(KEY), deriveLinkKey(KEY))
        self.assertNotEqual(deriveLinkKey(KEY), deriveLinkKey(b"j" * 32))


class SelfServiceTests(SynchronousTestCase):
    """
    Links used against a real (memory) store.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(NOW)
        self.store = MemoryStore(self.clock)
        self.hasher = IdentityHasher(KEY)
        self.identity = ClientIdentity("UUID", "23bf83be-aad7-46aa-9e0f-39191ccf402f")
        self.digest = self.hasher.digest(self.identity)
        self.fingerprint = self.hasher.fingerprint(self.identity)
        self.successResultOf(
            self.store.setDeviceState(
                "alice@example.test", self.digest, "UUID", self.fingerprint, PENDING, None
            )
        )
        self.mailed: list[Notice] = []
        self.service = SelfService(
            self.store,
            LinkMaker(LinkSigner(deriveLinkKey(KEY), ttl=3600), "https://mail.example.test:8443/", self.clock.seconds),
            deliver=lambda n: defer.succeed(self.mailed.append(n)),
            accountExists=lambda a: a == "alice@example.test",
        )

    def state(self) -> str:
        records = self.successResultOf(self.store.listDevices("alice@example.test"))
        return records[0].state

    def token(self, url: str) -> str:
        return url.split("?t=", 1)[1]

    def test_linksPointAtTheSite(self) -> None:
        approve, disown = self.service.deviceLinks("alice@example.test", self.fingerprint)
        self.assertTrue(approve.startswith("https://mail.example.test:8443/link/approve?t="))
        self.assertTrue(disown.startswith("https://mail.example.test:8443/link/disown?t="))

    def test_checkChangesNothing(self) -> None:
        approve, _ = self.service.deviceLinks("alice@example.test", self.fingerprint)
        claim, record = self.successResultOf(self.service.checkLink(self.token(approve), APPROVE))
        self.assertEqual(record.fingerprint, self.fingerprint)
        self.successResultOf(self.service.checkLink(self.token(approve), APPROVE))
        self.assertEqual(self.state(), PENDING)

    def test_approveOnce(self) -> None:
        approve, _ = self.service.deviceLinks("alice@example.test", self.fingerprint)
        record = self.successResultOf(self.service.useLink(self.token(approve), APPROVE, "192.0.2.1"))
        self.assertEqual((record.state, self.state()), (APPROVED, APPROVED))
        f = self.failureResultOf(self.service.useLink(self.token(approve), APPROVE, "192.0.2.1"), InvalidLink)
        self.assertEqual(f.value.reason, "used")
        events = self.successResultOf(self.store.listEvents("alice@example.test", 10))
        self.assertEqual(
            [(e.kind, e.fingerprint, e.detail, e.protocol) for e in events],
            [("device-approved", self.fingerprint, "by owner (link)", "web")],
        )

    def test_expiredChangesNothing(self) -> None:
        approve, _ = self.service.deviceLinks("alice@example.test", self.fingerprint)
        self.clock.advance(3600)
        f = self.failureResultOf(self.service.useLink(self.token(approve), APPROVE, "192.0.2.1"), InvalidLink)
        self.assertEqual(f.value.reason, "expired")
        self.assertEqual(self.state(), PENDING)

    def test_disownRevokesAndVoidsApprovals(self) -> None:
        """
        "This wasn't me" revokes the device, and approval links made before
        for it stop working.
        """
        approve, disown = self.service.deviceLinks("alice@example.test", self.fingerprint)
        self.successResultOf(self.service.useLink(self.token(disown), DISOWN, "192.0.2.1"))
        self.assertEqual(self.state(), REVOKED)
        f = self.failureResultOf(self.service.useLink(self.token(approve), APPROVE, "192.0.2.1"), InvalidLink)
        self.assertEqual(f.value.reason, "void")
        self.assertEqual(self.state(), REVOKED)

    def test_unknownDevice(self) -> None:
        approve, _ = self.service.deviceLinks("bob@example.test", self.fingerprint)
        f = self.failureResultOf(self.service.useLink(self.token(approve), APPROVE, "192.0.2.1"), InvalidLink)
        self.assertEqual(f.value.reason, "void")

    def test_signInMailedOnlyToAccounts(self) -> None:
        self.successResultOf(self.service.requestSignIn("nobody@example.test", "192.0.2.1"))
        self.assertEqual(self.mailed, [])
        self.successResultOf(self.service.requestSignIn("alice@example.test", "192.0.2.1"))
        [notice] = self.mailed
        self.assertEqual(notice.account, "alice@example.test")
        url = next(line for line in notice.lines if line.startswith("https://"))
        self.assertEqual(self.successResultOf(self.service.signIn(self.token(url), "192.0.2.1")), "alice@example.test")
        self.assertEqual(
            self.failureResultOf(self.service.signIn(self.token(url), "192.0.2.1"), InvalidLink).value.reason,
            "used",
        )
        kinds = [e.kind for e in self.successResultOf(self.store.listEvents("alice@example.test", 10))]
        self.assertEqual(kinds, ["web-sign-in"])

    def test_signInRateLimited(self) -> None:
        for _ in range(5):
            self.successResultOf(self.service.requestSignIn("alice@example.test", "192.0.2.1"))
        self.assertEqual(len(self.mailed), 3)
        self.clock.advance(900)
        self.successResultOf(self.service.requestSignIn("alice@example.test", "192.0.2.1"))
        self.assertEqual(len(self.mailed), 4)

    def test_approveLinkIsNotASignIn(self) -> None:
        approve, _ = self.service.deviceLinks("alice@example.test", self.fingerprint)
        f = self.failureResultOf(self.service.signIn(self.token(approve), "192.0.2.1"), InvalidLink)
        self.assertEqual(f.value.reason, "wrong-action")


class RateLimiterTests(SynchronousTestCase):
    def test_window(self) -> None:
        clock = Clock()
        limiter = RateLimiter(2, 10, clock.seconds)
        self.assertEqual([limiter.allow("a") for _ in range(3)], [True, True, False])
        self.assertTrue(limiter.allow("b"))
        clock.advance(10)
        self.assertTrue(limiter.allow("a"))
