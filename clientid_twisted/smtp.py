# -*- test-case-name: tests.test_smtp_server,tests.test_smtp_client -*-
"""
The CLIENTID extension for C{twisted.mail}'s ESMTP server and client.

Server: mix L{ClientIDESMTPMixin} into an L{ESMTP <twisted.mail.smtp.ESMTP>} subclass (or use
L{ClientIDESMTP}).  The mixin adds the C{CLIENTID} verb and EHLO keyword
following the drafts and this project's contract (docs/spec-notes), keeps
the accepted identity as C{clientIdentity}, and hands it to C{twisted.cred}
on every AUTH inside credentials that provide
L{IClientIdentifiedCredentials}.

Client: L{ClientIDESMTPSender} / L{ClientIDESMTPSenderFactory} present an
identity after TLS, when the server lists the keyword, before AUTH.
"""

from __future__ import annotations

import base64
import binascii
import re
from typing import Any, Callable


from twisted.cred.error import UnauthorizedLogin
from twisted.internet import defer
from twisted.internet.interfaces import ISSLTransport
from twisted.logger import Logger
from twisted.mail import smtp
from twisted.mail.imap4 import IllegalClientResponse, PLAINCredentials
from twisted.python.failure import Failure

from clientid_twisted._loginhold import LoginHoldMixin
from clientid_twisted._smtpfixes import ESMTPSeamsMixin, ESMTPSenderSeamsMixin
from clientid_twisted._authlog import escapeForLog, logLoginFailure
from clientid_twisted.cred import identifyCredentials
from clientid_twisted._fingerprint import IdentityHasher
from clientid_twisted._sasl import foreignAuthorization
from clientid_twisted._sessioninfo import ClientIDSessionMixin
from clientid_twisted._identity import (
    ClientIdentity,
    MalformedClientID,
    parseClientIDArguments,
)

__all__ = [
    "ClientIDESMTPMixin",
    "ClientIDESMTP",
    "ClientIDESMTPFactory",
    "ClientIDESMTPSenderMixin",
    "ClientIDESMTPSender",
    "ClientIDESMTPSenderFactory",
]

_COMMAND_PREFIX = re.compile(rb"CLIENTID ", re.IGNORECASE)
_CLIENTID_VERB = re.compile(rb"\s*CLIENTID(?![A-Za-z0-9-])", re.IGNORECASE)
_UNCLEAN = re.compile(rb"[^\x01-\x7f]")

UNRECOGNIZED = b"5.5.2 Syntax error, command unrecognized"
"""The text of the 500 an unknown command gets (and CLIENTID where it is
not available, byte for byte)."""


