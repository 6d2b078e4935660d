# -*- test-case-name: tests.test_gateway_imapbackend -*-
"""
The gateway's side of a conversation with the IMAP backend: greeting,
optional STARTTLS, C{ID} with the client's address, the login with the
user's credentials, the post-login capabilities, APPENDs of notices, and
then a plain byte relay.

Written on a bare L{Protocol} rather than Twisted's C{IMAP4Client}: once
logged in, the connection must be handed over untouched (the client's
tags, literals, IDLE and COMPRESS go through as bytes), and
C{IMAP4Client} parses and answers everything it reads.  Only the few
replies of the login phase are parsed here.
"""

from __future__ import annotations

import base64
import re
from typing import Any, Callable

from twisted.cred.error import UnauthorizedLogin
from twisted.internet import defer
from twisted.internet.protocol import Factory, Protocol
from twisted.python.failure import Failure

from clientid_twisted.gateway.backend import (
    Backend,
    BackendConnection,
    BackendSession,
    BackendUnavailable,
    printable,
)

__all__ = [
    "BackendIMAPProtocol",
    "BackendIMAPSession",
    "Reply",
    "imapQuoted",
    "loginToBackend",
]

_LITERAL_AT_END = re.compile(rb"\{([0-9]{1,12})\+?\}\Z")
_CAPABILITY_CODE = re.compile(rb"\[CAPABILITY ([^\]]*)\]", re.IGNORECASE)
_MAX_LINE = 64 * 1024
"""Longest reply line taken during the login phase."""

_MAX_UNREAD = 1024 * 1024
"""Most the gateway holds of what the backend sent before the relay."""

_TEMPORARY_CODES = (b"[UNAVAILABLE]", b"[SERVERBUG]", b"[LIMIT]", b"[INUSE]")
"""A NO with one of these (RFC 5530) is the backend's trouble, not a wrong
password."""


class Reply:
    """
    A tagged reply and the untagged lines that came before it.

    @ivar status: C{b"OK"}, C{b"NO"} or C{b"BAD"}.
    @ivar text: The rest of the tagged line (response code and text).
    @ivar untagged: The untagged lines, without C{"* "}.
    """

    def __init__(self, status: bytes, text: bytes, untagged: list[bytes]) -> None:
        self.status = status
        self.text = text
        self.untagged = untagged

    def capabilities(self) -> list[bytes] | None:
        """
        The capabilities this reply announced (a C{[CAPABILITY ...]} code
        or an untagged C{CAPABILITY}), or L{None}.
        """
        match = _CAPABILITY_CODE.search(self.text)
        if match is not None:
            return match.group(1).split()
        for line in self.untagged:
            if line[:11].upper() == b"CAPABILITY ":
                return line[11:].split()
        return None


def imapQuoted(value: bytes) -> bytes:
    """
    C{value} as an IMAP quoted string (RFC 3501 C{quoted}).

    @raise ValueError: If it holds bytes a quoted string cannot carry
        (CR, LF, NUL, 8-bit): send it as a literal instead.
    """
    if any(b in b"\r\n\0" or b > 0x7F for b in value):
        raise ValueError("not quotable")
    return b'"' + value.replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"'


