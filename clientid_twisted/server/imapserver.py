# -*- test-case-name: tests.test_imap_mailserver -*-
"""
The IMAP protocol that C{twistd clientid-mail} runs: L{ClientIDIMAP4Server}
plus what a mail store needs and Twisted's IMAP4Server leaves out or gets
wrong: C{\\Seen} on a body fetch, clean APPEND and COPY replies for a
missing mailbox, an EXISTS after APPEND into the selected mailbox, the
selected mailbox closed on disconnect, no Nagle delay, and the limits of
L{clientid_twisted.server.limits} (line length, literal size, timeouts,
error budget, failed-login delay, connection counts).

Twisted's IMAP4Server does not support LITERAL+ (RFC 7888): C{{n+}} is a
"bad literal size" to it, and the literal's bytes would then be read as
commands.  We do not list LITERAL+; a non-synchronising literal gets BAD
and its bytes are skipped unread, or, over C{maxLiteralBytes}, the
connection ends with BYE.  A CLIENTID line never announces a literal: its
token may end in C{{n}} or C{{n+}} and is still just a token.
"""

from __future__ import annotations

import re
from typing import Any

from twisted.cred.error import UnauthorizedLogin
from twisted.internet import defer
from twisted.internet.protocol import connectionDone
from twisted.logger import Logger
from twisted.mail import imap4
from twisted.python.failure import Failure

from clientid_twisted import __version__
from clientid_twisted._imapfixes import IMAP4ServerFixesMixin, logFailed, setsSeen
from clientid_twisted._authlog import escapeForLog
from clientid_twisted.imap import ClientIDIMAP4Factory, ClientIDIMAP4Server, namesClientID
from clientid_twisted.server.connections import LimitedFactoryMixin
from clientid_twisted.server.guard import SessionGuardMixin
from clientid_twisted.server.net import setNoDelay

__all__ = ["MailIMAP4Server", "MailIMAP4Factory"]

_log = Logger()

_LITERAL_AT_END = re.compile(rb"\{([0-9]+)(\+?)\}\Z")

_GOODBYES = {
    "idle-timeout": b"Autologout; idle for too long",
    "command-timeout": b"Command not completed in time",
    "data-timeout": b"Literal not completed in time",
    "error-budget": b"Too many errors",
    "handshake-limit": b"Too many TLS handshakes in progress, try again later",
    "shutdown": b"Server shutting down",
    "line-too-long": b"Command line too long",
    "literal-too-large": b"Literal too large",
    "too many connections": b"Too many connections, try again later",
    "too many connections from your address": b"Too many connections from your address, try again later",
    "shutting down": b"Server shutting down, try again later",
}


def _literalAtEnd(line: bytes) -> re.Match[bytes] | None:
    # Most lines announce no literal: a line that does ends with "}", and
    # the search (which tries every position) runs only on those.
    return _LITERAL_AT_END.search(line) if line.endswith(b"}") else None


def _literalSize(digits: bytes) -> int:
    # int() refuses very long digit strings; any of them is too large.
    return int(digits) if len(digits) <= 18 else 10**18


