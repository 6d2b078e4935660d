# -*- test-case-name: tests.test_store_redis -*-
"""
The shared store: several frontends (and C{clientid-admin}) on one Redis,
so a device approved, revoked or locked on one is so on all at once, and a
brute-force run spread over all of them hits one counter.

Selected by URL (see L{parseRedisURL})::

    redis://[[USER]:PASSWORD@]HOST[:PORT][/DB][?prefix=NAME&timeout=S&time=redis|local]
    rediss://...  (TLS; &ca=/path/to/ca.pem for a private authority)

Each store call is one Lua script (L{clientid_twisted.store.redisscripts}):
a decision costs one round trip to read (L{RedisStore.loadState}) and one
to write (L{RedisStore.recordOutcome}), each atomic.  All calls of one
store go, pipelined and in order, on one connection, which gives
read-your-writes without waiting for replies.

Faults: Redis unreachable gives an immediate L{StoreError} (the policy's
temporary failure, or fail-open); every command has a deadline (the
URL's C{timeout}, 2 s by default) after which the connection is dropped
and made again; reconnection is automatic and logged once per outage.
After Redis restarts empty, the first frontend to reconnect puts the
identity key it holds back, so fingerprints stay valid.
"""

from __future__ import annotations

import binascii
import json
import math
import os
from pathlib import Path
from typing import Any, Iterable, cast
from urllib.parse import parse_qs, unquote, urlsplit

from attrs import evolve
from zope.interface import implementer

from twisted.internet import defer
from twisted.logger import Logger
from twisted.python.failure import Failure

from clientid_twisted.interfaces import IClientIDStore
from clientid_twisted.store.errors import StoreError
from clientid_twisted.store.memory import _newestFirst
from clientid_twisted.store.records import (
    AddMember,
    Bump,
    DecisionState,
    DeviceRecord,
    Event,
    Once,
    OutcomeRecord,
    OutcomeResult,
    Reset,
    StateQuery,
)
from clientid_twisted.store.redisscripts import SCRIPTS, Script
from clientid_twisted.store.resp import (
    BlockingRedisConnection,
    RedisAddress,
    RedisConnection,
    RedisProtocol,
    ReplyError,
)

__all__ = ["RedisStore", "RedisSettings", "parseRedisURL", "openRedisStore"]

DEFAULT_PREFIX = "clientid:"
DEFAULT_TIMEOUT = 2.0
EVENTS_KEPT = 100_000
"""Events kept in the global list (the oldest go first)."""
ACCOUNT_EVENTS_KEPT = 1_000
"""Events kept per account."""
EVENT_RETENTION = 90 * 86400
"""Seconds an account's events outlive its last one."""


class RedisSettings:
    """
    What a C{redis://} URL says.

    @ivar address: Where the server is.
    @ivar prefix: Put before every key, so installations can share a Redis.
    @ivar timeout: Seconds a command or connection attempt may take.
    @ivar serverTime: Whether the store's time is Redis's clock (the
        default: frontends with skewed clocks still agree) rather than the
        caller's (C{time=local}).
    """

    def __init__(
        self, address: RedisAddress, prefix: str, timeout: float, serverTime: bool
    ) -> None:
        self.address = address
        self.prefix = prefix
        self.timeout = timeout
        self.serverTime = serverTime


