# -*- test-case-name: tests.test_store_redis -*-
"""
A small Redis client: the RESP wire format, a Twisted protocol that
pipelines commands on one connection, a connection keeper that reconnects
by itself, and a blocking client for the admin command.

Why not txredisapi (which installs and runs on this Twisted): while Redis is
down it queues every command until the connection comes back, so each login
would wait for the policy's whole timeout instead of getting its temporary
failure at once, and stale commands would be replayed on reconnection; and
its reply parser costs more CPU than a decision can afford with many in
flight.  This client does only what the store needs: commands in order on
one connection (so a read sees every write sent before it), an immediate
L{StoreError} while Redis is unreachable, a deadline on every command, and
a reconnection loop that logs once per outage.

Commands are packed and replies parsed by C{hiredis}, in C
(L{encodeCommand}, L{replyReader}): the parser redis-py uses.
"""

from __future__ import annotations

import collections
import random
import socket
import ssl as stdlibssl
from typing import Any, Callable, Iterable, Sequence

import hiredis
from attrs import field, frozen

from twisted.internet import defer
from twisted.internet.endpoints import TCP4ClientEndpoint, wrapClientTLS
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure

from clientid_twisted.store._errors import StoreError

__all__ = [
    "connectQuietly",
    "RedisAddress",
    "ReplyError",
    "encodeCommand",
    "encodeArguments",
    "ProtocolError",
    "replyReader",
    "RedisProtocol",
    "RedisConnection",
    "BlockingRedisConnection",
    "clientEndpoint",
]

_RETRY_FIRST = 0.05
_RETRY_MAX = 1.0


class _OneProtocolFactory(Factory):
    """
    Hands out one protocol, without the "Starting factory" / "Stopping
    factory" log lines a factory writes for each connection attempt: during
    a Redis outage the store retries twice a second, and those lines would
    drown the one line that says the store is down.
    """

    noisy = False

    def __init__(self, protocol: Protocol) -> None:
        self._protocol = protocol

    def buildProtocol(self, addr: Any) -> Protocol:
        return self._protocol


def connectQuietly(endpoint: Any, protocol: Protocol) -> defer.Deferred[Any]:
    """
    Twisted's C{connectProtocol}, without a log line per attempt.
    """
    return endpoint.connect(_OneProtocolFactory(protocol))  # type: ignore[no-any-return]


@frozen
class RedisAddress:
    """
    Where a Redis server is and how to log in to it.

    @ivar tls: Whether to speak TLS (C{rediss://}).
    @ivar caFile: PEM file of the authorities to trust for TLS (L{None}: the
        system's).
    """

    host: str = "127.0.0.1"
    port: int = 6379
    db: int = 0
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    tls: bool = False
    caFile: str | None = None

    def __str__(self) -> str:
        """
        For logs and errors: never the password.
        """
        scheme = "rediss" if self.tls else "redis"
        return f"{scheme}://{self.host}:{self.port}/{self.db}"


class ReplyError(Exception):
    """
    Redis answered with an error reply (C{-ERR ...}, C{-NOSCRIPT ...}).
    """


class ProtocolError(ValueError):
    """
    Bytes from Redis that are not RESP.
    """


def _bytes(value: Any) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode("utf-8")
    if isinstance(value, float):
        return repr(value).encode("ascii")
    return str(value).encode("ascii")


def encodeArguments(arguments: Iterable[Any]) -> bytes:
    """
    Arguments as RESP bulk strings, one after the other, without the
    array header (L{encodeCommand}'s way for what C{hiredis} cannot pack).
    """
    parts: list[bytes] = []
    append = parts.append
    for argument in arguments:
        kind = type(argument)
        if kind is str:
            data = argument.encode("utf-8")
        elif kind is bytes:
            data = argument
        else:
            data = _bytes(argument)
        append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(parts)


_pack = hiredis.pack_command


def encodeCommand(arguments: Sequence[Any]) -> bytes:
    """
    One command as a RESP array of bulk strings: strings as UTF-8, numbers
    as their C{str} (floats as their C{repr}).  Packed in C by C{hiredis}
    (three times faster than Python for a decision's command), except for
    arguments it does not take (C{bool}s), which go the Python way to the
    same bytes.
    """
    try:
        return _pack(arguments if type(arguments) is tuple else tuple(arguments))
    except TypeError:
        return b"*%d\r\n%s" % (len(arguments), encodeArguments(arguments))


