"""
Tests for L{clientid_twisted.imap}'s server side: every CLIENTID reply in
every state over in-memory transports, STARTTLS injection, the identity
reaching C{twisted.cred} through LOGIN and AUTHENTICATE, the replies to
refusals and failures, polling the selected mailbox; and Python's
C{imaplib} talking to the server over real TLS on loopback.
"""

from __future__ import annotations

import base64
import imaplib
import ssl
from typing import Any

from zope.interface import implementer
from zope.interface.verify import verifyObject

from twisted.cred.credentials import IUsernamePassword
from twisted.cred.portal import IRealm, Portal
from twisted.internet import defer, reactor, threads
from twisted.internet.error import ConnectionDone
from twisted.internet.task import Clock
from twisted.logger import formatEvent, globalLogPublisher
from twisted.mail import imap4
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase, TestCase

from clientid_twisted._fingerprint import IdentityHasher
from clientid_twisted._identity import ClientIdentity
from clientid_twisted.imap import (
    AUTHENTICATION_FAILED,
    TEMPORARY_FAILURE,
    ClientIDIMAP4Factory,
    ClientIDIMAP4Server,
)
from clientid_twisted.interfaces import IClientIdentifiedCredentials
from clientid_twisted.testing import (
    LineExchange,
    connectedTransport,
    throwawayCertificate,
)
from tests.loginfakes import HIDDEN_TYPES, RecordingChecker, assertIdentityLogging, plain

TOKEN = b"23bf83be-aad7-46aa-9e0f-39191ccf402f"
IDENTITY = ClientIdentity("UUID", TOKEN.decode("ascii"))
MALFORMED = b"BAD Malformed CLIENTID: expected CLIENTID <type> <token>"
REPEATED = b"BAD CLIENTID already accepted on this connection"
SELECTED = b"s OK [READ-WRITE] SELECT successful\r\n"


class PolledMailbox:
    """
    Just enough of a mailbox to SELECT, with a C{poll} that announces mail
    delivered since the last poll, at once or when a Deferred fires.
    """

    def __init__(self) -> None:
        self.listeners: list[Any] = []
        self.count = 0
        self.arrived = 0
        self.polls = 0
        self.nextPoll: defer.Deferred[None] | None = None
        self.pollError: Exception | None = None

    def getFlags(self) -> list[str]:
        return ["\\Seen"]

    def getUIDValidity(self) -> int:
        return 7

    def getMessageCount(self) -> int:
        return self.count

    def getRecentCount(self) -> int:
        return 0

    def isWriteable(self) -> bool:
        return True

    def expunge(self) -> list[int]:
        return []

    def addListener(self, listener: Any) -> None:
        self.listeners.append(listener)

    def removeListener(self, listener: Any) -> None:
        self.listeners.remove(listener)

    def _announce(self, ignored: object = None) -> None:
        if self.arrived:
            self.count += self.arrived
            self.arrived = 0
            for listener in self.listeners:
                listener.newMessages(self.count, None)

    def poll(self) -> defer.Deferred[None] | None:
        self.polls += 1
        if self.pollError is not None:
            raise self.pollError
        d, self.nextPoll = self.nextPoll, None
        if d is None:
            self._announce()
            return None
        return d.addCallback(self._announce)


@implementer(IRealm)
class MemoryRealm:
    """
    Gives each user a L{imap4.MemoryAccount} whose INBOX is C{mailbox}.
    """

    def __init__(self) -> None:
        self.mailbox = PolledMailbox()
        self.avatarInterface: Any = imap4.IAccount
        self.logouts = 0

    def requestAvatar(self, avatarId: Any, mind: Any, *interfaces: Any) -> Any:
        account = imap4.MemoryAccount(avatarId)
        account.addMailbox("INBOX", self.mailbox)
        return self.avatarInterface, account, self.logout

    def logout(self) -> None:
        self.logouts += 1


class _Base(SynchronousTestCase):
    """
    Build a server protocol the way the factory does, over a fake transport.
    """

    secure = False

    def setUp(self) -> None:
        self.checker = RecordingChecker()
        self.realm = MemoryRealm()
        self.factory = ClientIDIMAP4Factory(
            Portal(self.realm, [self.checker]), context=object()
        )
        self.factory.identityHasher = IdentityHasher(b"k" * 32)
        self.events: list[dict[str, Any]] = []
        globalLogPublisher.addObserver(self.events.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.events.append)
        self.connect()

    def connect(self, secure: bool | None = None) -> None:
        self.protocol = self.factory.buildProtocol(None)
        self.clock = Clock()
        self.transport = connectedTransport(
            self.protocol,
            secure=self.secure if secure is None else secure,
            clock=self.clock,
        )
        self.greeting = self.transport.value()
        self.client = LineExchange(self.protocol, self.transport)
        self.addCleanup(self.protocol.connectionLost, Failure(ConnectionDone()))

    def send(self, data: bytes) -> bytes:
        return self.client.send(data)

    def exchange(self, line: bytes) -> bytes:
        return self.client.exchange(line)

    def unknown(self, tag: bytes = b"a") -> bytes:
        """
        What the server answers, now, to a command it does not know.
        """
        return self.exchange(tag + b" XFOO")

    def capabilities(self, tag: bytes = b"c") -> list[bytes]:
        lines = self.exchange(tag + b" CAPABILITY").splitlines()
        self.assertEqual(lines[-1], tag + b" OK CAPABILITY completed")
        self.assertTrue(lines[0].startswith(b"* CAPABILITY "), lines)
        return lines[0].split()[2:]

    def startTLS(self) -> None:
        self.assertEqual(
            self.exchange(b"s STARTTLS"), b"s OK Begin TLS negotiation now\r\n"
        )
        self.assertIsNotNone(self.transport.tlsStarted)

    def ready(self) -> None:
        """
        STARTTLS (unless implicit TLS) and CAPABILITY: where CLIENTID works.
        """
        if not self.secure:
            self.startTLS()
        self.assertIn(b"CLIENTID", self.capabilities())

    def clientID(self, tag: bytes = b"i", token: bytes = TOKEN) -> bytes:
        return self.exchange(tag + b" CLIENTID UUID " + token)

    def login(self, tag: bytes = b"l", password: bytes = b"secret") -> bytes:
        return self.exchange(tag + b" LOGIN alice " + password)


