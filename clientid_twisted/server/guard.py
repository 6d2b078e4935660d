# -*- test-case-name: tests.test_guard -*-
"""
What the runnable server's SMTP and IMAP sessions share to survive hostile
clients: idle timeouts that depend on the session's stage, a deadline per
command line and per transfer (so a client trickling a byte at a time is
cut), a cap on the TLS handshake, an error budget, a delay before a failed
login is answered, connection counting, a graceful end on shutdown, and
backpressure: a client that sends commands but does not read their replies
is not read from until it does (so replies cannot pile up in memory).

L{SessionGuardMixin} goes first in the bases of a protocol that has
C{TimeoutMixin}'s C{setTimeout}/C{callLater} and an C{isEncrypted()}; the
protocol supplies the few hooks that differ between SMTP and IMAP.

Every deadline of a session (the idle timeout of C{TimeoutMixin}, which
this takes over, a command line's, a transfer's, a TLS handshake's, a
delayed answer's) is a time in a table; one L{DelayedCall
<twisted.internet.base.DelayedCall>} per session is armed for the
earliest.  A deadline that moves later (the idle timeout, at every line)
only changes the table: the call finds nothing due when it fires and is
armed again for what is next, so a busy session makes one call per idle
period instead of cancelling and scheduling one per line.  Timers go
through C{self.callLater}, so tests drive them with a
L{twisted.internet.task.Clock}.
"""

from __future__ import annotations

from typing import Any, Callable

from zope.interface import implementer

from twisted.internet import defer
from twisted.internet.interfaces import IHandshakeListener
from twisted.logger import Logger

from clientid_twisted._sessioninfo import peerHost
from clientid_twisted.server.connections import (
    _CLOSE_GRACE_SECONDS,
    _CUT_LINGER_SECONDS,
    ConnectionLimiter,
)
from clientid_twisted.server.limits import ServerLimits
from clientid_twisted.server.outgoing import pendingOutput

__all__ = ["SessionGuardMixin"]

_log = Logger()


