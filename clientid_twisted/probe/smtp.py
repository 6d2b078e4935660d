# -*- test-case-name: tests.test_probe -*-
"""
The probe's side of an SMTP conversation: send a command line, read one
whole reply (RFC 5321 section 4.2), start TLS.  Nothing here judges the
replies; L{clientid_twisted.probe.smtpchecks} does.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass

from clientid_twisted.probe.connection import (
    LineConnection,
    ProbeError,
    ProtocolError,
    Target,
    Unreachable,
)

__all__ = ["SMTPReply", "SMTPSession", "EHLO_NAME"]

EHLO_NAME = b"clientid-probe.invalid"
"""What the probe calls itself in EHLO: a name that cannot be anyone's."""


@dataclass(frozen=True)
class SMTPReply:
    """
    One SMTP reply.

    @ivar code: The three-digit reply code.
    @ivar lines: The text of each line, after the code and separator.
    @ivar raw: The reply as received, line endings included.
    """

    code: int
    lines: tuple[bytes, ...]
    raw: bytes

    @property
    def keywords(self) -> frozenset[bytes]:
        """
        For an EHLO reply: the extension keywords (first word of every line
        but the greeting line), upper-cased.
        """
        return frozenset(
            line.split(None, 1)[0].upper() for line in self.lines[1:] if line.strip()
        )

    def lists(self, keyword: bytes) -> bool:
        """
        Whether this EHLO reply lists C{keyword}.
        """
        return keyword.upper() in self.keywords

    @property
    def extensionLines(self) -> bytes:
        """
        For an EHLO reply: the raw lines after the greeting line, which are
        what an advertisement check is about.
        """
        return b"".join(self.raw.splitlines(keepends=True)[1:])


class SMTPSession:
    """
    One SMTP connection, greeting read.

    @ivar greeting: The server's greeting reply.
    @ivar lastEHLO: The reply to the latest EHLO, or L{None}.
    """

    lastEHLO: SMTPReply | None = None

    def __init__(self, connection: LineConnection) -> None:
        self.connection = connection
        self.greeting = self.readReply()

    @classmethod
    def open(cls, target: Target) -> SMTPSession:
        """
        Connect (with TLS at once for an implicit-TLS target) and read the
        greeting.

        @raise Unreachable: No connection, or the server refuses service.
        """
        connection = LineConnection.open(target)
        try:
            session = cls(connection)
        except ProbeError as e:
            connection.close()
            raise Unreachable(f"no SMTP greeting from {target.describe()}: {e}") from None
        if session.greeting.code != 220:
            connection.close()
            raise Unreachable(
                f"{target.describe()} refuses service: {session.greeting.raw!r}"
            )
        return session

    @property
    def encrypted(self) -> bool:
        return self.connection.encrypted

    def readReply(self) -> SMTPReply:
        """
        Read one reply: lines C{NNN-text} up to the line C{NNN text}.
        """
        raw = b""
        lines = []
        code = None
        while True:
            line = self.connection.readLine()
            raw += line
            text = line.rstrip(b"\r\n")
            if len(text) < 3 or not text[:3].isdigit() or text[3:4] not in (b"", b" ", b"-"):
                raise ProtocolError(f"not an SMTP reply line: {line!r}")
            if code is None:
                code = int(text[:3])
            lines.append(text[4:])
            if text[3:4] != b"-":
                return SMTPReply(code, tuple(lines), raw)

    def send(self, data: bytes) -> None:
        """
        Write raw bytes (several command lines at once, for the injection
        check).
        """
        self.connection.send(data)

    def command(self, line: bytes) -> SMTPReply:
        """
        Send one command line and read its reply.
        """
        self.connection.send(line + b"\r\n")
        return self.readReply()

    def ehlo(self, name: bytes = EHLO_NAME) -> SMTPReply:
        """
        Send EHLO; the reply is also kept as C{lastEHLO}.
        """
        self.lastEHLO = self.command(b"EHLO " + name)
        return self.lastEHLO

    def startTLS(self) -> SMTPReply:
        """
        Send STARTTLS; on C{220}, run the handshake.

        @return: The reply to STARTTLS.
        @raise Unreachable: When the handshake fails.
        """
        reply = self.command(b"STARTTLS")
        if reply.code == 220:
            self.connection.startTLS()
        return reply

    def authPlain(self, user: str, password: str) -> SMTPReply:
        """
        C{AUTH PLAIN} with an initial response (RFC 4954).
        """
        response = base64.b64encode(
            b"\0" + user.encode("utf-8") + b"\0" + password.encode("utf-8")
        )
        return self.command(b"AUTH PLAIN " + response)

    def authLogin(self, user: str, password: str) -> SMTPReply:
        """
        C{AUTH LOGIN}, answering the two C{334} prompts.
        """
        reply = self.command(b"AUTH LOGIN")
        for secret in (user, password):
            if reply.code != 334:
                return reply
            reply = self.command(base64.b64encode(secret.encode("utf-8")))
        return reply

    def close(self) -> None:
        """
        Say QUIT (best effort) and drop the connection.
        """
        if self.connection.usable:
            try:
                self.command(b"QUIT")
            except ProbeError:
                pass
        self.connection.close()