class CapabilityTests(_Base):
    """
    CLIENTID is listed iff the extension is on, the connection encrypted,
    and the state not authenticated; the greeting follows the same rule.
    """

    def test_plaintext(self) -> None:
        caps = self.capabilities()
        self.assertNotIn(b"CLIENTID", caps)
        self.assertIn(b"STARTTLS", caps)

    def test_plaintextGreeting(self) -> None:
        self.assertTrue(self.greeting.startswith(b"* OK [CAPABILITY IMAP4rev1 "))
        self.assertIn(b"STARTTLS", self.greeting)
        self.assertNotIn(b"CLIENTID", self.greeting)

    def test_afterSTARTTLS(self) -> None:
        self.startTLS()
        caps = self.capabilities()
        self.assertIn(b"CLIENTID", caps)
        self.assertNotIn(b"STARTTLS", caps)

    def test_implicitTLS(self) -> None:
        self.connect(secure=True)
        self.assertIn(b"CLIENTID", self.capabilities())

    def test_implicitTLSGreeting(self) -> None:
        self.connect(secure=True)
        self.assertEqual(
            self.greeting,
            b"* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN AUTH=LOGIN NAMESPACE IDLE "
            b"SASL-IR CLIENTID] Twisted IMAP4rev1 Ready\r\n",
        )

    def test_off(self) -> None:
        self.factory.clientIDEnabled = False
        self.connect(secure=True)
        self.assertNotIn(b"CLIENTID", self.greeting)
        self.assertNotIn(b"CLIENTID", self.capabilities())
        self.connect()
        self.startTLS()
        self.assertNotIn(b"CLIENTID", self.capabilities())

    def test_afterClientID(self) -> None:
        self.ready()
        self.assertEqual(self.clientID(), b"i OK CLIENTID completed\r\n")
        self.assertIn(b"CLIENTID", self.capabilities())

    def test_afterFailedLogin(self) -> None:
        self.ready()
        self.login(password=b"wrong")
        self.assertIn(b"CLIENTID", self.capabilities())

    def test_notAfterLogin(self) -> None:
        self.ready()
        self.assertEqual(self.login(), b"l OK LOGIN succeeded\r\n")
        self.assertNotIn(b"CLIENTID", self.capabilities())

    def test_notWhenSelected(self) -> None:
        self.ready()
        self.login()
        self.assertTrue(self.exchange(b"s SELECT INBOX").endswith(SELECTED))
        self.assertNotIn(b"CLIENTID", self.capabilities())

    def test_passwordMechanismsOnlyOverTLS(self) -> None:
        """
        While LOGINDISABLED is listed, PLAIN and LOGIN are not offered under
        AUTHENTICATE either; after STARTTLS they are.
        """
        caps = self.capabilities()
        self.assertIn(b"LOGINDISABLED", caps)
        self.assertEqual([c for c in caps if c.startswith(b"AUTH=")], [])
        self.startTLS()
        caps = self.capabilities()
        self.assertIn(b"AUTH=PLAIN", caps)
        self.assertIn(b"AUTH=LOGIN", caps)
        self.assertIn(b"SASL-IR", caps)


class UnavailableTests(_Base):
    """
    Wherever CLIENTID is not listed, or not yet listed since TLS began, it
    gets exactly what an unknown command gets.
    """

    def assertUnknown(self, line: bytes = b"a CLIENTID UUID " + TOKEN) -> None:
        expected = self.unknown()
        self.assertEqual(expected, b"a BAD Unsupported command\r\n")
        self.assertEqual(self.exchange(line), expected)
        self.assertIsNone(self.protocol.clientIdentity)

    def test_plaintext(self) -> None:
        self.assertUnknown()

    def test_plaintextAfterCapability(self) -> None:
        self.capabilities()
        self.assertUnknown()

    def test_plaintextLowerCase(self) -> None:
        self.assertUnknown(b"a clientid uuid " + TOKEN)

    def test_plaintextMalformed(self) -> None:
        """
        Unavailable wins over malformed: the command does not exist here.
        """
        self.assertUnknown(b"a CLIENTID")
        self.assertUnknown(b"a CLIENTID UUID  x\x00\xff")

    def test_tlsBeforeCapability(self) -> None:
        self.startTLS()
        self.assertUnknown()

    def test_capabilityBeforeTLSDoesNotCount(self) -> None:
        self.capabilities()
        self.startTLS()
        self.assertUnknown()

    def test_implicitTLSGreetingCounts(self) -> None:
        self.connect(secure=True)
        self.assertEqual(self.clientID(), b"i OK CLIENTID completed\r\n")

    def test_off(self) -> None:
        self.factory.clientIDEnabled = False
        self.connect(secure=True)
        self.capabilities()
        self.assertUnknown()

    def test_afterLogin(self) -> None:
        self.ready()
        self.login()
        self.assertUnknown()

    def test_afterLoginWithIdentity(self) -> None:
        """
        Once authenticated the command does not exist, so it gets the
        unknown-command BAD, not the one for a repeated CLIENTID.
        """
        self.ready()
        self.clientID()
        self.login()
        expected = self.unknown(b"x")
        self.assertEqual(self.clientID(b"x"), expected)
        self.assertEqual(self.protocol.clientIdentity, IDENTITY)

    def test_selected(self) -> None:
        self.ready()
        self.login()
        self.exchange(b"s SELECT INBOX")
        self.assertUnknown()

    def test_plaintextNotCounted(self) -> None:
        """
        In plaintext CLIENTID is an unknown command, not a refused
        CLIENTID: no C{clientIDEvent}, as in SMTP (docs/running.md,
        Metrics).
        """
        self.exchange(b"a CLIENTID UUID " + TOKEN)
        self.assertEqual([e for e in self.events if "clientIDEvent" in e], [])

    def test_afterLoginLoggedAsRefused(self) -> None:
        """
        After a login it is refused, like CLIENTID after AUTH in SMTP.
        """
        self.ready()
        self.login()
        self.clientID(b"x")
        refused = [e for e in self.events if e.get("clientIDEvent") == "refused"]
        self.assertEqual(len(refused), 1)
        self.assertEqual(refused[0]["reason"], "after LOGIN")
        self.assertEqual(refused[0]["protocol"], "imap")


