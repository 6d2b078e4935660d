# -*- test-case-name: tests.test_imap_server,tests.test_imap_client -*-
"""
The CLIENTID extension for C{twisted.mail}'s IMAP4 server and client.

Server: mix L{ClientIDIMAP4ServerMixin} into an L{imap4.IMAP4Server}
subclass (or use L{ClientIDIMAP4Server}, built by L{ClientIDIMAP4Factory}).
The mixin adds the C{CLIENTID} command and capability following the drafts
and this project's contract (docs/spec-notes), keeps the accepted identity
as C{clientIdentity}, and hands it to C{twisted.cred} on every LOGIN and
AUTHENTICATE inside credentials that provide
L{IClientIdentifiedCredentials}.

Client: L{ClientIDIMAP4Client} presents an identity after TLS, when the
capabilities read after TLS list it, before LOGIN/AUTHENTICATE, once;
L{loginWithClientID} runs the whole sequence.
"""

from __future__ import annotations

import base64
import binascii
import re
from typing import Any, Callable

from twisted.cred.credentials import UsernamePassword
from twisted.cred.error import UnauthorizedLogin
from twisted.internet import defer
from twisted.internet.interfaces import ISSLTransport
from twisted.internet.protocol import ServerFactory, connectionDone
from twisted.logger import Logger
from twisted.mail import imap4
from twisted.python.failure import Failure

from clientid_twisted._imapfixes import IMAP4ClientSeamsMixin, IMAP4ServerSeamsMixin
from clientid_twisted._loginhold import LoginHoldMixin
from clientid_twisted._authlog import escapeForLog, logLoginFailure
from clientid_twisted.cred import identifyCredentials
from clientid_twisted._errors import TemporaryAuthenticationFailure
from clientid_twisted._fingerprint import IdentityHasher
from clientid_twisted._sasl import foreignAuthorization
from clientid_twisted._sessioninfo import ClientIDSessionMixin
from clientid_twisted._identity import (
    ClientIdentity,
    MalformedClientID,
    parseClientIDArguments,
)

__all__ = [
    "ClientIDIMAP4ServerMixin",
    "ClientIDIMAP4Server",
    "ClientIDIMAP4Factory",
    "ClientIDNotAllowed",
    "ClientIDIMAP4ClientMixin",
    "ClientIDIMAP4Client",
    "loginWithClientID",
    "AUTHENTICATION_FAILED",
    "TEMPORARY_FAILURE",
    "PRIVACY_REQUIRED",
    "namesClientID",
]

_PRINTABLE = re.compile(rb"[\x21-\x7e]+")
# tag = 1*<any ASTRING-CHAR except "+"> (RFC 3501 section 9): printable
# US-ASCII without the atom-specials other than "]".
_NOT_TAG_CHARACTERS = frozenset(b'(){%*"\\+')

_PASSWORD_MECHANISMS = frozenset([b"PLAIN", b"LOGIN"])

AUTHENTICATION_FAILED = b"[AUTHENTICATIONFAILED] Authentication failed"
"""What every refused LOGIN or AUTHENTICATE gets, whatever the reason."""

TEMPORARY_FAILURE = b"[UNAVAILABLE] Temporary authentication failure"
"""What a LOGIN or AUTHENTICATE that could not be decided gets."""

PRIVACY_REQUIRED = b"[PRIVACYREQUIRED] Use STARTTLS before sending a password"
"""What LOGIN and AUTHENTICATE PLAIN/LOGIN get in plaintext while STARTTLS
is on offer (RFC 9051 section 7.1)."""


def _validTag(tag: bytes) -> bool:
    return _PRINTABLE.fullmatch(tag) is not None and not (
        _NOT_TAG_CHARACTERS.intersection(tag)
    )


_SYNTAX = b"Illegal syntax: "
_STATIC_SYNTAX_DETAILS = frozenset(
    [
        # Twisted's parsers' fixed texts, and ours.
        b"Missing argument",
        b"Unmatched quotes",
        b"Malformed literal",
        b"Malformed ATOM",
        b"Missing parenthesis",
        b"Mismatched parenthesis",
        b"Missing literal",
        b"Malformed flag",
        b"Malformed date-time",
        b"Missing charset identifier",
        b"Malformed Response - not base64",
        b"Invalid Argument",
        b"malformed arguments",
        b"8-bit bytes outside a string",
        b"bytes that do not decode",
        b"unexpected initial response",
    ]
)
_DETAIL_PREFIXES = {
    b"Too many arguments": b"Too many arguments",
    b"Bad literal size": b"Bad literal size",
    b"Bad message number": b"Bad message number",
}
_REDACTED_PREFIXES = (b"Illegal mailbox name: ", b"Server error: ")


