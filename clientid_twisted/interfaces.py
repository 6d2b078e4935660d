# -*- test-case-name: tests.test_cred -*-
"""
The seams between the parts of clientid-twisted.

Data flows one way: protocol mixin, then credentials carrying the identity,
then the checker, then the policy, then the store.  Each arrow is one of
these interfaces, so any part can be replaced without touching the others.
"""

from __future__ import annotations

from zope.interface import Attribute, Interface

from twisted.cred.credentials import ICredentials

__all__ = ["IClientIdentifiedCredentials"]


class IClientIdentifiedCredentials(ICredentials):
    """
    Credentials that also tell who is knocking: the CLIENTID presented on the
    connection (if any) and how the connection looks.

    Objects providing this interface keep providing whatever the
    authentication mechanism's credentials provided (L{IUsernamePassword},
    L{IUsernameHashedPassword}, ...) so existing checkers work unchanged.
    """

    clientIdentity = Attribute(
        "The L{clientid_twisted.identity.ClientIdentity} accepted on this "
        "connection, or L{None} when the client sent no valid CLIENTID."
    )
    peer = Attribute("The client's address, an L{twisted.internet.interfaces.IAddress}.")
    protocolName = Attribute('Which protocol the login came over: C{"smtp"} or C{"imap"}.')
    secure = Attribute("L{True} when the connection is encrypted (TLS).")
    credentials = Attribute("The mechanism's own credentials object, unwrapped.")
