"""
Tests for L{clientid_twisted.store._redis.RedisStore}: the shared store
suite (the server's mode and the admin command's), URLs, atomic counters
under many concurrent writers, TTL expiry, and faults: Redis down at
start, down mid-traffic, slow, paused, restarted empty.

Each test talks to a C{redis-server} of its own making
(L{tests.redisserver}); without the program they are skipped, except in CI.
"""

from __future__ import annotations

import json
import random
import time
from typing import Any

import attrs
from twisted.internet import defer, reactor
from twisted.internet.task import Clock, deferLater
from twisted.internet.testing import StringTransport
from twisted.cred.error import UnauthorizedLogin
from twisted.logger import globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase, TestCase

from clientid_twisted.store import openStore
from clientid_twisted.store._errors import StoreError
from clientid_twisted.store._records import (
    APPROVED,
    REVOKED,
    AddMember,
    Bump,
    DeviceUpdate,
    Event,
    Once,
    OutcomeRecord,
    Reset,
    StateQuery,
)
from clientid_twisted.store._redis import (
    RedisStore,
    _decodeJSON,
    _encodeJSON,
    _encodeRecord,
    parseRedisURL,
)
from clientid_twisted.store._resp import (
    ProtocolError,
    RedisProtocol,
    ReplyError,
    encodeArguments,
    encodeCommand,
    replyReader,
)
from tests.policyharness import ALICE, PolicyHarness
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


class RunManyTests(SynchronousTestCase):
    """
    L{RedisStore.runMany}: a script run for many argument lists in one
    pipeline, as C{benchmarks.decisions} fills Redis.
    """

    def test_sameRecords(self) -> None:
        """
        Devices approved through C{setDeviceState}'s script in one
        pipeline are stored exactly as C{setDeviceState} stores them (the
        same JSON, the same approved set), on a real redis-server.
        """
        server = sharedRedisServer()
        clock = Clock()
        clock.advance(START)
        piped = localStore(self, server.url, clock, blocking=True)
        one = localStore(self, server.url, clock, blocking=True)
        devices = [(f"a{n % 2}", f"d{n}", "UUID", f"f{n}", APPROVED) for n in range(5)]
        piped.runMany("setDeviceState", [(*device, "", "") for device in devices])
        for device in devices:
            one.setDeviceState(*device, None)
        for account in ("a0", "a1"):
            stored = [
                server.command("HGETALL", store._prefix + "devices:" + account)
                for store in (piped, one)
            ]
            self.assertEqual(stored[0], stored[1])
            self.assertIn(b"approved", stored[0])
            approved = [
                sorted(server.command("SMEMBERS", store._prefix + "approved:" + account).split())
                for store in (piped, one)
            ]
            self.assertEqual(approved[0], approved[1])

    def test_errorReply(self) -> None:
        """
        An error reply fails the call with L{StoreError}, after the other
        commands of the pipeline have run.
        """
        server = sharedRedisServer()
        store = localStore(self, server.url, Clock(), blocking=True)
        self.assertRaises(
            StoreError,
            store.runMany,
            "setLock",
            [("k1", "60", "", ""), ("k2", "not a number", "", ""), ("k3", "60", "", "")],
        )
        self.assertEqual(sorted(store.activeLocks(["k1", "k2", "k3"]).result), ["k1", "k3"])


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


def parseAll(data: bytes) -> list[Any]:
    """
    Every whole reply in C{data}, through a fresh L{replyReader}.
    """
    reader = replyReader()
    reader.feed(data)
    replies = []
    while (reply := reader.gets()) is not False:
        replies.append(reply)
    return replies


def parseOne(data: bytes) -> Any:
    [reply] = parseAll(data)
    return reply