class ClientIDESMTPMixin(ClientIDSessionMixin, LoginHoldMixin, ESMTPSeamsMixin):
    """
    Adds CLIENTID to an L{twisted.mail.smtp.ESMTP} subclass.

    Put it before C{ESMTP} in the bases.  Replies, in order of precedence
    (the first that applies wins):

      1. extension off, or no TLS: exactly the reply to an unknown command;
      2. any AUTH command seen since TLS began: 503;
      3. no EHLO since TLS began, or HELO after it: 503;
      4. a CLIENTID already accepted since the last EHLO/HELO/STARTTLS: 503;
      5. malformed (the raw line, so a tab, two spaces, NUL or non-ASCII
         count): 501;
      6. otherwise 250, and the identity is kept as C{clientIdentity}.

    @ivar clientIDEnabled: Switch for the extension.
    @ivar clientIdentity: The accepted L{ClientIdentity}, or L{None}.
    @ivar identityHasher: Gives the keyed fingerprints that logs show
        instead of tokens; a per-process random key when not set.
    """

    protocolName = "smtp"
    clientIDEnabled = True
    clientIdentity: ClientIdentity | None = None
    # Twisted's own "Receiving message for delivery" line carries the
    # client's addresses raw; do_DATA logs them escaped instead.
    noisy = False

    _log = Logger()
    _authSeen = False
    _ehloSinceTLS = False
    _discardingPlaintext = False
    _authMechanism = b""

    # Attributes of ESMTP we use, for the type checker.
    transport: Any
    challengers: dict[bytes, Any]
    challenger: Any
    portal: Any
    mode: Any
    authenticated: bool
    startedTLS: bool
    delivery: Any
    deliveryFactory: Any
    _helo: Any
    _from: Any
    _to: list[Any]
    sendCode: Any

    # -- state ------------------------------------------------------------

    def clientIDAvailable(self) -> bool:
        """
        Whether CLIENTID is listed in EHLO and may be used: switched on and
        encrypted.
        """
        return bool(self.clientIDEnabled) and self.isEncrypted()

    # -- line handling ----------------------------------------------------

    def dataReceived(self, data: bytes) -> None:
        """
        Split lines as usual, but drop whatever plaintext followed a
        STARTTLS line in the same read: it was sent before the handshake and
        must never run as if it came over TLS (RFC 3207 section 4.2).
        """
        self._discardingPlaintext = False
        super().dataReceived(data)
        if self._discardingPlaintext:
            self.unparsedInput = b""
            self._discardingPlaintext = False

    def lineReceived(self, line: bytes) -> Any:
        if self._discardingPlaintext:
            return None
        # While a login is being decided, LoginHoldMixin holds the line.
        return super().lineReceived(line)

    def state_COMMAND(self, line: bytes) -> None:
        """
        Take CLIENTID lines before Twisted's command splitter (which strips
        and collapses white space): the handler gets the raw line, as the
        IMAP mixin's C{parse_command} does.  Answer a line with NUL or
        non-ASCII bytes with a 500 instead of letting Twisted's command
        lookup raise (which drops the connection).
        """
        verb = _CLIENTID_VERB.match(line)
        if verb is not None:
            # CLIENTID, whatever follows the name (a NUL, non-ASCII): where
            # the extension is usable that is a malformed CLIENTID (501).
            self.clientIDCommand(line)
        elif _UNCLEAN.search(line):
            self.sendCode(500, b"Syntax error: command contains NUL or non-ASCII bytes")
        else:
            super().state_COMMAND(line)

    def do_UNKNOWN(self, rest: bytes) -> None:
        """
        An unknown command: C{500 5.5.2} with RFC 5321's wording (Twisted's
        "Command not implemented" belongs to 502).
        """
        self.sendCode(500, UNRECOGNIZED)

    # -- EHLO / HELO / STARTTLS ---------------------------------------------

    def extensions(self) -> dict[bytes, Any]:
        """
        List C{CLIENTID} while usable, and never beside C{PIPELINING}: the
        newest draft says it SHOULD NOT be, and a client that pipelines AUTH
        behind CLIENTID cannot react to the CLIENTID reply.
        """
        ext = super().extensions()
        if self.isEncrypted():
            ext.pop(b"STARTTLS", None)
        if self.clientIDAvailable():
            ext.pop(b"PIPELINING", None)
            ext[b"CLIENTID"] = None
        return ext

    def do_EHLO(self, rest: bytes) -> None:
        self._forgetIdentity()
        self._ehloSinceTLS = True
        super().do_EHLO(rest)

    def do_HELO(self, rest: bytes) -> None:
        self._forgetIdentity()
        self._ehloSinceTLS = False
        super().do_HELO(rest)

    def _forgetIdentity(self) -> None:
        self._identityDropped()
        self.clientIdentity = None

    def connectionLost(self, reason: Any = None) -> None:
        self._identityDropped()
        super().connectionLost(reason)

    def ext_STARTTLS(self, rest: bytes) -> None:
        if self.isEncrypted():
            self.sendCode(503, b"TLS already active")
            return
        wasStarted = self.startedTLS
        super().ext_STARTTLS(rest)
        if self.startedTLS and not wasStarted:
            self._forgetSession()

    def _forgetSession(self) -> None:
        """
        Forget everything the client said before TLS (RFC 3207 section 4.2):
        the EHLO greeting, the transaction, any identity or AUTH, and the
        rest of the plaintext read that carried the STARTTLS line.
        """
        self._discardingPlaintext = True
        self.unparsedInput = b""
        self._forgetIdentity()
        self._ehloSinceTLS = False
        self._authSeen = False
        self._helo = (None, self._peerHost().encode("ascii", "replace"))
        self._from = None
        self._to = []
        if self.authenticated:
            self.authenticated = False
            self.delivery = None
            self.deliveryFactory = None
            if self.logoutHook is not None:
                self.logoutHook()
                self.logoutHook = None

    def do_DATA(self, rest: bytes) -> None:
        """
        Twisted's DATA; once it accepted the message, log whom it is from
        and for, with every client-chosen name escaped (Twisted's own line,
        switched off by C{noisy}, wrote them raw).
        """
        helo, origin, recipients = self._helo, self._from, list(self._to)
        super().do_DATA(rest)
        if self.mode == smtp.DATA:
            self._log.info(
                "Receiving message from {peer} (helo={helo}): from={origin} to={recipients}",
                protocol="smtp",
                peer=self._peerHost(),
                helo=escapeForLog(helo[0] if helo else None),
                origin=escapeForLog(bytes(origin) if origin is not None else None),
                recipients=", ".join(escapeForLog(bytes(user.dest)) for user, _ in recipients),
            )

    # -- CLIENTID -----------------------------------------------------------

    def clientIDCommand(self, line: bytes) -> None:
        """
        Handle a C{CLIENTID type token} command line, raw as it came.
        """
        if not self.clientIDAvailable():
            self.do_UNKNOWN(line)
            return
        if self._authSeen:
            self._refuseClientID(503, b"Bad sequence of commands: CLIENTID must come before AUTH", "after AUTH")
            return
        if not self._ehloSinceTLS:
            self._refuseClientID(503, b"Bad sequence of commands: send EHLO first", "no EHLO since TLS")
            return
        if self.clientIdentity is not None:
            self._refuseClientID(503, b"Bad sequence of commands: CLIENTID already given", "repeated")
            return
        prefix = _COMMAND_PREFIX.match(line)
        try:
            if prefix is None:
                raise MalformedClientID("expected: CLIENTID SP type SP token")
            identity = parseClientIDArguments(line[prefix.end():])
        except MalformedClientID:
            self._refuseClientID(501, b"Syntax error in parameters: CLIENTID <type> <token>", "malformed")
            return
        self._identityAccepted(identity)
        self.sendCode(250, b"OK")

    def _refuseClientID(self, code: int, message: bytes, reason: str) -> None:
        self._log.info(
            "CLIENTID refused from {peer}: {reason}",
            clientIDEvent="refused",
            protocol="smtp",
            peer=self._peerHost(),
            reason=reason,
        )
        self.sendCode(code, message)

    # -- AUTH -------------------------------------------------------------

    def ext_AUTH(self, rest: bytes) -> None:
        """
        Start SASL authentication; like Twisted's, but every AUTH counts for
        CLIENTID ordering, an empty or unknown mechanism is a clean error,
        and C{=} is the empty initial response (RFC 4954 section 4).
        """
        self._authSeen = True
        if self.authenticated:
            self.sendCode(503, b"Already authenticated")
            return
        parts = rest.split(None, 1)
        if not parts:
            self.sendCode(501, b"Syntax: AUTH mechanism [initial-response]")
            return
        factory = self.challengers.get(parts[0].upper())
        if factory is None:
            self.sendCode(504, b"Unrecognized authentication type")
            return
        self.mode = smtp.AUTH
        self._authMechanism = parts[0].upper()
        self.challenger = factory()
        response: bytes | None = None
        if len(parts) > 1:
            self.challenger.getChallenge()
            response = b"" if parts[1] == b"=" else parts[1]
        self.state_AUTH(response)

    def state_AUTH(self, response: bytes | None) -> None:
        """
        One step of SASL.  When the mechanism has its answer, wrap its
        credentials with the identity and ask the portal.
        """
        if self.portal is None:
            self.mode = smtp.COMMAND
            self.sendCode(454, b"4.7.0 Temporary authentication failure")
            return
        if response is None:
            self.sendCode(334, base64.b64encode(self.challenger.getChallenge()))
            return
        if response == b"*":
            self._endAuth(501, b"Authentication aborted")
            return
        try:
            decoded = base64.b64decode(response, validate=True)
        except (binascii.Error, ValueError):
            self._endAuth(501, b"Syntax error in authentication response")
            return
        refusal: str | None = None
        try:
            self.challenger.setResponse(decoded)
        except IllegalClientResponse:
            # Valid base64 the mechanism cannot use (PLAIN's "=", the empty
            # response): a failed exchange, refused like a wrong password.
            refusal = "unusable SASL response"
        else:
            if self.challenger.moreChallenges():
                self.sendCode(334, base64.b64encode(self.challenger.getChallenge()))
                return
            if foreignAuthorization(self._authMechanism, decoded):
                refusal = "PLAIN authorization identity differs from the login"
        self.mode = smtp.COMMAND
        credentials = identifyCredentials(
            self.challenger,
            self.clientIdentity,
            self.transport.getPeer(),
            self.protocolName,
            self.isEncrypted(),
            helo=self._helo[0] if self._helo else None,
        )
        self.challenger = None
        if refusal is not None:
            d = defer.fail(UnauthorizedLogin(refusal))
        else:
            d = self.portal.login(
                credentials, None, smtp.IMessageDeliveryFactory, smtp.IMessageDelivery
            )
        # The fields (and the CLIENTID's acceptance they report) belong to
        # this login from now on, even if the client leaves before the
        # decision.
        fields = self._authLogFields(credentials)
        d.addCallback(self._cbClientIDLogin, fields)
        d.addErrback(self._ebClientIDLogin, fields)
        self._awaitLogin(d)

    def _awaitLogin(self, d: Any) -> None:
        """
        Hold the commands that arrive while the portal decides, and run them
        once the AUTH reply is out (C{d} fires after it, even when the reply
        is sent later), in the state the login leaves: a pipelined command
        never overtakes the reply, and a client cannot have several
        password guesses checked at once.
        """
        d.addErrback(lambda f: self._log.failure("Answering AUTH failed", f))
        self.holdLinesUntil(d)

    def _endAuth(self, code: int, message: bytes) -> None:
        self.challenger = None
        self.mode = smtp.COMMAND
        self.sendCode(code, message)

    def _authLogFields(self, credentials: Any) -> dict[str, Any]:
        identity = credentials.clientIdentity
        return dict(
            protocol="smtp",
            peer=self._peerHost(),
            username=escapeForLog(getattr(credentials, "username", None)),
            **self._loginLogFields(identity),
        )

    def _cbClientIDLogin(self, result: Any, fields: dict[str, Any]) -> None:
        gone = self._connectionGone
        if gone:
            # Decided after the client left: the avatar is let go at once,
            # the login logged like any other and answered to no one.
            iface, avatar, logout = result
            logout()
        else:
            self.loginSucceeded(result)
        self._log.info(
            "AUTH succeeded for {username} from {peer} "
            "({clientID})",
            authEvent="succeeded",
            **fields,
        )
        if not gone:
            self.sendCode(235, b"2.7.0 Authentication successful")

    def _ebClientIDLogin(self, reason: Failure, fields: dict[str, Any]) -> None:
        """
        Every refusal gets one reply whatever its reason (wrong password,
        unknown user, device policy): nothing on the wire tells them apart.
        Anything that is not a refusal is a temporary failure.  After the
        client left, it is only logged.
        """
        refused = logLoginFailure(self._log, reason, command="AUTH", **fields)
        if self._connectionGone:
            return
        if refused:
            self.sendCode(535, b"5.7.8 Authentication credentials invalid")
            return
        self.sendCode(454, b"4.7.0 Temporary authentication failure")