def parseRedisURL(url: str) -> RedisSettings:
    """
    @raise ValueError: For a URL this store cannot use (the message never
        repeats a password).
    """
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    where = f"{scheme}://{parts.hostname or ''}"
    if scheme not in ("redis", "rediss"):
        raise ValueError(f"not a Redis store URL: {where}")
    try:
        port = parts.port or 6379
    except ValueError:
        raise ValueError(f"invalid Redis store URL {where}...: bad port") from None
    path = parts.path.strip("/")
    try:
        db = int(path) if path else 0
    except ValueError:
        raise ValueError(f"invalid Redis store URL {where}: the path must be a database number") from None
    options = parse_qs(parts.query, keep_blank_values=True)
    known = {"prefix", "timeout", "time", "ca"}
    unknown = sorted(set(options) - known)
    if unknown:
        raise ValueError(
            f"invalid Redis store URL {where}: unknown option {unknown[0]!r} "
            f"(known: {', '.join(sorted(known))})"
        )

    def option(name: str, default: str | None) -> str | None:
        values = options.get(name)
        return values[-1] if values else default

    prefix = option("prefix", None)
    prefix = DEFAULT_PREFIX if prefix is None else (prefix if prefix.endswith(":") else prefix + ":")
    try:
        timeout = float(option("timeout", str(DEFAULT_TIMEOUT)) or "")
    except ValueError:
        timeout = -1.0
    if not (timeout > 0 and math.isfinite(timeout)):
        raise ValueError(f"invalid Redis store URL {where}: timeout must be a number of seconds > 0")
    time = option("time", "redis")
    if time not in ("redis", "local"):
        raise ValueError(f"invalid Redis store URL {where}: time must be redis or local")
    address = RedisAddress(
        host=parts.hostname or "127.0.0.1",
        port=port,
        db=db,
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password is not None else None,
        tls=scheme == "rediss",
        caFile=option("ca", None) or None,
    )
    return RedisSettings(address, prefix, timeout, time == "redis")


def _eventJSON(event: Event) -> str:
    return json.dumps(
        [
            event.kind,
            event.account,
            event.typeName,
            event.fingerprint,
            event.address,
            event.protocol,
            event.detail,
        ],
        separators=(",", ":"),
    )


def _parseEvent(entry: bytes) -> Event:
    time, _, data = entry.partition(b" ")
    kind, account, typeName, fingerprint, address, protocol, detail = json.loads(data)
    return Event(kind, account, typeName, fingerprint, address, protocol, detail, float(time))


def _float(value: Any) -> float | None:
    return None if value is None else float(value)


def _parseDevice(account: str, digest: str, raw: bytes | None) -> DeviceRecord | None:
    if raw is None:
        return None
    d = json.loads(raw)
    return DeviceRecord(
        account=account,
        digest=digest,
        typeName=d.get("t", ""),
        fingerprint=d.get("f", ""),
        state=d["s"],
        firstSeen=_float(d.get("fs")),
        lastSeen=_float(d.get("ls")),
        lastAddress=d.get("la"),
        lastProtocol=d.get("lp"),
        logins=int(d.get("n", 0)),
        failures=int(d.get("x", 0)),
    )


def _locks(flat: list[bytes]) -> dict[str, float]:
    return {
        flat[i].decode("utf-8"): float(flat[i + 1]) for i in range(0, len(flat), 2)
    }


class _Events:
    """
    Numbers the events of one record, so the script can say which it kept.
    """

    def __init__(self) -> None:
        self.events: list[Event] = []

    def add(self, event: Event | None) -> dict[str, Any] | None:
        if event is None:
            return None
        self.events.append(event)
        encoded: dict[str, Any] = {"j": _eventJSON(event), "i": len(self.events) - 1}
        if event.account is not None:
            encoded["a"] = event.account
        return encoded


def _without(mapping: dict[str, Any]) -> dict[str, Any]:
    """
    Leave out L{None}s: the scripts read an absent field as nil.
    """
    return {k: v for k, v in mapping.items() if v is not None}


