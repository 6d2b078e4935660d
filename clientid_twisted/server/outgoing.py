# -*- test-case-name: tests.test_backpressure -*-
"""
How many bytes a session has written that its client has not read yet.

Twisted's transports buffer every write without bound and offer no public
way to ask how much is waiting: the streaming-producer interface would tell
us, but a protocol cannot keep a producer registered, because
C{IMAP4Server} registers its own for each FETCH literal.  So this reads the
buffer of L{twisted.internet.abstract.FileDescriptor} (TCP, and the
connection under TLS), whose attributes have kept these names since
Twisted 12.  A transport without them (a test's C{StringTransport}) has an unknown
backlog, and a session on it is never held back.
"""

from __future__ import annotations

from typing import Any

__all__ = ["pendingOutput"]


def pendingOutput(transport: Any) -> int | None:
    """
    The bytes written to C{transport} (or the connection under it, when it
    is a TLS layer) and not yet sent, or L{None} if that cannot be known.
    """
    for _ in range(4):
        if transport is None:
            return None
        buffered = getattr(transport, "dataBuffer", None)
        extra = getattr(transport, "_tempDataLen", None)
        offset = getattr(transport, "offset", 0)
        if isinstance(buffered, (bytes, bytearray, memoryview)) and isinstance(extra, int):
            return len(buffered) - offset + extra
        transport = getattr(transport, "transport", None)
    return None