class ClientIDESMTP(ClientIDESMTPMixin, smtp.ESMTP):
    """
    L{twisted.mail.smtp.ESMTP} with CLIENTID.
    """


class ClientIDESMTPFactory(smtp.SMTPFactory):
    """
    Builds L{ClientIDESMTP} protocols sharing one portal, TLS context, and
    configuration.

    @ivar context: TLS context factory for STARTTLS, or L{None}.
    @ivar challengers: SASL mechanisms by name.  PLAIN and LOGIN by default:
        CRAM-MD5 would need passwords stored in clear on the server.
    @ivar clientIDEnabled: Passed to each protocol.
    @ivar identityHasher: Passed to each protocol: the hasher the device
        policy uses (L{clientid_twisted.policy._builder.Authentication.hasher}),
        so the protocol log's fingerprints are the policy's; a random one
        when none is given.
    @ivar identityLogPolicy: Passed to each protocol: which types its log
        lines may show (the policy's C{system-log} handling flag).
    """

    protocol = ClientIDESMTP
    context = None
    clientIDEnabled = True
    identityHasher: IdentityHasher | None = None
    identityLogPolicy: Callable[[str], bool] | None = None

    def __init__(
        self,
        portal: Any = None,
        context: Any = None,
        identityHasher: IdentityHasher | None = None,
    ) -> None:
        smtp.SMTPFactory.__init__(self, portal)
        self.context = context
        self.challengers = {
            b"PLAIN": PLAINCredentials,
            b"LOGIN": smtp.LOGINCredentials,
        }
        if identityHasher is not None:
            self.identityHasher = identityHasher
        elif self.identityHasher is None:
            self.identityHasher = IdentityHasher.ephemeral()

    def buildProtocol(self, addr: Any) -> Any:
        p = smtp.SMTPFactory.buildProtocol(self, addr)
        p.challengers = self.challengers
        p.ctx = self.context
        p.clientIDEnabled = self.clientIDEnabled
        p.identityHasher = self.identityHasher
        p.identityLogPolicy = self.identityLogPolicy
        p.factory = self
        return p


