"""
Tests for L{clientid_twisted.store.redis.RedisStore}: the shared store
suite (the server's mode and the admin command's), URLs, atomic counters
under many concurrent writers, TTL expiry, and faults: Redis down at
start, down mid-traffic, slow, paused, restarted empty.

Each test talks to a C{redis-server} of its own making
(L{tests.redisserver}); without the program they are skipped, except in CI.
"""

from __future__ import annotations

import time
from typing import Any

from twisted.internet import defer, reactor
from twisted.internet.task import Clock, deferLater
from twisted.logger import globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase, TestCase

from clientid_twisted.store import openStore
from clientid_twisted.store.errors import StoreError
from clientid_twisted.store.records import (
    APPROVED,
    Bump,
    Event,
    OutcomeRecord,
    StateQuery,
)
from clientid_twisted.store.redis import RedisStore, parseRedisURL
from clientid_twisted.store.resp import ReplyError, encodeCommand, parseReply
from tests.redisserver import RedisServer, requireRedisServer, sharedRedisServer, uniquePrefix
from tests.storesuite import START, StoreTestsMixin, update


def sleep(seconds: float) -> defer.Deferred[None]:
    return deferLater(reactor, seconds, lambda: None)


def localStore(test: Any, url: str, clock: Any, blocking: bool = False, **options: str) -> RedisStore:
    query = "&".join(f"{k}={v}" for k, v in {"time": "local", "prefix": uniquePrefix(test), **options}.items())
    store = RedisStore(parseRedisURL(f"{url}?{query}"), reactor=reactor, clock=clock, blocking=blocking)
    test.addCleanup(store.close)
    return store


class ReactorRedisStoreTests(StoreTestsMixin, TestCase):
    """
    The shared suite against the server's mode, on a simulated clock
    (C{time=local}).
    """

    def makeStore(self, clock: Clock) -> Any:
        return localStore(self, sharedRedisServer().url, clock)


class BlockingRedisStoreTests(StoreTestsMixin, TestCase):
    """
    The shared suite against the admin command's mode.
    """

    def makeStore(self, clock: Clock) -> Any:
        return localStore(self, sharedRedisServer().url, clock, blocking=True)


class URLTests(SynchronousTestCase):
    def test_defaults(self) -> None:
        s = parseRedisURL("redis://cache.example.test")
        self.assertEqual(
            (s.address.host, s.address.port, s.address.db, s.address.password, s.address.tls),
            ("cache.example.test", 6379, 0, None, False),
        )
        self.assertEqual((s.prefix, s.timeout, s.serverTime), ("clientid:", 2.0, True))

    def test_everything(self) -> None:
        s = parseRedisURL(
            "rediss://mail:s%40cret@10.0.0.5:6380/3?prefix=site-a&timeout=0.5&time=local&ca=/etc/ca.pem"
        )
        a = s.address
        self.assertEqual(
            (a.host, a.port, a.db, a.username, a.password, a.tls, a.caFile),
            ("10.0.0.5", 6380, 3, "mail", "s@cret", True, "/etc/ca.pem"),
        )
        self.assertEqual((s.prefix, s.timeout, s.serverTime), ("site-a:", 0.5, False))
        self.assertNotIn("cret", str(a))
        self.assertNotIn("cret", repr(a))

    def test_passwordOnly(self) -> None:
        a = parseRedisURL("redis://:hunter2@localhost/1").address
        self.assertEqual((a.username, a.password, a.db), (None, "hunter2", 1))

    def test_malformed(self) -> None:
        for url in (
            "redis://:hunter2@localhost/notadb",
            "redis://:hunter2@localhost/0?timeout=0",
            "redis://:hunter2@localhost/0?timeout=x",
            "redis://:hunter2@localhost/0?time=ntp",
            "redis://:hunter2@localhost/0?colour=blue",
            "redis://:hunter2@localhost:port/0",
        ):
            with self.subTest(url=url):
                e = self.assertRaises(ValueError, parseRedisURL, url)
                self.assertNotIn("hunter2", str(e))

    def test_openStore(self) -> None:
        """
        C{openStore} knows both schemes; in blocking mode, an unreachable
        Redis is a L{StoreError} naming it without its password.
        """
        e = self.assertRaises(
            StoreError, openStore, "redis://:hunter2@127.0.0.1:1/0", None, blocking=True
        )
        self.assertIn("127.0.0.1:1", str(e))
        self.assertNotIn("hunter2", str(e))


