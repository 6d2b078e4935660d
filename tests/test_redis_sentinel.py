# -*- test-case-name: tests.test_redis_sentinel -*-
"""
Redis that survives a failover: C{redis+sentinel://} URLs, the master found
through real C{redis-sentinel} processes, admin writes that wait for a
replica, and a master killed under login load.
"""

from __future__ import annotations

import io
import json
import socket
import time
from typing import Any
from urllib.parse import quote

from twisted.internet import defer, reactor
from twisted.internet.task import deferLater
from twisted.trial.unittest import SynchronousTestCase, TestCase

from clientid_twisted.admin import main as admin
from clientid_twisted.store import StoreError, openStore
from clientid_twisted.store import _redis as redisstore
from clientid_twisted.store._records import APPROVED, StateQuery
from clientid_twisted.store._redis import RedisStore, parseRedisURL
from clientid_twisted.store._sentinel import checkMaster
from tests.redisserver import FailoverGroup, SentinelServer, uniquePrefix
from tests.services import freePort
from tests.test_policy_server import ALICE, IMAP_OK, PolicyServer

PASSWORD = "s3ntinel p@ss"
SMTP_OK = 235
SMTP_TEMPFAIL = (454, b"4.7.0 Temporary authentication failure")
IMAP_TEMPFAIL = ("NO", b"[UNAVAILABLE] Temporary authentication failure")


class SentinelURLTests(SynchronousTestCase):
    def test_everything(self) -> None:
        """
        Several Sentinels (IPv6 too, default port 26379), the master's
        name, its database, the master's login and the Sentinels' own.
        """
        s = parseRedisURL(
            "redis+sentinel://mail:s%40cret@10.0.0.1:26380,[::1],sentinel.test/mymaster/3"
            "?prefix=site&timeout=0.5&sentinel_password=t0p&replicas=2&wait_timeout=3"
        )
        assert s.sentinel is not None
        self.assertEqual(s.sentinel.master, "mymaster")
        self.assertEqual(
            [(a.host, a.port, a.password, a.tls) for a in s.sentinel.sentinels],
            [("10.0.0.1", 26380, "t0p", False), ("::1", 26379, "t0p", False),
             ("sentinel.test", 26379, "t0p", False)],
        )
        a = s.address
        self.assertEqual((a.username, a.password, a.db, a.tls), ("mail", "s@cret", 3, False))
        self.assertEqual((s.prefix, s.timeout, s.replicas, s.waitTimeout), ("site:", 0.5, 2, 3.0))
        self.assertEqual(
            s.description, "redis+sentinel://10.0.0.1:26380,[::1]:26379,sentinel.test:26379/mymaster"
        )
        for secret in ("cret", "t0p"):
            self.assertNotIn(secret, s.description)
            self.assertNotIn(secret, repr(s.sentinel))

    def test_tlsAndDefaults(self) -> None:
        """
        C{rediss+sentinel://} speaks TLS to the Sentinels and the master,
        with the URL's authority; admin writes wait for one replica by
        default, within the command timeout.
        """
        s = parseRedisURL("rediss+sentinel://127.0.0.1/m?ca=/etc/ca.pem")
        assert s.sentinel is not None
        self.assertEqual(
            [(a.tls, a.caFile) for a in (s.address, *s.sentinel.sentinels)],
            [(True, "/etc/ca.pem")] * 2,
        )
        self.assertEqual((s.address.db, s.replicas, s.waitTimeout), (0, 1, 2.0))
        self.assertEqual(parseRedisURL("redis://127.0.0.1").replicas, 0)

    def test_malformed(self) -> None:
        for url in (
            "redis+sentinel://:hunter2@127.0.0.1",
            "redis+sentinel://:hunter2@127.0.0.1/",
            "redis+sentinel://:hunter2@127.0.0.1/m/x",
            "redis+sentinel://:hunter2@127.0.0.1:port/m",
            "redis+sentinel://:hunter2@127.0.0.1:0/m",
            "redis+sentinel://:hunter2@[::1/m",
            "redis+sentinel://:hunter2@127.0.0.1/m?replicas=-1",
            "redis+sentinel://:hunter2@127.0.0.1/m?wait_timeout=0",
            "redis+sentinel://:hunter2@127.0.0.1/m?sentinel_password=hunter2&colour=blue",
            "redis://:hunter2@127.0.0.1/0?sentinel_password=x",
        ):
            with self.subTest(url=url):
                e = self.assertRaises(ValueError, parseRedisURL, url)
                self.assertNotIn("hunter2", str(e))

    def test_role(self) -> None:
        """
        Only a C{ROLE} reply naming a master passes.
        """
        checkMaster([b"master", 0, []], "here")
        for reply in ([b"slave", b"127.0.0.1", 6379, b"connected", 0], [], None):
            self.assertRaises(StoreError, checkMaster, reply, "here")

    def test_noSentinel(self) -> None:
        """
        The admin command's mode with no Sentinel reachable: a
        L{StoreError} naming the Sentinels, not the password.
        """
        self.patch(redisstore, "FOLLOW_SECONDS", 0.0)
        port = freePort()
        e = self.assertRaises(
            StoreError, openStore, f"redis+sentinel://:hunter2@127.0.0.1:{port}/m?timeout=0.5",
            None, blocking=True,
        )
        self.assertIn(f"127.0.0.1:{port}", str(e))
        self.assertNotIn("hunter2", str(e))


