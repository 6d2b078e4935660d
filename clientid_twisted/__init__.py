# -*- test-case-name: tests.test_layering -*-
"""
CLIENTID for Twisted's SMTP and IMAP servers.

A client presents a device identity over TLS before it logs in; the server
hands it to C{twisted.cred} with the credentials, so a checker can refuse a
right password from a device the account never approved.

The API is this package and its public modules: L{interfaces
<clientid_twisted.interfaces>}, L{smtp <clientid_twisted.smtp>}, L{imap
<clientid_twisted.imap>}, L{cred <clientid_twisted.cred>}, L{policy
<clientid_twisted.policy>}, L{store <clientid_twisted.store>} and
L{testing <clientid_twisted.testing>}; modules named C{_name} are the
implementation and may change.  C{server}, C{gateway}, C{web}, C{admin}
and C{probe} are applications built on it.

The main names are importable from this package; they load on first use
(PEP 562), because C{twisted.mail.smtp} installs the default reactor when it
is imported, and importing this package (as the twistd and cred dropins do)
must not pick a reactor before C{twistd --reactor} has.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from clientid_twisted._lazyexports import lazyExports

from clientid_twisted._version import __version__

_PUBLIC = {
    "ClientIdentity": "clientid_twisted._identity",
    "MalformedClientID": "clientid_twisted._identity",
    "parseClientIDArguments": "clientid_twisted._identity",
    "IdentityHasher": "clientid_twisted._fingerprint",
    "IClientIdentifiedCredentials": "clientid_twisted.interfaces",
    "ClientIdentifiedCredentials": "clientid_twisted.cred",
    "identifyCredentials": "clientid_twisted.cred",
    "TemporaryAuthenticationFailure": "clientid_twisted._errors",
    "ClientIDESMTPMixin": "clientid_twisted.smtp",
    "ClientIDESMTP": "clientid_twisted.smtp",
    "ClientIDESMTPFactory": "clientid_twisted.smtp",
    "ClientIDESMTPSender": "clientid_twisted.smtp",
    "ClientIDESMTPSenderFactory": "clientid_twisted.smtp",
    "ClientIDIMAP4ServerMixin": "clientid_twisted.imap",
    "ClientIDIMAP4Server": "clientid_twisted.imap",
    "ClientIDIMAP4Factory": "clientid_twisted.imap",
    "ClientIDIMAP4Client": "clientid_twisted.imap",
    "loginWithClientID": "clientid_twisted.imap",
}

__all__ = [
    "ClientIDESMTP",
    "ClientIDESMTPFactory",
    "ClientIDESMTPMixin",
    "ClientIDESMTPSender",
    "ClientIDESMTPSenderFactory",
    "ClientIDIMAP4Client",
    "ClientIDIMAP4Factory",
    "ClientIDIMAP4Server",
    "ClientIDIMAP4ServerMixin",
    "ClientIdentifiedCredentials",
    "ClientIdentity",
    "IClientIdentifiedCredentials",
    "IdentityHasher",
    "MalformedClientID",
    "TemporaryAuthenticationFailure",
    "identifyCredentials",
    "loginWithClientID",
    "parseClientIDArguments",
    "__version__",
]


__getattr__, __dir__ = lazyExports(__name__, _PUBLIC)


if TYPE_CHECKING:  # what the names are, for type checkers and IDEs
    from clientid_twisted.cred import ClientIdentifiedCredentials, identifyCredentials
    from clientid_twisted._errors import TemporaryAuthenticationFailure
    from clientid_twisted._fingerprint import IdentityHasher
    from clientid_twisted._identity import (
        ClientIdentity,
        MalformedClientID,
        parseClientIDArguments,
    )
    from clientid_twisted.imap import (
        ClientIDIMAP4Client,
        ClientIDIMAP4Factory,
        ClientIDIMAP4Server,
        ClientIDIMAP4ServerMixin,
        loginWithClientID,
    )
    from clientid_twisted.interfaces import IClientIdentifiedCredentials
    from clientid_twisted.smtp import (
        ClientIDESMTP,
        ClientIDESMTPFactory,
        ClientIDESMTPMixin,
        ClientIDESMTPSender,
        ClientIDESMTPSenderFactory,
    )
