# -*- test-case-name: tests.test_smtp_server -*-
"""
Exceptions that cross the seams between the parts.
"""

from __future__ import annotations

__all__ = ["TemporaryAuthenticationFailure"]


class TemporaryAuthenticationFailure(Exception):
    """
    The login could not be decided now (a store outage, say).

    Protocols answer it as a temporary failure (SMTP C{454 4.7.0}, IMAP
    C{NO [UNAVAILABLE]}) and never say why; the reason is for the log.
    """
