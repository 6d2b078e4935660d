# -*- test-case-name: tests.test_store_redis -*-
"""
The shared store: several frontends (and C{clientid-admin}) on one Redis,
so a device approved, revoked or locked on one is so on all at once, and a
brute-force run spread over all of them hits one counter.

Selected by URL (see L{parseRedisURL})::

    redis://[[USER]:PASSWORD@]HOST[:PORT][/DB][?prefix=NAME&timeout=S&time=redis|local]
    rediss://...  (TLS; &ca=/path/to/ca.pem for a private authority)
    redis+sentinel://[[USER]:PASSWORD@]SENTINEL[:PORT][,SENTINEL[:PORT]...]/MASTER[/DB][?...]
    rediss+sentinel://...  (TLS to the Sentinels and the master)

With Sentinel (L{clientid_twisted.store._sentinel}) the store asks the
Sentinels for the master before each connection and checks C{ROLE}, so it
follows a failover: while the master is switching, calls fail with
L{StoreError} (logins get their temporary failure); then the store is on
the new master, with its scripts loaded again.  Admin writes (blocking
mode) wait (C{WAIT}) until the URL's C{replicas} (1 with Sentinel) hold
them before they are acknowledged.

Each store call is one Lua script (L{clientid_twisted.store._redisscripts}):
a decision costs one round trip to read (L{RedisStore.loadState}, which
also reads the device's failure counter) and, unless the policy has
nothing to write (a known device's login within its last-seen interval),
one to write (L{RedisStore.recordOutcome}), each atomic.  All calls of one
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
import time as _time
from functools import partial
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence, cast
from urllib.parse import parse_qs, unquote, urlsplit

from attrs import evolve
from zope.interface import implementer

from twisted.internet import defer
from twisted.logger import Logger
from twisted.python.failure import Failure

from clientid_twisted.interfaces import IClientIDStore
from clientid_twisted.store._errors import StoreError, UnknownDevice
from clientid_twisted.store._memory import _newestFirst
from clientid_twisted.store._records import (
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
from clientid_twisted.store._redisscripts import SCRIPTS, Script
from clientid_twisted.store._sentinel import (
    DEFAULT_SENTINEL_PORT,
    SentinelLocator,
    SentinelSettings,
    checkMaster,
    locateMasterBlocking,
    loginCommands,
)
from clientid_twisted.store._resp import (
    BlockingRedisConnection,
    RedisAddress,
    RedisConnection,
    RedisProtocol,
    ReplyError,
    encodeCommand,
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
FOLLOW_SECONDS = 15.0
"""How long the admin command (blocking mode) keeps asking the Sentinels
for a master that answers as one: longer than a failover takes."""


class RedisSettings:
    """
    What a C{redis://}, C{rediss://}, C{redis+sentinel://} or
    C{rediss+sentinel://} URL says.

    @ivar address: Where the server is; with Sentinel, how to log in to
        the master (host and port are those of the first Sentinel, until
        the master is found).
    @ivar prefix: Put before every key, so installations can share a Redis.
    @ivar timeout: Seconds a command or connection attempt may take.
    @ivar serverTime: Whether the store's time is Redis's clock (the
        default: frontends with skewed clocks still agree) rather than the
        caller's (C{time=local}).
    @ivar sentinel: Where the Sentinels are and which master to ask them
        for; L{None} for a plain C{redis://} URL.
    @ivar replicas: How many replicas an admin write (C{clientid-admin})
        must reach (C{WAIT}) before it is acknowledged: 1 with Sentinel, 0
        otherwise, unless the URL's C{replicas} says.
    @ivar waitTimeout: Seconds an admin write waits for them.
    """

    def __init__(
        self,
        address: RedisAddress,
        prefix: str,
        timeout: float,
        serverTime: bool,
        sentinel: SentinelSettings | None = None,
        replicas: int = 0,
        waitTimeout: float | None = None,
    ) -> None:
        self.address = address
        self.prefix = prefix
        self.timeout = timeout
        self.serverTime = serverTime
        self.sentinel = sentinel
        self.replicas = replicas
        self.waitTimeout = timeout if waitTimeout is None else waitTimeout

    @property
    def description(self) -> str:
        """
        For logs and errors: where the store is, never a password.
        """
        if self.sentinel is not None:
            return str(self.sentinel)
        return str(self.address)


_SCHEMES = ("redis", "rediss", "redis+sentinel", "rediss+sentinel")
_OPTIONS = {"prefix", "timeout", "time", "ca", "replicas", "wait_timeout"}
_SENTINEL_OPTIONS = {"sentinel_username", "sentinel_password"}


def _seconds(text: str | None, name: str, where: str) -> float:
    try:
        value = float(text or "")
    except ValueError:
        value = -1.0
    if not (value > 0 and math.isfinite(value)):
        raise ValueError(f"invalid Redis store URL {where}: {name} must be a number of seconds > 0")
    return value


def _hostPort(text: str, default: int, where: str) -> tuple[str, int]:
    """
    C{HOST}, C{HOST:PORT}, C{[V6]} or C{[V6]:PORT}.
    """
    if text.startswith("["):
        host, bracket, rest = text[1:].partition("]")
        if not bracket or (rest and not rest.startswith(":")):
            raise ValueError(f"invalid Redis store URL {where}: bad address {text!r}")
        port = rest[1:]
    else:
        host, _, port = text.partition(":")
    if not host:
        raise ValueError(f"invalid Redis store URL {where}: an address has no host")
    if not port:
        return host, default
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"invalid Redis store URL {where}...: bad port")
    return host, int(port)


def parseRedisURL(url: str) -> RedisSettings:
    """
    @raise ValueError: For a URL this store cannot use (the message never
        repeats a password).
    """
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    sentinelMode = scheme.endswith("+sentinel")
    if scheme not in _SCHEMES:
        raise ValueError(f"not a Redis store URL: {scheme}://{parts.hostname or ''}")
    # The host part, without the user and password (several with Sentinel).
    hosts = parts.netloc.rpartition("@")[2]
    where = f"{scheme}://{hosts}"
    options = parse_qs(parts.query, keep_blank_values=True)
    known = _OPTIONS | (_SENTINEL_OPTIONS if sentinelMode else set())
    unknown = sorted(set(options) - known)
    if unknown:
        raise ValueError(
            f"invalid Redis store URL {where}: unknown option {unknown[0]!r} "
            f"(known: {', '.join(sorted(known))})"
        )

    def option(name: str, default: str | None) -> str | None:
        values = options.get(name)
        return values[-1] if values else default

    path = [p for p in parts.path.split("/") if p]
    master = None
    if sentinelMode:
        if not path:
            raise ValueError(
                f"invalid Redis store URL {where}: the path must name the master "
                "(redis+sentinel://SENTINEL[,SENTINEL...]/MASTER[/DB])"
            )
        master = unquote(path.pop(0))
    if len(path) > 1:
        raise ValueError(f"invalid Redis store URL {where}: the path must be a database number")
    try:
        db = int(path[0]) if path else 0
    except ValueError:
        raise ValueError(f"invalid Redis store URL {where}: the path must be a database number") from None
    prefix = option("prefix", None)
    prefix = DEFAULT_PREFIX if prefix is None else (prefix if prefix.endswith(":") else prefix + ":")
    timeout = _seconds(option("timeout", str(DEFAULT_TIMEOUT)), "timeout", where)
    time = option("time", "redis")
    if time not in ("redis", "local"):
        raise ValueError(f"invalid Redis store URL {where}: time must be redis or local")
    replicasText = option("replicas", "1" if sentinelMode else "0") or ""
    if not replicasText.isdigit():
        raise ValueError(f"invalid Redis store URL {where}: replicas must be a number >= 0")
    waitTimeout = option("wait_timeout", None)
    tls = scheme.startswith("rediss")
    template = RedisAddress(
        db=db,
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password is not None else None,
        tls=tls,
        caFile=option("ca", None) or None,
    )
    sentinel = None
    if master is not None:
        sentinelUser = option("sentinel_username", None)
        sentinelPassword = option("sentinel_password", None)
        sentinels = tuple(
            RedisAddress(
                host=host,
                port=port,
                username=sentinelUser or None,
                password=sentinelPassword,
                tls=tls,
                caFile=template.caFile,
            )
            for host, port in (
                _hostPort(h, DEFAULT_SENTINEL_PORT, where) for h in hosts.split(",") if h
            )
        )
        if not sentinels:
            raise ValueError(f"invalid Redis store URL {where}: no Sentinel address")
        sentinel = SentinelSettings(sentinels, master)
        address = evolve(template, host=sentinels[0].host, port=sentinels[0].port)
    else:
        try:
            port = parts.port or 6379
        except ValueError:
            raise ValueError(f"invalid Redis store URL {where}...: bad port") from None
        address = evolve(template, host=parts.hostname or "127.0.0.1", port=port)
    return RedisSettings(
        address,
        prefix,
        timeout,
        time == "redis",
        sentinel=sentinel,
        replicas=int(replicasText),
        waitTimeout=None if waitTimeout is None else _seconds(waitTimeout, "wait_timeout", where),
    )


_encodeJSON = json.JSONEncoder(separators=(",", ":")).encode
"""C{json.dumps(value, separators=(",", ":"))}, with the encoder made once."""


def _jsonDecoder() -> Callable[[bytes], Any]:
    """
    C{json.loads} for the JSON that Redis's C{cjson} and this module
    write (UTF-8, no whitespace around): C{raw_decode} skips C{json.loads}'s
    encoding detection.  Anything else (trailing data, invalid UTF-8 or
    JSON) goes to C{json.loads} itself, which accepts or rejects it as it
    always did.
    """
    rawDecode = json.JSONDecoder().raw_decode

    def decode(raw: bytes) -> Any:
        try:
            text = raw.decode("utf-8", "surrogatepass")
            value, end = rawDecode(text)
        except ValueError:
            return json.loads(raw)
        if end != len(text):
            return json.loads(raw)
        return value

    return decode


_decodeJSON = _jsonDecoder()


def _eventJSON(event: Event) -> str:
    return _encodeJSON(
        [
            event.kind,
            event.account,
            event.typeName,
            event.fingerprint,
            event.address,
            event.protocol,
            event.detail,
        ]
    )


def _parseEvent(entry: bytes) -> Event:
    time, _, data = entry.partition(b" ")
    kind, account, typeName, fingerprint, address, protocol, detail = json.loads(data)
    return Event(kind, account, typeName, fingerprint, address, protocol, detail, float(time))


def _parseDevice(account: str, digest: str, raw: bytes | None) -> DeviceRecord | None:
    if raw is None:
        return None
    return _device(account, digest, _decodeJSON(raw))


def _device(account: str, digest: str, d: dict[str, Any]) -> DeviceRecord:
    """
    A device record from its decoded JSON.
    """
    get = d.get
    firstSeen = get("fs")
    lastSeen = get("ls")
    return DeviceRecord(
        account,
        digest,
        get("t", ""),
        get("f", ""),
        d["s"],
        None if firstSeen is None else float(firstSeen),
        None if lastSeen is None else float(lastSeen),
        get("la"),
        get("lp"),
        int(get("n", 0)),
        int(get("x", 0)),
        get("nm"),
    )


def _locks(flat: list[bytes]) -> dict[str, float]:
    if not flat:
        return {}
    return {
        flat[i].decode("utf-8"): float(flat[i + 1]) for i in range(0, len(flat), 2)
    }


def _value(text: str | None) -> str:
    """
    An optional argument of C{recordOutcome}: C{""} for none, else C{"="}
    and the value (so an empty value stays one).
    """
    return "" if text is None else "=" + text


def _eventNumber(event: Event | None, events: list[Event], fields: list[str]) -> str:
    """
    Number an event the C{recordOutcome} script may record; its fields go
    in C{fields} (each optional one as L{_value} puts it).  C{""} for no
    event.
    """
    if event is None:
        return ""
    events.append(event)
    account, typeName, fingerprint = event.account, event.typeName, event.fingerprint
    address, protocol, detail = event.address, event.protocol, event.detail
    fields += (
        event.kind,
        "" if account is None else "=" + account,
        "" if typeName is None else "=" + typeName,
        "" if fingerprint is None else "=" + fingerprint,
        "" if address is None else "=" + address,
        "" if protocol is None else "=" + protocol,
        "" if detail is None else "=" + detail,
    )
    return str(len(events) - 1)


def _encodeRecord(record: OutcomeRecord) -> tuple[list[Any], list[Event]]:
    """
    The arguments of the C{recordOutcome} script, flat (what it may need
    of each event is only encoded as JSON by the script, if it records
    it): the number of events and their fields, seven each; then the
    device update (C{"1"} and its fields, or C{""}); the number of
    operations and each one's kind and fields; the number of events to
    record whatever happens and their numbers.  Numbers are left for
    C{hiredis} to write (floats as their C{repr}).

    @return: The arguments and the events, numbered as in them.
    """
    events: list[Event] = []
    fields: list[Any] = []
    body: list[Any] = []
    u = record.device
    if u is None:
        body.append("")
    else:
        body += (
            "1", u.account, u.digest, u.typeName, u.fingerprint, _value(u.address),
            _value(u.protocol), "1" if u.succeeded else "", int(u.earlierLogins),
            u.create or "", u.promote or "",
            _eventNumber(u.event, events, fields), len(u.promoteFrom), *u.promoteFrom,
        )
    body.append(len(record.operations))
    for op in record.operations:
        kind = type(op)
        if kind is Reset:
            body += ("r", op.counter)  # type: ignore[union-attr]
        elif kind is AddMember:
            m: AddMember = op  # type: ignore[assignment]
            body += (
                "m", m.key, m.member, float(m.window), int(m.limit), m.lock or "",
                float(m.lockSeconds), _eventNumber(m.event, events, fields),
            )
        elif kind is Bump:
            b: Bump = op  # type: ignore[assignment]
            body += (
                "b", b.counter, float(b.window), int(b.limit), b.lock or "",
                float(b.lockSeconds), _eventNumber(b.event, events, fields),
            )
        elif kind is Once:
            o: Once = op  # type: ignore[assignment]
            body += ("o", o.marker, float(o.seconds), _eventNumber(o.event, events, fields))
        else:
            raise TypeError(f"unknown operation {op!r}")
    body.append(len(record.events))
    body += [_eventNumber(e, events, fields) for e in record.events]
    return [len(events), *fields, *body], events


def _fieldsDevice(account: str, digest: str, reply: list[Any], at: int) -> DeviceRecord:
    """
    A device record from the fields a decision's script answers with
    (from C{reply[at]}: type, fingerprint, state, first and last seen, last
    address and protocol, logins, failures, name; L{None} for absent ones).
    """
    t, f, state, firstSeen, lastSeen, address, protocol, logins, failures, name = reply[
        at : at + 10
    ]
    return DeviceRecord(
        account,
        digest,
        "" if t is None else t.decode(),
        "" if f is None else f.decode(),
        state.decode(),
        None if firstSeen is None else float(firstSeen),
        None if lastSeen is None else float(lastSeen),
        None if address is None else address.decode(),
        None if protocol is None else protocol.decode(),
        logins or 0,
        failures or 0,
        None if name is None else name.decode(),
    )


def _parseState(query: StateQuery, reply: list[Any]) -> DecisionState:
    """
    The C{loadState} script's answer: the approved count, the live locks
    (flat), the set's size and membership, the time, the counter's count,
    then the device's fields if it has one.
    """
    approved, locks, size, has, now, count = reply[:6]
    device = None
    if len(reply) > 6 and query.account is not None and query.digest is not None:
        device = _fieldsDevice(query.account, query.digest, reply, 6)
    return DecisionState(device, approved, _locks(locks), size, bool(has), count)


def _parseOutcome(record: OutcomeRecord, events: list[Event], reply: list[Any]) -> OutcomeResult:
    """
    The C{recordOutcome} script's answer: the time, the locks newly set,
    the numbers of the events recorded, then the device's fields if
    there is a device.
    """
    now, locked, recorded = reply[:3]
    device = None
    if len(reply) > 3 and record.device is not None:
        device = _fieldsDevice(record.device.account, record.device.digest, reply, 3)
    lockedKeys = tuple([key.decode("utf-8") for key in locked]) if locked else ()
    if recorded:
        time = float(now)
        return OutcomeResult(
            tuple([evolve(events[i], time=time) for i in recorded]), lockedKeys, device
        )
    return OutcomeResult((), lockedKeys, device)



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
        # Each script's command up to its own arguments, encoded once:
        # EVALSHA, the digest, no keys, the common arguments (with the
        # caller's time, only the prefix: the time is encoded per call).
        self._localTime = not settings.serverTime
        fixed = self._common[:1] if self._localTime else self._common
        self._heads = {
            name: ("EVALSHA", script.sha, 0, *fixed) for name, script in SCRIPTS.items()
        }
        self._constants = tuple(self._common[2:])
        self._where = settings.description
        if blocking:
            self._connection: Any = None
            self._blocking = self._connectBlocking()
            return
        if reactor is None:
            from twisted.internet import reactor  # type: ignore[no-redef]
        self._reactor = reactor
        if self._clock is None:
            self._clock = reactor
        locate = None
        if settings.sentinel is not None:
            locate = SentinelLocator(
                settings.sentinel, settings.address, reactor, settings.timeout
            ).locate
        self._connection = RedisConnection(
            settings.address, reactor, settings.timeout, self._handshake,
            locate=locate, name=self._where,
        )
        self._connection.start()

    def __repr__(self) -> str:
        return f"<RedisStore {self._where} prefix={self._prefix!r}>"

    # -- connection -----------------------------------------------------------

    def _login(self) -> list[list[Any]]:
        """
        Log in; with Sentinel, C{ROLE} (checked by L{_checkRole}: the
        server a Sentinel named must be the master); choose the database.
        """
        address = self.settings.address
        commands = loginCommands(address)
        if self.settings.sentinel is not None:
            commands.append(["ROLE"])
        if address.db:
            commands.append(["SELECT", address.db])
        return commands

    def _checkRole(self, replies: Sequence[Any], where: str) -> None:
        if self.settings.sentinel is not None:
            checkMaster(replies[len(loginCommands(self.settings.address))], where)

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
        peer = protocol.transport.getPeer()  # type: ignore[union-attr]
        where = f"{getattr(peer, 'host', '?')}:{getattr(peer, 'port', '?')}"
        return (
            defer.gatherResults(replies, consumeErrors=True)
            .addErrback(lambda f: f.value.subFailure if isinstance(f.value, defer.FirstError) else f)
            .addCallback(self._checkRole, where)
        )

    def _connectBlocking(self) -> BlockingRedisConnection:
        """
        Connect and log in (the admin command's mode).  With Sentinel,
        ask the Sentinels for the master and keep asking, for up to
        L{FOLLOW_SECONDS}, while none names a master that answers as one
        (a failover under way).

        @raise StoreError: If Redis cannot be reached.
        """
        settings = self.settings
        deadline = _time.monotonic() + (FOLLOW_SECONDS if settings.sentinel is not None else 0)
        while True:
            try:
                return self._openBlocking()
            except StoreError:
                if _time.monotonic() >= deadline:
                    raise
                _time.sleep(0.1)

    def _openBlocking(self) -> BlockingRedisConnection:
        settings = self.settings
        address = settings.address
        if settings.sentinel is not None:
            address = locateMasterBlocking(settings.sentinel, address, settings.timeout)
        connection = BlockingRedisConnection(address, settings.timeout)
        try:
            replies = [connection.execute(*command) for command in self._login()]
            self._checkRole(replies, f"{address.host}:{address.port}")
            for command in self._afterLogin():
                connection.execute(*command)
        except ReplyError as e:
            connection.close()
            raise StoreError(f"Redis store {self._where}: {e}") from None
        except BaseException:
            connection.close()
            raise
        return connection

    def _executeBlocking(self, *arguments: Any) -> Any:
        """
        One command in blocking mode.  With Sentinel, a connection lost or
        a server that is no longer the master (C{READONLY}) makes the
        store ask the Sentinels again and send the command once more to
        the master they name (a write refused with C{READONLY} was not
        applied; one whose reply was lost may be applied twice: the
        scripts set states, locks and keys, which is idempotent, and may
        record its event twice).
        """
        try:
            return self._blocking.execute(*arguments)
        except (StoreError, ReplyError) as e:
            if self.settings.sentinel is None or (
                isinstance(e, ReplyError) and not str(e).startswith("READONLY")
            ):
                raise
        self._blocking.close()
        self._blocking = self._connectBlocking()
        return self._blocking.execute(*arguments)

    def runMany(self, name: str, argumentLists: Iterable[Sequence[Any]]) -> None:
        """
        Blocking mode: run the script C{name} (a key of
        L{SCRIPTS <clientid_twisted.store._redisscripts.SCRIPTS>}) once
        for each argument list, in one pipeline (one write, then the
        replies; no C{WAIT} for replicas): the way to load many records
        quickly, with the scripts that write them one at a time, so what
        is stored is the same.
        C{benchmarks.decisions} approves 10^6 devices with
        C{setDeviceState}'s script this way in seconds (through
        L{setDeviceState}, a round trip each, it takes minutes).

        @raise StoreError: For an error reply (the others ran) or if Redis
            cannot be reached.
        """
        assert self.blocking, "runMany is for the blocking mode"
        script = SCRIPTS[name]
        commands = [
            encodeCommand(("EVALSHA", script.sha, 0, *self._arguments(script, arguments)))
            for arguments in argumentLists
        ]
        for reply in self._blocking.pipeline(commands):
            if isinstance(reply, ReplyError):
                raise StoreError(f"Redis store {self._where}: {reply}")

    def _waitForReplicas(self) -> None:
        """
        After an admin write: C{WAIT} until C{replicas} replicas hold it.

        @raise StoreError: If fewer do within the URL's C{wait_timeout}:
            the write is on the master, but not acknowledged.
        """
        wanted, seconds = self.settings.replicas, self.settings.waitTimeout
        reached = self._blocking.wait(wanted, seconds)
        if reached < wanted:
            raise StoreError(
                f"Redis store {self._where}: the write reached {reached} of {wanted} "
                f"replica(s) within {seconds:g} s; it is on the master but not "
                "acknowledged (a failover now could lose it)"
            )

    # -- running scripts ------------------------------------------------------

    def _arguments(self, script: Script, arguments: Iterable[Any]) -> list[Any]:
        common = self._common
        if not self.settings.serverTime:
            common = list(common)
            common[1] = repr(float(self._clock.seconds()))
        return [*common, *arguments]

    def _run(
        self,
        script: Script,
        arguments: Sequence[Any],
        parse: Callable[[Any], Any] | None = None,
    ) -> defer.Deferred[Any]:
        """
        Run a script with the common arguments then C{arguments}; its
        reply goes through C{parse}.  If Redis has forgotten the script
        (C{NOSCRIPT}), it is sent again, whole, with the same arguments.
        """
        if self._closed:
            return defer.fail(StoreError(f"Redis store {self._where} is closed"))
        if self.blocking:
            d = self._runBlocking(script, self._arguments(script, arguments))
            return d if parse is None else d.addCallback(parse)
        head = self._heads[script.name]
        now = None
        if self._localTime:
            now = repr(float(self._clock.seconds()))
            command = encodeCommand((*head, now, *self._constants, *arguments))
        else:
            command = encodeCommand((*head, *arguments))
        return self._connection.executeEncoded(
            command, parse, partial(self._noScript, script, arguments, now, parse)
        )

    def _noScript(
        self,
        script: Script,
        arguments: Sequence[Any],
        now: str | None,
        parse: Callable[[Any], Any] | None,
        error: ReplyError,
        d: defer.Deferred[Any],
    ) -> None:
        """
        An error reply to a script's C{EVALSHA}: if Redis has forgotten
        the script, send it whole (C{EVAL}) and fire C{d} with that reply.
        """
        if str(error).startswith("NOSCRIPT"):
            argv = [*self._common, *arguments]
            if now is not None:
                argv[1] = now
            self._connection.executeEncoded(
                encodeCommand(("EVAL", script.source, 0, *argv)), parse
            ).addErrback(self._replyError).chainDeferred(d)
        else:
            d.errback(self._replyError(Failure(error)))

    def _replyError(self, failure: Failure) -> Failure:
        if failure.check(ReplyError):
            if str(failure.value).startswith("READONLY"):
                # A master demoted to a replica (a failover): find the
                # new one.
                self._connection.dropConnection(
                    f"Redis store {self._where}: the server is no longer the master"
                )
            return Failure(StoreError(f"Redis store {self._where}: {failure.value}"))
        return failure

    def _runBlocking(self, script: Script, argv: list[Any]) -> defer.Deferred[Any]:
        try:
            try:
                reply = self._executeBlocking("EVALSHA", script.sha, 0, *argv)
            except ReplyError as e:
                if not str(e).startswith("NOSCRIPT"):
                    raise
                reply = self._executeBlocking("EVAL", script.source, 0, *argv)
            if script.writes and self.settings.replicas:
                self._waitForReplicas()
        except ReplyError as e:
            return defer.fail(StoreError(f"Redis store {self._where}: {e}"))
        except StoreError:
            return defer.fail()
        return defer.succeed(reply)

    def _command(self, *arguments: Any) -> defer.Deferred[Any]:
        if self._closed:
            return defer.fail(StoreError(f"Redis store {self._where} is closed"))
        if self.blocking:
            try:
                return defer.succeed(self._executeBlocking(*arguments))
            except ReplyError as e:
                return defer.fail(StoreError(f"Redis store {self._where}: {e}"))
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
            return self._run(SCRIPTS["identityKey"], (binascii.hexlify(key),))

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
        return self._run(
            SCRIPTS["loadState"],
            (
                query.account or "",
                query.digest or "",
                query.windowSet or "",
                query.member or "",
                query.counter or "",
                *query.locks,
            ),
            lambda reply: _parseState(query, reply),
        )

    def recordOutcome(self, record: OutcomeRecord) -> defer.Deferred[OutcomeResult]:
        try:
            argv, events = _encodeRecord(record)
        except Exception:
            return defer.fail()
        return self._run(
            SCRIPTS["recordOutcome"], argv, lambda reply: _parseOutcome(record, events, reply)
        )

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
        return self._run(
            SCRIPTS["setDeviceState"],
            (
                account,
                digest,
                typeName,
                fingerprint,
                state,
                _eventJSON(event) if event is not None else "",
                (event.account or "") if event is not None else "",
            ),
            # The script always answers with the record it has just written.
            lambda raw: cast(DeviceRecord, _parseDevice(account, digest, raw)),
        )

    def renameDevice(
        self, account: str, digest: str, name: str | None, event: Event | None
    ) -> defer.Deferred[DeviceRecord]:
        def parse(raw: bytes | None) -> DeviceRecord:
            record = _parseDevice(account, digest, raw)
            if record is None:
                raise UnknownDevice(f"{account} has no device {digest}")
            return record

        return self._run(
            SCRIPTS["renameDevice"],
            (
                account,
                digest,
                name or "",
                _eventJSON(event) if event is not None else "",
                (event.account or "") if event is not None else "",
            ),
            parse,
        )

    def setLock(self, key: str, seconds: float | None, event: Event | None) -> defer.Deferred[float]:
        return self._run(
            SCRIPTS["setLock"],
            (
                key,
                "" if seconds is None else repr(float(seconds)),
                _eventJSON(event) if event is not None else "",
                (event.account or "") if event is not None else "",
            ),
            float,
        )

    def forgetDevices(self, account: str, event: Event | None) -> defer.Deferred[None]:
        return self._run(
            SCRIPTS["forgetDevices"],
            (
                _eventJSON(event) if event is not None else "",
                (event.account or "") if event is not None else "",
                account,
            ),
            lambda _: None,
        )

    def clearKeys(self, keys: Iterable[str], event: Event | None) -> defer.Deferred[None]:
        return self._run(
            SCRIPTS["clearKeys"],
            (
                _eventJSON(event) if event is not None else "",
                (event.account or "") if event is not None else "",
                *keys,
            ),
            lambda _: None,
        )

    def activeLocks(self, keys: Iterable[str]) -> defer.Deferred[dict[str, float]]:
        return self._run(SCRIPTS["activeLocks"], tuple(keys), _locks)

    def keepMessage(
        self, account: str, message: bytes, limit: int, seconds: float
    ) -> defer.Deferred[None]:
        return self._run(
            SCRIPTS["keepMessage"],
            (account, bytes(message), int(limit), repr(float(seconds))),
            lambda _: None,
        )

    def takeMessages(self, account: str) -> defer.Deferred[list[bytes]]:
        return self._run(SCRIPTS["takeMessages"], (account,), lambda entries: list(entries))

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
    The L{clientid_twisted.store.openStore} opener for C{redis://},
    C{rediss://} and their C{+sentinel} forms.  C{create} does not apply:
    a Redis database is always there.
    """
    assert url is not None
    settings = parseRedisURL(url)
    return RedisStore(settings, reactor=reactor, clock=clock, blocking=blocking)
