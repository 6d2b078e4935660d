# -*- test-case-name: tests.test_probe -*-
"""
The probe's side of an IMAP conversation: tagged commands, their tagged
result with the untagged lines before it, a continuation request noticed
rather than waited through, STARTTLS.  Nothing here judges the replies;
L{clientid_twisted.probe.imapchecks} does.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from clientid_twisted.probe.connection import (
    LineConnection,
    ProbeError,
    ProtocolError,
    Target,
    Unreachable,
)

__all__ = ["IMAPResponse", "IMAPSession", "quoted"]

_LITERAL = re.compile(rb"\{(\d+)\+?\}\r?\n$")
_CAPABILITY_CODE = re.compile(rb"\[CAPABILITY ([^\]]*)\]", re.IGNORECASE)


@dataclass(frozen=True)
class IMAPResponse:
    """
    What a command got: its tagged result, or a continuation request.

    @ivar tag: The command's tag.
    @ivar status: C{b"OK"}, C{b"NO"} or C{b"BAD"} (upper-cased); L{None}
        when the server asked for a continuation (C{+}) instead.
    @ivar text: The tagged line after the status (or the C{+} line's text).
    @ivar untagged: The untagged lines that came before it.
    @ivar raw: Everything received for the command, line endings included.
    """

    tag: bytes
    status: bytes | None
    text: bytes
    untagged: tuple[bytes, ...]
    raw: bytes

    @property
    def continuation(self) -> bool:
        return self.status is None

    @property
    def afterTag(self) -> bytes:
        """
        The tagged line without its tag: what an unknown command's refusal
        is compared on.
        """
        return (self.status or b"+") + (b" " + self.text if self.text else b"")

    @property
    def capabilities(self) -> frozenset[bytes] | None:
        """
        The capabilities an untagged C{CAPABILITY} line lists, upper-cased;
        L{None} when there is no such line.
        """
        for line in self.untagged:
            words = line.split()
            if len(words) >= 2 and words[0] == b"*" and words[1].upper() == b"CAPABILITY":
                return frozenset(word.upper() for word in words[2:])
        return None

    @property
    def capabilityLine(self) -> bytes:
        for line in self.untagged:
            words = line.split(None, 2)
            if len(words) >= 2 and words[1].upper() == b"CAPABILITY":
                return line + b"\r\n"
        return self.raw


def quoted(value: str) -> bytes:
    """
    An IMAP quoted string (RFC 3501 section 4.3) for a LOGIN argument.

    @raise ValueError: For characters a quoted string cannot carry.
    """
    data = value.encode("utf-8")
    if b"\r" in data or b"\n" in data or b"\0" in data:
        raise ValueError("CR, LF and NUL cannot be sent in a quoted string")
    return b'"' + data.replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"'


def greetingCapabilities(greeting: bytes) -> frozenset[bytes] | None:
    """
    The capabilities in a greeting's C{[CAPABILITY ...]} response code, or
    L{None} when it has none.
    """
    match = _CAPABILITY_CODE.search(greeting)
    if match is None:
        return None
    return frozenset(word.upper() for word in match.group(1).split())


class IMAPSession:
    """
    One IMAP connection, greeting read.

    @ivar greeting: The greeting line, as received.
    @ivar lastCapability: The response to the latest CAPABILITY, or L{None}.
    """

    lastCapability: IMAPResponse | None = None

    def __init__(self, connection: LineConnection) -> None:
        self.connection = connection
        self._counter = 0
        self.greeting = connection.readLine()

    @classmethod
    def open(cls, target: Target) -> IMAPSession:
        """
        Connect (with TLS at once for an implicit-TLS target) and read the
        greeting.

        @raise Unreachable: No connection, or the server says BYE.
        """
        connection = LineConnection.open(target)
        try:
            session = cls(connection)
        except ProbeError as e:
            connection.close()
            raise Unreachable(f"no IMAP greeting from {target.describe()}: {e}") from None
        if not session.greeting.upper().startswith((b"* OK", b"* PREAUTH")):
            connection.close()
            raise Unreachable(
                f"{target.describe()} refuses service: {session.greeting!r}"
            )
        return session

    @property
    def encrypted(self) -> bool:
        return self.connection.encrypted

    @property
    def greetingCapabilities(self) -> frozenset[bytes] | None:
        return greetingCapabilities(self.greeting)

    def nextTag(self) -> bytes:
        self._counter += 1
        return b"p%d" % (self._counter,)

    def send(self, data: bytes) -> None:
        """
        Write raw bytes (several command lines at once, for the injection
        check).
        """
        self.connection.send(data)

    def command(self, text: bytes, tag: bytes | None = None) -> IMAPResponse:
        """
        Send C{tag SP text} and read up to its tagged result, or to a
        continuation request.
        """
        tag = self.nextTag() if tag is None else tag
        self.connection.send(tag + b" " + text + b"\r\n")
        return self.readResponse(tag)

    def readResponse(self, tag: bytes) -> IMAPResponse:
        """
        Read untagged lines up to the result tagged C{tag}, or up to a
        continuation request.  Literals in untagged lines are read through.
        """
        raw = b""
        untagged: list[bytes] = []
        while True:
            line = self.connection.readLine()
            raw += line
            if line.startswith(b"+"):
                return IMAPResponse(tag, None, line[1:].strip(), tuple(untagged), raw)
            if line.startswith(tag + b" "):
                rest = line[len(tag) + 1 :].rstrip(b"\r\n")
                status, _, text = rest.partition(b" ")
                if status.upper() not in (b"OK", b"NO", b"BAD"):
                    raise ProtocolError(f"not an IMAP result: {line!r}")
                return IMAPResponse(tag, status.upper(), text, tuple(untagged), raw)
            if not line.startswith(b"*"):
                raise ProtocolError(f"an IMAP response for another tag: {line!r}")
            tail = line
            while (literal := _LITERAL.search(tail)) is not None:
                chunk = self.connection.readExactly(int(literal.group(1)))
                tail = self.connection.readLine()
                raw += chunk + tail
                line += chunk + tail
            untagged.append(line.rstrip(b"\r\n"))

    def capability(self) -> IMAPResponse:
        """
        Send CAPABILITY; the response is also kept as C{lastCapability}.
        """
        self.lastCapability = self.command(b"CAPABILITY")
        return self.lastCapability

    def startTLS(self) -> IMAPResponse:
        """
        Send STARTTLS; on OK, run the handshake.

        @raise Unreachable: When the handshake fails.
        """
        response = self.command(b"STARTTLS")
        if response.status == b"OK":
            self.connection.startTLS()
        return response

    def login(self, user: str, password: str) -> IMAPResponse:
        """
        C{LOGIN} with quoted strings.
        """
        return self.command(b"LOGIN " + quoted(user) + b" " + quoted(password))

    def close(self) -> None:
        """
        Say LOGOUT (best effort) and drop the connection.
        """
        if self.connection.usable:
            try:
                self.command(b"LOGOUT")
            except ProbeError:
                pass
        self.connection.close()
