# -*- test-case-name: tests.test_gateway_smtpbackend -*-
"""
The gateway's side of a conversation with the SMTP submission backend:
greeting, EHLO, optional STARTTLS, C{XCLIENT} with the client's address
and EHLO name when the backend offers it, C{AUTH PLAIN} with the user's
credentials,
and then the client's mail transactions, one command and one reply at a
time, the replies kept as the backend's exact bytes.

Written on a bare L{LineOnlyReceiver} rather than Twisted's
C{ESMTPClient}: that class runs a whole sending conversation of its own
(it builds MAIL/RCPT/DATA from an C{IMessage}), while the gateway needs to
pass the client's own commands through and hand the backend's replies
back unchanged.
"""

from __future__ import annotations

import base64
import re
from typing import Any

from twisted.cred.error import UnauthorizedLogin
from twisted.internet import defer
from twisted.internet.protocol import Factory
from twisted.protocols.basic import LineOnlyReceiver

from clientid_twisted.gateway.backend import (
    Backend,
    BackendConnection,
    BackendSession,
    BackendUnavailable,
    printable,
)

__all__ = [
    "BackendSMTPProtocol",
    "BackendSMTPSession",
    "Reply",
    "loginToSMTPBackend",
    "xclientCommands",
    "xtext",
]

_REPLY_LINE = re.compile(rb"([2-5][0-9][0-9])([ -])")
_MAX_REPLY = 64 * 1024
"""Longest reply (all its lines) taken from the backend."""

_XCLIENT_MAX_LINE = 510
"""Longest XCLIENT command line, without its CRLF: SMTP's 512 octets
(Postfix's XCLIENT_README: split the attributes over several commands
rather than exceed it)."""

_XCLIENT_MAX_HELO = 255
"""Longest EHLO name Postfix takes in C{XCLIENT HELO=} (a host name's
limit; a longer one is refused with C{501 ... attribute value too long})."""


class Reply:
    """
    One complete reply of the backend.

    @ivar code: Its three-digit code.
    @ivar raw: Its exact bytes, every line with its CRLF: what the
        client is sent.
    """

    def __init__(self, code: int, raw: bytes) -> None:
        self.code = code
        self.raw = raw

    def lines(self) -> list[bytes]:
        """
        The text of each line, after the code and separator.
        """
        return [line[4:] for line in self.raw.split(b"\r\n") if line]

    def keywords(self) -> dict[bytes, list[bytes]]:
        """
        An EHLO reply's extensions: keyword (upper case) to parameters.
        """
        extensions: dict[bytes, list[bytes]] = {}
        for line in self.lines()[1:]:
            words = line.split()
            if words:
                extensions[words[0].upper()] = words[1:]
        return extensions

    def __repr__(self) -> str:
        return f"<Reply {self.raw[:200]!r}>"


def xtext(value: bytes) -> bytes:
    """
    C{value} as RFC 3461 xtext, the encoding of C{XCLIENT} values.

    (Twisted's C{xtext_encode} compares bytes with C{"+"} and C{"="} and
    so leaves them unencoded.)
    """
    return b"".join(
        b"+%02X" % (byte,) if byte in b"+=" or not 33 <= byte <= 126 else bytes((byte,))
        for byte in value
    )