class RESPTests(SynchronousTestCase):
    def test_roundTrip(self) -> None:
        self.assertEqual(encodeCommand(["SET", b"k", 1, 2.5]), b"*4\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\n1\r\n$3\r\n2.5\r\n")
        reply = b"*5\r\n$3\r\nabc\r\n$-1\r\n:42\r\n+OK\r\n*1\r\n-ERR no\r\n"
        value, end = parseReply(reply)
        self.assertEqual(end, len(reply))
        self.assertEqual(value[:4], [b"abc", None, 42, "OK"])
        self.assertIsInstance(value[4][0], ReplyError)


class LiveRedisTests(TestCase):
    """
    The store on the real clock and Redis's time.
    """

    timeout = 60

    def setUp(self) -> None:
        self.server = sharedRedisServer()
        self.prefix = uniquePrefix(self)

    def open(self, url: str | None = None, **options: str) -> RedisStore:
        options.setdefault("prefix", self.prefix)
        query = "&".join(f"{k}={v}" for k, v in options.items())
        store = openStore(f"{url or self.server.url}?{query}", None, reactor)
        self.addCleanup(store.close)
        return store  # type: ignore[return-value]

    @defer.inlineCallbacks
    def test_concurrentFailuresCountExactly(self) -> Any:
        """
        200 failure reports sent at once over two connections (two
        frontends) end with the count at exactly 200, and the lock set by
        exactly one of them.
        """
        a, b = self.open(), self.open()
        op = Bump("token-failures:x", window=600.0, limit=150, lock="token-locked:x",
                  lockSeconds=900.0, event=Event("token-locked"))
        writes = [
            (a if n % 2 else b).recordOutcome(OutcomeRecord(operations=(op,)))
            for n in range(200)
        ]
        results = yield defer.gatherResults(writes)
        self.assertEqual(sum(len(r.locked) for r in results), 1)
        self.assertEqual(sum(len(r.events) for r in results), 1)
        raw = yield a._command("HGET", self.prefix + "n:token-failures:x", "c")
        self.assertEqual(int(raw), 200)
        events = yield a.listEvents(None, 10)
        self.assertEqual([e.kind for e in events], ["token-locked"])

    @defer.inlineCallbacks
    def test_expiryByTTL(self) -> Any:
        """
        Counters, sets and locks carry a Redis TTL that ends with their
        window: Redis forgets them by itself.
        """
        store = self.open()
        yield store.recordOutcome(
            OutcomeRecord(operations=(Bump("c", window=60.0, limit=1, lock="l", lockSeconds=30.0),))
        )
        counterTTL = yield store._command("PTTL", self.prefix + "n:c")
        lockTTL = yield store._command("PTTL", self.prefix + "lock:l")
        self.assertTrue(55_000 < counterTTL <= 60_000, counterTTL)
        self.assertTrue(25_000 < lockTTL <= 30_000, lockTTL)
        yield store.setLock("forever", None, None)
        self.assertEqual((yield store._command("PTTL", self.prefix + "lock:forever")), -1)
        yield store.recordOutcome(
            OutcomeRecord(operations=(Bump("short", window=0.2, limit=0),))
        )
        yield sleep(0.4)
        self.assertEqual((yield store._command("EXISTS", self.prefix + "n:short")), 0)

    @defer.inlineCallbacks
    def test_serverTime(self) -> Any:
        """
        Without C{time=local}, times come from Redis's clock.
        """
        store = self.open()
        before = time.time()
        result = yield store.recordOutcome(OutcomeRecord(events=(Event("e"),)))
        self.assertLess(abs(result.events[0].time - before), 2.0)

    @defer.inlineCallbacks
    def test_prefixesSeparate(self) -> Any:
        one, two = self.open(prefix=self.prefix + "one"), self.open(prefix=self.prefix + "two")
        yield one.setLock("k", None, None)
        self.assertEqual((yield two.activeLocks(["k"])), {})
        self.assertEqual(list((yield one.activeLocks(["k"]))), ["k"])

    @defer.inlineCallbacks
    def test_scriptCacheFlushed(self) -> Any:
        """
        After C{SCRIPT FLUSH} the store sends the script itself.
        """
        store = self.open()
        yield store.identityKey(None)
        self.server.command("SCRIPT", "FLUSH")
        state = yield store.loadState(StateQuery(account="a", digest="d"))
        self.assertIsNone(state.device)


