"""
How fast the device policy decides, and whether that changes as the store
grows.

    python -m benchmarks.decisions --store memory|sqlite[|redis]
        [--devices 10000,100000,1000000] [--concurrency 16]
        [--decisions 20000] [--redis-url redis://127.0.0.1:PORT] [--smoke]

For each N: fills a fresh store with N devices over N/3 accounts (the
SQLite store with one C{executemany} transaction in the store's own schema,
Redis with the store's own C{setDeviceState} script in pipelines of 10,000,
the memory store through its API), then times the full
L{clientid_twisted.policy._checker.ClientIDChecker} decision path on the
real reactor: the policy's read, the verdict and the outcome's write (the
inner checker is a dict of passwords).  First one decision at a time, then
C{--concurrency} in flight.

The load is what a server's reactor sees: each decision starts in a reactor
turn of its own (as data from a connection would).  A decision's latency
(C{p50_ms}, C{p99_ms}) runs from the call to C{requestAvatarId} to the
moment its Deferred fires: the decision path itself, including any wait for
the store (a thread hop, a lock, a round trip).  With 16 in flight, the 16
that become ready in one turn also queue behind each other on the one
reactor thread, and behind the store's commit: C{p50_ms_queued} and
C{p99_ms_queued} run from the moment a decision could start (the end of the
previous one of its client) and show that CPU-bound queueing.  Nine decisions in ten are a known device with the right
password (learn mode: the device record is updated); one in ten an unknown
token with a wrong password (counters are bumped).

The last line printed is one JSON object: C{results} maps each N to
C{decisions_per_s}, C{p50_ms}, C{p99_ms} (with C{--concurrency} in flight),
C{p99_ms_sequential} and C{cpu_us_per_decision}: this process's CPU time
(user and system, all its threads; with Redis, not the server's) per
decision with C{--concurrency} in flight.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import sqlite3
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

from twisted.cred.credentials import UsernamePassword
from twisted.cred.error import UnauthorizedLogin
from twisted.internet import defer
from twisted.internet.address import IPv4Address

from benchmarks._simulation import DictChecker
from clientid_twisted.cred import identifyCredentials
from clientid_twisted._fingerprint import IdentityHasher
from clientid_twisted._identity import ClientIdentity
from clientid_twisted.policy._checker import ClientIDChecker
from clientid_twisted.policy._engine import policyFromConfig
from clientid_twisted.store import openStore
from clientid_twisted.store._records import APPROVED
from clientid_twisted.store._redis import RedisStore, parseRedisURL

SMOKE_DEVICES = [300, 3000]
PASSWORD = b"right password"
FILL_BATCH = 50_000
"""Store API calls in flight while filling the memory store."""
REDIS_FILL_BATCH = 10_000
"""Devices approved in one pipeline while filling Redis."""


def account(n: int) -> str:
    return f"user{n}@bench.test"


def token(device: int) -> str:
    return f"bench-device-{device:08d}"


def deviceRows(count: int, hasher: IdentityHasher, now: float) -> Any:
    """
    Rows for the SQLite C{devices} table: device I{i} belongs to account
    I{i // 3}.
    """
    for i in range(count):
        identity = ClientIdentity("UUID", token(i))
        yield (
            account(i // 3), hasher.digest(identity), "UUID", hasher.fingerprint(identity),
            APPROVED, now, now, "192.0.2.1", "imap", 1, 0,
        )


def fillSQLite(path: Path, count: int) -> None:
    """
    Create the store (schema, key) through L{openStore}, then insert the
    devices directly, in one transaction: the API would take minutes for
    10^6 devices and the decisions do not care how rows got there.
    """
    store = openStore(f"sqlite://{path}", None, blocking=True)
    key = _result(store.identityKey(None))
    _result(store.close())
    hasher = IdentityHasher(key)
    connection = sqlite3.connect(path, isolation_level=None)
    connection.execute("BEGIN")
    connection.executemany(
        "INSERT INTO devices (account, digest, type, fingerprint, state, first_seen, "
        "last_seen, last_address, last_protocol, logins, failures) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        deviceRows(count, hasher, time.time()),
    )
    connection.execute("COMMIT")
    connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    connection.close()


def fillRedis(url: str, count: int, hasher: IdentityHasher) -> None:
    """
    Approve the devices with the store's own C{setDeviceState} script,
    C{REDIS_FILL_BATCH} to a pipeline (L{RedisStore.runMany
    <clientid_twisted.store._redis.RedisStore.runMany>}): the same records
    as through the API, in seconds instead of minutes for 10^6.
    """
    store = RedisStore(parseRedisURL(url), blocking=True)
    try:
        for start in range(0, count, REDIS_FILL_BATCH):
            batch = []
            for i in range(start, min(count, start + REDIS_FILL_BATCH)):
                identity = ClientIdentity("UUID", token(i))
                batch.append(
                    (account(i // 3), hasher.digest(identity), "UUID",
                     hasher.fingerprint(identity), APPROVED, "", "")
                )
            store.runMany("setDeviceState", batch)
    finally:
        _result(store.close())


async def fillThroughAPI(store: Any, hasher: IdentityHasher, count: int, batchSize: int) -> None:
    """
    Approve the devices with C{setDeviceState}, C{batchSize} calls in
    flight at a time (the memory store answers each at once).
    """
    for start in range(0, count, batchSize):
        batch = []
        for i in range(start, min(count, start + batchSize)):
            identity = ClientIdentity("UUID", token(i))
            batch.append(
                store.setDeviceState(
                    account(i // 3), hasher.digest(identity), "UUID",
                    hasher.fingerprint(identity), APPROVED, None,
                )
            )
        await defer.gatherResults(batch)


def _result(d: defer.Deferred[Any]) -> Any:
    results: list[Any] = []
    d.addBoth(results.append)
    assert results, "a blocking store call did not answer at once"
    if isinstance(results[0], Exception) or hasattr(results[0], "raiseException"):
        results[0].raiseException()
    return results[0]


def credentialsFor(count: int, accounts: int, sample: int, seed: int) -> list[Any]:
    """
    C{sample} logins: nine in ten a known device of its account with the
    right password, one in ten an unknown token with a wrong password.
    """
    rng = random.Random(seed)
    peer = IPv4Address("TCP", "198.51.100.7", 40000)
    logins = []
    for n in range(sample):
        if rng.random() < 0.9:
            device = rng.randrange(count)
            name, identity, password = account(device // 3), token(device), PASSWORD
        else:
            name = account(rng.randrange(accounts))
            identity, password = f"stranger-{n}-{rng.getrandbits(32):08x}", b"wrong"
        logins.append(
            identifyCredentials(
                UsernamePassword(name.encode(), password),
                ClientIdentity("UUID", identity), peer, "imap", True,
            )
        )
    return logins


class Driver:
    """
    Runs decisions through a checker on the reactor, C{concurrency} at a
    time, each starting in a reactor turn of its own.
    """

    def __init__(self, reactor: Any, checker: ClientIDChecker, logins: list[Any]) -> None:
        self.reactor = reactor
        self.checker = checker
        self.logins = logins
        self.latencies: list[float] = []
        self.queued: list[float] = []
        self.errors = 0

    def run(self, count: int, concurrency: int) -> defer.Deferred[float]:
        """
        @return: A L{Deferred} firing with the wall seconds taken.
        """
        self.latencies = []
        self.queued = []
        self._next = 0
        self._count = count
        self._running = concurrency
        self._done: defer.Deferred[float] = defer.Deferred()
        self._started = time.perf_counter()
        for _ in range(concurrency):
            self.reactor.callLater(0, self._issue, time.perf_counter())
        return self._done

    def _issue(self, ready: float) -> None:
        if self._next >= self._count:
            self._running -= 1
            if self._running == 0:
                self._done.callback(time.perf_counter() - self._started)
            return
        credentials = self.logins[self._next % len(self.logins)]
        self._next += 1
        started = time.perf_counter()
        d = self.checker.requestAvatarId(credentials)
        d.addBoth(self._finished, ready, started)

    def _finished(self, result: Any, ready: float, started: float) -> None:
        now = time.perf_counter()
        self.latencies.append(now - started)
        self.queued.append(now - ready)
        if not isinstance(result, bytes) and not result.check(UnauthorizedLogin):
            # A temporary failure (the store) or a bug: counted, never hidden.
            self.errors += 1
        self.reactor.callLater(0, self._issue, now)


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


async def measure(
    reactor: Any, storeKind: str, count: int, decisions: int, concurrency: int,
    work: Path, redisURL: str | None,
) -> dict[str, Any]:
    accounts = max(1, count // 3)
    fillStarted = time.perf_counter()
    if storeKind == "sqlite":
        path = work / f"devices-{count}.sqlite3"
        fillSQLite(path, count)
        store = openStore(f"sqlite://{path}", None, reactor)
    elif storeKind == "memory":
        store = openStore("memory:", None, reactor)
    else:
        store = openStore(redisURL, None, reactor)
    key = await store.identityKey(None)
    hasher = IdentityHasher(key)
    if storeKind == "memory":
        await fillThroughAPI(store, hasher, count, FILL_BATCH)
    elif storeKind == "redis":
        assert redisURL is not None
        fillRedis(redisURL, count, hasher)
    fillSeconds = time.perf_counter() - fillStarted

    passwords = {account(n).encode(): PASSWORD for n in range(accounts)}
    policy = policyFromConfig({}, store, hasher, [], reactor)
    checker = ClientIDChecker(DictChecker(passwords), policy)
    driver = Driver(reactor, checker, credentialsFor(count, accounts, min(decisions, 50_000), count))

    await driver.run(min(2000, decisions), 1)  # warm-up: caches, first commits
    await driver.run(decisions, 1)
    sequential = list(driver.latencies)
    cpuBefore = time.process_time()
    wall = await driver.run(decisions, concurrency)
    cpu = time.process_time() - cpuBefore
    concurrent, queued = list(driver.latencies), list(driver.queued)
    await store.close()
    return {
        "devices": count,
        "accounts": accounts,
        "fill_s": round(fillSeconds, 1),
        "decisions": decisions,
        "decisions_per_s": round(decisions / wall),
        "p50_ms": round(1000 * percentile(concurrent, 0.50), 3),
        "p99_ms": round(1000 * percentile(concurrent, 0.99), 3),
        "max_ms": round(1000 * max(concurrent), 3),
        "p50_ms_queued": round(1000 * percentile(queued, 0.50), 3),
        "p99_ms_queued": round(1000 * percentile(queued, 0.99), 3),
        "p50_ms_sequential": round(1000 * percentile(sequential, 0.50), 3),
        "p99_ms_sequential": round(1000 * percentile(sequential, 0.99), 3),
        "cpu_us_per_decision": round(1e6 * cpu / decisions, 1),
        "errors": driver.errors,
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--store", choices=["memory", "sqlite", "redis"], default="sqlite")
    parser.add_argument("--devices", default="10000,100000,1000000",
                        help="comma-separated store sizes")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--decisions", type=int, default=20_000, help="timed decisions per run")
    parser.add_argument("--redis-url", default=None,
                        help="redis://HOST:PORT/DB (default: start a redis-server on loopback)")
    parser.add_argument("--smoke", action="store_true", help="300 and 3,000 devices, 1,000 decisions")
    args = parser.parse_args(argv)
    sizes = [int(n) for n in args.devices.split(",") if n.strip()]
    if args.smoke:
        sizes, args.decisions = SMOKE_DEVICES, 1000

    work = Path(tempfile.mkdtemp(prefix="clientid-bench-"))
    redis = None
    try:
        redisURL = args.redis_url
        if args.store == "redis" and redisURL is None:
            from benchmarks._redis import LocalRedis

            redis = LocalRedis(work)
            redisURL = redis.url
        results: dict[str, Any] = {}

        async def all(reactor: Any) -> None:
            for n in sizes:
                url = redisURL
                if redis is not None:
                    url = redis.fresh()
                results[str(n)] = await measure(
                    reactor, args.store, n, args.decisions, args.concurrency, work, url
                )
                print(_row(results[str(n)], args.concurrency), flush=True)

        print(f"store {args.store}, {args.concurrency} in flight, {args.decisions} decisions per run")
        print(_header(args.concurrency))
        _react(all)
    finally:
        if redis is not None:
            redis.stop()
        shutil.rmtree(work, ignore_errors=True)
    first, last = results[str(sizes[0])], results[str(sizes[-1])]
    summary = {
        "store": args.store,
        "concurrency": args.concurrency,
        "results": results,
        "throughput_ratio_last_first": round(last["decisions_per_s"] / first["decisions_per_s"], 3),
    }
    print(
        f"throughput at {sizes[-1]} devices: {100 * summary['throughput_ratio_last_first']:.0f}% "
        f"of {sizes[0]}"
    )
    print(json.dumps(summary))
    return summary


def _react(body: Callable[[Any], Any]) -> None:
    """
    Run C{body(reactor)} on the global reactor until it finishes, without
    the C{sys.exit} of L{task.react}.
    """
    from twisted.internet import reactor

    failures: list[Any] = []

    def go() -> None:
        d = defer.ensureDeferred(body(reactor))
        d.addErrback(failures.append)
        d.addBoth(lambda _: reactor.stop())

    reactor.callWhenRunning(go)
    reactor.run()
    if failures:
        failures[0].raiseException()


def _header(concurrency: int) -> str:
    return (
        f"{'devices':>9} {'fill s':>7} {'decisions/s':>12} {'p50 ms':>8} {'p99 ms':>8}"
        f" {'max ms':>8} {'seq p50':>8} {'seq p99':>8} {'queued p50':>10} {'queued p99':>10}"
        f" {'CPU us':>7} {'errors':>6}"
    )


def _row(r: dict[str, Any], concurrency: int) -> str:
    return (
        f"{r['devices']:>9} {r['fill_s']:>7} {r['decisions_per_s']:>12} {r['p50_ms']:>8}"
        f" {r['p99_ms']:>8} {r['max_ms']:>8} {r['p50_ms_sequential']:>8}"
        f" {r['p99_ms_sequential']:>8} {r['p50_ms_queued']:>10} {r['p99_ms_queued']:>10}"
        f" {r['cpu_us_per_decision']:>7} {r['errors']:>6}"
    )


if __name__ == "__main__":
    main(sys.argv[1:])