class MailIMAP4Server(IMAP4ServerFixesMixin, SessionGuardMixin, ClientIDIMAP4Server):
    """
    IMAP4rev1 over the server's maildirs, with CLIENTID.
    """

    _currentTag: bytes | None = None
    _skipBytes = 0
    _dropContinuation = False
    _replaying = False

    def connectionMade(self) -> None:
        setNoDelay(self.transport)
        super().connectionMade()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self._closeMailbox()
        super().connectionLost(reason)

    # -- limits -------------------------------------------------------------------

    @property
    def MAX_LENGTH(self) -> int:  # type: ignore[override]
        return self.limits.imapMaxLineBytes

    @property
    def POSTAUTH_TIMEOUT(self) -> float:  # type: ignore[override]
        return self.limits.imapIdleTimeout

    def authenticatedIdleTimeout(self) -> float:
        return self.limits.imapIdleTimeout

    def capabilities(self) -> dict[bytes, Any]:
        cap = super().capabilities()
        # RFC 7889: the largest APPEND we take.
        cap[b"APPENDLIMIT"] = [b"%d" % (self.limits.maxLiteralBytes,)]
        cap[b"ID"] = None
        return cap

    # -- ID (RFC 2971) --------------------------------------------------------------

    def do_ID(self, tag: bytes, line: bytes) -> None:
        """
        Say who we are, and log who the client says it is (each value
        escaped: it is the client's text).  Thunderbird and other clients
        send ID when it is listed.
        """
        try:
            parsed = imap4.parseNestedParens(line.strip())
        except Exception:
            parsed = []
        # NIL, or one list; anything else (b"") is refused.
        fields: Any = parsed[0] if len(parsed) == 1 else b""
        if fields is not None and not _isIDList(fields):
            self.sendBadResponse(tag, b"ID needs NIL or a list of field and value strings")
            return
        if fields:
            _log.info(
                "IMAP client ID: {clientID}",
                clientID=" ".join(
                    f"{escapeForLog(fields[i])}={escapeForLog(fields[i + 1])}"
                    for i in range(0, len(fields), 2)
                ),
                imapEvent="id",
            )
        self.sendUntaggedResponse(
            b'ID ("name" "clientid-twisted" "version" "%s")' % (__version__.encode("ascii"),)
        )
        self.sendPositiveResponse(tag, b"ID completed")

    unauth_ID = (do_ID, imap4.IMAP4Server.arg_line)
    auth_ID = select_ID = unauth_ID

    # -- SELECT and EXAMINE ---------------------------------------------------------

    def sendGoodbye(self, event: str) -> None:
        self.sendLine(b"* BYE " + _GOODBYES[event])

    def hasPartialLine(self) -> bool:
        return bool(self.line_mode and self.unparsedInput)

    def inTransfer(self) -> bool:
        return not self.line_mode or self._skipBytes > 0

    def isBusy(self) -> bool:
        return self.blocked is not None or isinstance(self.pendingLiteral, imap4.LiteralFile)

    def isAuthenticated(self) -> bool:
        return self.state in ("auth", "select")

    def sendBadResponse(self, tag: bytes | None = None, message: bytes = b"") -> None:
        super().sendBadResponse(tag, message)
        self.countError()

    def lineLengthExceeded(self, line: bytes) -> None:
        self.closeSession("line-too-long")

    def dataReceived(self, data: bytes) -> Any:
        if self._skipBytes and data:
            skipped = min(self._skipBytes, len(data))
            self._skipBytes -= skipped
            data = data[skipped:]
            if not data:
                self._updateDeadlines()
                return None
        return super().dataReceived(data)

    def replayHeldLines(self) -> None:
        """
        Run the lines queued while a command ran (L{LoginHoldMixin}'s
        replay, plus: once a replayed command starts a literal, what was
        queued after it is that literal's data, not commands).  Only lines
        read from the network may start skipping a literal.
        """
        self._replaying = True
        try:
            super().replayHeldLines()
        finally:
            self._replaying = False

    def replayStopped(self) -> bool:
        return self.closing or super().replayStopped()

    def takeHeldLinesAsData(self, lines: list[bytes]) -> bool:
        if self.line_mode:
            return False
        self.unparsedInput = b"".join(line + b"\r\n" for line in lines) + self.unparsedInput
        del lines[:]
        self._replaying = False
        self.dataReceived(b"")
        return True

    def rawDataReceived(self, data: bytes) -> Any:
        if self.pendingLiteral is None:
            # Nothing is waiting for raw bytes: read lines again.
            return self.setLineMode(data)
        return super().rawDataReceived(data)

    def lineReceived(self, line: bytes) -> Any:
        """
        Check literals before Twisted sees them: a synchronising literal
        over C{maxLiteralBytes} gets C{NO [TOOBIG]} before the client sends
        a byte of it; a non-synchronising one gets BAD and is skipped, or
        ends the session when too large.
        """
        if self.closing:
            return None
        if self._dropContinuation and not self._replaying:
            # The rest of a command whose literal was refused.
            self._dropContinuation = False
            match = _literalAtEnd(line)
            if match is not None and match.group(2):
                self._refuseNonSynchronizing(_literalSize(match.group(1)), None)
            return None
        if self._discardingPlaintext or self.parseState not in ("command", "pending"):
            return super().lineReceived(line)
        match = self.literalAnnounced(line)
        if match is None:
            return super().lineReceived(line)
        size = _literalSize(match.group(1))
        if match.group(2):
            if not self._replaying:
                self._refuseNonSynchronizing(size, self._tagOf(line))
                return None
        elif size > self.limits.maxLiteralBytes and self.blocked is None:
            tag = self._tagOf(line)
            self._abandonCommand()
            self.sendNegativeResponse(
                tag, b"[TOOBIG] Literal larger than %d octets" % (self.limits.maxLiteralBytes,)
            )
            self.countError()
            return None
        return super().lineReceived(line)

    def literalAnnounced(self, line: bytes) -> re.Match[bytes] | None:
        """
        The literal announcement (C{{n}} or C{{n+}}) that ends a command
        line, if any.  A CLIENTID line announces none, whatever its token
        ends with: the contract parses it from the raw line, so a valid
        token like C{{3+}} or C{x{36700161}} gets OK, not a literal's BAD,
        NO [TOOBIG] or BYE.
        """
        match = _literalAtEnd(line)
        if match is not None and self.parseState == "command" and namesClientID(line):
            return None
        return match

    def _tagOf(self, line: bytes) -> bytes | None:
        if self.parseState == "pending":
            return self._currentTag
        words = line.split(None, 1)
        return words[0] if words else None

    def _abandonCommand(self) -> None:
        """
        Forget a command waiting for the rest of its line after a literal.
        """
        if self.parseState == "pending" and self.blocked is None:
            self.pendingLiteral = None
            self.parseState = "command"

    def _refuseNonSynchronizing(self, size: int, tag: bytes | None) -> None:
        if size > self.limits.maxLiteralBytes:
            self.closeSession("literal-too-large")
            return
        if tag is not None:
            self._abandonCommand()
            self.sendBadResponse(tag, b"Non-synchronizing literals (LITERAL+) are not supported")
            if self.closing:
                return
        # Skip the literal unread; the line that follows it finishes the
        # refused command and is dropped too.
        skipped = min(size, len(self.unparsedInput))
        self.unparsedInput = self.unparsedInput[skipped:]
        self._skipBytes = size - skipped
        self._dropContinuation = True

    def parse_command(self, line: bytes) -> Any:
        if self.draining:
            self.closeSession("shutdown")
            return None
        words = line.split(None, 1)
        self._currentTag = words[0] if words else None
        return super().parse_command(line)

    def do_STARTTLS(self, tag: bytes) -> None:
        if self.isEncrypted() or self.startedTLS or not (self.ctx and self.canStartTLS):
            super().do_STARTTLS(tag)
            return
        if not self.reserveStartTLS():
            return
        super().do_STARTTLS(tag)
        if not self.startedTLS:
            self.startTLSNotStarted()

    unauth_STARTTLS = (do_STARTTLS,)  # type: ignore[assignment]

    def _ebClientIDLogin(self, reason: Failure, tag: bytes, fields: dict[str, Any]) -> Any:
        if reason.check(UnauthorizedLogin):
            parent = super()._ebClientIDLogin

            def answer() -> None:
                parent(reason, tag, fields)
                self.countError()

            return self.delayAuthFailure(answer)
        return super()._ebClientIDLogin(reason, tag, fields)

    def _closeMailbox(self) -> None:
        mbox, self.mbox = self.mbox, None
        if mbox is None:
            return
        mbox.removeListener(self)
        closeable = imap4.ICloseableMailbox(mbox, None)
        if closeable is not None:
            defer.maybeDeferred(closeable.close).addErrback(
                lambda f: _log.failure("closing mailbox on disconnect", f)
            )

    def do_FETCH(self, tag: bytes, messages: Any, query: Any, uid: int = 0) -> None:
        if query and self.mbox.isWriteable() and setsSeen(query):
            d = defer.maybeDeferred(self.mbox.store, messages, ["\\Seen"], 1, uid)
            d.addErrback(lambda f: logFailed("setting \\Seen on FETCH", f))
        super().do_FETCH(tag, messages, query, uid)

    select_FETCH: Any = (do_FETCH, imap4.IMAP4Server.arg_seqset, imap4.IMAP4Server.arg_fetchatt)

    def spew_body(self, part: Any, id: int, msg: Any, _w: Any = None, _f: Any = None) -> Any:
        """
        A body section that does not exist (C{BODY[2]} of a message that
        is not multipart, a part number past the last) is the empty string:
        RFC 3501 section 6.4.5 makes it no error.  Twisted raised a
        C{TypeError} (or C{IndexError}) in the middle of the FETCH response
        and dropped the connection.
        """
        if _w is None:
            _w = self.transport.write
        target = msg
        for number in part.part:
            if target.isMultipart():
                try:
                    target = target.getSubPart(number)
                except (IndexError, TypeError):
                    target = None
            elif number > 0:
                target = None
            if target is None:
                _w(part.__bytes__() + b' ""')
                return None
        if part.header or part.mime:
            if part.header:
                headers = target.getHeaders(part.header.negate, *part.header.fields)
            else:
                headers = target.getHeaders(True)
            data = _headerSection(headers)
            _w(part.__bytes__() + b" {%d}\r\n" % (len(data),) + data)
            return None
        return super().spew_body(part, id, msg, _w, _f)