class RESPTests(SynchronousTestCase):
    def test_roundTrip(self) -> None:
        self.assertEqual(encodeCommand(["SET", b"k", 1, 2.5]), b"*4\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\n1\r\n$3\r\n2.5\r\n")
        value = parseOne(b"*5\r\n$3\r\nabc\r\n$-1\r\n:42\r\n+OK\r\n*1\r\n-ERR no\r\n")
        self.assertEqual(value[:4], [b"abc", None, 42, b"OK"])
        self.assertIsInstance(value[4][0], ReplyError)


def _referenceEncode(arguments: list[Any]) -> bytes:
    """
    The command encoding as it was first written: the fast paths must give
    the same bytes.
    """
    parts = [b"*%d\r\n" % len(arguments)]
    for argument in arguments:
        if isinstance(argument, bytes):
            data = argument
        elif isinstance(argument, str):
            data = argument.encode("utf-8")
        elif isinstance(argument, float):
            data = repr(argument).encode("ascii")
        else:
            data = str(argument).encode("ascii")
        parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(parts)


def _resp(value: Any) -> bytes:
    """
    A reply as Redis writes it: bytes as bulk strings, L{str} as status,
    L{int}, L{list} (nested), L{None} as nil bulk, L{ReplyError}.
    """
    if value is None:
        return b"$-1\r\n"
    if isinstance(value, bytes):
        return b"$%d\r\n%s\r\n" % (len(value), value)
    if isinstance(value, str):
        return b"+%s\r\n" % value.encode()
    if isinstance(value, int):
        return b":%d\r\n" % value
    if isinstance(value, ReplyError):
        return b"-%s\r\n" % str(value).encode()
    return b"*%d\r\n" % len(value) + b"".join(_resp(v) for v in value)


def _comparable(value: Any) -> Any:
    """
    A reply as the parser gives it back: status replies as bytes too.
    """
    if isinstance(value, ReplyError):
        return ("error", str(value))
    if isinstance(value, str):
        return value.encode()
    if isinstance(value, list):
        return [_comparable(v) for v in value]
    return value


def _randomReply(rng: random.Random, depth: int = 0) -> Any:
    kind = rng.randrange(7 if depth < 4 else 5)
    if kind == 0:
        return None
    if kind == 1:
        return bytes(rng.randrange(256) for _ in range(rng.randrange(12))) + b"\r\n"[: rng.randrange(3)]
    if kind == 2:
        return rng.choice(["OK", "QUEUED", ""])
    if kind == 3:
        return rng.randrange(-(10**12), 10**12)
    if kind == 4:
        return ReplyError(rng.choice(["ERR no", "NOSCRIPT No matching script", "WRONGTYPE x"]))
    return [_randomReply(rng, depth + 1) for _ in range(rng.randrange(5))]


class RESPEncodingTests(SynchronousTestCase):
    """
    L{encodeCommand} and L{encodeArguments} give the bytes of the first,
    plain encoding for every kind of argument.
    """

    values: list[Any] = [
        "SET", "", "caf\u00e9 \u2603", "a\r\nb", b"", b"\x00\xff\r\n", 0, -7, 10**20,
        2.5, 1e300, -0.0, float("inf"), True, False, type("Sub", (str,), {})("sub"),
    ]

    def test_encodeCommand(self) -> None:
        self.assertEqual(
            encodeCommand(["SET", b"k", 1, 2.5]),
            b"*4\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\n1\r\n$3\r\n2.5\r\n",
        )
        self.assertEqual(encodeCommand(self.values), _referenceEncode(self.values))
        self.assertEqual(encodeCommand(()), b"*0\r\n")
        for value in self.values:
            self.assertEqual(encodeCommand([value]), _referenceEncode([value]), value)

    def test_encodeArguments(self) -> None:
        """
        The arguments without the array's header.
        """
        header = b"*%d\r\n" % len(self.values)
        self.assertEqual(header + encodeArguments(self.values), _referenceEncode(self.values))
        self.assertEqual(encodeArguments(iter(["a", 1])), _referenceEncode(["a", 1])[4:])

    def test_unpackable(self) -> None:
        """
        Arguments hiredis does not pack (C{bool}s) give the same bytes the
        Python way, among others it would.
        """
        values = ["EVALSHA", True, 3, False, b"x"]
        self.assertEqual(encodeCommand(values), _referenceEncode(values))


