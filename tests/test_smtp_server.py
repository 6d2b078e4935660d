"""
Tests for L{clientid_twisted.smtp}'s server side over in-memory transports:
every CLIENTID reply in every state, their precedence, the resets, STARTTLS
injection, and the identity reaching C{twisted.cred}.
"""

from __future__ import annotations

import base64
from typing import Any

from zope.interface import implementer

from twisted.cred.credentials import IUsernamePassword
from twisted.cred.portal import IRealm, Portal
from twisted.logger import formatEvent, globalLogPublisher
from twisted.mail import smtp
from twisted.trial.unittest import SynchronousTestCase

from clientid_twisted._fingerprint import IdentityHasher
from clientid_twisted._identity import ClientIdentity
from clientid_twisted.interfaces import IClientIdentifiedCredentials
from clientid_twisted.smtp import ClientIDESMTPFactory
from clientid_twisted.testing import LineExchange, connectedTransport
from tests.loginfakes import HIDDEN_TYPES, RecordingChecker, RefusingDelivery, assertIdentityLogging, plain

TOKEN = b"23bf83be-aad7-46aa-9e0f-39191ccf402f"
CLIENTID = b"CLIENTID UUID " + TOKEN


@implementer(IRealm)
class _Realm:
    def requestAvatar(self, avatarId: Any, mind: Any, *interfaces: Any) -> Any:
        return smtp.IMessageDelivery, RefusingDelivery(), lambda: None


class _Base(SynchronousTestCase):
    """
    Build a server protocol the way the factory does, over a fake transport.
    """

    secure = False

    def setUp(self) -> None:
        self.checker = RecordingChecker()
        self.factory = ClientIDESMTPFactory(Portal(_Realm(), [self.checker]), context=object())
        self.factory.domain = b"mx.example.test"
        self.factory.identityHasher = IdentityHasher(b"k" * 32)
        self.connect()

    def connect(self, secure: bool | None = None) -> None:
        self.protocol = self.factory.buildProtocol(None)
        self.transport = connectedTransport(
            self.protocol, secure=self.secure if secure is None else secure
        )
        self.client = LineExchange(self.protocol, self.transport)

    def send(self, line: bytes) -> bytes:
        return self.client.exchange(line)

    def code(self, line: bytes) -> int:
        reply = self.send(line)
        return int(reply.splitlines()[-1][:3])

    def ehloKeywords(self) -> list[bytes]:
        lines = self.send(b"EHLO client.example.net").splitlines()
        self.assertTrue(lines[-1].startswith(b"250 "), lines)
        return [line[4:].split(b" ")[0].upper() for line in lines[1:]]

    def startTLS(self) -> None:
        self.assertEqual(self.code(b"STARTTLS"), 220)
        self.assertIsNotNone(self.transport.tlsStarted)

    def ready(self) -> None:
        """
        EHLO, STARTTLS, EHLO: the state where CLIENTID is usable.
        """
        if not self.secure:
            self.send(b"EHLO client.example.net")
            self.startTLS()
        self.assertIn(b"CLIENTID", self.ehloKeywords())