class SentinelTestCase(TestCase):
    timeout = 120

    def group(self, sentinels: int = 1, tls: bool = False) -> FailoverGroup:
        group = FailoverGroup(sentinels, password=PASSWORD, tls=tls).start()
        self.addCleanup(group.cleanUp)
        self.prefix = uniquePrefix(self)
        return group

    def open(self, url: str, blocking: bool = False) -> RedisStore:
        store = openStore(url, None, reactor, blocking=blocking)
        self.addCleanup(store.close)
        return store  # type: ignore[return-value]

    @defer.inlineCallbacks
    def decided(self, store: RedisStore, seconds: float = 30.0) -> Any:
        """
        Wait until the store answers (it has found the master).
        """
        deadline = time.monotonic() + seconds
        while True:
            try:
                return (yield store.loadState(StateQuery(account="a", digest="d")))
            except StoreError:
                if time.monotonic() > deadline:
                    raise
                yield deferLater(reactor, 0.05, lambda: None)


class DiscoveryTests(SentinelTestCase):
    @defer.inlineCallbacks
    def test_masterFromSentinel(self) -> Any:
        """
        Both modes find the master through the Sentinels, past one that is
        not running, and write there (the replica gets it).
        """
        group = self.group()
        dead = freePort()
        hosts = f"127.0.0.1:{dead},127.0.0.1:{group.sentinels[0].port}"
        url = (
            f"redis+sentinel://:{quote(PASSWORD, safe='')}@{hosts}"
            f"/{SentinelServer.MASTER}/0?prefix={self.prefix}&timeout=0.5"
        )
        store = self.open(url)
        key = yield store.identityKey(b"k" * 32)
        self.assertEqual(key, b"k" * 32)
        yield store.setDeviceState("a", "d", "UUID", "f", APPROVED, None)
        blocking = self.open(url, blocking=True)
        devices = yield blocking.listDevices("a")
        self.assertEqual([(d.digest, d.state) for d in devices], [("d", APPROVED)])
        self.assertEqual(
            group.master.reply("HGET", f"{self.prefix}devices:a", "d"),
            group.replica.reply("HGET", f"{self.prefix}devices:a", "d"),
        )

    @defer.inlineCallbacks
    def test_demotedMaster(self) -> Any:
        """
        A failover that demotes a master still running (C{SENTINEL
        FAILOVER}): the store leaves it (Sentinel closes its clients, a
        write it refuses with C{READONLY} drops the connection) and
        writes to the promoted replica.
        """
        group = self.group()
        store = self.open(group.url(f"prefix={self.prefix}", "timeout=0.5"))
        yield store.identityKey(b"k" * 32)
        yield store.setDeviceState("a", "before", "UUID", "f", APPROVED, None)
        oldPort = group.master.port
        group.sentinels[0].reply("SENTINEL", "FAILOVER", SentinelServer.MASTER)
        deadline = time.monotonic() + 30
        # Until the old master is a replica: before that, Sentinel names
        # the new master while the old one still takes writes (Redis
        # replicates asynchronously; what it takes then is lost, which is
        # why admin writes WAIT for a replica).
        while group.sentinels[0].masterPort() == oldPort or group.master.reply("ROLE")[0] != b"slave":
            self.assertLess(time.monotonic(), deadline, "no failover")
            yield deferLater(reactor, 0.1, lambda: None)
        while True:
            try:
                yield store.setDeviceState("a", "after", "UUID", "f", APPROVED, None)
                break
            except StoreError:
                self.assertLess(time.monotonic(), deadline, "the store did not follow")
                yield deferLater(reactor, 0.05, lambda: None)
        self.assertEqual(group.replica.reply("ROLE")[0], b"master")
        self.assertIsNotNone(group.replica.reply("HGET", f"{self.prefix}devices:a", "after"))
        devices = yield store.listDevices("a")
        self.assertEqual(sorted(d.digest for d in devices), ["after", "before"])

    def test_readOnlyDropsTheConnection(self) -> None:
        """
        A write refused with C{READONLY} (the server is a replica now) is
        the store's temporary failure, and drops the connection so the
        next one goes to the master.
        """
        dropped: list[str] = []
        store = RedisStore.__new__(RedisStore)
        store._where = "redis+sentinel://127.0.0.1:26379/m"
        store._connection = type("Connection", (), {"dropConnection": dropped.append})()
        from twisted.python.failure import Failure

        from clientid_twisted.store._resp import ReplyError

        result = store._replyError(
            Failure(ReplyError("READONLY You can't write against a read only replica."))
        )
        self.assertTrue(result.check(StoreError))
        self.assertEqual(len(dropped), 1)
        self.assertIn("no longer the master", dropped[0])
        store._replyError(Failure(ReplyError("ERR other")))
        self.assertEqual(len(dropped), 1)

    @defer.inlineCallbacks
    def test_tls(self) -> Any:
        """
        C{rediss+sentinel://}: the Sentinels and the master speak only TLS,
        with a certificate signed by the URL's C{ca}; both modes find the
        master and use it, and an admin write is acknowledged by the
        replica (which replicates over TLS).
        """
        group = self.group(tls=True)
        url = group.url(f"prefix={self.prefix}", "timeout=1")
        self.assertTrue(url.startswith("rediss+sentinel://"))
        store = self.open(url)
        yield self.decided(store)
        yield store.setDeviceState("a", "d", "UUID", "f", APPROVED, None)
        blocking = self.open(url, blocking=True)
        yield blocking.setDeviceState("a", "e", "UUID", "f", APPROVED, None)
        devices = yield blocking.listDevices("a")
        self.assertEqual(sorted(d.digest for d in devices), ["d", "e"])
        self.assertIsNotNone(group.replica.reply("HGET", f"{self.prefix}devices:a", "e"))

    @defer.inlineCallbacks
    def test_frozenSentinel(self) -> Any:
        """
        A Sentinel that accepts connections and never answers, first in the
        URL, does not keep either mode from the master: each Sentinel gets
        a share of the timeout, and one that failed is asked last.
        """
        group = self.group()
        silent = socket.socket()
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        self.addCleanup(silent.close)
        hosts = f"127.0.0.1:{silent.getsockname()[1]},127.0.0.1:{group.sentinels[0].port}"
        url = (
            f"redis+sentinel://:{quote(PASSWORD, safe='')}@{hosts}/{SentinelServer.MASTER}/0"
            f"?prefix={self.prefix}&timeout=1"
        )
        started = time.monotonic()
        store = self.open(url)
        yield self.decided(store, seconds=10)
        blocking = self.open(url, blocking=True)
        self.assertEqual((yield blocking.listDevices("a")), [])
        self.assertLess(time.monotonic() - started, 10)

    def test_replicaIsNotTheMaster(self) -> None:
        """
        A server a Sentinel names that answers C{ROLE} as a replica is not
        used: the admin command's store does not open.
        """
        group = self.group()
        self.patch(redisstore, "FOLLOW_SECONDS", 0.0)
        replica = group.replica

        def locate(settings: Any, template: Any, timeout: float) -> Any:
            from attrs import evolve

            return evolve(template, host="127.0.0.1", port=replica.port)

        self.patch(redisstore, "locateMasterBlocking", locate)
        e = self.assertRaises(StoreError, self.open, group.url(f"prefix={self.prefix}"), True)
        self.assertIn("not the master", str(e))

    def test_adminWriteWaitsForAReplica(self) -> None:
        """
        An admin write is acknowledged only once a replica holds it: with
        the replica frozen, it fails after C{wait_timeout}, saying so.
        """
        group = self.group()
        # Two seconds: long enough for the first write's acknowledgement on a
        # loaded machine (0.5 s was not, now and then), short for the test.
        store = self.open(group.url(f"prefix={self.prefix}", "wait_timeout=2"), blocking=True)
        self.successResultOf(store.setDeviceState("a", "d1", "UUID", "f", APPROVED, None))
        group.replica.pause()
        try:
            started = time.monotonic()
            failure = self.failureResultOf(
                store.setDeviceState("a", "d2", "UUID", "f", APPROVED, None), StoreError
            )
            self.assertGreaterEqual(time.monotonic() - started, 1.9)
            self.assertIn("reached 0 of 1 replica", str(failure.value))
            # Reads do not wait.
            self.successResultOf(store.listDevices("a"))
        finally:
            group.replica.resume()


