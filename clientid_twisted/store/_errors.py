# -*- test-case-name: tests.test_store_sqlite -*-
"""
How a store says it cannot answer.
"""

from __future__ import annotations

__all__ = ["StoreError", "StoreMissing", "UnknownDevice"]


class StoreError(OSError):
    """
    The store cannot be reached or failed; the message says why, for the
    log.  The policy turns it into a temporary failure (or lets logins
    through, if the operator chose to fail open).

    An L{OSError}, like the other "this file cannot be used" errors at
    start-up, so C{twistd} and C{clientid-admin} report it in one line.
    """


class StoreMissing(StoreError):
    """
    The store, or the directory it would live in, does not exist and may
    not be made here: only the server's first start (or C{clientid-admin
    init}) makes one.
    """


class UnknownDevice(LookupError):
    """
    The account has no device with that digest: a caller's mistake (or a
    record forgotten meanwhile), not a store failure, so not a
    L{StoreError}.
    """