class RESPParsingTests(SynchronousTestCase):
    """
    L{replyReader}: every kind of reply, nested, several in one buffer, and
    any prefix of a buffer (a read that stopped anywhere) gives the replies
    wholly in it and then, with the rest, the others.
    """

    def test_scalars(self) -> None:
        for data, expected in [
            (b"$3\r\nabc\r\n", b"abc"),
            (b"$0\r\n\r\n", b""),
            (b"$4\r\na\r\nb\r\n", b"a\r\nb"),
            (b"$-1\r\n", None),
            (b":-12\r\n", -12),
            (b"+PONG\r\n", b"PONG"),
            (b"*0\r\n", []),
            (b"*-1\r\n", None),
        ]:
            with self.subTest(data=data):
                self.assertEqual(parseAll(data), [expected])
        error = parseOne(b"-NOSCRIPT No matching script\r\n")
        self.assertIsInstance(error, ReplyError)
        self.assertEqual(str(error), "NOSCRIPT No matching script")

    def test_nested(self) -> None:
        """
        Arrays in arrays, empty and nil ones among them, then the next
        reply.
        """
        value = [[b"a", [], None, [[1, [b"", [2]]], b"OK"]], [None], [], 3]
        data = _resp(value) + b":7\r\n"
        self.assertEqual(parseAll(data), [value, 7])
        self.assertEqual(parseOne(b"*3\r\n*0\r\n*-1\r\n$-1\r\n"), [[], None, None])

    def test_deep(self) -> None:
        """
        Nesting as deep as a reply may go is parsed; deeper than hiredis
        allows (no Redis reply is) is a L{ProtocolError}, not a crash.
        """
        data = b"*1\r\n" * 7 + b":1\r\n"
        value = parseOne(data)
        for _ in range(7):
            self.assertEqual(len(value), 1)
            value = value[0]
        self.assertEqual(value, 1)
        self.assertRaises(ProtocolError, parseAll, b"*1\r\n" * 5000 + b":1\r\n")

    def test_errorsInArrays(self) -> None:
        value = parseOne(_resp([ReplyError("ERR a"), [ReplyError("ERR b"), b"x"]]))
        self.assertEqual(_comparable(value), [("error", "ERR a"), [("error", "ERR b"), b"x"]])

    def test_random(self) -> None:
        """
        Random replies, one after the other in one buffer, parse back to
        what was encoded.
        """
        rng = random.Random(7)
        for _ in range(200):
            replies = [_randomReply(rng) for _ in range(rng.randrange(1, 4))]
            data = b"".join(_resp(r) for r in replies)
            self.assertEqual(
                [_comparable(v) for v in parseAll(data)], [_comparable(r) for r in replies]
            )

    def test_incompleteAtEveryByte(self) -> None:
        """
        Cut anywhere, a buffer gives the replies wholly before the cut and
        nothing for the one it splits, never a wrong value; the rest of the
        bytes give the others.
        """
        replies = [
            [b"{\"s\":\"approved\"}", 3, [], [b"k", b"1.5"], 0, None, b"a\r\nb"],
            [[1, [None, [b"x", ReplyError("ERR in")]]], []],
            None,
            ReplyError("NOSCRIPT No matching script"),
            "OK",
            -1,
            b"",
            [],
        ]
        expected = [_comparable(r) for r in replies]
        encoded = [_resp(r) for r in replies]
        data = b"".join(encoded)
        ends = [sum(len(e) for e in encoded[: i + 1]) for i in range(len(encoded))]
        for cut in range(len(data) + 1):
            reader = replyReader()
            reader.feed(data[:cut])
            got = []
            while (reply := reader.gets()) is not False:
                got.append(_comparable(reply))
            whole = sum(1 for end in ends if end <= cut)
            self.assertEqual(got, expected[:whole], cut)
            reader.feed(data[cut:])
            while (reply := reader.gets()) is not False:
                got.append(_comparable(reply))
            self.assertEqual(got, expected, cut)

    def test_notRESP(self) -> None:
        for data in [b"?1\r\n", b"$x\r\nab\r\n", b"*y\r\n", b":\r\n", b"*2\r\n:1\r\n!\r\n"]:
            with self.subTest(data=data):
                self.assertRaises(ProtocolError, parseAll, data)