class FaultTests(TestCase):
    """
    Redis down at start, down mid-traffic, slow, paused, restarted empty:
    calls fail with L{StoreError} within the timeout, never hang, and the
    store reconnects by itself, logging once per outage.
    """

    timeout = 60

    def setUp(self) -> None:
        requireRedisServer()
        self.server = RedisServer()
        self.addCleanup(self.server.cleanUp)
        self.logged: list[dict[str, Any]] = []
        globalLogPublisher.addObserver(self.logged.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.logged.append)

    def open(self, timeout: str = "0.5") -> RedisStore:
        store = openStore(f"{self.server.url}?timeout={timeout}", None, reactor)
        self.addCleanup(store.close)
        return store  # type: ignore[return-value]

    def storeEvents(self) -> list[str]:
        return [e["storeEvent"] for e in self.logged if "storeEvent" in e]

    @defer.inlineCallbacks
    def waitUntil(self, store: RedisStore, seconds: float = 10.0) -> Any:
        deadline = time.monotonic() + seconds
        while True:
            try:
                yield store.loadState(StateQuery(account="a", digest="d"))
                return
            except StoreError:
                if time.monotonic() > deadline:
                    raise
                yield sleep(0.05)

    @defer.inlineCallbacks
    def timed(self, d: defer.Deferred[Any]) -> Any:
        started = time.monotonic()
        try:
            yield d
        except StoreError:
            return time.monotonic() - started
        self.fail("the call did not fail")

    @defer.inlineCallbacks
    def test_downAtStart(self) -> Any:
        """
        A store opened while Redis is down fails calls at once, waits with
        C{identityKey}, and works once Redis comes up.
        """
        store = self.open()
        key = store.identityKey(b"k" * 32)
        yield sleep(0.2)
        elapsed = yield self.timed(store.loadState(StateQuery(account="a")))
        self.assertLess(elapsed, 0.6)
        self.assertFalse(key.called)
        self.server.start()
        self.assertEqual((yield key), b"k" * 32)
        yield self.waitUntil(store)
        self.assertEqual(self.storeEvents(), ["redis-down", "redis-up"])

    @defer.inlineCallbacks
    def test_downMidTraffic(self) -> Any:
        self.server.start()
        store = self.open()
        yield store.identityKey(b"k" * 32)
        yield store.setDeviceState("a", "d", "UUID", "f", APPROVED, None)
        self.server.stop()
        failures = []
        for n in range(20):
            elapsed = yield self.timed(store.loadState(StateQuery(account="a", digest="d")))
            failures.append(elapsed)
            yield sleep(0.02)
        self.assertLess(max(failures), 0.6)
        self.server.start()
        yield self.waitUntil(store)
        # One line when it went, one when it came back, for the whole burst.
        self.assertEqual(self.storeEvents(), ["redis-down", "redis-up"])

    @defer.inlineCallbacks
    def test_restartedEmpty(self) -> Any:
        """
        A Redis that restarts empty gets the identity key back from the
        store that knew it; the scripts are loaded again.
        """
        self.server.start()
        store = self.open()
        key = yield store.identityKey(None)
        self.server.restart()
        yield self.waitUntil(store)
        self.assertEqual(self.server.command("GET", "clientid:identity-key").split(b"\r\n")[1],
                         key.hex().encode())
        other = self.open()
        self.assertEqual((yield other.identityKey(b"x" * 32)), key)

    @defer.inlineCallbacks
    def test_slow(self) -> Any:
        """
        A Redis slower than the timeout: the call fails after the timeout,
        not later; a slow answer within it is waited for.
        """
        self.server.start()
        store = self.open(timeout="0.5")
        yield store.identityKey(None)
        self.server.command("DEBUG", "SLEEP", "0.2")  # within: fine
        blocker = reactor.callInThread(self.server.command, "DEBUG", "SLEEP", "1.5", timeout=5)
        yield sleep(0.1)
        elapsed = yield self.timed(store.loadState(StateQuery(account="a")))
        self.assertTrue(0.4 < elapsed < 1.0, elapsed)
        yield self.waitUntil(store)

    @defer.inlineCallbacks
    def test_paused(self) -> Any:
        """
        A frozen Redis (SIGSTOP): every call fails within the timeout; when
        it thaws the store reconnects.
        """
        self.server.start()
        store = self.open(timeout="0.5")
        yield store.identityKey(None)
        self.server.pause()
        try:
            calls = [store.loadState(StateQuery(account="a")) for n in range(16)]
            started = time.monotonic()
            results = yield defer.DeferredList(calls, consumeErrors=True)
            self.assertLess(time.monotonic() - started, 1.0)
            self.assertTrue(all(not ok and r.check(StoreError) for ok, r in results))
            elapsed = yield self.timed(store.loadState(StateQuery(account="a")))
            self.assertLess(elapsed, 1.0)
        finally:
            self.server.resume()
        yield self.waitUntil(store)
