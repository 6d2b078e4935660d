# -*- test-case-name: tests.test_submission -*-
"""
The mail submission protocol that C{twistd clientid-mail} runs (RFC 6409):
L{ClientIDESMTP} plus the rules a submission server needs and Twisted's
ESMTP leaves to its users: AUTH only over TLS, MAIL only after AUTH, NOOP,
and no Nagle delay.
"""

from __future__ import annotations

from typing import Any

from clientid_twisted.server.net import setNoDelay
from clientid_twisted.smtp import ClientIDESMTP, ClientIDESMTPFactory

__all__ = ["SubmissionESMTP", "SubmissionFactory"]


class SubmissionESMTP(ClientIDESMTP):
    """
    An authenticated-submission ESMTP server with CLIENTID.
    """

    def connectionMade(self) -> None:
        # Without TCP_NODELAY each reply after a small write waits on the
        # peer's delayed ACK: about 40 ms a round trip over loopback.
        setNoDelay(self.transport)
        super().connectionMade()

    def greeting(self) -> bytes:
        return self.host + b" ESMTP submission ready"

    def extensions(self) -> dict[bytes, Any]:
        ext = super().extensions()
        if not self.isEncrypted():
            # RFC 4954 section 4: do not offer plaintext password mechanisms
            # on an unencrypted connection.
            ext.pop(b"AUTH", None)
        ext[b"8BITMIME"] = None
        return ext

    def ext_AUTH(self, rest: bytes) -> None:
        if not self.isEncrypted():
            self._authSeen = True
            self.sendCode(538, b"5.7.11 Encryption required for requested authentication mechanism")
            return
        super().ext_AUTH(rest)

    def do_MAIL(self, rest: bytes) -> None:
        if not self.authenticated:
            self.sendCode(530, b"5.7.0 Authentication required")
            return
        super().do_MAIL(rest)

    def do_NOOP(self, rest: bytes) -> None:
        self.sendCode(250, b"OK")

    def do_VRFY(self, rest: bytes) -> None:
        # RFC 5321 section 3.5.3: 252 when we will not verify.
        self.sendCode(252, b"Cannot VRFY user, but will accept message and attempt delivery")


class SubmissionFactory(ClientIDESMTPFactory):
    """
    Builds L{SubmissionESMTP} protocols.
    """

    protocol = SubmissionESMTP
