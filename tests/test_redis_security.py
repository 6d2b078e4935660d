"""
The Redis store over TLS (C{rediss://}) and logged in (C{AUTH}, with the
default user's password or an ACL user's name and password), against real
C{redis-server}s configured so (L{tests.redisserver.RedisServer}).

A store that cannot be trusted or cannot log in must fail the way an
unreachable one does (the documented L{StoreError}, a temporary failure
for the login, one log line per outage, exit status 1 for the admin
command), at once, never hang, and never show the password.
"""

from __future__ import annotations

import io
import time
from pathlib import Path
from typing import Any

from twisted.internet import defer, reactor
from twisted.internet.task import deferLater
from twisted.logger import formatEvent, globalLogPublisher
from twisted.trial.unittest import TestCase

from clientid_twisted.admin import main as admin
from clientid_twisted.store import openStore
from clientid_twisted.store._errors import StoreError
from clientid_twisted.store._records import APPROVED, StateQuery
from clientid_twisted.testing import throwawayCertificate
from tests.redisserver import RedisServer, requireRedisServer, uniquePrefix
from tests.test_policy_server import (
    ALICE,
    IMAP_OK,
    LAPTOP,
    SMTP_REFUSED,
    PolicyServer,
)

PASSWORD = "s3cret p@ss:word/%"
"""The default user's; every character URLs treat specially."""
ACL_USER, ACL_PASSWORD = "mail", "mail-only-secret"
"""An ACL user that may touch only keys under C{site-a:}."""


class _RedisSecurityTestCase(TestCase):
    """
    Collects what is logged, and opens stores that are closed at the end.
    """

    timeout = 60

    def setUp(self) -> None:
        requireRedisServer()
        self.logged: list[dict[str, Any]] = []
        globalLogPublisher.addObserver(self.logged.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.logged.append)

    def startRedis(self, **options: Any) -> RedisServer:
        server = RedisServer(**options).start()
        self.addCleanup(server.cleanUp)
        return server

    def open(self, url: str, blocking: bool = False) -> Any:
        store = openStore(url, None, reactor, blocking=blocking)
        self.addCleanup(store.close)
        return store

    def logText(self) -> str:
        return "\n".join(formatEvent(e) or "" for e in self.logged)

    def storeEvents(self) -> list[str]:
        return [e["storeEvent"] for e in self.logged if "storeEvent" in e]

    def assertNothingShows(self, secret: str, *texts: str) -> None:
        """
        C{secret} appears in none of C{texts}, nor anywhere in what was
        logged (messages or fields), percent-encoded or not; and nothing
        logged a traceback.
        """
        from urllib.parse import quote

        logged = self.logText() + "\n" + "\n".join(repr(e) for e in self.logged)
        for text in (*texts, logged):
            self.assertNotIn(secret, text)
            self.assertNotIn(quote(secret, safe=""), text)
        self.assertEqual([e for e in self.logged if "log_failure" in e], [])
        self.assertNotIn("Traceback", logged)

    def admin(self, url: str, *arguments: str) -> tuple[int, str, str]:
        stdout, stderr = io.StringIO(), io.StringIO()
        status = admin(["--store", url, *arguments], stdout=stdout, stderr=stderr)
        return status, stdout.getvalue(), stderr.getvalue()

    @defer.inlineCallbacks
    def roundTrip(self, url: str) -> Any:
        """
        Write a device in the server's mode, read it back there and in the
        admin command's mode (two connections, both logged in).
        """
        store = self.open(url)
        key = yield store.identityKey(None)
        yield store.setDeviceState(ALICE, "d1", "UUID", "fp1", APPROVED, None)
        state = yield store.loadState(StateQuery(account=ALICE, digest="d1"))
        self.assertEqual((state.device.state, state.approvedDevices), (APPROVED, 1))
        blocking = self.open(url, blocking=True)
        self.assertEqual((yield blocking.identityKey(None)), key)
        [device] = yield blocking.listDevices(ALICE)
        self.assertEqual((device.digest, device.fingerprint, device.state), ("d1", "fp1", APPROVED))

    @defer.inlineCallbacks
    def failsAtOnce(self, store: Any) -> Any:
        """
        A call on C{store} fails with L{StoreError} within the URL's
        timeout (0.5 s) and a little; its message.
        """
        started = time.monotonic()
        try:
            yield store.loadState(StateQuery(account=ALICE, digest="d1"))
        except StoreError as e:
            self.assertLess(time.monotonic() - started, 1.5)
            return str(e)
        self.fail("the call did not fail")

    @defer.inlineCallbacks
    def policyServer(self, url: str, ready: bool) -> Any:
        """
        A frontend in allowlist mode on C{url}; if C{ready}, once it has
        read the store's key (and listens); else after a second of trying.
        """
        server = PolicyServer(self, {"store": {"url": url}, "policy": {"devices": "allowlist"}})
        if ready:
            yield server.ready
        else:
            yield deferLater(reactor, 1.0, lambda: None)
        return server


