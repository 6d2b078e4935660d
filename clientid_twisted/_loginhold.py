# -*- test-case-name: tests.test_loginhold -*-
"""
Holding the commands a client pipelines behind a login until the login's
reply is out, for SMTP and IMAP alike.

Why our own: a login is decided asynchronously (the portal returns a
L{Deferred <twisted.internet.defer.Deferred>}), and a command that ran
meanwhile would overtake the reply, run in the state before the login, let a CLIENTID slip in during it, or
have several password guesses checked at once.  Twisted's SMTP has no
queue for this; Twisted's C{IMAP4Server} has one (C{blocked}, which its
C{lineReceived} fills while it is not L{None} and C{_unblock} drains) but
uses it only while it writes out a FETCH.  This mixin is the one piece
of logic both protocols use: it keeps the held lines in C{blocked} (for
IMAP that is Twisted's own queue, so Twisted's other users of it, and the
guard's backlog accounting, see the same lines), starts holding when a
login is pending, replays the lines in order once it is answered until a
replayed line starts another hold (a pipelined second login: the rest
waits for it), and runs nothing once the connection is going or gone.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from twisted.internet import defer

__all__ = ["LoginHoldMixin"]

if TYPE_CHECKING:
    # What the mixin is mixed into, for the type checker only.
    from twisted.internet.protocol import Protocol as _ProtocolBase
else:
    _ProtocolBase = object


class LoginHoldMixin(_ProtocolBase):
    """
    Hold command lines while a login is decided; replay them after.

    Mixed in before the protocol class (Twisted's C{ESMTP} or
    C{IMAP4Server}), whose C{lineReceived} runs the lines.

    @ivar blocked: The lines held, in arrival order, or L{None} when
        lines run as they come (Twisted's C{IMAP4Server} name and meaning).
    """

    blocked: Any = None
    _connectionGone = False
    _loginPending = False
    _holdingForLogin = False

    def lineReceived(self, line: bytes) -> Any:
        if self.blocked is not None:
            self.blocked.append(line)
            return None
        return super().lineReceived(line)  # type: ignore[misc]

    def holdLinesUntil(self, d: defer.Deferred[Any]) -> None:
        """
        Hold the lines that arrive until C{d} fires, then replay them.  Add
        this after the callbacks that send the login's reply, so the reply
        is out first; a C{d} that has fired already holds nothing.
        """
        self._loginPending = True
        d.addBoth(self._loginAnswered)
        if self._loginPending and self.blocked is None:
            self.blocked = []
            self._holdingForLogin = True

    def loginPending(self) -> bool:
        """
        Whether a login is being decided (lines are held meanwhile).
        """
        return self._loginPending

    def heldInputBytes(self) -> int:
        """
        The bytes of the lines held (for the backlog limits).
        """
        blocked = self.blocked
        # (None or empty for nearly every command line: no generator then.)
        return sum(len(line) for line in blocked) if blocked else 0

    def _loginAnswered(self, ignored: object) -> None:
        self._loginPending = False
        if self._holdingForLogin:
            self._holdingForLogin = False
            self.replayHeldLines()

    def replayHeldLines(self) -> None:
        """
        Run the held lines in order, until one of them starts holding
        again (what is left waits behind it) or the connection is going.
        """
        lines, self.blocked = self.blocked or [], None
        while lines and self.blocked is None and not self.replayStopped():
            if self.takeHeldLinesAsData(lines):
                return
            self.lineReceived(lines.pop(0))
        if self.blocked is not None:
            self.blocked.extend(lines)

    def replayStopped(self) -> bool:
        """
        Whether held lines must not run any more: the connection is being
        closed or is gone.
        """
        return self._connectionGone or bool(getattr(self.transport, "disconnecting", False))

    def takeHeldLinesAsData(self, lines: list[bytes]) -> bool:
        """
        Called before each replayed line: a protocol whose replayed command
        went on to read raw data (an IMAP literal) takes C{lines} as that
        data here and returns C{True}; the replay then ends.
        """
        return False

    def connectionLost(self, reason: Any = None) -> None:
        # Nothing held runs after the connection is gone.
        self._connectionGone = True
        if self.blocked:
            del self.blocked[:]
        super().connectionLost(reason)
