# -*- test-case-name: tests.test_identity -*-
"""
The client identity a CLIENTID command presents, and the grammar that both
drafts share.

The ABNF (SMTP draft, section 5; IMAP draft, section 3)::

    client-id      = "CLIENTID" SP client-id-type SP client-id-token
    client-id-type = 1*16 (ALPHA / DIGIT / "-")
    client-id-token = 1*128 VCHAR

This module is pure: no I/O, no Twisted.  Both protocol mixins feed it the
raw argument bytes (never a line Twisted has already split or stripped).
"""

from __future__ import annotations

import re

from attrs import field, frozen

__all__ = [
    "ClientIdentity",
    "MalformedClientID",
    "parseClientIDArguments",
    "MAX_TYPE_LENGTH",
    "MAX_TOKEN_LENGTH",
]

MAX_TYPE_LENGTH = 16
MAX_TOKEN_LENGTH = 128

_TYPE = re.compile(r"[A-Za-z0-9-]{1,%d}" % (MAX_TYPE_LENGTH,))
_TOKEN = re.compile(r"[\x21-\x7e]{1,%d}" % (MAX_TOKEN_LENGTH,))
_ARGUMENTS = re.compile(
    rb"([A-Za-z0-9-]{1,%d}) ([\x21-\x7e]{1,%d})" % (MAX_TYPE_LENGTH, MAX_TOKEN_LENGTH)
)


class MalformedClientID(ValueError):
    """
    The arguments of a CLIENTID command do not match the drafts' grammar.

    The message says which part is wrong but never repeats the token.
    """


def _validateType(instance: object, attribute: object, value: str) -> None:
    if not isinstance(value, str) or _TYPE.fullmatch(value) is None:
        raise MalformedClientID(
            "client-id-type must be 1-16 ASCII letters, digits or '-'"
        )


def _validateToken(instance: object, attribute: object, value: str) -> None:
    if not isinstance(value, str) or _TOKEN.fullmatch(value) is None:
        raise MalformedClientID(
            "client-id-token must be 1-128 printable US-ASCII characters"
        )


def _redacted(token: str) -> str:
    return "<redacted>"


@frozen
class ClientIdentity:
    """
    A validated (type, token) pair.

    Equality and hashing fold the case of C{type} (C{uuid} and C{UUID} are one
    device) and compare C{token} exactly; C{type} keeps the client's spelling
    for display.  The token never appears in C{repr}, so an identity that
    slips into a log line or a traceback does not leak it.

    @ivar type: The client-id-type as the client spelled it.
    @ivar token: The client-id-token, 1-128 VCHAR.
    """

    type: str = field(validator=_validateType, eq=str.upper)
    token: str = field(validator=_validateToken, repr=_redacted)

    @property
    def typeKey(self) -> str:
        """
        The type folded to upper case, for use as a key (stores,
        configuration): types compare without regard to case, so C{uuid}
        and C{UUID} are one.
        """
        return self.type.upper()

    def toArguments(self) -> bytes:
        """
        Format this identity as the arguments of a CLIENTID command.
        """
        return b"%s %s" % (self.type.encode("ascii"), self.token.encode("ascii"))


def parseClientIDArguments(arguments: bytes) -> ClientIdentity:
    """
    Parse the raw bytes following C{"CLIENTID "} on a command line.

    Exactly one space separates type and token and nothing may follow the
    token: a tab, a second space, a trailing space, a NUL or any byte outside
    US-ASCII makes the command malformed.

    @param arguments: The raw bytes after the command name and its single
        space, without the line terminator.
    @raise MalformedClientID: If they do not match the grammar.
    """
    match = _ARGUMENTS.fullmatch(arguments)
    if match is None:
        raise MalformedClientID("expected: CLIENTID SP client-id-type SP token")
    return ClientIdentity(match.group(1).decode("ascii"), match.group(2).decode("ascii"))