class TLSTests(_RedisSecurityTestCase):
    """
    C{rediss://}: a Redis that speaks only TLS, with a throwaway
    certificate for localhost, 127.0.0.1 and ::1, also listening on
    127.0.0.2 (which the certificate does not name).
    """

    def setUp(self) -> None:
        super().setUp()
        self.redis = self.startRedis(tls=True, bind=("127.0.0.1", "127.0.0.2"))
        self.prefix = uniquePrefix(self)

    def url(self, ca: str | None = None, host: str = "127.0.0.1") -> str:
        ca = self.redis.caFile if ca is None else ca
        return f"rediss://{host}:{self.redis.port}/0?ca={ca}&prefix={self.prefix}&timeout=0.5"

    def otherAuthority(self) -> str:
        """
        A PEM file of a certificate that did not sign Redis's.
        """
        path = Path(self.mktemp())
        path.write_bytes(throwawayCertificate("other-ca.example.test").certificatePEM)
        return str(path)

    def test_roundTrip(self) -> Any:
        """
        Both of the store's clients work over TLS, by IP address (the
        certificate's IP name) and by host name.
        """
        d = self.roundTrip(self.url())
        d.addCallback(lambda _: self.roundTrip(self.url(host="localhost")))
        return d

    @defer.inlineCallbacks
    def test_onlyTLS(self) -> Any:
        """
        The server really wants TLS: the same port without it fails (so
        the round trip above did speak TLS).
        """
        plain = f"redis://127.0.0.1:{self.redis.port}/0?timeout=0.5"
        self.assertRaises(StoreError, openStore, plain, None, blocking=True)
        message = yield self.failsAtOnce(self.open(plain))
        self.assertIn("unreachable", message)

    @defer.inlineCallbacks
    def test_policyDecides(self) -> Any:
        """
        A frontend on C{rediss://} decides: it refuses an unknown device,
        and lets it in once the admin command, on the same URL, approves
        it.
        """
        url = self.url()
        server = yield self.policyServer(url, ready=True)
        self.assertEqual((yield server.smtp(LAPTOP)), SMTP_REFUSED)
        status, out, err = self.admin(url, "devices", "approve", ALICE, "UUID", LAPTOP)
        self.assertEqual((status, err), (0, ""))
        self.assertEqual((yield server.imap(LAPTOP)), IMAP_OK)

    def test_caBundle(self) -> Any:
        """
        A C{ca} file may hold several authorities (the right one need not
        be first), for both clients.
        """
        bundle = Path(self.mktemp())
        bundle.write_bytes(
            Path(self.otherAuthority()).read_bytes() + Path(self.redis.caFile or "").read_bytes()
        )
        return self.roundTrip(self.url(ca=str(bundle)))

    @defer.inlineCallbacks
    def test_wrongAuthority(self) -> Any:
        """
        A certificate the C{ca} file did not sign: the admin command's
        store raises L{StoreError} (exit status 1, one line); the
        server's store fails calls within the timeout, logs one line per
        outage and no traceback, and its frontend does not listen (it has no
        identity key to decide with).
        """
        url = self.url(ca=self.otherAuthority())
        e = self.assertRaises(StoreError, openStore, url, None, blocking=True)
        self.assertIn("certificate verify failed", str(e))
        status, out, err = self.admin(url, "devices", "list", ALICE)
        self.assertEqual(status, 1)
        self.assertEqual(err.count("\n"), 1)
        self.assertIn("certificate verify failed", err)
        self.assertNotIn("Traceback", err)

        message = yield self.failsAtOnce(self.open(url))
        self.assertIn("certificate verify failed", message)
        server = yield self.policyServer(url, ready=False)
        # Without the store's identity key nothing listens (one key owner).
        self.assertFalse(server.ready.called)
        self.assertEqual(self.storeEvents().count("redis-down"), 2)  # one per store
        self.assertNotIn("redis-up", self.storeEvents())
        self.assertIn("certificate verify failed", self.logText())
        self.assertNothingShows(PASSWORD)

    @defer.inlineCallbacks
    def test_wrongHost(self) -> Any:
        """
        The right authority but an address the certificate does not name:
        refused by both clients (the host name is checked, not only the
        signature).
        """
        url = self.url(host="127.0.0.2")
        e = self.assertRaises(StoreError, openStore, url, None, blocking=True)
        self.assertIn("mismatch", str(e).lower())
        message = yield self.failsAtOnce(self.open(url))
        self.assertIn("mismatch", message.lower())