class RESPProtocolTests(SynchronousTestCase):
    """
    L{RedisProtocol} matches replies to commands in order, whatever the
    reads look like.
    """

    def connect(self) -> tuple[RedisProtocol, StringTransport]:
        protocol = RedisProtocol()
        transport = StringTransport()
        protocol.makeConnection(transport)
        return protocol, transport

    def test_byteByByte(self) -> None:
        protocol, transport = self.connect()
        results: list[Any] = []
        for d in [
            protocol.execute("GET", "k"),
            protocol.executeEncoded(encodeCommand(["EVALSHA", b"f" * 40, 0, "a"])),
            protocol.execute("LRANGE", "l", 0, -1),
            protocol.execute("BAD"),
            protocol.execute("GET", "missing"),
        ]:
            d.addBoth(results.append)
        self.assertEqual(
            transport.value(),
            encodeCommand(["GET", "k"])
            + encodeCommand(["EVALSHA", b"f" * 40, 0, "a"])
            + encodeCommand(["LRANGE", "l", 0, -1])
            + encodeCommand(["BAD"])
            + encodeCommand(["GET", "missing"]),
        )
        replies = [b"v", [b"[null,3]", [b"x", 1]], [], ReplyError("ERR unknown command"), None]
        for byte in b"".join(_resp(r) for r in replies):
            protocol.dataReceived(bytes([byte]))
        self.assertEqual(results[:3], [b"v", [b"[null,3]", [b"x", 1]], []])
        self.assertIsInstance(results[3].value, ReplyError)
        self.assertIsNone(results[4])
        self.assertFalse(transport.disconnecting)

    def test_manyInOneRead(self) -> None:
        protocol, transport = self.connect()
        results: list[Any] = []
        for n in range(50):
            protocol.execute("INCR", "n").addCallback(results.append)
        data = b"".join(_resp(n) for n in range(50))
        protocol.dataReceived(data[:-3])
        self.assertEqual(results, list(range(49)))
        protocol.dataReceived(data[-3:])
        self.assertEqual(results, list(range(50)))

    def test_parseAndErrorHook(self) -> None:
        """
        A command's C{parse} runs on its reply before its Deferred fires
        (what it raises, the Deferred fails with); C{onError} gets an
        error reply and the Deferred to fire, instead of the Deferred
        failing with the L{ReplyError}; replies after them still go to
        their own commands.
        """
        protocol, transport = self.connect()
        results: list[Any] = []
        handled: list[Any] = []

        def onError(error: ReplyError, d: defer.Deferred[Any]) -> None:
            handled.append(str(error))
            d.callback("handled")

        protocol.executeEncoded(encodeCommand(["GET", "a"]), parse=len).addBoth(results.append)
        protocol.executeEncoded(encodeCommand(["GET", "b"]), parse=int).addBoth(results.append)
        protocol.executeEncoded(
            encodeCommand(["EVALSHA", b"f" * 40, 0]), parse=len, onError=onError
        ).addBoth(results.append)
        protocol.executeEncoded(encodeCommand(["GET", "c"]), onError=onError).addBoth(results.append)
        protocol.dataReceived(
            _resp(b"four") + _resp(b"x") + _resp(ReplyError("NOSCRIPT none")) + _resp(b"c")
        )
        self.assertEqual(results[0], 4)
        self.assertIsInstance(results[1].value, ValueError)
        self.assertEqual(results[2:], ["handled", b"c"])
        self.assertEqual(handled, ["NOSCRIPT none"])
        self.assertFalse(transport.disconnecting)

    def test_garbage(self) -> None:
        """
        Bytes that are not RESP drop the connection, after the replies
        before them have gone to their commands.
        """
        protocol, transport = self.connect()
        results: list[Any] = []
        protocol.execute("GET", "a").addBoth(results.append)
        protocol.execute("GET", "b").addBoth(results.append)
        protocol.dataReceived(b"$1\r\nA\r\n?junk\r\n")
        self.assertEqual(results, [b"A"])
        self.assertTrue(transport.disconnecting or getattr(transport, "aborted", False))


