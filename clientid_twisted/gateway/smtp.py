# -*- test-case-name: tests.test_gateway_smtp_relay,tests.test_gateway_smtp -*-
"""
The SMTP submission gateway: our submission front (L{SubmissionESMTP}:
EHLO, STARTTLS, CLIENTID, AUTH PLAIN/LOGIN, limits, logging) until AUTH
succeeds, then the backend's authenticated session for the mail
transactions.

The password is checked by the backend: L{SMTPBackendChecker} logs in
there (EHLO, STARTTLS, C{XCLIENT} with the client's address and EHLO
name, C{AUTH PLAIN}) under
L{ClientIDChecker}, which asks the device policy first.  The logged-in
backend connection is the avatar.  After C{235}, C{MAIL}, C{RCPT},
C{DATA}, C{BDAT}, C{RSET}, C{NOOP} and C{QUIT} go to the backend one at a
time and its replies come back unchanged, so the backend decides relay,
sender ownership, size and queueing; every other command (EHLO, AUTH,
CLIENTID, VRFY, ...) is still the front's.  Message data streams through:
at most one read of the client's input is held while the backend answers,
and a slow backend stops the reading (producer/consumer).
"""

from __future__ import annotations

import re
from typing import Any

from zope.interface import implementer

from twisted.cred.portal import IRealm, Portal
from twisted.internet import defer
from twisted.internet.interfaces import IPushProducer
from twisted.logger import Logger
from twisted.mail import smtp
from twisted.python.failure import Failure

from clientid_twisted.gateway.backend import Backend
from clientid_twisted.gateway.checker import BackendPasswordChecker
from clientid_twisted.gateway.config import GatewayConfig
from clientid_twisted.gateway.smtpbackend import BackendSMTPSession, Reply, loginToSMTPBackend
from clientid_twisted.interfaces import IClientIDPolicy
from clientid_twisted.policy import ClientIDChecker
from clientid_twisted.server.submission import (
    AUTH_LINE_MAX,
    COMMAND_LINE_MAX,
    SubmissionESMTP,
    SubmissionFactory,
)

__all__ = [
    "GatewayESMTP",
    "GatewaySMTPRealm",
    "GatewaySubmissionFactory",
    "SMTPBackendChecker",
    "gatewaySMTPFactory",
]

_log = Logger()

RELAYED = frozenset([b"MAIL", b"RCPT", b"DATA", b"BDAT", b"RSET", b"NOOP", b"QUIT"])
"""The commands that go to the backend once the client is logged in."""

_END_OF_DATA = b"\r\n.\r\n"
_BDAT = re.compile(rb"BDAT +([0-9]{1,18})( +LAST)? *\Z", re.IGNORECASE)

_BACKEND_LOST = b"4.4.2 %s Lost the connection to the mail server, closing connection"


class SMTPBackendChecker(BackendPasswordChecker):
    """
    Checks a password with C{AUTH PLAIN} on the SMTP submission backend;
    the avatar ID is the logged-in L{BackendSMTPSession}.  A login the
    device policy refused never reaches the backend
    (L{BackendPasswordChecker}).
    """

    def __init__(
        self,
        backend: Backend,
        hostname: bytes,
        clock: Any = None,
        initialRefusalSeconds: float = 2.0,
    ) -> None:
        """
        @param hostname: The gateway's name, for its EHLO to the backend.
        """
        super().__init__(backend, clock, initialRefusalSeconds)
        self.hostname = hostname

    def logIn(self, username: bytes, password: bytes, credentials: Any) -> defer.Deferred[Any]:
        return loginToSMTPBackend(
            self.backend,
            self.hostname,
            username,
            password,
            getattr(credentials, "peer", None),
            getattr(credentials, "helo", None),
        )