class AuthTests(_RedisSecurityTestCase):
    """
    A Redis that wants a password for its default user, and has an ACL
    user who may touch only the keys of the prefix C{site-a}.
    """

    def setUp(self) -> None:
        super().setUp()
        self.redis = self.startRedis(
            password=PASSWORD,
            users=[[ACL_USER, "on", ">" + ACL_PASSWORD, "~site-a:*", "+@all"]],
        )
        self.prefix = uniquePrefix(self)

    def url(self, login: str) -> str:
        return f"redis://{login}@127.0.0.1:{self.redis.port}/0?prefix={self.prefix}&timeout=0.5"

    def test_password(self) -> Any:
        """
        C{redis://:PASSWORD@host:port/0}, the password percent-encoded,
        logs in both clients.
        """
        url = f"{self.redis.url}?prefix={self.prefix}&timeout=0.5"
        self.assertIn(":s3cret%20p%40ss%3Aword%2F%25@", url)
        return self.roundTrip(url)

    @defer.inlineCallbacks
    def test_aclUser(self) -> Any:
        """
        C{redis://USER:PASSWORD@...} logs in as that user: it works within
        the keys the user may touch, and Redis refuses it (a
        L{StoreError}, not a hang) outside them, as it would not the
        default user.
        """
        login = f"{ACL_USER}:{ACL_PASSWORD}"
        yield self.roundTrip(
            f"redis://{login}@127.0.0.1:{self.redis.port}/0?prefix=site-a&timeout=0.5"
        )
        outside = self.open(self.url(login), blocking=True)
        e = yield self.assertFailure(outside.identityKey(None), StoreError)
        self.assertIn("can't access", str(e))

    @defer.inlineCallbacks
    def test_wrongPassword(self) -> Any:
        """
        A wrong password: the admin command's store raises L{StoreError}
        saying Redis refused it (exit status 1, one line); the server's
        store fails calls at once, logs one line, and its frontend does not
        listen (no identity key); the password shows nowhere.
        """
        wrong = "wr0ng p@ss:word/%"
        url = self.url(":" + wrong.replace("%", "%25").replace("@", "%40").replace("/", "%2F"))
        e = self.assertRaises(StoreError, openStore, url, None, blocking=True)
        self.assertIn("WRONGPASS", str(e))
        self.assertIn(f"127.0.0.1:{self.redis.port}", str(e))
        status, out, err = self.admin(url, "events")
        self.assertEqual(status, 1)
        self.assertEqual(err.count("\n"), 1)
        self.assertIn("WRONGPASS", err)

        store = self.open(url)
        message = yield self.failsAtOnce(store)
        self.assertIn("WRONGPASS", message)
        server = yield self.policyServer(url, ready=False)
        self.assertFalse(server.ready.called)
        self.assertEqual(self.storeEvents().count("redis-down"), 2)  # one per store
        self.assertIn("WRONGPASS", self.logText())
        self.assertNothingShows(
            wrong, str(e), repr(e), out, err, message, repr(store), repr(store.settings.address)
        )
        self.assertNothingShows(PASSWORD)

    @defer.inlineCallbacks
    def test_noPassword(self) -> Any:
        """
        No password for a Redis that wants one: Redis's own reason
        (C{NOAUTH}), in both clients.
        """
        url = f"redis://127.0.0.1:{self.redis.port}/0?prefix={self.prefix}&timeout=0.5"
        e = self.assertRaises(StoreError, openStore, url, None, blocking=True)
        self.assertIn("NOAUTH", str(e))
        message = yield self.failsAtOnce(self.open(url))
        self.assertIn("NOAUTH", message)

    @defer.inlineCallbacks
    def test_wrongUser(self) -> Any:
        """
        The right password for another user: refused, and the message
        shows neither the password nor the user's.
        """
        url = self.url(f"nobody:{ACL_PASSWORD}")
        e = self.assertRaises(StoreError, openStore, url, None, blocking=True)
        self.assertIn("WRONGPASS", str(e))
        message = yield self.failsAtOnce(self.open(url))
        self.assertIn("WRONGPASS", message)
        self.assertNothingShows(ACL_PASSWORD, str(e), message)
