"""
Tests for L{clientid_twisted._identity}: the drafts' CLIENTID grammar.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from twisted.trial.unittest import SynchronousTestCase

from clientid_twisted._identity import (
    ClientIdentity,
    MalformedClientID,
    parseClientIDArguments,
)

VCHAR = "".join(chr(c) for c in range(0x21, 0x7F))
TYPE_CHARS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-"

types = st.text(alphabet=TYPE_CHARS, min_size=1, max_size=16)
tokens = st.text(alphabet=VCHAR, min_size=1, max_size=128)


class ParseTests(SynchronousTestCase):
    """
    L{parseClientIDArguments} takes exactly C{type SP token}.
    """

    def assertMalformed(self, arguments: bytes) -> None:
        self.assertRaises(MalformedClientID, parseClientIDArguments, arguments)

    def test_valid(self) -> None:
        identity = parseClientIDArguments(b"UUID 23bf83be-aad7-46aa-9e0f-39191ccf402f")
        self.assertEqual(identity.type, "UUID")
        self.assertEqual(identity.token, "23bf83be-aad7-46aa-9e0f-39191ccf402f")

    def test_typeLengthBoundaries(self) -> None:
        """
        The type is 1 to 16 characters: 0 and 17 are malformed.
        """
        self.assertMalformed(b" token")
        self.assertEqual(parseClientIDArguments(b"A token").type, "A")
        self.assertEqual(parseClientIDArguments(b"A" * 16 + b" token").type, "A" * 16)
        self.assertMalformed(b"A" * 17 + b" token")

    def test_tokenLengthBoundaries(self) -> None:
        """
        The token is 1 to 128 characters: 0 and 129 are malformed.
        """
        self.assertMalformed(b"UUID ")
        self.assertMalformed(b"UUID")
        self.assertEqual(parseClientIDArguments(b"UUID x").token, "x")
        self.assertEqual(parseClientIDArguments(b"UUID " + b"x" * 128).token, "x" * 128)
        self.assertMalformed(b"UUID " + b"x" * 129)

    def test_everyVCHARInToken(self) -> None:
        """
        Every printable US-ASCII character is allowed in the token, alone and
        all together.
        """
        for c in VCHAR:
            self.assertEqual(parseClientIDArguments(b"T " + c.encode()).token, c)
        self.assertEqual(
            parseClientIDArguments(b"T " + VCHAR.encode()).token, VCHAR
        )

    def test_typeCharacters(self) -> None:
        """
        Only letters, digits and "-" make a type; the drafts' own example
        C{DEVICE_ID} breaks that and is malformed (docs/spec-notes.md).
        """
        self.assertEqual(parseClientIDArguments(b"TBIRD-UUID x").type, "TBIRD-UUID")
        for bad in b"_.:/+ \"(":
            self.assertMalformed(b"DEVICE" + bytes([bad]) + b"ID x")
        self.assertMalformed(b"DEVICE_ID x")

    def test_whitespace(self) -> None:
        """
        Exactly one space between type and token, nothing after the token.
        """
        self.assertMalformed(b"UUID  x")
        self.assertMalformed(b"UUID\tx")
        self.assertMalformed(b"UUID x ")
        self.assertMalformed(b" UUID x")
        self.assertMalformed(b"UUID x y")
        self.assertMalformed(b"UUID x\r")
        self.assertMalformed(b"UUID x\n")

    def test_controlAndNonASCII(self) -> None:
        """
        NUL, DEL, other controls and bytes over 0x7F are malformed anywhere.
        """
        for bad in (b"\x00", b"\x7f", b"\x01", b"\x80", b"\xc3\xa9", b"\xff"):
            self.assertMalformed(b"UUID a" + bad + b"b")
            self.assertMalformed(b"UU" + bad + b"ID ab")

    @settings(max_examples=300)
    @given(types, tokens)
    def test_roundTrip(self, type_: str, token: str) -> None:
        """
        Any valid identity formats to arguments that parse back to it.
        """
        identity = ClientIdentity(type_, token)
        parsed = parseClientIDArguments(identity.toArguments())
        self.assertEqual(parsed, identity)
        self.assertEqual(parsed.type, type_)
        self.assertEqual(parsed.token, token)

    @settings(max_examples=1000)
    @given(
        st.one_of(
            st.binary(max_size=160),
            st.tuples(
                st.text(alphabet=TYPE_CHARS + "_ \t\x00", max_size=18),
                st.sampled_from([" ", "  ", "\t", ""]),
                st.text(alphabet=VCHAR + " \t\x00\x7f\x80\xe9", max_size=131),
            ).map(lambda parts: "".join(parts).encode("latin-1")),
        )
    )
    def test_matchesReferenceGrammar(self, data: bytes) -> None:
        """
        For any bytes, parsing succeeds exactly when a plain reading of the
        ABNF accepts them, and then formats back to the same bytes: nothing
        is normalised away.
        """
        head, sep, tail = data.partition(b" ")
        expected = (
            sep == b" "
            and 1 <= len(head) <= 16
            and all(chr(c) in TYPE_CHARS for c in head)
            and 1 <= len(tail) <= 128
            and all(0x21 <= c <= 0x7E for c in tail)
        )
        try:
            identity = parseClientIDArguments(data)
        except MalformedClientID:
            self.assertFalse(expected, data)
        else:
            self.assertTrue(expected, data)
            self.assertEqual(identity.toArguments(), data)


class ClientIdentityTests(SynchronousTestCase):
    """
    L{ClientIdentity} compares types case-insensitively, tokens exactly,
    and hides the token.
    """

    def test_typeCaseFolded(self) -> None:
        a = ClientIdentity("uuid", "tok")
        b = ClientIdentity("UUID", "tok")
        self.assertEqual(a, b)
        self.assertEqual(hash(a), hash(b))
        self.assertEqual(a.typeKey, "UUID")
        self.assertEqual(a.type, "uuid")

    def test_tokenExact(self) -> None:
        self.assertNotEqual(ClientIdentity("UUID", "tok"), ClientIdentity("UUID", "TOK"))

    def test_reprHidesToken(self) -> None:
        identity = ClientIdentity("UUID", "s3cr3t-device-token")
        self.assertNotIn("s3cr3t", repr(identity))
        self.assertNotIn("s3cr3t", str(identity))
        self.assertIn("UUID", repr(identity))

    def test_constructorValidates(self) -> None:
        """
        An identity made in code obeys the same grammar as one parsed.
        """
        self.assertRaises(MalformedClientID, ClientIdentity, "DEVICE_ID", "x")
        self.assertRaises(MalformedClientID, ClientIdentity, "UUID", "has space")
        self.assertRaises(MalformedClientID, ClientIdentity, "UUID", "")
        self.assertRaises(MalformedClientID, ClientIdentity, "", "x")
        self.assertRaises(MalformedClientID, ClientIdentity, "UUID", "x" * 129)

    def test_errorNeverRepeatsToken(self) -> None:
        """
        The error message names the rule, not the offending token.
        """
        try:
            ClientIdentity("UUID", "leaky token")
        except MalformedClientID as e:
            self.assertNotIn("leaky", str(e))
        else:
            self.fail("no error")
