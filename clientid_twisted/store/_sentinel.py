# -*- test-case-name: tests.test_redis_sentinel -*-
"""
Finding the Redis master through Redis Sentinel, so the store follows a
failover: before each connection the Sentinels are asked, one after the
other, which server is the master now (C{SENTINEL get-master-addr-by-name});
the store then connects there and checks with C{ROLE} that it is the
master (a Sentinel may still name a server being demoted).  This is the
procedure of Redis's "Sentinel clients" guidelines; written here because
the store's own client (L{clientid_twisted.store._resp}) is what every
connection goes through, and only this one command is needed.
"""

from __future__ import annotations

from typing import Any

from attrs import evolve, frozen

from twisted.internet import defer

from clientid_twisted.store._errors import StoreError
from clientid_twisted.store._resp import (
    BlockingRedisConnection,
    RedisAddress,
    RedisProtocol,
    ReplyError,
    clientEndpoint,
    connectQuietly,
)

__all__ = [
    "DEFAULT_SENTINEL_PORT",
    "SentinelSettings",
    "SentinelLocator",
    "locateMasterBlocking",
    "askTimeout",
    "loginCommands",
    "checkMaster",
]

DEFAULT_SENTINEL_PORT = 26379


@frozen
class SentinelSettings:
    """
    Which Sentinels to ask, for which master.

    @ivar sentinels: The Sentinels' addresses (and how to log in to them),
        asked in this order.
    @ivar master: The master's name in the Sentinels' configuration
        (C{sentinel monitor NAME ...}).
    """

    sentinels: tuple[RedisAddress, ...]
    master: str

    def __str__(self) -> str:
        """
        For logs and errors: never a password.
        """
        scheme = "rediss+sentinel" if self.sentinels[0].tls else "redis+sentinel"
        hosts = ",".join(_hostPort(s) for s in self.sentinels)
        return f"{scheme}://{hosts}/{self.master}"


def _hostPort(address: RedisAddress) -> str:
    host = f"[{address.host}]" if ":" in address.host else address.host
    return f"{host}:{address.port}"


def loginCommands(address: RedisAddress) -> list[list[Any]]:
    """
    C{AUTH} as the address says (nothing without a password).
    """
    if address.password is None:
        return []
    if address.username:
        return [["AUTH", address.username, address.password]]
    return [["AUTH", address.password]]


def _masterAddress(reply: Any, master: str, template: RedisAddress) -> RedisAddress:
    """
    The master's address from a C{get-master-addr-by-name} reply.

    @raise StoreError: If this Sentinel does not know the master.
    """
    if not isinstance(reply, list) or len(reply) != 2:
        raise StoreError(f"the Sentinel does not know a master named {master!r}")
    host, port = reply
    return evolve(template, host=host.decode("ascii"), port=int(port))


def checkMaster(reply: Any, where: str) -> None:
    """
    Check a C{ROLE} reply: the server (at C{where}, for the message) must
    be a master.

    @raise StoreError: If it is not (yet, or any more).
    """
    role = reply[0] if isinstance(reply, list) and reply else None
    if role != b"master":
        raise StoreError(f"{where} is not the master (role {role!r})")


class SentinelLocator:
    """
    Asks the Sentinels for the master's address, for L{RedisConnection}'s
    C{locate}.  The Sentinel that answered is asked first next time.
    """

    def __init__(
        self, settings: SentinelSettings, template: RedisAddress, reactor: Any, timeout: float
    ) -> None:
        """
        @param template: How to log in to the master (password, database,
            TLS); its host and port are replaced by the master's.
        """
        self.settings = settings
        self.template = template
        self._reactor = reactor
        self._timeout = askTimeout(settings, timeout)
        self._order = list(settings.sentinels)

    @defer.inlineCallbacks
    def locate(self) -> Any:
        """
        @return: A L{Deferred <twisted.internet.defer.Deferred>} firing
            with the master's L{RedisAddress}, or failing with
            L{StoreError} if no Sentinel names one.
        """
        reasons = []
        for sentinel in list(self._order):
            try:
                address = yield self._ask(sentinel)
            except defer.CancelledError:
                raise  # the connection attempt was given up: stop asking
            except Exception as e:
                reasons.append(f"{_hostPort(sentinel)}: {_why(e)}")
                # Asked last next time: a Sentinel that is down or frozen
                # must not delay every connection.
                self._order.remove(sentinel)
                self._order.append(sentinel)
                continue
            self._order.remove(sentinel)
            self._order.insert(0, sentinel)
            return address
        raise StoreError(f"no Sentinel of {self.settings} named the master ({'; '.join(reasons)})")

    def _ask(self, sentinel: RedisAddress) -> defer.Deferred[RedisAddress]:
        protocol = RedisProtocol()

        def ask(p: RedisProtocol) -> defer.Deferred[Any]:
            replies = [p.execute(*command) for command in loginCommands(sentinel)]
            replies.append(p.execute("SENTINEL", "get-master-addr-by-name", self.settings.master))
            return defer.gatherResults(replies, consumeErrors=True).addErrback(_firstError)

        def close(result: Any) -> Any:
            if protocol.transport is not None:
                protocol.transport.loseConnection()
            return result

        d = connectQuietly(clientEndpoint(self._reactor, sentinel, self._timeout), protocol)
        d.addCallback(ask)
        d.addTimeout(self._timeout, self._reactor)
        d.addBoth(close)
        return d.addCallback(lambda replies: _masterAddress(replies[-1], self.settings.master, self.template))


def askTimeout(settings: SentinelSettings, timeout: float) -> float:
    """
    How long one Sentinel may take to answer: a share of the store's
    timeout, so that asking every Sentinel in turn, one of them frozen,
    still leaves time to connect to the master within it.
    """
    return timeout / (len(settings.sentinels) + 1)


def locateMasterBlocking(
    settings: SentinelSettings, template: RedisAddress, timeout: float
) -> RedisAddress:
    """
    L{SentinelLocator.locate} for the admin command, on plain sockets.

    @raise StoreError: If no Sentinel names the master.
    """
    reasons = []
    for sentinel in settings.sentinels:
        try:
            connection = BlockingRedisConnection(sentinel, askTimeout(settings, timeout))
            try:
                for command in loginCommands(sentinel):
                    connection.execute(*command)
                reply = connection.execute("SENTINEL", "get-master-addr-by-name", settings.master)
            finally:
                connection.close()
            return _masterAddress(reply, settings.master, template)
        except (StoreError, ReplyError) as e:
            reasons.append(f"{_hostPort(sentinel)}: {_why(e)}")
    raise StoreError(f"no Sentinel of {settings} named the master ({'; '.join(reasons)})")


def _firstError(failure: Any) -> Any:
    if isinstance(failure.value, defer.FirstError):
        return failure.value.subFailure
    return failure


def _why(error: BaseException) -> str:
    if isinstance(error, (defer.TimeoutError, defer.CancelledError)):
        return "no answer in time"
    return str(error) or type(error).__name__

