"""
Several frontends, one memory: two servers, each assembled like
C{twistd clientid-mail} (their own data directory, users file, TLS
certificate and installation key) and sharing one Redis store, driven over
real TLS by C{smtplib} and C{imaplib}, managed with
C{clientid-admin --store redis://...}.
"""

from __future__ import annotations

import io
import json
from typing import Any

from twisted.internet import defer, reactor
from twisted.internet.task import deferLater
from twisted.internet.threads import deferToThread

from clientid_twisted.admin import main as admin
from clientid_twisted._fingerprint import IdentityHasher
from tests.redisserver import sharedRedisServer, uniquePrefix
from tests.test_policy_server import (
    ALICE,
    BOB,
    IMAP_OK,
    IMAP_REFUSED,
    LAPTOP,
    PHONE,
    SMTP_REFUSED,
    PolicyServer,
    PolicyServerTestCase,
)


class TwoFrontendTests(PolicyServerTestCase):
    @defer.inlineCallbacks
    def frontends(self, **tables: Any) -> Any:
        server = sharedRedisServer()
        self.url = f"{server.url}?prefix={uniquePrefix(self)}"
        tables["store"] = {"url": self.url}
        one, two = PolicyServer(self, tables), PolicyServer(self, tables)
        yield defer.gatherResults([one.ready, two.ready])
        # One store key: both frontends agree, and neither made a key file
        # of its own.
        self.assertEqual(one.hasher.key, two.hasher.key)
        for s in (one, two):
            self.assertIs(s.auth.policy.hasher, s.hasher)
            self.assertIs(s.smtpFactory.identityHasher, s.hasher)
            self.assertFalse((s.dataDir / "clientid.key").exists())
        return one, two

    def admin(self, *arguments: str) -> tuple[int, str, str]:
        stdout, stderr = io.StringIO(), io.StringIO()
        status = admin(["--store", self.url, *arguments], stdout=stdout, stderr=stderr)
        return status, stdout.getvalue(), stderr.getvalue()

    @defer.inlineCallbacks
    def test_approveLockRevokeOnBoth(self) -> Any:
        one, two = yield self.frontends(
            policy={"devices": "allowlist"}, limits={"device_failures": 3}
        )
        hasher: IdentityHasher = one.hasher

        # Unknown on both.
        self.assertEqual((yield one.smtp(LAPTOP)), SMTP_REFUSED)
        self.assertEqual((yield two.imap(LAPTOP)), IMAP_REFUSED)

        # One approval through the admin command, valid on both at once.
        status, out, err = self.admin("devices", "approve", ALICE, "UUID", LAPTOP)
        self.assertEqual((status, err), (0, ""))
        self.assertEqual((yield one.smtp(LAPTOP))[0], 235)
        self.assertEqual((yield two.imap(LAPTOP)), IMAP_OK)
        self.assertEqual(self.admin("devices", "approve", ALICE, "UUID", PHONE)[0], 0)
        self.assertEqual((yield two.smtp(PHONE))[0], 235)

        # A lockout earned on one frontend holds on the other.
        for n in range(3):
            self.assertEqual((yield one.smtp(LAPTOP, password="wrong")), SMTP_REFUSED)
        self.assertEqual((yield two.imap(LAPTOP)), IMAP_REFUSED)
        self.assertEqual((yield two.smtp(LAPTOP)), SMTP_REFUSED)
        self.assertEqual((yield one.imap(PHONE)), IMAP_OK)

        # A revocation applies on both.
        self.assertEqual(self.admin("devices", "revoke", ALICE, "UUID", PHONE)[0], 0)
        self.assertEqual((yield one.imap(PHONE)), IMAP_REFUSED)
        self.assertEqual((yield two.smtp(PHONE)), SMTP_REFUSED)

        status, out, err = self.admin("devices", "list", ALICE, "--json")
        self.assertEqual(status, 0, err)
        states = {d["fingerprint"]: d["state"] for d in json.loads(out)}
        self.assertEqual(
            states,
            {
                hasher.fingerprint(_identity(LAPTOP)): "approved",
                hasher.fingerprint(_identity(PHONE)): "revoked",
            },
        )
        status, out, err = self.admin("events", "--json")
        kinds = [e["event"] for e in json.loads(out)]
        self.assertIn("device-locked", kinds)

    @defer.inlineCallbacks
    def test_bruteForceSpreadOverBothHitsOneCounter(self) -> Any:
        """
        Wrong passwords for one device alternate between the frontends;
        the shared counter locks it after the limit, on both.
        """
        one, two = yield self.frontends(limits={"device_failures": 4})
        self.assertEqual((yield one.smtp(LAPTOP, account=BOB))[0], 235)
        attempts = [
            (one if n % 2 else two).smtp(LAPTOP, account=BOB, password="wrong") for n in range(4)
        ]
        yield defer.gatherResults(attempts)
        self.assertEqual((yield one.smtp(LAPTOP, account=BOB)), SMTP_REFUSED)
        self.assertEqual((yield two.imap(LAPTOP, account=BOB)), IMAP_REFUSED)

    @defer.inlineCallbacks
    def test_redisDownThenBack(self) -> Any:
        """
        With its Redis gone the frontend answers with a temporary failure,
        at once; when Redis is back, logins work again by themselves.
        """
        from tests.redisserver import RedisServer

        redis = RedisServer().start()
        self.addCleanup(redis.cleanUp)
        self.url = f"{redis.url}?timeout=0.5"
        tables = {"store": {"url": self.url}}
        one = PolicyServer(self, tables)
        yield one.ready
        self.assertEqual((yield one.smtp(LAPTOP))[0], 235)
        redis.stop()
        self.assertEqual((yield one.smtp(LAPTOP)), (454, b"4.7.0 Temporary authentication failure"))
        self.assertEqual(
            (yield one.imap(LAPTOP)), ("NO", b"[UNAVAILABLE] Temporary authentication failure")
        )
        yield deferToThread(redis.start)
        for n in range(100):
            code = (yield one.smtp(LAPTOP))[0]
            if code == 235:
                break
            yield deferLater(reactor, 0.1, lambda: None)
        self.assertEqual(code, 235)


def _identity(token: str) -> Any:
    from clientid_twisted._identity import ClientIdentity

    return ClientIdentity("UUID", token)