class GrammarTests(_Base):
    """
    Where CLIENTID is usable: the raw line is checked against the grammar;
    valid is OK (never NO), malformed and repeated are BAD.
    """

    def setUp(self) -> None:
        super().setUp()
        self.ready()

    def test_valid(self) -> None:
        self.assertEqual(self.clientID(), b"i OK CLIENTID completed\r\n")
        self.assertEqual(self.protocol.clientIdentity, IDENTITY)
        self.assertEqual(self.protocol.clientIdentity.token, TOKEN.decode("ascii"))

    def test_caseInsensitiveCommand(self) -> None:
        self.assertEqual(
            self.exchange(b"x cLiEnTiD uuid " + TOKEN), b"x OK CLIENTID completed\r\n"
        )
        self.assertEqual(self.protocol.clientIdentity.type, "uuid")
        self.assertEqual(self.protocol.clientIdentity, IDENTITY)

    def test_limits(self) -> None:
        self.assertEqual(
            self.exchange(b"x CLIENTID " + b"T" * 16 + b" " + b"t" * 128),
            b"x OK CLIENTID completed\r\n",
        )

    def test_malformed(self) -> None:
        variants = [
            b"x CLIENTID  UUID " + TOKEN,
            b"x CLIENTID UUID  " + TOKEN,
            b"x CLIENTID\tUUID " + TOKEN,
            b"x CLIENTID UUID\t" + TOKEN,
            b"x CLIENTID UUID " + TOKEN + b" ",
            b"x CLIENTID UUID " + TOKEN + b"\t",
            b"x CLIENTID UUID " + TOKEN + b" extra",
            b"x CLIENTID " + b"T" * 17 + b" " + TOKEN,
            b"x CLIENTID UUID " + b"t" * 129,
            b"x CLIENTID UUID",
            b"x CLIENTID UUID ",
            b"x CLIENTID",
            b"x CLIENTID ",
            b"x CLIENTID UUID tok\x00en",
            b"x CLIENTID UUID tok\xc3\xa9n",
            b"x CLIENTID UU\xc3\x8fD " + TOKEN,
            b"x CLIENTID DEVICE_ID " + TOKEN,
            b"x  CLIENTID UUID " + TOKEN,
            b"x\tCLIENTID UUID " + TOKEN,
            b"x\x00 CLIENTID UUID " + TOKEN,
            b"x+ CLIENTID UUID " + TOKEN,
            b"x( CLIENTID UUID " + TOKEN,
        ]
        for line in variants:
            self.connect()
            self.ready()
            tag = line.split()[0]
            self.assertEqual(
                self.exchange(line), tag + b" " + MALFORMED + b"\r\n", line
            )
            self.assertIsNone(self.protocol.clientIdentity, line)
            # A malformed CLIENTID is not an accepted one.
            self.assertEqual(self.clientID(), b"i OK CLIENTID completed\r\n", line)

    def test_imapSpecialCharacters(self) -> None:
        """
        Characters that are syntax elsewhere in IMAP are token bytes here:
        kept verbatim, and a trailing C{{5}} does not start a literal (no
        C{+} continuation; the next line is a command).
        """
        tokens = [
            b'"',
            b'a"b',
            b"(x)",
            b"x{5}",
            b"{5}",
            b"x{5+}",
            b"{0}",
            b"\\",
            b"a\\b",
            b"%",
            b"*",
            b"[",
            b"]",
            b"[x]",
            b'"({5}\\%*[]})+~',
        ]
        for token in tokens:
            self.connect()
            self.ready()
            reply = self.send(b"x CLIENTID UUID " + token + b"\r\nn NOOP\r\n")
            self.assertEqual(
                reply,
                b"x OK CLIENTID completed\r\nn OK NOOP No operation performed\r\n",
                token,
            )
            self.assertEqual(self.protocol.clientIdentity.token, token.decode("ascii"))
            self.assertEqual(self.protocol.parseState, "command")

    def test_literalTokenInOwnRead(self) -> None:
        self.assertEqual(self.clientID(token=b"abc{5}"), b"i OK CLIENTID completed\r\n")
        self.assertEqual(self.protocol.parseState, "command")
        self.assertTrue(self.protocol.line_mode)

    def test_notInterceptedInAuthenticateContinuation(self) -> None:
        """
        Only command lines are CLIENTID commands: during AUTHENTICATE the
        next line is the client's SASL response, whatever it looks like.
        """
        self.assertEqual(self.exchange(b"p AUTHENTICATE PLAIN"), b"+ \r\n")
        self.assertEqual(
            self.clientID(), b"p BAD Invalid AUTHENTICATE response\r\n"
        )
        self.assertIsNone(self.protocol.clientIdentity)
        self.assertEqual(self.clientID(b"j"), b"j OK CLIENTID completed\r\n")

    def test_notInterceptedInLiteral(self) -> None:
        """
        Nor is literal data: here it is a LOGIN user name.
        """
        literal = b"b CLIENTID UUID " + TOKEN
        self.assertEqual(
            self.exchange(b"l LOGIN {%d}" % (len(literal),)),
            b"+ Ready for %d octets of text\r\n" % (len(literal),),
        )
        self.assertEqual(
            self.send(literal + b" secret\r\n"), b"l " + LoginTests.failed
        )
        self.assertIsNone(self.protocol.clientIdentity)
        self.assertEqual(self.checker.seen[-1].username, literal)

    def test_repeated(self) -> None:
        self.clientID()
        self.assertEqual(self.clientID(b"j", b"other"), b"j " + REPEATED + b"\r\n")
        self.assertEqual(self.exchange(b"k CLIENTID oops"), b"k " + REPEATED + b"\r\n")
        self.assertEqual(self.protocol.clientIdentity, IDENTITY)

    def test_afterFailedLogin(self) -> None:
        self.assertEqual(
            self.login(password=b"wrong"), b"l NO " + AUTHENTICATION_FAILED + b"\r\n"
        )
        self.assertEqual(self.clientID(), b"i OK CLIENTID completed\r\n")
        self.assertEqual(self.login(b"m"), b"m OK LOGIN succeeded\r\n")
        self.assertEqual(self.checker.seen[-1].clientIdentity, IDENTITY)
        self.assertIsNone(self.checker.seen[0].clientIdentity)

    def test_neverNO(self) -> None:
        """
        Policy runs at login only: a checker that refuses everything does
        not touch CLIENTID.
        """
        self.checker.mode = "policy"
        self.assertEqual(self.clientID(), b"i OK CLIENTID completed\r\n")
        self.assertEqual(self.checker.seen, [])

    def test_acceptedEvent(self) -> None:
        """
        The acceptance is reported by the login that uses the identity:
        one event for both, the acceptance counted once however many
        logins follow.
        """
        self.clientID()
        self.assertEqual([e for e in self.events if "clientIDEvent" in e], [])
        self.login(password=b"wrong")
        self.login()
        accepted = [e for e in self.events if e.get("clientIDEvent") == "accepted"]
        self.assertEqual(len(accepted), 1)
        event = accepted[0]
        self.assertEqual(event["authEvent"], "failed")
        self.assertEqual(event["protocol"], "imap")
        self.assertEqual(event["peer"], "192.0.2.7")
        self.assertEqual(event["clientIDType"], "UUID")
        self.assertEqual(
            event["clientIDFingerprint"],
            self.factory.identityHasher.fingerprint(IDENTITY),
        )
        self.assertEqual(len([e for e in self.events if "authEvent" in e]), 2)

    def test_acceptedWithoutLogin(self) -> None:
        """
        An identity no login used is logged as accepted when the session
        ends.
        """
        self.clientID()
        self.protocol.connectionLost(None)
        [event] = [e for e in self.events if "clientIDEvent" in e]
        self.assertEqual(event["clientIDEvent"], "accepted")
        self.assertNotIn("authEvent", event)
        self.assertEqual(event["clientIDType"], "UUID")
        self.assertIn("no login followed", formatEvent(event))

    def test_refusedEvents(self) -> None:
        self.exchange(b"x CLIENTID UUID")
        self.clientID()
        self.clientID(b"j")
        reasons = [
            e["reason"] for e in self.events if e.get("clientIDEvent") == "refused"
        ]
        self.assertEqual(reasons, ["malformed", "repeated"])

    def test_tokenNeverLogged(self) -> None:
        self.clientID()
        self.login(password=b"wrong")
        self.login(b"m")
        self.assertTrue(self.events)
        for event in self.events:
            self.assertNotIn(TOKEN.decode("ascii"), formatEvent(event))
            self.assertNotIn(TOKEN.decode("ascii"), repr(event))