def withoutClientData(message: bytes) -> bytes:
    """
    A BAD or NO text without what Twisted copies into it from the client's
    line or an exception (C{Too many arguments for command: b'secret'}
    repeats a password): the fixed part of the message only.
    """
    if message.startswith(_SYNTAX):
        detail = message[len(_SYNTAX):]
        if detail in _STATIC_SYNTAX_DETAILS:
            return message
        for prefix, fixed in _DETAIL_PREFIXES.items():
            if detail.startswith(prefix):
                return _SYNTAX + fixed
        return _SYNTAX + b"invalid arguments"
    for prefix in _REDACTED_PREFIXES:
        if message.startswith(prefix):
            return prefix[:-2]
    return message


def namesClientID(line: bytes) -> bool:
    """
    Whether a command line's command name (its second word) is CLIENTID.
    Such a line is parsed from its raw bytes: nothing in its token (a
    C{{5}}, C{{3+}}, a quote) is IMAP syntax.
    """
    return _commandName(line.split(None, 2)) == b"CLIENTID"


def _commandName(words: list[bytes]) -> bytes | None:
    """
    The command name, upper case, of a command line split into at most
    three words (tag, name, arguments); L{None} when it has none.
    """
    return words[1].upper() if len(words) >= 2 else None


class ClientIDIMAP4ServerMixin(ClientIDSessionMixin, LoginHoldMixin, IMAP4ServerSeamsMixin):
    """
    Adds CLIENTID to an L{imap4.IMAP4Server} subclass.

    Put it before C{IMAP4Server} in the bases.  C{CLIENTID} is listed in
    CAPABILITY (and in the greeting's capability code) while the extension
    is on, the connection is encrypted and the state is not-authenticated.
    A CLIENTID command gets, the first that applies winning:

      1. not listable now, or not yet listed since TLS began: exactly the
         reply Twisted gives an unknown command (the line I{is} handed to
         Twisted's parser, which knows no such command);
      2. an identity already accepted on this connection: BAD;
      3. malformed (checked on the raw line, so a tab, two spaces, a NUL,
         non-ASCII, or trailing bytes count): BAD;
      4. otherwise C{OK CLIENTID completed}, and the identity is kept as
         C{clientIdentity}.

    There is no rule about earlier LOGIN attempts: a refused LOGIN leaves the
    connection not authenticated, and CLIENTID is accepted there.

    LOGIN and AUTHENTICATE hand C{twisted.cred} credentials wrapped with
    L{identifyCredentials}.  Every refusal gets one reply, whatever its
    reason; anything else that goes wrong is a temporary failure, and
    neither says why on the wire.

    @ivar clientIDEnabled: Switch for the extension.
    @ivar clientIdentity: The accepted L{ClientIdentity}, or L{None}.
    @ivar clientIDAdvertised: Whether CLIENTID was listed to the client
        since TLS began (a CAPABILITY reply, or the implicit-TLS greeting).
    @ivar identityHasher: Gives the keyed fingerprints that logs show
        instead of tokens; a per-process random key when not set.
    @ivar saslInitialResponse: Whether to list and accept SASL-IR
        (RFC 4959): C{AUTHENTICATE PLAIN <base64>} in one line.
    @ivar idlePollInterval: Seconds between polls of the selected mailbox
        while the client IDLEs (no commands come then), or L{None} for none.
    """

    protocolName = "imap"
    clientIDEnabled = True
    clientIdentity: ClientIdentity | None = None
    clientIDAdvertised = False
    saslInitialResponse = True
    idlePollInterval: float | None = 10.0

    _log = Logger()
    _idlePollCall: Any = None
    _discardingPlaintext = False
    _skipPoll = False

    # Attributes of IMAP4Server we use, for the type checker.
    transport: Any
    state: str
    parseState: str
    portal: Any
    challengers: Any  # IMAP4Server's is untyped (None until set)
    account: Any
    mbox: Any
    startedTLS: bool
    ctx: Any
    canStartTLS: bool
    POSTAUTH_TIMEOUT: int
    sendPositiveResponse: Callable[..., None]
    sendLine: Callable[[bytes], Any]
    setTimeout: Callable[[Any], Any]
    callLater: Callable[..., Any]

    # -- state ------------------------------------------------------------

    def clientIDAvailable(self) -> bool:
        """
        Whether CLIENTID is listed in CAPABILITY now: switched on, encrypted,
        and not authenticated (draft section 3.3).
        """
        return (
            bool(self.clientIDEnabled)
            and self.isEncrypted()
            and self.state == "unauth"
        )

    def _passwordLoginDisabled(self) -> bool:
        """
        Whether passwords may not be sent yet: plaintext while STARTTLS is
        on offer (Twisted's C{LOGINDISABLED} rule, applied to PLAIN and
        LOGIN under AUTHENTICATE as well).
        """
        return b"LOGINDISABLED" in self.capabilities()

    # -- capabilities -------------------------------------------------------

    def capabilities(self) -> dict[bytes, Any]:
        """
        Twisted's capabilities, plus C{CLIENTID} while available and
        C{SASL-IR} while some C{AUTH=} is listed; password mechanisms are
        not offered while C{LOGINDISABLED} is.
        """
        cap = super().capabilities()
        if b"LOGINDISABLED" in cap:
            mechanisms = [
                mechanism
                for mechanism in cap.get(b"AUTH", [])
                if mechanism.upper() not in _PASSWORD_MECHANISMS
            ]
            if mechanisms:
                cap[b"AUTH"] = mechanisms
            else:
                cap.pop(b"AUTH", None)
        if self.saslInitialResponse and cap.get(b"AUTH"):
            # SASL-IR means nothing without a mechanism to use it with.
            cap[b"SASL-IR"] = None
        if self.clientIDAvailable():
            cap[b"CLIENTID"] = None
        return cap

    def sendServerGreeting(self) -> None:
        """
        The greeting carries the capabilities; on an implicit-TLS connection
        they list CLIENTID, which counts as advertising it.
        """
        listed = self.clientIDAvailable()
        super().sendServerGreeting()
        if listed:
            self.clientIDAdvertised = True

    def do_CAPABILITY(self, tag: bytes) -> None:
        listed = self.clientIDAvailable()
        super().do_CAPABILITY(tag)
        if listed:
            self.clientIDAdvertised = True

    # Twisted's command tables are untyped tuples whose first item takes
    # the protocol's own arguments: declared Any to match IMAP4Server.
    unauth_CAPABILITY: Any = (do_CAPABILITY,)
    auth_CAPABILITY = unauth_CAPABILITY
    select_CAPABILITY = unauth_CAPABILITY
    logout_CAPABILITY = unauth_CAPABILITY

    # -- replies -----------------------------------------------------------

    def sendBadResponse(self, tag: bytes | None = None, message: bytes = b"") -> None:
        """
        Twisted's BAD, without client data or exception text in it
        (L{withoutClientData}).
        """
        super().sendBadResponse(tag, withoutClientData(message))

    def sendNegativeResponse(self, tag: bytes | None = None, message: bytes = b"") -> None:
        """
        Twisted's NO, without client data or exception text in it.
        """
        super().sendNegativeResponse(tag, withoutClientData(message))

    # -- line handling ----------------------------------------------------

    def dataReceived(self, data: bytes) -> Any:
        # A new read after STARTTLS comes through the TLS layer.
        if not self.readingData:
            self._discardingPlaintext = False
        return super().dataReceived(data)

    def lineReceived(self, line: bytes) -> Any:
        """
        Drop lines that followed a STARTTLS line in plaintext, including
        lines Twisted queued while a command was in progress.
        """
        if self._discardingPlaintext:
            return None
        return super().lineReceived(line)

    def parse_command(self, line: bytes) -> Any:
        """
        Handle one command line in the normal command state (Twisted calls
        this from C{lineReceived} only then: not for literal data, AUTHENTICATE
        continuations or the end of IDLE).

        CLIENTID lines are taken before Twisted's argument parser sees them:
        it would read a token like C{"x} or C{x{5}} as IMAP syntax (a quoted
        string, a literal to wait for).  Other lines go to Twisted, after a
        poll of the selected mailbox.  An exception never puts its text on
        the wire.
        """
        words = line.split(None, 2)
        tag = words[0] if words else None
        try:
            name = _commandName(words)
            if self.state == "select" and not self._skipPoll and name != b"LOGOUT":
                # (Nothing is announced to a client that is leaving.)
                if self._pollBeforeCommand(line):
                    return None
            self._skipPoll = False
            if name == b"CLIENTID":
                if self._clientIDCommand(words[0], line):
                    return None
                # Not available: the very path an unknown command takes.
                # Twisted finds no handler for CLIENTID and answers as it
                # does for any other name it does not know.
            return super().parse_command(line)
        except Exception:
            self._log.failure(
                "Unexpected error handling an IMAP command from {peer}",
                peer=self._peerHost(),
            )
            self.sendBadResponse(tag, b"Server error")
            return None

    def lookupCommand(self, cmd: bytes) -> Any:
        """
        Look a command up as Twisted does, but let a name with NUL or
        non-ASCII bytes be an unknown command instead of an exception.
        """
        if _PRINTABLE.fullmatch(cmd) is None:
            return None
        return super().lookupCommand(cmd)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self._stopIdlePoll()
        self._identityDropped()
        super().connectionLost(reason)

    # -- polling the selected mailbox ----------------------------------------

    def pollMailbox(self) -> defer.Deferred[Any] | None:
        """
        Called before each command in the selected state.  If the selected
        mailbox has a callable C{poll}, call it, so that mail delivered
        meanwhile is announced (C{EXISTS}) before the command's reply.

        @return: A L{defer.Deferred} that fires when the poll is done (the
            command waits for it), or L{None} when there is nothing to poll
            or the poll is done already (a mailbox whose C{poll} answers at
            once, as the maildir's does).
        """
        poll = getattr(self.mbox, "poll", None)
        if not callable(poll):
            return None
        try:
            result = poll()
        except Exception:
            self._log.failure("Polling the selected mailbox failed")
            return None
        if isinstance(result, defer.Deferred):
            return result.addErrback(
                lambda f: self._log.failure("Polling the selected mailbox failed", f)
            )
        return None

    def _pollBeforeCommand(self, line: bytes) -> bool:
        """
        Poll; return whether C{line} must wait for the poll to finish.
        """
        d = self.pollMailbox()
        if d is None:
            return False
        finished = False

        def markFinished(result: object) -> object:
            nonlocal finished
            finished = True
            return result

        d.addBoth(markFinished)
        if finished:
            return False
        # Lines that arrive meanwhile queue up, as Twisted does while it
        # writes out a FETCH.
        self.blocked = []

        def resume(ignored: object) -> None:
            if self._connectionGone:
                return
            # Run the line that waited first, without polling again, then
            # whatever arrived meanwhile (as Twisted does).
            self._skipPoll = True
            self.blocked = [line] + (self.blocked or [])
            self.replayHeldLines()

        d.addCallback(resume)
        return True

    def do_IDLE(self, tag: bytes) -> None:
        """
        IDLE as Twisted does it; in the selected state, poll the mailbox
        every C{idlePollInterval} seconds meanwhile, so new mail is
        announced while the client waits (Thunderbird IDLEs).
        """
        super().do_IDLE(tag)
        if self.state == "select" and self.idlePollInterval:
            self._scheduleIdlePoll()

    select_IDLE: Any = (do_IDLE,)
    auth_IDLE = select_IDLE

    def parse_idle(self, *args: Any) -> None:
        self._stopIdlePoll()
        super().parse_idle(*args)

    def _scheduleIdlePoll(self) -> None:
        self._idlePollCall = self.callLater(self.idlePollInterval, self._idlePoll)

    def _stopIdlePoll(self) -> None:
        call, self._idlePollCall = self._idlePollCall, None
        if call is not None and call.active():
            call.cancel()

    def _idlePoll(self) -> None:
        self._idlePollCall = None
        if self.parseState != "idle" or self.state != "select":
            return
        if not callable(getattr(self.mbox, "poll", None)):
            return
        d = self.pollMailbox()
        if d is None:
            self._idlePollAgain()
        else:
            d.addCallback(lambda ignored: self._idlePollAgain())

    def _idlePollAgain(self) -> None:
        if (
            self.parseState == "idle"
            and not self._connectionGone
            and self._idlePollCall is None
        ):
            self._scheduleIdlePoll()

    # -- STARTTLS ------------------------------------------------------------

    def do_STARTTLS(self, tag: bytes) -> None:
        """
        Start TLS as Twisted does, then forget everything the plaintext part
        of the connection said (RFC 3501 section 6.2.1).
        """
        if self.isEncrypted():
            self.sendNegativeResponse(tag, b"TLS already negotiated")
            return
        wasStarted = self.startedTLS
        super().do_STARTTLS(tag)
        if self.startedTLS and not wasStarted:
            self._forgetPlaintext()

    unauth_STARTTLS: Any = (do_STARTTLS,)

    def _forgetPlaintext(self) -> None:
        """
        Discard the rest of the read that carried the STARTTLS line (and any
        partial line before it), lines Twisted still holds, any identity,
        and the record of having listed CLIENTID: none of it came over TLS.
        """
        self._discardingPlaintext = True
        self.unparsedInput = b""
        if self.blocked:
            del self.blocked[:]
        self._identityDropped()
        self.clientIdentity = None
        self.clientIDAdvertised = False

    # -- CLIENTID -------------------------------------------------------------

    def _clientIDCommand(self, tag: bytes, line: bytes) -> bool:
        """
        Handle a line whose command name is CLIENTID, from the raw bytes.

        @return: L{False} when CLIENTID is not available, so the line must
            get the reply to an unknown command; L{True} when answered.
        """
        if not self.clientIDAvailable():
            # Counted as SMTP counts it: after a login it is a refusal (as
            # CLIENTID after AUTH is); switched off or in plaintext it is
            # no CLIENTID command at all, just an unknown one.
            if self.clientIDEnabled and self.isEncrypted():
                self._logRefusal("after LOGIN")
            return False
        if not self.clientIDAdvertised:
            self._logRefusal("not advertised")
            return False
        if self.clientIdentity is not None:
            self._logRefusal("repeated")
            self.sendBadResponse(tag, b"CLIENTID already accepted on this connection")
            return True
        try:
            identity = self._parseClientIDLine(line)
        except MalformedClientID:
            self._logRefusal("malformed")
            self.sendBadResponse(
                tag, b"Malformed CLIENTID: expected CLIENTID <type> <token>"
            )
            return True
        self._identityAccepted(identity)
        self.sendPositiveResponse(tag, b"CLIENTID completed")
        return True

    @staticmethod
    def _parseClientIDLine(line: bytes) -> ClientIdentity:
        """
        Parse C{tag SP "CLIENTID" SP type SP token} exactly.

        @raise MalformedClientID: For anything else.
        """
        tag, space, rest = line.partition(b" ")
        if not space or not _validTag(tag):
            raise MalformedClientID("bad tag")
        name, space, arguments = rest.partition(b" ")
        if not space or name.upper() != b"CLIENTID":
            raise MalformedClientID("expected: CLIENTID SP type SP token")
        return parseClientIDArguments(arguments)

    def _logRefusal(self, reason: str) -> None:
        self._log.info(
            "CLIENTID refused from {peer}: {reason}",
            clientIDEvent="refused",
            protocol=self.protocolName,
            peer=self._peerHost(),
            reason=reason,
        )

    # -- LOGIN ----------------------------------------------------------------

    def do_LOGIN(self, tag: bytes, user: bytes, passwd: bytes) -> None:
        """
        Like Twisted's LOGIN, but with the identity on the credentials and
        replies that never tell one refusal from another.
        """
        if self._passwordLoginDisabled():
            self.sendNegativeResponse(tag, PRIVACY_REQUIRED)
            return
        fields = self._authLogFields(user, self.clientIdentity, "LOGIN")
        d = defer.maybeDeferred(self.authenticateLogin, user, passwd)
        self._awaitLogin(d, tag, fields, b"LOGIN succeeded")

    unauth_LOGIN: Any = (
        do_LOGIN,
        imap4.IMAP4Server.arg_astring,
        imap4.IMAP4Server.arg_finalastring,
    )

    def authenticateLogin(self, user: bytes, passwd: bytes) -> Any:
        """
        Ask the portal about a LOGIN, with credentials that carry the
        identity (Twisted's hook for this, kept so subclasses can wrap it).
        """
        if self.portal is None:
            raise TemporaryAuthenticationFailure("no portal configured")
        return self.portal.login(
            self._identify(UsernamePassword(user, passwd)), None, imap4.IAccount
        )

    def _identify(self, credentials: Any) -> Any:
        return identifyCredentials(
            credentials,
            self.clientIdentity,
            self.transport.getPeer(),
            self.protocolName,
            self.isEncrypted(),
            self.transport.getHost(),
        )

    # -- AUTHENTICATE ---------------------------------------------------------

    def do_AUTHENTICATE(
        self, tag: bytes, mechanism: bytes, initialResponse: bytes | None = None
    ) -> None:
        """
        SASL, with an optional initial response (RFC 4959; C{=} is an empty
        one) and the identity on the credentials the mechanism builds.
        """
        mechanism = mechanism.upper()
        factory = self.challengers.get(mechanism)
        if mechanism in _PASSWORD_MECHANISMS and self._passwordLoginDisabled():
            self.sendNegativeResponse(tag, PRIVACY_REQUIRED)
            return
        if factory is None:
            self.sendNegativeResponse(tag, b"AUTHENTICATE method unsupported")
            return
        if initialResponse is not None and not self.saslInitialResponse:
            self.sendBadResponse(tag, b"Illegal syntax: unexpected initial response")
            return
        if self.portal is None:
            self._log.error("AUTHENTICATE without a portal", authEvent="error")
            self.sendNegativeResponse(tag, TEMPORARY_FAILURE)
            return
        try:
            challenger = factory()
            if initialResponse is not None:
                # The challenge the initial response answers (LOGIN's "User
                # Name"; PLAIN's is empty).
                challenger.getChallenge()
        except Exception:
            self._authCrashed(Failure(), tag)
            return
        if initialResponse is None:
            self._sendChallenge(tag, mechanism, challenger)
        else:
            self._receiveResponse(initialResponse, tag, mechanism, challenger, True)

    def _optionalInitialResponse(
        self, line: bytes | None
    ) -> tuple[bytes | None, bytes]:
        # Whatever follows the mechanism name; do_AUTHENTICATE checks it.
        return line, b""

    unauth_AUTHENTICATE: Any = (
        do_AUTHENTICATE,
        imap4.IMAP4Server.arg_atom,
        _optionalInitialResponse,
    )

    def _sendChallenge(self, tag: bytes, mechanism: bytes, challenger: Any) -> None:
        try:
            challenge = challenger.getChallenge()
        except Exception:
            self._authCrashed(Failure(), tag)
            return
        d: defer.Deferred[bytes] = defer.Deferred()
        d.addCallback(self._receiveResponse, tag, mechanism, challenger)
        d.addErrback(self._authCrashed, tag)
        # Twisted's parse_pending hands the next line to this Deferred.
        self.pendingLiteral = d
        self.parseState = "pending"
        self.sendLine(b"+ " + base64.b64encode(challenge))

    def _receiveResponse(
        self,
        response: bytes,
        tag: bytes,
        mechanism: bytes,
        challenger: Any,
        initial: bool = False,
    ) -> None:
        """
        Take one client response: the initial one, or a continuation line.
        A mechanism that raises is a temporary failure, never a traceback.
        """
        try:
            self._handleResponse(response, tag, mechanism, challenger, initial)
        except Exception:
            self._authCrashed(Failure(), tag)

    def _handleResponse(
        self,
        response: bytes,
        tag: bytes,
        mechanism: bytes,
        challenger: Any,
        initial: bool,
    ) -> None:
        if not initial and response.strip() == b"*":
            self.sendBadResponse(tag, b"AUTHENTICATE cancelled")
            return
        try:
            if initial and response == b"=":
                decoded = b""
            else:
                decoded = base64.b64decode(response.strip(), validate=True)
        except (binascii.Error, ValueError):
            self.sendBadResponse(tag, b"Invalid AUTHENTICATE response")
            return
        refusal: str | None = None
        try:
            challenger.setResponse(decoded)
        except imap4.IllegalClientResponse:
            # Valid base64 the mechanism cannot use (PLAIN's "=", the empty
            # response): a failed exchange, refused like a wrong password.
            refusal = "unusable SASL response"
        else:
            if challenger.moreChallenges():
                self._sendChallenge(tag, mechanism, challenger)
                return
            if foreignAuthorization(mechanism, decoded):
                refusal = "PLAIN authorization identity differs from the login"
        credentials = self._identify(challenger)
        fields = self._authLogFields(
            getattr(challenger, "username", None),
            credentials.clientIdentity,
            "AUTHENTICATE",
            mechanism=escapeForLog(mechanism),
        )
        if refusal is not None:
            d: defer.Deferred[Any] = defer.fail(UnauthorizedLogin(refusal))
        else:
            d = defer.maybeDeferred(
                self.portal.login, credentials, None, imap4.IAccount
            )
        self._awaitLogin(d, tag, fields, b"Authentication successful")

    def _authCrashed(self, reason: Failure, tag: bytes) -> None:
        self._log.failure(
            "AUTHENTICATE raised for {peer}",
            reason,
            peer=self._peerHost(),
            authEvent="error",
        )
        self.sendNegativeResponse(tag, TEMPORARY_FAILURE)

    # -- the outcome ----------------------------------------------------------

    def _authLogFields(
        self,
        username: object,
        identity: ClientIdentity | None,
        command: str,
        **extra: Any,
    ) -> dict[str, Any]:
        # Taken when the login starts: its event then carries the
        # CLIENTID's acceptance even if the client leaves before the
        # decision (the end of the connection logs it no more).
        return dict(
            protocol=self.protocolName,
            peer=self._peerHost(),
            username=escapeForLog(username),
            command=command,
            **self._loginLogFields(identity),
            **extra,
        )

    def _awaitLogin(
        self,
        d: defer.Deferred[Any],
        tag: bytes,
        fields: dict[str, Any],
        okMessage: bytes,
    ) -> None:
        """
        Answer when the portal has decided.  Commands that arrive meanwhile
        wait (in Twisted's C{blocked} queue, L{LoginHoldMixin}), so a
        pipelined command runs in the state the login leaves, and no
        CLIENTID slips in during a login.
        """
        d.addCallbacks(
            self._cbClientIDLogin,
            self._ebClientIDLogin,
            callbackArgs=(tag, fields, okMessage),
            errbackArgs=(tag, fields),
        )
        d.addErrback(lambda f: self._log.failure("Answering a login failed", f))
        self.holdLinesUntil(d)

    def _cbClientIDLogin(
        self, result: Any, tag: bytes, fields: dict[str, Any], okMessage: bytes
    ) -> None:
        iface, avatar, logout = result
        if iface is not imap4.IAccount:
            logout()
            self._ebClientIDLogin(
                Failure(TypeError(f"the realm returned {iface!r}, not IAccount")),
                tag,
                fields,
            )
            return
        self._log.info(
            "{command} succeeded for {username} from {peer} "
            "({clientID})",
            authEvent="succeeded",
            **fields,
        )
        if self._connectionGone:
            # Decided after the client left: logged like any login (its
            # event carries the CLIENTID's acceptance), answered to no one.
            logout()
            return
        self.account = avatar
        self.logoutHook = logout
        self.state = "auth"
        self.setTimeout(self.POSTAUTH_TIMEOUT)
        self.sendPositiveResponse(tag, okMessage)

    def _ebClientIDLogin(
        self, reason: Failure, tag: bytes, fields: dict[str, Any]
    ) -> None:
        """
        Every refusal gets one reply whatever its reason (wrong password,
        unknown user, device policy): nothing on the wire tells them apart.
        Anything that is not a refusal is a temporary failure.  After the
        client left, it is only logged.
        """
        refused = logLoginFailure(self._log, reason, **fields)
        if self._connectionGone:
            return
        self.sendNegativeResponse(tag, AUTHENTICATION_FAILED if refused else TEMPORARY_FAILURE)