class RedisJSONTests(SynchronousTestCase):
    """
    The store's JSON helpers give what C{json} gives.
    """

    def test_decode(self) -> None:
        for raw in [
            b'{"s":"approved","fs":"1700000000.5","n":4,"x":0}',
            b'{"t":"caf\xc3\xa9","f":"a\\/b\\"c\\u2603","n":1.0,"la":null}',
            b'[{"s":"pending"},3,["k","inf"],0,1,"1700000000"]',
            b'[null,"1",[],[0,1]]',
            b' {"s": "approved"} ',
            b'\xef\xbb\xbf{"s":"approved"}',
            b"{}",
        ]:
            with self.subTest(raw=raw):
                self.assertEqual(_decodeJSON(raw), json.loads(raw))
        for raw in [b'{"s":"approved"}x', b'{"s":', b"", b"nope", b'\xff{"s":1}']:
            with self.subTest(raw=raw):
                self.assertRaises(ValueError, _decodeJSON, raw)

    def test_encode(self) -> None:
        for value in [
            {"a": "caf\u00e9", "b": [1, 2.5, None, True, False], "c": {"d": -0.0}},
            ["device-new", None, "UUID", "0123456789abcdef", "192.0.2.1", "imap", 'q"\\/'],
            {"w": 1e300, "ls": float("inf")},
            [],
        ]:
            with self.subTest(value=value):
                self.assertEqual(_encodeJSON(value), json.dumps(value, separators=(",", ":")))

    def test_encodeRecord(self) -> None:
        """
        The record's arguments, flat: the events it may record (seven fields
        each, absent ones empty, present ones after C{=}), then the device
        update, the operations and the events always recorded, each event
        by its number.
        """
        new = Event("device-new", "alice", "UUID", "fp", "192.0.2.1", "imap")
        locked = Event("token-locked", None, "UUID", "fp", detail="too many")
        closed = Event("account-closed", "alice")
        login = Event("login", "alice", detail="")
        record = OutcomeRecord(
            device=DeviceUpdate("alice", "d" * 64, "UUID", "fp", None, "imap", False,
                                promote=APPROVED, promoteFrom=("pending",), event=new),
            operations=(
                AddMember("token-accounts:d", "alice", 600.0, 3, "token-locked:d", 900.0, locked),
                Bump("unknown-failures:alice", 600.0, 5, "account-closed:alice", 900.0, closed),
                Bump("attack", 60),
                Reset("device-failures:d"),
                Once("alerted:x", 3600.0, new),
            ),
            events=(login,),
        )
        argv, events = _encodeRecord(record)
        self.assertEqual(events, [new, locked, closed, new, login])
        self.assertEqual(
            argv,
            [
                5,
                "device-new", "=alice", "=UUID", "=fp", "=192.0.2.1", "=imap", "",
                "token-locked", "", "=UUID", "=fp", "", "", "=too many",
                "account-closed", "=alice", "", "", "", "", "",
                "device-new", "=alice", "=UUID", "=fp", "=192.0.2.1", "=imap", "",
                "login", "=alice", "", "", "", "", "=",
                "1", "alice", "d" * 64, "UUID", "fp", "", "=imap", "", 0, "", APPROVED, "0",
                1, "pending",
                5,
                "m", "token-accounts:d", "alice", 600.0, 3, "token-locked:d", 900.0, "1",
                "b", "unknown-failures:alice", 600.0, 5, "account-closed:alice", 900.0, "2",
                "b", "attack", 60.0, 0, "", 0.0, "",
                "r", "device-failures:d",
                "o", "alerted:x", 3600.0, "3",
                1, "4",
            ],
        )
        # Numbers are written by hiredis as Python writes them (floats as
        # their repr, which the script's tonumber reads back exactly).
        self.assertIn(b"$5\r\n600.0\r\n$1\r\n3\r\n", encodeCommand(argv))
        self.assertEqual(_encodeRecord(OutcomeRecord()), ([0, "", 0, 0], []))
        self.assertRaises(TypeError, _encodeRecord, OutcomeRecord(operations=("x",)))  # type: ignore[arg-type]


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

    @defer.inlineCallbacks
    def test_counterOnServerTime(self) -> Any:
        """
        On Redis's clock, a decision's read sees the failure counter the
        outcomes bumped, also after C{SCRIPT FLUSH} (the script is sent
        whole), and 0 once it is reset.
        """
        store = self.open()
        for _ in range(2):
            yield store.recordOutcome(OutcomeRecord(operations=(Bump("fails", window=600.0),)))
        self.server.command("SCRIPT", "FLUSH")
        state = yield store.loadState(StateQuery(account="a", digest="d", counter="fails"))
        self.assertEqual((state.count, state.device), (2, None))
        yield store.recordOutcome(OutcomeRecord(operations=(Reset("fails"),)))
        state = yield store.loadState(StateQuery(counter="fails"))
        self.assertEqual(state.count, 0)

    @defer.inlineCallbacks
    def test_scriptCacheFlushedRecord(self) -> Any:
        """
        After C{SCRIPT FLUSH}, a record with events (its arguments after
        the JSON) and the caller's time goes through the script sent whole.
        """
        store = self.open(time="local")
        self.server.command("SCRIPT", "FLUSH")
        op = Bump("c", window=600.0, limit=1, lock="l", lockSeconds=60.0, event=Event("locked", "a"))
        result = yield store.recordOutcome(
            OutcomeRecord(device=update(account="a", digest="d"), operations=(op,),
                          events=(Event("login", "a"),))
        )
        self.assertEqual([e.kind for e in result.events], ["locked", "login"])
        self.assertEqual(result.locked, ("l",))
        self.assertEqual((result.device.account, result.device.state), ("a", APPROVED))
        self.assertLess(abs(result.events[0].time - time.time()), 5.0)
        self.assertEqual([e.kind for e in (yield store.listEvents("a", 10))], ["locked", "login"])

    @defer.inlineCallbacks
    def test_awkwardNames(self) -> Any:
        """
        Keys and accounts with quotes, backslashes, slashes, control and
        non-ASCII characters come back as they went in from the scripts'
        JSON answers.
        """
        store = self.open()
        names = ['q"uote', "back\\slash", "sl/ash", "caf\u00e9 \u2603", "tab\tnl\n", "[]{},:"]
        for name in names:
            yield store.setLock("lock:" + name, 600.0, None)
        state = yield store.loadState(
            StateQuery(account=names[0], digest="d", locks=tuple("lock:" + n for n in names) + ("none",),
                       windowSet="set:" + names[1], member=names[3])
        )
        self.assertEqual(sorted(state.locks), sorted("lock:" + n for n in names))
        for name in names:
            op = Bump("n:" + name, window=600.0, limit=1, lock="new:" + name, lockSeconds=60.0)
            result = yield store.recordOutcome(
                OutcomeRecord(device=update(account=name, digest=name, typeName=name,
                                            fingerprint=name, address=name, protocol=name),
                              operations=(op,))
            )
            self.assertEqual(result.locked, ("new:" + name,))
            device = result.device
            self.assertEqual(
                (device.account, device.digest, device.typeName, device.fingerprint,
                 device.lastAddress, device.lastProtocol),
                (name, name, name, name, name, name),
            )
            state = yield store.loadState(StateQuery(account=name, digest=name))
            self.assertEqual(state.device, device)

    @defer.inlineCallbacks
    def test_manyLocks(self) -> Any:
        """
        A read of more locks than one C{MGET} of the script takes (1000)
        sees every live one.
        """
        store = self.open()
        live = [f"k{n}" for n in range(0, 2500, 7)]
        for key in live:
            yield store.setLock(key, 600.0, None)
        state = yield store.loadState(StateQuery(locks=tuple(f"k{n}" for n in range(2500))))
        self.assertEqual(sorted(state.locks), sorted(live))
        self.assertEqual(sorted((yield store.activeLocks(f"k{n}" for n in range(2500)))), sorted(live))

    @defer.inlineCallbacks
    def test_storedRecordsRead(self) -> Any:
        """
        Device records as earlier versions and C{cjson} wrote them (any
        key order, numbers as floats, escaped slashes, fields missing) are
        read, and updated in place.
        """
        store = self.open()
        key = self.prefix + "devices:alice"
        records = {
            "d1": '{"x":0,"s":"approved","t":"UUID","n":0,"f":"d1d1d1d1d1d1d1d1"}',
            "d2": '{"s":"pending","fs":"1700000000.25","t":"Apple\\/x","f":"f2","ls":"1700000100",'
                  '"lp":"imap","la":"192.0.2.7","x":2,"n":3.0}',
        }
        for digest, raw in records.items():
            self.server.command("HSET", key, digest, raw)
        self.server.command("SADD", self.prefix + "approved:alice", "d1")
        state = yield store.loadState(StateQuery(account="alice", digest="d1"))
        self.assertEqual(state.approvedDevices, 1)
        d1 = state.device
        self.assertEqual(
            (d1.state, d1.typeName, d1.fingerprint, d1.firstSeen, d1.lastSeen, d1.logins, d1.failures),
            (APPROVED, "UUID", "d1d1d1d1d1d1d1d1", None, None, 0, 0),
        )
        d2 = (yield store.loadState(StateQuery(account="alice", digest="d2"))).device
        self.assertEqual(
            (d2.state, d2.typeName, d2.firstSeen, d2.lastSeen, d2.lastAddress, d2.lastProtocol,
             d2.logins, d2.failures),
            ("pending", "Apple/x", 1700000000.25, 1700000100.0, "192.0.2.7", "imap", 3, 2),
        )
        listed = yield store.listDevices("alice")
        self.assertEqual({d.digest: d for d in listed}, {"d1": d1, "d2": d2})
        result = yield store.recordOutcome(
            OutcomeRecord(device=update(account="alice", digest="d2", create=None))
        )
        self.assertEqual((result.device.state, result.device.logins, result.device.failures,
                          result.device.firstSeen), ("pending", 4, 2, 1700000000.25))
        self.assertEqual((yield store.loadState(StateQuery(account="alice", digest="d2"))).device,
                         result.device)


    @defer.inlineCallbacks
    def test_storedRecordsRenamed(self) -> Any:
        """
        A record stored before names existed reads as unnamed; renaming it
        adds C{nm} to its JSON and keeps every other field, and the name is
        read on the decision path (the script's flat reply) as well as by
        C{listDevices}; removing the name removes C{nm}.
        """
        store = self.open()
        key = self.prefix + "devices:alice"
        old = {"s": "pending", "fs": "1700000000.25", "t": "UUID", "f": "f2", "x": 2, "n": 3}
        self.server.command("HSET", key, "d2", json.dumps(old))
        before = (yield store.loadState(StateQuery(account="alice", digest="d2"))).device
        self.assertIsNone(before.name)
        name = "Anna's \"phone\" \u00e9 \U0001f4f1"
        renamed = yield store.renameDevice("alice", "d2", name, None)
        self.assertEqual(renamed, attrs.evolve(before, name=name))
        stored = json.loads(self.server.reply("HGET", key, "d2"))
        self.assertEqual(stored, {**old, "nm": name})
        state = yield store.loadState(StateQuery(account="alice", digest="d2"))
        self.assertEqual(state.device, renamed)
        result = yield store.recordOutcome(
            OutcomeRecord(device=update(account="alice", digest="d2", create=None))
        )
        self.assertEqual((result.device.name, result.device.logins), (name, 4))
        [listed] = yield store.listDevices("alice")
        self.assertEqual(listed, result.device)
        yield store.renameDevice("alice", "d2", None, None)
        self.assertNotIn("nm", json.loads(self.server.reply("HGET", key, "d2")))


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
        reactor.callInThread(self.server.command, "DEBUG", "SLEEP", "1.5", timeout=5)
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