def replyReader() -> Any:
    """
    A reply parser: C{hiredis}'s, in C (a Python parser cost about a fifth
    of a decision's CPU).  Feed it bytes (C{feed}); C{gets()} returns the
    next whole reply, or C{False} while it has only part of one: bulk and
    status replies as L{bytes}, integers, arrays (nested too) as L{list}s,
    nil as L{None}, error replies as L{ReplyError} instances (returned, not
    raised, also inside arrays).

    @raise ProtocolError: From C{gets()}, for bytes that are not RESP
        (or nested deeper than hiredis allows, which no Redis reply is).
    """
    return hiredis.Reader(protocolError=ProtocolError, replyError=ReplyError)


ErrorHandler = Callable[[ReplyError, defer.Deferred[Any]], None]
"""Handles an error reply for a command, firing its Deferred."""

_Pending = tuple[defer.Deferred[Any], float, Callable[[Any], Any] | None, ErrorHandler | None]
"""A command waiting for its reply: its Deferred, when it was sent, how to
parse its reply and how to handle an error reply."""


class RedisProtocol(Protocol):
    """
    Commands pipelined on one connection: replies come back in order, each
    fires the L{Deferred <twisted.internet.defer.Deferred>} of its command.
    """

    def __init__(
        self,
        onLost: Callable[[RedisProtocol, Failure], None] | None = None,
        clock: Any = None,
    ) -> None:
        self._reader = replyReader()
        self._pending: collections.deque[_Pending] = collections.deque()
        self._onLost = onLost
        self._clock = clock
        self.lost = False
        self.abortReason: str | None = None

    def oldestPending(self) -> float | None:
        """
        When the oldest command still waiting for its reply was sent.
        """
        return self._pending[0][1] if self._pending else None

    def abort(self, reason: str) -> None:
        """
        Drop the connection; waiting commands fail with C{reason}.
        """
        self.abortReason = reason
        if self.transport is not None:
            self.transport.abortConnection()  # type: ignore[attr-defined]

    def execute(self, *arguments: Any) -> defer.Deferred[Any]:
        """
        Send a command; the L{Deferred <twisted.internet.defer.Deferred>} fires with its reply, or fails with
        L{ReplyError} or L{StoreError} (connection lost).
        """
        return self.executeEncoded(encodeCommand(arguments))

    def executeEncoded(
        self,
        command: bytes,
        parse: Callable[[Any], Any] | None = None,
        onError: ErrorHandler | None = None,
    ) -> defer.Deferred[Any]:
        """
        L{execute} for a command already encoded (L{encodeCommand}).

        @param parse: Turns the reply into what the L{Deferred
            <twisted.internet.defer.Deferred>} fires with (what it raises,
            the Deferred fails with): run here, not as a callback, so a
            reply costs its caller no extra layer of callbacks.
        @param onError: Called with an error reply and the Deferred
            instead of failing it with the L{ReplyError}; it must fire the
            Deferred (the store's way to send a script Redis has forgotten).
        """
        if self.lost:
            return defer.fail(StoreError("the Redis connection is closed"))
        d: defer.Deferred[Any] = defer.Deferred()
        self._pending.append(
            (d, self._clock.seconds() if self._clock is not None else 0.0, parse, onError)
        )
        self.transport.write(command)  # type: ignore[union-attr]
        return d

    def dataReceived(self, data: bytes) -> None:
        reader = self._reader
        reader.feed(data)
        pending = self._pending
        while True:
            try:
                reply = reader.gets()
            except ProtocolError:
                self.transport.abortConnection()  # type: ignore[union-attr]
                return
            if reply is False:
                return
            if not pending:
                self.transport.abortConnection()  # type: ignore[union-attr]
                return
            d, _, parse, onError = pending.popleft()
            if d.called:
                continue  # its caller gave up waiting
            if type(reply) is ReplyError:
                if onError is None:
                    d.errback(reply)
                else:
                    onError(reply, d)
            elif parse is None:
                d.callback(reply)
            else:
                try:
                    value = parse(reply)
                except BaseException:
                    d.errback()
                else:
                    d.callback(value)

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
        self.lost = True
        pending, self._pending = self._pending, collections.deque()
        error = StoreError(
            self.abortReason or f"the Redis connection was lost ({reason.getErrorMessage()})"
        )
        for d, *_ in pending:
            if not d.called:
                d.errback(error)
        if self._onLost is not None:
            self._onLost(self, reason)


