# -*- test-case-name: tests.test_fingerprint -*-
"""
Keyed hashes of client identities.

Tokens are secrets of a kind (the second factor), so nothing we write down,
log or send elsewhere holds one in clear: stores keep the full keyed hash,
logs, alerts and admin listings show its short prefix, the fingerprint.  The
key is per installation, so a fingerprint means nothing to anyone without it
and the same token gives unrelated fingerprints on two installations.
"""

from __future__ import annotations

import hmac
import os

from attrs import field, frozen

from clientid_twisted._identity import ClientIdentity

__all__ = ["IdentityHasher", "FINGERPRINT_LENGTH"]

FINGERPRINT_LENGTH = 16
"""Hex digits of the keyed hash shown as a fingerprint (64 bits)."""


@frozen
class IdentityHasher:
    """
    HMAC-SHA256 of a client identity under an installation secret.

    @ivar key: The secret; at least 16 bytes.
    """

    key: bytes = field(repr=False)

    @key.validator
    def _checkKey(self, attribute: object, value: bytes) -> None:
        if not isinstance(value, bytes) or len(value) < 16:
            raise ValueError("the identity hashing key must be at least 16 bytes")

    @classmethod
    def ephemeral(cls) -> "IdentityHasher":
        """
        A hasher with a random key that lives as long as the process: for
        embedders that configure no key, fingerprints still hide the token
        but do not match across restarts.
        """
        return cls(os.urandom(32))

    def digest(self, identity: ClientIdentity) -> str:
        """
        The full keyed hash, hex: what a store keeps instead of the token.

        The type takes part case-folded, so C{uuid} and C{UUID} give one hash.
        """
        message = b"%s\x00%s" % (
            identity.typeKey.encode("ascii"),
            identity.token.encode("ascii"),
        )
        return hmac.digest(self.key, message, "sha256").hex()

    def fingerprint(self, identity: ClientIdentity) -> str:
        """
        The short form shown in logs, alerts and listings.
        """
        return self.digest(identity)[:FINGERPRINT_LENGTH]