class GarbageTests(_Base):
    """
    Lines the server cannot make sense of get a clean BAD: no exception
    text, no traceback, and the connection stays usable.
    """

    def test_unknownCommandWithUncleanName(self) -> None:
        for line in [b"a \xff", b"a X\x00FOO", b"a \xc3\xa9", b"a \x7f"]:
            self.assertEqual(self.exchange(line), self.unknown(), line)
        self.assertEqual(self.flushLoggedErrors(), [])

    def test_garbage(self) -> None:
        self.startTLS()
        self.capabilities()
        for line in [
            b"",
            b"\x00",
            b"\xff\xfe",
            b"a",
            b"a CLIENTID",
            b"\xff CLIENTID UUID x",
            b"a LOGIN \xff",
            b'a LOGIN "unterminated',
            b"a LOGIN {99999999}",
            b"a AUTHENTICATE \xff",
            b"a AUTHENTICATE",
        ]:
            reply = self.exchange(line)
            self.assertIn(b" BAD ", reply, line)
            self.assertNotIn(b"Traceback", reply)
            self.assertNotIn(b"codec", reply)
            self.assertNotIn(b"+ Ready", reply)
        self.assertEqual(self.flushLoggedErrors(), [])
        self.assertEqual(self.clientID(), b"i OK CLIENTID completed\r\n")

    def test_unexpectedExceptionHidden(self) -> None:
        def explode(cmd: bytes) -> None:
            raise RuntimeError("internal detail")

        self.protocol.lookupCommand = explode
        self.assertEqual(self.exchange(b"a NOOP"), b"a BAD Server error\r\n")
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)


class STARTTLSTests(_Base):
    """
    STARTTLS forgets everything said in plaintext: the rest of the read
    that carried it, any partial line, queued lines, the identity.
    """

    def test_pipelinedClientIDDiscarded(self) -> None:
        reply = self.send(b"a STARTTLS\r\nb CLIENTID UUID " + TOKEN + b"\r\n")
        self.assertEqual(reply, b"a OK Begin TLS negotiation now\r\n")
        self.assertIsNotNone(self.transport.tlsStarted)
        self.assertIsNone(self.protocol.clientIdentity)
        self.assertIn(b"CLIENTID", self.capabilities())
        self.assertEqual(self.clientID(), b"i OK CLIENTID completed\r\n")

    def test_pipelinedCommandsNeverRun(self) -> None:
        reply = self.send(
            b"a STARTTLS\r\nb CAPABILITY\r\nc CLIENTID UUID x\r\n"
            b"d LOGIN alice secret\r\n"
        )
        self.assertEqual(reply, b"a OK Begin TLS negotiation now\r\n")
        self.assertEqual(self.checker.seen, [])
        self.assertEqual(self.protocol.state, "unauth")
        self.assertIsNone(self.protocol.clientIdentity)
        # "b CAPABILITY" did not count as listing CLIENTID under TLS.
        expected = self.unknown(b"i")
        self.assertEqual(self.clientID(), expected)

    def test_partialLineDiscarded(self) -> None:
        self.assertEqual(
            self.send(b"a STARTTLS\r\nb CAPAB"), b"a OK Begin TLS negotiation now\r\n"
        )
        # Had the partial line been kept, this would complete "b CAPABILITY".
        self.assertEqual(self.send(b"ILITY\r\n"), b"ILITY BAD Missing command\r\n")

    def test_queuedLinesDiscarded(self) -> None:
        """
        Lines Twisted holds back while a command is in progress (its
        C{blocked} queue) and that followed STARTTLS do not run either.
        """
        self.protocol.blocked = []
        self.assertEqual(
            self.send(b"a STARTTLS\r\nb CAPABILITY\r\nc CLIENTID UUID x\r\n"), b""
        )
        self.protocol._unblock()
        self.assertEqual(self.transport.value(), b"a OK Begin TLS negotiation now\r\n")
        self.assertIsNone(self.protocol.clientIdentity)
        self.assertFalse(self.protocol.clientIDAdvertised)

    def test_linesAfterTLSRun(self) -> None:
        self.startTLS()
        self.assertEqual(
            self.send(b"b CAPABILITY\r\nc CLIENTID UUID x\r\n").splitlines()[-1],
            b"c OK CLIENTID completed",
        )

    def test_forgetsIdentityAndListing(self) -> None:
        self.protocol.clientIdentity = IDENTITY
        self.protocol.clientIDAdvertised = True
        self.startTLS()
        self.assertIsNone(self.protocol.clientIdentity)
        self.assertFalse(self.protocol.clientIDAdvertised)

    def test_twice(self) -> None:
        self.startTLS()
        self.assertEqual(
            self.exchange(b"t STARTTLS"), b"t NO TLS already negotiated\r\n"
        )

    def test_implicitTLS(self) -> None:
        self.connect(secure=True)
        self.clientID()
        self.assertEqual(
            self.exchange(b"t STARTTLS"), b"t NO TLS already negotiated\r\n"
        )
        self.assertEqual(self.protocol.clientIdentity, IDENTITY)