class RedisConnection:
    """
    Keeps one connection to Redis, reconnecting by itself with a short
    backoff.

    While an attempt to connect is under way, commands wait for it (at most
    the timeout); while there is neither a connection nor an attempt, they
    fail at once with L{StoreError}, so a login during an outage gets its
    answer without waiting.  Every command has a deadline: when one
    misses it, the connection is dropped (its commands fail) and made again (a Redis
    that stopped answering is treated like one that went away).

    @ivar handshake: Called with each new connection's L{RedisProtocol};
        returns a L{Deferred <twisted.internet.defer.Deferred>} that fires when the connection may be used
        (log in, choose the database, load scripts).
    @ivar connected: Whether a connection is ready now.
    """

    log = Logger()

    def __init__(
        self,
        address: RedisAddress,
        reactor: Any,
        timeout: float,
        handshake: Callable[[RedisProtocol], defer.Deferred[Any]],
        locate: Callable[[], defer.Deferred[RedisAddress]] | None = None,
        name: str | None = None,
    ) -> None:
        """
        @param locate: Called before each connection attempt for the
            address to connect to (Sentinel: the master now); by default,
            always C{address}.
        @param name: What logs and errors call the store (never a
            password); C{str(address)} by default.
        """
        self.address = address
        self.name = name if name is not None else str(address)
        self._locate = locate
        self.timeout = timeout
        self.handshake = handshake
        self._reactor = reactor
        self._protocol: RedisProtocol | None = None
        self._attempt: defer.Deferred[Any] | None = None
        self._waiting: list[defer.Deferred[RedisProtocol]] = []
        self._retryCall: Any = None
        self._delay = _RETRY_FIRST
        self._down = False
        self._downSince = 0.0
        self._attempts = 0
        self._stopped = False
        self._watchCall: Any = None
        self._checks: dict[defer.Deferred[None], Any] = {}

    @property
    def connected(self) -> bool:
        return self._protocol is not None

    def start(self) -> None:
        if self._attempt is None and self._protocol is None and not self._stopped:
            self._connect()

    def _connect(self) -> None:
        self._retryCall = None
        self._attempts += 1
        protocol = RedisProtocol(self._lost, self._reactor)
        reactor, timeout = self._reactor, self.timeout

        def connect(address: RedisAddress) -> defer.Deferred[Any]:
            return connectQuietly(clientEndpoint(reactor, address, timeout), protocol)

        attempt: defer.Deferred[Any]
        try:
            where = self._locate() if self._locate is not None else defer.succeed(self.address)
            attempt = where.addCallback(connect)
        except Exception:
            attempt = defer.fail()
        attempt.addCallback(lambda p: self.handshake(p).addCallback(lambda _: p))
        attempt.addTimeout(self.timeout, self._reactor)
        self._attempt = attempt
        attempt.addCallbacks(self._ready, self._failed, errbackArgs=(protocol,))

    def _ready(self, protocol: RedisProtocol) -> None:
        self._attempt = None
        if self._stopped or protocol.lost:
            if not protocol.lost:
                protocol.transport.loseConnection()  # type: ignore[union-attr]
            self._failed(Failure(StoreError("the Redis connection closed")), protocol)
            return
        self._protocol = protocol
        self._delay = _RETRY_FIRST
        if self._watchCall is None:
            self._watch()
        if self._down:
            self.log.info(
                "Redis store {address} reachable again after {seconds:.1f} s "
                "({attempts} attempts)",
                address=self.name,
                seconds=self._reactor.seconds() - self._downSince,
                attempts=self._attempts,
                storeEvent="redis-up",
            )
            self._down = False
        self._attempts = 0
        waiting, self._waiting = self._waiting, []
        for d in waiting:
            d.callback(protocol)

    def _failed(self, reason: Failure, protocol: RedisProtocol) -> None:
        self._attempt = None
        transport = protocol.transport
        if transport is not None and not protocol.lost:
            transport.abortConnection()  # type: ignore[attr-defined]
        self._noteDown(reason)
        waiting, self._waiting = self._waiting, []
        error = self._unreachable(reason)
        for d in waiting:
            d.errback(error)
        self._scheduleRetry()

    def _unreachable(self, reason: Failure | None = None) -> StoreError:
        why = f" ({_describe(reason)})" if reason is not None else ""
        return StoreError(f"Redis store {self.name} is unreachable{why}")

    def _lost(self, protocol: RedisProtocol, reason: Failure) -> None:
        if protocol is not self._protocol:
            return
        self._protocol = None
        if self._stopped:
            return
        self._noteDown(reason)
        self._scheduleRetry(immediately=True)

    def _noteDown(self, reason: Failure) -> None:
        if self._down or self._stopped:
            return
        self._down = True
        self._downSince = self._reactor.seconds()
        self.log.warn(
            "Redis store {address} unreachable ({error}); reconnecting in the background",
            address=self.name,
            error=_describe(reason),
            storeEvent="redis-down",
        )

    def _scheduleRetry(self, immediately: bool = False) -> None:
        if self._stopped or self._retryCall is not None or self._attempt is not None:
            return
        if immediately:
            self._connect()
            return
        delay = self._delay * (0.5 + random.random() / 2)
        self._delay = min(self._delay * 2, _RETRY_MAX)
        self._retryCall = self._reactor.callLater(delay, self._connect)

    def _protocolNow(self) -> defer.Deferred[RedisProtocol]:
        if self._protocol is not None:
            return defer.succeed(self._protocol)
        if self._stopped:
            return defer.fail(StoreError(f"Redis store {self.name} is closed"))
        if self._attempt is None:
            return defer.fail(self._unreachable())
        d: defer.Deferred[RedisProtocol] = defer.Deferred()
        self._waiting.append(d)
        return d

    def whenConnected(self) -> defer.Deferred[None]:
        """
        Fires once a connection is ready, however long that takes (L{None}
        if the connection is closed first: it never fires then).
        """
        if self._protocol is not None:
            return defer.succeed(None)
        d: defer.Deferred[None] = defer.Deferred()

        def check(_: Any = None) -> None:
            self._checks.pop(d, None)
            if self._stopped:
                return
            if self._protocol is not None:
                d.callback(None)
            else:
                self._checks[d] = self._reactor.callLater(0.05, check)

        # Kept so that stop() cancels them: a store closed while Redis was
        # never reachable (wrong password, untrusted certificate) leaves no
        # timer behind.
        self._checks[d] = self._reactor.callLater(0, check)
        return d

    def execute(self, *arguments: Any) -> defer.Deferred[Any]:
        """
        Run one command, within the timeout.
        """
        return self.executeEncoded(encodeCommand(arguments))

    def executeEncoded(
        self,
        command: bytes,
        parse: Callable[[Any], Any] | None = None,
        onError: ErrorHandler | None = None,
    ) -> defer.Deferred[Any]:
        """
        L{execute} for a command already encoded; C{parse} and C{onError}
        as for L{RedisProtocol.executeEncoded}.
        """
        protocol = self._protocol
        if protocol is not None:
            return protocol.executeEncoded(command, parse, onError)
        return self._protocolNow().addCallback(
            lambda p: p.executeEncoded(command, parse, onError)
        )

    def _watch(self) -> None:
        """
        Every quarter of the timeout, check the oldest command waiting for
        its reply (replies come in order): if it is older than the timeout,
        Redis stopped answering; drop the connection (its commands fail)
        and make a new one.  One timer per connection, not one per command.
        """
        self._watchCall = None
        protocol = self._protocol
        if protocol is None or self._stopped:
            return
        sent = protocol.oldestPending()
        if sent is not None and self._reactor.seconds() - sent > self.timeout:
            protocol.abort(
                f"Redis store {self.name} did not answer within {self.timeout:g} s"
            )
            return
        self._watchCall = self._reactor.callLater(self.timeout / 4, self._watch)

    def dropConnection(self, reason: str) -> None:
        """
        Drop the connection (its commands fail with C{reason}) and make a
        new one: for a server that stopped being the master.
        """
        if self._protocol is not None:
            self._protocol.abort(reason)

    def stop(self) -> None:
        self._stopped = True
        if self._retryCall is not None and self._retryCall.active():
            self._retryCall.cancel()
        self._retryCall = None
        if self._watchCall is not None and self._watchCall.active():
            self._watchCall.cancel()
        self._watchCall = None
        checks, self._checks = self._checks, {}
        for call in checks.values():
            if call.active():
                call.cancel()
        if self._attempt is not None:
            self._attempt.cancel()
        protocol, self._protocol = self._protocol, None
        if protocol is not None and protocol.transport is not None:
            protocol.transport.loseConnection()  # type: ignore[attr-defined]
        waiting, self._waiting = self._waiting, []
        for d in waiting:
            d.errback(StoreError(f"Redis store {self.name} is closed"))