class ClientIDIMAP4Server(ClientIDIMAP4ServerMixin, imap4.IMAP4Server):
    """
    L{twisted.mail.imap4.IMAP4Server} with CLIENTID.
    """


class ClientIDIMAP4Factory(ServerFactory):
    """
    Builds L{ClientIDIMAP4Server} protocols sharing one portal, TLS context,
    and configuration.

    @ivar portal: The L{twisted.cred.portal.Portal} logins go to; its realm
        gives L{imap4.IAccount} avatars.
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
    @ivar timeOut: The not-authenticated idle timeout, or L{None} for
        Twisted's default.
    @ivar scheduler: How FETCH output is paced (C{IMAP4Server}'s
        C{scheduler}); L{None} for Twisted's reactor-driven default, and
        L{clientid_twisted.testing.synchronousScheduler} in tests.
    """

    protocol = ClientIDIMAP4Server
    clientIDEnabled = True
    identityHasher: IdentityHasher | None = None
    identityLogPolicy: Callable[[str], bool] | None = None
    timeOut: int | None = None
    scheduler: Any = None

    def __init__(
        self,
        portal: Any = None,
        context: Any = None,
        identityHasher: IdentityHasher | None = None,
    ) -> None:
        self.portal = portal
        self.context = context
        self.challengers: dict[bytes, Any] = {
            b"PLAIN": imap4.PLAINCredentials,
            b"LOGIN": imap4.LOGINCredentials,
        }
        if identityHasher is not None:
            self.identityHasher = identityHasher
        elif self.identityHasher is None:
            self.identityHasher = IdentityHasher.ephemeral()

    def buildProtocol(self, addr: Any) -> Any:
        # A copy each: Twisted's STARTTLS adds to the protocol's own.
        p = self.protocol(
            chal=dict(self.challengers),
            contextFactory=self.context,
            scheduler=self.scheduler,
        )
        p.portal = self.portal
        p.clientIDEnabled = self.clientIDEnabled
        p.identityHasher = self.identityHasher
        p.identityLogPolicy = self.identityLogPolicy
        if self.timeOut is not None:
            p.timeOut = self.timeOut
        p.factory = self
        return p