class RedisFastPathTests(TestCase):
    """
    The policy's fast path on a real redis-server: a known device's login
    within its last-seen interval writes nothing, and the read alone still
    sees every refusal.
    """

    timeout = 60

    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(START)
        self.store = localStore(self, sharedRedisServer().url, self.clock)
        self.writes: list[OutcomeRecord] = []
        record = self.store.recordOutcome

        def spy(outcome: OutcomeRecord) -> Any:
            self.writes.append(outcome)
            return record(outcome)

        self.store.recordOutcome = spy  # type: ignore[method-assign]
        self.harness = PolicyHarness(self, store=self.store, clock=self.clock)

    @defer.inlineCallbacks
    def login(self, **kwargs: Any) -> Any:
        try:
            yield self.harness.checker.requestAvatarId(self.harness.credentials(**kwargs))
        except UnauthorizedLogin:
            return "refused"
        return "ok"

    @defer.inlineCallbacks
    def logins(self) -> Any:
        devices = yield self.store.listDevices(ALICE)
        return {device.digest: device.logins for device in devices}

    @defer.inlineCallbacks
    def test_quietLoginsCounted(self) -> Any:
        """
        Logins within the interval write nothing; the next write after it
        adds them to the device's count in Redis.
        """
        self.assertEqual((yield self.login()), "ok")
        self.assertEqual(len(self.writes), 1)
        for _ in range(2):
            self.assertEqual((yield self.login()), "ok")
        self.assertEqual(len(self.writes), 1)
        self.assertEqual((yield self.logins()), {self.harness.digest(): 1})
        self.clock.advance(301)
        self.assertEqual((yield self.login()), "ok")
        self.assertEqual(len(self.writes), 2)
        self.assertEqual((yield self.logins()), {self.harness.digest(): 4})

    @defer.inlineCallbacks
    def test_failuresStillLock(self) -> Any:
        """
        Wrong passwords from a known device are written at once and
        counted per device: the fifth locks it, and its next right
        password is refused; another device of the account still logs in.
        """
        self.assertEqual((yield self.login()), "ok")
        self.assertEqual((yield self.login(token="token-B")), "ok")
        for _ in range(5):
            self.assertEqual((yield self.login(password="wrong")), "refused")
        self.assertEqual(len(self.writes), 7)
        self.assertEqual((yield self.login()), "refused")
        self.assertEqual((yield self.login(token="token-B")), "ok")

    @defer.inlineCallbacks
    def test_revokedRefused(self) -> Any:
        """
        A device revoked by the admin command is refused at its next
        login, within the interval (the read sees it; nothing is cached).
        """
        self.assertEqual((yield self.login()), "ok")
        self.assertEqual((yield self.login()), "ok")
        digest = self.harness.digest()
        admin = localStore(self, sharedRedisServer().url, self.clock, blocking=True,
                           prefix=self.store._prefix)
        admin.setDeviceState(ALICE, digest, "UUID", digest[:16], REVOKED, None)
        self.assertEqual((yield self.login()), "refused")
