# -*- test-case-name: tests.test_submission -*-
"""
The mail submission protocol that C{twistd clientid-mail} runs (RFC 6409):
L{ClientIDESMTP} plus the rules a submission server needs and Twisted's
ESMTP leaves to its users: AUTH only over TLS, MAIL only after AUTH, NOOP,
no Nagle delay, and the limits of L{clientid_twisted.server.limits} (line
lengths, SIZE, timeouts, error budget, failed-login delay, connection
counts).
"""

from __future__ import annotations

import re
from typing import Any, Callable

from twisted.cred.error import UnauthorizedLogin
from twisted.internet import defer
from twisted.logger import Logger
from twisted.mail import smtp
from twisted.python.failure import Failure

from clientid_twisted._smtpfixes import SMTPServerFixesMixin
from clientid_twisted.server.connections import LimitedFactoryMixin
from clientid_twisted.server.delivery import storageError
from clientid_twisted.server.guard import SessionGuardMixin
from clientid_twisted.server.lines import BoundedLineOnlyReceiver
from clientid_twisted.server.net import setNoDelay
from clientid_twisted.smtp import ClientIDESMTP, ClientIDESMTPFactory

__all__ = ["SubmissionESMTP", "SubmissionFactory"]

_log = Logger()

COMMAND_LINE_MAX = 510
"""Longest command line without CRLF (RFC 5321 section 4.5.3.1.4: 512
octets with it)."""

AUTH_LINE_MAX = 12286
"""Longest AUTH command or SASL response line without CRLF (RFC 4954
section 4: 12288 octets with it)."""

TEXT_LINE_MAX = 16384
"""Longest line of message data accepted.  RFC 5321 allows 1000 octets;
sloppy clients send longer lines, and Twisted accepted 16 KiB before."""

ERROR_CODES = frozenset([500, 501, 502, 503, 504, 530, 535, 538])
"""Replies that count against the session's error budget: the client sent
something unknown, malformed, out of sequence, or a wrong password."""

_AUTH_COMMAND = re.compile(rb"\s*AUTH\s", re.IGNORECASE)
_SIZE_PARAMETER = re.compile(rb"(?:^|\s)SIZE=([0-9]{1,20})(?=\s|$)", re.IGNORECASE)

_GOODBYES = {
    "idle-timeout": b"4.4.2 %s Idle timeout, closing connection",
    "command-timeout": b"4.4.2 %s Command not completed in time, closing connection",
    "data-timeout": b"4.4.2 %s Message data not completed in time, closing connection",
    "error-budget": b"4.7.0 %s Too many errors, closing connection",
    "handshake-limit": b"4.7.0 %s Too many TLS handshakes in progress, try again later",
    "shutdown": b"4.3.2 %s Service shutting down, closing connection",
    "too many connections": b"4.7.0 %s Too many connections, try again later",
    "too many connections from your address": b"4.7.0 %s Too many connections from your address, try again later",
    "shutting down": b"4.3.2 %s Service shutting down, try again later",
}