class AdvertisementTests(_Base):
    """
    EHLO lists CLIENTID if and only if the extension is on and the
    connection is encrypted.
    """

    def test_notInPlaintext(self) -> None:
        self.assertNotIn(b"CLIENTID", self.ehloKeywords())
        self.assertIn(b"STARTTLS", self.ehloKeywords())

    def test_afterSTARTTLS(self) -> None:
        self.send(b"EHLO a")
        self.startTLS()
        keywords = self.ehloKeywords()
        self.assertIn(b"CLIENTID", keywords)
        self.assertNotIn(b"STARTTLS", keywords)

    def test_implicitTLS(self) -> None:
        self.connect(secure=True)
        keywords = self.ehloKeywords()
        self.assertIn(b"CLIENTID", keywords)
        self.assertNotIn(b"STARTTLS", keywords)

    def test_switchedOff(self) -> None:
        self.factory.clientIDEnabled = False
        self.connect(secure=True)
        self.assertNotIn(b"CLIENTID", self.ehloKeywords())

    def test_afterAcceptedClientIDAndAfterAUTH(self) -> None:
        self.ready()
        self.assertEqual(self.code(CLIENTID), 250)
        self.assertIn(b"CLIENTID", self.ehloKeywords())
        self.assertEqual(self.code(b"AUTH PLAIN " + plain(b"alice", b"secret")), 235)
        self.assertIn(b"CLIENTID", self.ehloKeywords())

    def test_neverBesidePIPELINING(self) -> None:
        """
        A server class that lists PIPELINING loses it while CLIENTID is
        listed, and keeps it where CLIENTID is not.
        """

        original = smtp.ESMTP.extensions
        self.patch(
            smtp.ESMTP,
            "extensions",
            lambda self: {**original(self), b"PIPELINING": None},
        )
        self.assertIn(b"PIPELINING", self.ehloKeywords())
        self.startTLS()
        keywords = self.ehloKeywords()
        self.assertIn(b"CLIENTID", keywords)
        self.assertNotIn(b"PIPELINING", keywords)


