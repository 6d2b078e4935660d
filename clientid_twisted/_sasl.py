# -*- test-case-name: tests.test_smtp_server,tests.test_imap_server -*-
"""
What both protocols check in a SASL PLAIN message (RFC 4616) that
Twisted's C{PLAINCredentials} throws away: the authorization identity.

C{authzid NUL authcid NUL passwd}: a client that authenticates as C{bob}
may ask to act as C{alice}.  The server must then authorize that or fail
the exchange; there are no master users here, so it fails, with the
ordinary refusal.
"""

from __future__ import annotations

__all__ = ["foreignAuthorization"]


def foreignAuthorization(mechanism: bytes, response: bytes) -> bool:
    """
    Whether a decoded PLAIN C{response} names an authorization identity
    other than its authentication identity (compared without case, as
    account names are).

    @param mechanism: The SASL mechanism's name; only PLAIN carries one.
    """
    if mechanism.upper() != b"PLAIN":
        return False
    parts = response.split(b"\0")
    if len(parts) != 3:
        return False
    authzid, authcid, _ = parts
    return bool(authzid) and authzid.lower() != authcid.lower()