def _isIDList(fields: Any) -> bool:
    """
    An ID parameter list as RFC 2971 section 3.3 bounds it: at most 30
    field-value pairs, fields strings of at most 30 octets, values strings
    (or NIL) of at most 1024.
    """
    return (
        isinstance(fields, list)
        and len(fields) % 2 == 0
        and len(fields) <= 60
        and all(isinstance(f, bytes) and len(f) <= 30 for f in fields[::2])
        and all(v is None or (isinstance(v, bytes) and len(v) <= 1024) for v in fields[1::2])
    )


def _headerSection(headers: dict[str, str]) -> bytes:
    """
    Header fields as a FETCH header section: each field on its (folded)
    lines, then the blank line that ends a header, which RFC 3501 section
    6.4.5 keeps in C{HEADER}, C{HEADER.FIELDS} and C{MIME} sections
    (Twisted left it out).
    """
    lines = [
        f"{name.title()}: " + "\r\n".join(value.splitlines())
        for name, value in headers.items()
    ]
    return "".join(line + "\r\n" for line in lines).encode("utf-8", "surrogateescape") + b"\r\n"


def _checkMailboxName(parsed: tuple[bytes, bytes]) -> tuple[bytes, bytes]:
    name = parsed[0]
    try:
        name.decode("imap4-utf-7")
    except Exception:
        raise imap4.IllegalMailboxEncoding(name)
    return parsed