def _encodeRecord(record: OutcomeRecord) -> tuple[str, list[Event]]:
    events = _Events()
    encoded: dict[str, Any] = {}
    u = record.device
    if u is not None:
        encoded["d"] = _without(
            {
                "a": u.account,
                "g": u.digest,
                "t": u.typeName,
                "f": u.fingerprint,
                "ad": u.address,
                "p": u.protocol,
                "ok": u.succeeded,
                "c": u.create,
                "pr": u.promote,
                "pf": list(u.promoteFrom) or None,
                "ev": events.add(u.event),
            }
        )
    operations = []
    for op in record.operations:
        if isinstance(op, Bump):
            operations.append(
                _without(
                    {"k": "b", "c": op.counter, "w": op.window, "l": op.limit,
                     "lk": op.lock, "ls": op.lockSeconds, "ev": events.add(op.event)}
                )
            )
        elif isinstance(op, Reset):
            operations.append({"k": "r", "c": op.counter})
        elif isinstance(op, AddMember):
            operations.append(
                _without(
                    {"k": "m", "s": op.key, "m": op.member, "w": op.window, "l": op.limit,
                     "lk": op.lock, "ls": op.lockSeconds, "ev": events.add(op.event)}
                )
            )
        elif isinstance(op, Once):
            operations.append({"k": "o", "mk": op.marker, "s": op.seconds, "ev": events.add(op.event)})
        else:
            raise TypeError(f"unknown operation {op!r}")
    if operations:
        encoded["o"] = operations
    if record.events:
        encoded["e"] = [events.add(e) for e in record.events]
    return json.dumps(encoded, separators=(",", ":")), events.events