class BackendSMTPProtocol(BackendConnection, LineOnlyReceiver):
    """
    One connection to the backend.  Replies go, in order, to the callers
    of L{command} / L{expectReply}; a reply nobody waits for (a C{421}
    before closing) goes to C{unsolicited}.

    @ivar greeting: Fires with the greeting L{Reply}; fails if the backend
        closes first.
    @ivar closed: Fires when the connection is gone.
    @ivar unsolicited: Called with a L{Reply} nobody waited for, or
        L{None} (dropped).
    """

    delimiter = b"\r\n"
    MAX_LENGTH = _MAX_REPLY
    transport: Any

    def __init__(self) -> None:
        self.greeting: defer.Deferred[Reply] = defer.Deferred()
        self.closed: defer.Deferred[None] = defer.Deferred()
        self.unsolicited: Any = None
        self._waiting: list[defer.Deferred[Reply]] = []
        self._lines: list[bytes] = []
        self._size = 0

    def command(self, line: bytes) -> defer.Deferred[Reply]:
        """
        Send one command line (without CRLF); its reply.
        """
        d = self.expectReply()
        self.transport.write(line + b"\r\n")
        return d

    def expectReply(self) -> defer.Deferred[Reply]:
        """
        The next reply not yet promised to anyone (for the reply that ends
        a message body, which is sent with L{write}).
        """
        d: defer.Deferred[Reply] = defer.Deferred()
        if self.closed.called:
            d.errback(BackendUnavailable("the backend closed the connection"))
        else:
            self._waiting.append(d)
        return d

    def write(self, data: bytes) -> None:
        """
        Send bytes as they are (message data).
        """
        self.transport.write(data)

    def lineReceived(self, line: bytes) -> None:
        match = _REPLY_LINE.match(line)
        if match is None and len(line) == 3 and line[:1] in b"2345" and line.isdigit():
            match = _REPLY_LINE.match(line + b" ")
        if match is None:
            self._fail(BackendUnavailable("the backend sent a malformed reply line"))
            return
        self._lines.append(line)
        self._size += len(line) + 2
        if self._size > _MAX_REPLY:
            self._fail(BackendUnavailable("the backend sent an over-long reply"))
            return
        if match.group(2) == b"-":
            return
        reply = Reply(int(match.group(1)), b"".join(part + b"\r\n" for part in self._lines))
        self._lines, self._size = [], 0
        if not self.greeting.called:
            self.greeting.callback(reply)
        elif self._waiting:
            self._waiting.pop(0).callback(reply)
        elif self.unsolicited is not None:
            self.unsolicited(reply)

    def lineLengthExceeded(self, line: bytes) -> None:
        self._fail(BackendUnavailable("the backend sent an over-long reply"))

    def takeWaiting(self) -> list[defer.Deferred[Reply]]:
        waiting, self._waiting = self._waiting, []
        return waiting


class _BackendFactory(Factory):
    protocol = BackendSMTPProtocol
    noisy = False  # no log line per backend connection


_FACTORY = _BackendFactory()


class BackendSMTPSession(BackendSession):
    """
    A backend connection logged in as the user: the avatar of a gateway
    AUTH.

    @ivar protocol: The connection (L{BackendSMTPProtocol}).
    @ivar extensions: The backend's EHLO extensions after the login.
    """

    def __init__(
        self, protocol: BackendSMTPProtocol, extensions: dict[bytes, list[bytes]], username: str
    ) -> None:
        super().__init__(protocol, username)
        self.extensions = extensions


def _expect(reply: Reply, code: int, what: str) -> Reply:
    if reply.code != code:
        raise BackendUnavailable(f"backend answered {what} with {printable(reply.raw)}")
    return reply


def xclientCommands(offered: list[bytes], peer: Any, helo: bytes | None = None) -> list[bytes]:
    """
    The C{XCLIENT} commands that tell the backend who the client is: its
    address, port and protocol, and the name it gave in EHLO, each only if
    the backend offers the attribute, values in xtext.

    One command when it fits in an SMTP line; else, as Postfix's
    XCLIENT_README asks, C{HELO} and C{PROTO} first and C{ADDR} last (once
    C{ADDR} is sent the gateway may no longer be allowed to send more).  A
    name longer than Postfix takes, or too long for a line even encoded
    alone, is left out rather than cut: the backend then sees the
    gateway's own EHLO name.

    @param offered: The attribute names in the backend's C{XCLIENT} EHLO
        line.
    @param peer: The client's address.
    @param helo: The client's EHLO name as it sent it, or L{None}.
    @return: The command lines, without CRLF; none when the backend does
        not take C{ADDR} or the client's address is unknown.
    """
    offer = {attribute.upper() for attribute in offered}
    host = getattr(peer, "host", None)
    port = getattr(peer, "port", None)
    if b"ADDR" not in offer or not isinstance(host, str) or not host:
        return []
    address = [b"ADDR=" + xtext((b"IPV6:" if ":" in host else b"") + host.encode("ascii", "replace"))]
    if isinstance(port, int) and b"PORT" in offer:
        address.append(b"PORT=%d" % (port,))
    greeting = [b"PROTO=ESMTP"] if b"PROTO" in offer else []
    if helo and b"HELO" in offer and len(helo) <= _XCLIENT_MAX_HELO:
        greeting.append(b"HELO=" + xtext(helo))
    whole = b"XCLIENT " + b" ".join(address + greeting)
    if len(whole) <= _XCLIENT_MAX_LINE:
        return [whole]
    first = b"XCLIENT " + b" ".join(greeting)
    if len(first) > _XCLIENT_MAX_LINE:
        return xclientCommands(offered, peer, None)
    return [first, b"XCLIENT " + b" ".join(address)]