def _hardenedArgument(parse: Any, mailbox: bool, ascii: bool) -> Any:
    """
    Wrap one of Twisted's argument parsers.

    Twisted passes L{None} for a missing argument (C{a SELECT}, C{a STORE 1
    +FLAGS}), which its parsers do not expect: the client got C{BAD Server
    error} and the log a traceback; now it gets Twisted's own C{BAD Missing
    argument}.  With C{mailbox}, a name that is not modified UTF-7 is
    refused while parsing (C{NO Illegal mailbox name}); Twisted found out
    later and logged a traceback for each.  With C{ascii}, 8-bit bytes are
    refused: atoms, lists, sequence sets and FETCH items are ASCII
    (RFC 3501 section 9), and Twisted's handlers decode them as such.
    """

    def parseArgument(self: Any, line: bytes | None) -> Any:
        try:
            if line is None:
                line = b""
            if ascii and not line.isascii():
                raise imap4.IllegalClientResponse("8-bit bytes outside a string")
            parsed = parse(self, line)
            if isinstance(parsed, defer.Deferred):
                if mailbox:
                    parsed.addCallback(_checkMailboxName)
                return parsed.addErrback(_malformed)
            return _checkMailboxName(parsed) if mailbox else parsed
        except Exception:
            return _malformed(Failure())

    return parseArgument