class FailoverTests(SentinelTestCase):
    """
    A frontend (the runnable server's parts, real TLS, C{smtplib} and
    C{imaplib}) and C{clientid-admin} on a master, a replica and three
    Sentinels; the master is killed under login load.
    """

    def admin(self, url: str, *arguments: str) -> tuple[int, str, str]:
        stdout, stderr = io.StringIO(), io.StringIO()
        status = admin(["--store", url, *arguments], stdout=stdout, stderr=stderr)
        return status, stdout.getvalue(), stderr.getvalue()

    @defer.inlineCallbacks
    def test_killTheMasterUnderLoad(self) -> Any:
        group = self.group(sentinels=3)
        url = group.url(f"prefix={self.prefix}", "timeout=0.5")
        frontend = PolicyServer(self, {"store": {"url": url}, "policy": {"devices": "allowlist"}})
        yield frontend.ready
        tokens = [f"device-{n:02d}-token-for-failover" for n in range(6)]
        # Approvals that clientid-admin acknowledged (each WAITed for the
        # replica) before the kill.
        for token in tokens:
            self.assertEqual(self.admin(url, "devices", "approve", ALICE, "UUID", token)[::2], (0, ""))
        self.assertEqual((yield frontend.smtp(tokens[0]))[0], SMTP_OK)

        oldPort = group.master.port
        group.master.stop()  # SIGKILL
        killed = time.monotonic()
        # Logins under load until the new master answers, bounded.
        answers: list[Any] = []
        while time.monotonic() - killed < 60:
            batch = yield defer.gatherResults(
                [frontend.smtp(tokens[n % len(tokens)]) for n in range(3)]
                + [frontend.imap(tokens[(n + 3) % len(tokens)]) for n in range(3)]
            )
            answers += batch
            if all(a[0] in (SMTP_OK, "OK") for a in batch):
                break
        switched = time.monotonic() - killed
        temporary = [a for a in answers if a in (SMTP_TEMPFAIL, IMAP_TEMPFAIL)]
        other = [a for a in answers if a not in (SMTP_TEMPFAIL, IMAP_TEMPFAIL)
                 and a[0] not in (SMTP_OK, "OK")]
        # During the switch: temporary failures only, never a refusal.
        self.assertEqual(other, [])
        self.assertTrue(temporary, "no login saw the switch")
        self.assertNotEqual(group.sentinels[0].masterPort(), oldPort)
        # Then every approved device logs in, on both protocols.
        for token in tokens:
            self.assertEqual((yield frontend.smtp(token))[0], SMTP_OK)
            self.assertEqual((yield frontend.imap(token)), IMAP_OK)
        # The admin command follows the Sentinels to the new master too.
        status, out, err = self.admin(url, "devices", "list", ALICE, "--json")
        self.assertEqual(status, 0, err)
        self.assertEqual([d["state"] for d in json.loads(out)], ["approved"] * len(tokens))
        # With no replica left, an admin write is not acknowledged...
        status, out, err = self.admin(
            url + "&wait_timeout=0.5", "devices", "revoke", ALICE, "UUID", tokens[0]
        )
        self.assertEqual(status, 1)
        self.assertIn("reached 0 of 1 replica", err)
        # ... until the old master is back, as the new one's replica.
        group.master.start()
        status, out, err = self.admin(
            url + "&wait_timeout=20", "devices", "revoke", ALICE, "UUID", tokens[1]
        )
        self.assertEqual((status, err), (0, ""))
        self.assertEqual(group.master.reply("ROLE")[0], b"slave")
        self.assertNotEqual((yield frontend.smtp(tokens[1]))[0], SMTP_OK)
        self.report(temporary, answers, switched)

    def report(self, temporary: list[Any], answers: list[Any], switched: float) -> None:
        """
        What the switch cost, for docs/frontends.md (pytest -s shows it).
        """
        print(
            f"\nfailover: {len(temporary)} temporary failures of {len(answers)} logins, "
            f"switched in {switched:.1f} s"
        )
