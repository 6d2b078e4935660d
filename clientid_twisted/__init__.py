# -*- test-case-name: tests -*-
"""
CLIENTID for Twisted's SMTP and IMAP servers.

A client presents a device identity over TLS before it logs in; the server
hands it to C{twisted.cred} with the credentials, so a checker can refuse a
right password from a device the account never approved.

Public names are importable from this package; see the modules for details.
"""

from clientid_twisted.cred import ClientIdentifiedCredentials, identifyCredentials
from clientid_twisted.errors import TemporaryAuthenticationFailure
from clientid_twisted.fingerprint import IdentityHasher
from clientid_twisted.identity import (
    ClientIdentity,
    MalformedClientID,
    parseClientIDArguments,
)
from clientid_twisted.interfaces import IClientIdentifiedCredentials
from clientid_twisted.smtp import (
    ClientIDESMTP,
    ClientIDESMTPFactory,
    ClientIDESMTPMixin,
    ClientIDESMTPSender,
    ClientIDESMTPSenderFactory,
)
from clientid_twisted.imap import (
    ClientIDIMAP4Client,
    ClientIDIMAP4Factory,
    ClientIDIMAP4Server,
    ClientIDIMAP4ServerMixin,
    loginWithClientID,
)

from clientid_twisted._version import __version__

__all__ = [
    "ClientIdentity",
    "MalformedClientID",
    "parseClientIDArguments",
    "IdentityHasher",
    "IClientIdentifiedCredentials",
    "ClientIdentifiedCredentials",
    "identifyCredentials",
    "TemporaryAuthenticationFailure",
    "ClientIDESMTPMixin",
    "ClientIDESMTP",
    "ClientIDESMTPFactory",
    "ClientIDESMTPSender",
    "ClientIDESMTPSenderFactory",
    "ClientIDIMAP4ServerMixin",
    "ClientIDIMAP4Server",
    "ClientIDIMAP4Factory",
    "ClientIDIMAP4Client",
    "loginWithClientID",
    "__version__",
]