def _hardenedHandler(handle: Any) -> Any:
    """
    Wrap a command handler: bytes a handler had to decode as ASCII or UTF-7
    and could not are the client's error (BAD), not a server error with a
    traceback.
    """

    def handleCommand(self: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return handle(self, *args, **kwargs)
        except UnicodeError:
            raise imap4.IllegalClientResponse("bytes that do not decode")

    return handleCommand


def _malformed(reason: Failure) -> Any:
    """
    Twisted's parsers raise plain exceptions (C{Exception}, C{TypeError},
    C{MismatchedNesting}, ...) for malformed arguments, which it answered
    C{BAD Server error} with a traceback in the log: they are the client's
    syntax errors.
    """
    if reason.check(imap4.IllegalClientResponse, imap4.IllegalOperation, imap4.IllegalMailboxEncoding):
        return reason
    raise imap4.IllegalClientResponse("malformed arguments")


_MAILBOX_COMMANDS = frozenset(
    [b"SELECT", b"EXAMINE", b"CREATE", b"DELETE", b"RENAME", b"SUBSCRIBE",
     b"UNSUBSCRIBE", b"LIST", b"LSUB", b"STATUS", b"APPEND", b"COPY"]
)
"""Commands whose every string argument is a mailbox name (or a LIST
reference and pattern)."""

_STRING_PARSERS = ("arg_astring", "arg_finalastring")
"""Parsers of strings, which may carry 8-bit bytes (a password)."""

_COMMAND_ATTRIBUTE = re.compile(r"(unauth|auth|select|logout)_([A-Z]+)\Z")


def _hardenCommands(cls: type) -> None:
    """
    Replace Twisted's argument parsers in C{cls}'s command table by
    L{_hardenedArgument} wrappers (parsers of our own are left alone).
    """
    for attribute in dir(cls):
        match = _COMMAND_ATTRIBUTE.match(attribute)
        if match is None:
            continue
        spec = getattr(cls, attribute)
        if not isinstance(spec, tuple) or not spec:
            continue
        mailbox = match.group(2).encode("ascii") in _MAILBOX_COMMANDS
        parts = [_hardenedHandler(spec[0])]
        for part in spec[1:]:
            name = getattr(part, "__qualname__", "")
            if name.startswith(("IMAP4Server.arg_", "IMAP4Server.opt_")):
                kind = name.split(".", 1)[1]
                part = _hardenedArgument(
                    part,
                    mailbox=mailbox and kind in _STRING_PARSERS,
                    ascii=kind not in _STRING_PARSERS + ("arg_searchkeys", "arg_literal"),
                )
            parts.append(part)
        setattr(cls, attribute, tuple(parts))


_hardenCommands(MailIMAP4Server)


class MailIMAP4Factory(LimitedFactoryMixin, ClientIDIMAP4Factory):
    """
    Builds L{MailIMAP4Server} protocols, counted by C{limiter}: over its
    limits a connection gets C{* BYE} and is closed.
    """

    protocol = MailIMAP4Server
    protocolName = "imap"

    def goodbye(self, protocol: Any, refusal: str) -> bytes:
        return b"* BYE " + _GOODBYES[refusal]