class RefusalTests(_Base):
    """
    The replies to CLIENTID in each state, and their order of precedence.
    """

    def unknownReply(self) -> bytes:
        return self.send(b"XUNKNOWNCMD UUID x")

    def test_plaintextIsUnknownCommand(self) -> None:
        """
        Before TLS, CLIENTID gets exactly the reply to an unknown command.
        """
        self.send(b"EHLO a")
        reply = self.send(CLIENTID)
        self.assertTrue(reply.startswith(b"500 "), reply)
        self.assertEqual(reply, self.unknownReply())
        self.assertIsNone(self.protocol.clientIdentity)

    def test_offIsUnknownCommand(self) -> None:
        self.factory.clientIDEnabled = False
        self.connect(secure=True)
        self.send(b"EHLO a")
        reply = self.send(CLIENTID)
        self.assertTrue(reply.startswith(b"500 "))
        self.assertEqual(reply, self.unknownReply())

    def test_plaintextBeatsEverything(self) -> None:
        """
        In plaintext, even a malformed CLIENTID after AUTH is an unknown
        command (rule 1 comes first).
        """
        self.send(b"EHLO a")
        self.send(b"AUTH PLAIN " + plain(b"alice", b"wrong"))
        reply = self.send(b"CLIENTID  bad")
        self.assertEqual(reply, self.unknownReply())

    def test_valid(self) -> None:
        self.ready()
        self.assertEqual(self.send(CLIENTID), b"250 OK\r\n")
        self.assertEqual(self.protocol.clientIdentity, ClientIdentity("UUID", TOKEN.decode()))

    def test_lowercaseCommandAndType(self) -> None:
        self.ready()
        self.assertEqual(self.code(b"clientid uuid " + TOKEN), 250)
        self.assertEqual(self.protocol.clientIdentity.type, "uuid")
        self.assertEqual(self.protocol.clientIdentity.typeKey, "UUID")

    def test_noEHLOAfterSTARTTLS(self) -> None:
        self.send(b"EHLO a")
        self.startTLS()
        self.assertEqual(self.code(CLIENTID), 503)
        self.assertIsNone(self.protocol.clientIdentity)

    def test_noEHLOImplicitTLS(self) -> None:
        self.connect(secure=True)
        self.assertEqual(self.code(CLIENTID), 503)

    def test_HELOAfterEHLO(self) -> None:
        self.ready()
        self.assertEqual(self.code(b"HELO client.example.net"), 250)
        self.assertEqual(self.code(CLIENTID), 503)

    def test_repeated(self) -> None:
        self.ready()
        self.assertEqual(self.code(CLIENTID), 250)
        self.assertEqual(self.code(CLIENTID), 503)
        self.assertEqual(self.code(b"CLIENTID UUID other"), 503)
        self.assertEqual(self.protocol.clientIdentity.token, TOKEN.decode())

    def test_afterFailedAUTH(self) -> None:
        self.ready()
        self.assertEqual(self.code(b"AUTH PLAIN " + plain(b"alice", b"wrong")), 535)
        self.assertEqual(self.code(CLIENTID), 503)

    def test_afterAbortedAndUnknownAUTH(self) -> None:
        """
        Any AUTH command counts, even one naming an unknown mechanism.
        """
        self.ready()
        self.assertEqual(self.code(b"AUTH X-UNKNOWN"), 504)
        self.assertEqual(self.code(CLIENTID), 503)

    def test_afterSuccessfulAUTH(self) -> None:
        self.ready()
        self.assertEqual(self.code(b"AUTH PLAIN " + plain(b"alice", b"secret")), 235)
        self.assertEqual(self.code(CLIENTID), 503)

    def test_malformed(self) -> None:
        self.ready()
        for line in [
            b"CLIENTID",
            b"CLIENTID UUID",
            b"CLIENTID UUID ",
            b"CLIENTID  UUID x",
            b"CLIENTID UUID  x",
            b"CLIENTID\tUUID x",
            b"CLIENTID UUID\tx",
            b"CLIENTID UUID x ",
            b"CLIENTID UUID x y",
            b" CLIENTID UUID x",
            b"CLIENTID DEVICE_ID x",
            b"CLIENTID " + b"A" * 17 + b" x",
            b"CLIENTID UUID " + b"x" * 129,
            b"CLIENTID UUID a\x00b",
            b"CLIENTID UUID caf\xc3\xa9",
            b"CLIENTID UU\xffID x",
        ]:
            self.assertEqual(self.code(line), 501, line)
        self.assertIsNone(self.protocol.clientIdentity)
        self.assertEqual(self.code(CLIENTID), 250)

    def test_precedenceAUTHOverEHLO(self) -> None:
        """
        After AUTH and HELO, the AUTH rule (503) is what applies; after AUTH
        a malformed CLIENTID is 503, not 501.
        """
        self.ready()
        self.send(b"AUTH PLAIN " + plain(b"alice", b"wrong"))
        self.send(b"HELO a")
        reply = self.send(b"CLIENTID  bad")
        self.assertTrue(reply.startswith(b"503 "), reply)
        self.assertIn(b"AUTH", reply)

    def test_precedenceEHLOOverRepeatAndMalformed(self) -> None:
        self.ready()
        self.assertEqual(self.code(CLIENTID), 250)
        self.send(b"HELO a")
        reply = self.send(b"CLIENTID  bad")
        self.assertTrue(reply.startswith(b"503 "), reply)
        self.assertIn(b"EHLO", reply)

    def test_precedenceRepeatOverMalformed(self) -> None:
        self.ready()
        self.assertEqual(self.code(CLIENTID), 250)
        reply = self.send(b"CLIENTID  bad")
        self.assertTrue(reply.startswith(b"503 "), reply)
        self.assertIn(b"already", reply)