class LoginTests(_Base):
    """
    LOGIN and AUTHENTICATE hand the identity to the checker; the replies
    never tell a refusal's reason nor an error's text.
    """

    secure = True
    failed = b"NO " + AUTHENTICATION_FAILED + b"\r\n"
    tempfailed = b"NO " + TEMPORARY_FAILURE + b"\r\n"

    def setUp(self) -> None:
        super().setUp()
        self.assertEqual(self.clientID(), b"i OK CLIENTID completed\r\n")

    def assertIdentified(self, credentials: Any) -> None:
        self.assertTrue(verifyObject(IClientIdentifiedCredentials, credentials))
        self.assertTrue(IUsernamePassword.providedBy(credentials))
        self.assertEqual(credentials.clientIdentity, IDENTITY)
        self.assertEqual(credentials.protocolName, "imap")
        self.assertTrue(credentials.secure)
        self.assertEqual(credentials.peer.host, "192.0.2.7")
        self.assertEqual(credentials.username, b"alice")

    def test_handlingKeepsTypeOutOfLog(self) -> None:
        """
        For a type whose handling is C{ignore}, or lacks C{system-log}, no
        protocol log line names the device: neither type nor fingerprint;
        a type with the default handling is named.
        """
        self.factory.identityLogPolicy = HIDDEN_TYPES.showsInLog
        for typeName in (b"UUID", b"quiet", b"OTHER"):
            self.events.clear()
            self.connect()
            self.capabilities()
            self.assertEqual(
                self.exchange(b"i CLIENTID " + typeName + b" " + TOKEN), b"i OK CLIENTID completed\r\n"
            )
            self.login(password=b"wrong")
            self.login()
            assertIdentityLogging(self, self.events, typeName, TOKEN)

    def authenticatePlain(
        self, tag: bytes = b"p", password: bytes = b"secret"
    ) -> bytes:
        self.assertEqual(self.exchange(tag + b" AUTHENTICATE PLAIN"), b"+ \r\n")
        return self.exchange(plain(b"alice", password))

    def test_login(self) -> None:
        self.assertEqual(self.login(), b"l OK LOGIN succeeded\r\n")
        self.assertIdentified(self.checker.seen[-1])
        self.assertEqual(self.protocol.state, "auth")
        self.assertEqual(self.protocol.account.name, b"alice")

    def test_loginQuoted(self) -> None:
        self.assertEqual(
            self.exchange(b'l LOGIN "alice" "secret"'), b"l OK LOGIN succeeded\r\n"
        )
        self.assertIdentified(self.checker.seen[-1])

    def test_loginWithoutClientID(self) -> None:
        self.connect(secure=False)
        self.startTLS()
        self.assertEqual(self.login(), b"l OK LOGIN succeeded\r\n")
        self.assertIsNone(self.checker.seen[-1].clientIdentity)
        self.assertTrue(IClientIdentifiedCredentials.providedBy(self.checker.seen[-1]))

    def test_authenticatePlainContinuation(self) -> None:
        self.assertEqual(
            self.authenticatePlain(), b"p OK Authentication successful\r\n"
        )
        self.assertIdentified(self.checker.seen[-1])
        self.assertEqual(self.protocol.state, "auth")

    def test_authenticatePlainInitialResponse(self) -> None:
        self.assertEqual(
            self.exchange(b"p AUTHENTICATE PLAIN " + plain(b"alice", b"secret")),
            b"p OK Authentication successful\r\n",
        )
        self.assertIdentified(self.checker.seen[-1])

    def test_authenticateLogin(self) -> None:
        self.assertEqual(
            self.exchange(b"p AUTHENTICATE LOGIN"),
            b"+ " + base64.b64encode(b"User Name\0") + b"\r\n",
        )
        self.assertEqual(
            self.exchange(base64.b64encode(b"alice")),
            b"+ " + base64.b64encode(b"Password\0") + b"\r\n",
        )
        self.assertEqual(
            self.exchange(base64.b64encode(b"secret")),
            b"p OK Authentication successful\r\n",
        )
        self.assertIdentified(self.checker.seen[-1])

    def test_authenticateLoginInitialResponse(self) -> None:
        self.assertEqual(
            self.exchange(b"p AUTHENTICATE LOGIN " + base64.b64encode(b"alice")),
            b"+ " + base64.b64encode(b"Password\0") + b"\r\n",
        )
        self.assertEqual(
            self.exchange(base64.b64encode(b"secret")),
            b"p OK Authentication successful\r\n",
        )
        self.assertIdentified(self.checker.seen[-1])

    def test_authenticateCancelled(self) -> None:
        self.exchange(b"p AUTHENTICATE PLAIN")
        self.assertEqual(self.exchange(b"*"), b"p BAD AUTHENTICATE cancelled\r\n")
        self.assertEqual(self.checker.seen, [])
        self.assertEqual(self.protocol.parseState, "command")

    def test_noArgumentEchoed(self) -> None:
        """
        No reply repeats a LOGIN or AUTHENTICATE argument (Twisted's parser
        said C{Too many arguments for command: b'secret'}), nor any Python
        repr: BAD says what was wrong in fixed words.
        """
        replies = [
            self.exchange(b"2 LOGIN alice@example.test my secret"),
            self.exchange(b'3 LOGIN "alice@example.test" "my" secret2'),
            self.exchange(b'4 LOGIN "alice@example.test secret3'),
            self.exchange(b"5 LOGIN alice@example.test {x-secret4}"),
            self.exchange(b"6 AUTHENTICATE PLAIN secret5 secret6"),
        ]
        self.assertEqual(replies[0], b"2 BAD Illegal syntax: Too many arguments\r\n")
        self.assertEqual(replies[1], b"3 BAD Illegal syntax: Too many arguments\r\n")
        for reply in replies:
            self.assertTrue(reply.startswith((b"2 BAD ", b"3 BAD ", b"4 BAD ", b"5 BAD ", b"6 BAD ")), reply)
            self.assertNotIn(b"secret", reply)
            self.assertNotIn(b"b'", reply)
        self.assertEqual(self.checker.seen, [])

    def test_authenticateBadResponses(self) -> None:
        """
        A response that is not base64 is a syntax error (BAD); the checker
        hears of none of them.
        """
        for response in [b"not base64!", b"\xff"]:
            self.exchange(b"p AUTHENTICATE PLAIN")
            self.assertEqual(
                self.exchange(response), b"p BAD Invalid AUTHENTICATE response\r\n"
            )
        self.assertEqual(
            self.exchange(b"q AUTHENTICATE PLAIN %%%"),
            b"q BAD Invalid AUTHENTICATE response\r\n",
        )
        self.assertEqual(self.checker.seen, [])

    def test_authenticateUnusableResponse(self) -> None:
        """
        Base64 that is no PLAIN message is a failed exchange: the ordinary
        refusal, not BAD; the checker hears of none.
        """
        self.exchange(b"p AUTHENTICATE PLAIN")
        self.assertEqual(
            self.exchange(base64.b64encode(b"no nuls")),
            b"p NO [AUTHENTICATIONFAILED] Authentication failed\r\n",
        )
        self.assertEqual(self.checker.seen, [])

    def test_authenticateEmptyInitialResponse(self) -> None:
        """
        C{=} is a valid SASL-IR empty initial response (RFC 4959): for PLAIN
        a failed exchange, so the ordinary refusal, never BAD.
        """
        self.assertEqual(
            self.exchange(b"p AUTHENTICATE PLAIN ="),
            b"p NO [AUTHENTICATIONFAILED] Authentication failed\r\n",
        )
        self.assertEqual(self.checker.seen, [])
        self.assertEqual(
            self.authenticatePlain(b"q"), b"q OK Authentication successful\r\n"
        )

    def test_authorizationIdentityRefused(self) -> None:
        """
        AUTHENTICATE PLAIN with an authorization identity other than the
        authentication identity (RFC 4616) gets the ordinary refusal, even
        with the right password, and the portal is never asked; the same
        identity in another case, or an empty one, is fine.
        """
        for initial in (True, False):
            message = base64.b64encode(b"bob\0alice\0secret")
            if initial:
                reply = self.exchange(b"p AUTHENTICATE PLAIN " + message)
            else:
                self.exchange(b"p AUTHENTICATE PLAIN")
                reply = self.exchange(message)
            self.assertEqual(reply, b"p NO [AUTHENTICATIONFAILED] Authentication failed\r\n")
        self.assertEqual(self.checker.seen, [])
        self.assertEqual(
            self.exchange(b"q AUTHENTICATE PLAIN " + base64.b64encode(b"ALICE\0alice\0secret")),
            b"q OK Authentication successful\r\n",
        )

    def test_withoutSASLIR(self) -> None:
        self.protocol.saslInitialResponse = False
        self.assertNotIn(b"SASL-IR", self.capabilities())
        self.assertEqual(
            self.exchange(b"p AUTHENTICATE PLAIN " + plain(b"alice", b"secret")),
            b"p BAD Illegal syntax: unexpected initial response\r\n",
        )
        self.assertEqual(self.checker.seen, [])
        self.assertEqual(
            self.authenticatePlain(b"q"), b"q OK Authentication successful\r\n"
        )

    def test_authenticateUnknownMechanism(self) -> None:
        self.assertEqual(
            self.exchange(b"p AUTHENTICATE CRAM-MD5"),
            b"p NO AUTHENTICATE method unsupported\r\n",
        )

    def test_refusalLooksLikeWrongPassword(self) -> None:
        """
        A refusal for a policy reason is byte for byte a wrong password, on
        every way in.
        """
        for attempt in [
            lambda password: self.login(b"t", password),
            lambda password: self.exchange(
                b"t AUTHENTICATE PLAIN " + plain(b"alice", password)
            ),
            lambda password: self.authenticatePlain(b"t", password),
        ]:
            self.checker.mode = "normal"
            wrong = attempt(b"wrong")
            self.checker.mode = "policy"
            refused = attempt(b"secret")
            self.assertEqual(wrong, b"t " + self.failed)
            self.assertEqual(refused, wrong)
            self.assertEqual(self.protocol.state, "unauth")

    def test_unknownUser(self) -> None:
        self.assertEqual(self.exchange(b"t LOGIN mallory secret"), b"t " + self.failed)

    def test_temporaryFailure(self) -> None:
        self.checker.mode = "tempfail"
        self.assertEqual(self.login(), b"l " + self.tempfailed)
        self.assertEqual(
            self.exchange(b"p AUTHENTICATE PLAIN " + plain(b"alice", b"secret")),
            b"p " + self.tempfailed,
        )
        self.assertEqual(self.authenticatePlain(b"q"), b"q " + self.tempfailed)
        self.assertNotIn(b"secret detail", self.transport.value())
        events = [e for e in self.events if e.get("authEvent") == "tempfail"]
        self.assertEqual(len(events), 3)
        self.assertEqual(events[0]["why"], "store down: secret detail")

    def test_unexpectedException(self) -> None:
        self.checker.mode = "crash"
        replies = [
            self.login(),
            self.exchange(b"l AUTHENTICATE PLAIN " + plain(b"alice", b"secret")),
            self.authenticatePlain(b"l"),
        ]
        for reply in replies:
            self.assertEqual(reply, b"l " + self.tempfailed)
            self.assertNotIn(b"secret internals", reply)
            self.assertNotIn(b"ZeroDivision", reply)
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 3)

    def test_realmReturnsWrongInterface(self) -> None:
        self.realm.avatarInterface = IRealm
        self.assertEqual(self.login(), b"l " + self.tempfailed)
        self.assertEqual(self.realm.logouts, 1)
        self.assertEqual(self.protocol.state, "unauth")
        self.assertEqual(len(self.flushLoggedErrors(TypeError)), 1)

    def test_noPortal(self) -> None:
        self.protocol.portal = None
        self.assertEqual(self.login(), b"l " + self.tempfailed)
        self.assertEqual(
            self.exchange(b"p AUTHENTICATE PLAIN"), b"p " + self.tempfailed
        )

    def test_identitySurvivesFailedLogin(self) -> None:
        """
        Thunderbird: AUTHENTICATE PLAIN refused, then LOGIN on the same
        connection without sending CLIENTID again.
        """
        self.assertEqual(self.authenticatePlain(password=b"wrong"), b"p " + self.failed)
        self.assertEqual(self.login(b"m", b"wrong"), b"m " + self.failed)
        self.assertEqual(self.login(b"n"), b"n OK LOGIN succeeded\r\n")
        self.assertEqual(len(self.checker.seen), 3)
        for credentials in self.checker.seen:
            self.assertEqual(credentials.clientIdentity, IDENTITY)

    def test_loginEvents(self) -> None:
        self.login(b"m", b"wrong")
        self.exchange(b"p AUTHENTICATE PLAIN " + plain(b"alice", b"secret"))
        events = [e for e in self.events if "authEvent" in e]
        self.assertEqual([e["authEvent"] for e in events], ["failed", "succeeded"])
        for event, command in zip(events, ["LOGIN", "AUTHENTICATE"]):
            self.assertEqual(event["command"], command)
            self.assertEqual(event["protocol"], "imap")
            self.assertEqual(event["peer"], "192.0.2.7")
            self.assertEqual(event["username"], "alice")
            self.assertEqual(event["clientIDType"], "UUID")
            self.assertEqual(
                event["clientIDFingerprint"],
                self.factory.identityHasher.fingerprint(IDENTITY),
            )
            self.assertNotIn(b"secret", formatEvent(event).encode())

    def test_commandsWaitForTheLogin(self) -> None:
        """
        While the checker decides, later commands wait, so they run in the
        state the login leaves and no CLIENTID slips in during it.
        """
        self.connect(secure=False)
        self.startTLS()
        self.capabilities()
        self.checker.mode = "later"
        reply = self.send(
            b"l LOGIN alice secret\r\nb CLIENTID UUID x\r\nc NAMESPACE\r\n"
        )
        self.assertEqual(reply, b"")
        self.checker.pending.pop().callback(None)
        self.assertEqual(
            self.transport.value(),
            b"l OK LOGIN succeeded\r\n"
            b"b BAD Unsupported command\r\n"
            b'* NAMESPACE (("" "/")) NIL NIL\r\n'
            b"c OK NAMESPACE command completed\r\n",
        )
        self.assertIsNone(self.protocol.clientIdentity)
        self.assertIsNone(self.protocol.blocked)

    def test_connectionLostDuringLogin(self) -> None:
        self.checker.mode = "later"
        self.login()
        self.protocol.connectionLost(Failure(ConnectionDone()))
        self.checker.pending.pop().callback(None)
        self.assertEqual(self.realm.logouts, 1)
        self.assertEqual(self.protocol.state, "unauth")
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_loginDisabledBeforeSTARTTLS(self) -> None:
        """
        In plaintext, while STARTTLS is on offer, LOGIN and AUTHENTICATE
        PLAIN/LOGIN get C{NO [PRIVACYREQUIRED]} (RFC 9051), the checker
        hears of none, and neither AUTH= nor SASL-IR is listed.
        """
        self.connect(secure=False)
        refusal = b"NO [PRIVACYREQUIRED] Use STARTTLS before sending a password\r\n"
        self.assertEqual(self.login(), b"l " + refusal)
        self.assertEqual(
            self.exchange(b"p AUTHENTICATE PLAIN " + plain(b"alice", b"secret")),
            b"p " + refusal,
        )
        self.assertEqual(self.exchange(b"q AUTHENTICATE PLAIN"), b"q " + refusal)
        self.assertEqual(self.exchange(b"r AUTHENTICATE LOGIN"), b"r " + refusal)
        self.assertEqual(self.checker.seen, [])
        capabilities = self.capabilities()
        self.assertIn(b"LOGINDISABLED", capabilities)
        self.assertNotIn(b"SASL-IR", capabilities)
        self.assertNotIn(b"AUTH=", capabilities)

    def test_plaintextWithoutTLSOnOffer(self) -> None:
        """
        A server with no TLS context (behind a TLS proxy, say) accepts
        logins in plaintext, as Twisted does; the credentials say so.
        """
        self.factory.context = None
        self.connect(secure=False)
        self.assertEqual(self.login(), b"l OK LOGIN succeeded\r\n")
        self.assertFalse(self.checker.seen[-1].secure)
        self.assertIsNone(self.checker.seen[-1].clientIdentity)


