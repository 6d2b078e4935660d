# -*- test-case-name: tests.test_lines -*-
"""
Where we reach into Twisted's line splitters (C{twisted.protocols.basic}
C{LineReceiver} and C{LineOnlyReceiver}) through a private name: the one
place that touches their unparsed bytes, C{_buffer}.  The report and the
reproduction are in docs/twisted-fixes.md (bug 1, and the line-length
guard); tests/test_twistedprivate.py fails when the name appears anywhere
else, or when a Twisted release drops it.
"""

from __future__ import annotations

from typing import Any

__all__ = ["LineBufferMixin"]


class LineBufferMixin:
    """
    The bytes a line splitter has read but not yet handed out as lines,
    by a public name.

    Gap: neither splitter lets a protocol read or drop them, and three
    things must: the plaintext that followed a STARTTLS line in the same
    read is dropped (bug 1, RFC 3207 section 4.2, RFC 3501 section
    6.2.1); what a client pipelined behind its login is handed to the
    gateway's backend; and L{clientid_twisted.server.lines} splits lines
    itself to bound a line's length.

    Put it before the splitter in the bases, or (where that would move
    the splitter in the method resolution order) take the property alone:
    C{unparsedInput = LineBufferMixin.unparsedInput}.
    """

    _buffer: bytes

    @property
    def unparsedInput(self: Any) -> bytes:
        """
        The bytes read and not yet split into lines (a partial line, and
        in C{LineReceiver} the lines of the current read still to come).
        """
        return self._buffer

    @unparsedInput.setter
    def unparsedInput(self: Any, data: bytes) -> None:
        self._buffer = data