class SubmissionESMTP(SMTPServerFixesMixin, SessionGuardMixin, ClientIDESMTP, BoundedLineOnlyReceiver):
    """
    An authenticated-submission ESMTP server with CLIENTID.
    """

    _messageBytes = 0
    _openMessages: list[Any]

    def connectionMade(self) -> None:
        # Without TCP_NODELAY each reply after a small write waits on the
        # peer's delayed ACK: about 40 ms a round trip over loopback.
        setNoDelay(self.transport)
        super().connectionMade()

    def greeting(self) -> bytes:
        return self.host + b" ESMTP submission ready"

    def extensions(self) -> dict[bytes, Any]:
        ext = super().extensions()
        if not self.isEncrypted():
            # RFC 4954 section 4: do not offer plaintext password mechanisms
            # on an unencrypted connection.
            ext.pop(b"AUTH", None)
        ext[b"8BITMIME"] = None
        ext[b"SIZE"] = [b"%d" % (self.limits.maxMessageBytes,)]
        return ext

    def ext_AUTH(self, rest: bytes) -> None:
        if not self.isEncrypted():
            self._authSeen = True
            self.sendCode(538, b"5.7.11 Encryption required for requested authentication mechanism")
            return
        super().ext_AUTH(rest)

    def ext_STARTTLS(self, rest: bytes) -> None:
        if self.isEncrypted() or self.startedTLS or not (self.ctx and self.canStartTLS):
            super().ext_STARTTLS(rest)
            return
        if not self.reserveStartTLS():
            return
        super().ext_STARTTLS(rest)
        if not self.startedTLS:
            self.startTLSNotStarted()

    def _forgetSession(self) -> None:
        super()._forgetSession()
        self.overlong = False

    def do_MAIL(self, rest: bytes) -> None:
        if not self.authenticated:
            self.sendCode(530, b"5.7.0 Authentication required")
            return
        declared = _SIZE_PARAMETER.search(rest)
        if declared is not None and int(declared.group(1)) > self.limits.maxMessageBytes:
            # RFC 1870 section 6.
            self.sendCode(552, b"5.3.4 Message size exceeds fixed maximum message size")
            return
        super().do_MAIL(rest)

    def do_RCPT(self, rest: bytes) -> None:
        if self._from and len(self._to) >= self.limits.maxRecipients:
            # RFC 5321 section 4.5.3.1.10: the client sends the others in
            # another transaction.
            self.sendCode(452, b"4.5.3 Too many recipients")
            return
        super().do_RCPT(rest)

    def do_NOOP(self, rest: bytes) -> None:
        self.sendCode(250, b"OK")

    def do_VRFY(self, rest: bytes) -> None:
        # RFC 5321 section 3.5.3: 252 when we will not verify.
        self.sendCode(252, b"Cannot VRFY user, but will accept message and attempt delivery")

    # -- limits -------------------------------------------------------------------

    def sendCode(self, code: int, message: bytes = b"") -> None:
        super().sendCode(code, message)
        if code in ERROR_CODES:
            self.countError()

    def sendGoodbye(self, event: str) -> None:
        self.sendCode(421, _GOODBYES[event] % (self.host,))

    def hasPartialLine(self) -> bool:
        return BoundedLineOnlyReceiver.hasPartialLine(self)

    def inTransfer(self) -> bool:
        return self.mode == smtp.DATA

    def isBusy(self) -> bool:
        return self.mode == smtp.DATA or self.blocked is not None

    def isAuthenticated(self) -> bool:
        return bool(self.authenticated)

    def sessionEnding(self) -> None:
        if self.mode == smtp.DATA:
            self._failMessage(421, b"4.3.0 Session ended")

    def maxLineLength(self) -> int:
        # Command lines are checked against their own limit once complete
        # (state_COMMAND); this bounds what is buffered.
        return TEXT_LINE_MAX if self.mode == smtp.DATA else AUTH_LINE_MAX

    def lineLengthExceeded(self, line: bytes) -> None:
        if self._discardingPlaintext or self.closing:
            return
        if self.mode == smtp.DATA:
            self._failMessage(500, b"5.5.2 Line too long")
        elif self.mode == smtp.AUTH:
            self._endAuth(500, b"5.5.2 Line too long")
        else:
            self.sendCode(500, b"5.5.2 Line too long")

    def lineReceived(self, line: bytes) -> Any:
        """
        A message body's line goes straight to the message: none of the
        command line's work (its deadline, the stage's idle timeout, the
        CLIENTID mixin's checks, the backlog check; the transfer's deadline
        covers the whole body), only the idle timer's restart, as Twisted's
        own C{SMTP.lineReceived} does.  Its length was checked when it was
        split (L{maxLineLength}).  Neither a login being decided nor the
        plaintext dropped after STARTTLS can hold a line in DATA: both
        happen in the command state.
        """
        if self.mode == smtp.DATA:
            self.resetTimeout()
            return self.state_DATA(line)
        return super().lineReceived(line)

    def state_COMMAND(self, line: bytes) -> None:
        if self.draining:
            self.closeSession("shutdown")
            return
        if len(line) > COMMAND_LINE_MAX and not _AUTH_COMMAND.match(line):
            self.sendCode(500, b"5.5.2 Line too long")
            return
        super().state_COMMAND(line)

    def do_DATA(self, rest: bytes) -> None:
        self._openMessages = []
        self._messageBytes = 0
        super().do_DATA(rest)

    def state_DATA(self, line: bytes) -> None:
        """
        Count the message as it streams in; past C{maxMessageBytes} drop
        what was written and discard the rest, and answer 552 after the
        final dot (RFC 1870 section 6).
        """
        if line != b"." and not self.datafailed:
            self._messageBytes += len(line) + 2
            if self._messageBytes > self.limits.maxMessageBytes:
                self._failMessage(552, b"5.3.4 Message size exceeds fixed maximum message size")
        super().state_DATA(line)

    def _failMessage(self, code: int, message: bytes) -> None:
        if not self.datafailed:
            self.datafailed = smtp.SMTPServerError(code, message)
        messages = getattr(self, "_openMessages", [])
        self._openMessages = []
        for m in messages:
            m.connectionLost()

    def validateTo(self, user: smtp.User) -> Any:
        d = defer.maybeDeferred(super().validateTo, user)
        d.addCallback(self._trackMessages)
        return d

    def _trackMessages(self, makeMessage: Callable[[], Any]) -> Callable[[], Any]:
        # Remember the messages of this DATA, so an oversized one can be
        # dropped at once instead of written to the end.  A message that
        # cannot be started is a local, temporary failure: Twisted would
        # answer any exception but its own with a permanent 550.
        def make() -> Any:
            try:
                message = makeMessage()
            except smtp.SMTPServerError:
                raise
            except Exception as e:
                _log.error(
                    "cannot start a message: {errorType}", errorType=type(e).__name__
                )
                raise smtp.SMTPServerError(451, b"4.3.0 Local error in processing, try again later")
            self._openMessages.append(message)
            return message

        return make

    def messageNotStored(self, failures: list[Failure]) -> None:
        """
        A failed store is temporary (452 when the disk is full, 451
        otherwise) and logged as one line, never the permanent 550 and
        traceback of Twisted's.
        """
        for failure in failures:
            _log.error(
                "message not stored: {errorType}: {error}",
                errorType=type(failure.value).__name__,
                error=str(failure.value),
            )
        # The most telling reply: a full disk if any copy met one.
        replies = [
            storageError(f.value if isinstance(f.value, OSError) else OSError())
            for f in failures
        ]
        reply = min(replies, key=lambda r: -r.code)
        self.sendCode(reply.code, reply.resp)

    def _ebClientIDLogin(self, reason: Failure, credentials: Any) -> Any:
        if reason.check(UnauthorizedLogin):
            parent = super()._ebClientIDLogin
            return self.delayAuthFailure(lambda: parent(reason, credentials))
        return super()._ebClientIDLogin(reason, credentials)


class SubmissionFactory(LimitedFactoryMixin, ClientIDESMTPFactory):
    """
    Builds L{SubmissionESMTP} protocols, counted by C{limiter}: over its
    limits a connection gets C{421} and is closed.
    """

    protocol = SubmissionESMTP
    protocolName = "smtp"

    def goodbye(self, protocol: Any, refusal: str) -> bytes:
        return b"421 " + _GOODBYES[refusal] % (protocol.host,)