def clientEndpoint(reactor: Any, address: RedisAddress, timeout: float) -> Any:
    """
    The client endpoint for a Redis address: TCP, wrapped in TLS (checking
    the certificate against the address's authorities) for C{rediss}.
    """
    endpoint = TCP4ClientEndpoint(
        reactor, address.host, address.port, timeout=max(1, int(timeout + 0.999))
    )
    if not address.tls:
        return endpoint
    from twisted.internet import ssl

    trustRoot = None
    if address.caFile:
        trustRoot = _authorities(address.caFile)
    options = ssl.optionsForClientTLS(address.host, trustRoot=trustRoot)
    return wrapClientTLS(options, endpoint)


def _authorities(path: str) -> Any:
    """
    Every certificate of a PEM file, as a trust root (a C{ca} file may be
    a bundle, as it is for the blocking client; not only its first).

    @raise ValueError: If the file holds no certificate.
    """
    from clientid_twisted._certificate import loadAuthorities

    return loadAuthorities(path)


def _describe(reason: Failure | None) -> str:
    if reason is None:
        return "unknown"
    if reason.check(defer.TimeoutError, defer.CancelledError):
        return "no answer in time"
    return reason.getErrorMessage() or getattr(reason.type, "__name__", "unknown")


class BlockingRedisConnection:
    """
    The same commands on a plain socket, each answered before it returns:
    for C{clientid-admin}, which has no reactor running.
    """

    def __init__(self, address: RedisAddress, timeout: float) -> None:
        self.address = address
        self._reader = replyReader()
        try:
            sock = socket.create_connection((address.host, address.port), timeout=timeout)
            if address.tls:
                context = stdlibssl.create_default_context(cafile=address.caFile)
                sock = context.wrap_socket(sock, server_hostname=address.host)
        except OSError as e:
            raise StoreError(f"Redis store {address} is unreachable: {e}") from None
        self._socket = sock

    def execute(self, *arguments: Any) -> Any:
        """
        @return: The reply.
        @raise ReplyError: For an error reply.
        @raise StoreError: If Redis cannot be reached.
        """
        return self.executeEncoded(encodeCommand(arguments))

    def executeEncoded(self, command: bytes) -> Any:
        """
        L{execute} for a command already encoded.
        """
        try:
            self._socket.sendall(command)
            reply = self._reader.gets()
            while reply is False:
                data = self._socket.recv(65536)
                if not data:
                    raise OSError("connection closed by Redis")
                self._reader.feed(data)
                reply = self._reader.gets()
        except ProtocolError as e:
            self._socket.close()
            raise StoreError(f"Redis store {self.address}: {e}") from None
        except OSError as e:
            raise StoreError(f"Redis store {self.address}: {e}") from None
        if isinstance(reply, ReplyError):
            raise reply
        return reply

    def wait(self, replicas: int, seconds: float) -> int:
        """
        C{WAIT}: block until C{replicas} replicas hold every write sent on
        this connection, or C{seconds} pass.

        @return: How many replicas hold them.
        """
        previous = self._socket.gettimeout()
        self._socket.settimeout(seconds + (previous or 0.0))
        try:
            return int(self.execute("WAIT", replicas, max(1, int(seconds * 1000))))
        finally:
            self._socket.settimeout(previous)

    def pipeline(self, commands: Sequence[bytes]) -> list[Any]:
        """
        Send encoded commands in one write, then read their replies: one
        round trip for all of them.

        @return: The replies in order; an error reply as a L{ReplyError}
            instance (returned, not raised: the commands after it ran).
        @raise StoreError: If Redis cannot be reached.
        """
        replies: list[Any] = []
        try:
            self._socket.sendall(b"".join(commands))
            reader = self._reader
            while len(replies) < len(commands):
                reply = reader.gets()
                if reply is False:
                    data = self._socket.recv(1 << 20)
                    if not data:
                        raise OSError("connection closed by Redis")
                    reader.feed(data)
                else:
                    replies.append(reply)
        except ProtocolError as e:
            self._socket.close()
            raise StoreError(f"Redis store {self.address}: {e}") from None
        except OSError as e:
            raise StoreError(f"Redis store {self.address}: {e}") from None
        return replies

    def close(self) -> None:
        self._socket.close()
