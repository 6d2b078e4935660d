# -*- test-case-name: tests.test_relay_sender -*-
"""
One delivery attempt to the smarthost: Twisted's L{ESMTPSenderFactory
<twisted.mail.smtp.ESMTPSenderFactory>} (EHLO, STARTTLS, AUTH, one message)
over an endpoint, with the outcome sorted into delivered, refused for good
(a 5xx reply to the message: bounce it) or try again later (anything else).

Two gaps in Twisted's sender are closed here:

 - Its factory learns that a connection dropped through
   C{clientConnectionLost}, which only connectors call; over an endpoint
   nobody does, and the result would never fire.  L{RelaySender} reports
   the lost connection itself.
 - Its C{transformChunk} dot-stuffs each chunk on its own, so a line that
   starts with "." at the start of a chunk (every 16 KiB) or of the message
   is sent unstuffed: a lone "." there would end the message early and turn
   the rest into commands.  L{RelaySender} remembers whether the last chunk
   ended a line.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from attrs import frozen

from twisted.internet import defer, ssl
from twisted.internet.endpoints import clientFromString, wrapClientTLS
from twisted.internet.error import ConnectionDone
from twisted.mail import smtp
from twisted.python.failure import Failure

from clientid_twisted.server.relayconfig import RelaySettings
from clientid_twisted.server.relayqueue import QueueEntry

__all__ = ["Refused", "SmarthostClient", "RelaySender", "RelaySenderFactory", "describeFailure"]

RESPONSE_TIMEOUT = 300.0
"""Seconds to wait for each smarthost reply (RFC 5321 section 4.5.3.2
suggests 2 to 10 minutes per command)."""

_STATUS = re.compile(rb"^([245])\.(\d{1,3})\.(\d{1,3})(?=\s|$)")


@frozen
class Refused(Exception):
    """
    The smarthost refused the message for good (a 5xx reply to MAIL, RCPT
    or DATA): it must be bounced, not retried.

    @ivar code: The reply code.
    @ivar reply: The reply text, as the smarthost sent it.
    """

    code: int
    reply: bytes

    @property
    def status(self) -> str:
        """
        The enhanced status code (RFC 3463) of the reply, or C{5.0.0}.
        """
        match = _STATUS.match(self.reply)
        if match is None or match.group(1) != b"5":
            return "5.0.0"
        return match.group(0).decode("ascii")

    def __str__(self) -> str:
        return f"{self.code} {_printable(self.reply)}"


def _printable(data: bytes) -> str:
    """
    Server text made safe for a log line or a header field: printable
    ASCII, lines joined by spaces, at most 400 characters.
    """
    text = data.decode("ascii", "replace")
    text = " ".join(text.split())
    return "".join(c if " " <= c <= "~" else "?" for c in text)[:400]


def describeFailure(reason: Failure) -> str:
    """
    A one-line reason for a failed attempt, fit for the queue listing and a
    bounce (never a traceback; the smarthost's words made printable).
    """
    error = reason.value
    if isinstance(error, Refused):
        return str(error)
    if isinstance(error, smtp.SMTPClientError):
        resp = error.resp if isinstance(error.resp, bytes) else str(error.resp).encode()
        prefix = f"{error.code} " if error.code and error.code > 0 else ""
        return prefix + _printable(resp)
    if isinstance(error, (defer.CancelledError, defer.TimeoutError)):
        return "no answer in time"
    message = reason.getErrorMessage() or type(error).__name__
    return _printable(message.encode("utf-8", "replace"))


def _refusal(error: smtp.SMTPDeliveryError) -> Refused | None:
    """
    The permanent refusal in a failed transaction, if it was one: every
    recipient refused with 5xx (the message has one), or a 5xx reply to
    MAIL or to the end of DATA.
    """
    recorded: Any = error.addresses  # [(address, code, reply)] per RCPT
    refusals = [(code, reply) for _, code, reply in recorded or [] if code not in smtp.SUCCESS]
    if recorded and len(refusals) == len(recorded):
        if all(500 <= code < 600 for code, _ in refusals):
            code, reply = refusals[0]
            return Refused(code, reply if isinstance(reply, bytes) else b"")
        return None
    if 500 <= error.code < 600:
        return Refused(error.code, error.resp if isinstance(error.resp, bytes) else b"")
    return None


class RelaySender(smtp.ESMTPSender):
    """
    Twisted's ESMTP sender, reporting a lost connection and dot-stuffing
    across chunks (see the module docstring).
    """

    _atLineStart = True

    def connectionLost(self, reason: Failure = Failure(ConnectionDone())) -> None:
        smtp.ESMTPSender.connectionLost(self, reason)
        self.factory.clientConnectionLost(None, reason)

    def transformChunk(self, chunk: bytes) -> bytes:
        self.resetTimeout()
        data = chunk.replace(b"\n", b"\r\n").replace(b"\r\n.", b"\r\n..")
        if self._atLineStart and data.startswith(b"."):
            data = b"." + data
        if chunk:
            self._atLineStart = chunk.endswith(b"\n")
        return data


class RelaySenderFactory(smtp.ESMTPSenderFactory):
    """
    Builds L{RelaySender}s.
    """

    protocol = RelaySender


class SmarthostClient:
    """
    Sends one queued message at a time to the configured smarthost.

    @ivar settings: The C{[relay]} table.
    """

    def __init__(self, settings: RelaySettings, hostname: str, reactor: Any = None) -> None:
        """
        @param hostname: Our name, for EHLO.
        """
        if reactor is None:
            from twisted.internet import reactor
        self.settings = settings
        self._reactor = reactor
        try:
            self._helo = hostname.encode("idna")
        except UnicodeError:
            self._helo = b"localhost"
        trustRoot: Any = None
        if settings.caFile is not None:
            from clientid_twisted._certificate import loadAuthorities

            trustRoot = loadAuthorities(settings.caFile)
        self._tlsOptions: Any = None
        if settings.usesTLS:
            self._tlsOptions = ssl.optionsForClientTLS(settings.host, trustRoot=trustRoot)

    def endpoint(self) -> Any:
        """
        Where to connect: the smarthost, wrapped in TLS for C{tls:}.
        """
        address = self.settings.smarthost
        endpoint = clientFromString(self._reactor, address.tcpDescription)
        if address.implicitTLS:
            return wrapClientTLS(self._tlsOptions, endpoint)
        return endpoint

    def send(self, entry: QueueEntry, dataPath: Path) -> defer.Deferred[None]:
        """
        Try once to hand C{entry} to the smarthost.

        @return: A Deferred that fires with L{None} when the smarthost took
            the message, fails with L{Refused} when it refused it for good,
            and fails with anything else for a temporary failure.  Cancelling
            it closes the connection.
        """
        s = self.settings
        result: defer.Deferred[Any] = defer.Deferred()
        dataFile = open(dataPath, "rb")
        factory = RelaySenderFactory(
            s.username.encode("utf-8") if s.username else None,
            s.password,
            entry.sender,
            [entry.recipient.encode("utf-8")],
            dataFile,
            result,
            retries=0,
            timeout=RESPONSE_TIMEOUT,
            contextFactory=self._tlsOptions if s.starttls else None,
            heloFallback=False,
            requireAuthentication=s.username is not None,
            requireTransportSecurity=s.usesTLS,
        )
        factory.domain = self._helo
        connecting = self.endpoint().connect(factory)

        def notConnected(reason: Failure) -> None:
            if not result.called:
                result.errback(reason)

        connecting.addErrback(notConnected)

        def cancel(d: defer.Deferred[None]) -> None:
            connecting.cancel()
            protocol = factory.currentProtocol
            if protocol is not None and protocol.transport is not None:
                protocol.transport.abortConnection()

        outcome: defer.Deferred[None] = defer.Deferred(cancel)

        def finished(value: Any) -> None:
            dataFile.close()
            if isinstance(value, Failure):
                error = value.value
                if isinstance(error, smtp.SMTPDeliveryError):
                    refused = _refusal(error)
                    if refused is not None:
                        value = Failure(refused)
                if not outcome.called:
                    outcome.errback(value)
            elif not outcome.called:
                outcome.callback(None)

        result.addBoth(finished)
        return outcome
