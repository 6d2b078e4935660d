# -*- test-case-name: tests.test_connections -*-
"""
Connection limits for the runnable server: how many sessions it holds in
total and per client address, how many TLS handshakes may be in progress,
and the list of live sessions a graceful shutdown winds down.

Counting happens in the factories' C{buildProtocol} and the protocols'
C{connectionLost}, not in a wrapping factory: a protocol wrapper copies its
transport's interfaces when the connection is made, so a later STARTTLS
would not show as L{ISSLTransport <twisted.internet.interfaces.ISSLTransport>} to the protocol.
"""

from __future__ import annotations

import ipaddress
from collections import Counter
from typing import Any, Callable, Iterable

from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime
from twisted.internet.protocol import Protocol
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from clientid_twisted._sessioninfo import peerHost
from clientid_twisted.server.limits import ServerLimits

__all__ = ["addressKey", "ConnectionLimiter", "RefusedConnection"]

_log = Logger()

_DRAIN_POLL_SECONDS = 0.1
"""How often a shutdown checks whether busy sessions have finished."""

REFUSAL_LOG_INTERVAL = 10.0
"""Seconds between two log lines for connections refused for one reason."""

_CLOSE_GRACE_SECONDS = 10.0
"""How long a connection told to close may take to read its goodbye before
it is cut: a client that never reads would otherwise hold it open."""

_CUT_LINGER_SECONDS = 1.0
"""The same when a shutdown's grace is over: the goodbye gets a moment to go
out, the process does not wait longer."""


def addressKey(address: Any) -> str | None:
    """
    The key under which a client address is counted: the IPv4 address, or
    the IPv6 /64 (one subscriber's network, which hands out addresses at
    will); an IPv4-mapped IPv6 address counts as its IPv4 address.

    @return: L{None} for addresses that are not IP (UNIX sockets), which
        are counted only in the total.
    """
    host = getattr(address, "host", None)
    if not isinstance(host, str):
        return None
    try:
        ip = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