class PollTests(_Base):
    """
    In the selected state, the mailbox is polled before each command, so
    mail delivered meanwhile shows up as EXISTS.
    """

    secure = True

    def setUp(self) -> None:
        super().setUp()
        self.login()
        self.assertTrue(
            self.exchange(b"s SELECT INBOX").endswith(SELECTED)
        )
        self.mailbox = self.realm.mailbox
        self.assertEqual(self.mailbox.polls, 0)

    def test_newMail(self) -> None:
        self.mailbox.arrived = 2
        self.assertEqual(
            self.exchange(b"n NOOP"),
            b"* 2 EXISTS\r\nn OK NOOP No operation performed\r\n",
        )
        self.assertEqual(self.mailbox.polls, 1)
        self.assertEqual(
            self.exchange(b"m NOOP"), b"m OK NOOP No operation performed\r\n"
        )
        self.assertEqual(self.mailbox.polls, 2)

    def test_asynchronousPoll(self) -> None:
        self.mailbox.arrived = 1
        self.mailbox.nextPoll = defer.Deferred()
        pending = self.mailbox.nextPoll
        self.assertEqual(self.send(b"n NOOP\r\nm NOOP\r\n"), b"")
        pending.callback(None)
        self.assertEqual(
            self.transport.value(),
            b"* 1 EXISTS\r\n"
            b"n OK NOOP No operation performed\r\n"
            b"m OK NOOP No operation performed\r\n",
        )
        self.assertEqual(self.mailbox.polls, 2)
        self.assertIsNone(self.protocol.blocked)

    def test_pollFails(self) -> None:
        self.mailbox.pollError = RuntimeError("disk on fire")
        self.assertEqual(
            self.exchange(b"n NOOP"), b"n OK NOOP No operation performed\r\n"
        )
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)

    def test_notPolledBeforeLogout(self) -> None:
        """
        A client that is leaving is told nothing new: LOGOUT costs no poll.
        """
        self.mailbox.arrived = 2
        self.assertTrue(self.exchange(b"q logout").endswith(b"q OK LOGOUT successful\r\n"))
        self.assertEqual(self.mailbox.polls, 0)

    def test_notPolledOutsideSelected(self) -> None:
        self.assertEqual(self.exchange(b"c CLOSE"), b"c OK CLOSE completed\r\n")
        self.assertEqual(self.mailbox.polls, 1)
        self.exchange(b"n NOOP")
        self.assertEqual(self.mailbox.polls, 1)

    def test_idle(self) -> None:
        """
        No commands come during IDLE: the mailbox is polled on a timer, and
        new mail is announced at once.
        """
        interval = self.protocol.idlePollInterval
        self.assertEqual(self.exchange(b"d IDLE"), b"+\r\n")
        self.assertEqual(self.mailbox.polls, 1)
        self.mailbox.arrived = 3
        self.transport.clear()
        self.clock.advance(interval)
        self.assertEqual(self.transport.value(), b"* 3 EXISTS\r\n")
        self.assertEqual(self.mailbox.polls, 2)
        self.clock.advance(interval)
        self.assertEqual(self.mailbox.polls, 3)
        self.assertEqual(self.exchange(b"DONE"), b"d OK IDLE terminated\r\n")
        self.clock.advance(interval * 5)
        self.assertEqual(self.mailbox.polls, 3)

    def test_idlePollAsynchronous(self) -> None:
        interval = self.protocol.idlePollInterval
        self.exchange(b"d IDLE")
        self.mailbox.nextPoll = defer.Deferred()
        pending = self.mailbox.nextPoll
        self.clock.advance(interval)
        self.clock.advance(interval * 3)
        self.assertEqual(self.mailbox.polls, 2)
        pending.callback(None)
        self.clock.advance(interval)
        self.assertEqual(self.mailbox.polls, 3)

    def test_idlePollFails(self) -> None:
        self.exchange(b"d IDLE")
        self.mailbox.pollError = RuntimeError("disk on fire")
        self.clock.advance(self.protocol.idlePollInterval)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        self.assertEqual(self.exchange(b"DONE"), b"d OK IDLE terminated\r\n")

    def test_idleWithoutPolling(self) -> None:
        self.protocol.idlePollInterval = None
        self.exchange(b"d IDLE")
        self.clock.advance(3600)
        self.assertEqual(self.mailbox.polls, 1)

    def test_idleEndsWithConnection(self) -> None:
        self.exchange(b"d IDLE")
        self.protocol.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_idleNotSelected(self) -> None:
        self.exchange(b"c CLOSE")
        self.assertEqual(self.exchange(b"d IDLE"), b"+\r\n")
        self.clock.advance(3600)
        self.assertEqual(self.mailbox.polls, 1)

    def test_mailboxWithoutPoll(self) -> None:
        self.protocol.mbox = object()
        self.assertIsNone(self.protocol.pollMailbox())