class ResetTests(_Base):
    """
    EHLO, HELO and STARTTLS discard the identity; RSET and AUTH do not.
    """

    def test_EHLODiscards(self) -> None:
        self.ready()
        self.assertEqual(self.code(CLIENTID), 250)
        self.ehloKeywords()
        self.assertIsNone(self.protocol.clientIdentity)
        self.assertEqual(self.code(b"CLIENTID UUID second"), 250)
        self.assertEqual(self.protocol.clientIdentity.token, "second")

    def test_HELODiscards(self) -> None:
        self.ready()
        self.code(CLIENTID)
        self.send(b"HELO a")
        self.assertIsNone(self.protocol.clientIdentity)

    def test_RSETKeeps(self) -> None:
        self.ready()
        self.code(CLIENTID)
        self.assertEqual(self.code(b"RSET"), 250)
        self.assertIsNotNone(self.protocol.clientIdentity)
        self.assertEqual(self.code(CLIENTID), 503)

    def test_AUTHRetryKeepsIdentity(self) -> None:
        """
        A failed AUTH PLAIN then AUTH LOGIN in the same session (as
        Thunderbird does) both carry the identity to the checker.
        """
        self.ready()
        self.code(CLIENTID)
        self.assertEqual(self.code(b"AUTH PLAIN " + plain(b"alice", b"wrong")), 535)
        self.assertEqual(self.code(b"AUTH LOGIN"), 334)
        self.assertEqual(self.code(base64.b64encode(b"alice")), 334)
        self.assertEqual(self.code(base64.b64encode(b"secret")), 235)
        self.assertEqual(len(self.checker.seen), 2)
        for credentials in self.checker.seen:
            self.assertEqual(credentials.clientIdentity.token, TOKEN.decode())

    def test_STARTTLSForgetsEverything(self) -> None:
        """
        STARTTLS forgets the EHLO greeting and the mail transaction
        (RFC 3207 section 4.2).
        """
        self.send(b"EHLO client.example.net")
        self.startTLS()
        self.assertEqual(self.protocol._helo[0], None)
        self.assertIsNone(self.protocol.clientIdentity)


class InjectionTests(_Base):
    """
    Plaintext pipelined after STARTTLS is dropped, never run under TLS.
    """

    def test_linesAfterSTARTTLSDiscarded(self) -> None:
        self.send(b"EHLO a")
        reply = self.client.send(
            b"STARTTLS\r\nEHLO evil\r\n" + CLIENTID + b"\r\nMAIL FROM:<x@y>\r\nRSET"
        )
        self.assertEqual(reply, b"220 Begin TLS negotiation now\r\n")
        self.assertIsNone(self.protocol.clientIdentity)
        self.assertEqual(self.protocol._buffer, b"")
        # The first line that arrives over TLS is a fresh session: no EHLO
        # has been seen, so CLIENTID is out of sequence.
        self.assertEqual(self.code(CLIENTID), 503)
        self.assertIn(b"CLIENTID", self.ehloKeywords())
        self.assertEqual(self.code(CLIENTID), 250)

    def test_STARTTLSTwice(self) -> None:
        self.send(b"EHLO a")
        self.startTLS()
        self.assertEqual(self.code(b"STARTTLS"), 503)