# -- client side ---------------------------------------------------------------


class ClientIDESMTPSenderMixin(ESMTPSenderSeamsMixin):
    """
    Makes an L{twisted.mail.smtp.ESMTPClient} present a client identity.

    The identity goes out once, only over TLS, only when the EHLO reply read
    after TLS lists C{CLIENTID}, and just before AUTH.  When the server does
    not list it, or refuses it, the client carries on without it: the
    drafts make CLIENTID an addition, never a condition, for the client.

    @ivar clientIdentity: The L{ClientIdentity} to present, or L{None}.
    @ivar clientIDSent: Whether the identity went out on this connection.
    @ivar clientIDAccepted: Whether the server answered it with 250.
    """

    clientIdentity: ClientIdentity | None = None
    clientIDSent = False
    clientIDAccepted = False

    _expected: Any
    _okresponse: Any
    _failresponse: Any

    def authenticate(self, code: int, resp: bytes, items: dict[bytes, Any]) -> None:
        offered = {key.upper() for key in items}
        if (
            self.clientIdentity is not None
            and not self.clientIDSent
            and self.tlsMode
            and ISSLTransport.providedBy(self.transport)
            and b"CLIENTID" in offered
        ):
            self.clientIDSent = True

            def carryOn(code: int, resp: bytes) -> None:
                self.clientIDAccepted = code == 250
                super(ClientIDESMTPSenderMixin, self).authenticate(
                    code, resp, items
                )

            self._expected = [250]
            self._okresponse = carryOn
            self._failresponse = carryOn
            self.sendLine(b"CLIENTID " + self.clientIdentity.toArguments())
            return
        super().authenticate(code, resp, items)


class ClientIDESMTPSender(ClientIDESMTPSenderMixin, smtp.ESMTPSender):
    """
    L{twisted.mail.smtp.ESMTPSender} that presents a client identity.
    """


class ClientIDESMTPSenderFactory(smtp.ESMTPSenderFactory):
    """
    L{twisted.mail.smtp.ESMTPSenderFactory} whose protocols present
    C{clientIdentity}; every other argument is as Twisted's.
    """

    protocol = ClientIDESMTPSender

    def __init__(
        self, *args: Any, clientIdentity: ClientIdentity | None = None, **kwargs: Any
    ) -> None:
        smtp.ESMTPSenderFactory.__init__(self, *args, **kwargs)
        self.clientIdentity = clientIdentity

    def buildProtocol(self, addr: Any) -> Any:
        p = smtp.ESMTPSenderFactory.buildProtocol(self, addr)
        p.clientIdentity = self.clientIdentity
        return p
