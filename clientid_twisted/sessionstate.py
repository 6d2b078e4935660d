# -*- test-case-name: tests.test_smtp_server,tests.test_imap_server -*-
"""
What the SMTP and IMAP CLIENTID mixins ask of their connection alike:
whether it is encrypted, who is at the other end, and the fingerprint
their log lines show for an identity.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.interfaces import ISSLTransport

from clientid_twisted.fingerprint import IdentityHasher
from clientid_twisted.identity import ClientIdentity

__all__ = ["ClientIDSessionMixin"]


class ClientIDSessionMixin:
    """
    @ivar identityHasher: Gives the keyed fingerprints that logs show
        instead of tokens; an ephemeral one is made on first use if none
        was given.
    """

    identityHasher: IdentityHasher | None = None
    transport: Any

    def isEncrypted(self) -> bool:
        """
        Whether this connection runs over TLS (STARTTLS done, or implicit).
        """
        return ISSLTransport.providedBy(self.transport)

    def _fingerprint(self, identity: ClientIdentity) -> str:
        if self.identityHasher is None:
            self.identityHasher = IdentityHasher.ephemeral()
        return self.identityHasher.fingerprint(identity)

    def _peerHost(self) -> str:
        peer = self.transport.getPeer()
        return str(getattr(peer, "host", peer))
