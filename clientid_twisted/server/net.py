# -*- test-case-name: tests.test_submission -*-
"""
Socket settings shared by the server's protocols.
"""

from __future__ import annotations

from typing import Any

__all__ = ["setNoDelay"]


def setNoDelay(transport: Any) -> bool:
    """
    Turn on C{TCP_NODELAY} if C{transport} is (or wraps, as TLS does) a TCP
    transport.  Mail dialogues are many small request/reply pairs; with
    Nagle's algorithm each reply can wait on a delayed ACK.

    @return: Whether it was set.
    """
    try:
        transport.setTcpNoDelay(True)
    except (AttributeError, NotImplementedError, OSError):
        return False
    return True