class RobustnessTests(_Base):
    """
    Bad bytes get clean replies and the session goes on.
    """

    def test_nonASCIICommand(self) -> None:
        reply = self.send(b"EHL\xc3\x96 a")
        self.assertTrue(reply.startswith(b"500 "), reply)
        self.assertFalse(self.transport.disconnecting)
        self.assertEqual(self.code(b"EHLO a"), 250)

    def test_NULInCommand(self) -> None:
        reply = self.send(b"MAIL FROM:<a\x00@b>")
        self.assertTrue(reply.startswith(b"500 "), reply)
        self.assertEqual(self.code(b"RSET"), 250)

    def test_nonASCIICLIENTIDPlaintextIsUnknown(self) -> None:
        """
        Where CLIENTID is not usable, a CLIENTID line with non-ASCII bytes is
        still just an unknown command.
        """
        self.send(b"EHLO a")
        self.assertEqual(
            self.send(b"CLIENTID UUID caf\xc3\xa9"), self.send(b"XUNKNOWNCMD")
        )

    def test_emptyAUTH(self) -> None:
        self.assertEqual(self.code(b"AUTH"), 501)
        self.assertFalse(self.transport.disconnecting)

    def test_badBase64AndMalformedPLAIN(self) -> None:
        """
        A response that is not base64 is a syntax error (501); base64 that
        is no PLAIN message (C{=} is the empty response, RFC 4954) is a
        failed exchange (535); the checker hears of none of them.
        """
        self.ready()
        self.assertEqual(self.code(b"AUTH PLAIN %%%"), 501)
        self.assertEqual(self.code(b"AUTH PLAIN " + base64.b64encode(b"no-nuls")), 535)
        self.assertEqual(self.code(b"AUTH PLAIN ="), 535)
        self.assertEqual(self.code(b"AUTH PLAIN"), 334)
        self.assertEqual(self.code(b"*"), 501)
        self.assertEqual(self.code(b"NOOPX"), 500)
        self.assertEqual(self.checker.seen, [])

    def test_authorizationIdentityRefused(self) -> None:
        """
        AUTH PLAIN with an authorization identity other than the
        authentication identity (RFC 4616) gets the ordinary refusal, even
        with the right password, and the portal is never asked; the same
        identity in another case, or an empty one, is fine.
        """
        self.ready()
        self.assertEqual(
            self.send(b"AUTH PLAIN " + base64.b64encode(b"bob\0alice\0secret")),
            b"535 5.7.8 Authentication credentials invalid\r\n",
        )
        self.assertEqual(self.code(b"AUTH PLAIN"), 334)
        self.assertEqual(
            self.send(base64.b64encode(b"bob\0alice\0secret")),
            b"535 5.7.8 Authentication credentials invalid\r\n",
        )
        self.assertEqual(self.checker.seen, [])
        self.assertEqual(self.code(b"AUTH PLAIN " + base64.b64encode(b"Alice\0alice\0secret")), 235)

    def test_unknownCommandWording(self) -> None:
        """
        An unknown command gets RFC 5321's 500 wording ("Command not
        implemented" is 502's); a CLIENTID line with a NUL or non-ASCII byte
        right after the name is a malformed CLIENTID (501) over TLS after
        EHLO, and an unknown command (the same 500, byte for byte) in
        plaintext.
        """
        unknown = b"500 5.5.2 Syntax error, command unrecognized\r\n"
        self.ready()
        self.assertEqual(self.send(b"FROB"), unknown)
        for line in (b"CLIENTID\0UUID tok", b"CLIENTID\xc3\xa9 UUID tok", b"CLIENTID UUID t\0k"):
            self.assertEqual(self.send(line)[:4], b"501 ", line)
        self.connect(secure=False)
        self.send(b"EHLO client.example")
        self.assertEqual(self.send(b"FROB"), unknown)
        self.assertEqual(self.send(b"CLIENTID UUID " + TOKEN), unknown)
        self.assertEqual(self.send(b"CLIENTID\0UUID tok"), unknown)

class CredentialsTests(_Base):
    """
    AUTH hands the portal credentials that carry the identity and still
    provide the mechanism's interfaces.
    """

    def test_identityOnCredentials(self) -> None:
        self.ready()
        self.code(CLIENTID)
        self.assertEqual(self.code(b"AUTH PLAIN " + plain(b"alice", b"secret")), 235)
        [credentials] = self.checker.seen
        self.assertTrue(IClientIdentifiedCredentials.providedBy(credentials))
        self.assertTrue(IUsernamePassword.providedBy(credentials))
        self.assertEqual(credentials.clientIdentity, ClientIdentity("UUID", TOKEN.decode()))
        self.assertEqual(credentials.protocolName, "smtp")
        self.assertTrue(credentials.secure)
        self.assertEqual(credentials.peer.host, "192.0.2.7")
        self.assertEqual(credentials.username, b"alice")
        self.assertTrue(self.protocol.authenticated)

    def test_noIdentity(self) -> None:
        self.ready()
        self.assertEqual(self.code(b"AUTH PLAIN " + plain(b"alice", b"secret")), 235)
        [credentials] = self.checker.seen
        self.assertIsNone(credentials.clientIdentity)

    def test_policyRefusalIdenticalToWrongPassword(self) -> None:
        self.ready()
        self.code(CLIENTID)
        wrong = self.send(b"AUTH PLAIN " + plain(b"alice", b"wrong"))
        self.connect()
        self.ready()
        self.code(CLIENTID)
        self.checker.mode = "policy"
        refused = self.send(b"AUTH PLAIN " + plain(b"alice", b"secret"))
        self.assertEqual(refused, wrong)
        self.assertTrue(wrong.startswith(b"535 "))

    def test_unknownUserIdenticalToWrongPassword(self) -> None:
        self.ready()
        wrong = self.send(b"AUTH PLAIN " + plain(b"alice", b"wrong"))
        self.connect()
        self.ready()
        self.assertEqual(self.send(b"AUTH PLAIN " + plain(b"mallory", b"x")), wrong)

    def test_temporaryFailure(self) -> None:
        self.ready()
        self.checker.mode = "tempfail"
        reply = self.send(b"AUTH PLAIN " + plain(b"alice", b"secret"))
        self.assertEqual(reply, b"454 4.7.0 Temporary authentication failure\r\n")
        self.assertFalse(self.protocol.authenticated)

    def test_unexpectedErrorRevealsNothing(self) -> None:
        self.ready()
        self.checker.mode = "crash"
        reply = self.send(b"AUTH PLAIN " + plain(b"alice", b"secret"))
        self.assertEqual(reply, b"454 4.7.0 Temporary authentication failure\r\n")
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)


