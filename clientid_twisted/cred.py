# -*- test-case-name: tests.test_checker -*-
"""
Credentials that carry the client identity to C{twisted.cred}.

A protocol wraps the credentials its AUTH/LOGIN mechanism built with
L{identifyCredentials} before calling C{portal.login}.  The wrapper provides
L{IClientIdentifiedCredentials} I{and} every interface the wrapped object
provides, and forwards attribute access to it, so a checker written for
L{IUsernamePassword <twisted.cred.credentials.IUsernamePassword>} (C{checkPassword}, C{username}) keeps working and a
checker that knows about CLIENTID can read C{clientIdentity}.

This module is also where a checker finds what it works with: the
L{ClientIdentity} the credentials carry (and L{parseClientIDArguments}, the
drafts' grammar), the L{IdentityHasher} that gives the fingerprint to log
instead of the token, and L{TemporaryAuthenticationFailure} to raise when it
cannot decide now.
"""

from __future__ import annotations

from typing import Any

from zope.interface import directlyProvides, implementer, providedBy

from twisted.cred.credentials import ICredentials
from twisted.internet.interfaces import IAddress

from clientid_twisted._errors import TemporaryAuthenticationFailure
from clientid_twisted._fingerprint import IdentityHasher
from clientid_twisted._identity import ClientIdentity, MalformedClientID, parseClientIDArguments
from clientid_twisted.interfaces import IClientIdentifiedCredentials

__all__ = [
    "ClientIdentifiedCredentials",
    "ClientIdentity",
    "IdentityHasher",
    "MalformedClientID",
    "TemporaryAuthenticationFailure",
    "identifyCredentials",
    "parseClientIDArguments",
]


@implementer(IClientIdentifiedCredentials)
class ClientIdentifiedCredentials:
    """
    A transparent wrapper adding the connection's identity to credentials.

    Attribute reads that are not the wrapper's own go to the wrapped
    credentials, so C{creds.username} and C{creds.checkPassword(...)} behave
    exactly as on the original object.

    @ivar credentials: The wrapped credentials.
    @ivar clientIdentity: The accepted identity, or L{None}.
    @ivar peer: The client's address.
    @ivar protocolName: C{"smtp"} or C{"imap"}.
    @ivar secure: Whether the connection is encrypted.
    @ivar host: The server's address the client connected to, or L{None}
        (a gateway tells its backend, as C{ID x-connected-ip}).
    @ivar helo: The name the client gave in its SMTP C{EHLO}/C{HELO}, as
        it sent it, or L{None} (a gateway tells its backend, as C{XCLIENT
        HELO=}).
    """

    def __init__(
        self,
        credentials: ICredentials,
        clientIdentity: ClientIdentity | None,
        peer: IAddress | None,
        protocolName: str,
        secure: bool,
        host: IAddress | None = None,
        helo: bytes | None = None,
    ) -> None:
        self.credentials = credentials
        self.host = host
        self.helo = helo
        self.clientIdentity = clientIdentity
        self.peer = peer
        self.protocolName = protocolName
        self.secure = secure
        directlyProvides(self, providedBy(credentials), IClientIdentifiedCredentials)

    def __getattr__(self, name: str) -> Any:
        # Only called for names not found on the wrapper itself.
        if name == "credentials":
            raise AttributeError(name)
        return getattr(self.credentials, name)

    def __repr__(self) -> str:
        # Never the password nor the token: only what a log may show.
        return "<ClientIdentifiedCredentials {} over {} for {!r}>".format(
            type(self.credentials).__name__,
            self.protocolName,
            self.clientIdentity,
        )


def identifyCredentials(
    credentials: ICredentials,
    clientIdentity: ClientIdentity | None,
    peer: IAddress | None,
    protocolName: str,
    secure: bool,
    host: IAddress | None = None,
    helo: bytes | None = None,
) -> ClientIdentifiedCredentials:
    """
    Wrap C{credentials} so that they carry the client identity.

    Credentials already wrapped are unwrapped first, so the result never
    nests and always describes the current connection state.
    """
    if isinstance(credentials, ClientIdentifiedCredentials):
        credentials = credentials.credentials
    return ClientIdentifiedCredentials(
        credentials, clientIdentity, peer, protocolName, secure, host, helo
    )