class BackendIMAPProtocol(BackendConnection, Protocol):
    """
    One connection to the backend.  Until L{startRelay}, it reads replies
    line by line for L{command}; after it, every byte goes to the relay's
    sink unchanged.

    @ivar greeting: Fires with the greeting's capabilities (a list, or
        L{None} if it listed none); fails if the backend says BYE or closes.
    @ivar closed: Fires when the connection is gone.
    """

    transport: Any

    def __init__(self) -> None:
        self.greeting: defer.Deferred[list[bytes] | None] = defer.Deferred()
        self.closed: defer.Deferred[None] = defer.Deferred()
        self._buffer = b""
        self._literal = 0
        self._line = b""
        self._untagged: list[bytes] = []
        self._pending: tuple[bytes, defer.Deferred[Reply], list[bytes]] | None = None
        self._tag = 0
        self._sink: Callable[[bytes], None] | None = None
        self._onClose: Callable[[Failure], None] | None = None

    # -- login phase ----------------------------------------------------------

    def command(self, text: bytes, *literals: bytes) -> defer.Deferred[Reply]:
        """
        Send one command and return its tagged reply.

        @param text: The command without its tag; each C{{n}} literal
            marker at the end of a part is followed by the next of
            C{literals} once the backend sends its continuation.
        @param literals: Literal bodies, in order: C{text} ends with a
            C{{n}} marker for the first, and each body may end with the
            marker of the next.
        """
        if self._pending is not None:
            raise RuntimeError("one command at a time")
        self._tag += 1
        tag = b"G%d" % (self._tag,)
        d: defer.Deferred[Reply] = defer.Deferred()
        self._pending = (tag, d, list(literals))
        self._untagged = []
        self.transport.write(tag + b" " + text + b"\r\n")
        self._parse()
        return d

    def dataReceived(self, data: bytes) -> None:
        if self._sink is not None:
            self._sink(data)
            return
        self._buffer += data
        if len(self._buffer) > _MAX_UNREAD:
            # Unasked-for output before the relay: not an IMAP server.
            self._fail(BackendUnavailable("backend sent too much before the relay"))
            return
        self._parse()

    def _parse(self) -> None:
        # Only while a reply is awaited: what follows the last reply stays
        # buffered, for the next command or for the relay.
        while self._buffer and self._sink is None and (
            not self.greeting.called or self._pending is not None
        ):
            if self._literal:
                taken = self._buffer[: self._literal]
                self._line += taken
                self._literal -= len(taken)
                self._buffer = self._buffer[len(taken) :]
                continue
            end = self._buffer.find(b"\r\n")
            if end < 0:
                if len(self._buffer) + len(self._line) > _MAX_LINE:
                    self._fail(BackendUnavailable("backend reply line too long"))
                return
            self._line += self._buffer[:end]
            self._buffer = self._buffer[end + 2 :]
            match = _LITERAL_AT_END.search(self._line)
            if match is not None:
                self._literal = int(match.group(1))
                self._line += b"\r\n"
                if len(self._line) + self._literal > _MAX_LINE:
                    self._fail(BackendUnavailable("backend reply too long"))
                    return
                continue
            line, self._line = self._line, b""
            self._lineReceived(line)

    def _lineReceived(self, line: bytes) -> None:
        if not self.greeting.called:
            word = line[:5].upper()
            if word == b"* OK ":
                self.greeting.callback(Reply(b"OK", line[5:], []).capabilities())
            else:
                # BYE (too many connections), PREAUTH, or garbage.
                self.greeting.errback(
                    BackendUnavailable("backend greeting: " + printable(line))
                )
                self.transport.loseConnection()
            return
        if line.startswith(b"+"):
            if self._pending is not None and self._pending[2]:
                # A literal body (ending with the next one's marker, or the
                # end of the command), or a SASL response: each ends a line.
                self.transport.write(self._pending[2].pop(0) + b"\r\n")
            return
        if line.startswith(b"* "):
            self._untagged.append(line[2:])
            return
        tag, _, rest = line.partition(b" ")
        if self._pending is None or tag != self._pending[0]:
            return
        status, _, text = rest.partition(b" ")
        _, d, _ = self._pending
        self._pending = None
        if not d.called:  # not cancelled by a timeout
            d.callback(Reply(status.upper(), text, self._untagged))

    def takeWaiting(self) -> list[defer.Deferred[Reply]]:
        if self._pending is None:
            return []
        _, d, _ = self._pending
        self._pending = None
        return [d]

    def connectionEnded(self, reason: Failure) -> None:
        onClose, self._onClose = self._onClose, None
        if onClose is not None:
            onClose(reason)

    # -- relay ----------------------------------------------------------------

    def startRelay(self, sink: Callable[[bytes], None], onClose: Callable[[Failure], None]) -> None:
        """
        From now on, hand every byte read to C{sink} (and anything read but
        not yet parsed at once), and call C{onClose} when the backend closes.
        """
        self._sink = sink
        self._onClose = onClose
        leftover, self._buffer = self._buffer, b""
        if leftover:
            sink(leftover)


class _BackendFactory(Factory):
    protocol = BackendIMAPProtocol
    noisy = False  # no log line per backend connection


_FACTORY = _BackendFactory()


class BackendIMAPSession(BackendSession):
    """
    An authenticated backend connection: the avatar of a gateway login.

    @ivar protocol: The connection.
    @ivar capabilities: The backend's capabilities after the login.
    @ivar username: The account it is logged in as.
    @ivar backend: The backend (its timeout bounds L{append}).
    """

    def __init__(
        self, protocol: BackendIMAPProtocol, capabilities: list[bytes], username: str, backend: Backend
    ) -> None:
        super().__init__(protocol, username)
        self.capabilities = capabilities
        self.backend = backend

    def append(self, message: bytes, mailbox: bytes = b"INBOX") -> defer.Deferred[Reply]:
        """
        APPEND C{message} to C{mailbox}, before the relay starts (the
        client never sees this exchange).
        """
        return self.backend.guard(
            self.protocol.command(b"APPEND " + mailbox + b" {%d}" % (len(message),), message)
        )


