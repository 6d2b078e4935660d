"""
Tests for L{clientid_twisted._fingerprint}: keyed hashes of identities.
"""

from __future__ import annotations

import hashlib
import hmac

from twisted.trial.unittest import SynchronousTestCase

from clientid_twisted._fingerprint import FINGERPRINT_LENGTH, IdentityHasher
from clientid_twisted._identity import ClientIdentity

LAPTOP = ClientIdentity("UUID", "5b0e0c1e-laptop")


class IdentityHasherTests(SynchronousTestCase):
    def test_digestIsHMAC(self) -> None:
        """
        The digest is HMAC-SHA256 of the case-folded type, NUL and the
        token, under the key; the fingerprint its first 16 hex digits.
        """
        hasher = IdentityHasher(b"k" * 32)
        expected = hmac.new(b"k" * 32, b"UUID\x005b0e0c1e-laptop", hashlib.sha256).hexdigest()
        self.assertEqual(hasher.digest(LAPTOP), expected)
        self.assertEqual(hasher.fingerprint(LAPTOP), expected[:FINGERPRINT_LENGTH])

    def test_typeCaseFolded(self) -> None:
        hasher = IdentityHasher(b"k" * 32)
        self.assertEqual(
            hasher.digest(ClientIdentity("uuid", "5b0e0c1e-laptop")), hasher.digest(LAPTOP)
        )
        self.assertNotEqual(
            hasher.digest(ClientIdentity("UUID", "5B0E0C1E-LAPTOP")), hasher.digest(LAPTOP)
        )

    def test_keyed(self) -> None:
        """
        Another key, an unrelated fingerprint; a short key is refused; the
        key is not in the repr.
        """
        self.assertNotEqual(
            IdentityHasher(b"a" * 32).fingerprint(LAPTOP), IdentityHasher(b"b" * 32).fingerprint(LAPTOP)
        )
        self.assertRaises(ValueError, IdentityHasher, b"short")
        self.assertNotIn("kkkk", repr(IdentityHasher(b"k" * 32)))

    def test_ephemeral(self) -> None:
        self.assertNotEqual(IdentityHasher.ephemeral().key, IdentityHasher.ephemeral().key)