class ConnectionLimiter:
    """
    Counts the server's sessions, in total and per address key, and the TLS
    handshakes in progress; winds the sessions down on shutdown.

    A session is any object with C{drainIfIdle()} (close now if not busy;
    return whether it did) and C{cut()} (close now, busy or not).

    @ivar draining: Whether a shutdown is under way: new connections are
        refused.
    """

    def __init__(self, limits: ServerLimits | None = None, clock: IReactorTime | None = None) -> None:
        if clock is None:
            from twisted.internet import reactor as clock  # type: ignore[assignment]
        self.limits = limits or ServerLimits()
        self.clock: Any = clock
        self.draining = False
        self._sessions: dict[Any, str | None] = {}
        self._perAddress: Counter[str | None] = Counter()
        self._handshakes: dict[Any, str | None] = {}
        self._handshakesPerAddress: Counter[str | None] = Counter()
        self._drained: list[defer.Deferred[None]] = []
        self._refusalLogged: dict[tuple[str, str], float] = {}
        self._refusalsUnlogged: Counter[tuple[str, str]] = Counter()

    # -- the refusal log ----------------------------------------------------------

    def logRefusal(self, protocol: str, peer: str, reason: str) -> None:
        """
        Log a refused connection: the first of its protocol and reason, then
        at most one line per L{REFUSAL_LOG_INTERVAL} seconds, which counts
        those not logged since, so a flood (the moment limits matter most)
        does not also flood the log.
        """
        key = (protocol, reason)
        now = self.clock.seconds()
        last = self._refusalLogged.get(key)
        if last is not None and now - last < REFUSAL_LOG_INTERVAL:
            self._refusalsUnlogged[key] += 1
            return
        self._refusalLogged[key] = now
        _logRefused(protocol, peer, reason, self._refusalsUnlogged.pop(key, 0))

    # -- counting ---------------------------------------------------------------

    @property
    def connections(self) -> int:
        """
        The number of sessions counted now.
        """
        return len(self._sessions)

    @property
    def handshakes(self) -> int:
        """
        The number of TLS handshakes in progress.
        """
        return len(self._handshakes)

    def sessions(self) -> list[Any]:
        """
        The sessions counted now.
        """
        return list(self._sessions)

    def admit(self, session: Any, address: Any) -> str | None:
        """
        Count a new session from C{address}, if the limits allow.

        @return: L{None} when admitted; otherwise why not, for the log and
            the goodbye line.
        """
        if self.draining:
            return "shutting down"
        if len(self._sessions) >= self.limits.maxConnections:
            return "too many connections"
        key = addressKey(address)
        if key is not None and self._perAddress[key] >= self.limits.maxConnectionsPerAddress:
            return "too many connections from your address"
        self._sessions[session] = key
        if key is not None:
            self._perAddress[key] += 1
        return None

    def release(self, session: Any) -> None:
        """
        Forget a session (its connection is gone), and its handshake.
        """
        self.handshakeFinished(session)
        if session not in self._sessions:
            return
        key = self._sessions.pop(session)
        if key is not None:
            self._perAddress[key] -= 1
            if not self._perAddress[key]:
                del self._perAddress[key]
        if not self._sessions:
            waiting, self._drained = self._drained, []
            for d in waiting:
                d.callback(None)

    def handshakeStarting(self, session: Any) -> bool:
        """
        Count a TLS handshake about to start for an admitted session.

        @return: Whether the allowance for handshakes in progress has room;
            when not, nothing is counted and the caller refuses.
        """
        if session in self._handshakes:
            return True
        key = self._sessions.get(session)
        if len(self._handshakes) >= self.limits.maxTLSHandshakes:
            return False
        if key is not None and self._handshakesPerAddress[key] >= self.limits.maxTLSHandshakesPerAddress:
            return False
        self._handshakes[session] = key
        if key is not None:
            self._handshakesPerAddress[key] += 1
        return True

    def handshakeFinished(self, session: Any) -> None:
        """
        A session's handshake completed (or its connection went).
        """
        if session not in self._handshakes:
            return
        key = self._handshakes.pop(session)
        if key is not None:
            self._handshakesPerAddress[key] -= 1
            if not self._handshakesPerAddress[key]:
                del self._handshakesPerAddress[key]

    # -- shutdown -----------------------------------------------------------------

    def drain(self, grace: float | None = None) -> defer.Deferred[None]:
        """
        Refuse new connections, close idle sessions now, let busy ones
        (SMTP DATA, IMAP FETCH or APPEND, a login being decided) finish
        their command, and cut whatever is left after C{grace} seconds.

        @return: A L{defer.Deferred} that fires once no session is left.
        """
        if grace is None:
            grace = self.limits.shutdownGrace
        self.draining = True
        done: defer.Deferred[None] = defer.Deferred()
        if not self._sessions:
            done.callback(None)
            return done
        self._drained.append(done)
        busy = self._closeIdle(self.sessions())
        _log.info(
            "Shutting down: {busy} busy of {total} sessions get up to {grace} s to finish",
            busy=busy,
            total=len(self._sessions),
            grace=grace,
        )
        poll = LoopingCall(lambda: self._closeIdle(self.sessions()))
        poll.clock = self.clock
        poll.start(_DRAIN_POLL_SECONDS, now=False)
        cutCall = self.clock.callLater(grace, self._cutAll)
        # The last goodbyes may take a moment to go out.
        hardStop = self.clock.callLater(grace + 2 * _CUT_LINGER_SECONDS, self._giveUp)

        def stop(result: object) -> object:
            if poll.running:
                poll.stop()
            for call in (cutCall, hardStop):
                if call.active():
                    call.cancel()
            return result

        done.addBoth(stop)
        return done

    def _closeIdle(self, sessions: Iterable[Any]) -> int:
        busy = 0
        for session in sessions:
            if not session.drainIfIdle():
                busy += 1
        return busy

    def _cutAll(self) -> None:
        remaining = self.sessions()
        if remaining:
            _log.warn(
                "Shutdown grace over: cutting {count} sessions still open",
                count=len(remaining),
            )
        for session in remaining:
            session.cut()

    def _giveUp(self) -> None:
        for session in self.sessions():
            self.release(session)