def _originating(peer: Any, host: Any) -> bytes:
    """
    The C{ID} fields that tell the backend who the client is (Dovecot takes
    them from C{login_trusted_networks}).
    """
    fields: list[bytes] = []
    for prefix, address in ((b"x-originating", peer), (b"x-connected", host)):
        ip = getattr(address, "host", None)
        port = getattr(address, "port", None)
        if isinstance(ip, str) and ip:
            fields += [prefix + b"-ip", ip.encode("ascii", "replace")]
            if isinstance(port, int):
                fields += [prefix + b"-port", b"%d" % (port,)]
    return b"ID (" + b" ".join(b'"' + f + b'"' for f in fields) + b")"


def _loginCommand(capabilities: list[bytes], username: bytes, password: bytes) -> tuple[bytes, list[bytes]]:
    """
    The backend login: AUTHENTICATE PLAIN where offered (the credentials
    travel as base64, whatever bytes they hold), else LOGIN with literals.
    """
    upper = {c.upper() for c in capabilities}
    if b"AUTH=PLAIN" in upper:
        response = base64.b64encode(b"\0" + username + b"\0" + password)
        if b"SASL-IR" in upper:
            return b"AUTHENTICATE PLAIN " + response, []
        return b"AUTHENTICATE PLAIN", [response]
    if b"LOGINDISABLED" in upper:
        raise BackendUnavailable("the backend offers neither AUTH=PLAIN nor LOGIN")
    return b"LOGIN {%d}" % (len(username),), [username + b" {%d}" % (len(password),), password]


def _check(reply: Reply, what: str) -> Reply:
    if reply.status != b"OK":
        raise BackendUnavailable(f"backend answered {what} with {printable(reply.status + b' ' + reply.text)}")
    return reply


async def _login(
    backend: Backend,
    username: bytes,
    password: bytes,
    peer: Any,
    host: Any,
) -> BackendIMAPSession:
    protocol: BackendIMAPProtocol = await backend.connect(_FACTORY)
    try:
        capabilities = await protocol.greeting
        if backend.starttls:
            if capabilities is None:
                capabilities = _check(await protocol.command(b"CAPABILITY"), "CAPABILITY").capabilities()
            if b"STARTTLS" not in {c.upper() for c in capabilities or []}:
                raise BackendUnavailable("backend_starttls is set but the backend offers no STARTTLS")
            _check(await protocol.command(b"STARTTLS"), "STARTTLS")
            backend.startTLS(protocol.transport)
            capabilities = None
        if capabilities is None:
            capabilities = _check(await protocol.command(b"CAPABILITY"), "CAPABILITY").capabilities()
        capabilities = capabilities or []
        if b"ID" in {c.upper() for c in capabilities}:
            # The answer does not matter: a backend that does not trust us
            # ignores the fields.
            await protocol.command(_originating(peer, host))
        text, literals = _loginCommand(capabilities, username, password)
        reply = await protocol.command(text, *literals)
        if reply.status == b"NO" and not reply.text.upper().startswith(_TEMPORARY_CODES):
            protocol.transport.write(b"G0 LOGOUT\r\n")
            protocol.transport.loseConnection()
            raise UnauthorizedLogin()
        _check(reply, "the login")
        after = reply.capabilities()
        if after is None:
            after = _check(await protocol.command(b"CAPABILITY"), "CAPABILITY").capabilities() or []
        return BackendIMAPSession(protocol, after, username.decode("utf-8", "replace"), backend)
    except UnauthorizedLogin:
        raise
    except BaseException:
        protocol.transport.abortConnection()
        raise


def loginToBackend(
    backend: Backend, username: bytes, password: bytes, peer: Any = None, host: Any = None
) -> defer.Deferred[BackendIMAPSession]:
    """
    Connect to the IMAP backend and log in as the user, all within
    C{backend_timeout_seconds}.

    @param peer: The client's address (C{x-originating-ip}/C{-port}).
    @param host: The gateway's address the client connected to
        (C{x-connected-ip}/C{-port}).
    @return: A Deferred firing with the authenticated session, or failing
        with L{UnauthorizedLogin} (the backend refused the credentials) or
        L{BackendUnavailable}.
    """
    return backend.guard(defer.Deferred.fromCoroutine(_login(backend, username, password, peer, host)))
