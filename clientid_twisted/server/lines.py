# -*- test-case-name: tests.test_lines -*-
"""
Line splitting that never holds more than one line's worth of bytes.

Twisted's L{LineOnlyReceiver} keeps an over-long line in its buffer and
grows it with every read (so a client that never sends CRLF makes the
server buffer without bound), and drops the rest of the read in which the
over-long line ended.  L{BoundedLineOnlyReceiver} discards the excess as it
arrives, reports the line once its end arrives, and goes on with the next
line.
"""

from __future__ import annotations

from twisted.protocols.basic import LineOnlyReceiver

from clientid_twisted._linefixes import LineBufferMixin

__all__ = ["BoundedLineOnlyReceiver"]


class BoundedLineOnlyReceiver(LineOnlyReceiver):
    """
    A L{LineOnlyReceiver} whose maximum line length may change with the
    protocol's state (L{maxLineLength}), and which stays in step after an
    over-long line.

    Put it after the protocol class in the bases so that it comes before
    L{LineOnlyReceiver} in the method resolution order.

    @ivar overlong: Whether the line being received is already too long
        (its bytes are being discarded until its CRLF).
    @ivar paused: Whether lines must wait in the buffer instead of being
        handled (set by the session while its client does not read).
    """

    # The property itself, not the class as a base: as a base it would
    # come before SMTP in a submission server's method resolution order.
    unparsedInput = LineBufferMixin.unparsedInput

    overlong = False
    paused = False

    def maxLineLength(self) -> int:
        """
        The longest line, without its CRLF, accepted now.
        """
        return self.MAX_LENGTH

    def dataReceived(self, data: bytes) -> None:
        buffer = self.unparsedInput + data
        start = 0
        while True:
            transport = self.transport
            if transport is None or getattr(transport, "disconnecting", False):
                # A line told the connection to close: ignore the rest.
                self.unparsedInput = b""
                return
            if self.paused:
                # Reading is paused (the client does not read its
                # replies): the rest waits for dataReceived(b"").
                self.unparsedInput = buffer[start:]
                return
            end = buffer.find(self.delimiter, start)
            if end < 0:
                break
            line = buffer[start:end]
            start = end + len(self.delimiter)
            if self.overlong:
                self.overlong = False
                self.lineLengthExceeded(line)
            elif len(line) > self.maxLineLength():
                self.lineLengthExceeded(line)
            else:
                self.lineReceived(line)
        rest = buffer[start:]
        if len(rest) > self.maxLineLength():
            # Keep a trailing CR: it may be the first half of the CRLF.
            self.overlong = True
            rest = rest[-1:] if rest.endswith(self.delimiter[:1]) else b""
        self.unparsedInput = rest

    def hasPartialLine(self) -> bool:
        """
        Whether part of a line has arrived but not its end.
        """
        return bool(self.unparsedInput) or self.overlong

    def lineLengthExceeded(self, line: bytes) -> None:
        """
        Called once per over-long line, when its end has arrived, with what
        was kept of it (possibly nothing).  Override to reply.
        """