@implementer(IHandshakeListener)
class SessionGuardMixin:
    """
    Limits for one session.  Subclasses implement L{sendGoodbye},
    L{hasPartialLine}, L{inTransfer}, L{isBusy} and L{isAuthenticated}.

    @ivar limits: The server's L{ServerLimits}.
    @ivar limiter: The L{ConnectionLimiter} that counted this session, or
        L{None}.
    @ivar errors: Errors counted against the budget so far.
    @ivar closing: Whether the session was told to end (goodbye sent).
    @ivar draining: Whether a shutdown is waiting for this session's
        current command.
    @ivar backlogged: Whether reading is paused because the client does not
        read what was written to it (or its queued commands pile up).
    @ivar outputHighWater: Bytes of unsent output (or of commands queued
        behind a running one) past which the session stops reading; it
        reads again once the output is down to a quarter of it.
    @ivar backlogPollInterval: Seconds between looks at the output while
        backlogged.
    @ivar paused: Whether the line loop must stop after the current line
        (Twisted's C{LineReceiver} flag; L{BoundedLineOnlyReceiver}
        honours it too).
    """

    limits = ServerLimits()
    limiter: ConnectionLimiter | None = None
    errors = 0
    closing = False
    draining = False
    handshaking = False
    backlogged = False
    outputHighWater = 256 * 1024
    backlogPollInterval = 0.05
    paused = False

    _commandSinceTLS = False
    _lastPending = 0
    _guardGone = False

    # Provided by the protocol.
    transport: Any
    protocolName: str
    callLater: Callable[..., Any]
    isEncrypted: Callable[[], bool]
    loginPending: Callable[[], bool]
    heldInputBytes: Callable[[], int]

    # -- hooks ----------------------------------------------------------------

    def sendGoodbye(self, event: str) -> None:
        """
        Send the last line before closing (SMTP C{421}, IMAP C{* BYE}),
        worded for C{event}.
        """
        raise NotImplementedError

    def hasPartialLine(self) -> bool:
        """
        Whether part of a command line has arrived without its end.
        """
        raise NotImplementedError

    def inTransfer(self) -> bool:
        """
        Whether a message body or literal is being received.
        """
        raise NotImplementedError

    def isBusy(self) -> bool:
        """
        Whether a command is under way that a shutdown should let finish.
        """
        raise NotImplementedError

    def isAuthenticated(self) -> bool:
        """
        Whether the client has logged in.
        """
        raise NotImplementedError

    def sessionEnding(self) -> None:
        """
        The session is being ended: drop whatever it was receiving now,
        rather than when the connection is finally gone (a TLS close may
        wait for the client).
        """

    def queuedInputBytes(self) -> int:
        """
        Bytes of command lines read and queued behind a running command
        (IMAP's FETCH) or a login being decided: they count against
        L{outputHighWater} too.  Both protocols queue them in the same
        place (L{LoginHoldMixin <clientid_twisted._loginhold.LoginHoldMixin>}).
        """
        return self.heldInputBytes()

    def authenticatedIdleTimeout(self) -> float:
        """
        The idle timeout after login.
        """
        return self.limits.idleTimeout

    # -- connection -----------------------------------------------------------------

    timeOut: Any  # TimeoutMixin's (IMAP4Server gives a default)
    _timer: Any = None

    _deadlines: dict[str, tuple[float, Callable[[], None]]]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # The session's deadlines by name: when, and what to call then.
        self._deadlines = {}

    @property
    def _delayed(self) -> list[defer.Deferred[None]]:
        # Failed logins waiting for their delayed answer.
        return self.__dict__.setdefault("_delayedAnswers", [])  # type: ignore[no-any-return]

    def connectionMade(self) -> None:
        if self.isEncrypted() and not self._reserveHandshake():
            # Implicit TLS with too many handshakes in progress: nothing can
            # be said before the handshake, so close without one.
            self._logLimit("handshake-limit")
            self.closing = True
            self.transport.abortConnection()
            return
        super().connectionMade()  # type: ignore[misc]
        self.refreshIdleTimeout()

    def connectionLost(self, reason: Any = None) -> None:
        self._guardGone = True
        self._cancelAllTimers()
        delayed = list(self._delayed)
        del self._delayed[:]
        for d in delayed:
            d.callback(None)
        if self.limiter is not None:
            self.limiter.release(self)
        super().connectionLost(reason)  # type: ignore[misc]

    def _logLimit(self, event: str, **fields: Any) -> None:
        _log.info(
            "Closing {protocol} session from {peer}: {limitEvent}",
            limitEvent=event,
            protocol=self.protocolName,
            peer=peerHost(self.transport),
            **fields,
        )

    # -- timers -----------------------------------------------------------------

    def _startTimer(self, name: str, seconds: float, fire: Callable[[], None]) -> None:
        """
        Call C{fire} in C{seconds} unless L{_cancelTimer} is called for
        C{name} first (which replaces a deadline of that name).
        """
        deadlines = self._deadlines
        timer = self._timer
        if timer is not None and timer.active():
            when = timer.seconds() + seconds
            deadlines[name] = (when, fire)
            if when < timer.getTime():
                timer.reset(seconds)
            return
        if timer is not None and deadlines:
            # The call has fired: arm it again for the earliest.
            deadlines[name] = (timer.seconds() + seconds, fire)
            self._armTimer()
            return
        timer = self._timer = self.callLater(seconds, self._deadlineReached)
        deadlines[name] = (timer.getTime(), fire)

    def _cancelTimer(self, name: str) -> None:
        deadlines = self._deadlines
        if deadlines.pop(name, None) is not None and not deadlines:
            self._stopTimer()

    def _cancelAllTimers(self) -> None:
        self._deadlines.clear()
        self._stopTimer()

    def _stopTimer(self) -> None:
        timer, self._timer = self._timer, None
        if timer is not None and timer.active():
            timer.cancel()

    def _armTimer(self) -> None:
        """
        Make the session's call fire at the earliest deadline (none left:
        no call).
        """
        deadlines = self._deadlines
        if not deadlines:
            self._stopTimer()
            return
        earliest = min(when for when, _ in deadlines.values())
        timer = self._timer
        if timer.active():
            if timer.getTime() > earliest:
                timer.reset(earliest - timer.seconds())
            return
        self._timer = self.callLater(max(0.0, earliest - timer.seconds()), self._deadlineReached)

    def _deadlineReached(self) -> None:
        """
        The session's call fired: run what is due, earliest first, then arm
        the call for what is next.
        """
        timer = self._timer
        deadlines = self._deadlines
        while deadlines:
            now = timer.seconds()
            name, (when, fire) = min(deadlines.items(), key=lambda item: item[1][0])
            if when > now:
                break
            del deadlines[name]
            fire()
            if self._timer is None or self._timer is not timer and self._timer.active():
                # Stopped (every deadline gone), or armed anew by what ran.
                break
        if self._timer is timer:
            self._armTimer()

    # -- the idle timeout (TimeoutMixin's, as one of the deadlines) ------------------

    def setTimeout(self, period: float | None) -> float | None:
        """
        Change the idle timeout (C{TimeoutMixin.setTimeout}): L{None} stops
        it, a number restarts it from now.

        @return: The previous period.
        """
        previous, self.timeOut = self.timeOut, period
        if period is None:
            self._cancelTimer("idle")
        else:
            self._startTimer("idle", period, self._idleTimedOut)
        return previous

    def resetTimeout(self) -> None:
        """
        Restart the idle timeout from now, if it is running
        (C{TimeoutMixin.resetTimeout}): a later deadline, so only the table
        changes.
        """
        idle = self._deadlines.get("idle")
        if idle is not None and self.timeOut is not None:
            self._deadlines["idle"] = (self._timer.seconds() + self.timeOut, idle[1])

    def _idleTimedOut(self) -> None:
        self.timeoutConnection()

    def idleTimeout(self) -> float:
        """
        The idle timeout for the session's stage: short before the first
        command over TLS, longer after login.
        """
        if not self._commandSinceTLS or not self.isEncrypted():
            return self.limits.initialTimeout
        if self.isAuthenticated():
            return self.authenticatedIdleTimeout()
        return self.limits.idleTimeout

    def refreshIdleTimeout(self) -> None:
        """
        Restart the idle timer with the timeout for the session's stage.
        """
        if self.closing or self._guardGone:
            return
        period = self.idleTimeout()
        if period == self.timeOut and "idle" in self._deadlines:
            # The same period from now: a later deadline, so only the
            # table changes (the common case, once per command line).
            self.resetTimeout()
        else:
            self.setTimeout(period)

    def timeoutConnection(self) -> None:
        self.closeSession("idle-timeout")

    def dataReceived(self, data: bytes) -> None:
        super().dataReceived(data)  # type: ignore[misc]
        if not self.closing and not self._guardGone:
            self._updateDeadlines()

    def lineReceived(self, line: bytes) -> Any:
        if self.inTransfer():
            # A message body's line: the transfer's deadline covers it,
            # and the stage (so the idle timeout) does not change within
            # one; the protocol resets the idle timer itself.
            return super().lineReceived(line)  # type: ignore[misc]
        # A complete line ends its deadline; the next partial one starts
        # a new one when the read is done.
        if "command" in self._deadlines:
            self._cancelTimer("command")
        if not self._commandSinceTLS and self.isEncrypted():
            self._commandSinceTLS = True
        result = super().lineReceived(line)  # type: ignore[misc]
        if not self.backlogged:
            # (Backlogged, only progress in writing restarts the timer.)
            self.refreshIdleTimeout()
        self._checkBacklog()
        return result

    def _updateDeadlines(self) -> None:
        """
        Deadlines count from the first byte, whatever arrives after: a
        command line must be complete within C{commandTimeout}, a message
        body or literal within C{dataTimeout}.
        """
        deadlines = self._deadlines
        if self.inTransfer():
            if "command" in deadlines:
                self._cancelTimer("command")
            if "transfer" not in deadlines:
                self._startTimer("transfer", self.limits.dataTimeout, self._transferTimedOut)
            return
        if "transfer" in deadlines:
            self._cancelTimer("transfer")
        if self.backlogged:
            # What waits in the buffer is not being sent slowly: it is not
            # being read.  The idle timer counts that time.
            self._cancelTimer("command")
            return
        if self.hasPartialLine():
            if "command" not in deadlines:
                self._startTimer("command", self.limits.commandTimeout, self._commandTimedOut)
        elif "command" in deadlines:
            self._cancelTimer("command")

    def _transferTimedOut(self) -> None:
        self.closeSession("data-timeout")

    def _commandTimedOut(self) -> None:
        self.closeSession("command-timeout")

    # -- backpressure --------------------------------------------------------------

    def _backlog(self) -> tuple[int, int] | None:
        pending = pendingOutput(self.transport)
        if pending is None:
            return None
        return pending, self.queuedInputBytes()

    def _checkBacklog(self) -> None:
        """
        After each command line: past L{outputHighWater}, stop reading (and
        stop running the lines of this read) until the client has read.
        """
        if self.backlogged or self.closing or self._guardGone:
            return
        backlog = self._backlog()
        if backlog is None:
            return
        pending, queued = backlog
        if pending <= self.outputHighWater and queued <= self.outputHighWater:
            return
        self.backlogged = True
        self.paused = True
        self._lastPending = pending
        self._cancelTimer("command")
        self._holdReading("backlog")
        self._startTimer("backlog", self.backlogPollInterval, self._pollBacklog)

    def _pollBacklog(self) -> None:
        if self.closing or self._guardGone:
            return
        backlog = self._backlog()
        pending, queued = backlog if backlog is not None else (0, 0)
        if pending <= self.outputHighWater // 4 and queued <= self.outputHighWater:
            self.backlogged = False
            self.paused = False
            self._releaseReading("backlog")
            # Run the lines that waited in this session's buffer.
            self.dataReceived(b"")
            return
        if pending < self._lastPending:
            # The client reads: progress in writing counts as activity.
            self.refreshIdleTimeout()
        self._lastPending = pending
        self._startTimer("backlog", self.backlogPollInterval, self._pollBacklog)

    # -- TLS handshakes -----------------------------------------------------------

    def _reserveHandshake(self) -> bool:
        """
        Count a TLS handshake that is about to start, and give it
        C{tlsHandshakeTimeout} to finish.

        @return: Whether the allowance for handshakes in progress has room.
        """
        if self.limiter is not None and not self.limiter.handshakeStarting(self):
            return False
        self.handshaking = True
        self._startTimer("handshake", self.limits.tlsHandshakeTimeout, self._handshakeTimedOut)
        return True

    def _unreserveHandshake(self) -> None:
        self.handshaking = False
        self._cancelTimer("handshake")
        if self.limiter is not None:
            self.limiter.handshakeFinished(self)

    def reserveStartTLS(self) -> bool:
        """
        Call before starting TLS on a plaintext connection.  Over the
        allowance for handshakes in progress, the session ends (SMTP 421,
        IMAP BYE) and the caller must not start TLS.

        @return: Whether TLS may start.
        """
        if self._reserveHandshake():
            return True
        self.closeSession("handshake-limit")
        return False

    def startTLSNotStarted(self) -> None:
        """
        Call when a reserved STARTTLS did not start TLS after all.
        """
        self._unreserveHandshake()

    def handshakeCompleted(self) -> None:
        """
        The TLS handshake finished (L{IHandshakeListener}).
        """
        self._unreserveHandshake()
        self.refreshIdleTimeout()

    def _handshakeTimedOut(self) -> None:
        self._logLimit("handshake-timeout")
        self.closing = True
        self.transport.abortConnection()

    # -- ending sessions -------------------------------------------------------------

    def closeSession(self, event: str) -> None:
        """
        End the session: say why (L{sendGoodbye}), close, and cut the
        connection if the client does not read the goodbye in time.
        """
        if self.closing or self._guardGone:
            return
        self.closing = True
        self._logLimit(event)
        self._cancelAllTimers()
        self.timeOut = None
        self.sessionEnding()
        self.sendGoodbye(event)
        self.transport.loseConnection()
        self._abortIn(_CLOSE_GRACE_SECONDS)

    def _abortIn(self, seconds: float) -> None:
        # A TLS close waits for the client's close_notify, and a client that
        # does not read never drains the goodbye: neither may keep the
        # connection.
        self._startTimer("abort", seconds, self.transport.abortConnection)

    def countError(self) -> None:
        """
        Count one error (an unknown command, a syntax error, a malformed
        CLIENTID, a failed login); past C{maxErrorsPerSession}, end the
        session.
        """
        self.errors += 1
        if self.errors > self.limits.maxErrorsPerSession:
            self.closeSession("error-budget")

    def delayAuthFailure(self, answer: Callable[[], Any]) -> defer.Deferred[None] | None:
        """
        Answer a failed login after C{authFailureDelay} seconds, without
        holding up the reactor (or any other session).

        @param answer: Sends the reply; not called if the connection is
            gone by then.
        @return: A L{defer.Deferred} that fires once answered (or the
            connection is gone), or L{None} when answered at once.
        """
        delay = self.limits.authFailureDelay
        if delay <= 0:
            answer()
            return None
        d: defer.Deferred[None] = defer.Deferred()
        self._delayed.append(d)

        def fire() -> None:
            if d in self._delayed:
                self._delayed.remove(d)
                if not self._guardGone:
                    answer()
                d.callback(None)

        self._startTimer(f"auth-delay-{id(d)}", delay, fire)
        return d

    @property
    def _readingHeld(self) -> set[str]:
        # Why reading is paused now ("login", "backlog"): it resumes when
        # no reason is left.
        return self.__dict__.setdefault("_readingHeldFor", set())  # type: ignore[no-any-return]

    def _holdReading(self, reason: str) -> None:
        held = self._readingHeld
        if not held and not self._guardGone:
            pause = getattr(self.transport, "pauseProducing", None)
            if pause is not None:
                pause()
        held.add(reason)

    def _releaseReading(self, reason: str) -> None:
        held = self._readingHeld
        if reason not in held:
            return
        held.discard(reason)
        if not held and not self._guardGone and not self.closing:
            resume = getattr(self.transport, "resumeProducing", None)
            if resume is not None:
                resume()

    def holdInput(self) -> None:
        """
        Stop reading from the client (while a login is decided), so that
        what it pipelines meanwhile stays in the kernel, not in memory.
        """
        self._holdReading("login")

    def releaseInput(self, result: object = None) -> object:
        """
        Read from the client again (unless it is backlogged); passes
        C{result} through.
        """
        self._releaseReading("login")
        return result

    def holdLinesUntil(self, d: defer.Deferred[Any]) -> None:
        """
        Hold the lines pipelined behind a login (the protocol's
        L{LoginHoldMixin <clientid_twisted._loginhold.LoginHoldMixin>}) and,
        while it is still being decided, stop reading (L{holdInput}); a
        decision made at once needs no pause, nor its two system calls.
        """
        super().holdLinesUntil(d)  # type: ignore[misc]
        if self.loginPending():
            self.holdInput()
            d.addBoth(self.releaseInput)

    # -- shutdown -------------------------------------------------------------------

    def drainIfIdle(self) -> bool:
        """
        For a shutdown: end the session now unless a command is under way
        (then it ends before the next command, or when polled again).

        @return: Whether the session was ended (or was ending already).
        """
        if self.closing or self._guardGone:
            return True
        self.draining = True
        if self.isBusy():
            return False
        self.closeSession("shutdown")
        return True

    def cut(self) -> None:
        """
        For a shutdown whose grace is over: end the session, busy or not.
        Whatever it was receiving is discarded (a message in DATA is never
        half-written: it lives in the maildir's C{tmp/} until complete).
        """
        if self._guardGone:
            return
        self.closeSession("shutdown")
        self._abortIn(_CUT_LINGER_SECONDS)