class FactoryTests(SynchronousTestCase):
    """
    L{ClientIDIMAP4Factory} configures each protocol alike.
    """

    def test_buildProtocol(self) -> None:
        portal = Portal(MemoryRealm(), [RecordingChecker()])
        context = object()
        factory = ClientIDIMAP4Factory(portal, context)
        factory.clientIDEnabled = False
        factory.timeOut = 5
        protocol = factory.buildProtocol(None)
        self.assertIsInstance(protocol, ClientIDIMAP4Server)
        self.assertTrue(verifyObject(imap4.IMailboxListener, protocol))
        self.assertIs(protocol.portal, portal)
        self.assertIs(protocol.ctx, context)
        self.assertIs(protocol.factory, factory)
        self.assertFalse(protocol.clientIDEnabled)
        self.assertIs(protocol.identityHasher, factory.identityHasher)
        self.assertIsInstance(factory.identityHasher, IdentityHasher)
        self.assertEqual(protocol.timeOut, 5)
        self.assertEqual(
            protocol.challengers,
            {b"PLAIN": imap4.PLAINCredentials, b"LOGIN": imap4.LOGINCredentials},
        )
        # Each protocol gets its own copy (Twisted's STARTTLS mutates it).
        self.assertIsNot(protocol.challengers, factory.challengers)