# -- client side ---------------------------------------------------------------


class ClientIDNotAllowed(Exception):
    """
    The client did not send CLIENTID because the drafts forbid it here: no
    TLS, the capabilities read after TLS do not list it, a login already
    started, or an identity already went out.  Nothing was sent.
    """


class ClientIDIMAP4ClientMixin(IMAP4ClientSeamsMixin):
    """
    Makes an L{imap4.IMAP4Client} able to present a client identity.

    @ivar clientIDSent: Whether a CLIENTID command went out.
    @ivar clientIDAccepted: Whether the server answered it with OK.
    """

    clientIDSent = False
    clientIDAccepted = False

    _capabilitiesSinceTLS: dict[bytes, Any] | None = None
    _loginStarted = False
    _clientIDRequested = False

    transport: Any
    state: str | None
    context: Any
    sendCommand: Callable[[imap4.Command], defer.Deferred[Any]]

    def _isEncrypted(self) -> bool:
        return self.transport is not None and ISSLTransport.providedBy(self.transport)

    # Record which capabilities were read over TLS.

    def serverGreeting(self, caps: dict[bytes, Any] | None) -> None:
        if caps is not None and self._isEncrypted():
            self._capabilitiesSinceTLS = caps
        super().serverGreeting(caps)

    def getCapabilities(self, useCache: int = 1) -> defer.Deferred[Any]:
        cached = useCache and self.hasCachedCapabilities()
        d = super().getCapabilities(useCache)
        if not cached:
            d.addCallback(self._recordCapabilities)
        return d

    def _recordCapabilities(self, caps: dict[bytes, Any]) -> dict[bytes, Any]:
        if self._isEncrypted():
            self._capabilitiesSinceTLS = caps
        return caps

    def tlsStarted(self) -> None:
        self._capabilitiesSinceTLS = None

    # Any login attempt ends the time for CLIENTID.

    def login(self, username: bytes, password: bytes) -> defer.Deferred[Any]:
        self._loginStarted = True
        return super().login(username, password)

    def authenticate(self, secret: bytes) -> defer.Deferred[Any]:
        self._loginStarted = True
        return super().authenticate(secret)

    def _refusal(self) -> str | None:
        if not self._isEncrypted():
            return "CLIENTID is only sent over TLS"
        if self.state != "unauth" or self._loginStarted:
            return "CLIENTID is only sent before LOGIN/AUTHENTICATE"
        return None

    def clientID(
        self, typeOrIdentity: str | ClientIdentity, token: str | None = None
    ) -> defer.Deferred[bool]:
        """
        Send C{CLIENTID type token}, if the drafts allow it now.

        @param typeOrIdentity: A L{ClientIdentity}, or the type (then
            C{token} is the token).
        @return: A L{defer.Deferred} that fires with L{True} on OK; fails
            with L{ClientIDNotAllowed} (nothing sent), L{MalformedClientID},
            or L{imap4.IMAP4Exception} when the server answers BAD.
        """
        try:
            if isinstance(typeOrIdentity, ClientIdentity):
                identity = typeOrIdentity
            else:
                identity = ClientIdentity(
                    typeOrIdentity, token  # type: ignore[arg-type]
                )
        except MalformedClientID:
            return defer.fail()
        if self._clientIDRequested:
            return defer.fail(
                ClientIDNotAllowed("CLIENTID is sent once per connection")
            )
        refusal = self._refusal()
        if refusal is not None:
            return defer.fail(ClientIDNotAllowed(refusal))
        self._clientIDRequested = True
        if self._capabilitiesSinceTLS is not None:
            d: defer.Deferred[Any] = defer.succeed(self._capabilitiesSinceTLS)
        else:
            d = self.getCapabilities(useCache=0)
        d.addCallback(self._sendClientID, identity)
        return d

    def _sendClientID(self, caps: dict[bytes, Any], identity: ClientIdentity) -> Any:
        if b"CLIENTID" not in caps:
            raise ClientIDNotAllowed("the server does not list CLIENTID after TLS")
        refusal = self._refusal()
        if refusal is not None:
            raise ClientIDNotAllowed(refusal)
        self.clientIDSent = True
        d = self.sendCommand(imap4.Command(b"CLIENTID", identity.toArguments()))

        def accepted(result: object) -> bool:
            self.clientIDAccepted = True
            return True

        return d.addCallback(accepted)