class LoggingTests(_Base):
    """
    Log events name the identity type and a keyed fingerprint, never the
    token.
    """

    def setUp(self) -> None:
        super().setUp()
        self.events: list[dict[str, Any]] = []
        globalLogPublisher.addObserver(self.events.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.events.append)

    def test_acceptedAndAuthEvents(self) -> None:
        self.ready()
        self.code(CLIENTID)
        self.code(b"AUTH PLAIN " + plain(b"alice", b"wrong"))
        self.code(b"AUTH PLAIN " + plain(b"alice", b"secret"))
        expected = IdentityHasher(b"k" * 32).fingerprint(ClientIdentity("UUID", TOKEN.decode()))
        accepted = [e for e in self.events if e.get("clientIDEvent") == "accepted"]
        self.assertEqual(len(accepted), 1)
        self.assertEqual(accepted[0]["clientIDFingerprint"], expected)
        self.assertEqual(accepted[0]["clientIDType"], "UUID")
        outcomes = [e["authEvent"] for e in self.events if "authEvent" in e]
        self.assertEqual(outcomes, ["failed", "succeeded"])
        for event in self.events:
            self.assertNotIn(TOKEN.decode(), repr(event))

    def test_acceptedReportedOnce(self) -> None:
        """
        The login's event reports the CLIENTID's acceptance (one line for
        both); an identity dropped unused (a new EHLO) is logged then.
        """
        self.ready()
        self.code(CLIENTID)
        self.assertEqual([e for e in self.events if "clientIDEvent" in e], [])
        self.code(b"EHLO there")
        [dropped] = [e for e in self.events if "clientIDEvent" in e]
        self.assertEqual(dropped["clientIDEvent"], "accepted")
        self.assertNotIn("authEvent", dropped)
        self.assertIn("no login followed", formatEvent(dropped))
        self.events.clear()
        self.code(CLIENTID)
        self.code(b"AUTH PLAIN " + plain(b"alice", b"secret"))
        [login] = self.events
        self.assertEqual((login["authEvent"], login["clientIDEvent"]), ("succeeded", "accepted"))
        self.assertIn("AUTH succeeded for alice", formatEvent(login))
        self.assertIn("fingerprint=" + login["clientIDFingerprint"], formatEvent(login))

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
            self.ready()
            self.assertEqual(self.code(b"CLIENTID " + typeName + b" " + TOKEN), 250)
            self.code(b"AUTH PLAIN " + plain(b"alice", b"wrong"))
            self.code(b"AUTH PLAIN " + plain(b"alice", b"secret"))
            assertIdentityLogging(self, self.events, typeName, TOKEN)

    def test_refusedEvent(self) -> None:
        self.ready()
        self.code(b"CLIENTID UUID  " + TOKEN)
        refused = [e for e in self.events if e.get("clientIDEvent") == "refused"]
        self.assertEqual([e["reason"] for e in refused], ["malformed"])
        self.assertNotIn(TOKEN.decode(), repr(self.events))
