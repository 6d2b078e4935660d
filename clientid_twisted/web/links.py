# -*- test-case-name: tests.test_web_links -*-
"""
Signed, expiring capabilities carried by the links in notices.

A link names one action (approve a device, disown it, sign in) on one
account and one device, and expires.  It is a capability: whoever holds it
may do that one thing, once, which is why it only ever travels inside the
account's own INBOX.  It is signed with HMAC-SHA256 under a key of its
own, derived from the installation's identity key with a fixed label, so
every frontend that shares the identity key (through Redis, for example)
checks the same links, and the link key never hashes an identity.

Single use is kept by the store (a marker per link id, see
L{clientid_twisted.web.selfservice}); this module only signs and checks.
The format is small and ours (a version, the fields joined by NUL,
base64url, a truncated MAC) because nothing here needs JWT's algorithm
choice, which has been the source of its best-known vulnerabilities.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import time
from typing import Callable

from attrs import field, frozen

__all__ = [
    "APPROVE",
    "DISOWN",
    "SIGN_IN",
    "ACTIONS",
    "InvalidLink",
    "LinkClaim",
    "LinkMaker",
    "LinkSigner",
    "deriveLinkKey",
]

APPROVE = "approve"
"""Let the device log in to the account."""
DISOWN = "disown"
""""This wasn't me": revoke the device."""
SIGN_IN = "sign-in"
"""Open a session on the device page."""
ACTIONS = (APPROVE, DISOWN, SIGN_IN)

_VERSION = "1"
_MAC_BYTES = 16
_LABEL = b"clientid-twisted web link key v1"


def deriveLinkKey(identityKey: bytes) -> bytes:
    """
    The link key of an installation: its own key, derived from the
    identity key so it is shared exactly where that key is.
    """
    return hmac.new(identityKey, _LABEL, hashlib.sha256).digest()


class InvalidLink(ValueError):
    """
    A link that does not grant what it is used for.

    @ivar reason: C{"malformed"}, C{"forged"}, C{"expired"},
        C{"wrong-action"}, C{"used"} or C{"void"}: for the log and the
        page, never a secret.
    """

    def __init__(self, reason: str) -> None:
        ValueError.__init__(self, reason)
        self.reason = reason


@frozen
class LinkClaim:
    """
    What a valid link grants.

    @ivar linkID: Random, unique per link: the single-use marker's name.
    @ivar fingerprint: The device's fingerprint, or C{""} for a sign-in.
    @ivar issued: When the link was made (seconds since the epoch).
    @ivar expires: When it stops working.
    """

    action: str
    account: str
    fingerprint: str
    issued: float
    expires: float
    linkID: str


@frozen
class LinkSigner:
    """
    Makes and checks links' capabilities.

    @ivar key: The link key (L{deriveLinkKey}).
    @ivar ttl: How long a new link works, in seconds.
    """

    key: bytes = field(repr=False)
    ttl: float = 86400.0

    def _mac(self, payload: bytes) -> bytes:
        return hmac.new(self.key, payload, hashlib.sha256).digest()[:_MAC_BYTES]

    def sign(self, action: str, account: str, fingerprint: str, now: float) -> str:
        """
        A capability for C{action} on C{account}'s device C{fingerprint}.
        """
        if action not in ACTIONS:
            raise ValueError(f"unknown link action {action!r}")
        linkID = binascii.hexlify(os.urandom(16)).decode("ascii")
        fields = [_VERSION, action, account, fingerprint, str(int(now)), str(int(now + self.ttl)), linkID]
        if any("\x00" in f for f in fields):
            raise ValueError("link fields must not contain NUL")
        payload = "\x00".join(fields).encode("utf-8")
        token = payload + self._mac(payload)
        return base64.urlsafe_b64encode(token).decode("ascii").rstrip("=")

    def verify(self, token: str, action: str, now: float) -> LinkClaim:
        """
        What C{token} grants, if it is ours, unexpired and for C{action}.

        @raise InvalidLink: Otherwise.
        """
        try:
            raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        except (binascii.Error, ValueError):
            raise InvalidLink("malformed") from None
        if len(raw) <= _MAC_BYTES or len(token) > 2048:
            raise InvalidLink("malformed")
        payload, mac = raw[:-_MAC_BYTES], raw[-_MAC_BYTES:]
        if not hmac.compare_digest(mac, self._mac(payload)):
            raise InvalidLink("forged")
        fields = payload.decode("utf-8").split("\x00")
        if len(fields) != 7 or fields[0] != _VERSION:
            raise InvalidLink("malformed")
        _, kind, account, fingerprint, issued, expires, linkID = fields
        if kind != action:
            raise InvalidLink("wrong-action")
        if now >= int(expires):
            raise InvalidLink("expired")
        return LinkClaim(kind, account, fingerprint, float(issued), float(expires), linkID)


@frozen
class LinkMaker:
    """
    The links of the self-service site at C{baseURL}: what notices carry.

    @ivar clock: Gives the time links are made at.
    """

    signer: LinkSigner
    baseURL: str
    clock: Callable[[], float] = time.time

    def _url(self, path: str, token: str) -> str:
        return f"{self.baseURL.rstrip('/')}{path}?t={token}"

    def deviceLinks(self, account: str, fingerprint: str) -> tuple[str, str]:
        """
        The Approve and "This wasn't me" links for one device of an
        account.
        """
        now = self.clock()
        return (
            self._url("/link/approve", self.signer.sign(APPROVE, account, fingerprint, now)),
            self._url("/link/disown", self.signer.sign(DISOWN, account, fingerprint, now)),
        )

    def signInLink(self, account: str) -> str:
        """
        A link that opens a device-page session for C{account}.
        """
        return self._url("/signin", self.signer.sign(SIGN_IN, account, "", self.clock()))