@implementer(IPushProducer)
class _ClientReading:
    """
    The client's input as the producer of what goes to the backend.  Not
    the client's transport itself: when the backend's connection ends,
    Twisted stops its producer, which would cut the client off before it
    hears why (the front's 421).
    """

    def __init__(self, front: GatewayESMTP) -> None:
        self._front = front

    def pauseProducing(self) -> None:
        self._front.holdInput()

    def resumeProducing(self) -> None:
        if not self._front._awaiting:
            self._front.releaseInput()

    def stopProducing(self) -> None:
        pass


@implementer(IRealm)
class GatewaySMTPRealm:
    """
    The avatar of a gateway AUTH is the logged-in backend session (the
    checker's avatar ID); logging out closes it.
    """

    def requestAvatar(self, avatarId: Any, mind: Any, *interfaces: Any) -> tuple[Any, Any, Any]:
        if smtp.IMessageDelivery not in interfaces or not isinstance(
            avatarId, BackendSMTPSession
        ):
            raise NotImplementedError("the SMTP gateway's realm gives SMTP backend sessions")
        return smtp.IMessageDelivery, avatarId, avatarId.close


class GatewayESMTP(SubmissionESMTP):
    """
    The front of the SMTP gateway (see the module docstring).

    @ivar relay: The backend session once AUTH succeeded, else L{None}.
    """

    relay: BackendSMTPSession | None = None
    _relayBuffer = b""
    _relayState = "command"  # "command", "data" (DATA) or "chunk" (BDAT)
    _awaiting = False
    _dataTail = b""
    _chunkLeft = 0
    _chunkReply: defer.Deferred[Reply] | None = None
    _chunkRefused: bytes | None = None
    _discardingLine = False
    _backendSaidGoodbye = False

    # -- the switch ---------------------------------------------------------------

    def loginSucceeded(self, loginInfo: Any) -> None:
        iface, session, logout = loginInfo
        if not isinstance(session, BackendSMTPSession):
            super().loginSucceeded(loginInfo)
            return
        self.relay = session
        self.authenticated = True
        self.logoutHook = logout
        self.challenger = None
        session.protocol.unsolicited = self._unsolicitedReply
        session.protocol.closed.addCallback(self._backendClosed)
        # What the client pipelined behind AUTH belongs to the relay, in
        # order: the lines held while the login ran, then the partial one.
        held, self.blocked = self.blocked or [], None
        self._relayBuffer = b"".join(line + b"\r\n" for line in held) + self.unparsedInput
        self.unparsedInput = b""
        # Backpressure: while the backend's send buffer is full, stop
        # reading from the client.
        session.transport.registerProducer(_ClientReading(self), True)

    def _cbClientIDLogin(self, result: Any, credentials: Any) -> None:
        super()._cbClientIDLogin(result, credentials)
        if self.relay is not None:
            # The 235 is out: now what the client sent after it.
            self._pump()

    # -- input --------------------------------------------------------------------

    def dataReceived(self, data: bytes) -> None:
        if self.relay is None:
            super().dataReceived(data)
            return
        if self.closing or self._guardGone:
            return
        self._relayBuffer += data
        self._pump()
        if not self.closing and not self._guardGone:
            self._updateDeadlines()

    def _pump(self) -> None:
        """
        Pass on what the client sent, as far as the conversation allows:
        commands one at a time (each waits for the backend's reply),
        message data as it comes.
        """
        while self._relayBuffer and not self._awaiting and not self.closing and self.relay:
            if self._relayState == "data":
                self._pumpData()
            elif self._relayState == "chunk":
                self._pumpChunk()
            elif not self._pumpCommand():
                break
        if self._awaiting:
            # Unread input stays in the kernel, not here.
            self.holdInput()

    def _pumpCommand(self) -> bool:
        """
        Take one command line, if complete.

        @return: Whether one was taken.
        """
        end = self._relayBuffer.find(b"\r\n")
        if end < 0:
            if len(self._relayBuffer) > AUTH_LINE_MAX:
                # Keep nothing of an endless line; answer at its end.
                self._discardingLine = True
                self._relayBuffer = self._relayBuffer[-1:]
            return False
        line, self._relayBuffer = self._relayBuffer[:end], self._relayBuffer[end + 2 :]
        if self._discardingLine:
            self._discardingLine = False
            self.sendCode(500, b"5.5.2 Line too long")
            return True
        self._relayCommand(line)
        return True

    def _relayCommand(self, line: bytes) -> None:
        self._cancelTimer("command")
        self._commandSinceTLS = True
        if self.draining:
            self.closeSession("shutdown")
            return
        verb = line.split(b" ", 1)[0].upper()
        if verb not in RELAYED:
            # EHLO, AUTH, CLIENTID, VRFY, unknown...: the front's, as
            # before the login.
            SubmissionESMTP.lineReceived(self, line)
            if verb in (b"EHLO", b"HELO") and self.relay is not None:
                # EHLO resets the mail transaction, which lives on the
                # backend.
                self._send(b"RSET").addCallback(lambda reply: None)
            return
        if len(line) > COMMAND_LINE_MAX:
            self.sendCode(500, b"5.5.2 Line too long")
            return
        self.refreshIdleTimeout()
        if verb == b"BDAT":
            self._startChunk(line)
            return
        d = self._send(line)
        if verb == b"DATA":
            d.addCallback(self._dataAnswered)
        elif verb == b"QUIT":
            d.addCallback(self._quitAnswered)
        else:
            d.addCallback(self._answer)
        self._wait(d)

    # -- DATA ---------------------------------------------------------------------

    def _dataAnswered(self, reply: Reply) -> None:
        self._answer(reply)
        if reply.code == 354:
            self._relayState = "data"
            # The body starts a line, as if after a CRLF.
            self._dataTail = b"\r\n"

    def _pumpData(self) -> None:
        """
        Pass on message data up to and including the final dot line; then
        wait for the backend's verdict on the message.
        """
        assert self.relay is not None
        window = self._dataTail + self._relayBuffer
        found = window.find(_END_OF_DATA)
        if found < 0:
            chunk, self._relayBuffer = self._relayBuffer, b""
            self._dataTail = window[-4:]
            self.relay.protocol.write(chunk)
            return
        end = found + len(_END_OF_DATA) - len(self._dataTail)
        chunk, self._relayBuffer = self._relayBuffer[:end], self._relayBuffer[end:]
        self.relay.protocol.write(chunk)
        self._relayState = "command"
        self._wait(self.relay.protocol.expectReply().addCallback(self._answer))

    # -- BDAT (RFC 3030) ------------------------------------------------------------

    def _startChunk(self, line: bytes) -> None:
        """
        C{BDAT size [LAST]}: the chunk's bytes follow the line at once, so
        they are read (and passed on, or dropped) whatever the answer.
        """
        assert self.relay is not None
        match = _BDAT.match(line)
        if match is None:
            self.sendCode(501, b"5.5.4 Syntax: BDAT size [LAST]")
            return
        self._chunkLeft = int(match.group(1))
        self._relayState = "chunk"
        if b"CHUNKING" not in self.relay.extensions:
            self._chunkRefused = b"5.5.1 The mail server does not take BDAT"
        else:
            self._chunkRefused = None
            self._chunkReply = self._send(line)
        if self._chunkLeft == 0:
            self._endChunk()

    def _pumpChunk(self) -> None:
        assert self.relay is not None
        chunk = self._relayBuffer[: self._chunkLeft]
        self._relayBuffer = self._relayBuffer[len(chunk) :]
        self._chunkLeft -= len(chunk)
        if self._chunkRefused is None:
            self.relay.protocol.write(chunk)
        if self._chunkLeft == 0:
            self._endChunk()

    def _endChunk(self) -> None:
        self._relayState = "command"
        reply, self._chunkReply = self._chunkReply, None
        if reply is None:
            self.sendCode(502, self._chunkRefused or b"")
            return
        self._wait(reply.addCallback(self._answer))

    # -- replies ------------------------------------------------------------------

    def _send(self, line: bytes) -> defer.Deferred[Reply]:
        assert self.relay is not None
        return self.relay.protocol.command(line)

    def _wait(self, d: defer.Deferred[Any]) -> None:
        """
        Read no further until C{d} (the backend's answer) has fired.
        """
        self._awaiting = True
        d.addErrback(self._backendFailed)
        d.addBoth(self._answered)

    def _answered(self, ignored: object) -> None:
        self._awaiting = False
        if self.closing or self._guardGone:
            return
        self.releaseInput()
        self._pump()
        self.refreshIdleTimeout()

    def _answer(self, reply: Reply) -> None:
        if not self._guardGone:
            self.transport.write(reply.raw)
            if reply.code // 100 == 5:
                self.countError()

    def _quitAnswered(self, reply: Reply) -> None:
        self._answer(reply)
        # Read again: the TLS close needs the client's close_notify.
        self.releaseInput()
        self.closing = True
        self.transport.loseConnection()

    def _unsolicitedReply(self, reply: Reply) -> None:
        # The backend speaks out of turn before it closes (421 on its own
        # timeout): the client hears it as the backend said it.
        self._answer(reply)
        self._backendSaidGoodbye = reply.code == 421

    def _backendFailed(self, reason: Failure) -> None:
        # The backend went away with a command outstanding.
        self._backendClosed(None)

    def _backendClosed(self, ignored: object) -> None:
        """
        The backend ended the session: end the client's too, once what
        the backend said has been written (with a 421 of our own unless
        the backend sent one).
        """
        self.logoutHook = None
        if self._guardGone or self.closing:
            return
        if self._backendSaidGoodbye:
            self.closing = True
            self.transport.loseConnection()
            return
        self.closeSession("backend-lost")

    # -- the guard's view ---------------------------------------------------------

    def sendGoodbye(self, event: str) -> None:
        if event == "backend-lost":
            self.sendCode(421, _BACKEND_LOST % (self.host,))
            return
        super().sendGoodbye(event)

    def inTransfer(self) -> bool:
        if self.relay is not None:
            return self._relayState != "command"
        return super().inTransfer()

    def hasPartialLine(self) -> bool:
        if self.relay is not None:
            return bool(self._relayBuffer) or self._discardingLine
        return super().hasPartialLine()

    def isBusy(self) -> bool:
        if self.relay is not None:
            return self._awaiting or self._relayState != "command"
        return super().isBusy()

    def connectionLost(self, reason: Any = None) -> None:
        super().connectionLost(reason)
        if self.relay is not None:
            self.relay.end()