class ClientIDIMAP4Client(ClientIDIMAP4ClientMixin, imap4.IMAP4Client):
    """
    L{twisted.mail.imap4.IMAP4Client} that can present a client identity.
    """


def loginWithClientID(
    client: ClientIDIMAP4ClientMixin,
    identity: ClientIdentity | None,
    username: bytes | str,
    password: bytes | str,
    contextFactory: Any = None,
) -> defer.Deferred[Any]:
    """
    Log C{client} in the way the drafts want: STARTTLS (unless the
    connection is already TLS), CAPABILITY, CLIENTID if the server lists it,
    then LOGIN.

    The identity is an addition, not a condition: when the server does not
    list CLIENTID or answers it with BAD, the login goes ahead without it.
    TLS is a condition: if STARTTLS fails, nothing else is sent.

    @param client: A connected L{ClientIDIMAP4Client} that has had its
        greeting.
    @param identity: What to present, or L{None} for nothing.
    @param contextFactory: Client TLS options for STARTTLS, which should
        verify the server (L{clientid_twisted.testing.clientTLSOptions},
        L{twisted.internet.ssl.optionsForClientTLS}); the client's own
        C{context} when L{None}.  One of them is needed for STARTTLS: the
        identity is a secret of a kind, not for an unverified server.
    @return: A L{defer.Deferred} firing with the LOGIN result.
    """
    if isinstance(username, str):
        username = username.encode("utf-8")
    if isinstance(password, str):
        password = password.encode("utf-8")
    c: Any = client

    if client._isEncrypted():
        d: defer.Deferred[Any] = defer.succeed(None)
    elif contextFactory is None and c.context is None:
        return defer.fail(ValueError("STARTTLS needs a client TLS context"))
    else:
        # startTLS reads the capabilities again once TLS is up.
        d = defer.maybeDeferred(c.getCapabilities)
        d.addCallback(lambda caps: c.startTLS(contextFactory))

    def capabilities(ignored: object) -> Any:
        if client._capabilitiesSinceTLS is not None:
            return client._capabilitiesSinceTLS
        return c.getCapabilities(useCache=0)

    def presentIdentity(caps: dict[bytes, Any]) -> Any:
        if identity is None or b"CLIENTID" not in caps:
            return None
        sent = client.clientID(identity)
        sent.addErrback(lambda f: f.trap(imap4.IMAP4Exception))
        return sent

    d.addCallback(capabilities)
    d.addCallback(presentIdentity)
    d.addCallback(lambda ignored: c.login(username, password))
    return d