# -- real TLS on loopback, with Python's imaplib as an independent client ------


class TrackedServer(ClientIDIMAP4Server):
    """
    Tells its factory when its connection is gone, so tests end clean.
    """

    def connectionLost(self, reason: Failure) -> None:
        super().connectionLost(reason)
        self.factory.lost.append(reason)
        waiting, self.factory.waiting = self.factory.waiting, []
        for d in waiting:
            d.callback(None)


class TrackingFactory(ClientIDIMAP4Factory):
    protocol = TrackedServer

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.built = 0
        self.lost: list[Failure] = []
        self.waiting: list[defer.Deferred[None]] = []

    def buildProtocol(self, addr: Any) -> Any:
        self.built += 1
        return super().buildProtocol(addr)

    def allLost(self) -> defer.Deferred[None]:
        if len(self.lost) == self.built:
            return defer.succeed(None)
        d: defer.Deferred[None] = defer.Deferred()
        self.waiting.append(d)
        return d.addCallback(lambda ignored: self.allLost())


def registerIMAPLibCommand(test: TestCase, name: str) -> None:
    """
    Teach imaplib a command for the duration of C{test}.
    """
    missing = object()
    previous = imaplib.Commands.get(name, missing)
    imaplib.Commands[name] = ("NONAUTH",)

    def restore() -> None:
        if previous is missing:
            del imaplib.Commands[name]
        else:
            imaplib.Commands[name] = previous  # type: ignore[assignment]

    test.addCleanup(restore)


class IMAPLibTests(TestCase):
    """
    Python's imaplib, over real TLS on loopback, presents CLIENTID and logs
    in; the checker sees the identity.
    """

    timeout = 30

    SPECIAL_TOKEN = 'tb-"quoted"(paren)\\back%*[x]{5}'

    def setUp(self) -> None:
        self.certificate = throwawayCertificate()
        self.checker = RecordingChecker()
        self.factory = TrackingFactory(
            Portal(MemoryRealm(), [self.checker]), context=self.certificate.options()
        )
        registerIMAPLibCommand(self, "CLIENTID")
        self.sslContext = ssl.create_default_context(
            cadata=self.certificate.certificatePEM.decode("ascii")
        )

    def listen(self, factory: Any) -> int:
        port = reactor.listenTCP(0, factory, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        return port.getHost().port

    def checkIdentified(self, result: dict[str, Any], token: str) -> None:
        self.assertEqual(result["clientid"][0], "OK")
        self.assertEqual(result["login"][0], "OK")
        self.assertIn("CLIENTID", result["capabilities"])
        seen = self.checker.seen[-1]
        self.assertTrue(IClientIdentifiedCredentials.providedBy(seen))
        self.assertEqual(seen.clientIdentity, ClientIdentity("UUID", token))
        self.assertEqual(seen.clientIdentity.token, token)
        self.assertTrue(seen.secure)
        self.assertEqual(seen.peer.host, "127.0.0.1")
        self.assertEqual(seen.username, b"alice")

    @defer.inlineCallbacks
    def test_starttls(self) -> Any:
        portNumber = self.listen(self.factory)
        token = self.SPECIAL_TOKEN

        def client() -> dict[str, Any]:
            result: dict[str, Any] = {}
            connection = imaplib.IMAP4("127.0.0.1", portNumber, timeout=10)
            try:
                result["plaintextCapabilities"] = connection.capabilities
                connection.starttls(ssl_context=self.sslContext)
                result["capabilities"] = connection.capabilities
                result["clientid"] = connection._simple_command(
                    "CLIENTID", "UUID", token
                )
                result["login"] = connection.login("alice", "secret")
                result["select"] = connection.select("INBOX")
            finally:
                connection.logout()
            return result

        result = yield threads.deferToThread(client)
        self.assertNotIn("CLIENTID", result["plaintextCapabilities"])
        self.assertIn("STARTTLS", result["plaintextCapabilities"])
        self.checkIdentified(result, token)
        self.assertEqual(result["select"][0], "OK")
        yield self.factory.allLost()

    @defer.inlineCallbacks
    def test_implicitTLS(self) -> Any:
        portNumber = self.listen(
            TLSMemoryBIOFactory(self.certificate.options(), False, self.factory)
        )
        token = TOKEN.decode("ascii")

        def client() -> dict[str, Any]:
            result: dict[str, Any] = {}
            connection = imaplib.IMAP4_SSL(
                "127.0.0.1", portNumber, ssl_context=self.sslContext, timeout=10
            )
            try:
                result["welcome"] = connection.welcome
                result["capabilities"] = connection.capabilities
                result["clientid"] = connection._simple_command(
                    "CLIENTID", "UUID", token
                )
                try:
                    connection._simple_command("CLIENTID", "UUID", token)
                except imaplib.IMAP4.error as e:
                    result["again"] = str(e)
                result["login"] = connection.login("alice", "secret")
            finally:
                connection.logout()
            return result

        result = yield threads.deferToThread(client)
        self.assertIn(b"CLIENTID", result["welcome"])
        self.assertIn("CLIENTID already accepted", result["again"])
        self.checkIdentified(result, token)
        yield self.factory.allLost()

    @defer.inlineCallbacks
    def test_refusedLoginThenRetry(self) -> Any:
        """
        A policy refusal reads like a wrong password to a real client, and
        the identity is still there for the retry.
        """
        portNumber = self.listen(self.factory)
        token = TOKEN.decode("ascii")

        def client() -> dict[str, Any]:
            result: dict[str, Any] = {}
            connection = imaplib.IMAP4("127.0.0.1", portNumber, timeout=10)
            try:
                connection.starttls(ssl_context=self.sslContext)
                connection._simple_command("CLIENTID", "UUID", token)
                for attempt in ("wrong", "policy"):
                    try:
                        if attempt == "policy":
                            self.checker.mode = "policy"
                        password = "wrong" if attempt == "wrong" else "secret"
                        connection.login("alice", password)
                    except imaplib.IMAP4.error as e:
                        result[attempt] = str(e)
                self.checker.mode = "normal"
                result["login"] = connection.login("alice", "secret")
            finally:
                connection.logout()
            return result

        result = yield threads.deferToThread(client)
        self.assertEqual(result["wrong"], result["policy"])
        self.assertIn("AUTHENTICATIONFAILED", result["wrong"])
        self.assertEqual(result["login"][0], "OK")
        self.assertEqual(len(self.checker.seen), 3)
        for seen in self.checker.seen:
            self.assertEqual(seen.clientIdentity, ClientIdentity("UUID", token))
        yield self.factory.allLost()