@implementer(IClientIDStore)
class RedisStore:
    """
    L{IClientIDStore} on Redis.

    @ivar settings: The parsed URL.
    @ivar blocking: Whether calls are answered before they return (the
        admin command's mode, on a plain socket).
    """

    log = Logger()

    def __init__(
        self,
        settings: RedisSettings,
        reactor: Any = None,
        clock: Any = None,
        blocking: bool = False,
    ) -> None:
        """
        Start connecting (the server's mode: a Redis that is down now is
        no error, the store connects when it comes up) or connect
        (blocking mode).

        @param clock: The store's time when the URL says C{time=local};
            C{reactor} by default.  Ignored with Redis's time.
        @raise StoreError: In blocking mode, if Redis cannot be reached.
        """
        self.settings = settings
        self.blocking = blocking
        self._prefix = settings.prefix
        self._clock = clock if clock is not None else reactor
        self._closed = False
        self._key: bytes | None = None
        self._common = [
            settings.prefix,
            "",
            str(EVENTS_KEPT),
            str(ACCOUNT_EVENTS_KEPT),
            str(EVENT_RETENTION),
        ]
        if blocking:
            self._connection: Any = None
            self._blocking = BlockingRedisConnection(settings.address, settings.timeout)
            try:
                self._handshakeBlocking()
            except BaseException:
                self._blocking.close()
                raise
            return
        if reactor is None:
            from twisted.internet import reactor  # type: ignore[no-redef]
        self._reactor = reactor
        if self._clock is None:
            self._clock = reactor
        self._connection = RedisConnection(
            settings.address, reactor, settings.timeout, self._handshake
        )
        self._connection.start()

    def __repr__(self) -> str:
        return f"<RedisStore {self.settings.address} prefix={self._prefix!r}>"

    # -- connection -----------------------------------------------------------

    def _login(self) -> list[list[Any]]:
        address = self.settings.address
        commands: list[list[Any]] = []
        if address.password is not None:
            if address.username:
                commands.append(["AUTH", address.username, address.password])
            else:
                commands.append(["AUTH", address.password])
        if address.db:
            commands.append(["SELECT", address.db])
        return commands

    def _afterLogin(self) -> list[list[Any]]:
        """
        Load the scripts (a restarted Redis has forgotten them) and put
        the identity key back if Redis lost it.
        """
        commands: list[list[Any]] = [["SCRIPT", "LOAD", s.source] for s in SCRIPTS.values()]
        if self._key is not None:
            commands.append(
                ["SET", self._prefix + "identity-key", binascii.hexlify(self._key), "NX"]
            )
        return commands

    def _handshake(self, protocol: RedisProtocol) -> defer.Deferred[Any]:
        commands = self._login() + self._afterLogin()
        replies = [protocol.execute(*command) for command in commands]
        return defer.gatherResults(replies, consumeErrors=True).addErrback(
            lambda f: f.value.subFailure if isinstance(f.value, defer.FirstError) else f
        )

    def _handshakeBlocking(self) -> None:
        try:
            for command in self._login() + self._afterLogin():
                self._blocking.execute(*command)
        except ReplyError as e:
            raise StoreError(f"Redis store {self.settings.address}: {e}") from None

    # -- running scripts ------------------------------------------------------

    def _arguments(self, script: Script, arguments: Iterable[Any]) -> list[Any]:
        common = self._common
        if not self.settings.serverTime:
            common = list(common)
            common[1] = repr(float(self._clock.seconds()))
        return [*common, *arguments]

    def _run(self, script: Script, *arguments: Any) -> defer.Deferred[Any]:
        if self._closed:
            return defer.fail(StoreError(f"Redis store {self.settings.address} is closed"))
        argv = self._arguments(script, arguments)
        if self.blocking:
            return self._runBlocking(script, argv)
        d = self._connection.execute("EVALSHA", script.sha, 0, *argv)
        d.addErrback(self._noScript, script, argv)
        return d

    def _noScript(self, failure: Failure, script: Script, argv: list[Any]) -> Any:
        if failure.check(ReplyError) and str(failure.value).startswith("NOSCRIPT"):
            d = self._connection.execute("EVAL", script.source, 0, *argv)
            return d.addErrback(self._replyError)
        return self._replyError(failure)

    def _replyError(self, failure: Failure) -> Failure:
        if failure.check(ReplyError):
            return Failure(StoreError(f"Redis store {self.settings.address}: {failure.value}"))
        return failure

    def _runBlocking(self, script: Script, argv: list[Any]) -> defer.Deferred[Any]:
        try:
            try:
                reply = self._blocking.execute("EVALSHA", script.sha, 0, *argv)
            except ReplyError as e:
                if not str(e).startswith("NOSCRIPT"):
                    raise
                reply = self._blocking.execute("EVAL", script.source, 0, *argv)
        except ReplyError as e:
            return defer.fail(StoreError(f"Redis store {self.settings.address}: {e}"))
        except StoreError:
            return defer.fail()
        return defer.succeed(reply)

    def _command(self, *arguments: Any) -> defer.Deferred[Any]:
        if self._closed:
            return defer.fail(StoreError(f"Redis store {self.settings.address} is closed"))
        if self.blocking:
            try:
                return defer.succeed(self._blocking.execute(*arguments))
            except ReplyError as e:
                return defer.fail(StoreError(f"Redis store {self.settings.address}: {e}"))
            except StoreError:
                return defer.fail()
        return self._connection.execute(*arguments).addErrback(self._replyError)

    # -- IClientIDStore -------------------------------------------------------

    def identityKey(self, candidate: bytes | None) -> defer.Deferred[bytes]:
        """
        In the server's mode, waits for Redis if it is not reachable yet
        (the server starts with Redis down and decides nothing until it
        has the key); the store remembers the key and puts it back into a
        Redis that restarted empty.
        """
        key = candidate if candidate is not None else os.urandom(32)

        def run(_: Any = None) -> defer.Deferred[bytes]:
            return self._run(SCRIPTS["identityKey"], binascii.hexlify(key))

        def kept(value: bytes) -> bytes:
            self._key = binascii.unhexlify(value)
            return self._key

        if self.blocking or self._connection.connected:
            return run().addCallback(kept)

        def retry(failure: Failure) -> Any:
            if self._closed:
                return failure
            return self._connection.whenConnected().addCallback(run).addErrback(retry)

        return self._connection.whenConnected().addCallback(run).addErrback(retry).addCallback(kept)

    def loadState(self, query: StateQuery) -> defer.Deferred[DecisionState]:
        d = self._run(
            SCRIPTS["loadState"],
            query.account or "",
            query.digest or "",
            query.windowSet or "",
            query.member or "",
            *query.locks,
        )

        def parse(reply: list[Any]) -> DecisionState:
            raw, approved, locks, size, has, now = reply
            device = None
            if query.account is not None and query.digest is not None:
                device = _parseDevice(query.account, query.digest, raw)
            return DecisionState(
                device=device,
                approvedDevices=approved,
                locks=_locks(locks),
                setSize=size,
                setHasMember=bool(has),
            )

        return d.addCallback(parse)

    def recordOutcome(self, record: OutcomeRecord) -> defer.Deferred[OutcomeResult]:
        try:
            encoded, events = _encodeRecord(record)
        except Exception:
            return defer.fail()

        def parse(reply: list[Any]) -> OutcomeResult:
            raw, now, locked, recorded = reply
            time = float(now)
            device = None
            if record.device is not None:
                device = _parseDevice(record.device.account, record.device.digest, raw)
            return OutcomeResult(
                events=tuple(evolve(events[i], time=time) for i in recorded),
                locked=tuple(key.decode("utf-8") for key in locked),
                device=device,
            )

        return self._run(SCRIPTS["recordOutcome"], encoded).addCallback(parse)

    def listDevices(self, account: str) -> defer.Deferred[list[DeviceRecord]]:
        def parse(flat: list[bytes]) -> list[DeviceRecord]:
            devices = [
                _parseDevice(account, flat[i].decode("ascii"), flat[i + 1])
                for i in range(0, len(flat), 2)
            ]
            return _newestFirst(d for d in devices if d is not None)

        return self._command("HGETALL", self._prefix + "devices:" + account).addCallback(parse)

    def setDeviceState(
        self,
        account: str,
        digest: str,
        typeName: str,
        fingerprint: str,
        state: str,
        event: Event | None,
    ) -> defer.Deferred[DeviceRecord]:
        d = self._run(
            SCRIPTS["setDeviceState"],
            account,
            digest,
            typeName,
            fingerprint,
            state,
            _eventJSON(event) if event is not None else "",
            (event.account or "") if event is not None else "",
        )
        # The script always answers with the record it has just written.
        return d.addCallback(
            lambda raw: cast(DeviceRecord, _parseDevice(account, digest, raw))
        )

    def setLock(self, key: str, seconds: float | None, event: Event | None) -> defer.Deferred[float]:
        d = self._run(
            SCRIPTS["setLock"],
            key,
            "" if seconds is None else repr(float(seconds)),
            _eventJSON(event) if event is not None else "",
            (event.account or "") if event is not None else "",
        )
        return d.addCallback(float)

    def clearKeys(self, keys: Iterable[str], event: Event | None) -> defer.Deferred[None]:
        d = self._run(
            SCRIPTS["clearKeys"],
            _eventJSON(event) if event is not None else "",
            (event.account or "") if event is not None else "",
            *keys,
        )
        return d.addCallback(lambda _: None)

    def activeLocks(self, keys: Iterable[str]) -> defer.Deferred[dict[str, float]]:
        return self._run(SCRIPTS["activeLocks"], *keys).addCallback(_locks)

    def listEvents(self, account: str | None, limit: int) -> defer.Deferred[list[Event]]:
        if limit <= 0:
            return defer.succeed([])
        key = self._prefix + ("events" if account is None else "events:" + account)

        def parse(entries: list[bytes]) -> list[Event]:
            return [_parseEvent(entry) for entry in reversed(entries)]

        return self._command("LRANGE", key, 0, limit - 1).addCallback(parse)

    def close(self) -> defer.Deferred[None]:
        """
        Close the connection.  Commands already sent have reached Redis,
        which applies each atomically; nothing is buffered here.
        """
        if self._closed:
            return defer.succeed(None)
        self._closed = True
        if self.blocking:
            self._blocking.close()
        else:
            self._connection.stop()
        return defer.succeed(None)


def openRedisStore(
    url: str | None,
    dataDir: Path | None,
    reactor: Any = None,
    clock: Any = None,
    blocking: bool = False,
    create: bool = True,
) -> IClientIDStore:
    """
    The L{clientid_twisted.store.openStore} opener for C{redis://} and
    C{rediss://}.  C{create} does not apply: a Redis database is always
    there.
    """
    assert url is not None
    settings = parseRedisURL(url)
    return RedisStore(settings, reactor=reactor, clock=clock, blocking=blocking)