def _logRefused(protocol: str, peer: str, reason: str, unlogged: int = 0) -> None:
    _log.info(
        "Refused {protocol} connection from {peer}: {reason}{more}",
        limitEvent="refused",
        protocol=protocol,
        peer=peer,
        reason=reason,
        unlogged=unlogged,
        more=f" ({unlogged} more refused for this reason since the last such line)" if unlogged else "",
    )


class RefusedConnection(Protocol):
    """
    What a connection over a limit gets instead of a session: one goodbye
    line (SMTP C{421}, IMAP C{* BYE}), then the connection closes.  It is
    not counted.

    @ivar goodbye: The line to send, without CRLF.
    """

    def __init__(self, goodbye: bytes, reason: str, protocolName: str,
                 callLater: Callable[..., Any] | None = None,
                 logRefusal: Callable[[str, str, str], None] | None = None) -> None:
        """
        @param logRefusal: Logs the refusal (L{ConnectionLimiter.logRefusal},
            which rations the lines); by default every refusal is a line.
        """
        self.goodbye = goodbye
        self.reason = reason
        self.protocolName = protocolName
        self._callLater = callLater
        self._logRefusal = logRefusal
        self._abortCall: Any = None

    transport: Any

    def connectionMade(self) -> None:
        host = peerHost(self.transport)
        (self._logRefusal or _logRefused)(self.protocolName, host, self.reason)
        self.transport.write(self.goodbye + b"\r\n")
        self.transport.loseConnection()
        callLater = self._callLater
        if callLater is None:
            from twisted.internet import reactor

            callLater = reactor.callLater
        self._abortCall = callLater(_CLOSE_GRACE_SECONDS, self.transport.abortConnection)

    def dataReceived(self, data: bytes) -> None:
        """
        Ignore whatever the client says.
        """

    def connectionLost(self, reason: Any = None) -> None:
        call, self._abortCall = self._abortCall, None
        if call is not None and call.active():
            call.cancel()


class LimitedFactoryMixin:
    """
    Counts a protocol factory's connections with a L{ConnectionLimiter}:
    each protocol gets the limits, and over them a connection gets the
    protocol's goodbye (L{goodbye}) and is closed instead.

    Put it before the protocol's factory class in the bases.

    @ivar limits: The L{ServerLimits} each protocol enforces.
    @ivar limiter: The L{ConnectionLimiter}; share one between the SMTP and
        IMAP factories of a server.
    @ivar protocolName: For the refusal's log event.
    """

    protocolName = ""

    def __init__(
        self,
        portal: Any = None,
        context: Any = None,
        limits: ServerLimits | None = None,
        limiter: ConnectionLimiter | None = None,
        identityHasher: Any = None,
    ) -> None:
        super().__init__(portal, context, identityHasher)  # type: ignore[call-arg]
        self.limits = limits or ServerLimits()
        self.limiter = limiter or ConnectionLimiter(self.limits)

    def buildProtocol(self, addr: Any) -> Any:
        p = super().buildProtocol(addr)  # type: ignore[misc]
        p.limits = self.limits
        p.limiter = self.limiter
        refusal = self.limiter.admit(p, addr)
        if refusal is None:
            return p
        return RefusedConnection(
            self.goodbye(p, refusal), refusal, self.protocolName, logRefusal=self.limiter.logRefusal
        )

    def goodbye(self, protocol: Any, refusal: str) -> bytes:
        """
        The line a refused connection gets before it is closed.
        """
        raise NotImplementedError