async def _introduceClient(
    protocol: BackendSMTPProtocol,
    extensions: dict[bytes, list[bytes]],
    ehlo: bytes,
    peer: Any,
    helo: bytes | None,
) -> dict[bytes, list[bytes]]:
    """
    Tell a backend that offers C{XCLIENT} who the client is.

    Postfix starts the session afresh after each accepted C{XCLIENT} (a
    new C{220} greeting).  When the client's EHLO name went with it
    (C{HELO=}), that name stands for the session's greeting, so no EHLO
    follows: the gateway's own would replace it in Postfix's logs,
    C{Received:} line and HELO restrictions.  Otherwise the gateway greets
    again with its own EHLO.  A backend that refuses the C{HELO=} value is
    asked again without it: the client's address matters more.

    @return: The backend's EHLO extensions in force afterwards.
    """
    offered = extensions.get(b"XCLIENT")
    if offered is None:
        return extensions
    commands = xclientCommands(offered, peer, helo)
    named = any(b" HELO=" in command for command in commands)
    greeted, accepted = await _sendXClient(protocol, commands)
    if named and not greeted:
        # The backend refused the name: the address without it.
        commands = xclientCommands(offered, peer, None)
        named = False
        greeted, accepted = await _sendXClient(protocol, commands)
    if named and accepted:
        return {keyword: value for keyword, value in extensions.items() if keyword != b"XCLIENT"}
    if greeted:
        return _expect(await protocol.command(ehlo), 250, "EHLO").keywords()
    return extensions


async def _sendXClient(protocol: BackendSMTPProtocol, commands: list[bytes]) -> tuple[bool, bool]:
    """
    Send C{commands} in order, up to the first the backend refuses.

    @return: Whether the backend accepted (greeted anew after) any of
        them, and whether it accepted them all.
    """
    greeted = False
    for command in commands:
        if (await protocol.command(command)).code != 220:
            return greeted, False
        greeted = True
    return greeted, greeted


async def _login(
    backend: Backend,
    hostname: bytes,
    username: bytes,
    password: bytes,
    peer: Any,
    helo: bytes | None,
) -> BackendSMTPSession:
    protocol: BackendSMTPProtocol = await backend.connect(_FACTORY)
    try:
        _expect(await protocol.greeting, 220, "the connection")
        ehlo = b"EHLO " + hostname
        extensions = _expect(await protocol.command(ehlo), 250, "EHLO").keywords()
        if backend.starttls:
            if b"STARTTLS" not in extensions:
                raise BackendUnavailable("backend_starttls is set but the backend offers no STARTTLS")
            _expect(await protocol.command(b"STARTTLS"), 220, "STARTTLS")
            backend.startTLS(protocol.transport)
            extensions = _expect(await protocol.command(ehlo), 250, "EHLO").keywords()
        extensions = await _introduceClient(protocol, extensions, ehlo, peer, helo)
        mechanisms = {word.upper() for word in extensions.get(b"AUTH", [])}
        if b"PLAIN" not in mechanisms:
            raise BackendUnavailable("the backend offers no AUTH PLAIN")
        response = base64.b64encode(b"\0" + username + b"\0" + password)
        reply = await protocol.command(b"AUTH PLAIN " + response)
        if reply.code == 535:
            protocol.transport.write(b"QUIT\r\n")
            protocol.transport.loseConnection()
            raise UnauthorizedLogin()
        _expect(reply, 235, "AUTH")
        return BackendSMTPSession(protocol, extensions, username.decode("utf-8", "replace"))
    except BaseException:
        protocol.transport.abortConnection()
        raise


def loginToSMTPBackend(
    backend: Backend,
    hostname: bytes,
    username: bytes,
    password: bytes,
    peer: Any = None,
    helo: bytes | None = None,
) -> defer.Deferred[BackendSMTPSession]:
    """
    Connect to the SMTP submission backend and log in as the user, all
    within C{backend_timeout_seconds}.

    @param hostname: The gateway's name, for its EHLO.
    @param peer: The client's address (C{XCLIENT ADDR}/C{PORT}).
    @param helo: The client's EHLO name (C{XCLIENT HELO}), or L{None}.
    @return: A Deferred firing with the authenticated session, or failing
        with L{UnauthorizedLogin} (the backend refused the credentials:
        C{535}) or L{BackendUnavailable} (anything else).
    """
    return backend.guard(
        defer.Deferred.fromCoroutine(_login(backend, hostname, username, password, peer, helo))
    )