class GatewaySubmissionFactory(SubmissionFactory):
    """
    Builds L{GatewayESMTP} fronts.
    """

    protocol = GatewayESMTP


def gatewaySMTPFactory(
    config: GatewayConfig,
    policy: IClientIDPolicy,
    hostname: str,
    reactor: Any = None,
    **factoryArguments: Any,
) -> GatewaySubmissionFactory:
    """
    The SMTP gateway's factory: AUTH checked by C{config.smtpBackend}
    under the device policy, mail transactions relayed to it.

    @param hostname: The gateway's name (its greeting, and its EHLO to
        the backend).
    @param factoryArguments: For L{GatewaySubmissionFactory} (C{context},
        C{limits}, C{limiter}).
    @raise ValueError: If C{[gateway] backend_ca} cannot be read.
    """
    assert config.smtpBackend is not None
    backend = Backend(config.smtpBackend, config, reactor, "SMTP")
    name = hostname.encode("idna")
    checker = ClientIDChecker(SMTPBackendChecker(backend, name, reactor), policy)
    factory = GatewaySubmissionFactory(Portal(GatewaySMTPRealm(), [checker]), **factoryArguments)
    factory.domain = name
    _log.info(
        "SMTP gateway: logins and mail go to {endpoint}",
        endpoint=config.smtpBackend.description,
    )
    return factory
